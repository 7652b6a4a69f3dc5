/**
 * One-statement forms of the hot commands (Begin, and the steps of a branchless commit or
 * rollback), tried before the general path (apply.ts). Each is a single autocommit
 * statement on PostgreSQL (MySQL: one statement, or one short transaction where MySQL has
 * no data-modifying CTE) whose WHERE clause is exactly the case the coordinator's state
 * machine accepts with a known effect. When the statement matches no row, nothing was
 * written and the general path decides — it restores the state machine, so every refusal,
 * message and corner case stays the machine's own. The rules written here are pinned to
 * the machine by the differential property test (test/properties/properties.test.ts).
 *
 * Why the WHERE clauses are safe under concurrency: every one is on the xid's global row,
 * the serialization point of every submit. A statement that waits for that row's lock
 * (another node's submit holding it FOR UPDATE) re-checks its WHERE on the row that
 * transaction committed (PostgreSQL's READ COMMITTED re-check, InnoDB's locking read), so
 * each condition must be a column of that row: hence `branch_count` (schema 2), which
 * every RegisterBranch and RemoveBranch rewrites.
 */
import { assert } from '../../shared/errors.ts';
import type { Xid } from '../../shared/ids.ts';
import type {
  AcquireDriverCommand,
  BeginCommand,
  ChangeGlobalStatusCommand,
  Command,
  CommitGlobalCommand,
  FinishGlobalCommand,
  Outcome,
  RollbackGlobalCommand,
} from '../../coordinator/commands.ts';
import {
  MAX_TRANSACTION_TIMEOUT_MS,
  MIN_TRANSACTION_TIMEOUT_MS,
} from '../../coordinator/limits.ts';
import {
  GLOBAL_TRANSITIONS,
  GlobalStatus,
  canTransition,
  decisionOf,
  isPhaseTwoInFlight,
  isSuccessfulEnd,
  type GlobalSession,
} from '../../coordinator/types.ts';
import { PgBatches } from './batch-pg.ts';
import { MysqlBeginBatches } from './batch-mysql.ts';
import { PgBranchPaths } from './fast-path-pg.ts';
import { placeholders, type SqlDriver, type SqlValue, type TableNames } from './sql.ts';

/** Thrown inside a MySQL fast-path transaction to roll it back: the general path decides. */
class NotThisWay extends Error {}

/** What the fast paths did, for metrics and for the differential test (it must see them taken). */
export interface FastPathStats {
  taken: number;
  declined: number;
  /** Taken, by command kind. */
  takenByKind: Partial<Record<Command['kind'], number>>;
  /** FinishGlobals with the last branch's result folded in that were taken (PostgreSQL). */
  foldedFinishes: number;
  /** PostgreSQL: batched statements run (batch-pg.ts) and the commands they carried. */
  batches: { statements: number; commands: number };
}

export class FastPaths {
  private readonly counts: Omit<FastPathStats, 'batches'> = {
    taken: 0,
    declined: 0,
    takenByKind: {},
    foldedFinishes: 0,
  };

  get stats(): FastPathStats {
    const batchers = [this.batches?.turn, this.mysqlBegins?.turn].filter((b) => b !== undefined);
    return {
      ...this.counts,
      batches: {
        statements: batchers.reduce((n, b) => n + b.stats.batches, 0),
        commands: batchers.reduce((n, b) => n + b.stats.commands, 0),
      },
    };
  }
  /** PostgreSQL's forms of the steps with branches (fast-path-pg.ts); null on MySQL. */
  private readonly pg: PgBranchPaths | null;
  /** PostgreSQL: the Begins and commits of one event-loop turn in one statement each. */
  private readonly batches: PgBatches | null;
  /** MySQL: the Begins of one event-loop turn in one transaction (batch-mysql.ts). */
  private readonly mysqlBegins: MysqlBeginBatches | null;

  constructor(
    private readonly driver: SqlDriver,
    private readonly t: TableNames,
    /** The decider's hand-off time in the due_at this writes (dueAtOf, rows.ts). */
    private readonly handOffMs: number,
  ) {
    this.pg = driver.dialect === 'postgres' ? new PgBranchPaths(driver, t) : null;
    this.batches = driver.dialect === 'postgres' ? new PgBatches(driver, t, handOffMs) : null;
    this.mysqlBegins =
      driver.dialect === 'mysql' ? new MysqlBeginBatches(driver, t, handOffMs) : null;
  }

  /**
   * The command's outcome by one statement, or undefined: nothing was written and the
   * general path must decide. `mayBegin` is the live-session bound's verdict for a Begin.
   * Throws database errors (a duplicate key means a race: the caller goes the general way).
   */
  async tryApply(command: Command, mayBegin: boolean): Promise<Outcome<unknown> | undefined> {
    let outcome: Outcome<unknown> | undefined;
    const pg = this.pg;
    switch (command.kind) {
      case 'Begin':
        outcome = mayBegin ? await this.begin(command) : undefined;
        break;
      case 'ChangeGlobalStatus':
        outcome = await this.decideFromBegin(command);
        break;
      case 'AcquireDriver':
        outcome = await this.acquireDriver(command);
        break;
      case 'FinishGlobal':
        // One with the last branch's result folded in: PostgreSQL's one-statement form
        // (fast-path-pg.ts); MySQL's general path (one transaction, as the end alone).
        if (command.lastBranch !== undefined && !pg) return undefined;
        outcome = pg ? await pg.finish(command) : await this.finishBranchless(command);
        break;
      case 'CommitGlobal':
        outcome = this.batches
          ? await this.commitBatched(command)
          : await this.decideBranchless(command, 'commit');
        break;
      case 'RegisterBranch':
        outcome = pg ? await pg.registerBranch(command) : undefined;
        break;
      case 'BranchPhaseTwoResult':
        outcome = pg ? await pg.branchResult(command) : undefined;
        break;
      case 'RollbackGlobal':
        outcome = await this.decideBranchless(command, command.timeout ? 'timeout' : 'rollback');
        break;
      default:
        return undefined;
    }
    const counts = this.counts;
    if (outcome) {
      counts.taken += 1;
      counts.takenByKind[command.kind] = (counts.takenByKind[command.kind] ?? 0) + 1;
      if (command.kind === 'FinishGlobal' && command.lastBranch !== undefined)
        counts.foldedFinishes += 1;
    } else counts.declined += 1;
    return outcome;
  }

  // ---------------------------------------------------------------- Begin

  /**
   * Through the turn's batch of Begins: on PostgreSQL one INSERT of the global rows guarded
   * by the dedup rows' `INSERT … ON CONFLICT (kind, request_id) DO NOTHING RETURNING`
   * (batch-pg.ts), on MySQL two multi-row INSERTs in one short transaction (batch-mysql.ts).
   * A remembered requestId, a finished xid or an xid inserted concurrently writes nothing
   * for that Begin: the general path answers it.
   */
  private async begin(c: BeginCommand): Promise<Outcome<unknown> | undefined> {
    // The machine's own range check; out of range, it words the refusal.
    if (c.timeoutMs < MIN_TRANSACTION_TIMEOUT_MS || c.timeoutMs > MAX_TRANSACTION_TIMEOUT_MS)
      return undefined;
    const session = newSession(c);
    const result = { xid: c.xid, deadline: session.deadline };
    const batcher = this.batches ?? this.mysqlBegins;
    assert(batcher !== null, 'every dialect batches its Begins');
    const written = await batcher.begin({ command: c, session, result });
    return written ? ok(result) : undefined;
  }

  // ---------------------------------------------------------------- the decision

  /**
   * PostgreSQL: CommitGlobal through the turn's batch (batch-pg.ts): a branchless session
   * ends Committed in one phase, one with only AT branches becomes AsyncCommitting with its
   * rows freed; anything else wrote nothing and goes the general way.
   */
  private async commitBatched(c: CommitGlobalCommand): Promise<Outcome<unknown> | undefined> {
    const how = await this.batches!.commit(c);
    if (how === 'onePhase') {
      const status = GlobalStatus.Committed;
      return ok({ status, decided: true, finished: { xid: c.xid, status, branches: [] } });
    }
    if (how === 'async')
      return ok({ status: GlobalStatus.AsyncCommitting, decided: true, finished: null });
    return undefined;
  }

  /**
   * ChangeGlobalStatus out of Begin as one compare-and-set UPDATE: the machine's checks
   * (status, fence, deadline) are the WHERE clause; a commit decision is taken here only
   * for a branchless session (with branches it frees AT rows, which the general path does). Retry
   * fields are still at their start while Begin, so the new due_at is the decision time (dueAtOf).
   */
  private async decideFromBegin(
    c: ChangeGlobalStatusCommand,
  ): Promise<Outcome<unknown> | undefined> {
    if (c.from !== GlobalStatus.Begin || !canTransition(c.from, c.to)) return undefined;
    if (!isPhaseTwoInFlight(c.to)) return undefined;
    const where = ['xid = ?', 'status = ?', 'driver_term <= ?'];
    // due_at (dueAtOf): the decision time, plus the decider's hand-off time at an even
    // (decider's) driver term, which this command does not change.
    const params: SqlValue[] = [
      c.to,
      c.at,
      c.at,
      this.handOffMs,
      c.xid,
      GlobalStatus.Begin,
      c.term,
    ];
    where.push('retry_stopped = ?', 'next_retry_at IS NULL');
    params.push(false);
    if (c.to === GlobalStatus.TimeoutRollbacking) {
      where.push('deadline <= ?');
      params.push(c.at);
    }
    if (c.to === GlobalStatus.Committing || c.to === GlobalStatus.AsyncCommitting) {
      where.push('deadline > ?');
      params.push(c.at);
    }
    // A commit decision frees the AT branches' rows (the machine's releaseAtLocks): with
    // branches, the general path applies it; only a branchless session is decided here.
    if (decisionOf(c.to) === 'commit') where.push('branch_count = 0');
    const r = await this.driver.query(
      `UPDATE ${this.t.global} SET status = ?, status_changed_at = ?,
         due_at = ? + (1 - MOD(driver_term, 2)) * ? WHERE ${where.join(' AND ')}`,
      params,
    );
    return r.affected === 1 ? ok({ status: c.to }) : undefined;
  }

  /** The fence as one UPDATE: a live session whose driver term is not above the command's. */
  private async acquireDriver(c: AcquireDriverCommand): Promise<Outcome<unknown> | undefined> {
    const r = await this.driver.query(
      `UPDATE ${this.t.global} SET driver_term = ? WHERE xid = ? AND driver_term <= ?`,
      [c.term, c.xid, c.term],
    );
    return r.affected === 1 ? ok({ driverTerm: c.term }) : undefined;
  }

  /**
   * CommitGlobal or RollbackGlobal of a branchless session still in Begin: the machine
   * decides and ends it in the same entry (one-phase), so here the global row is deleted
   * and the finished record inserted by one statement (PostgreSQL; MySQL: one short
   * transaction). The machine's checks are the WHERE clause: the fence (driver term not
   * above the command's), status Begin, no branch, and the deadline — a commit before it
   * (after it the machine rolls back on timeout: the general path), a timeout rollback at
   * or after it. Anything else (decided, ended, unknown, fenced) goes the general way.
   */
  private async decideBranchless(
    c: CommitGlobalCommand | RollbackGlobalCommand,
    how: 'commit' | 'rollback' | 'timeout',
  ): Promise<Outcome<unknown> | undefined> {
    const status =
      how === 'commit'
        ? GlobalStatus.Committed
        : how === 'rollback'
          ? GlobalStatus.Rollbacked
          : GlobalStatus.TimeoutRollbacked;
    const where = ['xid = ?', 'status = ?', 'branch_count = 0', 'driver_term <= ?'];
    const whereParams: SqlValue[] = [c.xid, GlobalStatus.Begin, c.term];
    if (how === 'commit') {
      where.push('deadline > ?');
      whereParams.push(c.at);
    } else if (how === 'timeout') {
      where.push('deadline <= ?');
      whereParams.push(c.at);
    }
    return this.endBranchless(where.join(' AND '), whereParams, c.xid, status, c.at, {
      status,
      decided: true,
      finished: { xid: c.xid, status, branches: [] },
    });
  }

  // ---------------------------------------------------------------- the end

  /**
   * FinishGlobal of a session with no branch (nothing to release, no branch to check):
   * PostgreSQL deletes the global row and inserts the finished record in one statement;
   * MySQL in one short transaction. A session with branches goes the general way.
   */
  private async finishBranchless(c: FinishGlobalCommand): Promise<Outcome<unknown> | undefined> {
    if (!isSuccessfulEnd(c.status)) return undefined;
    const from = [...GLOBAL_TRANSITIONS.keys()].filter((s) => canTransition(s, c.status));
    if (from.length === 0) return undefined;
    const where = `xid = ? AND branch_count = 0 AND driver_term <= ? AND status IN (${placeholders(from.length)})`;
    const whereParams: SqlValue[] = [c.xid, c.term, ...from];
    return this.endBranchless(where, whereParams, c.xid, c.status, c.at, {
      xid: c.xid,
      status: c.status,
      branches: [],
    });
  }

  /**
   * Deletes the global row matching `where` and records it finished with `status` at `at`:
   * one statement on PostgreSQL, one short transaction on MySQL. `result` when the row was
   * there, undefined (nothing written) when not.
   */
  private async endBranchless(
    where: string,
    whereParams: SqlValue[],
    xid: string,
    status: GlobalStatus,
    at: number,
    result: unknown,
  ): Promise<Outcome<unknown> | undefined> {
    if (this.driver.dialect === 'postgres') {
      const r = await this.driver.query(
        `WITH gone AS (DELETE FROM ${this.t.global} WHERE ${where} RETURNING xid)
         INSERT INTO ${this.t.finished} (xid, status, finished_at, resolved_by)
         SELECT xid, ?::varchar, ?::bigint, NULL FROM gone RETURNING xid`,
        [...whereParams, status, at],
      );
      return r.rows.length === 1 ? ok(result) : undefined;
    }
    return this.mysqlSteps(async (conn) => {
      const gone = await conn.query(`DELETE FROM ${this.t.global} WHERE ${where}`, whereParams);
      if (gone.affected !== 1) throw new NotThisWay();
      await conn.query(
        `INSERT INTO ${this.t.finished} (xid, status, finished_at, resolved_by) VALUES (?, ?, ?, NULL)`,
        [xid, status, at],
      );
      return ok(result);
    });
  }

  /**
   * MySQL has no data-modifying CTE: the steps run in one transaction, rolled back when one
   * declines.
   */
  private async mysqlSteps(
    steps: (conn: { query: SqlDriver['query'] }) => Promise<Outcome<unknown>>,
  ): Promise<Outcome<unknown> | undefined> {
    try {
      return await this.driver.transaction('write', steps);
    } catch (err) {
      if (err instanceof NotThisWay) return undefined;
      throw err;
    }
  }
}

/** The session Begin creates: the machine's own begin(), field for field. */
function newSession(c: BeginCommand): GlobalSession {
  return {
    // A leader's coordinator formatted it (formatXid); the command's shape was checked.
    xid: c.xid as Xid,
    transactionId: c.transactionId,
    applicationId: c.applicationId,
    transactionServiceGroup: c.transactionServiceGroup,
    name: c.name,
    timeoutMs: c.timeoutMs,
    beginTime: c.beginTime,
    deadline: c.beginTime + c.timeoutMs,
    status: GlobalStatus.Begin,
    statusChangedAt: c.beginTime,
    branches: [],
    retry: { attempts: 0, nextRetryAt: null, retryDeadline: null, stopped: false },
    driverTerm: c.term ?? 0,
  };
}

function ok<T>(value: T): Outcome<T> {
  return { ok: true, value };
}
