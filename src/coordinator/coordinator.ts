/**
 * The coordinator service (Seata's TC core): TM, RM and operator requests over a session
 * store, and the phase-two driver that runs on the leader. The gRPC service and the HTTP
 * console call this; it knows nothing of either, nor of Raft or databases.
 *
 * Order of effects, always: validate → submit (durable) → answer or call branches. A
 * decision is never announced, and no branch is told, before its submit resolved
 * (invariant 1). Ids come in validated and branded (Xid, BranchId: the edge parsed them);
 * the rest of a request is checked here, the domain's own guard.
 */
import { assert, BadRequestError, NotLeaderError } from '../shared/errors.ts';
import { formatXid, isValidXid, type BranchId, type Xid } from '../shared/ids.ts';
import type { Logger } from '../shared/logger.ts';
import type { Command, DecisionResult, FinishedSession, Outcome, ResultOf } from './commands.ts';
import {
  CapacityError,
  IllegalStatusError,
  RetryHorizonPassedError,
  UnknownXidError,
  rejectionToError,
} from './errors.ts';
import {
  MAX_APPLICATION_DATA_BYTES,
  MAX_LIVE_SESSIONS,
  MAX_LIVE_SESSIONS_CEILING,
  MAX_NAME_CHARS,
  MAX_REQUEST_ID_CHARS,
  MAX_TRANSACTION_TIMEOUT_MS,
  MIN_TRANSACTION_TIMEOUT_MS,
  DEFAULT_NODE_BUDGETS,
  MAX_NODE_BUDGETS,
  type NodeBudgets,
} from './limits.ts';
import { utf8Bytes, type LiveUsageView } from './live-usage.ts';
import type { CoordinatorStateView } from './state-machine.ts';
import { parseLockKey, validateResourceId } from './lock-key.ts';
import { commandClock } from './command-clock.ts';
import { PhaseTwoDriver, type PhaseTwoOptions, type RmWait } from './phase-two-driver.ts';
import { type BranchGateway, type Clock, type IdSource, type SessionStore } from './ports.ts';
import {
  BranchStatus,
  GlobalStatus,
  isBranchType,
  isEndStatus,
  isPhaseTwoInFlight,
  isStuck,
  reportedStatus,
  type BranchType,
  type FinishedRecord,
  type GlobalSession,
} from './types.ts';

export interface CoordinatorOptions {
  store: SessionStore;
  gateway: BranchGateway;
  ids: IdSource;
  logger: Logger;
  /** This TC's client-facing address: the xid prefix `<host>:<port>`. */
  address: { host: string; port: number };
  /**
   * The wall clock (src/server/wall-clock.ts in a node; a fake one in tests). Commands carry
   * max(this clock, the last applied command time).
   */
  clock: Clock;
  phaseTwo?: Partial<PhaseTwoOptions>;
  /**
   * Live global transactions at most (failed ones waiting for an operator do not count).
   * Where the store has the leader's applied state (raft), a Begin beyond it is refused at
   * once with CapacityError and nothing is proposed; Begins already in flight may pass it by
   * their number. Default MAX_LIVE_SESSIONS; at most MAX_LIVE_SESSIONS_CEILING, which apply
   * enforces exactly.
   */
  maxLiveSessions?: number;
  /**
   * Node-wide budgets on live branches, locked rows and application data (limits.ts), checked
   * like the live limit: against this leader's applied state, before anything is proposed, so
   * what is in flight may pass them by its size. Default DEFAULT_NODE_BUDGETS.
   */
  budgets?: Partial<NodeBudgets>;
  /**
   * Live transactions one application may have (its quota; security.quotas). Checked like
   * the live limit. Default: no quota beyond the node's live limit.
   */
  maxLiveOfApplication?: (applicationId: string) => number;
}

export interface BeginRequest {
  applicationId: string;
  transactionServiceGroup: string;
  /** The transaction's name (Seata: the @GlobalTransactional name). Default ''. */
  name?: string;
  timeoutMs: number;
  /** Makes a retried begin return the first xid instead of starting a second transaction. */
  requestId?: string;
}

export interface RegisterBranchRequest {
  xid: Xid;
  branchType: BranchType;
  resourceId: string;
  /** `table:pk1,pk2;table2:pk3`; absent or '' for a branch that locks no rows (TCC, Saga). */
  lockKey?: string;
  applicationData?: string;
  clientId: string;
  /** The registering RM's application: phase two goes only to RMs of it. */
  applicationId: string;
  requestId?: string;
}

export interface BranchReportRequest {
  xid: Xid;
  branchId: BranchId;
  status: BranchStatus;
  applicationData?: string;
}

export interface GlobalReportRequest {
  xid: Xid;
  status: GlobalStatus;
}

export interface LockQueryRequest {
  /** Absent for a @GlobalLock check outside any transaction: then any holder conflicts. */
  xid?: Xid;
  resourceId: string;
  lockKey: string;
}

export interface MarkResolvedRequest {
  xid: Xid;
  /** Must repeat the xid: resolving releases locks on rows that may be half-written. */
  confirmXid: Xid;
  /** Who resolved it; kept with the final status. */
  operator: string;
}

export interface ResumeRequest {
  xid: Xid;
  /**
   * Resume although the transaction's retry horizon passed (its RMs may have cleaned up
   * their fence rows); without it such a resume is refused. Ignored before the horizon.
   */
  force?: boolean;
  /** Who resumed it, for the log line (the edge's audit line names the caller too). */
  operator?: string;
}

/**
 * What getSession shows: the live session (with the branches whose phase two waits for an
 * RM of their application, as this node's driver saw them), or the record of a finished one.
 */
export type SessionInfo =
  | {
      live: true;
      session: GlobalSession;
      reportedStatus: GlobalStatus;
      /** Phase two still fails past its alarm time (isStuck); it is still retried. */
      stuck: boolean;
      rmWaits: RmWait[];
    }
  | { live: false; finished: FinishedRecord };

/** Statuses a Saga TM may report. */
const REPORTABLE: ReadonlySet<GlobalStatus> = new Set([
  GlobalStatus.Committed,
  GlobalStatus.CommitFailed,
  GlobalStatus.CommitRetrying,
  GlobalStatus.Committing,
  GlobalStatus.Rollbacked,
  GlobalStatus.RollbackFailed,
  GlobalStatus.RollbackRetrying,
  GlobalStatus.Rollbacking,
  GlobalStatus.TimeoutRollbacked,
  GlobalStatus.TimeoutRollbackFailed,
  GlobalStatus.TimeoutRollbackRetrying,
  GlobalStatus.TimeoutRollbacking,
]);

export class Coordinator {
  readonly driver: PhaseTwoDriver;
  private readonly store: SessionStore;
  private readonly ids: IdSource;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly address: { host: string; port: number };
  private readonly maxLiveSessions: number;
  private readonly budgets: Readonly<NodeBudgets>;
  private readonly maxLiveOfApplication: ((applicationId: string) => number) | null;
  private unsubscribe: (() => void) | null = null;

  constructor(options: CoordinatorOptions) {
    this.store = options.store;
    this.ids = options.ids;
    this.clock = commandClock(options.clock, options.store);
    this.log = options.logger.child({ component: 'coordinator' });
    this.address = options.address;
    this.maxLiveSessions = options.maxLiveSessions ?? MAX_LIVE_SESSIONS;
    this.budgets = { ...DEFAULT_NODE_BUDGETS, ...options.budgets };
    for (const key of Object.keys(this.budgets) as (keyof NodeBudgets)[]) {
      const v = this.budgets[key];
      assert(
        Number.isSafeInteger(v) && v >= 1 && v <= MAX_NODE_BUDGETS[key],
        () => `${key} ${v} is outside 1..${MAX_NODE_BUDGETS[key]}`,
      );
    }
    this.maxLiveOfApplication = options.maxLiveOfApplication ?? null;
    assert(
      Number.isSafeInteger(this.maxLiveSessions) &&
        this.maxLiveSessions >= 1 &&
        this.maxLiveSessions <= MAX_LIVE_SESSIONS_CEILING,
      () => `maxLiveSessions ${this.maxLiveSessions} is outside 1..${MAX_LIVE_SESSIONS_CEILING}`,
    );
    assert(
      isValidXid(formatXid(this.address.host, this.address.port, '0')),
      () => `the TC address ${this.address.host}:${this.address.port} makes no valid xid`,
    );
    this.driver = new PhaseTwoDriver({
      store: options.store,
      gateway: options.gateway,
      clock: this.clock,
      logger: options.logger,
      ...(options.phaseTwo ? { options: options.phaseTwo } : {}),
    });
  }

  /**
   * Live global transactions that count toward the limit, as this leader has applied them; null
   * where the store has no local view (db mode).
   */
  liveCount(): number | null {
    if (this.store.readLocal === undefined || !this.store.isLeader()) return null;
    try {
      return this.store.readLocal(
        (state) => state.countedLiveSessions?.() ?? state.liveSessionCount(),
      );
    } catch (err) {
      if (err instanceof NotLeaderError) return null;
      throw err;
    }
  }

  /**
   * A Begin at the live limit is refused here, before anything is proposed: a definite,
   * typed answer (CapacityError), fast. Where there is no local view, apply decides (db mode
   * counts in its own transaction), with the same answer.
   */
  private refuseBeyondLiveLimit(): void {
    const live = this.liveCount();
    if (live !== null && live >= this.maxLiveSessions) {
      throw new CapacityError(
        `${this.maxLiveSessions} global transactions are live, the limit; try again when some have ended`,
      );
    }
  }

  /** What live transactions use, as this leader has applied it; null without a local view. */
  private usage<T>(fn: (state: CoordinatorStateView, usage: LiveUsageView) => T): T | null {
    if (this.store.readLocal === undefined || !this.store.isLeader()) return null;
    try {
      return this.store.readLocal((state) => {
        const usage = state.liveUsage?.();
        return usage === undefined ? null : fn(state, usage);
      });
    } catch (err) {
      if (err instanceof NotLeaderError) return null;
      throw err;
    }
  }

  /** A Begin beyond its application's live quota is refused before anything is proposed. */
  private refuseBeyondApplicationQuota(applicationId: string): void {
    if (this.maxLiveOfApplication === null) return;
    const quota = this.maxLiveOfApplication(applicationId);
    const live = this.usage((_, u) => u.liveOf(applicationId));
    if (live !== null && live >= quota) {
      throw new CapacityError(
        `application ${applicationId} has ${live} live global transactions, its quota (${quota}); try again when some have ended`,
      );
    }
  }

  /**
   * A branch that would take the node past a budget (live branches, locked rows, bytes of
   * application data) is refused before anything is proposed: CapacityError, definite.
   */
  private refuseBeyondBudgets(newBranches: number, rows: number, dataBytes: number): void {
    const over = this.usage((state, u): string | null => {
      const b = this.budgets;
      if (u.branches + newBranches > b.maxLiveBranches)
        return `${u.branches} branches are live, the node's budget is ${b.maxLiveBranches} (limits.maxLiveBranches)`;
      const locked = state.lockedRowCount();
      if (locked + rows > b.maxLockedRows)
        return `${locked} rows are locked and ${rows} more are asked, the node's budget is ${b.maxLockedRows} (limits.maxLockedRows)`;
      if (u.applicationDataBytes + dataBytes > b.maxApplicationDataBytes)
        return `live branches hold ${u.applicationDataBytes} B of application data and ${dataBytes} B more are asked, the node's budget is ${b.maxApplicationDataBytes} B (limits.maxApplicationDataBytes)`;
      return null;
    });
    if (over !== null && over !== undefined)
      throw new CapacityError(`${over}; try again when some transactions have ended`);
  }

  /** Follows the store's leadership: the phase-two driver runs exactly while this node leads. */
  start(): void {
    if (this.unsubscribe) return;
    this.unsubscribe = this.store.onLeadershipChange((event) => {
      if (event.isLeader) this.driver.start(event.term);
      else this.driver.stop();
    });
    if (this.store.drivesPhaseTwo?.() ?? this.store.isLeader())
      this.driver.start(this.store.term());
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
    this.driver.stop();
  }

  // -------------------------------------------------------------------------------------
  // TM
  // -------------------------------------------------------------------------------------

  async begin(request: BeginRequest): Promise<{ xid: Xid }> {
    requireName(request.applicationId, 'applicationId');
    requireName(request.transactionServiceGroup, 'transactionServiceGroup');
    const name = request.name ?? '';
    if (typeof name !== 'string' || name.length > MAX_NAME_CHARS)
      throw new BadRequestError(`name must be a string of at most ${MAX_NAME_CHARS} characters`);
    if (
      !Number.isSafeInteger(request.timeoutMs) ||
      request.timeoutMs < MIN_TRANSACTION_TIMEOUT_MS ||
      request.timeoutMs > MAX_TRANSACTION_TIMEOUT_MS
    ) {
      throw new BadRequestError(
        `timeoutMs must be an integer in ${MIN_TRANSACTION_TIMEOUT_MS}..${MAX_TRANSACTION_TIMEOUT_MS}`,
      );
    }
    const requestId = optionalRequestId(request.requestId);
    this.refuseBeyondLiveLimit();
    this.refuseBeyondApplicationQuota(request.applicationId);
    const transactionId = this.ids.nextTransactionId();
    const { xid, deadline } = await this.submit({
      kind: 'Begin',
      xid: formatXid(this.address.host, this.address.port, transactionId),
      transactionId,
      applicationId: request.applicationId,
      transactionServiceGroup: request.transactionServiceGroup,
      name,
      timeoutMs: request.timeoutMs,
      beginTime: await this.stampTime(),
      requestId,
      term: this.store.term(),
    });
    this.log.debug({ xid, deadline }, 'global transaction begun');
    this.driver.watchDeadline(xid, deadline);
    // The xid of this Begin, or of the first one with its requestId: one this TC formatted.
    return { xid: xid as Xid };
  }

  /**
   * Commits, decided inside apply against the state at that moment (CommitGlobal): a
   * branchless transaction ends Committed in that one entry; AsyncCommitting (answered at
   * once) when every branch is AT; else Committing, one phase-two pass, and the status it
   * reached (Committed, or CommitRetrying while a branch keeps failing). Past its deadline
   * it is rolled back instead. A decided or finished transaction answers its status: a
   * retried commit is harmless. No read before or after the decision.
   */
  async commit(request: { xid: Xid }): Promise<GlobalStatus> {
    const xid = request.xid;
    const now = await this.stampTime();
    const result = await this.submit({
      kind: 'CommitGlobal',
      xid,
      at: now,
      term: this.store.term(),
    });
    if (result.decided && result.status === GlobalStatus.TimeoutRollbacking)
      this.log.info({ xid }, 'commit after the deadline: rolling back');
    return this.afterDecision(xid, result);
  }

  /** Rolls back (branches in reverse registration order); answers the status one pass reached. */
  async rollback(request: { xid: Xid }): Promise<GlobalStatus> {
    const xid = request.xid;
    const result = await this.submit({
      kind: 'RollbackGlobal',
      xid,
      timeout: false,
      at: await this.stampTime(),
      term: this.store.term(),
    });
    return this.afterDecision(xid, result);
  }

  /** Linearizable: the status as of now (Stop* while an operator stopped retries). */
  async getStatus(request: { xid: Xid }): Promise<GlobalStatus> {
    const xid = request.xid;
    const session = await this.liveOrAnswer(xid);
    return typeof session === 'string' ? session : reportedStatus(session);
  }

  /**
   * Saga: the TM's engine reports the status it reached; an in-flight status hands phase two to the
   * TC.
   */
  async globalReport(request: GlobalReportRequest): Promise<GlobalStatus> {
    const xid = request.xid;
    if (!REPORTABLE.has(request.status))
      throw new BadRequestError(`a TM may not report ${String(request.status)}`);
    const result = await this.submit({
      kind: 'GlobalReport',
      xid,
      status: request.status,
      at: await this.stampTime(),
      term: this.store.term(),
    });
    // Where deciders drive (db mode), only the node whose report decided the session (took it
    // out of Begin) runs a pass: the same report again (a TM's retry, maybe on another node),
    // or a later one that moves the decided session on (Committing → CommitRetrying), would
    // start a second pass at the decider's term beside its own, unfenced. What the decider
    // leaves, the lease holder takes over (its hand-off time, or the retry time).
    if (
      result.finished === null &&
      !isEndStatus(result.status) &&
      (result.decided || this.store.handOffAt === undefined)
    )
      void this.driver.driveDecision(xid);
    return result.status;
  }

  // -------------------------------------------------------------------------------------
  // RM
  // -------------------------------------------------------------------------------------

  /** Registers a branch and locks its rows, all or nothing (LockConflictError names the holder). */
  async registerBranch(request: RegisterBranchRequest): Promise<{ branchId: BranchId }> {
    const xid = request.xid;
    if (!isBranchType(request.branchType))
      throw new BadRequestError(
        `branch type must be AT, TCC, SAGA or XA, not ${String(request.branchType)}`,
      );
    validateResourceId(request.resourceId);
    const lockKey = request.lockKey ?? '';
    if (typeof lockKey !== 'string') throw new BadRequestError('lockKey must be a string');
    // the precise message, before a round trip
    const rows = lockKey === '' ? 0 : parseLockKey(request.resourceId, lockKey).length;
    const applicationData = request.applicationData ?? '';
    requireApplicationData(applicationData);
    this.refuseBeyondBudgets(1, rows, utf8Bytes(applicationData));
    if (typeof request.clientId !== 'string' || request.clientId.length > MAX_NAME_CHARS) {
      throw new BadRequestError(
        `clientId must be a string of at most ${MAX_NAME_CHARS} characters`,
      );
    }
    requireName(request.applicationId, 'applicationId');
    const { branchId } = await this.submit({
      kind: 'RegisterBranch',
      xid,
      branchId: this.ids.nextBranchId(),
      type: request.branchType,
      resourceId: request.resourceId,
      lockKey,
      applicationData,
      clientId: request.clientId,
      applicationId: request.applicationId,
      at: await this.stampTime(),
      requestId: optionalRequestId(request.requestId),
    });
    // This registration's id, or the first one's with its requestId: one this TC chose.
    return { branchId: branchId as BranchId };
  }

  async branchReport(request: BranchReportRequest): Promise<void> {
    const xid = request.xid;
    if (request.applicationData !== undefined) {
      requireApplicationData(request.applicationData);
      // Counted whole: the data it replaces is small beside the budget.
      this.refuseBeyondBudgets(0, 0, utf8Bytes(request.applicationData));
    }
    await this.submit({
      kind: 'BranchReport',
      xid,
      branchId: request.branchId,
      status: request.status,
      applicationData: request.applicationData ?? null,
    });
  }

  /** True when every row of the lock key is free or already held by `xid`. */
  async lockQuery(request: LockQueryRequest): Promise<boolean> {
    const xid = request.xid ?? '';
    const rows = parseLockKey(request.resourceId, request.lockKey);
    return this.store.read((state) => state.isLockable(xid, rows));
  }

  // -------------------------------------------------------------------------------------
  // Operator
  // -------------------------------------------------------------------------------------

  /** The live session (with what a client would see) or the finished record. */
  async getSession(request: { xid: Xid }): Promise<SessionInfo> {
    const xid = request.xid;
    const found = await this.store.read((state) => ({
      session: state.getSession(xid),
      finished: state.getFinished(xid),
    }));
    if (found.session)
      return {
        live: true,
        session: found.session,
        reportedStatus: reportedStatus(found.session),
        stuck: isStuck(found.session),
        rmWaits: this.driver.rmWaitsOf(xid),
      };
    if (found.finished) return { live: false, finished: found.finished };
    throw new UnknownXidError(xid);
  }

  /** Runs a phase-two pass now instead of waiting for the backoff; answers the status after it. */
  async retryNow(request: { xid: Xid }): Promise<GlobalStatus> {
    const xid = request.xid;
    const session = await this.requireLive(xid);
    if (!isPhaseTwoInFlight(session.status))
      throw new IllegalStatusError(
        xid,
        session.status,
        'only a transaction in phase two can be retried',
      );
    if (session.retry.stopped)
      throw new IllegalStatusError(
        xid,
        reportedStatus(session),
        'retries are stopped; resume them first',
      );
    if (!this.driver.isActive) throw new NotLeaderError(null);
    await this.driver.drive(xid);
    return this.getStatus({ xid });
  }

  /** Stops phase-two retries (the status reads Stop*); locks stay. */
  async stopRetry(request: { xid: Xid }): Promise<void> {
    const xid = request.xid;
    await this.submit({
      kind: 'RetryStopped',
      xid,
      at: await this.stampTime(),
      term: this.store.term(),
    });
    this.driver.park(xid);
    this.log.warn({ xid }, 'phase-two retries stopped by an operator');
  }

  /**
   * An operator drives a stopped, stuck or failed transaction again at once, with a new
   * alarm time: the pass tells only the branches not yet done (a failed end goes back to
   * its driving status and its unretryable branches are told again; finished ones never
   * are). Harmless on one that is none of these. Past the transaction's retry horizon it is
   * refused (RetryHorizonPassedError) unless `force`: the RMs may have cleaned up their
   * fence rows; a forced resume grants one more alarm window of retries. Answers the status
   * it resumed to.
   */
  async resumeRetry(request: ResumeRequest): Promise<GlobalStatus> {
    const xid = request.xid;
    const session = await this.requireLive(xid);
    const now = await this.stampTime();
    const horizon = this.driver.horizonOf(session);
    const force = request.force === true && now >= horizon;
    if (now >= horizon && !force)
      throw new RetryHorizonPassedError(xid, reportedStatus(session), horizon);
    const alarm = now + this.driver.options.stuckAfterMs;
    const result = await this.submit({
      kind: 'RetryResumed',
      xid,
      at: now,
      // Capped at the horizon; a forced resume's alarm time becomes the new horizon.
      retryDeadline: force ? alarm : Math.min(alarm, horizon),
      term: this.store.term(),
      ...(force ? { force } : {}),
    });
    this.log.warn(
      {
        xid,
        from: reportedStatus(session),
        to: result.status,
        operator: request.operator ?? null,
        ...(force ? { forced: true, horizon } : {}),
      },
      force
        ? 'phase two resumed by an operator, FORCED past its retry horizon: its RMs may have cleaned up their fence rows'
        : 'phase two resumed by an operator; only its unfinished branches are told again',
    );
    void this.driver.drive(xid);
    return result.status;
  }

  /**
   * Ends a failed (or retry-stopped) transaction an operator repaired by hand: its locks are
   * released and its final *Failed status kept. Needs `confirmXid` equal to `xid`.
   */
  async markResolved(request: MarkResolvedRequest): Promise<FinishedSession> {
    const xid = request.xid;
    if (request.confirmXid !== xid)
      throw new BadRequestError(
        'confirmXid must repeat the xid: resolving releases the locks of rows that may be half-written',
      );
    requireName(request.operator, 'operator');
    const result = await this.submit({
      kind: 'MarkResolved',
      xid,
      at: await this.stampTime(),
      operator: request.operator,
      term: this.store.term(),
    });
    this.driver.park(xid);
    this.log.warn(
      { xid, status: result.status, operator: request.operator },
      'failed global transaction marked resolved; its locks are released',
    );
    return result;
  }

  // -------------------------------------------------------------------------------------

  /**
   * The TM's answer from the applied decision: an ended or asynchronous one at once; a
   * synchronous one after one phase-two pass, with the status that pass reached.
   */
  private async afterDecision(xid: Xid, result: DecisionResult): Promise<GlobalStatus> {
    if (!result.decided || result.finished) return result.status;
    this.log.debug({ xid, status: result.status }, 'global transaction decided');
    const pass = this.driver.driveDecision(xid);
    if (result.status === GlobalStatus.AsyncCommitting) return result.status;
    return (await pass) ?? this.getStatus({ xid });
  }

  /**
   * The live session, or the status to answer at once (a finished one); UnknownXidError otherwise.
   */
  private async liveOrAnswer(xid: string): Promise<GlobalSession | GlobalStatus> {
    const found = await this.store.read((state) => ({
      session: state.getSession(xid),
      finished: state.getFinished(xid),
    }));
    if (found.session) return found.session;
    if (found.finished) return found.finished.status;
    throw new UnknownXidError(xid);
  }

  private async requireLive(xid: string): Promise<GlobalSession> {
    const session = await this.liveOrAnswer(xid);
    if (typeof session === 'string')
      throw new IllegalStatusError(xid, session, 'the transaction has ended');
    return session;
  }

  /**
   * The command time for a command about to be submitted, once this node may stamp one
   * (SessionStore.readyToStamp: a new leader waits until it applied its first entry of the
   * term, so its predecessor's command times are its floor and anchor).
   */
  private async stampTime(): Promise<number> {
    await this.store.readyToStamp?.();
    return this.clock.now();
  }

  private async submit<C extends Command>(command: C): Promise<ResultOf<C>> {
    return unwrap(await this.store.submit(command));
  }
}

function unwrap<T>(outcome: Outcome<T>): T {
  if (outcome.ok) return outcome.value;
  throw rejectionToError(outcome.rejection);
}

function requireName(value: unknown, field: string): void {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_NAME_CHARS) {
    throw new BadRequestError(`${field} must be a string of 1..${MAX_NAME_CHARS} characters`);
  }
}

function requireApplicationData(data: unknown): void {
  if (typeof data !== 'string') throw new BadRequestError('applicationData must be a string');
  const bytes = Buffer.byteLength(data, 'utf8');
  if (bytes > MAX_APPLICATION_DATA_BYTES)
    throw new BadRequestError(
      `applicationData is ${bytes} bytes, more than the limit of ${MAX_APPLICATION_DATA_BYTES}`,
    );
}

function optionalRequestId(requestId: unknown): string | null {
  if (requestId === undefined || requestId === null || requestId === '') return null;
  if (typeof requestId !== 'string' || requestId.length > MAX_REQUEST_ID_CHARS) {
    throw new BadRequestError(
      `requestId must be a string of at most ${MAX_REQUEST_ID_CHARS} characters`,
    );
  }
  return requestId;
}
