/**
 * The workload one client process runs: a steady stream of global transactions through
 * the SDK (`createClient`, `client.begin`, TCC actions registered with a PostgreSQL
 * fence), some failing on purpose, each step recorded in the history.
 *
 * A transaction moves money in 1..3 TCC branches (a "transfer" per branch):
 *   try      freeze `amount` on the source account      + effect row 'try'
 *   confirm  move it from source to target              + effect row 'confirm'
 *   cancel   unfreeze it                                + effect row 'cancel'
 * each inside the fence's local transaction (ctx.tx), so the fence's row and the business
 * write commit together.
 *
 * It uses the SDK's GlobalTransaction handle (begin → run → commit / rollback) rather than
 * `client.transaction(fn)`, because the history must record what each TC call answered:
 * `transaction()` swallows a failed rollback (rightly, for an application) and would hide it.
 *
 * Planned failures: a try throws (the fence rolls its local transaction back; the cancel
 * becomes an empty rollback), or the body throws after every try succeeded (every branch is
 * really cancelled). Either way the workload asks the TC to roll back.
 *
 * Row locks: TCC branches lock no rows, so to give the TC's lock table work (and the checker
 * something to find after healing), some transactions also register a LOCK BRANCH through
 * the low-level TcClient: a branch of the shared resource `chaos.locks` whose lock key names
 * one or two of LOCK_ROWS rows. A conflict (another transaction holds a row) is a definite
 * refusal: the transaction rolls back. Phase two of a lock branch does nothing but answer
 * (every client process serves `chaos.locks` on a raw RM channel); after healing every row
 * must be lockable again.
 *
 * XA and AT branches: some transactions also move money in an XA branch (the bank's accounts,
 * one prepared PostgreSQL transaction) and some in an AT branch (plain UPDATEs of the AT
 * ledger through createPgAtDataSource; only AT branches write that ledger, as docs/sdk-at.md
 * asks of every writer of an AT table).
 */
import type { Xid } from '../src/shared/ids.ts';
import type { Logger } from 'pino';
import type pg from 'pg';
import {
  createClient,
  TransactionAlreadyCommittedError,
  TransactionFailedError,
  TransactionRolledBackError,
  UnknownXidError,
} from '../src/index.ts';
import type { BranchAction, ConcordClient, GlobalTransaction } from '../src/index.ts';
import type { PgAtDataSource, PgFenceTx, PgXaDataSource } from '../src/pg.ts';
import { createPgXaDataSource } from '../src/client/xa/pg.ts';
import { createPgAtDataSource } from '../src/client/at/pg.ts';
import { createPgFence } from '../src/client/fence/index.ts';
import { LockConflictError, type TcClient } from '../src/client/tc-client.ts';
import type { ChaosTables } from './db.ts';
import { BANK_ACCOUNTS } from './db.ts';
import { statusFamily, statusRank, type HistoryWriter, type TxnPlan } from './history.ts';
import {
  BRANCHES_MAX,
  BRANCHES_MIN,
  FAIL_AFTER_TRIES_PROBABILITY,
  FAIL_TRY_PROBABILITY,
  STATUS_POLL_EVERY_MS,
  STATUS_POLL_MAX_MS,
  THINK_MAX_MS,
  THINK_MIN_MS,
} from './limits.ts';
import type { Prng } from '../test/support/prng.ts';
import { sleep } from '../test/support/wait.ts';

/** Resources an application serves (its branches' phase two may go to any of its processes). */
export const RESOURCES_PER_APP = 2;
/**
 * Probability of a GetStatus right after begin (a Begin observation for the monotonicity check).
 */
const EARLY_STATUS_PROBABILITY = 0.2;
/** The resource every client's raw RM channel serves, and the rows its lock branches lock. */
export const LOCK_RESOURCE = 'chaos.locks';
export const LOCK_TABLE = 'chaos_row';
export const LOCK_ROWS = 12;
/** Share of transactions (that got through their tries) that also take row locks. */
const LOCK_BRANCH_PROBABILITY = 0.3;
/**
 * Share of transactions (that got through their tries) that also move money in an XA branch:
 * both accounts updated in one prepared PostgreSQL transaction, committed or rolled back by
 * the TC with the rest (docs/sdk-xa.md). The checker finds none left prepared after healing.
 */
const XA_BRANCH_PROBABILITY = 0.3;
/**
 * Share of transactions (that got through their tries) that also move money in an AT branch:
 * two plain UPDATEs of the AT ledger in one local transaction, made reversible by the AT data
 * source (undo rows, global row locks; docs/sdk-at.md). Only AT branches write that ledger.
 * The checker finds its total unchanged and no undo row of the run left after it settles.
 */
const AT_BRANCH_PROBABILITY = 0.3;
/** Amount moved per branch, range. */
const AMOUNT_MIN = 1;
const AMOUNT_MAX = 100;

export interface TransferArgs {
  txn: string;
  i: number;
  from: number;
  to: number;
  amount: number;
  /** The try throws (a planned failure). */
  fail: boolean;
}

/** What a branch's statements run on (the XA and AT data sources' query handles alike). */
type SqlQuery = { query(sql: string, params: unknown[]): Promise<unknown> };

export interface WorkloadOptions {
  process: string;
  applicationId: string;
  servers: readonly string[];
  pool: pg.Pool;
  /**
   * The XA data source's own pool. A prepared XA branch holds its rows until phase two; TCC
   * tries and cancels on those rows wait in the database, each holding a connection. Had XA
   * shared their pool, COMMIT PREPARED could find every connection waiting behind its own
   * locks (a chaos run deadlocked so: docs/sdk-xa.md, "A pool of its own").
   */
  xaPool: pg.Pool;
  tables: ChaosTables;
  history: HistoryWriter;
  rnd: Prng;
  concurrency: number;
  txnTimeoutMs: number;
  logger: Logger;
  /**
   * The low-level TC client for lock branches, and the client id of this process's raw RM channel.
   */
  tc: TcClient;
  lockClientId: string;
  /**
   * A bug planted on purpose, to see the checker catch it end to end (test/chaos/chaos.test.ts).
   * Never set in a real run.
   */
  sabotage?: Sabotage | null;
}

/**
 * Bugs the workload can plant in itself: `double-confirm` applies a confirm's effect twice;
 * `lost-cancel` rolls every transaction back after its tries and commits each cancel's fence
 * row but skips the business cancel (so every run, however short, has lost cancels).
 */
export const SABOTAGES = ['double-confirm', 'lost-cancel'] as const;
export type Sabotage = (typeof SABOTAGES)[number];

/** A lock key of one or two rows of LOCK_TABLE (sorted, distinct). */
export function lockKeyOf(rows: readonly number[]): string {
  return `${LOCK_TABLE}:${[...new Set(rows)].sort((a, b) => a - b).join(',')}`;
}

export function resourcesOf(applicationId: string): string[] {
  return Array.from({ length: RESOURCES_PER_APP }, (_, i) => `chaos.${applicationId}.transfer${i}`);
}

export function drawPlan(rnd: Prng): TxnPlan {
  const branches = rnd.int(BRANCHES_MIN, BRANCHES_MAX);
  const failTry = rnd.chance(FAIL_TRY_PROBABILITY) ? rnd.int(0, branches - 1) : null;
  return {
    branches,
    failTry,
    failAfterTries: failTry === null && rnd.chance(FAIL_AFTER_TRIES_PROBABILITY),
  };
}

class PlannedFailure extends Error {
  constructor(what: string) {
    super(`planned failure: ${what}`);
    this.name = 'PlannedFailure';
  }
}

const errText = (err: unknown) =>
  (err instanceof Error ? `${err.name}: ${err.message}` : String(err)).slice(0, 300);

export class Workload {
  readonly client: ConcordClient;
  private readonly actions: Array<BranchAction<TransferArgs, string>>;
  /** Made in connect(): the XA data source of this application (resource `chaos.<app>.xa`). */
  private xa!: PgXaDataSource;
  /** Made in connect(): the AT data source of this application (resource `chaos.<app>.at`). */
  private at!: PgAtDataSource;
  private readonly h: HistoryWriter;
  private seq = 0;
  private draining = false;
  private loops: Promise<void>[] = [];
  private readonly log: Logger;
  readonly counters = {
    txns: 0,
    committed: 0,
    rolledBack: 0,
    unknown: 0,
    xaBranches: 0,
    atBranches: 0,
  };

  constructor(private readonly o: WorkloadOptions) {
    this.h = o.history;
    this.log = o.logger.child({ component: 'workload' });
    this.client = createClient({
      servers: [...o.servers],
      applicationId: o.applicationId,
      logger: o.logger,
      defaultTimeoutMs: o.txnTimeoutMs,
    });
    const fence = createPgFence(o.pool, { table: o.tables.fence, logger: o.logger });
    const effect = (tx: PgFenceTx, xid: string, branchId: string, op: string) =>
      tx.query(
        `INSERT INTO ${o.tables.effect} (xid, branch_id, op, process) VALUES ($1, $2, $3, $4)`,
        [xid, branchId, op, o.process],
      );
    this.actions = resourcesOf(o.applicationId).map((resourceId) =>
      this.client.tcc.register<TransferArgs, string, PgFenceTx>({
        resourceId,
        fence,
        try: async (a, ctx) => {
          // The branch id is known only here; hand it to the TM side through the return value.
          if (a.fail) throw new PlannedFailure(`try ${a.i} of ${a.txn} (branch ${ctx.branchId})`);
          await effect(ctx.tx, ctx.xid, ctx.branchId, 'try');
          await ctx.tx.query(`UPDATE ${o.tables.account} SET frozen = frozen + $2 WHERE id = $1`, [
            a.from,
            a.amount,
          ]);
          return ctx.branchId;
        },
        confirm: async (a, ctx) => {
          await effect(ctx.tx, ctx.xid, ctx.branchId, 'confirm');
          if (o.sabotage === 'double-confirm')
            await effect(ctx.tx, ctx.xid, ctx.branchId, 'confirm');
          // Lower id first: two confirms moving money both ways cannot deadlock.
          const moves = [
            [a.from, -a.amount, -a.amount],
            [a.to, a.amount, 0],
          ].sort((x, y) => x[0]! - y[0]!);
          for (const [id, dBalance, dFrozen] of moves) {
            await ctx.tx.query(
              `UPDATE ${o.tables.account} SET balance = balance + $2, frozen = frozen + $3 WHERE id = $1`,
              [id, dBalance, dFrozen],
            );
          }
          this.h.write({
            type: 'ok',
            op: 'confirm',
            xid: ctx.xid,
            branchId: ctx.branchId,
            resource: ctx.resourceId,
            value: 'ran',
          });
        },
        cancel: async (a, ctx) => {
          if (o.sabotage === 'lost-cancel') return;
          await effect(ctx.tx, ctx.xid, ctx.branchId, 'cancel');
          await ctx.tx.query(`UPDATE ${o.tables.account} SET frozen = frozen - $2 WHERE id = $1`, [
            a.from,
            a.amount,
          ]);
          this.h.write({
            type: 'ok',
            op: 'cancel',
            xid: ctx.xid,
            branchId: ctx.branchId,
            resource: ctx.resourceId,
            value: 'ran',
          });
        },
      }),
    );
  }

  async connect(): Promise<void> {
    await this.client.connect();
    const name = `chaos.${this.o.applicationId}.xa`;
    this.xa = createPgXaDataSource(this.client, this.o.xaPool, { name });
    await this.xa.start(); // recovers what a killed process of this application left prepared
    this.at = createPgAtDataSource(this.o.pool, this.client, {
      resourceId: `chaos.${this.o.applicationId}.at`,
      undoTable: this.o.tables.undo,
    });
  }

  start(): void {
    for (let i = 0; i < this.o.concurrency; i++) this.loops.push(this.loop(i));
  }

  /** Stops starting transactions; resolves when the ones in flight have finished. */
  async drain(): Promise<void> {
    this.draining = true;
    await Promise.all(this.loops);
    this.log.info({ counters: this.counters }, 'workload drained');
  }

  private async loop(slot: number): Promise<void> {
    const rnd = this.o.rnd.fork(`slot-${slot}`);
    while (!this.draining) {
      try {
        await this.one(rnd);
      } catch (err) {
        // A bug in the workload itself: log it, keep going (the history shows the gap).
        this.log.error({ err }, 'workload transaction threw unexpectedly');
        await sleep(100);
      }
      await sleep(rnd.int(THINK_MIN_MS, THINK_MAX_MS));
    }
  }

  /** One logical transaction, recorded from invoke to verdict. */
  private async one(rnd: Prng): Promise<void> {
    const txn = `${this.o.process}:${++this.seq}`;
    const drawn = drawPlan(rnd);
    const plan =
      this.o.sabotage === 'lost-cancel' ? { ...drawn, failTry: null, failAfterTries: true } : drawn;
    const t0 = Date.now();
    this.h.write({ type: 'invoke', op: 'txn', txn, plan, t: t0 });
    this.counters.txns++;
    const verdict = await this.run(txn, plan, rnd);
    this.h.write({
      type: verdict.type,
      op: 'txn',
      txn,
      ...(verdict.xid ? { xid: verdict.xid } : {}),
      value: verdict.value,
      t0,
    });
    if (verdict.type === 'ok') this.counters.committed++;
    else if (verdict.type === 'fail') this.counters.rolledBack++;
    else this.counters.unknown++;
  }

  private async run(
    txn: string,
    plan: TxnPlan,
    rnd: Prng,
  ): Promise<{ type: 'ok' | 'fail' | 'info'; xid?: string; value: string }> {
    // begin
    let tx: GlobalTransaction;
    const tb = Date.now();
    this.h.write({ type: 'invoke', op: 'begin', txn, t: tb });
    try {
      tx = await this.client.begin({ name: 'chaos', timeoutMs: this.o.txnTimeoutMs });
    } catch (err) {
      // The TC may have begun one that nobody will finish: it times out and rolls back.
      this.h.write({ type: 'info', op: 'begin', txn, error: errText(err), t0: tb });
      return { type: 'info', value: 'begin-unknown' };
    }
    const xid = tx.xid;
    this.h.write({ type: 'ok', op: 'begin', txn, xid, t0: tb });
    if (rnd.chance(EARLY_STATUS_PROBABILITY)) await this.pollOnce(txn, tx);

    // phase one: the tries
    let failed: string | null = null;
    for (let i = 0; i < plan.branches && failed === null; i++) {
      const action = this.actions[i % this.actions.length]!;
      const from = rnd.int(0, BANK_ACCOUNTS - 1);
      const args: TransferArgs = {
        txn,
        i,
        from,
        to: (from + rnd.int(1, BANK_ACCOUNTS - 1)) % BANK_ACCOUNTS,
        amount: rnd.int(AMOUNT_MIN, AMOUNT_MAX),
        fail: plan.failTry === i,
      };
      const tt = Date.now();
      this.h.write({ type: 'invoke', op: 'try', txn, xid, resource: action.resourceId, t: tt });
      try {
        const branchId = await tx.run(() => action(args));
        this.h.write({
          type: 'ok',
          op: 'try',
          txn,
          xid,
          branchId,
          resource: action.resourceId,
          t0: tt,
        });
      } catch (err) {
        const planned = err instanceof PlannedFailure;
        this.h.write({
          type: planned ? 'fail' : 'info',
          op: 'try',
          txn,
          xid,
          resource: action.resourceId,
          error: errText(err),
          t0: tt,
        });
        failed = planned ? 'planned try failure' : `try failed: ${errText(err)}`;
      }
    }
    if (failed === null && rnd.chance(LOCK_BRANCH_PROBABILITY))
      failed = await this.lockBranch(txn, xid, rnd);
    if (failed === null && rnd.chance(XA_BRANCH_PROBABILITY)) failed = await this.xaBranch(tx, rnd);
    if (failed === null && rnd.chance(AT_BRANCH_PROBABILITY)) failed = await this.atBranch(tx, rnd);
    if (failed === null && plan.failAfterTries) failed = 'planned failure after the tries';

    // phase two: commit or roll back, then learn the outcome
    const side = failed === null ? await this.commit(txn, tx) : await this.rollback(txn, tx);
    const decided = side ?? (await this.pollUntilEnd(txn, tx));
    if (decided === 'commit') return { type: 'ok', xid, value: 'committed' };
    if (decided === 'rollback') return { type: 'fail', xid, value: 'rolledback' };
    return { type: 'info', xid, value: 'unknown' };
  }

  /** An XA branch moving money between two accounts; returns why to roll back, or null. */
  private xaBranch(tx: GlobalTransaction, rnd: Prng): Promise<string | null> {
    return this.sqlBranch(tx, rnd, 'xa', this.o.tables.account, (work) => this.xa.run(work));
  }

  /** An AT branch moving money between two accounts of the AT ledger; as xaBranch. */
  private atBranch(tx: GlobalTransaction, rnd: Prng): Promise<string | null> {
    return this.sqlBranch(tx, rnd, 'at', this.o.tables.atAccount, (work) =>
      this.at.transaction(work),
    );
  }

  /**
   * One XA or AT branch: a random amount between two accounts of `table`, lower id first (two
   * branches moving money both ways cannot deadlock); returns why to roll back, or null.
   */
  private async sqlBranch(
    tx: GlobalTransaction,
    rnd: Prng,
    kind: 'xa' | 'at',
    table: string,
    branch: (work: (q: SqlQuery) => Promise<void>) => Promise<unknown>,
  ): Promise<string | null> {
    const from = rnd.int(0, BANK_ACCOUNTS - 1);
    const to = (from + rnd.int(1, BANK_ACCOUNTS - 1)) % BANK_ACCOUNTS;
    const amount = rnd.int(AMOUNT_MIN, AMOUNT_MAX);
    const moves = [
      [from, -amount],
      [to, amount],
    ].sort((x, y) => x[0]! - y[0]!);
    try {
      await tx.run(() =>
        branch(async (q) => {
          for (const [id, delta] of moves)
            await q.query(`UPDATE ${table} SET balance = balance + $2 WHERE id = $1`, [id, delta]);
        }),
      );
      this.counters[kind === 'xa' ? 'xaBranches' : 'atBranches']++;
      return null;
    } catch (err) {
      this.log.warn({ err }, `${kind.toUpperCase()} branch failed; the transaction rolls back`);
      return `${kind} branch failed: ${errText(err)}`;
    }
  }

  /**
   * Registers a branch locking one or two rows; returns why the transaction must roll back, or
   * null.
   */
  private async lockBranch(txn: string, xid: Xid, rnd: Prng): Promise<string | null> {
    const rows = rnd.chance(0.5)
      ? [rnd.int(0, LOCK_ROWS - 1)]
      : [rnd.int(0, LOCK_ROWS - 1), rnd.int(0, LOCK_ROWS - 1)];
    const lockKey = lockKeyOf(rows);
    const t0 = Date.now();
    this.h.write({
      type: 'invoke',
      op: 'lock',
      txn,
      xid,
      resource: LOCK_RESOURCE,
      value: lockKey,
      t: t0,
    });
    try {
      const branchId = await this.o.tc.branchRegister({
        xid,
        branchType: 'TCC',
        resourceId: LOCK_RESOURCE,
        lockKey,
        applicationData: '',
        clientId: this.o.lockClientId,
        applicationId: this.o.applicationId,
      });
      this.h.write({
        type: 'ok',
        op: 'lock',
        txn,
        xid,
        branchId,
        resource: LOCK_RESOURCE,
        value: lockKey,
        t0,
      });
      return null;
    } catch (err) {
      const conflict = err instanceof LockConflictError;
      this.h.write({
        type: conflict ? 'fail' : 'info',
        op: 'lock',
        txn,
        xid,
        resource: LOCK_RESOURCE,
        value: lockKey,
        error: errText(err),
        t0,
      });
      return conflict ? 'lock conflict' : `lock branch failed: ${errText(err)}`;
    }
  }

  /**
   * Commits; returns the side the TC answered, or null when unknown. Polls until an end state
   * either way.
   */
  private async commit(txn: string, tx: GlobalTransaction): Promise<'commit' | 'rollback' | null> {
    const t0 = Date.now();
    this.h.write({ type: 'invoke', op: 'commit', txn, xid: tx.xid, t: t0 });
    let status: string;
    try {
      status = await tx.commit();
    } catch (err) {
      if (err instanceof TransactionRolledBackError || err instanceof TransactionFailedError)
        status = err.status;
      else {
        this.h.write({ type: 'info', op: 'commit', txn, xid: tx.xid, error: errText(err), t0 });
        return this.pollUntilEnd(txn, tx);
      }
    }
    this.h.write({ type: 'ok', op: 'commit', txn, xid: tx.xid, value: status, t0 });
    if (statusRank(status) !== 2) await this.pollUntilEnd(txn, tx);
    return sideOf(status);
  }

  private async rollback(
    txn: string,
    tx: GlobalTransaction,
  ): Promise<'commit' | 'rollback' | null> {
    const t0 = Date.now();
    this.h.write({ type: 'invoke', op: 'rollback', txn, xid: tx.xid, t: t0 });
    let status: string;
    try {
      status = await tx.rollback();
    } catch (err) {
      if (err instanceof TransactionAlreadyCommittedError || err instanceof TransactionFailedError)
        status = err.status;
      else {
        this.h.write({ type: 'info', op: 'rollback', txn, xid: tx.xid, error: errText(err), t0 });
        return this.pollUntilEnd(txn, tx);
      }
    }
    this.h.write({ type: 'ok', op: 'rollback', txn, xid: tx.xid, value: status, t0 });
    if (statusRank(status) !== 2) await this.pollUntilEnd(txn, tx);
    return sideOf(status);
  }

  /** One GetStatus, recorded; the status, or null when the call failed or the xid is gone. */
  private async pollOnce(txn: string, tx: GlobalTransaction): Promise<string | null> {
    const t0 = Date.now();
    try {
      const status = await tx.status();
      this.h.write({ type: 'ok', op: 'status', txn, xid: tx.xid, value: status, t0 });
      return status;
    } catch (err) {
      if (!(err instanceof UnknownXidError))
        this.log.debug({ xid: tx.xid, err: errText(err) }, 'status poll failed');
      return null;
    }
  }

  /** Polls until an end state (bounded); returns its side, or null. */
  private async pollUntilEnd(
    txn: string,
    tx: GlobalTransaction,
  ): Promise<'commit' | 'rollback' | null> {
    const deadline = Date.now() + STATUS_POLL_MAX_MS;
    let side: 'commit' | 'rollback' | null = null;
    while (Date.now() < deadline) {
      const status = await this.pollOnce(txn, tx);
      if (status !== null) {
        side = sideOf(status) ?? side;
        if (statusRank(status) === 2) return side;
      }
      await sleep(STATUS_POLL_EVERY_MS);
    }
    return side;
  }

  async close(): Promise<void> {
    this.xa?.close();
    // The undo rows of committed AT branches are deleted in batches: do it before leaving.
    await this.at?.flushCommits();
    await this.client.close();
  }
}

function sideOf(status: string): 'commit' | 'rollback' | null {
  const f = statusFamily(status);
  return f === 'commit' || f === 'rollback' ? f : null;
}
