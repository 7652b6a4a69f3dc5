/**
 * The SDK's logger: pino at warn on stderr when the service names none (so a refused
 * transaction header is never silent), and any logger with the usual methods — console
 * included — accepted and adapted.
 */
import { describe, expect, it } from 'vitest';
import { runScript } from '../support/script.ts';
import { createClient, wrapHttpHandler, xidMiddleware } from '../../src/index.ts';
import { toClientLogger } from '../../src/client/logger.ts';
import { BadRequestError } from '../../src/shared/errors.ts';
import { capturingLogger } from './helpers/db.ts';
import { consoleSpy } from '../support/console-spy.ts';

describe('the SDK logger', () => {
  it('defaults to pino at warn', () => {
    const previous = process.env.CONCORD_LOG_LEVEL;
    delete process.env.CONCORD_LOG_LEVEL;
    try {
      const logger = toClientLogger(undefined);
      expect(logger.level).toBe('warn');
      expect(typeof logger.bindings).toBe('function');
    } finally {
      if (previous !== undefined) process.env.CONCORD_LOG_LEVEL = previous;
    }
  });

  it('passes a pino logger through unchanged', () => {
    const { logger } = capturingLogger();
    expect(toClientLogger(logger)).toBe(logger);
  });

  it('adapts a console-shaped logger: (message, fields) with child bindings merged; every pino call shape', () => {
    const spy = consoleSpy();
    const log = toClientLogger(spy.logger).child({ component: 'x' }).child({ xid: '1.1.1.1:1:1' });
    log.warn({ branchId: '7' }, 'a warning');
    log.info('just a message');
    const err = new Error('boom');
    log.error(err, 'an error');
    log.debug({ n: 1 }, 'detail');
    expect(spy.calls).toEqual([
      { level: 'warn', args: ['a warning', { component: 'x', xid: '1.1.1.1:1:1', branchId: '7' }] },
      { level: 'info', args: ['just a message', { component: 'x', xid: '1.1.1.1:1:1' }] },
      { level: 'error', args: ['an error', { component: 'x', xid: '1.1.1.1:1:1', err }] },
      { level: 'debug', args: ['detail', { component: 'x', xid: '1.1.1.1:1:1', n: 1 }] },
    ]);
  });

  it('accepts console itself, and refuses what is not a logger', () => {
    expect(() =>
      createClient({ servers: '127.0.0.1:1', applicationId: 'c', logger: console }),
    ).not.toThrow();
    expect(() => xidMiddleware({ logger: console })).not.toThrow();
    expect(() => toClientLogger({ warn: () => {} })).toThrow(BadRequestError);
    expect(() =>
      createClient({ servers: '127.0.0.1:1', applicationId: 'c', logger: 42 as never }),
    ).toThrow(/logger must be/);
  });

  it('a refused header reaches a console-shaped logger at warn', async () => {
    const spy = consoleSpy();
    const handler = wrapHttpHandler(() => {}, { logger: spy.logger });
    const res = { writeHead: () => ({ end: () => {} }), headersSent: false };
    await handler({ headers: { tx_xid: 'nope' } } as never, res as never);
    expect(spy.calls).toHaveLength(1);
    expect(spy.calls[0]!.level).toBe('warn');
    expect(String(spy.calls[0]!.args[0])).toMatch(/not one well-formed xid/);
  });

  it('with no logger given, a refused header is written at warn to stderr (a real process)', async () => {
    const script = `
      import http from 'node:http';
      import { wrapHttpHandler } from './src/index.ts';
      const server = http.createServer(wrapHttpHandler((req, res) => res.end('ran')));
      server.listen(0, '127.0.0.1', async () => {
        const { port } = server.address();
        const res = await fetch('http://127.0.0.1:' + port, { headers: { TX_XID: 'a, b' } });
        process.stdout.write('STATUS ' + res.status + '\\n');
        server.close();
      });
    `;
    const { code, out, logLines } = await runScript(script);
    expect(code).toBe(0);
    expect(out).toContain('STATUS 400');
    const lines = logLines();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 40, name: 'concord', carrier: 'header' });
    expect(String(lines[0]!.msg)).toMatch(/not one well-formed xid/);
  }, 30_000);
});
