/**
 * The AT data source: what a service calls instead of its pool. Inside
 * `concord.transaction()` each local transaction (`ds.transaction(fn)`, or one `ds.query`)
 * is one AT branch; outside one, the same calls are plain SQL. `withGlobalLock(fn)` is for
 * local-only code that writes AT tables: its writes and `selectForUpdate` reads wait for the
 * rows' global locks (Seata's @GlobalLock).
 */
import { BadRequestError } from '../../shared/errors.ts';
import { isEndStatus } from '../../shared/tc-vocabulary.ts';
import type { Xid } from '../context.ts';
import { validateResourceId } from '../sdk/rm.ts';
import { internalsOf as rmAccessOf } from '../sdk/internals.ts';
import type { ConcordClient } from '../sdk/client.ts';
import { UnknownXidError } from '../tc/errors.ts';
import { AtCore, type AtHooks, type LocalTx } from './core.ts';
import {
  DEFAULT_CLEANUP_LIMIT,
  DEFAULT_LOCK_RETRY,
  DEFAULT_UNDO_RETENTION_MS,
  type LockRetryPolicy,
} from './limits.ts';
import type { Logger } from '../logger.ts';
import type { ActionDeps as RmAccess } from '../sdk/actions.ts';
import type { AtDialect } from './dialect.ts';
import { AtPhaseTwo, LOG_STATUS_DIRTY, type Connect } from './phase-two.ts';

export interface AtDataSourceOptions {
  /**
   * The resource id of this database's branches; every replica of the service uses the same
   * one, and the TC routes the branches' phase two to an RM serving it.
   */
  resourceId: string;
  /** The undo log table. Default 'undo_log'. */
  undoTable?: string;
  /** Waiting for rows another global transaction holds. Default 10 ms × 30. */
  lockRetry?: Partial<LockRetryPolicy>;
  /** Test hooks (never needed in production). */
  hooks?: AtHooks;
}

export interface CleanUpOptions {
  /** Undo rows younger than this are kept, ms. Default 7 days. */
  olderThanMs?: number;
  /** At most this many rows per call. Default 500. */
  limit?: number;
}

/** One local transaction's handle. */
export interface AtTx<R> {
  query(sql: string, params?: readonly unknown[]): Promise<R>;
  /**
   * The SELECT (written without a locking clause) run FOR UPDATE; in a global transaction or
   * under withGlobalLock it also waits until no other global transaction holds the rows.
   */
  selectForUpdate(sql: string, params?: readonly unknown[]): Promise<R>;
}

export interface AtDataSource<R> {
  readonly resourceId: string;
  /** One statement; inside a global transaction, one AT branch of its own. */
  query(sql: string, params?: readonly unknown[]): Promise<R>;
  /** A local transaction; inside a global transaction, one AT branch. */
  transaction<T>(fn: (tx: AtTx<R>) => Promise<T>): Promise<T>;
  /** A local transaction that respects global locks without joining a global transaction. */
  withGlobalLock<T>(fn: (tx: AtTx<R>) => Promise<T>): Promise<T>;
  /** Creates the undo log table if it does not exist. */
  ensureSchema(): Promise<void>;
  /** Deletes now the undo rows of the branches committed so far (otherwise batched). */
  flushCommits(): Promise<void>;
  /**
   * Deletes undo rows older than the retention whose transaction has ended (or is forgotten
   * by the TC); never one whose branch may still be rolled back, never a dirty one.
   */
  cleanUp(options?: CleanUpOptions): Promise<number>;
}

export interface AtDriver {
  dialect: AtDialect;
  connect: Connect;
  /** The condition "log_created is older than $n milliseconds". */
  olderThan(paramIndex: number): string;
}

function lockRetryOf(given: Partial<LockRetryPolicy> | undefined): LockRetryPolicy {
  const p = { ...DEFAULT_LOCK_RETRY, ...given };
  if (!Number.isSafeInteger(p.intervalMs) || p.intervalMs < 0 || p.intervalMs > 60_000)
    throw new BadRequestError('lockRetry.intervalMs must be an integer in 0..60000');
  if (!Number.isSafeInteger(p.times) || p.times < 1 || p.times > 100_000)
    throw new BadRequestError('lockRetry.times must be an integer in 1..100000');
  return p;
}

const UNDO_TABLE = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

export function createAtDataSource<R>(
  concord: ConcordClient,
  driver: AtDriver,
  options: AtDataSourceOptions,
): AtDataSource<R> {
  if (typeof options !== 'object' || options === null)
    throw new BadRequestError('the AT data source needs options ({ resourceId })');
  const deps = rmAccessOf(concord);
  const resourceId = validateResourceId(options.resourceId);
  const undoName = options.undoTable ?? 'undo_log';
  if (!UNDO_TABLE.test(undoName)) throw new BadRequestError('undoTable must be a plain identifier');
  const d = driver.dialect;
  const core = new AtCore(d, deps, {
    resourceId,
    undoTable: d.q(undoName),
    lockRetry: lockRetryOf(options.lockRetry),
    hooks: options.hooks ?? {},
  });
  const log = deps.logger.child({ component: 'at', resourceId });
  const phaseTwo = new AtPhaseTwo(core, driver.connect, log);
  deps.rm.register({
    resourceId,
    branchType: 'AT',
    phaseTwo: async (request) => {
      if (request.kind === 'commit') phaseTwo.commit(request.xid, request.branchId);
      else await phaseTwo.rollback(request.xid, request.branchId);
    },
  });

  async function local<T>(fn: (tx: AtTx<R>) => Promise<T>, lock: boolean): Promise<T> {
    deps.assertUsable();
    if (typeof fn !== 'function') throw new BadRequestError('expected a function (tx) => …');
    const { mode, xid } = core.modeNow(lock);
    const run = async () => {
      const lease = await driver.connect();
      const tx: LocalTx = { conn: lease.conn, mode, xid, items: [], rows: [] };
      let done = false;
      try {
        await lease.conn.exec('BEGIN');
        const value = await fn({
          query: (sql, params = []) => core.statement(tx, sql, params) as Promise<R>,
          selectForUpdate: (sql, params = []) =>
            core.selectForUpdate(tx, sql, params) as Promise<R>,
        });
        if (mode === 'global') await core.commitBranch(tx);
        else await lease.conn.exec('COMMIT');
        done = true;
        return value;
      } finally {
        if (!done) await lease.conn.exec('ROLLBACK').catch(() => {});
        lease.release(!done);
      }
    };
    return mode === 'global' ? deps.tracker.run(run) : run();
  }

  return {
    resourceId,
    query: (sql, params = []) => local((tx) => tx.query(sql, params), false),
    transaction: (fn) => local(fn, false),
    withGlobalLock: (fn) => local(fn, true),
    ensureSchema: () => ensureSchema(driver, undoName),
    flushCommits: () => phaseTwo.flush(),
    cleanUp: (opts) => cleanUpUndo({ core, driver, deps, log }, opts),
  };
}

interface CleanUpEnv {
  core: AtCore;
  driver: AtDriver;
  deps: RmAccess;
  log: Logger;
}

async function cleanUpUndo(env: CleanUpEnv, opts: CleanUpOptions = {}): Promise<number> {
  const { core, driver } = env;
  const d = driver.dialect;
  const olderThanMs = opts.olderThanMs ?? DEFAULT_UNDO_RETENTION_MS;
  const limit = opts.limit ?? DEFAULT_CLEANUP_LIMIT;
  if (!Number.isSafeInteger(olderThanMs) || olderThanMs < 0)
    throw new BadRequestError('olderThanMs must be a non-negative integer');
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > 10_000)
    throw new BadRequestError('limit must be an integer in 1..10000');
  const lease = await driver.connect();
  try {
    const old = await lease.conn.image(
      `SELECT xid, branch_id FROM ${core.options.undoTable} WHERE log_status <> ` +
        `${LOG_STATUS_DIRTY} AND ${driver.olderThan(1)} ORDER BY log_created LIMIT ${limit}`,
      [olderThanMs],
    );
    const ended = new Map<string, boolean>();
    let deleted = 0;
    for (const [xidValue, branchValue] of old.rows) {
      const xid = String(xidValue);
      const branchId = String(branchValue);
      if (!ended.has(xid)) ended.set(xid, await transactionEnded(env, xid));
      if (!ended.get(xid)) continue;
      const r = await lease.conn.exec(
        `DELETE FROM ${core.options.undoTable} WHERE xid = ${d.ph(1)} AND branch_id = ${d.ph(2)}` +
          ` AND log_status <> ${LOG_STATUS_DIRTY}`,
        [xid, branchId],
      );
      deleted += r.affected;
    }
    return deleted;
  } finally {
    lease.release();
  }
}

async function transactionEnded(env: CleanUpEnv, xid: string): Promise<boolean> {
  const { deps, log } = env;
  try {
    return isEndStatus(await deps.tc.getStatus(xid as Xid));
  } catch (err) {
    if (err instanceof UnknownXidError) return true; // finished and forgotten by the TC
    log.warn({ err, xid }, 'AT cleanup: status unknown; keeping the undo rows');
    return false;
  }
}

async function ensureSchema(driver: AtDriver, undoName: string): Promise<void> {
  const lease = await driver.connect();
  try {
    for (const sql of driver.dialect.schemaSql(undoName)) await lease.conn.exec(sql);
  } finally {
    lease.release();
  }
}
