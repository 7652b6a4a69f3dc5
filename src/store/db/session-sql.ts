/**
 * Every statement the db store runs against its session tables, in one place. Written once
 * for both dialects (`?` placeholders, portable SQL); reads map rows through rows.ts.
 */
import type { Xid } from '../../shared/ids.ts';
import { StorageCorruptError, assert } from '../../shared/errors.ts';
import type { BranchSession, FinishedRecord, GlobalSession } from '../../coordinator/types.ts';
import { DB_LOCK_ROWS_PER_STATEMENT, DB_READ_SESSIONS_PER_STATEMENT } from './limits.ts';
import {
  BRANCH_COLUMNS,
  GLOBAL_COLUMNS,
  GLOBAL_MUTABLE_COLUMNS,
  LOCK_COLUMNS,
  branchRowValues,
  finishedFromRow,
  globalMutableValues,
  globalRowValues,
  lockRowValues,
  sessionFromRows,
} from './rows.ts';
import {
  chunks,
  intOf,
  placeholders,
  textOf,
  type Row,
  type SqlConn,
  type DialectName,
  type SqlValue,
  type TableNames,
} from './sql.ts';

const GLOBAL_SELECT = GLOBAL_COLUMNS.map((c) => `g.${c}`).join(', ');
const BRANCH_SELECT = BRANCH_COLUMNS.join(', ');

export interface LockHolderRow {
  row: string;
  xid: string;
  branchId: string;
}

export class SessionSql {
  constructor(
    readonly t: TableNames,
    private readonly dialect: DialectName,
    /** The decider's hand-off time in every due_at this writes (dueAtOf). */
    private readonly handOffMs: number,
  ) {}

  // ---------------------------------------------------------------- reads

  /**
   * The session with its global row locked FOR UPDATE (the per-xid serialization point of
   * every submit, on every node), and how many lock rows lock_table holds for it.
   *
   * The branches and the count are read by a SECOND statement on purpose: in PostgreSQL's
   * READ COMMITTED a statement that waited for a row lock returns the new version of that
   * row, but the rest of the statement still sees the snapshot taken before the wait. Only
   * a statement started after the lock is granted sees what the previous holder committed.
   */
  async lockSession(
    conn: SqlConn,
    xid: string,
  ): Promise<
    | { session: GlobalSession; lockRows: number; nextBranchSeq: number; branchCount: number }
    | undefined
  > {
    const g = await conn.query(
      `SELECT ${GLOBAL_SELECT} FROM ${this.t.global} g WHERE g.xid = ? FOR UPDATE`,
      [xid],
    );
    const row = g.rows[0];
    if (!row) return undefined;
    // One row at least (the count), joined with every branch.
    const r = await conn.query(
      `SELECT c.lock_rows, ${BRANCH_COLUMNS.map((col) => `b.${col}`).join(', ')}
         FROM (SELECT COUNT(*) AS lock_rows FROM ${this.t.lock} WHERE xid = ?) c
         LEFT JOIN ${this.t.branch} b ON b.xid = ?
        ORDER BY b.branch_seq`,
      [xid, xid],
    );
    const branchRows = r.rows.filter((b) => b.branch_id !== null && b.branch_id !== undefined);
    const nextBranchSeq = branchRows.reduce(
      (max, b) => Math.max(max, intOf(b.branch_seq, 'branch_seq') + 1),
      0,
    );
    return {
      session: sessionFromRows(row, branchRows),
      lockRows: intOf(r.rows[0]?.lock_rows, 'lock_rows'),
      nextBranchSeq,
      branchCount: intOf(row.branch_count, 'branch_count'),
    };
  }

  /** Sessions by xid (absent ones are missing from the map), branches included. */
  async loadSessions(conn: SqlConn, xids: readonly string[]): Promise<Map<string, GlobalSession>> {
    const sessions = new Map<string, GlobalSession>();
    for (const part of chunks([...new Set(xids)], DB_READ_SESSIONS_PER_STATEMENT)) {
      const g = await conn.query(
        `SELECT ${GLOBAL_SELECT} FROM ${this.t.global} g WHERE g.xid IN (${placeholders(part.length)})`,
        part,
      );
      if (g.rows.length === 0) continue;
      const found = g.rows.map((r) => textOf(r.xid, 'xid'));
      const b = await conn.query(
        `SELECT ${BRANCH_SELECT} FROM ${this.t.branch} WHERE xid IN (${placeholders(found.length)})`,
        found,
      );
      const byXid = new Map<string, Row[]>();
      for (const r of b.rows) {
        const xid = textOf(r.xid, 'xid');
        let list = byXid.get(xid);
        if (!list) byXid.set(xid, (list = []));
        list.push(r);
      }
      for (const r of g.rows) {
        const session = sessionFromRows(r, byXid.get(textOf(r.xid, 'xid')) ?? []);
        sessions.set(session.xid, session);
      }
    }
    return sessions;
  }

  /**
   * One xid's session (branches included) and finished record by ONE statement: a
   * statement sees one snapshot in both dialects, so a read that needs only this can run
   * it outside any transaction (the hot reads: a commit's status check, getStatus).
   */
  async loadOne(
    conn: SqlConn,
    xid: string,
  ): Promise<{ session: GlobalSession | null; finished: FinishedRecord | null }> {
    const r = await conn.query(this.loadOneSql, [xid]);
    const first = r.rows[0];
    if (!first) return { session: null, finished: null };
    const unprefix = (row: Row, prefix: string): Row => {
      const out: Row = {};
      for (const [key, value] of Object.entries(row))
        if (key.startsWith(prefix)) out[key.slice(prefix.length)] = value;
      return out;
    };
    const finished =
      first.f_xid === null || first.f_xid === undefined
        ? null
        : finishedFromRow(unprefix(first, 'f_'));
    if (first.g_xid === null || first.g_xid === undefined) return { session: null, finished };
    const branches = r.rows
      .filter((row) => row.b_branch_id !== null && row.b_branch_id !== undefined)
      .map((row) => unprefix(row, 'b_'));
    return { session: sessionFromRows(unprefix(first, 'g_'), branches), finished };
  }

  private get loadOneSql(): string {
    this.loadOneText ??= `SELECT ${GLOBAL_COLUMNS.map((c) => `g.${c} AS g_${c}`).join(', ')},
         ${BRANCH_COLUMNS.map((c) => `b.${c} AS b_${c}`).join(', ')},
         f.xid AS f_xid, f.status AS f_status, f.finished_at AS f_finished_at,
         f.resolved_by AS f_resolved_by
       FROM (SELECT ${this.dialect === 'postgres' ? 'CAST(? AS VARCHAR)' : '?'} AS xid) k
       LEFT JOIN ${this.t.global} g ON g.xid = k.xid
       LEFT JOIN ${this.t.branch} b ON b.xid = k.xid
       LEFT JOIN ${this.t.finished} f ON f.xid = k.xid
       ORDER BY b.branch_seq`;
    return this.loadOneText;
  }

  private loadOneText: string | undefined;

  async loadFinished(conn: SqlConn, xids: readonly string[]): Promise<Map<string, FinishedRecord>> {
    const records = new Map<string, FinishedRecord>();
    for (const part of chunks([...new Set(xids)], DB_READ_SESSIONS_PER_STATEMENT)) {
      const f = await conn.query(
        `SELECT xid, status, finished_at, resolved_by FROM ${this.t.finished} WHERE xid IN (${placeholders(part.length)})`,
        part,
      );
      for (const r of f.rows) {
        const record = finishedFromRow(r);
        records.set(record.xid, record);
      }
    }
    return records;
  }

  /** The remembered result of a client request, or undefined. */
  async loadDedup(conn: SqlConn, kind: string, requestId: string): Promise<unknown> {
    const r = await conn.query(
      `SELECT result FROM ${this.t.dedup} WHERE kind = ? AND request_id = ?`,
      [kind, requestId],
    );
    const row = r.rows[0];
    if (!row) return undefined;
    try {
      return JSON.parse(textOf(row.result, 'result')) as unknown;
    } catch (err) {
      throw new StorageCorruptError(`request_dedup row ${kind}/${requestId} does not hold JSON`, {
        cause: err,
      });
    }
  }

  /**
   * Who holds each of `rows` (rows nobody holds are absent). Optionally leaving out one xid's own
   * rows.
   */
  async lockHolders(
    conn: SqlConn,
    rows: readonly string[],
    exceptXid: string | null = null,
  ): Promise<LockHolderRow[]> {
    const holders: LockHolderRow[] = [];
    for (const part of chunks([...new Set(rows)], DB_LOCK_ROWS_PER_STATEMENT)) {
      const params: SqlValue[] = [...part];
      let sql = `SELECT row_key, xid, branch_id FROM ${this.t.lock} WHERE row_key IN (${placeholders(part.length)})`;
      if (exceptXid !== null) {
        sql += ' AND xid <> ?';
        params.push(exceptXid);
      }
      const r = await conn.query(sql, params);
      for (const row of r.rows)
        holders.push({
          row: textOf(row.row_key, 'row_key'),
          xid: textOf(row.xid, 'xid'),
          branchId: textOf(row.branch_id, 'branch_id'),
        });
    }
    return holders;
  }

  /** Live sessions, counted up to `bound` (an index-only scan that stops there). */
  async countLive(conn: SqlConn, bound: number): Promise<number> {
    const r = await conn.query(
      `SELECT COUNT(*) AS n FROM (SELECT 1 AS one FROM ${this.t.global} LIMIT ?) live`,
      [bound],
    );
    return intOf(r.rows[0]?.n, 'n');
  }

  async countLockRows(conn: SqlConn): Promise<number> {
    const r = await conn.query(`SELECT COUNT(*) AS n FROM ${this.t.lock}`);
    return intOf(r.rows[0]?.n, 'n');
  }

  /** Live xids, most urgent first (due_at), at most `limit`. */
  async liveXidsPage(conn: SqlConn, limit: number): Promise<Xid[]> {
    const r = await conn.query(`SELECT xid FROM ${this.t.global} ORDER BY due_at, xid LIMIT ?`, [
      limit,
    ]);
    // Xids of rows this store wrote, from commands a coordinator made.
    return r.rows.map((row) => textOf(row.xid, 'xid') as Xid);
  }

  /**
   * Xids whose due_at has come (decided elsewhere, a retry or deadline passed), most urgent
   * first.
   */
  async dueXids(conn: SqlConn, now: number, limit: number): Promise<Xid[]> {
    const r = await conn.query(
      `SELECT xid FROM ${this.t.global} WHERE due_at <= ? ORDER BY due_at, xid LIMIT ?`,
      [now, limit],
    );
    return r.rows.map((row) => textOf(row.xid, 'xid') as Xid);
  }

  // ---------------------------------------------------------------- writes (each asserts what it
  // touched)

  async insertGlobal(conn: SqlConn, session: GlobalSession): Promise<void> {
    const r = await conn.query(
      `INSERT INTO ${this.t.global} (${GLOBAL_COLUMNS.join(', ')}) VALUES (${placeholders(GLOBAL_COLUMNS.length)})`,
      globalRowValues(session, this.handOffMs),
    );
    assert(
      r.affected === 1,
      () => `inserting global_table row ${session.xid} touched ${r.affected} rows`,
    );
  }

  /**
   * Compare-and-set on the status the submit read: with the row locked it must match, or the store
   * has a bug.
   */
  async updateGlobal(conn: SqlConn, session: GlobalSession, expectedStatus: string): Promise<void> {
    const set = GLOBAL_MUTABLE_COLUMNS.map((c) => `${c} = ?`).join(', ');
    const r = await conn.query(`UPDATE ${this.t.global} SET ${set} WHERE xid = ? AND status = ?`, [
      ...globalMutableValues(session, this.handOffMs),
      session.xid,
      expectedStatus,
    ]);
    assert(
      r.affected === 1,
      () => `compare-and-set of ${session.xid} from ${expectedStatus} matched ${r.affected} rows`,
    );
  }

  async deleteGlobal(conn: SqlConn, xid: string, expectedStatus: string): Promise<void> {
    const r = await conn.query(`DELETE FROM ${this.t.global} WHERE xid = ? AND status = ?`, [
      xid,
      expectedStatus,
    ]);
    assert(
      r.affected === 1,
      () => `deleting ${xid} in ${expectedStatus} matched ${r.affected} rows`,
    );
  }

  async insertBranch(conn: SqlConn, branch: BranchSession, seq: number): Promise<void> {
    const r = await conn.query(
      `INSERT INTO ${this.t.branch} (${BRANCH_COLUMNS.join(', ')}) VALUES (${placeholders(BRANCH_COLUMNS.length)})`,
      branchRowValues(branch, seq),
    );
    assert(
      r.affected === 1,
      () =>
        `inserting branch_table row ${branch.xid}/${branch.branchId} touched ${r.affected} rows`,
    );
  }

  async updateBranch(conn: SqlConn, branch: BranchSession): Promise<void> {
    const r = await conn.query(
      `UPDATE ${this.t.branch} SET status = ?, application_data = ?, locks_held = ? WHERE xid = ? AND branch_id = ?`,
      [
        branch.status,
        branch.applicationData,
        branch.lockedRows.length > 0,
        branch.xid,
        branch.branchId,
      ],
    );
    assert(
      r.affected === 1,
      () => `updating branch_table row ${branch.xid}/${branch.branchId} matched ${r.affected} rows`,
    );
  }

  async deleteBranch(conn: SqlConn, xid: string, branchId: string): Promise<void> {
    const r = await conn.query(`DELETE FROM ${this.t.branch} WHERE xid = ? AND branch_id = ?`, [
      xid,
      branchId,
    ]);
    assert(
      r.affected === 1,
      () => `deleting branch_table row ${xid}/${branchId} matched ${r.affected} rows`,
    );
  }

  async deleteBranches(conn: SqlConn, xid: string, expected: number): Promise<void> {
    const r = await conn.query(`DELETE FROM ${this.t.branch} WHERE xid = ?`, [xid]);
    assert(
      r.affected === expected,
      () => `deleting the branches of ${xid} matched ${r.affected} rows, expected ${expected}`,
    );
  }

  /**
   * All or nothing: a multi-row INSERT per chunk inside the caller's transaction. The
   * primary key on row_key refuses a row another xid holds (or inserts while we do: the
   * INSERT waits for that transaction and fails if it commits) — the database, not this
   * node's memory, is what makes two holders of a row impossible across nodes. Rows come
   * sorted, so two nodes inserting overlapping sets wait on each other in one order.
   */
  async insertLocks(conn: SqlConn, xid: string, rows: ReadonlyMap<string, string>): Promise<void> {
    const entries = [...rows];
    for (const part of chunks(entries, DB_LOCK_ROWS_PER_STATEMENT)) {
      const values = part.map(() => `(${placeholders(LOCK_COLUMNS.length)})`).join(', ');
      const r = await conn.query(
        `INSERT INTO ${this.t.lock} (${LOCK_COLUMNS.join(', ')}) VALUES ${values}`,
        part.flatMap(([row, branchId]) => lockRowValues(row, xid, branchId)),
      );
      assert(
        r.affected === part.length,
        () => `inserting ${part.length} lock rows of ${xid} touched ${r.affected}`,
      );
    }
  }

  async deleteLocks(conn: SqlConn, xid: string, rows: readonly string[]): Promise<void> {
    for (const part of chunks(rows, DB_LOCK_ROWS_PER_STATEMENT)) {
      const r = await conn.query(
        `DELETE FROM ${this.t.lock} WHERE xid = ? AND row_key IN (${placeholders(part.length)})`,
        [xid, ...part],
      );
      assert(
        r.affected === part.length,
        () => `releasing ${part.length} lock rows of ${xid} matched ${r.affected}`,
      );
    }
  }

  async deleteAllLocks(conn: SqlConn, xid: string, expected: number): Promise<void> {
    const r = await conn.query(`DELETE FROM ${this.t.lock} WHERE xid = ?`, [xid]);
    assert(
      r.affected === expected,
      () => `releasing every lock row of ${xid} matched ${r.affected}, expected ${expected}`,
    );
  }

  async insertFinished(conn: SqlConn, record: FinishedRecord): Promise<void> {
    const r = await conn.query(
      `INSERT INTO ${this.t.finished} (xid, status, finished_at, resolved_by) VALUES (?, ?, ?, ?)`,
      [record.xid, record.status, record.finishedAt, record.resolvedBy],
    );
    assert(
      r.affected === 1,
      () => `inserting finished_table row ${record.xid} touched ${r.affected} rows`,
    );
  }

  async insertDedup(
    conn: SqlConn,
    kind: string,
    requestId: string,
    result: unknown,
  ): Promise<void> {
    const r = await conn.query(
      `INSERT INTO ${this.t.dedup} (kind, request_id, result) VALUES (?, ?, ?)`,
      [kind, requestId, JSON.stringify(result)],
    );
    assert(
      r.affected === 1,
      () => `inserting request_dedup row ${kind}/${requestId} touched ${r.affected} rows`,
    );
  }
}
