/**
 * PostgreSQL's one-statement forms of the steps of a transaction with branches (issue 12,
 * the lock scenario: register an AT branch with its row lock, record the branch's
 * phase-two result, end the session; the AT commit itself is batch-pg.ts's). Each is one autocommit
 * statement of data-modifying CTEs whose WHERE clauses are exactly the case the
 * coordinator's state machine accepts with a known effect; when a statement matches no
 * row nothing was written and the general path (apply.ts) decides, as in fast-path.ts.
 *
 * Why the conditions that read other tables are safe under concurrency: every statement
 * starts by writing or locking the xid's global row. A statement that waited for that
 * row's lock re-checks its WHERE on the new version of the row, but every other table
 * is still read in the snapshot taken before the wait. So a condition on another table is
 * always compared with a column of the global row that every writer of that table
 * rewrites: `branch_count = (SELECT COUNT(*) FROM branch …)`. A RegisterBranch or
 * RemoveBranch that committed while we waited changed branch_count, and the stale count
 * no longer matches: nothing is written, the general path re-reads. A branch's own status
 * is written by UPDATE, which re-checks the branch row itself. A lock row another xid
 * holds (or inserts concurrently) fails the statement on lock_table's primary key, a
 * remembered requestId on request_dedup's: the caller goes the general way, which names
 * the holder or answers the remembered result.
 */
import type {
  BranchPhaseTwoResultCommand,
  FinishGlobalCommand,
  FinishedSession,
  Outcome,
  RegisterBranchCommand,
} from '../../coordinator/commands.ts';
import { MAX_BRANCHES_PER_GLOBAL } from '../../coordinator/limits.ts';
import { BadRequestError } from '../../shared/errors.ts';
import type { Xid } from '../../shared/ids.ts';
import { MAX_APPLICATION_DATA_BYTES } from '../../shared/protocol-limits.ts';
import { parseLockKey } from '../../coordinator/lock-key.ts';
import {
  BranchStatus,
  GLOBAL_TRANSITIONS,
  GlobalStatus,
  SESSION_STATUSES,
  branchDoneStatusFor,
  canTransition,
  decisionOf,
  isBranchEndStatus,
  isPhaseTwoInFlight,
  isSuccessfulEnd,
  phaseTwoStatusesFor,
  type BranchSession,
} from '../../coordinator/types.ts';
import { DB_LOCK_ROWS_PER_STATEMENT } from './limits.ts';
import {
  BRANCH_COLUMNS,
  LOCK_COLUMNS,
  branchFromRow,
  branchRowValues,
  lockRowValues,
} from './rows.ts';
import { placeholders, type SqlDriver, type SqlValue, type TableNames } from './sql.ts';

/** PostgreSQL types of branch_table's columns (parameters in INSERT … SELECT carry none). */
const PG_BRANCH_TYPES: Record<(typeof BRANCH_COLUMNS)[number], string> = {
  xid: 'varchar',
  branch_id: 'varchar',
  branch_seq: 'integer',
  branch_type: 'varchar',
  resource_id: 'varchar',
  lock_key: 'text',
  application_data: 'text',
  status: 'varchar',
  client_id: 'varchar',
  locks_held: 'boolean',
  application_id: 'varchar',
};

const LOCK_VALUES_ROW = `(${LOCK_COLUMNS.map(() => '?::varchar').join(', ')})`;
const BRANCH_END_STATUSES = Object.values(BranchStatus).filter(isBranchEndStatus);
const textEncoder = new TextEncoder();

export class PgBranchPaths {
  constructor(
    private readonly driver: SqlDriver,
    private readonly t: TableNames,
  ) {}

  /**
   * RegisterBranch of a session in Begin, before its deadline, below the branch limit:
   * bumps branch_count, inserts the branch (branch_seq after the last one), its lock rows
   * and the requestId's result. A conflict on a lock row or a remembered requestId fails
   * the statement on a primary key (the caller goes the general way).
   */
  async registerBranch(c: RegisterBranchCommand): Promise<Outcome<unknown> | undefined> {
    const rows = registrableRows(c);
    if (rows === null) return undefined;
    const result = { branchId: c.branchId };
    const branch = newBranch(c, rows);
    const t = this.t;
    const branchValues = BRANCH_COLUMNS.map((col) =>
      col === 'branch_seq' ? 'g.seq' : `?::${PG_BRANCH_TYPES[col]}`,
    );
    const unique = [...new Set(rows)].sort();
    const params: SqlValue[] = [c.xid, GlobalStatus.Begin, c.at, MAX_BRANCHES_PER_GLOBAL, c.xid];
    params.push(c.xid, ...branchCells(branch));
    // SKIP LOCKED: while another submit holds the global row, the general path waits for it
    // (once) instead of this statement waiting and then finding branch_count moved.
    let sql = `WITH k AS (SELECT xid FROM ${t.global}
         WHERE xid = ? AND status = ? AND deadline > ? AND branch_count < ?
           AND branch_count = (SELECT COUNT(*) FROM ${t.branch} WHERE xid = ?)
         FOR UPDATE SKIP LOCKED),
      g AS (UPDATE ${t.global} SET branch_count = branch_count + 1 WHERE xid IN (SELECT xid FROM k)
        RETURNING (SELECT COALESCE(MAX(branch_seq) + 1, 0) FROM ${t.branch} WHERE xid = ?) AS seq),
      b AS (INSERT INTO ${t.branch} (${BRANCH_COLUMNS.join(', ')})
        SELECT ${branchValues.join(', ')} FROM g RETURNING branch_id)`;
    if (unique.length > 0) {
      sql += `, l AS (INSERT INTO ${t.lock} (${LOCK_COLUMNS.join(', ')})
        SELECT v.* FROM g, (VALUES ${unique.map(() => LOCK_VALUES_ROW).join(', ')}) v)`;
      for (const row of unique) params.push(...lockRowValues(row, c.xid, c.branchId));
    }
    if (c.requestId !== null) {
      sql += `, d AS (INSERT INTO ${t.dedup} (kind, request_id, result)
        SELECT 'RegisterBranch', ?::varchar, ?::text FROM g)`;
      params.push(c.requestId, JSON.stringify(result));
    }
    const r = await this.driver.query(`${sql} SELECT branch_id FROM b`, params);
    return r.rows.length === 1 ? ok(result) : undefined;
  }

  /**
   * A branch's phase-two result while its session runs that decision's phase two, not
   * fenced, the branch not yet at this status nor ended: its status, and — at the done
   * status — its rows freed.
   */
  async branchResult(c: BranchPhaseTwoResultCommand): Promise<Outcome<unknown> | undefined> {
    const from = SESSION_STATUSES.filter(
      (s) => isPhaseTwoInFlight(s) && phaseTwoStatusesFor(decisionOf(s)!).includes(c.status),
    );
    if (from.length === 0) return undefined;
    const done = from.some((s) => branchDoneStatusFor(decisionOf(s)!) === c.status);
    const t = this.t;
    const params: SqlValue[] = [c.xid, c.term, ...from, c.status, c.branchId, c.status];
    params.push(...BRANCH_END_STATUSES);
    let sql = `WITH g AS (SELECT xid FROM ${t.global}
          WHERE xid = ? AND driver_term <= ? AND status IN (${placeholders(from.length)}) FOR UPDATE),
        b AS (UPDATE ${t.branch} SET status = ?${done ? ', locks_held = FALSE' : ''}
          WHERE xid IN (SELECT xid FROM g) AND branch_id = ? AND status <> ?
            AND status NOT IN (${placeholders(BRANCH_END_STATUSES.length)})
          RETURNING branch_id)`;
    if (done) {
      sql += `, l AS (DELETE FROM ${t.lock}
          WHERE xid = ? AND branch_id IN (SELECT branch_id FROM b) RETURNING 1)
        SELECT (SELECT COUNT(*) FROM l) AS released FROM b`;
      params.push(c.xid);
    } else sql += ' SELECT 0 AS released FROM b';
    const r = await this.driver.query(sql, params);
    if (r.rows.length !== 1) return undefined;
    return ok({ status: c.status, releasedRows: Number(r.rows[0]!.released) });
  }

  /**
   * FinishGlobal of a session whose every branch is done its decision's way: the global
   * row, its branches and lock rows deleted and the finished record inserted, answering
   * the branches as they ended (their rows freed).
   */
  async finish(c: FinishGlobalCommand): Promise<Outcome<unknown> | undefined> {
    if (!isSuccessfulEnd(c.status)) return undefined;
    const from = [...GLOBAL_TRANSITIONS.keys()].filter((s) => canTransition(s, c.status));
    if (from.length === 0) return undefined;
    const done = branchDoneStatusFor(decisionOf(c.status)!);
    const last = c.lastBranch;
    // The last branch's result folded in (lastBranch): the machine's checks of it are that
    // its status is the decision's done status (else a refusal the machine words), that the
    // branch exists and has not ended any other way; every other branch must be done.
    if (last !== undefined && last.status !== done) return undefined;
    const t = this.t;
    const counted =
      last === undefined
        ? 'status = ?'
        : `(status = ? OR (branch_id = ? AND status NOT IN (${placeholders(BRANCH_END_STATUSES.length)})))`;
    const countParams: SqlValue[] =
      last === undefined ? [done] : [done, last.branchId, ...BRANCH_END_STATUSES];
    const lastExists =
      last === undefined
        ? ''
        : `AND EXISTS (SELECT 1 FROM ${t.branch} WHERE xid = ? AND branch_id = ?)`;
    const r = await this.driver.query(
      `WITH gone AS (DELETE FROM ${t.global}
          WHERE xid = ? AND driver_term <= ? AND status IN (${placeholders(from.length)})
            AND branch_count = (SELECT COUNT(*) FROM ${t.branch} WHERE xid = ? AND ${counted})
            ${lastExists}
          RETURNING xid),
        b AS (DELETE FROM ${t.branch} WHERE xid IN (SELECT xid FROM gone)
          RETURNING ${BRANCH_COLUMNS.join(', ')}),
        l AS (DELETE FROM ${t.lock} WHERE xid IN (SELECT xid FROM gone)),
        f AS (INSERT INTO ${t.finished} (xid, status, finished_at, resolved_by)
          SELECT xid, ?::varchar, ?::bigint, NULL FROM gone RETURNING xid)
      SELECT f.xid AS f_xid, ${BRANCH_COLUMNS.map((col) => `b.${col}`).join(', ')}
        FROM f LEFT JOIN b ON TRUE ORDER BY b.branch_seq`,
      [
        c.xid,
        c.term,
        ...from,
        c.xid,
        ...countParams,
        ...(last === undefined ? [] : [c.xid, last.branchId]),
        c.status,
        c.at,
      ],
    );
    if (r.rows.length === 0) return undefined;
    // The branches as they ended: the folded one at its done status, every one's rows freed.
    const branches = r.rows
      .filter((row) => row.branch_id !== null && row.branch_id !== undefined)
      .map((row) => {
        const branch = { ...branchFromRow(c.xid as Xid, row), lockedRows: [] };
        return last !== undefined && branch.branchId === last.branchId
          ? { ...branch, status: done }
          : branch;
      });
    const finished: FinishedSession = { xid: c.xid, status: c.status, branches };
    return ok(finished);
  }
}

/**
 * The rows a RegisterBranch locks, when a one-statement form may take it: its data within
 * the limit, its key parsed as the machine parses it, its rows within one statement; null
 * otherwise (the general path decides, and words any refusal).
 */
function registrableRows(c: RegisterBranchCommand): string[] | null {
  if (textEncoder.encode(c.applicationData).length > MAX_APPLICATION_DATA_BYTES) return null;
  const rows = lockRowsOf(c.resourceId, c.lockKey);
  return rows === null || rows.length > DB_LOCK_ROWS_PER_STATEMENT ? null : rows;
}

/** The branch's rows as the machine parses them; null when the machine would refuse the key. */
function lockRowsOf(resourceId: string, lockKey: string): string[] | null {
  if (lockKey === '') return [];
  try {
    return parseLockKey(resourceId, lockKey);
  } catch (err) {
    if (err instanceof BadRequestError) return null;
    throw err;
  }
}

/** The branch row's values but branch_seq (the statement computes it), in BRANCH_COLUMNS order. */
function branchCells(b: BranchSession): SqlValue[] {
  const seqAt = BRANCH_COLUMNS.indexOf('branch_seq');
  return branchRowValues(b, 0).filter((_, i) => i !== seqAt);
}

/** The branch RegisterBranch adds: the machine's own registerBranch, field for field. */
function newBranch(c: RegisterBranchCommand, rows: string[]): BranchSession {
  return {
    branchId: c.branchId as BranchSession['branchId'],
    xid: c.xid as BranchSession['xid'],
    type: c.type,
    resourceId: c.resourceId,
    lockKey: c.lockKey,
    applicationData: c.applicationData,
    status: BranchStatus.Registered,
    clientId: c.clientId,
    applicationId: c.applicationId ?? '',
    lockedRows: rows,
  };
}

function ok<T>(value: T): Outcome<T> {
  return { ok: true, value };
}
