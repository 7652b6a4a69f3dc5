/**
 * PostgreSQL: the hot one-statement forms of many transactions in one statement. What
 * Raft mode gets from one entry per event-loop turn, db mode gets here: the Begins of one
 * turn are one INSERT over `unnest` of column arrays, the one-phase commits one DELETE …
 * RETURNING into the finished INSERT, and both kinds of one turn travel in one statement
 * (their CTEs side by side). One round trip, one parse/bind/execute and one database
 * commit (one WAL flush) per batch instead of per transaction.
 *
 * Each batched statement keeps the rules of its one-command form (fast-path.ts,
 * fast-path-pg.ts) per row; a row the statement does not return was not written, and its
 * command goes on to the one-command form and then the general path, which decide it
 * alone. A statement that fails (a duplicate key, a deadlock) fails every command of its
 * batch, each of which then goes the general way, as a one-command form's failure does.
 * Two commands of one batch never share a requestId or an xid: the second waits for the
 * next batch.
 */
import type { BeginCommand, CommitGlobalCommand } from '../../coordinator/commands.ts';
import { BranchType, GlobalStatus } from '../../coordinator/types.ts';
import { DB_BATCH_MAX_COMMANDS, DB_BATCH_MAX_IN_FLIGHT } from './limits.ts';
import { AssertionFailure } from '../../shared/errors.ts';
import { GLOBAL_COLUMNS, dueAtOf } from './rows.ts';
import type { SqlDriver, SqlValue, TableNames } from './sql.ts';
import type { GlobalSession } from '../../coordinator/types.ts';

interface Pending<I, R> {
  item: I;
  key: string;
  resolve(result: R): void;
  reject(err: unknown): void;
}

/**
 * Collects the items added during one event-loop turn (at most `max`, no two with one key)
 * and runs them together; `run` answers one result per item, in order.
 *
 * At most `maxInFlight` batches run at once. While that many are in flight, the items of
 * the following turns keep gathering into the next batch, which starts when one of them
 * returns: under load, batches grow instead of statements queueing for connections (each
 * statement is a database commit, which costs the database far more than a row does);
 * with a free slot, a turn's batch starts at the end of its turn, as before.
 */
export class TurnBatcher<I, R> {
  private queue: Pending<I, R>[] = [];
  private keys = new Set<string>();
  private scheduled = false;
  /** Full batches (or cut by a repeated key) waiting for a free slot, oldest first. */
  private readonly sealed: Pending<I, R>[][] = [];
  private inFlight = 0;
  /** Statements run and commands they carried (metrics, tests). */
  readonly stats = { batches: 0, commands: 0 };

  constructor(
    private readonly run: (items: I[]) => Promise<R[]>,
    private readonly keyOf: (item: I) => string,
    private readonly max: number = DB_BATCH_MAX_COMMANDS,
    private readonly maxInFlight: number = DB_BATCH_MAX_IN_FLIGHT,
  ) {}

  add(item: I): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      const key = this.keyOf(item);
      if (this.keys.has(key) || this.queue.length >= this.max) this.seal();
      this.queue.push({ item, key, resolve, reject });
      this.keys.add(key);
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          if (this.inFlight < this.maxInFlight) this.seal();
        });
      }
    });
  }

  /** Closes the gathering batch and starts what a free slot can take. */
  private seal(): void {
    if (this.queue.length > 0) {
      this.sealed.push(this.queue);
      this.queue = [];
      this.keys = new Set();
    }
    this.pump();
  }

  private pump(): void {
    while (this.inFlight < this.maxInFlight) {
      const batch = this.sealed.shift();
      if (!batch) return;
      this.start(batch);
    }
  }

  private start(batch: Pending<I, R>[]): void {
    this.inFlight += 1;
    this.stats.batches += 1;
    this.stats.commands += batch.length;
    let run: Promise<R[]>;
    try {
      run = this.run(batch.map((p) => p.item));
    } catch (err) {
      run = Promise.reject(err);
    }
    run
      .then(
        (results) => batch.forEach((p, i) => p.resolve(results[i]!)),
        (err: unknown) => batch.forEach((p) => p.reject(err)),
      )
      .finally(() => {
        this.inFlight -= 1;
        // What gathered while every slot was busy goes now, whatever turn it is.
        if (this.sealed.length === 0 && !this.scheduled) this.seal();
        else this.pump();
      });
  }
}

/** PostgreSQL types of global_table's columns, for the arrays a batch binds. */
export const PG_GLOBAL_TYPES: Record<(typeof GLOBAL_COLUMNS)[number], string> = {
  xid: 'varchar',
  transaction_id: 'varchar',
  application_id: 'varchar',
  transaction_service_group: 'varchar',
  transaction_name: 'varchar',
  timeout_ms: 'bigint',
  begin_time: 'bigint',
  deadline: 'bigint',
  status: 'varchar',
  status_changed_at: 'bigint',
  retry_attempts: 'integer',
  next_retry_at: 'bigint',
  retry_deadline: 'bigint',
  retry_stopped: 'boolean',
  driver_term: 'bigint',
  due_at: 'bigint',
  branch_count: 'integer',
};

/** The columns a batched Begin binds, one array each (in this order, then request_id). */
const BEGIN_BOUND_COLUMNS = [
  'xid',
  'transaction_id',
  'application_id',
  'transaction_service_group',
  'transaction_name',
  'timeout_ms',
  'begin_time',
  'driver_term',
] as const satisfies readonly (typeof GLOBAL_COLUMNS)[number][];

/**
 * Every global_table cell of a new session (newSession in fast-path.ts, dueAtOf in rows.ts):
 * the bound columns and `deadline` from the row of `v`, the rest the same for every Begin.
 */
const BEGIN_ROW_SQL: Record<(typeof GLOBAL_COLUMNS)[number], string> = {
  xid: 'xid',
  transaction_id: 'transaction_id',
  application_id: 'application_id',
  transaction_service_group: 'transaction_service_group',
  transaction_name: 'transaction_name',
  timeout_ms: 'timeout_ms',
  begin_time: 'begin_time',
  deadline: 'deadline',
  status: `'${GlobalStatus.Begin}'`,
  status_changed_at: 'begin_time',
  retry_attempts: '0',
  next_retry_at: 'NULL::bigint',
  retry_deadline: 'NULL::bigint',
  retry_stopped: 'FALSE',
  driver_term: 'driver_term',
  // dueAtOf() of a session in Begin: its deadline.
  due_at: 'deadline',
  branch_count: '0',
};

/** True when `s` is what newSession() makes: the row BEGIN_ROW_SQL writes. */
function isFreshBeginSession(s: GlobalSession): boolean {
  return (
    s.status === GlobalStatus.Begin &&
    s.statusChangedAt === s.beginTime &&
    s.deadline === s.beginTime + s.timeoutMs &&
    s.branches.length === 0 &&
    s.retry.attempts === 0 &&
    s.retry.nextRetryAt === null &&
    s.retry.retryDeadline === null &&
    !s.retry.stopped &&
    // A session in Begin is due at its deadline whatever the hand-off time (0 here).
    dueAtOf(s, 0) === s.deadline
  );
}

/** How a batched commit decided: one phase (ended Committed), async (AT), or not at all. */
export type CommitHow = 'onePhase' | 'async' | null;

/** A Begin ready for the batch: its new session (checked by the caller) and its answer. */
export interface BeginItem {
  command: BeginCommand;
  session: GlobalSession;
  result: { xid: string; deadline: number };
}

/** One command of a turn's batch: a Begin or a commit. */
type BatchItem =
  { begin: BeginItem; commit?: never } | { commit: CommitGlobalCommand; begin?: never };
/** A Begin's answer (written or not) or a commit's. */
type BatchResult = boolean | CommitHow;

export class PgBatches {
  /** The Begins and commits of one turn: one statement (or two batchers' worth before). */
  readonly turn: TurnBatcher<BatchItem, BatchResult>;
  private readonly beginSql: string;
  private readonly commitSql: string;
  private readonly bothSql: string;

  constructor(
    private readonly driver: SqlDriver,
    t: TableNames,
    /** The decider's hand-off time (dueAtOf): in the statement's text, an integer checked here. */
    handOffMs: number,
  ) {
    if (!Number.isSafeInteger(handOffMs) || handOffMs < 0)
      throw new AssertionFailure(
        `the hand-off time must be a non-negative integer of ms, not ${handOffMs}`,
      );
    const cols = GLOBAL_COLUMNS.join(', ');
    const bound = BEGIN_BOUND_COLUMNS.map((c) => `?::${PG_GLOBAL_TYPES[c]}[]`).join(', ');
    // A remembered requestId or a finished xid inserts nothing (the one-command form and
    // then the general path answer); a requestId-less Begin needs no dedup row. Only what
    // differs between Begins is bound; the rest of the row is what newSession() makes of
    // every Begin (BEGIN_ROW_SQL), and the dedup row's result its JSON ({xid, deadline}).
    const beginCtes = `bv AS (
        SELECT *, begin_time + timeout_ms AS deadline
          FROM unnest(${bound}, ?::varchar[]) AS v(${BEGIN_BOUND_COLUMNS.join(', ')}, request_id)),
      bok AS (SELECT * FROM bv WHERE NOT EXISTS (SELECT 1 FROM ${t.finished} f WHERE f.xid = bv.xid)),
      bd AS (INSERT INTO ${t.dedup} (kind, request_id, result)
        SELECT 'Begin', request_id, json_build_object('xid', xid, 'deadline', deadline)::text
          FROM bok WHERE request_id IS NOT NULL
        ON CONFLICT (kind, request_id) DO NOTHING RETURNING request_id),
      bins AS (INSERT INTO ${t.global} (${cols})
        SELECT ${GLOBAL_COLUMNS.map((c) => BEGIN_ROW_SQL[c]).join(', ')} FROM bok
         WHERE bok.request_id IS NULL OR bok.request_id IN (SELECT request_id FROM bd)
        RETURNING xid)`;
    // Per row: branchless, it ends Committed in one phase; with only AT branches it becomes
    // AsyncCommitting and frees their rows (the machine's releaseAtLocks). The two exclude
    // each other on branch_count, which every RegisterBranch and RemoveBranch rewrites:
    // the branch count read in the statement's snapshot must still match it (see
    // fast-path-pg.ts on why).
    const base = `g.xid = v.xid AND g.status = ? AND g.driver_term <= v.term AND g.deadline > v.at
          AND g.retry_stopped = FALSE AND g.next_retry_at IS NULL`;
    const commitCtes = `v AS (
        SELECT * FROM unnest(?::varchar[], ?::bigint[], ?::bigint[]) AS v(xid, term, at)),
      gone AS (DELETE FROM ${t.global} g USING v WHERE ${base} AND g.branch_count = 0
        RETURNING g.xid, v.at),
      f AS (INSERT INTO ${t.finished} (xid, status, finished_at, resolved_by)
        SELECT xid, ?::varchar, at, NULL FROM gone RETURNING xid),
      a AS (UPDATE ${t.global} g SET status = ?, status_changed_at = v.at,
          due_at = v.at + (1 - MOD(GREATEST(g.driver_term, v.term), 2)) * ${handOffMs},
          driver_term = GREATEST(g.driver_term, v.term)
        FROM v WHERE ${base} AND g.branch_count > 0
          AND g.branch_count = (SELECT COUNT(*) FROM ${t.branch} b
                                 WHERE b.xid = v.xid AND b.branch_type = ?)
        RETURNING g.xid),
      b AS (UPDATE ${t.branch} SET locks_held = FALSE
        WHERE xid IN (SELECT xid FROM a) AND locks_held),
      l AS (DELETE FROM ${t.lock} WHERE xid IN (SELECT xid FROM a))`;
    const begun = `SELECT xid, 'begun' AS how FROM bins`;
    const decided = `SELECT xid, 'onePhase' AS how FROM f UNION ALL SELECT xid, 'async' AS how FROM a`;
    this.beginSql = `WITH ${beginCtes} ${begun}`;
    this.commitSql = `WITH ${commitCtes} ${decided}`;
    // Both kinds in one statement (one snapshot): a commit of an xid begun by the same
    // statement does not see it, decides nothing and goes the general way, as a commit
    // that arrived just before its Begin would.
    this.bothSql = `WITH ${beginCtes}, ${commitCtes} ${begun} UNION ALL ${decided}`;
    this.turn = new TurnBatcher(
      (items) => this.runTurn(items),
      // A requestId is what two Begins of one batch must not share (and xids never repeat);
      // two commits must not share an xid.
      (item) =>
        item.begin
          ? item.begin.command.requestId === null
            ? `x\n${item.begin.command.xid}`
            : `r\n${item.begin.command.requestId}`
          : `c\n${item.commit.xid}`,
    );
  }

  /** A Begin through the turn's statement: true when it was written. */
  async begin(item: BeginItem): Promise<boolean> {
    return (await this.turn.add({ begin: item })) === true;
  }

  /** A commit through the turn's statement: how it was decided, null if not at all. */
  async commit(c: CommitGlobalCommand): Promise<CommitHow> {
    const how = await this.turn.add({ commit: c });
    return how === true || how === false ? null : how;
  }

  /** The turn's Begins and commits, by one statement of the shape they need. */
  private async runTurn(items: BatchItem[]): Promise<BatchResult[]> {
    const begins: BeginItem[] = [];
    const commits: CommitGlobalCommand[] = [];
    for (const item of items) {
      if (item.begin) begins.push(item.begin);
      else commits.push(item.commit);
    }
    const params = [
      ...(begins.length > 0 ? beginParams(begins) : []),
      ...(commits.length > 0 ? commitParams(commits) : []),
    ];
    const sql =
      commits.length === 0 ? this.beginSql : begins.length === 0 ? this.commitSql : this.bothSql;
    const r = await this.driver.query(sql, params);
    const how = new Map(r.rows.map((row) => [String(row.xid), String(row.how)]));
    return items.map((item) => {
      if (item.begin) return how.get(item.begin.command.xid) === 'begun';
      const h = how.get(item.commit.xid);
      return h === 'onePhase' || h === 'async' ? h : null;
    });
  }
}

/** The batched Begins' parameters: the bound columns' arrays, then the requestIds. */
function beginParams(items: BeginItem[]): SqlValue[] {
  const n = items.length;
  const xids = new Array<string>(n);
  const transactionIds = new Array<string>(n);
  const applicationIds = new Array<string>(n);
  const groups = new Array<string>(n);
  const names = new Array<string>(n);
  const timeouts = new Array<number>(n);
  const beginTimes = new Array<number>(n);
  const terms = new Array<number>(n);
  const requestIds = new Array<string | null>(n);
  for (let i = 0; i < n; i++) {
    const { command, session, result } = items[i]!;
    // The statement makes the rest of the row, and the result, from these: they must be
    // what this node would have written (an assertion, not a check of input).
    if (!isFreshBeginSession(session) || result.deadline !== session.deadline)
      throw new AssertionFailure(`the batched Begin of ${session.xid} is not a fresh session`);
    xids[i] = session.xid;
    transactionIds[i] = session.transactionId;
    applicationIds[i] = session.applicationId;
    groups[i] = session.transactionServiceGroup;
    names[i] = session.name;
    timeouts[i] = session.timeoutMs;
    beginTimes[i] = session.beginTime;
    terms[i] = session.driverTerm;
    requestIds[i] = command.requestId;
  }
  return [
    xids,
    transactionIds,
    applicationIds,
    groups,
    names,
    timeouts,
    beginTimes,
    terms,
    requestIds,
  ];
}

/** The batched commits' parameters, in the order of the commit CTEs' placeholders. */
function commitParams(items: CommitGlobalCommand[]): SqlValue[] {
  return [
    items.map((c) => c.xid),
    items.map((c) => c.term),
    items.map((c) => c.at),
    GlobalStatus.Begin,
    GlobalStatus.Committed,
    GlobalStatus.AsyncCommitting,
    GlobalStatus.Begin,
    BranchType.AT,
  ];
}
