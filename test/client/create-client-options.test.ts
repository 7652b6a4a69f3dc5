/**
 * createClient's connection options: the servers from CONCORD_SERVERS when none are given,
 * and the call deadline as an option (a cluster that cannot be reached answers within it,
 * not within the default 30 s).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createClient, SERVERS_ENV } from '../../src/client/sdk/index.ts';
import { BadRequestError } from '../../src/shared/errors.ts';
import { freePort } from '../support/ports.ts';

const saved = process.env[SERVERS_ENV];
afterEach(() => {
  if (saved === undefined) delete process.env[SERVERS_ENV];
  else process.env[SERVERS_ENV] = saved;
});

describe('createClient', () => {
  it('without servers and without CONCORD_SERVERS it says what is missing', () => {
    delete process.env[SERVERS_ENV];
    expect(() => createClient({ applicationId: 'app' })).toThrow(BadRequestError);
    expect(() => createClient({ applicationId: 'app' })).toThrow(/CONCORD_SERVERS/);
    process.env[SERVERS_ENV] = ' , ';
    expect(() => createClient({ applicationId: 'app' })).toThrow(/at least one node/);
  });

  it('refuses deadlines that are not a positive number of ms', () => {
    for (const bad of [0, -1, 1.5, Number.NaN, 10 ** 12])
      expect(() =>
        createClient({ applicationId: 'app', servers: '127.0.0.1:1', callDeadlineMs: bad }),
      ).toThrow(/callDeadlineMs/);
    expect(() =>
      createClient({ applicationId: 'app', servers: '127.0.0.1:1', attemptTimeoutMs: 0 }),
    ).toThrow(/attemptTimeoutMs/);
  });

  it('reads CONCORD_SERVERS, and an unreachable cluster fails within callDeadlineMs', async () => {
    const port = await freePort(); // nothing listens there
    process.env[SERVERS_ENV] = `127.0.0.1:${port}`;
    const client = createClient({ applicationId: 'app', callDeadlineMs: 800 });
    const started = performance.now();
    try {
      const err = await client.begin({ name: 'x' }).then(
        () => null,
        (e: Error) => e,
      );
      const elapsed = performance.now() - started;
      expect(err).not.toBeNull();
      expect(err!.message).toContain(String(port));
      // The default budget is 30 s; a generous bound for a loaded machine.
      expect(elapsed).toBeLessThan(15_000);
    } finally {
      await client.close();
    }
  });
});
