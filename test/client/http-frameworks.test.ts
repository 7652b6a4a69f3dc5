/**
 * The HTTP propagation helpers inside REAL frameworks — Express 5, Fastify 5 and a bare
 * node:http server — on loopback ports:
 * - a TX_XID header that is not one well-formed xid is refused with 400 before the handler
 *   runs, through the framework's own error path, and logged at warn; the same xid repeated
 *   (a proxy that adds the header again) is one xid;
 * - a handler whose promise rejects reaches the framework's error handler (and, on bare
 *   node:http, answers 500) instead of becoming an unhandled rejection.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { currentXid } from '../../src/client/context.ts';
import {
  InvalidIncomingXidError,
  wrapHttpHandler,
  xidFastifyPlugin,
  xidMiddleware,
} from '../../src/client/propagation/index.ts';
import { capturingLogger } from './helpers/db.ts';

const X1 = '10.0.0.1:8091:4242';
const X2 = '10.0.0.2:8091:4343';

interface Answer {
  status: number;
  body: string;
}

/** One request with the given xid header lines (node sends each array element as its own line). */
function request(
  url: string,
  xid: string | string[] | undefined,
  init: { method?: string; body?: string } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const headers: http.OutgoingHttpHeaders = {};
    if (xid !== undefined) headers.tx_xid = xid;
    if (init.body !== undefined) headers['content-type'] = 'application/json';
    const req = http.request(
      { host: u.hostname, port: u.port, path: u.pathname, method: init.method ?? 'GET', headers },
      (res) => {
        let data = '';
        res.on('data', (c: Buffer) => (data += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(init.body);
  });
}

async function listen(server: http.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}
const close = (server: http.Server) =>
  new Promise<void>((resolve) => server.close(() => resolve()));

/** Fails the test if any promise rejection goes unhandled while it runs. */
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);
beforeEach(() => {
  unhandled.length = 0;
  process.on('unhandledRejection', onUnhandled);
});
afterEach(() => {
  process.off('unhandledRejection', onUnhandled);
  expect(unhandled).toEqual([]);
});

const refusedWarnings = (records: Record<string, unknown>[]) =>
  records.filter((r) => r.level === 40 && /not one well-formed xid/.test(String(r.msg)));

describe('Express 5', () => {
  const log = capturingLogger();
  const seenErrors: unknown[] = [];
  let ran = 0;
  let server: http.Server;
  let url = '';

  beforeAll(async () => {
    const app = express();
    app.use(xidMiddleware({ logger: log.logger }));
    app.get('/xid', (_req, res) => {
      ran++;
      res.json({ xid: currentXid() ?? null });
    });
    // Express 5 awaits a handler's promise itself; the xid binding must survive the await.
    app.get('/async-fails', async () => {
      await new Promise((r) => setTimeout(r, 2));
      throw new Error(`failed under ${currentXid()}`);
    });
    // wrapHttpHandler as a route: the handler's rejection goes to next(err).
    app.get(
      '/wrapped-fails',
      wrapHttpHandler(
        async () => {
          await new Promise((r) => setTimeout(r, 2));
          throw new Error(`wrapped failed under ${currentXid()}`);
        },
        { logger: log.logger },
      ),
    );
    app.use(
      (err: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
        seenErrors.push(err);
        const status = err instanceof InvalidIncomingXidError ? err.status : 500;
        res.status(status).json({ error: (err as Error).name, message: (err as Error).message });
      },
    );
    server = http.createServer(app);
    url = await listen(server);
  });
  afterAll(() => close(server));

  it('binds the xid; the same xid repeated is one xid', async () => {
    expect(JSON.parse((await request(`${url}/xid`, X1)).body)).toEqual({ xid: X1 });
    expect(JSON.parse((await request(`${url}/xid`, [X1, X1])).body)).toEqual({ xid: X1 });
    expect(JSON.parse((await request(`${url}/xid`, undefined)).body)).toEqual({ xid: null });
  });

  it('two different xids, or a malformed one, reach the error handler as InvalidIncomingXidError (400); the route never runs', async () => {
    log.records.length = 0;
    seenErrors.length = 0;
    const before = ran;
    for (const bad of [[X1, X2], `${X1}, ${X2}`, 'nope', '']) {
      const answer = await request(`${url}/xid`, bad);
      expect(answer.status).toBe(400);
      expect(JSON.parse(answer.body)).toMatchObject({ error: 'InvalidIncomingXidError' });
    }
    expect(ran).toBe(before);
    expect(seenErrors).toHaveLength(4);
    expect(seenErrors.every((e) => e instanceof InvalidIncomingXidError)).toBe(true);
    expect(refusedWarnings(log.records)).toHaveLength(4);
  });

  it("an async handler's rejection reaches the error handler, with the xid still bound inside", async () => {
    seenErrors.length = 0;
    const answer = await request(`${url}/async-fails`, X1);
    expect(answer.status).toBe(500);
    expect(JSON.parse(answer.body)).toMatchObject({ message: `failed under ${X1}` });
    const wrapped = await request(`${url}/wrapped-fails`, X2);
    expect(wrapped.status).toBe(500);
    expect(JSON.parse(wrapped.body)).toMatchObject({ message: `wrapped failed under ${X2}` });
    expect(seenErrors).toHaveLength(2);
  });
});

describe('Fastify 5', () => {
  const log = capturingLogger();
  const seenErrors: unknown[] = [];
  let ran = 0;
  let app: FastifyInstance;
  let url = '';

  beforeAll(async () => {
    app = Fastify();
    await app.register(xidFastifyPlugin, { logger: log.logger });
    app.setErrorHandler((err, _request, reply) => {
      seenErrors.push(err);
      void reply
        .code((err as { statusCode?: number }).statusCode ?? 500)
        .send({ error: (err as Error).name, message: (err as Error).message });
    });
    app.post('/xid', async (request) => {
      ran++;
      return { xid: currentXid() ?? null, body: request.body };
    });
    app.get('/async-fails', async () => {
      await new Promise((r) => setTimeout(r, 2));
      throw new Error(`failed under ${currentXid()}`);
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  });
  afterAll(() => app.close());

  it('binds the xid for a route with a body; the same xid repeated is one xid', async () => {
    const body = JSON.stringify({ n: 'x'.repeat(70_000) }); // parsed from several chunks
    const a = await request(`${url}/xid`, X1, { method: 'POST', body });
    expect(a.status).toBe(200);
    expect(JSON.parse(a.body).xid).toBe(X1);
    const b = await request(`${url}/xid`, [X2, X2], { method: 'POST', body: '{}' });
    expect(JSON.parse(b.body).xid).toBe(X2);
  });

  it('two different xids, or a malformed one, are refused with 400 through the error handler; the route never runs', async () => {
    log.records.length = 0;
    seenErrors.length = 0;
    const before = ran;
    for (const bad of [[X1, X2], 'nope']) {
      const answer = await request(`${url}/xid`, bad, { method: 'POST', body: '{}' });
      expect(answer.status).toBe(400);
      expect(JSON.parse(answer.body)).toMatchObject({ error: 'InvalidIncomingXidError' });
    }
    expect(ran).toBe(before);
    expect(seenErrors.every((e) => e instanceof InvalidIncomingXidError)).toBe(true);
    expect(refusedWarnings(log.records)).toHaveLength(2);
  });

  it("an async handler's rejection reaches the error handler, with the xid bound inside", async () => {
    seenErrors.length = 0;
    const answer = await request(`${url}/async-fails`, X1);
    expect(answer.status).toBe(500);
    expect(JSON.parse(answer.body)).toMatchObject({ message: `failed under ${X1}` });
    expect(seenErrors).toHaveLength(1);
  });

  it('wrapHttpHandler as a Fastify route handler: its rejection and a refused xid both reach the error handler', async () => {
    const inner = Fastify();
    const errors: unknown[] = [];
    inner.setErrorHandler((err, _request, reply) => {
      errors.push(err);
      void reply.code((err as { statusCode?: number }).statusCode ?? 500).send({ ok: false });
    });
    inner.get(
      '/',
      wrapHttpHandler(
        async (_request: FastifyRequest, _reply: FastifyReply) => {
          throw new Error(`failed under ${currentXid()}`);
        },
        { logger: log.logger },
      ),
    );
    await inner.listen({ port: 0, host: '127.0.0.1' });
    try {
      const base = `http://127.0.0.1:${(inner.server.address() as AddressInfo).port}/`;
      expect((await request(base, X1)).status).toBe(500);
      expect((await request(base, 'nope')).status).toBe(400);
      expect((errors[0] as Error).message).toBe(`failed under ${X1}`);
      expect(errors[1]).toBeInstanceOf(InvalidIncomingXidError);
    } finally {
      await inner.close();
    }
  });
});

describe('bare node:http with wrapHttpHandler', () => {
  const log = capturingLogger();
  let server: http.Server;
  let url = '';
  let ran = 0;

  beforeAll(async () => {
    server = http.createServer(
      wrapHttpHandler(
        async (req, res) => {
          ran++;
          await new Promise((r) => setTimeout(r, 2));
          if (req.url === '/fails') throw new Error(`failed under ${currentXid()}`);
          if (req.url === '/gone')
            throw Object.assign(new Error('no such thing'), { statusCode: 404 });
          if (req.url === '/fails-late') {
            res.writeHead(200).write('partial');
            throw new Error('after the headers');
          }
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ xid: currentXid() ?? null }));
        },
        { logger: log.logger },
      ),
    );
    url = await listen(server);
  });
  afterAll(() => close(server));

  it('binds the xid; repeated identical values are one; different or malformed ones get 400 without running the handler', async () => {
    expect(JSON.parse((await request(`${url}/`, [X1, X1])).body)).toEqual({ xid: X1 });
    const before = ran;
    const refused = await request(`${url}/`, [X1, X2]);
    expect(refused.status).toBe(400);
    expect(JSON.parse(refused.body).error).toMatchObject({
      name: 'InvalidIncomingXidError',
      code: 'BAD_REQUEST',
    });
    expect(ran).toBe(before);
  });

  it('a rejected handler answers 500 (logged at error, the message not leaked); a status on the error is kept; after the headers the connection is cut', async () => {
    log.records.length = 0;
    const failed = await request(`${url}/fails`, X1);
    expect(failed.status).toBe(500);
    expect(JSON.parse(failed.body).error).toEqual({
      name: 'InternalError',
      message: 'internal error',
    });
    const logged = log.records.find((r) => r.level === 50);
    expect((logged?.err as { message?: string })?.message).toBe(`failed under ${X1}`);
    expect((await request(`${url}/gone`, undefined)).status).toBe(404);
    await expect(request(`${url}/fails-late`, undefined)).rejects.toThrow();
  });
});
