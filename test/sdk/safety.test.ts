/**
 * The SDK's guard rails (issue 23, and the fence's confirm rule) against a REAL three-node
 * cluster, REAL PostgreSQL and REAL Express 5 / Fastify 5 / grpc-js servers:
 * - a callee behind a proxy that repeats TX_XID joins the caller's transaction instead of
 *   committing one of its own; a header it cannot use is refused (400 / INVALID_ARGUMENT);
 * - joinTransaction never begins a transaction;
 * - the scope's AbortSignal fires at the global timeout and on rollback, and branch calls
 *   after it are refused before they reach the TC; the global timeout is its own error;
 * - waiting for phase two with an RM that comes back late;
 * - the gap between register and try, reached with createBranchGate;
 * - a confirm for a branch whose try never ran is refused and reported unretryable.
 */
import { requireXid } from '../../src/shared/ids.ts';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import express from 'express';
import Fastify, { type FastifyInstance } from 'fastify';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BranchRefusedError,
  createBranchGate,
  createClient,
  currentXid,
  runWithXid,
  GlobalTimeoutError,
  IllegalStatusError,
  InvalidIncomingXidError,
  NoTransactionToJoinError,
  TransactionFailedError,
  TransactionRolledBackError,
  TransactionRollingBackError,
  TransactionTimeoutError,
  withXidFromMetadata,
  xidClientInterceptor,
  xidFastifyPlugin,
  xidFetch,
  xidMiddleware,
  type ClientOptions,
  type ConcordClient,
  type GlobalStatus,
} from '../../src/index.ts';
import { TcClient } from '../../src/client/tc-client.ts';
import { silentLogger } from '../../src/shared/logger.ts';
import { capturingLogger, connectPg, uniquePrefix } from '../client/helpers/db.ts';
import { pgDriver, type FenceDriver } from '../client/helpers/drivers.ts';
import { waitFor } from '../ops/helpers.ts';
import { startCluster, type TestCluster } from './helpers/cluster.ts';
import { bindLocal, jsonUnary } from '../support/grpc-json.ts';
import type { PgFenceTx } from '../../src/pg.ts';

/** How long the TC's phase-two retries (1 s, 2 s, 4 s, ... backoff) get to finish a branch here. */
const PHASE_TWO_WAIT_MS = 30_000;

let cluster: TestCluster;
let pool: pg.Pool;
let d: FenceDriver<PgFenceTx>;
let tc: TcClient;
const clients: ConcordClient[] = [];
let seq = 0;

function newClient(options: Partial<ClientOptions> = {}): ConcordClient {
  const c = createClient({
    servers: cluster.servers,
    applicationId: `safety-${++seq}`,
    logger: silentLogger(),
    closeTimeoutMs: 5_000,
    ...options,
  });
  clients.push(c);
  return c;
}

beforeAll(async () => {
  pool = await connectPg(10);
  d = pgDriver(pool, uniquePrefix('safety'));
  await d.createBusinessTables();
  await d.newFence().ensureSchema();
  cluster = await startCluster('safety');
  tc = new TcClient({ seeds: cluster.servers, logger: silentLogger() });
}, 180_000);

afterAll(async () => {
  await Promise.allSettled(clients.map((c) => c.close()));
  await tc?.close();
  await cluster?.stop();
  await d?.dropAll().catch(() => undefined);
  await pool?.end();
}, 60_000);

// ---------------------------------------------------------------------------------------
// An account TCC action: try freezes, confirm deducts, cancel unfreezes; every business
// step leaves a ledger row (xid, branch, kind), so "what ran, in which transaction" is a query.

interface Freeze {
  account: string;
  amount: number;
}

function freezeAction(client: ConcordClient, name: string) {
  const { account: acc, ledger } = d.names;
  const note = (tx: PgFenceTx, xid: string, branchId: string, kind: string) =>
    tx.query(`INSERT INTO ${ledger} (xid, branch_id, kind) VALUES ($1, $2, $3)`, [
      xid,
      branchId,
      kind,
    ]);
  return client.tcc.register({
    name,
    fence: d.newFence(),
    try: async ({ account, amount }: Freeze, ctx) => {
      const r = await ctx.tx.query(
        `UPDATE ${acc} SET frozen = frozen + $1 WHERE id = $2 AND balance - frozen >= $1`,
        [amount, account],
      );
      if (r.rowCount !== 1) throw new Error(`${account} cannot freeze ${amount}`);
      await note(ctx.tx, ctx.xid, ctx.branchId, 'try');
      return ctx.branchId;
    },
    confirm: async ({ account, amount }, ctx) => {
      await ctx.tx.query(
        `UPDATE ${acc} SET balance = balance - $1, frozen = frozen - $1 WHERE id = $2`,
        [amount, account],
      );
      await note(ctx.tx, ctx.xid, ctx.branchId, 'confirm');
    },
    cancel: async ({ account, amount }, ctx) => {
      await ctx.tx.query(`UPDATE ${acc} SET frozen = frozen - $1 WHERE id = $2`, [amount, account]);
      await note(ctx.tx, ctx.xid, ctx.branchId, 'cancel');
    },
  });
}

async function openAccount(balance = 100): Promise<string> {
  const id = `acct-${++seq}-${Date.now()}`;
  await d.sql(`INSERT INTO ${d.names.account} (id, balance, frozen) VALUES ($1, $2, 0)`, [
    id,
    balance,
  ]);
  return id;
}

async function accountOf(id: string): Promise<{ balance: number; frozen: number }> {
  const row = (await d.sql(`SELECT balance, frozen FROM ${d.names.account} WHERE id = $1`, [id]))
    .rows[0]!;
  return { balance: Number(row.balance), frozen: Number(row.frozen) };
}

/** Every ledger row of the branches that touched an account's action, as "xid kind". */
async function ledgerOf(xid: string): Promise<string[]> {
  const r = await d.sql(`SELECT kind FROM ${d.names.ledger} WHERE xid = $1 ORDER BY seq`, [xid]);
  return r.rows.map((row) => String(row.kind));
}

async function ledgerXids(branchIds: string[]): Promise<string[]> {
  if (branchIds.length === 0) return [];
  const r = await d.sql(
    `SELECT DISTINCT xid FROM ${d.names.ledger} WHERE branch_id = ANY($1::text[])`,
    [branchIds],
  );
  return r.rows.map((row) => String(row.xid));
}

async function waitForStatus(xid: string, wanted: GlobalStatus): Promise<void> {
  await waitFor(
    `${xid} to be ${wanted}`,
    async () => ((await tc.getStatus(requireXid(xid))) === wanted ? true : undefined),
    PHASE_TWO_WAIT_MS,
    100,
  );
}

/** True when some stretch of 24+ characters occurs twice in `message` ("X is S: X is S: …"). */
function repeats(message: string): boolean {
  for (let i = 0; i + 24 <= message.length; i++)
    if (message.indexOf(message.slice(i, i + 24), i + 1) !== -1) return true;
  return false;
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/**
 * A reverse proxy in front of `target` that forwards the TX_XID header twice: the same
 * value again, or `other` in the second line. What a misconfigured gateway does.
 */
async function duplicatingProxy(
  target: string,
  other?: string,
): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    const headers = { ...req.headers };
    const xid = req.headers.tx_xid;
    if (typeof xid === 'string') headers.tx_xid = [xid, other ?? xid] as unknown as string;
    const t = new URL(target);
    const out = httpRequest(
      { host: t.hostname, port: t.port, path: req.url, method: req.method, headers },
      (upstream) => {
        res.writeHead(upstream.statusCode ?? 502, upstream.headers);
        upstream.pipe(res);
      },
    );
    out.on('error', () => res.writeHead(502).end());
    req.pipe(out);
  });
  return { url: await listen(server), server };
}

// ---------------------------------------------------------------------------------------

describe('a callee behind a proxy that repeats TX_XID (Express 5 and Fastify 5)', () => {
  type Callee = { url: string; close: () => Promise<void>; warnings: () => number };
  const servers: Server[] = [];
  afterAll(async () => {
    for (const s of servers) await new Promise((r) => s.close(r));
  });

  /** The callee the old docs (§2) described: it runs its work in client.transaction (REQUIRED). */
  async function expressCallee(
    action: ReturnType<typeof freezeAction>,
    callee: ConcordClient,
  ): Promise<Callee> {
    const log = capturingLogger('warn');
    const app = express();
    app.use(express.json());
    app.use(xidMiddleware({ logger: log.logger }));
    app.post('/freeze', async (req, res) => {
      const branchId = await callee.transaction({}, () => action(req.body as Freeze));
      res.json({ branchId, xid: currentXid() ?? null });
    });
    app.use(
      (err: unknown, _q: express.Request, res: express.Response, _n: express.NextFunction) => {
        res
          .status(err instanceof InvalidIncomingXidError ? 400 : 500)
          .json({ error: (err as Error).name });
      },
    );
    const server = createServer(app);
    servers.push(server);
    return {
      url: await listen(server),
      close: () => new Promise((r) => server.close(() => r())),
      warnings: () =>
        log.records.filter((r) => /not one well-formed xid/.test(String(r.msg))).length,
    };
  }

  async function fastifyCallee(
    action: ReturnType<typeof freezeAction>,
    callee: ConcordClient,
  ): Promise<Callee> {
    const log = capturingLogger('warn');
    const app: FastifyInstance = Fastify();
    await app.register(xidFastifyPlugin, { logger: log.logger });
    app.post('/freeze', async (request) => {
      const branchId = await callee.transaction({}, () => action(request.body as Freeze));
      return { branchId, xid: currentXid() ?? null };
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    return {
      url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`,
      close: () => app.close(),
      warnings: () =>
        log.records.filter((r) => /not one well-formed xid/.test(String(r.msg))).length,
    };
  }

  const kinds = [
    ['Express 5', expressCallee],
    ['Fastify 5', fastifyCallee],
  ] as const;

  it.each(kinds)(
    '%s: the same xid twice is one xid — the callee joins the caller’s transaction, and the caller’s rollback releases its reservation',
    async (label, make) => {
      const caller = newClient();
      const callee = newClient();
      const action = freezeAction(callee, `dup.same.${label.split(' ')[0]}`);
      const server = await make(action, callee);
      const proxy = await duplicatingProxy(server.url);
      servers.push(proxy.server);
      const a = await openAccount(100);
      let xid = '';
      let answer: { branchId: string; xid: string | null } | undefined;
      try {
        await expect(
          caller.transaction({ name: 'dup-same' }, async (scope) => {
            xid = scope.xid!;
            const res = await xidFetch(`${proxy.url}/freeze`, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({ account: a, amount: 30 }),
            });
            expect(res.status).toBe(200);
            answer = (await res.json()) as typeof answer;
            throw new Error('the caller fails after the callee answered');
          }),
        ).rejects.toThrow('the caller fails');
        // The callee ran in the caller's transaction, and began none of its own.
        expect(answer?.xid).toBe(xid);
        expect(await ledgerXids([answer!.branchId])).toEqual([xid]);
        await waitForStatus(xid, 'Rollbacked');
        expect(await ledgerOf(xid)).toEqual(['try', 'cancel']);
        expect(await accountOf(a)).toEqual({ balance: 100, frozen: 0 });
        expect(server.warnings()).toBe(0);
      } finally {
        await server.close();
      }
    },
  );

  it.each(kinds)(
    '%s: two different xids are refused with 400 before any work, logged at warn; the caller rolls back and nothing is left',
    async (label, make) => {
      const caller = newClient();
      const callee = newClient();
      const action = freezeAction(callee, `dup.other.${label.split(' ')[0]}`);
      const server = await make(action, callee);
      const proxy = await duplicatingProxy(server.url, '10.9.9.9:8091:1');
      servers.push(proxy.server);
      const a = await openAccount(100);
      let xid = '';
      try {
        await expect(
          caller.transaction({ name: 'dup-other' }, async (scope) => {
            xid = scope.xid!;
            const res = await xidFetch(`${proxy.url}/freeze`, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({ account: a, amount: 30 }),
            });
            if (res.status !== 200) throw new Error(`callee answered ${res.status}`);
          }),
        ).rejects.toThrow('callee answered 400');
        expect(await tc.getStatus(requireXid(xid))).toBe('Rollbacked');
        expect(await ledgerOf(xid)).toEqual([]);
        expect(await accountOf(a)).toEqual({ balance: 100, frozen: 0 });
        expect(server.warnings()).toBe(1);
      } finally {
        await server.close();
      }
    },
  );
});

describe('gRPC: repeated tx_xid metadata', () => {
  it('the same xid twice joins the caller’s transaction; two different xids end with INVALID_ARGUMENT and register nothing', async () => {
    const caller = newClient();
    const callee = newClient();
    const action = freezeAction(callee, 'grpc.dup');
    const definition: grpc.ServiceDefinition = { Freeze: jsonUnary('/safety.Account/Freeze') };
    const server = new grpc.Server();
    server.addService(definition, {
      Freeze: withXidFromMetadata(
        async (call: grpc.ServerUnaryCall<Freeze, unknown>, cb: grpc.sendUnaryData<unknown>) => {
          const branchId = await callee.joinTransaction(() => action(call.request));
          cb(null, { branchId });
        },
        { logger: silentLogger() },
      ),
    });
    const port = await bindLocal(server);
    const Stub = grpc.makeGenericClientConstructor(definition, 'Account');
    const stub = new Stub(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
      interceptors: [xidClientInterceptor],
    }) as unknown as {
      Freeze(
        req: Freeze,
        md: grpc.Metadata,
        cb: (err: grpc.ServiceError | null, res: { branchId: string }) => void,
      ): void;
      close(): void;
    };
    const freeze = (req: Freeze, md: grpc.Metadata) =>
      new Promise<{ branchId: string }>((res, rej) =>
        stub.Freeze(req, md, (err, r) => (err ? rej(err) : res(r))),
      );
    const a = await openAccount(100);
    try {
      let ok = '';
      const answer = await caller.transaction({}, async ({ xid }) => {
        ok = xid!;
        const md = new grpc.Metadata();
        md.add('tx_xid', xid!);
        md.add('tx_xid', xid!); // forwarded twice by a proxy; the interceptor leaves it alone
        return freeze({ account: a, amount: 10 }, md);
      });
      await waitForStatus(ok, 'Committed');
      expect(await ledgerXids([answer.branchId])).toEqual([ok]);
      expect(await ledgerOf(ok)).toEqual(['try', 'confirm']);

      let bad = '';
      const err = await caller
        .transaction({}, async ({ xid }) => {
          bad = xid!;
          const md = new grpc.Metadata();
          md.add('tx_xid', xid!);
          md.add('tx_xid', '10.9.9.9:8091:2');
          return freeze({ account: a, amount: 10 }, md);
        })
        .catch((e: unknown) => e);
      expect(err).toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
      expect(await tc.getStatus(requireXid(bad))).toBe('Rollbacked');
      expect(await ledgerOf(bad)).toEqual([]);
      expect(await accountOf(a)).toEqual({ balance: 90, frozen: 0 });
    } finally {
      stub.close();
      await new Promise((r) => server.tryShutdown(r));
    }
  });
});

describe('joinTransaction: the callee’s side', () => {
  it('without an incoming xid it fails with NoTransactionToJoinError and begins nothing; with one it joins', async () => {
    const caller = newClient();
    const calleeApp = `safety-callee-${++seq}`;
    const callee = newClient({ applicationId: calleeApp });
    const action = freezeAction(callee, 'join.freeze');
    const a = await openAccount(100);
    let ran = 0;
    const app = express();
    app.use(express.json());
    app.use(xidMiddleware({ logger: silentLogger() }));
    app.post('/freeze', async (req, res) => {
      const branchId = await callee.joinTransaction(async (scope) => {
        ran++;
        expect(scope.role).toBe('participant');
        return action(req.body as Freeze);
      });
      res.json({ branchId });
    });
    app.use(
      (err: unknown, _q: express.Request, res: express.Response, _n: express.NextFunction) => {
        res.status(err instanceof NoTransactionToJoinError ? 409 : 500).json({
          error: (err as Error).name,
          message: (err as Error).message,
        });
      },
    );
    const server = createServer(app);
    const url = await listen(server);
    try {
      const before = await tc.listSessions({ pageSize: 500 });
      const res = await fetch(`${url}/freeze`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ account: a, amount: 5 }),
      });
      expect(res.status).toBe(409);
      expect(await res.json()).toMatchObject({
        error: 'NoTransactionToJoinError',
        message: expect.stringMatching(/no TX_XID header/),
      });
      expect(ran).toBe(0);
      const after = await tc.listSessions({ pageSize: 500 });
      expect(after.sessions.filter((s) => s.applicationId === calleeApp)).toEqual([]);
      expect(after.totalLive).toBeLessThanOrEqual(before.totalLive);
      await expect(callee.joinTransaction(() => 1)).rejects.toBeInstanceOf(
        NoTransactionToJoinError,
      );

      let xid = '';
      await caller.transaction({}, async (scope) => {
        xid = scope.xid!;
        const ok = await xidFetch(`${url}/freeze`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ account: a, amount: 5 }),
        });
        expect(ok.status).toBe(200);
      });
      expect(ran).toBe(1);
      await waitForStatus(xid, 'Committed');
      expect(await ledgerOf(xid)).toEqual(['try', 'confirm']);
      expect(await accountOf(a)).toEqual({ balance: 95, frozen: 0 });
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});

describe('the scope’s AbortSignal and the global timeout', () => {
  it('fires at the global timeout (GlobalTimeoutError); a branch call after it is refused before the TC; the call rejects with that error and the tried branch is cancelled', async () => {
    const client = newClient();
    const action = freezeAction(client, 'timeout.signal');
    const [a, b] = [await openAccount(100), await openAccount(100)];
    const TIMEOUT_MS = 1_500;
    const started = performance.now();
    let xid = '';
    let firedAfterMs = 0;
    let reason: unknown;
    let late: unknown;
    const err = await client
      .transaction({ name: 'outlives', timeoutMs: TIMEOUT_MS }, async (scope) => {
        xid = scope.xid!;
        await action({ account: a, amount: 10 });
        await new Promise<void>((resolve) =>
          scope.signal.addEventListener('abort', () => resolve(), { once: true }),
        );
        firedAfterMs = performance.now() - started;
        reason = scope.signal.reason;
        late = await action({ account: b, amount: 10 }).catch((e: unknown) => e);
        return 'finished anyway';
      })
      .catch((e: unknown) => e);
    // libuv and Date.now() round to whole milliseconds, so a timer may fire up to 2 ms before
    // performance.now() says its delay has passed.
    expect(firedAfterMs).toBeGreaterThanOrEqual(TIMEOUT_MS - 2);
    expect(reason).toBeInstanceOf(GlobalTimeoutError);
    expect(reason).toMatchObject({ xid, timeoutMs: TIMEOUT_MS, code: 'TIMEOUT' });
    // Refused locally: the very reason object, not a TC refusal.
    expect(late).toBe(reason);
    // fn returned after the timeout: the SDK rolls back and reports the timeout.
    expect(err).toBe(reason);
    expect(err).toBeInstanceOf(TransactionRolledBackError);
    expect(err).not.toBeInstanceOf(TransactionTimeoutError);
    expect(repeats((err as Error).message)).toBe(false);
    await waitFor(
      `${xid} rolled back`,
      async () => (/Rollbacked$/.test(await tc.getStatus(requireXid(xid))) ? true : undefined),
      PHASE_TWO_WAIT_MS,
      100,
    );
    expect(await ledgerOf(xid)).toEqual(['try', 'cancel']);
    expect(await accountOf(a)).toEqual({ balance: 100, frozen: 0 });
    expect(await accountOf(b)).toEqual({ balance: 100, frozen: 0 });
  });

  it('a commit after the TC timed the transaction out throws GlobalTimeoutError; a branch the TC refused for it too, with messages free of repetition', async () => {
    const client = newClient();
    const action = freezeAction(client, 'timeout.tc');
    const a = await openAccount(100);
    const tx = await client.begin({ name: 'tc-timeout', timeoutMs: 300 });
    await waitFor(
      'the TC to time it out',
      async () => ((await tc.getStatus(tx.xid)).startsWith('TimeoutRollback') ? true : undefined),
      PHASE_TWO_WAIT_MS,
      100,
    );
    // A participant in another process has no local signal (a propagation helper binds
    // only the xid): the TC refuses its branch.
    const remote = await runWithXid(tx.xid, () => action({ account: a, amount: 1 })).catch(
      (e: unknown) => e,
    );
    expect(remote).toBeInstanceOf(GlobalTimeoutError);
    expect((remote as Error).cause).toBeInstanceOf(IllegalStatusError);
    expect(repeats((remote as Error).message)).toBe(false);
    expect(repeats(((remote as Error).cause as Error).message)).toBe(false);
    const commit = await tx.commit().catch((e: unknown) => e);
    expect(commit).toBeInstanceOf(GlobalTimeoutError);
    expect(repeats((commit as Error).message)).toBe(false);
    expect(tx.signal.aborted).toBe(true);
  });

  it('fires when the function throws (TransactionRollingBackError): work it left running is refused a branch', async () => {
    const client = newClient();
    const action = freezeAction(client, 'rollback.signal');
    const [a, b] = [await openAccount(100), await openAccount(100)];
    let background: Promise<unknown> | undefined;
    let xid = '';
    await expect(
      client.transaction({}, async (scope) => {
        xid = scope.xid!;
        await action({ account: a, amount: 10 });
        background = new Promise<void>((resolve) =>
          scope.signal.addEventListener('abort', () => resolve(), { once: true }),
        ).then(() => action({ account: b, amount: 10 }).catch((e: unknown) => e));
        throw new Error('business failure');
      }),
    ).rejects.toThrow('business failure');
    const late = await background;
    expect(late).toBeInstanceOf(TransactionRollingBackError);
    expect(late).toMatchObject({ xid });
    expect(await tc.getStatus(requireXid(xid))).toBe('Rollbacked');
    expect(await ledgerOf(xid)).toEqual(['try', 'cancel']);
    expect(await accountOf(b)).toEqual({ balance: 100, frozen: 0 });
  });
});

describe('waiting for phase two', () => {
  it('with an RM that comes back late: pending without waiting, done once it confirms within the wait', async () => {
    const tm = newClient();
    const rmApp = `safety-late-rm-${++seq}`;
    const rm = newClient({ applicationId: rmApp });
    const action = freezeAction(rm, 'late.freeze');
    const [a, b] = [await openAccount(100), await openAccount(100)];

    // 1. No wait: the commit is durable, the confirm cannot be delivered (the RM is gone).
    const first = await tm.transactionOutcome({ name: 'late-1' }, async () => {
      await action({ account: a, amount: 10 });
      await rm.close(); // the RM goes away after its try, before phase two
    });
    expect(first).toMatchObject({ role: 'launcher', phaseTwo: 'pending' });
    expect(['Committing', 'CommitRetrying']).toContain(first.status);
    expect(await ledgerOf(first.xid!)).toEqual(['try']);
    // A bounded wait that ends before the RM is back says pending, with the status it saw.
    const handle = tm.globalTransaction(first.xid!);
    expect(await handle.waitForPhaseTwo(300)).toMatchObject({ phaseTwo: 'pending' });

    // 2. The RM comes back (a new process of the same service) a little later; a wait that
    // covers it resolves done, with the confirm applied.
    let back: ConcordClient | undefined;
    setTimeout(() => {
      back = newClient({ applicationId: rmApp });
      freezeAction(back, 'late.freeze');
    }, 1_500).unref();
    const done = await handle.waitForPhaseTwo(PHASE_TWO_WAIT_MS);
    expect(done).toEqual({ status: 'Committed', phaseTwo: 'done' });
    expect(await ledgerOf(first.xid!)).toEqual(['try', 'confirm']);
    expect(await accountOf(a)).toEqual({ balance: 90, frozen: 0 });

    // 3. The option on the transaction itself: resolves only once phase two is done.
    const again = freezeAction(back!, 'late.freeze.2');
    const second = await tm.transactionOutcome(
      { name: 'late-2', waitForPhaseTwoMs: PHASE_TWO_WAIT_MS },
      () => again({ account: b, amount: 20 }),
    );
    expect(second).toMatchObject({ status: 'Committed', phaseTwo: 'done' });
    expect(await ledgerOf(second.xid!)).toEqual(['try', 'confirm']);
    expect(await accountOf(b)).toEqual({ balance: 80, frozen: 0 });
  });
});

describe('createBranchGate: the gap between register and try', () => {
  it('holds a registered branch before its try: the rollback is an empty rollback, and the released try is refused (hanging)', async () => {
    const gate = createBranchGate({ at: 'afterBranchRegister', resourceId: 'gate.freeze' });
    const client = newClient({ hooks: gate.hooks });
    const action = freezeAction(client, 'gate.freeze');
    const a = await openAccount(100);
    const tx = await client.begin({ name: 'gate' });
    const call = tx.run(() => action({ account: a, amount: 10 })).catch((e: unknown) => e);
    const branch = await gate.reached();
    expect(branch).toMatchObject({ xid: tx.xid, resourceId: 'gate.freeze', op: 'try' });
    expect(await tx.rollback()).toBe('Rollbacked');
    const fenceRows = await d.sql(
      `SELECT op, reason FROM ${d.names.fence} WHERE xid = $1 ORDER BY op`,
      [tx.xid],
    );
    expect(fenceRows.rows.map((r) => `${String(r.op)}/${String(r.reason)}`)).toEqual([
      'cancel/cancel',
      'try/cancel',
    ]);
    gate.release();
    const err = await call;
    expect(err).toBeInstanceOf(BranchRefusedError);
    expect(await ledgerOf(tx.xid)).toEqual([]);
    expect(await accountOf(a)).toEqual({ balance: 100, frozen: 0 });
  });
});

describe('fence: a confirm without its try (issue 13, item 13)', () => {
  it('an orphan branch (registered twice, the second never tried) is not confirmed: the business confirm never runs, the RM logs an error, the branch is reported unretryable and the transaction ends CommitFailed', async () => {
    const log = capturingLogger('warn');
    const rm = newClient({ logger: log.logger });
    const action = freezeAction(rm, 'orphan.freeze');
    const tm = newClient();
    const a = await openAccount(100);
    const tx = await tm.begin({ name: 'orphan' });
    await tx.run(() => action({ account: a, amount: 10 }));
    // The same BranchRegister again, as a retry whose dedup entry was lost would (item 5):
    // a second branch of the resource, routed to the same RM, whose try never ran.
    const orphan = await tc.branchRegister({
      xid: tx.xid,
      branchType: 'TCC',
      resourceId: 'orphan.freeze',
      applicationData: JSON.stringify({ concord: 1, args: { account: a, amount: 10 } }),
      clientId: rm.clientId,
      applicationId: rm.applicationId,
    });
    const err = await tx.commit().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransactionFailedError);
    expect(err).toMatchObject({ status: 'CommitFailed' });
    // The real branch was confirmed once; the orphan's confirm never ran.
    expect(await ledgerOf(tx.xid)).toEqual(['try', 'confirm']);
    expect(await accountOf(a)).toEqual({ balance: 90, frozen: 0 });
    const loud = log.records.find((r) => r.level === 50 && r.branchId === orphan);
    expect(String(loud?.msg)).toMatch(/confirm refused: the branch has no try/);
    expect(loud).toMatchObject({ xid: tx.xid, found: 'noTry' });
  });
});
