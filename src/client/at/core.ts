/**
 * AT phase one: a local transaction whose statements are imaged (before image by
 * `SELECT … FOR UPDATE`, the statement, after image by primary key), registered as one AT
 * branch with its row lock keys just before the local commit, and committed together with
 * its undo row. Outside a global transaction the same calls are plain SQL; under
 * `withGlobalLock` they only wait for rows that a global transaction holds.
 */
import { currentContext, type Xid } from '../context.ts';
import { LockConflictError } from '../tc/errors.ts';
import { BranchRefusedError } from '../sdk/errors.ts';
import type { ActionDeps as RmAccess } from '../sdk/actions.ts';
import { BranchStatus, GlobalStatus } from '../../shared/tc-vocabulary.ts';
import type { AtConnection, AtDialect, TableMeta } from './dialect.ts';
import {
  AtImageMismatchError,
  AtLockConflictError,
  AtLockHolderRollingBackError,
  AtLockQueryUnavailableError,
  AtStatementRefusedError,
} from './errors.ts';
import { MAX_IMAGE_ROWS, type LockRetryPolicy } from './limits.ts';
import {
  planSelectForUpdate,
  planStatement,
  type ImagedPlan,
  type Plan,
  type TableRef,
} from './sql.ts';
import {
  encodeUndo,
  lockKeyOf,
  pkIndexes,
  pkOf,
  type Image,
  type ImageValue,
  type UndoItem,
} from './undo.ts';

/** The statuses in which a lock holder will not commit: waiting for it only deadlocks. */
const ROLLING_BACK = new Set<string>([
  GlobalStatus.Rollbacking,
  GlobalStatus.RollbackRetrying,
  GlobalStatus.TimeoutRollbacking,
  GlobalStatus.TimeoutRollbackRetrying,
]);

export type TxMode = 'plain' | 'global' | 'lock';

/** One local transaction's AT state. */
export interface LocalTx {
  readonly conn: AtConnection;
  readonly mode: TxMode;
  readonly xid: Xid | null;
  readonly items: UndoItem[];
  readonly rows: { table: string; pks: ImageValue[][] }[];
}

export interface AtCoreOptions {
  resourceId: string;
  undoTable: string;
  lockRetry: LockRetryPolicy;
  hooks: AtHooks;
}

/** For a service's own tests: the gap between BranchRegister and the local commit. */
export interface AtHooks {
  /** After the branch is registered (rows locked on the TC), before its undo row and commit. */
  beforeLocalCommit?: (branch: { xid: string; branchId: string }) => void | Promise<void>;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class AtCore {
  private readonly meta = new Map<string, Promise<TableMeta>>();

  constructor(
    readonly dialect: AtDialect,
    readonly deps: RmAccess,
    readonly options: AtCoreOptions,
  ) {}

  /** The mode a new local transaction runs in, from the bound global transaction. */
  modeNow(lock: boolean): { mode: TxMode; xid: Xid | null } {
    const ctx = currentContext();
    if (ctx !== undefined) {
      if (ctx.signal?.aborted) throw ctx.signal.reason;
      return { mode: 'global', xid: ctx.xid };
    }
    return { mode: lock ? 'lock' : 'plain', xid: null };
  }

  async tableMeta(conn: AtConnection, ref: TableRef, sql: string): Promise<TableMeta> {
    const key = `${ref.schema ?? ''}\u0000${ref.table}`;
    let p = this.meta.get(key);
    if (p === undefined) {
      p = this.dialect.tableMeta(conn, ref);
      this.meta.set(key, p);
      p.catch(() => this.meta.delete(key));
    }
    const meta = await p;
    if (meta.pk.length === 0)
      throw new AtStatementRefusedError('no-primary-key', sql, `${meta.table} has no primary key`);
    if (meta.triggers > 0)
      throw new AtStatementRefusedError(
        'unsupported',
        sql,
        `${meta.table} has triggers, whose side effects an undo log cannot capture`,
      );
    return meta;
  }

  /** The full table name of the lock key and of the SDK's own SQL. */
  qualified(meta: TableMeta): string {
    return `${this.dialect.q(meta.schema)}.${this.dialect.q(meta.table)}`;
  }

  /** Rows of `meta` by primary key, as an image (canonical text), locked FOR UPDATE. */
  async imageByPk(conn: AtConnection, meta: TableMeta, pks: readonly ImageValue[][]) {
    if (pks.length === 0) return { cols: meta.columns, rows: [] } as Image;
    const d = this.dialect;
    const params: unknown[] = [];
    const tuple = (pk: readonly ImageValue[]) =>
      `(${pk.map((v) => (params.push(d.param(v)), d.ph(params.length))).join(', ')})`;
    const cols = `(${meta.pk.map((c) => d.q(c)).join(', ')})`;
    const sql =
      `SELECT * FROM ${this.qualified(meta)} WHERE ${cols} IN (${pks.map(tuple).join(', ')})` +
      ` ORDER BY ${meta.pk.map((c) => d.q(c)).join(', ')} FOR UPDATE`;
    return conn.image(sql, params);
  }

  /** Runs one statement of a local transaction, imaging it when the mode asks for it. */
  async statement(tx: LocalTx, sql: string, params: readonly unknown[]): Promise<unknown> {
    if (tx.mode === 'plain') return tx.conn.run(sql, params);
    const plan = planStatement(sql, params, this.dialect.kind);
    if (plan.kind === 'passthrough') return tx.conn.run(sql, params);
    const meta = await this.tableMeta(tx.conn, plan.table, sql);
    const table = `${meta.schema}.${meta.table}`;
    if (plan.kind === 'select-for-update') return this.lockedSelect(tx, plan, meta, sql, params);
    if (tx.mode === 'lock') return this.lockedWrite(tx, plan, meta, sql, params);
    if (plan.kind === 'insert') {
      const { result, pks } = await this.dialect.insert(tx.conn, sql, params, plan, meta);
      const after = await this.imageByPk(tx.conn, meta, pks);
      if (after.rows.length !== pks.length)
        throw new AtImageMismatchError(
          `INSERT into ${table}: ${pks.length} keys, ${after.rows.length} rows found by them`,
        );
      this.record(tx, meta, 'insert', { cols: after.cols, rows: [] }, after);
      return result;
    }
    const before = await tx.conn.image(`${plan.selectSql} FOR UPDATE`, plan.selectParams);
    if (before.rows.length > MAX_IMAGE_ROWS)
      throw new AtStatementRefusedError(
        'too-many-rows',
        sql,
        `${before.rows.length} rows, more than ${MAX_IMAGE_ROWS} in one statement`,
      );
    const result = await tx.conn.run(sql, params);
    const idx = pkIndexes(before.cols, meta.pk);
    const after =
      plan.kind === 'update'
        ? await this.imageByPk(
            tx.conn,
            meta,
            before.rows.map((r) => pkOf(r, idx)),
          )
        : { cols: before.cols, rows: [] };
    this.record(tx, meta, plan.kind, before, after);
    return result;
  }

  /**
   * A SELECT … FOR UPDATE (as written, or `tx.selectForUpdate`): in a global transaction or
   * under withGlobalLock it also waits for the rows' global locks (read committed).
   */
  async lockedSelect(
    tx: LocalTx,
    plan: ImagedPlan,
    meta: TableMeta,
    sql: string,
    params: readonly unknown[],
  ): Promise<unknown> {
    await this.lockRowsGlobally(tx, plan, meta);
    return tx.conn.run(sql, params);
  }

  /** `tx.selectForUpdate(sql)`: the caller's SELECT, locked, with the global-lock check. */
  async selectForUpdate(tx: LocalTx, sql: string, params: readonly unknown[]): Promise<unknown> {
    const locking = this.dialect.lockingSelect(sql);
    if (tx.mode === 'plain') return tx.conn.run(locking, params);
    const plan = planSelectForUpdate(sql, params, this.dialect.kind);
    const meta = await this.tableMeta(tx.conn, plan.table, sql);
    return this.lockedSelect(tx, plan, meta, locking, params);
  }

  private record(tx: LocalTx, meta: TableMeta, op: UndoItem['op'], b: Image, a: Image): void {
    const idx = pkIndexes(b.cols, meta.pk);
    const rows = op === 'insert' ? a.rows : b.rows;
    if (rows.length === 0) return;
    tx.items.push({
      op,
      schema: meta.schema,
      table: meta.table,
      pk: meta.pk,
      cols: b.cols,
      before: b.rows,
      after: a.rows,
    });
    tx.rows.push({ table: `${meta.schema}.${meta.table}`, pks: rows.map((r) => pkOf(r, idx)) });
  }

  /** withGlobalLock: an UPDATE/DELETE waits until no global transaction holds its rows. */
  private async lockedWrite(
    tx: LocalTx,
    plan: Exclude<Plan, { kind: 'passthrough' | 'select-for-update' }>,
    meta: TableMeta,
    sql: string,
    params: readonly unknown[],
  ): Promise<unknown> {
    if (plan.kind !== 'insert') await this.lockRowsGlobally(tx, plan, meta);
    return tx.conn.run(sql, params);
  }

  /**
   * Locks the plan's rows locally (FOR UPDATE) and waits until no other global transaction
   * holds them. Between attempts it rolls back to a savepoint, so on PostgreSQL the local
   * row locks are released while it waits and a holder that is rolling back can restore
   * them (InnoDB keeps them until the end of the local transaction: there the wait is
   * bounded by the retry policy).
   */
  private async lockRowsGlobally(tx: LocalTx, plan: ImagedPlan, meta: TableMeta) {
    const { intervalMs, times } = this.options.lockRetry;
    const table = `${meta.schema}.${meta.table}`;
    for (let attempt = 1; ; attempt += 1) {
      await tx.conn.exec('SAVEPOINT concord_global_lock');
      const rows = await tx.conn.image(`${plan.selectSql} FOR UPDATE`, plan.selectParams);
      const idx = pkIndexes(rows.cols, meta.pk);
      const keys = [{ table, pks: rows.rows.map((r) => pkOf(r, idx)) }];
      if (await this.lockable(tx, keys)) {
        await tx.conn.exec('RELEASE SAVEPOINT concord_global_lock');
        return;
      }
      await tx.conn.exec('ROLLBACK TO SAVEPOINT concord_global_lock');
      if (attempt >= times) throw new AtLockConflictError('', lockKeyOf(keys), attempt, {});
      await sleep(intervalMs);
    }
  }

  private async lockable(tx: LocalTx, rows: { table: string; pks: ImageValue[][] }[]) {
    const lockKey = lockKeyOf(rows);
    if (lockKey === '') return true;
    const tc = this.deps.tc as { lockQuery?: (a: object) => Promise<boolean> };
    if (typeof tc.lockQuery !== 'function')
      throw new AtLockQueryUnavailableError('the TC port has no lockQuery');
    return tc.lockQuery({
      ...(tx.xid !== null ? { xid: tx.xid } : {}),
      resourceId: this.options.resourceId,
      lockKey,
    });
  }

  /**
   * The end of a local transaction in a global one: registers the branch with its lock keys
   * (retrying on conflict), writes the undo row, commits. Resolves with the branch id, or
   * null when nothing was written (no branch).
   */
  async commitBranch(tx: LocalTx): Promise<string | null> {
    const xid = tx.xid as Xid;
    if (tx.items.length === 0) {
      await tx.conn.exec('COMMIT');
      return null;
    }
    const lockKey = lockKeyOf(tx.rows);
    await this.deps.rm.ensureReady();
    const branchId = await this.register(xid, lockKey);
    try {
      await this.options.hooks.beforeLocalCommit?.({ xid, branchId });
      await this.insertUndo(tx, xid, branchId);
    } catch (err) {
      await this.reportFailed(xid, branchId);
      throw err;
    }
    await tx.conn.exec('COMMIT');
    return branchId;
  }

  private async insertUndo(tx: LocalTx, xid: Xid, branchId: string): Promise<void> {
    const { context, info } = encodeUndo({ v: 1, items: tx.items });
    const d = this.dialect;
    const sql =
      `INSERT INTO ${this.options.undoTable} (branch_id, xid, context, rollback_info, ` +
      `log_status, log_created, log_modified) VALUES (${d.ph(1)}, ${d.ph(2)}, ${d.ph(3)}, ` +
      `${d.ph(4)}, 0, CURRENT_TIMESTAMP(6), CURRENT_TIMESTAMP(6))`;
    try {
      await tx.conn.exec(sql, [branchId, xid, context, info]);
    } catch (err) {
      if (d.isUniqueViolation(err))
        throw new BranchRefusedError(xid, branchId, this.options.resourceId);
      throw err;
    }
  }

  private async reportFailed(xid: Xid, branchId: string): Promise<void> {
    try {
      await this.deps.tc.branchReport({ xid, branchId, status: BranchStatus.PhaseOne_Failed });
    } catch (err) {
      this.deps.logger.warn({ err, xid, branchId }, 'AT: PhaseOne_Failed report failed');
    }
  }

  private async register(xid: Xid, lockKey: string): Promise<string> {
    const { intervalMs, times } = this.options.lockRetry;
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.deps.tc.branchRegister({
          xid,
          branchType: 'AT',
          resourceId: this.options.resourceId,
          lockKey,
          clientId: this.deps.clientId,
          applicationId: this.deps.applicationId,
        });
      } catch (err) {
        if (!(err instanceof LockConflictError)) throw err;
        await this.failFastIfRollingBack(err);
        if (attempt >= times)
          throw new AtLockConflictError(err.holdingXid, lockKey, attempt, { cause: err });
        await sleep(intervalMs);
      }
    }
  }

  private async failFastIfRollingBack(err: LockConflictError): Promise<void> {
    if (err.holdingXid === '') return;
    let status: string;
    try {
      status = await this.deps.tc.getStatus(err.holdingXid as Xid);
    } catch {
      return; // unknown: keep waiting by the policy
    }
    if (ROLLING_BACK.has(status))
      throw new AtLockHolderRollingBackError(err.holdingXid, status, { cause: err });
  }
}
