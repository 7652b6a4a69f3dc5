/**
 * The xid crosses HTTP: out through fetch / node:http requests, in through the
 * express-style middleware, the bare node:http wrapper and the fastify plugin. Real servers
 * on loopback ports.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { AsyncResource } from 'node:async_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { currentXid, runWithXid, runWithoutXid } from '../../src/client/context.ts';
import {
  XID_HEADER,
  withXidHeaders,
  withXidInit,
  wrapHttpHandler,
  xidFastifyPlugin,
  xidFetch,
  xidHeaders,
  xidMiddleware,
  type FastifyLikeHook,
  type FastifyLikeInstance,
  type XidMiddleware,
} from '../../src/client/propagation/index.ts';
import { capturingLogger, sleep } from './helpers/db.ts';

const X1 = '10.0.0.1:8091:4242';
const X2 = '10.0.0.2:8091:4343';

async function listen(server: http.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}
const close = (server: http.Server) =>
  new Promise<void>((resolve) => server.close(() => resolve()));

interface Seen {
  xid: string | null;
  /** The raw header the server received, to tell "not sent" from "sent and ignored". */
  header: string | null;
}
const send = (res: http.ServerResponse, body: unknown) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify(body));
};

/**
 * Downstream service B: bare node:http with wrapHttpHandler; reports the xid it sees after some
 * async hops.
 */
const serverLog = capturingLogger();
let bUrl = '';
let aUrl = '';
let downstream: http.Server;
let upstream: http.Server;

beforeAll(async () => {
  downstream = http.createServer(
    wrapHttpHandler(
      async (req, res) => {
        await sleep(2);
        await new Promise<void>((resolve) => setTimeout(resolve, 1));
        const seen: Seen = {
          xid: currentXid() ?? null,
          header: (req.headers['tx_xid'] as string | undefined) ?? null,
        };
        send(res, seen);
      },
      { logger: serverLog.logger },
    ),
  );
  bUrl = await listen(downstream);

  // Upstream service A: an express-style chain (the middleware, then a handler) that calls B.
  const middleware: XidMiddleware = xidMiddleware({ logger: serverLog.logger });
  // The server is created inside a transaction on purpose: a request without a header must
  // still see none (the middleware unbinds explicitly rather than inheriting).
  upstream = runWithXid(X2, () =>
    http.createServer((req, res) => {
      middleware(req, res, async (err) => {
        if (err) return void res.writeHead((err as { status?: number }).status ?? 500).end();
        await sleep(1);
        const own = currentXid() ?? null;
        const fromB = (await (await xidFetch(bUrl)).json()) as Seen;
        send(res, { a: own, b: fromB });
      });
    }),
  );
  aUrl = await listen(upstream);
});

afterAll(async () => {
  await close(upstream);
  await close(downstream);
});

describe('HTTP propagation', () => {
  it('the xid crosses two hops via fetch and the middleware (A binds it, B receives it)', async () => {
    const body = await runWithXid(X1, async () => (await xidFetch(aUrl)).json());
    expect(body).toEqual({ a: X1, b: { xid: X1, header: X1 } });
  });

  it('no transaction → no header, and the servers bind none (even one created inside a transaction)', async () => {
    const body = await (await xidFetch(aUrl)).json();
    expect(body).toEqual({ a: null, b: { xid: null, header: null } });
  });

  it('runWithoutXid suspends propagation inside a transaction', async () => {
    const body = await runWithXid(X1, () =>
      runWithoutXid(async () => (await xidFetch(bUrl)).json()),
    );
    expect(body).toEqual({ xid: null, header: null });
  });

  it('the xid crosses via a node:http request with withXidHeaders', async () => {
    const body = await runWithXid(
      X1,
      () =>
        new Promise<Seen>((resolve, reject) => {
          const req = http.request(
            bUrl,
            { headers: withXidHeaders({ accept: 'application/json' }) },
            (res) => {
              let data = '';
              res.setEncoding('utf8');
              res.on('data', (c: string) => (data += c));
              res.on('end', () => resolve(JSON.parse(data) as Seen));
            },
          );
          req.on('error', reject);
          req.end();
        }),
    );
    expect(body).toEqual({ xid: X1, header: X1 });
  });

  it('the header name is case-insensitive on the way in', async () => {
    for (const name of ['TX_XID', 'tx_xid', 'Tx_Xid']) {
      const body = (await (await fetch(bUrl, { headers: { [name]: X1 } })).json()) as Seen;
      expect(body.xid).toBe(X1);
    }
  });

  it('a malformed incoming xid is refused with 400 (the handler never runs) and logged at warn, truncated', async () => {
    serverLog.records.length = 0;
    const res = await fetch(bUrl, { headers: { TX_XID: `not-an-xid-${'z'.repeat(500)}` } });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { name: string; code: string; message: string } };
    expect(body.error).toMatchObject({ name: 'InvalidIncomingXidError', code: 'BAD_REQUEST' });
    expect(body.error.message).toMatch(/TX_XID header is not one well-formed xid/);
    const warn = serverLog.records.find((r) => r.level === 40);
    expect(warn?.msg).toMatch(/not one well-formed xid/);
    const [value] = warn?.values as string[];
    expect(value!.length).toBeLessThanOrEqual(81);
  });

  it('a header repeated with two different xids is refused; repeated with the same xid it is one xid', async () => {
    const send = (values: string[]) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const url = new URL(bUrl);
        const req = http.request(
          { host: url.hostname, port: url.port, headers: { tx_xid: values } },
          (res) => {
            let data = '';
            res.on('data', (c: Buffer) => (data += c.toString()));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data }));
          },
        );
        req.on('error', reject);
        req.end();
      });
    const different = await send([X1, X2]);
    expect(different.status).toBe(400);
    const same = await send([X1, X1]);
    expect(same.status).toBe(200);
    expect((JSON.parse(same.body) as Seen).xid).toBe(X1);
  });

  it("xidFetch keeps a Request's own headers and an explicit xid header wins", async () => {
    const seen = await runWithXid(X1, async () => {
      const viaRequest = (await (
        await xidFetch(new Request(bUrl, { headers: { 'x-other': '1' } }))
      ).json()) as Seen;
      const explicit = (await (await xidFetch(bUrl, { headers: { tx_xid: X2 } })).json()) as Seen;
      return { viaRequest, explicit };
    });
    expect(seen.viaRequest.xid).toBe(X1);
    expect(seen.explicit.xid).toBe(X2);
  });
});

describe('outgoing header helpers', () => {
  it('add the header only when bound, keep the input shape and never mutate it', () => {
    const record = { a: '1' };
    const tuples: [string, string][] = [['a', '1']];
    const headers = new Headers({ a: '1' });
    expect(withXidHeaders(record)).toEqual({ a: '1' });
    expect(xidHeaders()).toEqual({});
    expect(withXidInit({ method: 'POST' })).toEqual({ method: 'POST' });
    runWithXid(X1, () => {
      expect(withXidHeaders(record)).toEqual({ a: '1', [XID_HEADER]: X1 });
      expect(withXidHeaders(tuples)).toEqual([
        ['a', '1'],
        [XID_HEADER, X1],
      ]);
      const h = withXidHeaders(headers);
      expect(h).toBeInstanceOf(Headers);
      expect(h.get('tx_xid')).toBe(X1);
      expect(withXidHeaders()).toEqual({ [XID_HEADER]: X1 });
      expect(xidHeaders()).toEqual({ [XID_HEADER]: X1 });
      expect(new Headers(withXidInit({ headers: { b: '2' } }).headers).get(XID_HEADER)).toBe(X1);
      expect(withXidHeaders({ Tx_Xid: X2 })).toEqual({ Tx_Xid: X2 });
    });
    expect(record).toEqual({ a: '1' });
    expect(tuples).toEqual([['a', '1']]);
    expect(headers.has(XID_HEADER)).toBe(false);
  });
});

describe("fastify plugin (against a minimal fake of fastify's hook lifecycle)", () => {
  /**
   * Mimics what matters of fastify: hooks run in order, each calls `done` to continue, and
   * the body is parsed from stream events — which run in the socket's async context, not the
   * request's. The "socket" here is an AsyncResource created before any request.
   */
  function fakeFastify(options: { skipPreValidation?: boolean } = {}) {
    const hooks = new Map<string, FastifyLikeHook[]>();
    const instance: FastifyLikeInstance = {
      addHook(name, hook) {
        hooks.set(name, [...(hooks.get(name) ?? []), hook]);
        return instance;
      },
    };
    const socketScope = runWithoutXid(() => new AsyncResource('fake-socket'));
    const runHooks = (
      name: string,
      request: { headers: http.IncomingHttpHeaders },
      then: () => void,
    ) => {
      const list =
        options.skipPreValidation && name === 'preValidation' ? [] : (hooks.get(name) ?? []);
      const next = (i: number) =>
        i >= list.length ? then() : list[i]?.(request, {}, (err) => (err ? then() : next(i + 1)));
      next(0);
    };
    const inject = (headers: http.IncomingHttpHeaders) =>
      new Promise<string | undefined>((resolve) => {
        const request = { headers };
        runHooks('onRequest', request, () => {
          // Body parsing: continues from a stream event in the socket's context.
          setImmediate(() =>
            socketScope.runInAsyncScope(() =>
              runHooks('preValidation', request, async () => {
                await sleep(1);
                resolve(currentXid());
              }),
            ),
          );
        });
      });
    return { instance, inject };
  }

  it('binds the xid for the handler, across the body-parsing context switch', async () => {
    const app = fakeFastify();
    await new Promise<void>((resolve, reject) =>
      xidFastifyPlugin(app.instance, {}, (err) => (err ? reject(err) : resolve())),
    );
    expect(await app.inject({ tx_xid: X1 })).toBe(X1);
    expect(await app.inject({})).toBeUndefined();
    expect(await app.inject({ tx_xid: 'bad' })).toBeUndefined();
  });

  it('without the preValidation re-entry the xid would be lost (the hook is needed)', async () => {
    const app = fakeFastify({ skipPreValidation: true });
    xidFastifyPlugin(app.instance, {}, () => {});
    expect(await app.inject({ tx_xid: X1 })).toBeUndefined();
  });

  it('is marked skip-override so its hooks apply to the whole instance', () => {
    expect(
      (xidFastifyPlugin as unknown as Record<symbol, unknown>)[Symbol.for('skip-override')],
    ).toBe(true);
  });
});
