/**
 * The SDK against a REAL three-node cluster (child processes) and REAL PostgreSQL and
 * MySQL/MariaDB: TCC and Saga branches under the fence, phase two driven by the TC over
 * the RM channel. A database that cannot be reached fails this file (see
 * test/client/helpers/db.ts).
 */
import type { ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type pg from 'pg';
import type mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BranchRefusedError,
  createClient,
  currentXid,
  NoGlobalTransactionError,
  TransactionPropagationError,
  TransactionRolledBackError,
  withXidFromMetadata,
  wrapHttpHandler,
  xidClientInterceptor,
  xidFetch,
  type ConcordClient,
  type Fence,
  type FenceKey,
  type FenceOutcome,
  type GlobalStatus,
} from '../../src/index.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { connectMysql, connectPg, pgEnv, sleep, uniquePrefix } from '../client/helpers/db.ts';
import { mysqlDriver, pgDriver, type FenceDriver } from '../client/helpers/drivers.ts';
import { REPO_ROOT, waitFor } from '../ops/helpers.ts';
import { startCluster, type TestCluster } from './helpers/cluster.ts';
import { bindLocal, jsonUnary } from '../support/grpc-json.ts';
import { killAll, killHard, startFixture, type FixtureProcess } from '../support/process.ts';

const logger = createLogger({
  name: 'sdk-test',
  level: process.env.CONCORD_TEST_LOG_LEVEL ?? 'silent',
});
/**
 * How long the TC's phase-two retries (1 s, 2 s, 4 s, ... backoff) get to finish a branch in a
 * test.
 */
const PHASE_TWO_WAIT_MS = 30_000;

let cluster: TestCluster;
let pgPool: pg.Pool;
let mysqlPool: mysql.Pool;
let pgD: FenceDriver<any>;
let myD: FenceDriver<any>;
const clients: ConcordClient[] = [];
let seq = 0;

function newClient(applicationId = `sdk-test-${++seq}`): ConcordClient {
  const c = createClient({
    servers: cluster.servers,
    applicationId,
    logger,
    closeTimeoutMs: 5_000,
  });
  clients.push(c);
  return c;
}

beforeAll(async () => {
  // Databases first: an unreachable one fails the file before a cluster is started for nothing.
  pgPool = await connectPg(10);
  mysqlPool = await connectMysql(10);
  pgD = pgDriver(pgPool, uniquePrefix('sdk'));
  myD = mysqlDriver(mysqlPool, uniquePrefix('sdk'));
  for (const d of [pgD, myD]) {
    await d.createBusinessTables();
    await d.newFence().ensureSchema();
  }
  cluster = await startCluster('sdk');
}, 180_000);

afterAll(async () => {
  await Promise.allSettled(clients.map((c) => c.close()));
  await cluster?.stop();
  for (const d of [pgD, myD]) await d?.dropAll().catch(() => undefined);
  await pgPool?.end();
  await mysqlPool?.end();
}, 60_000);

// ---------------------------------------------------------------------------------------
// A bank account TCC action: try freezes, confirm deducts, cancel unfreezes; every
// business execution leaves a ledger row, so "ran exactly once" is a count.

class InsufficientFunds extends Error {}

interface Freeze {
  account: string;
  amount: number;
}

interface Hooks {
  /** Before the fence runs an op (a slow network, a paused process). */
  before?: (key: FenceKey) => Promise<void> | void;
  /** After the fence ran an op (the answer may still be lost). */
  after?: (key: FenceKey, outcome: FenceOutcome) => Promise<void> | void;
  /** Inside the business step, after its write (a failure here rolls the write back). */
  inside?: (op: string, ctx: { xid: string; branchId: string }) => Promise<void> | void;
}

/** The driver's fence, observed and perturbed by hooks (the SDK takes any Fence). */
function observedFence<Tx>(d: FenceDriver<Tx>, hooks: Hooks, outcomes: string[]): Fence<Tx> {
  const real = d.newFence();
  return {
    ...real,
    async run(key, fn) {
      await hooks.before?.(key);
      const outcome = await real.run(key, fn);
      outcomes.push(`${key.op}:${outcome}`);
      await hooks.after?.(key, outcome);
      return outcome;
    },
  };
}

function freezeAction<Tx>(
  client: ConcordClient,
  d: FenceDriver<Tx>,
  name: string,
  hooks: Hooks = {},
  outcomes: string[] = [],
) {
  const { account: acc, ledger } = d.names;
  const note = (tx: Tx, xid: string, branchId: string, kind: string) =>
    d.txSql(tx, `INSERT INTO ${ledger} (xid, branch_id, kind) VALUES ($1, $2, $3)`, [
      xid,
      branchId,
      kind,
    ]);
  return client.tcc.register({
    name,
    fence: observedFence(d, hooks, outcomes),
    try: async ({ account, amount }: Freeze, ctx) => {
      const r = await d.txSql(
        ctx.tx,
        `UPDATE ${acc} SET frozen = frozen + $1 WHERE id = $2 AND balance - frozen >= $3`,
        [amount, account, amount],
      );
      if (r.count !== 1) throw new InsufficientFunds(`${account} cannot freeze ${amount}`);
      await note(ctx.tx, ctx.xid, ctx.branchId, 'try');
      await hooks.inside?.('try', ctx);
      return ctx.branchId;
    },
    confirm: async ({ account, amount }, ctx) => {
      await d.txSql(
        ctx.tx,
        `UPDATE ${acc} SET balance = balance - $1, frozen = frozen - $2 WHERE id = $3`,
        [amount, amount, account],
      );
      await note(ctx.tx, ctx.xid, ctx.branchId, 'confirm');
      await hooks.inside?.('confirm', ctx);
    },
    cancel: async ({ account, amount }, ctx) => {
      await d.txSql(ctx.tx, `UPDATE ${acc} SET frozen = frozen - $1 WHERE id = $2`, [
        amount,
        account,
      ]);
      await note(ctx.tx, ctx.xid, ctx.branchId, 'cancel');
      await hooks.inside?.('cancel', ctx);
    },
  });
}

async function openAccount(d: FenceDriver<unknown>, balance: number): Promise<string> {
  const id = `acct-${++seq}`;
  await d.sql(`INSERT INTO ${d.names.account} (id, balance, frozen) VALUES ($1, $2, 0)`, [
    id,
    balance,
  ]);
  return id;
}

async function accountOf(
  d: FenceDriver<unknown>,
  id: string,
): Promise<{ balance: number; frozen: number }> {
  const r = await d.sql(`SELECT balance, frozen FROM ${d.names.account} WHERE id = $1`, [id]);
  const row = r.rows[0]!;
  return { balance: Number(row.balance), frozen: Number(row.frozen) };
}

async function ledgerOf(d: FenceDriver<unknown>, xid: string): Promise<string[]> {
  const r = await d.sql(`SELECT kind FROM ${d.names.ledger} WHERE xid = $1 ORDER BY seq`, [xid]);
  return r.rows.map((row) => String(row.kind));
}

async function statusOf(client: ConcordClient, xid: string): Promise<GlobalStatus> {
  return client.globalTransaction(xid).status();
}

async function waitForStatus(
  client: ConcordClient,
  xid: string,
  wanted: GlobalStatus,
): Promise<void> {
  await waitFor(
    `${xid} to be ${wanted}`,
    async () => ((await statusOf(client, xid)) === wanted ? true : undefined),
    PHASE_TWO_WAIT_MS,
    200,
  );
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

// ---------------------------------------------------------------------------------------

describe('TCC on PostgreSQL and MySQL under the fence', () => {
  it('success: every try is confirmed once, on both databases, and the transaction is Committed', async () => {
    const client = newClient();
    const onPg = freezeAction(client, pgD, 'ok.pg');
    const onMy = freezeAction(client, myD, 'ok.my');
    const a = await openAccount(pgD, 100);
    const b = await openAccount(myD, 100);
    let xid = '';
    await client.transaction({ name: 'success' }, async (scope) => {
      xid = scope.xid!;
      await onPg({ account: a, amount: 30 });
      await onMy({ account: b, amount: 40 });
    });
    // Commit answered after one phase-two pass: the confirms have run.
    expect(await statusOf(client, xid)).toBe('Committed');
    expect(await accountOf(pgD, a)).toEqual({ balance: 70, frozen: 0 });
    expect(await accountOf(myD, b)).toEqual({ balance: 60, frozen: 0 });
    expect(await ledgerOf(pgD, xid)).toEqual(['try', 'confirm']);
    expect(await ledgerOf(myD, xid)).toEqual(['try', 'confirm']);
  });

  it('failure in a try cancels every tried branch, newest first; the failed try (rolled back by its fence) is dropped', async () => {
    const client = newClient();
    const outcomes: string[] = [];
    const cancelOrder: string[] = [];
    const hooks = (name: string): Hooks => ({
      inside: (op) => void (op === 'cancel' && cancelOrder.push(name)),
    });
    const first = freezeAction(client, pgD, 'fail.first', hooks('fail.first'), outcomes);
    const second = freezeAction(client, myD, 'fail.second', hooks('fail.second'), outcomes);
    const third = freezeAction(client, pgD, 'fail.third', hooks('fail.third'), outcomes);
    const a = await openAccount(pgD, 100);
    const b = await openAccount(myD, 100);
    const poor = await openAccount(pgD, 5);
    let xid = '';
    const err = await client
      .transaction({ name: 'fail-in-try' }, async (scope) => {
        xid = scope.xid!;
        await first({ account: a, amount: 10 });
        await second({ account: b, amount: 20 });
        await third({ account: poor, amount: 50 });
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InsufficientFunds);
    expect(await statusOf(client, xid)).toBe('Rollbacked');
    // The third try threw inside its fence: nothing of it committed, it was reported
    // PhaseOne_Failed, and the TC skips it; the two tried branches are cancelled, newest first.
    expect(outcomes).toEqual([
      'try:executed',
      'try:executed',
      'cancel:executed',
      'cancel:executed',
    ]);
    expect(cancelOrder).toEqual(['fail.second', 'fail.first']);
    expect(await accountOf(pgD, a)).toEqual({ balance: 100, frozen: 0 });
    expect(await accountOf(myD, b)).toEqual({ balance: 100, frozen: 0 });
    expect(await accountOf(pgD, poor)).toEqual({ balance: 5, frozen: 0 });
    expect(await ledgerOf(pgD, xid)).toEqual(['try', 'cancel']);
    expect(await ledgerOf(myD, xid)).toEqual(['try', 'cancel']);
  });

  describe.each([
    ['PostgreSQL', () => pgD],
    ['MySQL', () => myD],
  ])('%s', (label, driver) => {
    it('a confirm that fails twice then succeeds: retried by the TC, applied exactly once', async () => {
      const d = driver();
      const client = newClient();
      let confirms = 0;
      const outcomes: string[] = [];
      const action = freezeAction(
        client,
        d,
        `flaky.${label}`,
        {
          inside: (op) => {
            // After the business write: the failure must roll that write back with the fence row.
            if (op === 'confirm' && ++confirms <= 2)
              throw new Error(`transient failure ${confirms}`);
          },
        },
        outcomes,
      );
      const a = await openAccount(d, 100);
      let xid = '';
      await client.transaction({}, async (scope) => {
        xid = scope.xid!;
        await action({ account: a, amount: 25 });
      });
      await waitForStatus(client, xid, 'Committed');
      expect(confirms).toBe(3);
      expect(await accountOf(d, a)).toEqual({ balance: 75, frozen: 0 });
      expect(await ledgerOf(d, xid)).toEqual(['try', 'confirm']);
      expect(outcomes).toEqual(['try:executed', 'confirm:executed']);
    });

    it.each(['confirm', 'cancel'] as const)(
      'phase two delivered twice (%s): the second delivery is a no-op',
      async (op) => {
        const d = driver();
        const client = newClient();
        const outcomes: string[] = [];
        let lost = false;
        const action = freezeAction(
          client,
          d,
          `twice.${op}.${label}`,
          {
            after: (key) => {
              // The op committed, but its answer never reaches the TC: it will deliver again.
              if (key.op === op && !lost) {
                lost = true;
                throw new Error('answer lost');
              }
            },
          },
          outcomes,
        );
        const a = await openAccount(d, 100);
        let xid = '';
        const run = client.transaction({}, async (scope) => {
          xid = scope.xid!;
          await action({ account: a, amount: 10 });
          if (op === 'cancel') throw new Error('roll back');
        });
        if (op === 'cancel') await expect(run).rejects.toThrow('roll back');
        else await run;
        await waitForStatus(client, xid, op === 'confirm' ? 'Committed' : 'Rollbacked');
        expect(outcomes).toEqual(['try:executed', `${op}:executed`, `${op}:duplicate`]);
        expect(await ledgerOf(d, xid)).toEqual(['try', op]);
        expect(await accountOf(d, a)).toEqual(
          op === 'confirm' ? { balance: 90, frozen: 0 } : { balance: 100, frozen: 0 },
        );
      },
    );

    it('cancel delivered before the try: an empty rollback, and the late try is refused', async () => {
      const d = driver();
      const client = newClient();
      const outcomes: string[] = [];
      const tryArrived = deferred();
      const releaseTry = deferred();
      const action = freezeAction(
        client,
        d,
        `hanging.${label}`,
        {
          // The try is registered, then held up (GC pause, slow network) before it reaches the
          // database.
          before: async (key) => {
            if (key.op !== 'try') return;
            tryArrived.resolve();
            await releaseTry.promise;
          },
        },
        outcomes,
      );
      const a = await openAccount(d, 100);
      const tx = await client.begin({ name: 'hanging' });
      const pending = tx.run(() => action({ account: a, amount: 10 })).catch((e: unknown) => e);
      await tryArrived.promise;
      // The TM gives up first: the TC rolls back and cancels the registered branch.
      expect(await tx.rollback()).toBe('Rollbacked');
      expect(outcomes).toEqual(['cancel:emptyRollback']);
      releaseTry.resolve();
      const err = await pending;
      expect(err).toBeInstanceOf(BranchRefusedError);
      expect(err).toMatchObject({ xid: tx.xid, resourceId: `hanging.${label}` });
      expect(outcomes).toEqual(['cancel:emptyRollback', 'try:hangingRefused']);
      expect(await ledgerOf(d, tx.xid)).toEqual([]);
      expect(await accountOf(d, a)).toEqual({ balance: 100, frozen: 0 });
    });
  });

  it('a transaction that outlives its timeout is rolled back by the TC; commit says so', async () => {
    const client = newClient();
    const action = freezeAction(client, pgD, 'timeout.pg');
    const a = await openAccount(pgD, 100);
    let xid = '';
    // 1.5 s: the branch registers well within it even on a loaded machine; then fn outlives it.
    const err = await client
      .transaction({ timeoutMs: 1_500 }, async (scope) => {
        xid = scope.xid!;
        await action({ account: a, amount: 10 });
        await sleep(3_000);
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransactionRolledBackError);
    expect((err as TransactionRolledBackError).status).toMatch(/^TimeoutRollback/);
    await waitForStatus(client, xid, 'TimeoutRollbacked');
    expect(await accountOf(pgD, a)).toEqual({ balance: 100, frozen: 0 });
    expect(await ledgerOf(pgD, xid)).toEqual(['try', 'cancel']);
  });
});

describe('Saga', () => {
  it('forward actions commit with nothing to undo; a later failure compensates newest first, under the fence', async () => {
    const client = newClient();
    const log: string[] = [];
    const { ledger } = pgD.names;
    const step = (name: string) =>
      client.saga.register({
        name,
        fence: pgD.newFence(),
        action: async (n: number, ctx) => {
          log.push(`${name}(${n})`);
          await pgD.txSql(
            ctx.tx,
            `INSERT INTO ${ledger} (xid, branch_id, kind) VALUES ($1, $2, $3)`,
            [ctx.xid, ctx.branchId, `${name}`],
          );
        },
        compensate: async (n, ctx) => {
          log.push(`undo ${name}(${n})`);
          await pgD.txSql(
            ctx.tx,
            `INSERT INTO ${ledger} (xid, branch_id, kind) VALUES ($1, $2, $3)`,
            [ctx.xid, ctx.branchId, `undo ${name}`],
          );
        },
      });
    const book = step('saga.book');
    const pay = step('saga.pay');
    let ok = '';
    await client.transaction({}, async (scope) => {
      ok = scope.xid!;
      await book(1);
      await pay(1);
    });
    expect(await statusOf(client, ok)).toBe('Committed');
    expect(log).toEqual(['saga.book(1)', 'saga.pay(1)']);
    log.length = 0;
    let bad = '';
    await expect(
      client.transaction({}, async (scope) => {
        bad = scope.xid!;
        await book(2);
        await pay(2);
        throw new Error('shipping failed');
      }),
    ).rejects.toThrow('shipping failed');
    expect(await statusOf(client, bad)).toBe('Rollbacked');
    expect(log).toEqual(['saga.book(2)', 'saga.pay(2)', 'undo saga.pay(2)', 'undo saga.book(2)']);
    expect(await ledgerOf(pgD, bad)).toEqual([
      'saga.book',
      'saga.pay',
      'undo saga.pay',
      'undo saga.book',
    ]);
  });
});

describe('propagation modes against the cluster', () => {
  it('REQUIRED joins; REQUIRES_NEW commits on its own while the outer rolls back; NOT_SUPPORTED suspends', async () => {
    const client = newClient();
    const action = freezeAction(client, pgD, 'prop.pg');
    const a = await openAccount(pgD, 100);
    let outer = '';
    let joined: string | undefined;
    let inner = '';
    let suspended: unknown;
    await expect(
      client.transaction({ name: 'outer' }, async (scope) => {
        outer = scope.xid!;
        await action({ account: a, amount: 1 });
        await client.transaction({ propagation: 'REQUIRED' }, async (s) => {
          joined = s.xid;
          await action({ account: a, amount: 2 });
        });
        await client.transaction({ propagation: 'REQUIRES_NEW', name: 'inner' }, async (s) => {
          inner = s.xid!;
          await action({ account: a, amount: 4 });
        });
        suspended = await client.transaction({ propagation: 'NOT_SUPPORTED' }, () =>
          action({ account: a, amount: 8 }).catch((e: unknown) => e),
        );
        await expect(client.transaction({ propagation: 'NEVER' }, () => 1)).rejects.toBeInstanceOf(
          TransactionPropagationError,
        );
        expect(currentXid()).toBe(outer);
        throw new Error('outer fails');
      }),
    ).rejects.toThrow('outer fails');
    expect(joined).toBe(outer);
    expect(inner).not.toBe(outer);
    expect(suspended).toBeInstanceOf(NoGlobalTransactionError);
    expect(await statusOf(client, outer)).toBe('Rollbacked');
    expect(await statusOf(client, inner)).toBe('Committed');
    // Only the REQUIRES_NEW branch's 4 was deducted; the outer's 1 + 2 were released.
    expect(await accountOf(pgD, a)).toEqual({ balance: 96, frozen: 0 });
    expect(await ledgerOf(pgD, outer)).toEqual(['try', 'try', 'cancel', 'cancel']);
    expect(await ledgerOf(pgD, inner)).toEqual(['try', 'confirm']);
  });

  it('SUPPORTS and NEVER run without a transaction outside one; MANDATORY refuses', async () => {
    const client = newClient();
    expect(await client.transaction({ propagation: 'SUPPORTS' }, (s) => s)).toMatchObject({
      xid: undefined,
      role: 'none',
    });
    expect(await client.transaction({ propagation: 'NEVER' }, (s) => s)).toMatchObject({
      xid: undefined,
      role: 'none',
    });
    await expect(client.transaction({ propagation: 'MANDATORY' }, () => 1)).rejects.toBeInstanceOf(
      TransactionPropagationError,
    );
    const inside = await client.transaction({}, async ({ xid }) => [
      xid,
      await client.transaction({ propagation: 'SUPPORTS' }, (s) => s.xid),
      await client.transaction({ propagation: 'MANDATORY' }, (s) => s.xid),
    ]);
    expect(inside[1]).toBe(inside[0]);
    expect(inside[2]).toBe(inside[0]);
  });
});

describe('noRollbackFor', () => {
  class OutOfStockNotice extends Error {}

  it('an error it lists commits (confirm runs) and is rethrown; another error rolls back', async () => {
    const client = newClient();
    const action = freezeAction(client, myD, 'norollback.my');
    const a = await openAccount(myD, 100);
    let committed = '';
    const err = await client
      .transaction({ noRollbackFor: [OutOfStockNotice] }, async (scope) => {
        committed = scope.xid!;
        await action({ account: a, amount: 10 });
        throw new OutOfStockNotice('partially shipped');
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OutOfStockNotice);
    expect(await statusOf(client, committed)).toBe('Committed');
    let rolled = '';
    await expect(
      client.transaction({ noRollbackFor: (e) => e instanceof OutOfStockNotice }, async (scope) => {
        rolled = scope.xid!;
        await action({ account: a, amount: 20 });
        throw new Error('real failure');
      }),
    ).rejects.toThrow('real failure');
    expect(await statusOf(client, rolled)).toBe('Rollbacked');
    expect(await accountOf(myD, a)).toEqual({ balance: 90, frozen: 0 });
  });
});

describe('xid propagation between services', () => {
  let httpServer: Server | undefined;
  let grpcServer: grpc.Server | undefined;
  afterAll(async () => {
    await new Promise((r) => (httpServer ? httpServer.close(r) : r(undefined)));
    await new Promise((r) => (grpcServer ? grpcServer.tryShutdown(r) : r(undefined)));
  });

  it('over HTTP (TX_XID header): the remote service registers its branch in the caller’s transaction', async () => {
    const caller = newClient('http-caller');
    const callee = newClient('http-callee');
    const action = freezeAction(callee, pgD, 'http.freeze');
    const a = await openAccount(pgD, 100);
    const seen: (string | undefined)[] = [];
    httpServer = createServer(
      wrapHttpHandler(async (req, res) => {
        seen.push(currentXid());
        try {
          const branchId = await action({
            account: a,
            amount: Number(new URL(req.url ?? '/', 'http://x').searchParams.get('amount')),
          });
          res.writeHead(200).end(branchId);
        } catch (err) {
          res.writeHead(409).end((err as Error).message);
        }
      }),
    );
    await new Promise<void>((r) => httpServer!.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(httpServer.address() as AddressInfo).port}/freeze`;
    let ok = '';
    await caller.transaction({}, async ({ xid }) => {
      ok = xid!;
      const res = await xidFetch(`${url}?amount=30`, { method: 'POST' });
      expect(res.status).toBe(200);
    });
    let bad = '';
    await expect(
      caller.transaction({}, async ({ xid }) => {
        bad = xid!;
        expect((await xidFetch(`${url}?amount=20`, { method: 'POST' })).status).toBe(200);
        const refused = await xidFetch(`${url}?amount=1000`, { method: 'POST' });
        if (refused.status !== 200) throw new Error(`callee refused: ${await refused.text()}`);
      }),
    ).rejects.toThrow('callee refused');
    expect(seen).toEqual([ok, bad, bad]);
    expect(await statusOf(caller, ok)).toBe('Committed');
    expect(await statusOf(caller, bad)).toBe('Rollbacked');
    expect(await accountOf(pgD, a)).toEqual({ balance: 70, frozen: 0 });
    expect(await ledgerOf(pgD, ok)).toEqual(['try', 'confirm']);
    expect(await ledgerOf(pgD, bad)).toEqual(['try', 'cancel']);
  });

  it('over gRPC (tx_xid metadata): the remote service registers its branch in the caller’s transaction', async () => {
    const caller = newClient('grpc-caller');
    const callee = newClient('grpc-callee');
    const action = freezeAction(callee, myD, 'grpc.freeze');
    const a = await openAccount(myD, 100);
    const definition: grpc.ServiceDefinition = { Freeze: jsonUnary('/sdk.test.Account/Freeze') };
    const seen: (string | undefined)[] = [];
    grpcServer = new grpc.Server();
    grpcServer.addService(definition, {
      Freeze: withXidFromMetadata(
        (call: grpc.ServerUnaryCall<Freeze, unknown>, callback: grpc.sendUnaryData<unknown>) => {
          seen.push(currentXid());
          action(call.request).then(
            (branchId) => callback(null, { branchId }),
            (err: Error) =>
              callback({ code: grpc.status.FAILED_PRECONDITION, details: err.message }),
          );
        },
      ),
    });
    const port = await bindLocal(grpcServer);
    const Stub = grpc.makeGenericClientConstructor(definition, 'Account');
    const stub = new Stub(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
      interceptors: [xidClientInterceptor],
    }) as unknown as {
      Freeze(req: Freeze, cb: (err: grpc.ServiceError | null, res: unknown) => void): void;
      close(): void;
    };
    const freeze = (req: Freeze) =>
      new Promise((res, rej) => stub.Freeze(req, (err, r) => (err ? rej(err) : res(r))));
    let xid = '';
    try {
      await caller.transaction({}, async (scope) => {
        xid = scope.xid!;
        await freeze({ account: a, amount: 15 });
      });
    } finally {
      stub.close();
    }
    expect(seen).toEqual([xid]);
    expect(await statusOf(caller, xid)).toBe('Committed');
    expect(await accountOf(myD, a)).toEqual({ balance: 85, frozen: 0 });
    expect(await ledgerOf(myD, xid)).toEqual(['try', 'confirm']);
  });
});

describe('an RM restarted between try and confirm', () => {
  const FIXTURE = resolve(REPO_ROOT, 'test/sdk/fixtures/rm-service.ts');
  const children = new Set<ChildProcess>();
  afterAll(() => killAll(children));

  const startRm = (schema: string): Promise<FixtureProcess> =>
    startFixture(FIXTURE, {
      env: {
        CONCORD_SERVERS: cluster.servers.join(','),
        RM_SCHEMA: schema,
        RM_APPLICATION_ID: 'restart-rm',
        ...pgEnv(),
      },
      readyTimeoutMs: 30_000,
      children,
    });

  it('still gets its confirm: the TC retries until an RM of the application serves the resource again', async () => {
    const schema = pgD.names.ledger.split('.')[0]!;
    const tm = newClient('restart-tm');
    const first = await startRm(schema);
    const tx = await tm.begin({ name: 'restart', timeoutMs: 60_000 });
    const res = await tx.run(() =>
      xidFetch(`http://127.0.0.1:${first.port}/try`, { method: 'POST' }),
    );
    expect(res.status).toBe(200);
    expect(((await res.json()) as { xid: string }).xid).toBe(tx.xid);
    expect(await ledgerOf(pgD, tx.xid)).toEqual(['try']);

    // The RM dies hard after its try, before phase two.
    await killHard(first.child);

    // The decision is durable even though the branch cannot be told yet.
    const status = await tx.commit();
    expect(['CommitRetrying', 'Committing']).toContain(status);
    expect(await ledgerOf(pgD, tx.xid)).toEqual(['try']);

    // A new process of the same service (a new client id) comes up and receives the confirm.
    await startRm(schema);
    await waitForStatus(tm, tx.xid, 'Committed');
    expect(await ledgerOf(pgD, tx.xid)).toEqual(['try', 'confirm']);
  }, 90_000);
});
