/**
 * The db session store: Seata's "db mode" for Concord. Any number of stateless nodes share
 * one PostgreSQL or MySQL/MariaDB database; every node serves every TC request, and one
 * node at a time — the holder of the driver lease — runs the phase-two driver.
 *
 *   submit(cmd)  one write transaction: lock the xid's global row FOR UPDATE, restore the
 *                coordinator's state machine with what the command can touch, apply the
 *                command with it, write back the difference (apply.ts). Races the
 *                database detects (a lock row or request id inserted concurrently, a
 *                deadlock) retry the whole transaction, which re-reads and re-decides.
 *   read(fn)     fn over a view answered from SQL in one REPEATABLE READ transaction
 *                (read-view.ts); liveXids() is a bounded page, most urgent first.
 *   lease        lease.ts; its epoch is the coordinator's term.
 *
 * A database that stops answering turns every call into a DbUnavailableError (retryable)
 * at once, while a probe reconnects with exponential backoff; nothing crashes the node.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AssertionFailure,
  ConcordError,
  ConfigError,
  NotLeaderError,
  StoppedError,
  TimeoutError,
} from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import type { Command, Outcome, ResultOf, TxCommand } from '../../coordinator/commands.ts';
import {
  MAX_DEDUP_ENTRIES,
  MAX_LIVE_SESSIONS,
  MAX_LIVE_SESSIONS_CEILING,
  MAX_RECENTLY_FINISHED,
  RECENTLY_FINISHED_TTL_MS,
} from '../../coordinator/limits.ts';
import type { LeadershipEvent, SessionStore } from '../../coordinator/ports.ts';
import type { GlobalSession } from '../../coordinator/types.ts';
import {
  CoordinatorStateMachine,
  type CoordinatorStateView,
} from '../../coordinator/state-machine.ts';
import { SNAPSHOT_FORMAT_VERSION, encodeSnapshot } from '../../coordinator/snapshot-codec.ts';
import { applyCommand, refuseMalformed } from './apply.ts';
import { FastPaths, type FastPathStats } from './fast-path.ts';
import { beginTermOf, epochOfTerm, liftsPastFence, termOfEpoch } from './terms.ts';
import { checkedHandOffMs, handOffAtOf } from './rows.ts';
import { LiveSessionBound } from './live-bound.ts';
import {
  DbContentionError,
  DbCommitUnknownError,
  DbOverloadedError,
  DbQueryError,
  DbUnavailableError,
} from './errors.ts';
import {
  DEFAULT_LEASE_OPTIONS,
  DriverLease,
  validateLeaseOptions,
  type LeaseHolder,
  type LeaseOptions,
} from './lease.ts';
import {
  DB_HOUSEKEEPING_INTERVAL_MS,
  DB_LEASE_CONNECTIONS,
  DB_MAX_PENDING_OPERATIONS,
  DB_MAX_READ_PASSES,
  DB_MAX_SUBMIT_ATTEMPTS,
  DB_DECIDER_HANDOFF_MS,
  DB_MAX_TABLE_PREFIX_CHARS,
  DB_PLAN_CHECK_INTERVAL_MS,
  DB_POOL_MAX_CONNECTIONS,
  DB_PRUNE_BATCH_ROWS,
  DB_RECONNECT_BASE_MS,
  DB_RECONNECT_MAX_MS,
  DB_STARTUP_TIMEOUT_MS,
  DB_SUBMIT_RETRY_BASE_MS,
} from './limits.ts';
import { MysqlDriver } from './mysql-driver.ts';
import { PgDriver } from './pg-driver.ts';
import { PgPlanUpkeep } from './plan-upkeep.ts';
import { CachedView, ReadCache } from './read-view.ts';
import { prepareSchema } from './schema.ts';
import { SessionSql } from './session-sql.ts';
import {
  CommitOutcomeUnknown,
  intOf,
  tableNames,
  textOf,
  type DialectName,
  type SqlDriver,
  type TableNames,
} from './sql.ts';

export { DB_SCHEMA_VERSION } from './schema.ts';
export const DEFAULT_TABLE_PREFIX = 'concord_';
const TABLE_PREFIX_PATTERN = /^[a-z][a-z0-9_]*$/;

export interface DbSessionStoreOptions {
  /** `postgres://…`, `postgresql://…`, `mysql://…` or `mariadb://…`. */
  url: string;
  /** This node's id (names it in the lease row and in logs). */
  nodeId: string;
  /**
   * This node's client-facing TC address (host:port), kept in the lease row while it holds
   * the lease, so other nodes can send RM channels (phase-two callbacks) to the holder.
   */
  address?: string;
  logger: Logger;
  /**
   * Prefix of every table name: several clusters (or test files) can share one database. Default
   * `concord_`.
   */
  tablePrefix?: string;
  /** Default DB_POOL_MAX_CONNECTIONS (16). */
  maxConnections?: number;
  /**
   * The driver lease (default: on, with DEFAULT_LEASE_OPTIONS). `false`: this store never
   * takes the lease by itself; a test sets its leadership with setLeadership().
   */
  lease?: Partial<LeaseOptions> | false;
  /**
   * How often the lease holder prunes finished and dedup rows, ms. Default
   * DB_HOUSEKEEPING_INTERVAL_MS.
   */
  housekeepingIntervalMs?: number;
  /**
   * Live global transactions at most (a Begin beyond it is refused, CAPACITY). Default
   * MAX_LIVE_SESSIONS, at most MAX_LIVE_SESSIONS_CEILING.
   */
  maxLiveSessions?: number;
  /** Keep retrying an unreachable database at open() for this long, ms. Default 0: fail at once. */
  startupTimeoutMs?: number;
  /**
   * How long the lease holder leaves a transaction decided on another node to that node, ms
   * (terms.ts). Default DB_DECIDER_HANDOFF_MS (5 s), within MIN_/MAX_DB_DECIDER_HANDOFF_MS.
   * Written into the due_at of the sessions this node decides: give every node the same.
   */
  deciderHandOffMs?: number;
}

export type DbApplyListener = (command: Command, outcome: Outcome<unknown>) => void;

/** The dialect of a connection URL, or a ConfigError. */
export function dialectOf(url: string): DialectName {
  if (/^postgres(ql)?:\/\//i.test(url)) return 'postgres';
  if (/^(mysql|mariadb):\/\//i.test(url)) return 'mysql';
  throw new ConfigError(
    'store.db.url',
    'must start with postgres://, postgresql://, mysql:// or mariadb://',
  );
}

/** The URL without its password, for logs. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z]+:\/\/[^:/@]*):[^@]*@/i, '$1:***@');
}

/** The live-session bound within 1..MAX_LIVE_SESSIONS_CEILING, or a ConfigError. */
function checkedMaxLiveSessions(value: number): number {
  if (!Number.isSafeInteger(value) || value < 1 || value > MAX_LIVE_SESSIONS_CEILING)
    throw new ConfigError(
      'maxLiveSessions',
      `must be an integer in 1..${MAX_LIVE_SESSIONS_CEILING}`,
    );
  return value;
}

export class DbSessionStore implements SessionStore {
  /**
   * Every node commits commands: the lease holder's driver re-checks what it tracks on each sweep.
   */
  readonly concurrentWriters = true;
  /**
   * The driver folds the last branch's result into FinishGlobal: one statement on
   * PostgreSQL (fast-path-pg.ts), one general-path transaction on MySQL, where the result
   * and the end were two of either.
   */
  readonly foldsLastBranch = true;
  readonly dialect: DialectName;
  readonly tables: TableNames;
  readonly nodeId: string;
  private readonly address: string | null;
  private readonly driver: SqlDriver;
  /**
   * The lease's own connection: a pool busy with submits (or waiting on row locks) must
   * never delay a renewal, or the holder would step down for nothing.
   */
  private readonly leaseDriver: SqlDriver | null;
  private readonly sql: SessionSql;
  private readonly fast: FastPaths;
  /** The decider's hand-off time, ms (deciderHandOffMs). */
  readonly handOffMs: number;
  private readonly liveBound: LiveSessionBound;
  private readonly maxLiveSessions: number;
  private readonly log: Logger;
  private readonly lease: DriverLease | null;
  private readonly leadershipListeners = new Set<(event: LeadershipEvent) => void>();
  private readonly applyListeners = new Set<DbApplyListener>();
  private readonly housekeepingIntervalMs: number;
  private housekeepingTimer: ReturnType<typeof setInterval> | null = null;
  private housekeeping: Promise<void> | null = null;
  /** PostgreSQL: the holder's ANALYZE of tables that grew (plan-upkeep.ts); null on MySQL. */
  private readonly planUpkeep: PgPlanUpkeep | null;
  private planTimer: ReturnType<typeof setInterval> | null = null;
  private planRun: Promise<void> | null = null;
  private pending = 0;
  private closed = false;
  /** Counters for metrics and tests. */
  readonly stats = { submits: 0, reads: 0, raceRetries: 0, unavailable: 0, lifted: 0 };
  /** Manual leadership (lease disabled). */
  private manual = { holding: false, term: 0 };
  /** Set while the database is unreachable: calls fail fast, a probe reconnects. */
  private outage: {
    since: number;
    attempts: number;
    lastError: unknown;
    timer: ReturnType<typeof setTimeout> | null;
  } | null = null;

  private constructor(options: DbSessionStoreOptions, leaseOptions: LeaseOptions | null) {
    this.dialect = dialectOf(options.url);
    this.nodeId = options.nodeId;
    this.address = options.address ?? null;
    const prefix = options.tablePrefix ?? DEFAULT_TABLE_PREFIX;
    if (!TABLE_PREFIX_PATTERN.test(prefix) || prefix.length > DB_MAX_TABLE_PREFIX_CHARS) {
      throw new ConfigError(
        'tablePrefix',
        `must be 1..${DB_MAX_TABLE_PREFIX_CHARS} of a-z, 0-9 and _, starting with a letter (it becomes part of SQL identifiers)`,
      );
    }
    this.tables = tableNames(prefix);
    this.handOffMs = checkedHandOffMs(options.deciderHandOffMs ?? DB_DECIDER_HANDOFF_MS);
    this.sql = new SessionSql(this.tables, this.dialect, this.handOffMs);
    this.log = options.logger.child({
      component: 'db-store',
      dialect: this.dialect,
      node: options.nodeId,
    });
    const maxConnections = options.maxConnections ?? DB_POOL_MAX_CONNECTIONS;
    if (!Number.isSafeInteger(maxConnections) || maxConnections < 2)
      throw new ConfigError('maxConnections', 'must be an integer of at least 2');
    const makeDriver = (connections: number): SqlDriver =>
      this.dialect === 'postgres'
        ? new PgDriver({ url: options.url, maxConnections: connections, logger: this.log })
        : new MysqlDriver({
            url: options.url.replace(/^mariadb:/i, 'mysql:'),
            maxConnections: connections,
            logger: this.log,
          });
    this.driver = makeDriver(maxConnections);
    this.fast = new FastPaths(this.driver, this.tables, this.handOffMs);
    this.planUpkeep =
      this.dialect === 'postgres' ? new PgPlanUpkeep(this.driver, this.tables) : null;
    this.maxLiveSessions = checkedMaxLiveSessions(options.maxLiveSessions ?? MAX_LIVE_SESSIONS);
    const cap = this.maxLiveSessions;
    this.liveBound = new LiveSessionBound(
      () => this.sql.countLive(this.driver, cap),
      Date.now,
      cap,
    );
    this.leaseDriver = leaseOptions === null ? null : makeDriver(DB_LEASE_CONNECTIONS);
    this.housekeepingIntervalMs = options.housekeepingIntervalMs ?? DB_HOUSEKEEPING_INTERVAL_MS;
    this.lease =
      leaseOptions === null
        ? null
        : new DriverLease(
            this.leaseDriver!,
            this.tables,
            options.nodeId,
            options.address ?? '',
            leaseOptions,
            {
              onChange: (holding, epoch) =>
                this.emit({ isLeader: holding, term: termOfEpoch(epoch, holding) }),
              onError: (err) => {
                if (this.driver.classify(err) === 'unavailable') this.markUnavailable(err);
              },
            },
            this.log,
          );
  }

  /**
   * Connects, creates the tables if they are missing (idempotent, safe with concurrent
   * nodes), checks the schema version, and runs the first lease round. Rejects with
   * DbUnavailableError when the database stays unreachable for startupTimeoutMs.
   */
  static async open(options: DbSessionStoreOptions): Promise<DbSessionStore> {
    const leaseOptions =
      options.lease === false
        ? null
        : validateLeaseOptions({ ...DEFAULT_LEASE_OPTIONS, ...options.lease });
    const store = new DbSessionStore(options, leaseOptions);
    const startupTimeoutMs = options.startupTimeoutMs ?? DB_STARTUP_TIMEOUT_MS;
    const giveUpAt = Date.now() + startupTimeoutMs;
    store.log.info(
      { url: redactUrl(options.url), tables: store.tables.global },
      'opening db session store',
    );
    for (let attempt = 1; ; attempt++) {
      try {
        await store.ensureSchema();
        break;
      } catch (err) {
        const unavailable =
          !(err instanceof ConcordError) &&
          ['unavailable', 'timeout'].includes(store.driver.classify(err));
        if (unavailable && Date.now() < giveUpAt) {
          const wait = Math.min(DB_RECONNECT_BASE_MS * 2 ** (attempt - 1), DB_RECONNECT_MAX_MS);
          store.log.warn({ err, attempt, waitMs: wait }, 'database unreachable at start; retrying');
          await sleep(wait);
          continue;
        }
        store.closed = true;
        store.driver.destroy();
        store.leaseDriver?.destroy();
        if (err instanceof ConcordError) throw err;
        throw unavailable
          ? new DbUnavailableError(
              `the ${store.dialect} database at ${redactUrl(options.url)} is unreachable: ${(err as Error).message}`,
              { cause: err },
            )
          : new DbQueryError(
              `could not prepare the ${store.dialect} tables: ${(err as Error).message}`,
              store.driver.errorCode(err),
              { cause: err },
            );
      }
    }
    await store.lease?.start();
    store.housekeepingTimer = setInterval(
      () => void store.runHousekeeping(),
      store.housekeepingIntervalMs,
    );
    store.housekeepingTimer.unref?.();
    if (store.planUpkeep) {
      store.planTimer = setInterval(() => void store.runPlanUpkeep(), DB_PLAN_CHECK_INTERVAL_MS);
      store.planTimer.unref?.();
    }
    store.log.info(
      {
        holder: store.lease?.holderId ?? null,
        epoch: store.epoch(),
        drives: store.drivesPhaseTwo(),
      },
      'db session store open',
    );
    return store;
  }

  // ------------------------------------------------------------------ SessionStore

  submit<C extends Command>(command: C): Promise<Outcome<ResultOf<C>>> {
    // The lease holder's housekeeping prunes finished and dedup rows by itself.
    if (command.kind === 'Prune')
      return Promise.resolve({
        ok: false,
        rejection: { code: 'BAD_REQUEST', message: 'db mode prunes by its own housekeeping' },
      });
    if (!this.lease) return this.submitTx(command) as Promise<Outcome<ResultOf<C>>>;
    return this.submitLeased(command) as Promise<Outcome<ResultOf<C>>>;
  }

  /**
   * With the lease, terms are made from its epoch (terms.ts): a Begin is stored at the epoch's
   * decider term, so a decision on any node of the epoch passes its fence; a TM's or an
   * operator's command that a holder's driver term refused is submitted once more at that term
   * (liftsPastFence: none of them makes this node a driver).
   */
  private async submitLeased<C extends TxCommand>(command: C): Promise<Outcome<ResultOf<C>>> {
    const c: C =
      command.kind === 'Begin' && command.term !== undefined
        ? { ...command, term: beginTermOf(command.term) }
        : command;
    const outcome = await this.submitTx(c);
    if (outcome.ok || outcome.rejection.code !== 'STALE_TERM' || !liftsPastFence(c)) return outcome;
    const term = (c as { term?: number }).term ?? 0;
    const fencedBy = outcome.rejection.driverTerm;
    if (fencedBy <= term) return outcome;
    this.stats.lifted += 1;
    return this.submitTx({ ...c, term: fencedBy });
  }

  private submitTx<C extends TxCommand>(command: C): Promise<Outcome<ResultOf<C>>> {
    return this.operation(async () => {
      this.stats.submits += 1;
      const fast = await this.tryFastPath(command);
      if (fast) {
        for (const listener of this.applyListeners) listener(command, fast);
        return fast as Outcome<ResultOf<C>>;
      }
      for (let attempt = 1; ; attempt++) {
        try {
          const outcome = (await this.driver.transaction('write', (conn) =>
            applyCommand(conn, this.sql, command, this.maxLiveSessions),
          )) as Outcome<ResultOf<C>>;
          // A fence names the term that fenced us: a node that is not the holder learns its
          // epoch here.
          if (!outcome.ok && outcome.rejection.code === 'STALE_TERM')
            this.lease?.observe(epochOfTerm(outcome.rejection.driverTerm));
          for (const listener of this.applyListeners) listener(command, outcome);
          return outcome;
        } catch (err) {
          const kind = isOwnError(err) ? 'own' : this.driver.classify(err);
          if (kind !== 'duplicate' && kind !== 'conflict') throw err;
          if (attempt >= DB_MAX_SUBMIT_ATTEMPTS) {
            throw new DbContentionError(
              `${command.kind} of ${command.xid} lost ${attempt} races in the database; try again`,
              { cause: err },
            );
          }
          this.stats.raceRetries += 1;
          this.log.debug(
            { kind: command.kind, xid: command.xid, attempt, race: kind },
            'submit lost a race in the database; retrying',
          );
          await sleep(DB_SUBMIT_RETRY_BASE_MS * attempt * (0.5 + Math.random()));
        }
      }
    });
  }

  /**
   * The command's one-statement form (fast-path.ts), or undefined: then nothing was written
   * and the general path decides. A race the database caught (a duplicate key, a deadlock)
   * also goes the general way, which re-reads and retries.
   */
  private async tryFastPath(command: TxCommand): Promise<Outcome<unknown> | undefined> {
    if (refuseMalformed(command)) return undefined;
    try {
      const mayBegin = command.kind === 'Begin' && (await this.liveBound.mayBegin());
      const outcome = await this.fast.tryApply(command, mayBegin);
      if (outcome && command.kind === 'Begin') this.liveBound.admitted();
      return outcome;
    } catch (err) {
      const kind = isOwnError(err) ? 'own' : this.driver.classify(err);
      if (kind !== 'duplicate' && kind !== 'conflict') throw err;
      // A lock row or request id another transaction holds: the general path re-reads.
      this.stats.raceRetries += 1;
      return undefined;
    }
  }

  read<T>(fn: (state: CoordinatorStateView) => T): Promise<T> {
    return this.operation(async () => {
      this.stats.reads += 1;
      const quick = await this.readByOneStatement(fn);
      return quick ? quick.result : this.readInSnapshot(fn);
    });
  }

  /**
   * The hot reads (a commit's status check, getStatus) ask for one xid's session and
   * finished record only: those come by one statement (one snapshot), outside any
   * transaction. Undefined when fn asks for more: then the snapshot transaction answers.
   */
  private async readByOneStatement<T>(
    fn: (state: CoordinatorStateView) => T,
  ): Promise<{ result: T } | undefined> {
    const cache = new ReadCache();
    for (let pass = 1; pass <= 2; pass++) {
      const { view, answer } = readOnce(fn, cache);
      if (answer) return answer;
      const xid = view.needsOneXidOnly();
      if (pass === 2 || xid === null) return undefined;
      const found = await this.sql.loadOne(this.driver, xid);
      cache.sessions.set(xid, found.session);
      cache.finished.set(xid, found.session ? null : found.finished);
    }
    return undefined;
  }

  private readInSnapshot<T>(fn: (state: CoordinatorStateView) => T): Promise<T> {
    return this.driver.transaction('snapshot', async (conn) => {
      const cache = new ReadCache();
      for (let pass = 1; pass <= DB_MAX_READ_PASSES; pass++) {
        const { view, answer } = readOnce(fn, cache);
        if (answer) return answer.result;
        await cache.fetch(conn, this.sql, view.needs);
      }
      throw new AssertionFailure(`a read did not settle in ${DB_MAX_READ_PASSES} passes`);
    });
  }

  /** Live xids due at `now` (due_at ≤ now), most urgent first: one indexed statement. */
  dueXids(now: number, limit: number): Promise<string[]> {
    return this.operation(async () => {
      this.stats.reads += 1;
      return this.sql.dueXids(this.driver, now, limit);
    });
  }

  /**
   * A node that decides a transaction runs its first pass (terms.ts); the holder takes it over
   * once this has passed with no retry scheduled (dueAtOf).
   */
  handOffAt(session: Pick<GlobalSession, 'statusChangedAt' | 'driverTerm'>): number {
    return handOffAtOf(session, this.handOffMs);
  }

  /** Every node serves TC requests in db mode: there is no follower to redirect to. */
  isLeader(): boolean {
    return !this.closed;
  }

  /** True while this node holds the driver lease. */
  drivesPhaseTwo(): boolean {
    if (this.closed) return false;
    return this.lease ? this.lease.isHolder : this.manual.holding;
  }

  /**
   * The coordinator's term (termOfEpoch): 2·epoch + 1 while this node holds the lease, 2·epoch
   * otherwise (the epoch: its own while it holds the lease, else the highest it has seen). With
   * the lease disabled, the term a test set.
   */
  term(): number {
    if (!this.lease) return this.manual.term;
    return termOfEpoch(this.lease.epoch, this.lease.isHolder);
  }

  /** The lease epoch this node knows (what the cluster view shows as the term); 0 without one. */
  epoch(): number {
    return this.lease ? this.lease.epoch : this.manual.term;
  }

  onLeadershipChange(listener: (event: LeadershipEvent) => void): () => void {
    this.leadershipListeners.add(listener);
    return () => this.leadershipListeners.delete(listener);
  }

  // ------------------------------------------------------------------ for the TC edge

  /** Every node serves TC calls (the TC service's "may I serve" check). */
  hasLeaderRole(): boolean {
    return !this.closed;
  }

  /**
   * The lease holder as of the last lease round (this node while it holds it); null if none is
   * known.
   */
  leaseHolder(): LeaseHolder | null {
    if (!this.lease)
      return this.manual.holding
        ? { nodeId: this.nodeId, address: this.address, epoch: this.manual.term }
        : null;
    return this.lease.holder;
  }

  /**
   * Points at the lease holder: what a node answers when something must go to the node that
   * drives phase two (an RM's callback channel), never for ordinary TC calls.
   */
  notLeaderError(): NotLeaderError {
    return new NotLeaderError(this.leaseHolder()?.nodeId ?? null);
  }

  // ------------------------------------------------------------------ operations

  /**
   * Test hook: sees every command a submit decided (after its transaction committed), with its
   * outcome.
   */
  onApply(listener: DbApplyListener): () => void {
    this.applyListeners.add(listener);
    return () => this.applyListeners.delete(listener);
  }

  /**
   * Test hook (lease disabled): sets whether this node drives phase two, and the term. Terms never
   * go back.
   */
  setLeadership(holding: boolean, term: number = this.manual.term): void {
    if (this.lease)
      throw new AssertionFailure('setLeadership is for a store opened with lease: false');
    if (term < this.manual.term)
      throw new RangeError(`term ${term} is below the current term ${this.manual.term}`);
    this.manual = { holding, term };
    this.emit({ isLeader: holding, term });
  }

  /**
   * Test hook: play a process frozen by a long pause (its lease neither renews nor runs out
   * locally).
   */
  freezeLease(): void {
    this.lease?.freeze();
  }

  /** The holder identity in the lease row (null with the lease disabled). */
  get leaseHolderId(): string | null {
    return this.lease?.holderId ?? null;
  }

  /** How often the one-statement forms were taken or declined (metrics, the differential test). */
  get fastPathStats(): Readonly<FastPathStats> {
    return this.fast.stats;
  }

  /** Statements this node sent to the database (BEGIN and COMMIT included), lease aside. */
  get statements(): number {
    return this.driver.statements;
  }

  /** True while the database is unreachable and calls fail fast. */
  get databaseDown(): boolean {
    return this.outage !== null;
  }

  /**
   * Reads the whole state into a CoordinatorStateMachine (sessions, finished records,
   * dedup entries, in insertion order), for tests, checkers and offline inspection. Also
   * checks that lock_table holds exactly the rows the branches record.
   */
  async exportState(): Promise<CoordinatorStateMachine> {
    return this.operation(() =>
      this.driver.transaction('snapshot', async (conn) => {
        const xids = (await conn.query(`SELECT xid FROM ${this.tables.global}`)).rows.map((r) =>
          textOf(r.xid, 'xid'),
        );
        const sessions = await this.sql.loadSessions(conn, xids);
        const finishedXids = (
          await conn.query(`SELECT xid FROM ${this.tables.finished} ORDER BY seq`)
        ).rows.map((r) => textOf(r.xid, 'xid'));
        const finished = await this.sql.loadFinished(conn, finishedXids);
        const dedupRows = await conn.query(
          `SELECT kind, request_id, result FROM ${this.tables.dedup} ORDER BY seq`,
        );
        const machine = new CoordinatorStateMachine();
        machine.restore(
          encodeSnapshot({
            version: SNAPSHOT_FORMAT_VERSION,
            sessions: [...sessions.values()],
            finished: finishedXids.map((xid) => finished.get(xid)!),
            dedup: dedupRows.rows.map((r) => [
              `${textOf(r.kind, 'kind')}\n${textOf(r.request_id, 'request_id')}`,
              JSON.parse(textOf(r.result, 'result')) as unknown,
            ]),
          }),
        );
        const counts = await conn.query(`SELECT xid, branch_count FROM ${this.tables.global}`);
        for (const r of counts.rows) {
          const xid = textOf(r.xid, 'xid');
          const recorded = intOf(r.branch_count, 'branch_count');
          const held = sessions.get(xid)?.branches.length;
          if (recorded !== held)
            throw new AssertionFailure(
              `global_table says ${xid} has ${recorded} branches; branch_table holds ${held}`,
            );
        }
        const lockRows = await this.sql.countLockRows(conn);
        if (lockRows !== machine.lockedRowCount()) {
          throw new AssertionFailure(
            `lock_table holds ${lockRows} rows; the sessions' branches record ${machine.lockedRowCount()}`,
          );
        }
        const holders = await this.sql.lockHolders(
          conn,
          machine.lockEntries().map((e) => e.row),
        );
        for (const h of holders) {
          if (machine.lockHolder(h.row)?.xid !== h.xid)
            throw new AssertionFailure(
              `lock_table says ${h.row} is held by ${h.xid}; the sessions say ${machine.lockHolder(h.row)?.xid}`,
            );
        }
        return machine;
      }),
    );
  }

  /** Stops the lease (releasing it, so another node takes over at once) and closes the pool. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.housekeepingTimer) clearInterval(this.housekeepingTimer);
    if (this.planTimer) clearInterval(this.planTimer);
    await this.housekeeping?.catch(() => undefined);
    await this.planRun?.catch(() => undefined);
    await this.lease?.stop(true);
    this.closed = true;
    if (this.outage?.timer) clearTimeout(this.outage.timer);
    this.outage = null;
    await this.driver
      .close()
      .catch((err: unknown) => this.log.warn({ err }, 'closing the database pool failed'));
    await this.leaseDriver
      ?.close()
      .catch((err: unknown) => this.log.warn({ err }, 'closing the lease connection failed'));
    this.log.info('db session store closed');
  }

  /**
   * Test hook: a node killed with SIGKILL. Every connection is cut at once (the database
   * rolls back whatever was in flight), the lease is NOT released (it expires), and no
   * listener hears anything.
   */
  abandon(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.housekeepingTimer) clearInterval(this.housekeepingTimer);
    if (this.planTimer) clearInterval(this.planTimer);
    this.leadershipListeners.clear();
    this.lease?.freeze();
    if (this.outage?.timer) clearTimeout(this.outage.timer);
    this.driver.destroy();
    this.leaseDriver?.destroy();
  }

  // ------------------------------------------------------------------ internals

  private async ensureSchema(): Promise<void> {
    const t = this.tables;
    await this.driver.withSchemaLock(`concord_schema_${t.global}`, (conn) =>
      prepareSchema(conn, this.driver, t, this.log),
    );
  }

  /** Admission, outage fail-fast and error mapping around every submit and read. */
  private async operation<T>(run: () => Promise<T>): Promise<T> {
    if (this.closed) throw new StoppedError('the db session store is closed');
    if (this.outage) throw this.unavailableError();
    if (this.pending >= DB_MAX_PENDING_OPERATIONS) {
      throw new DbOverloadedError(
        `${this.pending} database operations are pending on this node, the limit (${DB_MAX_PENDING_OPERATIONS})`,
      );
    }
    this.pending += 1;
    try {
      return await run();
    } catch (err) {
      throw this.mapError(err);
    } finally {
      this.pending -= 1;
    }
  }

  private mapError(err: unknown): unknown {
    if (err instanceof ReadFnError) return err.error;
    if (isOwnError(err)) return err;
    if (this.closed) return new StoppedError('the db session store is closed', { cause: err });
    const kind = this.driver.classify(err);
    switch (kind) {
      case 'unavailable':
        this.markUnavailable(err);
        return err instanceof CommitOutcomeUnknown
          ? new DbCommitUnknownError(
              `the ${this.dialect} connection broke during COMMIT: the command may or may not have been applied`,
              { cause: err },
            )
          : new DbUnavailableError(
              `the ${this.dialect} database is unreachable: ${(err as Error).message}`,
              { cause: err },
            );
      case 'timeout':
        return new TimeoutError(
          `a ${this.dialect} statement or connection timed out: ${(err as Error).message}`,
          { cause: err },
        );
      case 'duplicate':
      case 'conflict':
        return new DbContentionError(
          `the ${this.dialect} database refused a statement in a race: ${(err as Error).message}`,
          { cause: err },
        );
      case 'other':
        this.log.error({ err }, 'unexpected database error');
        return new DbQueryError(
          `the ${this.dialect} database refused a statement: ${(err as Error).message}`,
          this.driver.errorCode(err),
          { cause: err },
        );
    }
  }

  /** The database stopped answering: fail fast from now on, probe with backoff until it answers. */
  private markUnavailable(err: unknown): void {
    if (this.closed || this.outage) return;
    this.stats.unavailable += 1;
    this.outage = { since: Date.now(), attempts: 0, lastError: err, timer: null };
    this.log.error({ err }, 'database unreachable; failing fast and reconnecting with backoff');
    this.scheduleProbe();
  }

  private scheduleProbe(): void {
    const outage = this.outage;
    if (!outage || this.closed) return;
    const wait = Math.min(DB_RECONNECT_BASE_MS * 2 ** outage.attempts, DB_RECONNECT_MAX_MS);
    outage.timer = setTimeout(() => void this.probe(), wait);
    outage.timer.unref?.();
  }

  private async probe(): Promise<void> {
    const outage = this.outage;
    if (!outage || this.closed) return;
    try {
      await this.driver.ping();
    } catch (err) {
      outage.attempts += 1;
      outage.lastError = err;
      this.log.debug({ err, attempts: outage.attempts }, 'database still unreachable');
      this.scheduleProbe();
      return;
    }
    this.outage = null;
    this.log.info(
      { downMs: Date.now() - outage.since, probes: outage.attempts + 1 },
      'database reachable again',
    );
    // Win the lease back (or learn who has it) without waiting for the next round.
    void this.lease?.tick();
  }

  private unavailableError(): DbUnavailableError {
    const outage = this.outage!;
    const wait = Math.min(DB_RECONNECT_BASE_MS * 2 ** outage.attempts, DB_RECONNECT_MAX_MS);
    return new DbUnavailableError(
      `the ${this.dialect} database has been unreachable for ${Date.now() - outage.since} ms (${(outage.lastError as Error)?.message ?? 'unknown error'}); reconnecting, next attempt within ${wait} ms`,
      { cause: outage.lastError },
    );
  }

  private emit(event: LeadershipEvent): void {
    for (const listener of [...this.leadershipListeners]) {
      try {
        listener(event);
      } catch (err) {
        this.log.error({ err }, 'a leadership listener threw');
      }
    }
  }

  /**
   * The holder keeps the finished and dedup tables bounded like the coordinator's own maps:
   * finished records by age (relative to the newest, as the state machine does with command
   * time) and by count; request ids by count. Batched so no statement holds locks for long.
   */
  private runHousekeeping(): Promise<void> {
    if (this.closed || this.outage || !this.drivesPhaseTwo()) return Promise.resolve();
    this.housekeeping ??= this.prune()
      .catch((err: unknown) => {
        if (!isOwnError(err) && this.driver.classify(err) === 'unavailable')
          this.markUnavailable(err);
        this.log.warn({ err }, 'housekeeping failed; trying again next interval');
      })
      .finally(() => {
        this.housekeeping = null;
      });
    return this.housekeeping;
  }

  /**
   * The holder keeps the statements' cached plans fit for the tables' sizes (PostgreSQL,
   * plan-upkeep.ts). A failure is logged and tried again at the next interval.
   */
  private runPlanUpkeep(): Promise<void> {
    const upkeep = this.planUpkeep;
    if (!upkeep || this.closed || this.outage || !this.drivesPhaseTwo()) return Promise.resolve();
    this.planRun ??= upkeep
      .tick()
      .then((analyzed) => {
        if (analyzed.length > 0) this.log.debug({ analyzed }, 'analyzed tables that grew');
      })
      .catch((err: unknown) => {
        if (!isOwnError(err) && this.driver.classify(err) === 'unavailable')
          this.markUnavailable(err);
        this.log.warn({ err }, 'checking the table sizes failed; trying again next interval');
      })
      .finally(() => {
        this.planRun = null;
      });
    return this.planRun;
  }

  /**
   * Runs one plan-upkeep check now, holder or not (tests): the tables it analyzed; [] on
   * MySQL, which plans every execution.
   */
  planUpkeepNow(): Promise<string[]> {
    return this.planUpkeep ? this.planUpkeep.tick() : Promise.resolve([]);
  }

  /** Runs one housekeeping round now (tests). */
  pruneNow(): Promise<void> {
    return this.prune();
  }

  private async prune(): Promise<void> {
    const t = this.tables;
    const newest = await this.driver.query(`SELECT MAX(finished_at) AS newest FROM ${t.finished}`);
    const newestAt = newest.rows[0]?.newest;
    let removed = 0;
    if (newestAt !== null && newestAt !== undefined) {
      removed += await this.deleteOldest(t.finished, 'xid', 'finished_at < ?', [
        intOf(newestAt, 'newest') - RECENTLY_FINISHED_TTL_MS,
      ]);
    }
    removed += await this.deleteBeyondCount(t.finished, 'xid', MAX_RECENTLY_FINISHED);
    removed += await this.deleteBeyondCount(t.dedup, 'seq', MAX_DEDUP_ENTRIES);
    if (removed > 0) this.log.debug({ removed }, 'pruned finished and dedup rows');
  }

  /** Deletes rows matching `where`, oldest (seq) first, a batch per statement; returns how many. */
  private async deleteOldest(
    table: string,
    key: string,
    where: string,
    params: (string | number)[],
  ): Promise<number> {
    let removed = 0;
    for (;;) {
      const batch = await this.driver.query(
        `SELECT ${key} AS k FROM ${table} WHERE ${where} ORDER BY seq LIMIT ?`,
        [...params, DB_PRUNE_BATCH_ROWS],
      );
      if (batch.rows.length === 0) return removed;
      const keys = batch.rows.map((r) => (typeof r.k === 'number' ? r.k : textOf(r.k, key)));
      const deleted = await this.driver.query(
        `DELETE FROM ${table} WHERE ${key} IN (${keys.map(() => '?').join(', ')})`,
        keys,
      );
      removed += deleted.affected;
      if (batch.rows.length < DB_PRUNE_BATCH_ROWS || this.closed) return removed;
    }
  }

  private async deleteBeyondCount(table: string, key: string, keep: number): Promise<number> {
    const cut = await this.driver.query(
      `SELECT seq FROM ${table} ORDER BY seq DESC LIMIT 1 OFFSET ?`,
      [keep],
    );
    const seq = cut.rows[0]?.seq;
    if (seq === undefined) return 0;
    return this.deleteOldest(table, key, 'seq <= ?', [intOf(seq, 'seq')]);
  }
}

/**
 * Errors of the store's own logic (typed, assertions, corrupt rows): never classified as database
 * errors.
 */
function isOwnError(err: unknown): boolean {
  return (
    err instanceof ConcordError ||
    err instanceof AssertionFailure ||
    err instanceof TypeError ||
    err instanceof RangeError
  );
}

/** An error thrown by a read's fn, carried out of the transaction as is. */
/**
 * Runs a read on what the cache holds. `answer` once the view had everything fn asked for
 * (fn's own error is thrown as a ReadFnError, carried through a transaction untouched);
 * otherwise the view says what to fetch for another pass.
 */
function readOnce<T>(
  fn: (state: CoordinatorStateView) => T,
  cache: ReadCache,
): { view: CachedView; answer: { result: T } | null } {
  const view = new CachedView(cache);
  let result: T | undefined;
  let failure: { error: unknown } | null = null;
  try {
    result = fn(view);
  } catch (error) {
    failure = { error };
  }
  if (!view.complete) return { view, answer: null };
  if (failure) throw new ReadFnError(failure.error);
  return { view, answer: { result: result as T } };
}

class ReadFnError extends Error {
  constructor(readonly error: unknown) {
    super('read fn threw');
  }
}
