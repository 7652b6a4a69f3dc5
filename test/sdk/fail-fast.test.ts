/**
 * Fail fast, with clear errors (issue 22 item 7), on real processes:
 *  - a cluster that cannot be reached fails a call within the connect timeout
 *    (connectTimeoutMs; default 5 s, not the 30 s budget) with UnavailableError;
 *  - `servers` naming a node's gRPC port (TC or Raft) fails at once with WrongPortError
 *    naming the HTTP openapi port to give; a TC endpoint that is an HTTP port likewise;
 *  - any logger with the usual methods works (`console`-shaped, no `child`), and a failed
 *    confirm reaches it at warn; with no logger, it reaches stderr at warn (a real process).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consoleSpy } from '../support/console-spy.ts';
import { runScript } from '../support/script.ts';
import { PinnedDiscovery } from '../../bench/lib/pinned-discovery.ts';
import { createClient, UnavailableError, WrongPortError } from '../../src/index.ts';
import { TcClient } from '../../src/client/tc-client.ts';
import { closedPort } from '../store-db/helpers.ts';
import { TestCluster, waitFor } from '../tc/helpers.ts';

let cluster: TestCluster;

beforeAll(async () => {
  cluster = await TestCluster.start('fail-fast', { tickMs: 30 });
}, 90_000);

afterAll(async () => {
  await cluster?.stop();
}, 60_000);

async function timed<T>(p: Promise<T>): Promise<{ err: unknown; ms: number }> {
  const t = performance.now();
  try {
    await p;
    return { err: null, ms: performance.now() - t };
  } catch (err) {
    return { err, ms: performance.now() - t };
  }
}

describe('an unreachable cluster', () => {
  it('fails within the connect timeout with UnavailableError (given, and the 5 s default)', async () => {
    const port = await closedPort();
    const quiet = consoleSpy().logger;
    const given = createClient({
      servers: [`127.0.0.1:${port}`],
      applicationId: 'fail-fast',
      connectTimeoutMs: 1_000,
      logger: quiet,
    });
    const a = await timed(given.transaction(async () => undefined));
    await given.close();
    expect(a.err).toBeInstanceOf(UnavailableError);
    expect((a.err as Error).message).toMatch(/could not be reached.*1000 ms/);
    expect(a.ms).toBeGreaterThanOrEqual(900);
    expect(a.ms).toBeLessThan(6_000);

    const byDefault = createClient({
      servers: [`127.0.0.1:${port}`],
      applicationId: 'fail-fast',
      logger: quiet,
    });
    const b = await timed(byDefault.transaction(async () => undefined));
    await byDefault.close();
    expect(b.err).toBeInstanceOf(UnavailableError);
    expect(b.ms).toBeGreaterThanOrEqual(4_500);
    // The call budget is 30 s: the default connect timeout (5 s) ends it long before.
    expect(b.ms).toBeLessThan(15_000);
  }, 60_000);
});

describe('the wrong port', () => {
  it('servers naming the TC port or the Raft port: WrongPortError naming the HTTP openapi port', async () => {
    const n = cluster.nodes[0]!;
    for (const port of [n.tc, n.raft]) {
      const client = createClient({
        servers: [`127.0.0.1:${port}`],
        applicationId: 'fail-fast',
        logger: consoleSpy().logger,
      });
      const r = await timed(client.transaction(async () => undefined));
      await client.close();
      expect(r.err).toBeInstanceOf(WrongPortError);
      expect((r.err as Error).message).toContain(`127.0.0.1:${port} speaks gRPC`);
      expect((r.err as Error).message).toContain('HTTP openapi port (server.httpPort)');
      expect((r.err as Error).message).not.toMatch(/HPE_/);
      expect(r.ms).toBeLessThan(5_000);
    }
  }, 60_000);

  it('a TC endpoint that is an HTTP port: WrongPortError naming the TC port', async () => {
    const n = cluster.nodes[0]!;
    const tc = new TcClient({
      discovery: new PinnedDiscovery({
        nodeId: n.id,
        transaction: { host: '127.0.0.1', port: n.http },
        control: { host: '127.0.0.1', port: n.http },
      }),
    });
    const r = await timed(
      tc.begin({
        applicationId: 'fail-fast',
        transactionServiceGroup: 'default',
        timeoutMs: 60_000,
      }),
    );
    await tc.close();
    expect(r.err).toBeInstanceOf(WrongPortError);
    expect((r.err as Error).message).toContain(`127.0.0.1:${n.http} answers HTTP/1.1`);
    expect((r.err as Error).message).toContain('server.tcPort');
    expect(r.ms).toBeLessThan(5_000);
  }, 30_000);
});

describe('the SDK logger', () => {
  it('a console-shaped logger (no child) works, and a failed confirm reaches it at warn', async () => {
    const spy = consoleSpy();
    const client = createClient({
      servers: cluster.seeds(),
      applicationId: 'fail-fast-log',
      logger: spy.logger,
    });
    let confirms = 0;
    const act = client.tcc.register({
      name: 'fail-fast.flaky',
      try: async () => undefined,
      confirm: async () => {
        confirms++;
        if (confirms === 1) throw new Error('the stock service is down');
      },
      cancel: async () => undefined,
    });
    let xid = '';
    await client.transaction(async (scope) => {
      xid = scope.xid ?? '';
      await act();
    });
    const warned = await waitFor(
      'the failed confirm at warn',
      async () =>
        spy.calls.find((c) => c.level === 'warn' && String(c.args[0]).includes('phase two failed')),
      20_000,
    );
    expect(warned.args[1]).toMatchObject({ xid });
    await waitFor('the retried confirm', async () => (confirms >= 2 ? true : undefined), 20_000);
    await client.close();

    // `console` itself is accepted (no ".child is not a function").
    const withConsole = createClient({
      servers: cluster.seeds(),
      applicationId: 'fail-fast-console',
      logger: console,
    });
    await withConsole.transaction(async () => undefined);
    await withConsole.close();
  }, 60_000);

  it('with no logger given, a failed confirm is written at warn to stderr (a real process)', async () => {
    const script = `
      import { createClient } from './src/index.ts';
      const client = createClient({ servers: ${JSON.stringify(cluster.seeds())}, applicationId: 'fail-fast-default' });
      let confirms = 0;
      const act = client.tcc.register({
        name: 'fail-fast.default',
        try: async () => undefined,
        confirm: async () => { confirms++; if (confirms === 1) throw new Error('down for a moment'); },
        cancel: async () => undefined,
      });
      await client.transaction(async () => { await act(); });
      const t = Date.now();
      while (confirms < 2 && Date.now() - t < 20000) await new Promise((r) => setTimeout(r, 50));
      await client.close();
      process.stdout.write('CONFIRMS ' + confirms + '\\n');
    `;
    const { code, out, err, logLines } = await runScript(script);
    expect(code, err).toBe(0);
    expect(out).toContain('CONFIRMS 2');
    const lines = logLines();
    const failed = lines.find((l) => String(l.msg).startsWith('phase two failed'));
    expect(failed, err).toMatchObject({ level: 40, name: 'concord' });
  }, 60_000);
});
