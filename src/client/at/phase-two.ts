/**
 * AT phase two, in the service's own database.
 *
 * Commit: the TC has already freed the rows; the undo row is only deleted, later, in
 * batches (a lost batch is harmless: retention cleanup removes the row).
 *
 * Rollback, in one local transaction: the undo row is locked; each statement is undone
 * newest first after comparing the current rows with its after image:
 *   current = after  → restore the before image (update back, delete the insert, re-insert
 *                      the delete);
 *   current = before → nothing to undo for that row;
 *   otherwise        → a dirty write. The local transaction rolls back (nothing is
 *                      overwritten), the undo row is marked dirty (log_status 2) with the
 *                      diff, and the branch answers PhaseTwo_RollbackFailed_Unretryable. A
 *                      later delivery of the same rollback answers the same: never re-checked,
 *                      so a row that drifted back to its after image cannot make it pass.
 * No undo row yet: the rollback came before the branch's local commit. A defense row
 * (log_status 1) is written, so the late commit fails on the (xid, branch_id) key.
 */
import type { Logger } from '../logger.ts';
import type { AtConnection } from './dialect.ts';
import type { AtCore } from './core.ts';
import { AtDirtyRollbackError, type AtDirtyRow } from './errors.ts';
import {
  decodeUndo,
  pkId,
  pkIndexes,
  pkOf,
  rowObject,
  sameRow,
  type ImageValue,
  type UndoItem,
} from './undo.ts';

export const LOG_STATUS_NORMAL = 0;
export const LOG_STATUS_DEFENSE = 1;
export const LOG_STATUS_DIRTY = 2;

/** Undo rows deleted per statement after commits. */
export const COMMIT_DELETE_BATCH = 100;
/** How long committed branches wait to be deleted together, ms. */
export const COMMIT_DELETE_DELAY_MS = 100;

export interface Lease {
  conn: AtConnection;
  release(destroy?: boolean): void;
}

export type Connect = () => Promise<Lease>;

export async function inLocalTx<T>(connect: Connect, fn: (c: AtConnection) => Promise<T>) {
  const lease = await connect();
  let ok = false;
  try {
    await lease.conn.exec('BEGIN');
    const value = await fn(lease.conn);
    await lease.conn.exec('COMMIT');
    ok = true;
    return value;
  } finally {
    if (!ok) await lease.conn.exec('ROLLBACK').catch(() => {});
    lease.release(!ok);
  }
}

type Verdict = { kind: 'ok' } | { kind: 'dirty'; rows: AtDirtyRow[] };

export class AtPhaseTwo {
  private pending: { xid: string; branchId: string }[] = [];
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly core: AtCore,
    private readonly connect: Connect,
    private readonly log: Logger,
  ) {}

  private get table(): string {
    return this.core.options.undoTable;
  }

  /** Commit: queue the undo row's deletion. */
  commit(xid: string, branchId: string): void {
    this.pending.push({ xid, branchId });
    if (this.pending.length >= COMMIT_DELETE_BATCH) void this.flush();
    else if (this.timer === null) {
      this.timer = setTimeout(() => void this.flush(), COMMIT_DELETE_DELAY_MS);
      this.timer.unref();
    }
  }

  /** Deletes the undo rows of the committed branches queued so far. */
  flush(): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const batch = this.pending.splice(0, this.pending.length);
    this.flushing = this.flushing.then(() => this.deleteBatches(batch));
    return this.flushing;
  }

  private async deleteBatches(all: { xid: string; branchId: string }[]): Promise<void> {
    const d = this.core.dialect;
    for (let i = 0; i < all.length; i += COMMIT_DELETE_BATCH) {
      const batch = all.slice(i, i + COMMIT_DELETE_BATCH);
      const params: unknown[] = [];
      const tuples = batch.map((b) => {
        params.push(b.xid, b.branchId);
        return `(${d.ph(params.length - 1)}, ${d.ph(params.length)})`;
      });
      const sql =
        `DELETE FROM ${this.table} WHERE log_status = ${LOG_STATUS_NORMAL} AND ` +
        `(xid, branch_id) IN (${tuples.join(', ')})`;
      try {
        const lease = await this.connect();
        try {
          await lease.conn.exec(sql, params);
        } finally {
          lease.release();
        }
      } catch (err) {
        this.log.warn(
          { err, rows: batch.length },
          'AT: undo rows of committed branches not deleted; retention cleanup will',
        );
      }
    }
  }

  async rollback(xid: string, branchId: string): Promise<void> {
    const dirty = await inLocalTx(this.connect, (c) => this.undoLocked(c, xid, branchId));
    if (dirty === null) return;
    await inLocalTx(this.connect, (c) =>
      c.exec(
        `UPDATE ${this.table} SET log_status = ${LOG_STATUS_DIRTY}, rollback_info = ` +
          `${this.core.dialect.ph(1)}, context = 'dirty;json', log_modified = CURRENT_TIMESTAMP(6) ` +
          `WHERE xid = ${this.core.dialect.ph(2)} AND branch_id = ${this.core.dialect.ph(3)}`,
        [Buffer.from(JSON.stringify(dirty.rows)), xid, branchId],
      ),
    );
    this.log.error({ xid, branchId, rows: dirty.rows }, 'AT rollback found a dirty write');
    throw dirty;
  }

  /** In the rollback's local transaction; answers the dirty error to raise after it. */
  private async undoLocked(c: AtConnection, xid: string, branchId: string) {
    const d = this.core.dialect;
    const where = `xid = ${d.ph(1)} AND branch_id = ${d.ph(2)}`;
    const found = await c.exec(
      `SELECT context, rollback_info, log_status FROM ${this.table} WHERE ${where} FOR UPDATE`,
      [xid, branchId],
    );
    const row = found.rows[0];
    if (row === undefined) {
      await this.defend(c, xid, branchId);
      return null;
    }
    const status = Number(row.log_status);
    if (status === LOG_STATUS_DEFENSE) return null;
    if (status === LOG_STATUS_DIRTY) {
      const rows = JSON.parse(Buffer.from(row.rollback_info as Buffer).toString()) as AtDirtyRow[];
      return new AtDirtyRollbackError(xid, branchId, rows);
    }
    const log = decodeUndo(String(row.context), Buffer.from(row.rollback_info as Buffer));
    for (const item of [...log.items].reverse()) {
      const verdict = await this.undoItem(c, item);
      if (verdict.kind === 'dirty') {
        await c.exec('ROLLBACK');
        await c.exec('BEGIN');
        return new AtDirtyRollbackError(xid, branchId, verdict.rows);
      }
    }
    await c.exec(`DELETE FROM ${this.table} WHERE ${where}`, [xid, branchId]);
    return null;
  }

  /** The rollback came first: a defense row makes the branch's late local commit fail. */
  private async defend(c: AtConnection, xid: string, branchId: string): Promise<void> {
    const d = this.core.dialect;
    try {
      await c.exec(
        `INSERT INTO ${this.table} (branch_id, xid, context, rollback_info, log_status, ` +
          `log_created, log_modified) VALUES (${d.ph(1)}, ${d.ph(2)}, 'defense', ${d.ph(3)}, ` +
          `${LOG_STATUS_DEFENSE}, CURRENT_TIMESTAMP(6), CURRENT_TIMESTAMP(6))`,
        [branchId, xid, Buffer.alloc(0)],
      );
      this.log.info(
        { xid, branchId },
        'AT rollback before the branch committed: defense row written',
      );
    } catch (err) {
      // The branch's own undo row won the race (it committed meanwhile): retry the rollback.
      if (d.isUniqueViolation(err))
        throw new Error('undo row appeared during rollback; retrying', { cause: err });
      throw err;
    }
  }

  private async undoItem(c: AtConnection, item: UndoItem): Promise<Verdict> {
    const meta = { schema: item.schema, table: item.table, pk: item.pk };
    const idx = pkIndexes(item.cols, item.pk);
    const rows = item.op === 'insert' ? item.after : item.before;
    const pks = rows.map((r) => pkOf(r, idx));
    const current = await this.core.imageByPk(
      c,
      { ...meta, columns: item.cols, generated: [], autoIncrement: null, triggers: 0 },
      pks,
    );
    const now = new Map(
      current.rows.map((r) => [pkId(pkOf(r, pkIndexes(current.cols, item.pk))), r]),
    );
    const after = new Map(item.after.map((r) => [pkId(pkOf(r, idx)), r]));
    const before = new Map(item.before.map((r) => [pkId(pkOf(r, idx)), r]));
    const dirty: AtDirtyRow[] = [];
    const work: { pk: ImageValue[]; restore: 'update' | 'delete' | 'insert' }[] = [];
    for (const pk of pks) {
      const id = pkId(pk);
      const cur = now.get(id);
      const aft = after.get(id);
      const bef = before.get(id);
      const same = (x: ImageValue[] | undefined, y: ImageValue[] | undefined) =>
        x === undefined || y === undefined ? x === y : sameRow(x, y);
      if (same(cur, aft)) {
        work.push({
          pk,
          restore: item.op === 'insert' ? 'delete' : item.op === 'delete' ? 'insert' : 'update',
        });
      } else if (!same(cur, bef)) {
        dirty.push({
          table: `${item.schema}.${item.table}`,
          pk: pk.map((v) => (v === null || typeof v === 'string' ? v : v.b64)),
          expected: rowObject(item.cols, aft),
          current: rowObject(current.cols, cur),
        });
      }
    }
    if (dirty.length > 0) return { kind: 'dirty', rows: dirty };
    for (const w of work) await this.restore(c, item, w.pk, w.restore, before.get(pkId(w.pk)));
    return { kind: 'ok' };
  }

  private async restore(
    c: AtConnection,
    item: UndoItem,
    pk: ImageValue[],
    how: 'update' | 'delete' | 'insert',
    before: ImageValue[] | undefined,
  ): Promise<void> {
    const d = this.core.dialect;
    const table = `${d.q(item.schema)}.${d.q(item.table)}`;
    const params: unknown[] = [];
    const p = (v: ImageValue) => (params.push(d.param(v)), d.ph(params.length));
    const generated = await this.generatedOf(c, item);
    const writable = item.cols.map((col, i) => ({ col, i })).filter((x) => !generated.has(x.col));
    const keyWhere = () =>
      item.pk.map((k, j) => `${d.q(k)} = ${p(pk[j] as ImageValue)}`).join(' AND ');
    if (how === 'delete') {
      await c.exec(`DELETE FROM ${table} WHERE ${keyWhere()}`, params);
      return;
    }
    const row = before as ImageValue[];
    if (how === 'update') {
      const set = writable
        .map(({ col, i }) => `${d.q(col)} = ${p(row[i] as ImageValue)}`)
        .join(', ');
      await c.exec(`UPDATE ${table} SET ${set} WHERE ${keyWhere()}`, params);
      return;
    }
    const cols = writable.map(({ col }) => d.q(col)).join(', ');
    const vals = writable.map(({ i }) => p(row[i] as ImageValue)).join(', ');
    await c.exec(d.restoreInsert(table, cols, vals), params);
  }

  private async generatedOf(c: AtConnection, item: UndoItem): Promise<Set<string>> {
    const meta = await this.core.tableMeta(
      c,
      { schema: item.schema, table: item.table, alias: null },
      `undo of ${item.table}`,
    );
    return new Set(meta.generated);
  }
}
