/**
 * The coordinator's deterministic state machine: live global sessions, their branches, the
 * row lock table, a bounded map of recently finished sessions and a bounded request-dedup
 * map. `apply(command)` depends only on the current state and the command (no clock, no
 * randomness, no I/O): the same log applied anywhere yields byte-identical snapshots.
 *
 * A refused command returns a Rejection and changes nothing: every handler checks all of
 * its preconditions before its first mutation.
 */
import { Interned, detached } from './interned.ts';
import type { BranchId, Xid } from '../shared/ids.ts';
import { BadRequestError, StorageCorruptError, assert } from '../shared/errors.ts';
import type {
  AcquireDriverCommand,
  BeginCommand,
  BranchPhaseTwoResultCommand,
  BranchReportCommand,
  ChangeGlobalStatusCommand,
  Command,
  CommandResults,
  CommitGlobalCommand,
  DecisionResult,
  FinishGlobalCommand,
  FinishedSession,
  GlobalReportCommand,
  MarkResolvedCommand,
  Outcome,
  RegisterBranchCommand,
  RemoveBranchCommand,
  ResultOf,
  RetryResumedCommand,
  RetryScheduledCommand,
  RetryStoppedCommand,
  RollbackGlobalCommand,
} from './commands.ts';
import { validateCommandShape } from './command-validation.ts';
import { DedupTable, compactKey, type DedupCapture, type DedupRow } from './dedup-table.ts';
import type { Rejection } from './errors.ts';
import {
  DEFAULT_RETENTION,
  MAX_APPLICATION_DATA_BYTES,
  MAX_BRANCHES_PER_GLOBAL,
  MAX_LIVE_SESSIONS_CEILING,
  MAX_TRANSACTION_TIMEOUT_MS,
  MIN_TRANSACTION_TIMEOUT_MS,
  type RetentionLimits,
} from './limits.ts';
import { compareStrings, parseLockKey } from './lock-key.ts';
import { LockTable, type LockHolder } from './lock-table.ts';
import {
  LiveStatusCounts,
  LiveUsage,
  type LiveStatusCountsView,
  type LiveUsageView,
} from './live-usage.ts';
import { XidIndex } from './xid-index.ts';
import {
  SNAPSHOT_FORMAT_VERSION,
  decodeSnapshot,
  encodeSnapshot,
  encodeSnapshotInSlices,
  SNAPSHOT_SLICE_ROWS,
} from './snapshot-codec.ts';
import {
  BranchStatus,
  BranchType,
  GlobalStatus,
  branchDoneStatusFor,
  canBranchCommitAsync,
  canReach,
  canTransition,
  decisionOf,
  failedStatusOf,
  isBranchEndStatus,
  isEndStatus,
  isFailedEnd,
  isPhaseOneStatus,
  isPhaseTwoInFlight,
  isStuck,
  isSuccessfulEnd,
  isUnretryableFailure,
  phaseTwoStatusesFor,
  reportedStatus,
  resumedStatusOf,
  retryableAgainOf,
  successfulEndOf,
  type BranchSession,
  type FinishedRecord,
  type GlobalSession,
  type RetryInfo,
} from './types.ts';

/** What forEachLiveStatus shows of one live session. */
export interface LiveStatusView {
  readonly xid: Xid;
  readonly status: GlobalStatus;
  /** The status a client sees (Stop* while an operator stopped the retries). */
  readonly reportedStatus: GlobalStatus;
  readonly beginTime: number;
  readonly statusChangedAt: number;
  readonly retryAttempts: number;
  /** Phase two still fails past its alarm time (isStuck). */
  readonly stuck: boolean;
}

/**
 * What liveSessionsSlice shows of one live session: the session itself, not a copy (the
 * visitor reads the fields it needs at once and keeps nothing).
 */
export interface LiveSessionRef {
  readonly xid: Xid;
  readonly status: GlobalStatus;
  readonly deadline: number;
  readonly statusChangedAt: number;
  readonly driverTerm: number;
  readonly retry: Readonly<RetryInfo>;
}

/**
 * Where a walk over the live sessions stands (liveSessionsSlice): opaque. It follows the live
 * set as it changes: a session that ends before the walk reaches it is not visited, one that
 * begins during the walk is.
 */
export interface LiveCursor {
  readonly kind: 'live-cursor';
}

/** Read-only queries of coordinator state. Everything returned is a copy. */
export interface CoordinatorStateView {
  getSession(xid: string): GlobalSession | undefined;
  getFinished(xid: string): FinishedRecord | undefined;
  liveSessionCount(): number;
  /**
   * Live sessions that count toward the live limit: all but the failed ones, which wait for
   * an operator. Optional: the db store's partial view counts in the database instead.
   */
  countedLiveSessions?(): number;
  /** Live xids, in no particular order. */
  liveXids(): Xid[];
  /**
   * Optional: up to `limit` live xids after `after` (exclusive; null: from the first), in xid
   * order (code units, as Array.prototype.sort orders strings): a page of an ordered index,
   * no walk over the live set (the operator's lists). Absent from the db store's partial view.
   */
  liveXidPage?(after: string | null, limit: number): Xid[];
  /**
   * Optional: live sessions by reported status and stuck ones, counted as commands apply (no
   * walk over the live set: /metrics). Absent from the db store's partial view.
   */
  liveStatusCounts?(): LiveStatusCountsView;
  /**
   * Optional: visits up to `limit` live sessions from `cursor` (null: from the start) without
   * copying them, and answers the cursor to go on from (null: the walk is done). The one
   * thing a caller may keep across reads is the cursor (the phase-two driver's sweep walks
   * the live set a slice per event-loop turn). Absent where the view holds only part of the
   * state (the db store's reads).
   */
  liveSessionsSlice?(
    cursor: LiveCursor | null,
    limit: number,
    visit: (session: LiveSessionRef) => void,
  ): LiveCursor | null;
  /** Optional: true when `xid` is live (no copy). Absent from the db store's partial view. */
  isLive?(xid: string): boolean;
  /** True when `xid` could lock every row now. */
  isLockable(xid: string, rows: readonly string[]): boolean;
  lockHolder(row: string): { xid: string; branchIds: string[] } | undefined;
  lockedRowCount(): number;
  /**
   * Optional: visits every held row and its holder without copying, for the console's lock
   * list (the visitor must not keep or change what it is given). Absent where the view holds
   * only part of the state (the db store's reads).
   */
  forEachLockedRow?(visit: (row: string, holder: LockHolder) => void): void;
  /**
   * Optional: live transactions per application, live branches and their data bytes, kept
   * as commands apply (the edge's budgets read it). Absent from the db store's partial view.
   */
  liveUsage?(): LiveUsageView;
  /**
   * Optional: visits every live session's status and times, without copying it (no
   * branches): for metrics and summaries over many sessions. Absent where the view holds
   * only part of the state (the db store's reads).
   */
  forEachLiveStatus?(visit: (session: LiveStatusView) => void): void;
  /**
   * The latest command time (ms) among applied commands: a leader stamps its commands with
   * max(its clock, this), so command time never goes backwards across leaders. Optional:
   * the db store's partial view has none (its nodes share one database clock order).
   */
  commandTime?(): number;
  /**
   * Optional: the command time at which a Prune command would forget something (Infinity:
   * nothing to forget). Absent: the store prunes by itself (the db store's housekeeping).
   */
  prunableAt?(): number;
}

const textEncoder = new TextEncoder();

export class CoordinatorStateMachine implements CoordinatorStateView {
  private sessions = new Map<string, GlobalSession>();
  private locks = new LockTable();
  private finished = new Map<string, FinishedRecord>();
  /** requestId → the remembered result and the command time it was remembered at. */
  private dedup = new DedupTable();
  private lastCommandTime = 0;
  /**
   * The snapshot capture under way (snapshotInSlices), copy-on-write: commands go on
   * applying, and a session it captured is copied before its first change (null: none).
   */
  private capturing: CaptureImage | null = null;
  /**
   * The last sliced snapshot's (or restored one's) size, bytes, and its rows (sessions,
   * finished records, remembered request ids): the next one's buffer is this size scaled by
   * the rows then (not part of the state).
   */
  private lastSnapshotBytes = 0;
  private lastSnapshotRows = 0;
  /** One copy of the strings live transactions repeat (interned.ts). */
  private readonly interned = new Interned();
  private readonly retention: Readonly<RetentionLimits>;

  /** Live sessions in a *Failed end state, waiting for an operator: not counted as live. */
  private failed = new Set<string>();
  private readonly maxLiveSessions: number;
  /** Live transactions per application, live branches, their data bytes (live-usage.ts). */
  private usage = new LiveUsage();
  /** Live sessions by reported status, and stuck ones (live-usage.ts). */
  private statusCounts = new LiveStatusCounts();
  /** The live xids in xid order (xid-index.ts). */
  private xids = new XidIndex();

  constructor(options: { retention?: Partial<RetentionLimits>; maxLiveSessions?: number } = {}) {
    this.retention = { ...DEFAULT_RETENTION, ...options.retention };
    this.maxLiveSessions = options.maxLiveSessions ?? MAX_LIVE_SESSIONS_CEILING;
  }

  /** Applies one command. Never throws on bad input: a refused command is a Rejection. */
  apply<C extends Command>(command: C): Outcome<ResultOf<C>>;
  apply(command: Command): Outcome<unknown> {
    const malformed = validateCommandShape(command);
    if (malformed) return { ok: false, rejection: malformed };
    // Every command but Prune changes at most the one session it names: its counted figures
    // are taken out before and put back after (statusCounts).
    const xid = command.kind === 'Prune' ? null : command.xid;
    const before = xid === null ? undefined : this.sessions.get(xid);
    const beforeStatus = before === undefined ? null : reportedStatus(before);
    const beforeStuck = before !== undefined && isStuck(before);
    const result = this.dispatch(command);
    if (result.ok) {
      this.lastCommandTime = Math.max(this.lastCommandTime, commandTimeOf(command));
      if (xid !== null) this.track(xid, beforeStatus, beforeStuck);
    }
    return result.ok
      ? { ok: true, value: result.value }
      : { ok: false, rejection: result.rejection };
  }

  // -------------------------------------------------------------------------------------
  // Handlers
  // -------------------------------------------------------------------------------------

  private dispatch(c: Command): Outcome<unknown> {
    switch (c.kind) {
      case 'Begin':
        return this.withDedup(c.kind, c.requestId, c.beginTime, () => this.begin(c));
      case 'RegisterBranch':
        return this.withDedup(c.kind, c.requestId, c.at, () => this.registerBranch(c));
      case 'BranchReport':
        return this.branchReport(c);
      case 'ChangeGlobalStatus':
        return this.changeGlobalStatus(c);
      case 'BranchPhaseTwoResult':
        return this.branchPhaseTwoResult(c);
      case 'RemoveBranch':
        return this.removeBranch(c);
      case 'RetryScheduled':
        return this.retryScheduled(c);
      case 'RetryStopped':
        return this.retryStopped(c);
      case 'RetryResumed':
        return this.retryResumed(c);
      case 'MarkResolved':
        return this.markResolved(c);
      case 'GlobalReport':
        return this.globalReport(c);
      case 'FinishGlobal':
        return this.finishGlobal(c);
      case 'AcquireDriver':
        return this.acquireDriver(c);
      case 'CommitGlobal':
        return this.commitGlobal(c);
      case 'RollbackGlobal':
        return this.rollbackGlobal(c);
      case 'Prune':
        return ok(this.prune(c.at));
    }
  }

  private begin(c: BeginCommand): Outcome<CommandResults['Begin']> {
    if (this.sessions.has(c.xid) || this.finished.has(c.xid))
      return bad(`xid ${c.xid} already exists`);
    if (c.timeoutMs < MIN_TRANSACTION_TIMEOUT_MS || c.timeoutMs > MAX_TRANSACTION_TIMEOUT_MS) {
      return bad(
        `timeout ${c.timeoutMs} ms is outside ${MIN_TRANSACTION_TIMEOUT_MS}..${MAX_TRANSACTION_TIMEOUT_MS} ms`,
      );
    }
    // Failed sessions wait for an operator: they do not use up the room of new ones.
    if (this.countedLiveSessions() >= this.maxLiveSessions) {
      return reject({
        code: 'CAPACITY',
        message: `${this.maxLiveSessions} global transactions are live, the limit`,
      });
    }
    const deadline = c.beginTime + c.timeoutMs;
    // Kept for the session's life: copies that do not pin the decoded log entry.
    const xid = detached(c.xid);
    const session: GlobalSession = {
      // A leader's coordinator formatted it (formatXid); its shape was checked above.
      xid: xid as Xid,
      transactionId: detached(c.transactionId),
      applicationId: this.interned.of(c.applicationId),
      transactionServiceGroup: this.interned.of(c.transactionServiceGroup),
      name: this.interned.of(c.name),
      timeoutMs: c.timeoutMs,
      beginTime: c.beginTime,
      deadline,
      status: GlobalStatus.Begin,
      statusChangedAt: c.beginTime,
      branches: NO_BRANCHES,
      retry: NO_RETRY,
      driverTerm: c.term ?? 0,
    };
    this.sessions.set(xid, session);
    this.xids.add(xid);
    // Begun after a capture's point: not part of it (no copy before its changes).
    this.capturing?.born.add(session);
    this.usage.sessionAdded(c.applicationId);
    return ok({ xid, deadline });
  }

  private registerBranch(c: RegisterBranchCommand): Outcome<CommandResults['RegisterBranch']> {
    const session = this.live(c.xid);
    if (!isSession(session)) return reject(session);
    if (session.status !== GlobalStatus.Begin)
      return illegal(session, 'branches register only while the transaction is Begin');
    if (c.at >= session.deadline)
      return illegal(session, `past its deadline (${session.deadline}); it is being rolled back`);
    if (session.branches.length >= MAX_BRANCHES_PER_GLOBAL) {
      return bad(`${c.xid} already has ${MAX_BRANCHES_PER_GLOBAL} branches, the limit`);
    }
    if (session.branches.some((b) => b.branchId === c.branchId))
      return bad(`branch ${c.branchId} already exists in ${c.xid}`);
    const dataBytes = textEncoder.encode(c.applicationData).length;
    if (dataBytes > MAX_APPLICATION_DATA_BYTES) {
      return bad(
        `application data is ${dataBytes} bytes, more than the limit of ${MAX_APPLICATION_DATA_BYTES}`,
      );
    }
    let rows: string[] = [];
    if (c.lockKey !== '') {
      try {
        rows = parseLockKey(c.resourceId, c.lockKey);
      } catch (err) {
        if (err instanceof BadRequestError) return bad(err.message);
        throw err;
      }
    }
    // The leader's id source chose it; its shape was checked above. Kept for the branch's
    // life, as are its rows: flat copies (interned.ts).
    const branchId = detached(c.branchId) as BranchId;
    rows = rows.length === 0 ? NO_ROWS : rows.map(detached);
    const branch: BranchSession = {
      branchId,
      xid: session.xid,
      type: c.type,
      resourceId: this.interned.of(c.resourceId),
      lockKey: detached(c.lockKey),
      applicationData: detached(c.applicationData),
      status: BranchStatus.Registered,
      clientId: this.interned.of(c.clientId),
      // A command logged before branches kept their application has none: '' (legacy).
      applicationId: this.interned.of(c.applicationId ?? ''),
      lockedRows: rows,
    };
    // The branch itself is its rows' holder in the lock table (no record of the table's own).
    const acquired = this.locks.acquire(branch);
    if (!acquired.ok) {
      return reject({
        code: 'LOCK_CONFLICT',
        message: `rows of ${c.xid} branch ${c.branchId} are held by ${acquired.holdingXid}`,
        holdingXid: acquired.holdingXid,
        rows: acquired.rows,
      });
    }
    // A new array of the exact size: push would grow the array to 17 slots.
    session.branches = appended(session.branches, branch);
    this.usage.branchAdded(c.applicationData);
    return ok({ branchId });
  }

  private branchReport(c: BranchReportCommand): Outcome<CommandResults['BranchReport']> {
    const session = this.live(c.xid);
    if (!isSession(session)) return reject(session);
    const branch = findBranch(session, c.branchId);
    if (!branch) return bad(`${c.xid} has no branch ${c.branchId}`);
    if (!isPhaseOneStatus(c.status) || c.status === BranchStatus.Registered) {
      return bad(
        `a branch reports PhaseOne_Done, PhaseOne_Failed or PhaseOne_Timeout, not ${c.status}`,
      );
    }
    if (c.applicationData !== null) {
      const dataBytes = textEncoder.encode(c.applicationData).length;
      if (dataBytes > MAX_APPLICATION_DATA_BYTES) {
        return bad(
          `application data is ${dataBytes} bytes, more than the limit of ${MAX_APPLICATION_DATA_BYTES}`,
        );
      }
    }
    // A phase-one outcome is reported once, while the transaction is undecided; the same
    // report again (same data) is a harmless retry, a different one is refused: a branch's
    // data must not change under a decision already taken on it.
    if (branch.status === c.status) {
      if (c.applicationData !== null && c.applicationData !== branch.applicationData)
        return illegal(session, `branch ${c.branchId} already reported, with other data`);
      return ok({ status: branch.status });
    }
    if (session.status !== GlobalStatus.Begin)
      return illegal(session, 'a branch reports its phase one only before the decision');
    if (branch.status !== BranchStatus.Registered)
      return illegal(session, `branch ${c.branchId} is already ${branch.status}`);
    branch.status = c.status;
    if (c.applicationData !== null) {
      this.usage.dataChanged(branch.applicationData, c.applicationData);
      branch.applicationData = detached(c.applicationData);
    }
    return ok({ status: branch.status });
  }

  private changeGlobalStatus(
    c: ChangeGlobalStatusCommand,
  ): Outcome<CommandResults['ChangeGlobalStatus']> {
    const session = this.live(c.xid);
    if (!isSession(session)) return reject(session);
    const fenced = fence(session, c.term);
    if (fenced) return reject(fenced);
    if (session.status !== c.from) return illegal(session, `expected ${c.from}`);
    if (!canTransition(c.from, c.to)) return illegal(session, `${c.from} may not become ${c.to}`);
    if (isSuccessfulEnd(c.to))
      return illegal(session, `${c.to} is reached by FinishGlobal, once every branch is done`);
    if (c.from === GlobalStatus.Begin) {
      if (c.to === GlobalStatus.TimeoutRollbacking && c.at < session.deadline) {
        return illegal(session, `not timed out before its deadline ${session.deadline}`);
      }
      if (
        (c.to === GlobalStatus.Committing || c.to === GlobalStatus.AsyncCommitting) &&
        c.at >= session.deadline
      ) {
        return illegal(
          session,
          `past its deadline ${session.deadline}: it can only be rolled back`,
        );
      }
      if (c.to === GlobalStatus.AsyncCommitting && !session.branches.every(canBranchCommitAsync)) {
        return illegal(session, 'a branch that is not AT cannot be committed asynchronously');
      }
    }
    session.status = c.to;
    session.statusChangedAt = c.at;
    if (c.from === GlobalStatus.Begin && decisionOf(c.to) === 'commit')
      this.releaseAtLocks(session);
    return ok({ status: session.status });
  }

  private branchPhaseTwoResult(
    c: BranchPhaseTwoResultCommand,
  ): Outcome<CommandResults['BranchPhaseTwoResult']> {
    const session = this.live(c.xid);
    if (!isSession(session)) return reject(session);
    const fenced = fence(session, c.term);
    if (fenced) return reject(fenced);
    if (!isPhaseTwoInFlight(session.status)) return illegal(session, 'phase two is not running');
    const decision = decisionOf(session.status)!;
    if (!phaseTwoStatusesFor(decision).includes(c.status))
      return bad(`${c.status} is not a result of a phase-two ${decision}`);
    const branch = findBranch(session, c.branchId);
    if (!branch) return bad(`${c.xid} has no branch ${c.branchId}`);
    if (branch.status === c.status) return ok({ status: branch.status, releasedRows: 0 });
    if (isBranchEndStatus(branch.status))
      return illegal(session, `branch ${c.branchId} already ended ${branch.status}`);
    branch.status = c.status;
    const releasedRows =
      c.status === branchDoneStatusFor(decision) ? this.releaseBranchLocks(branch) : 0;
    return ok({ status: branch.status, releasedRows });
  }

  private removeBranch(c: RemoveBranchCommand): Outcome<CommandResults['RemoveBranch']> {
    const session = this.live(c.xid);
    if (!isSession(session)) return reject(session);
    const fenced = fence(session, c.term);
    if (fenced) return reject(fenced);
    const index = session.branches.findIndex((b) => b.branchId === c.branchId);
    const branch = session.branches[index];
    if (!branch) return bad(`${c.xid} has no branch ${c.branchId}`);
    const removable =
      branch.status === BranchStatus.PhaseOne_Failed ||
      branch.status === BranchStatus.PhaseTwo_Committed ||
      branch.status === BranchStatus.PhaseTwo_Rollbacked;
    if (!removable)
      return illegal(
        session,
        `branch ${c.branchId} is ${branch.status} and still has phase-two work`,
      );
    const releasedRows = this.releaseBranchLocks(branch);
    session.branches.splice(index, 1);
    this.usage.branchRemoved(branch.applicationData);
    return ok({ releasedRows });
  }

  private retryScheduled(c: RetryScheduledCommand): Outcome<CommandResults['RetryScheduled']> {
    const session = this.live(c.xid);
    if (!isSession(session)) return reject(session);
    const fenced = fence(session, c.term);
    if (fenced) return reject(fenced);
    if (!isPhaseTwoInFlight(session.status)) return illegal(session, 'phase two is not running');
    if (session.retry.stopped) return illegal(session, 'an operator stopped its retries');
    if (c.attempt <= session.retry.attempts)
      return illegal(
        session,
        `attempt ${c.attempt} is not after attempt ${session.retry.attempts}`,
      );
    const retry = ownRetry(session);
    retry.attempts = c.attempt;
    retry.nextRetryAt = c.nextRetryAt;
    retry.retryDeadline ??= c.retryDeadline;
    return ok({
      attempt: c.attempt,
      nextRetryAt: c.nextRetryAt,
      retryDeadline: retry.retryDeadline,
    });
  }

  private retryStopped(c: RetryStoppedCommand): Outcome<CommandResults['RetryStopped']> {
    const session = this.live(c.xid);
    if (!isSession(session)) return reject(session);
    const fenced = fence(session, c.term);
    if (fenced) return reject(fenced);
    if (!isPhaseTwoInFlight(session.status))
      return illegal(session, 'only a transaction in phase two has retries to stop');
    if (c.horizon !== undefined && (session.retry.retryDeadline ?? 0) > c.horizon)
      return illegal(
        session,
        `its retry horizon moved past ${c.horizon} (a forced resume) after the driver judged it passed`,
      );
    ownRetry(session).stopped = true;
    return ok({ stopped: true as const });
  }

  private retryResumed(c: RetryResumedCommand): Outcome<CommandResults['RetryResumed']> {
    const session = this.live(c.xid);
    if (!isSession(session)) return reject(session);
    const fenced = fence(session, c.term);
    if (fenced) return reject(fenced);
    const resumed = resumedStatusOf(session.status);
    if (resumed !== null) {
      // A failed end an operator resumes: back to its driving status, its unretryable
      // branches told again; finished branches stay finished (never told twice).
      for (const branch of session.branches) branch.status = retryableAgainOf(branch.status);
      session.status = resumed;
      session.statusChangedAt = c.at;
    } else if (!isPhaseTwoInFlight(session.status)) {
      return illegal(
        session,
        'only a transaction in phase two, or one that failed it, has retries to resume',
      );
    } else if (!session.retry.stopped && !isStuck(session) && c.force !== true) {
      // Neither stopped nor stuck: a harmless repeat (an operator retrying after a failover).
      return ok({ stopped: false as const, status: session.status });
    }
    // Driven again at once, with a renewed alarm time.
    const retry = ownRetry(session);
    retry.stopped = false;
    retry.nextRetryAt = c.at;
    retry.retryDeadline = c.retryDeadline;
    return ok({ stopped: false as const, status: session.status });
  }

  private markResolved(c: MarkResolvedCommand): Outcome<CommandResults['MarkResolved']> {
    const session = this.live(c.xid);
    if (!isSession(session)) return reject(session);
    const fenced = fence(session, c.term);
    if (fenced) return reject(fenced);
    const stoppedInFlight = isPhaseTwoInFlight(session.status) && session.retry.stopped;
    if (!isFailedEnd(session.status) && !stoppedInFlight) {
      return illegal(
        session,
        'only a failed transaction, or one whose retries an operator stopped, can be marked resolved',
      );
    }
    if (!isFailedEnd(session.status)) {
      session.status = failedStatusOf(session.status);
      session.statusChangedAt = c.at;
    }
    return ok(this.endSession(session, c.at, c.operator));
  }

  private globalReport(c: GlobalReportCommand): Outcome<CommandResults['GlobalReport']> {
    const session = this.changeable(c.xid);
    if (!session) {
      const record = this.finished.get(c.xid);
      // The same final report again (a TM retry after failover) is answered, not refused.
      if (record && record.status === c.status)
        return ok({ status: record.status, finished: null, changed: false, decided: false });
      return reject(this.missing(c.xid));
    }
    const fenced = fence(session, c.term);
    if (fenced) return reject(fenced);
    const notSaga = session.branches.find((b) => b.type !== BranchType.SAGA);
    if (notSaga)
      return illegal(
        session,
        `a TM reports the status only of a Saga transaction; branch ${notSaga.branchId} is ${notSaga.type}`,
      );
    if (session.status === c.status)
      return ok({ status: session.status, finished: null, changed: false, decided: false });
    if (c.status === GlobalStatus.AsyncCommitting || !canReach(session.status, c.status)) {
      return illegal(session, `a report of ${c.status} is not reachable`);
    }
    const decided = session.status === GlobalStatus.Begin;
    if (isSuccessfulEnd(c.status)) {
      // The TM's engine ran phase two itself: every branch is done by its word.
      const decision = decisionOf(c.status)!;
      const failed = session.branches.find((b) => isUnretryableFailure(b.status));
      if (failed)
        return illegal(
          session,
          `branch ${failed.branchId} failed ${failed.status}; report a failed status instead`,
        );
      session.branches = session.branches.filter((b) => {
        if (b.status !== BranchStatus.PhaseOne_Failed) return true;
        this.releaseBranchLocks(b);
        this.usage.branchRemoved(b.applicationData);
        return false;
      });
      for (const branch of session.branches) {
        branch.status = branchDoneStatusFor(decision);
        this.releaseBranchLocks(branch);
      }
      session.status = c.status;
      session.statusChangedAt = c.at;
      return ok({
        status: c.status,
        finished: this.endSession(session, c.at, null),
        changed: true,
        decided,
      });
    }
    session.status = c.status;
    session.statusChangedAt = c.at;
    return ok({ status: c.status, finished: null, changed: true, decided });
  }

  private finishGlobal(c: FinishGlobalCommand): Outcome<CommandResults['FinishGlobal']> {
    const session = this.live(c.xid);
    if (!isSession(session)) return reject(session);
    const fenced = fence(session, c.term);
    if (fenced) return reject(fenced);
    if (!isSuccessfulEnd(c.status))
      return bad(
        `FinishGlobal ends with Committed, Rollbacked or TimeoutRollbacked, not ${c.status}`,
      );
    if (!canTransition(session.status, c.status))
      return illegal(session, `may not become ${c.status}`);
    const done = branchDoneStatusFor(decisionOf(c.status)!);
    // The folded last result is checked as its BranchPhaseTwoResult would be (the fence and the
    // status were checked above), before anything changes: a refusal leaves the session as it was.
    let last: BranchSession | undefined;
    if (c.lastBranch !== undefined) {
      if (c.lastBranch.status !== done)
        return bad(`FinishGlobal.lastBranch.status must be ${done}, not ${c.lastBranch.status}`);
      last = findBranch(session, c.lastBranch.branchId);
      if (!last) return bad(`${c.xid} has no branch ${c.lastBranch.branchId}`);
      if (last.status !== done && isBranchEndStatus(last.status))
        return illegal(session, `branch ${last.branchId} already ended ${last.status}`);
    }
    const pending = session.branches.find((b) => b !== last && b.status !== done);
    if (pending)
      return illegal(session, `branch ${pending.branchId} is ${pending.status}, not ${done}`);
    if (last && last.status !== done) {
      last.status = done;
      this.releaseBranchLocks(last);
    }
    session.status = c.status;
    session.statusChangedAt = c.at;
    return ok(this.endSession(session, c.at, null));
  }

  private commitGlobal(c: CommitGlobalCommand): Outcome<DecisionResult> {
    const session = this.changeable(c.xid);
    if (!session) return this.answerEnded(c.xid);
    const fenced = fence(session, c.term);
    if (fenced) return reject(fenced);
    if (session.status !== GlobalStatus.Begin) return ok(undecided(session));
    if (c.at >= session.deadline) return ok(this.decide(session, 'timeout', c));
    if (session.branches.length === 0) return ok(this.decide(session, 'onePhase', c));
    const async = session.branches.every(canBranchCommitAsync);
    return ok(this.decide(session, async ? 'async' : 'sync', c));
  }

  private rollbackGlobal(c: RollbackGlobalCommand): Outcome<DecisionResult> {
    const session = this.changeable(c.xid);
    if (!session) return this.answerEnded(c.xid);
    const fenced = fence(session, c.term);
    if (fenced) return reject(fenced);
    if (session.status !== GlobalStatus.Begin) return ok(undecided(session));
    if (c.timeout && c.at < session.deadline)
      return illegal(session, `not timed out before its deadline ${session.deadline}`);
    return ok(this.decide(session, c.timeout ? 'timeout' : 'rollback', c));
  }

  /** Records a decision taken in apply; a branchless session ends in the same entry. */
  private decide(
    session: GlobalSession,
    how: 'onePhase' | 'async' | 'sync' | 'rollback' | 'timeout',
    c: { at: number; term: number },
  ): DecisionResult {
    const status = DECIDED_STATUS[how];
    session.status = status;
    session.statusChangedAt = c.at;
    session.driverTerm = Math.max(session.driverTerm, c.term);
    if (how === 'async' || how === 'sync') this.releaseAtLocks(session);
    if (session.branches.length > 0 && how !== 'onePhase')
      return { status, decided: true, finished: null };
    session.status = successfulEndOf(status);
    return {
      status: session.status,
      decided: true,
      finished: this.endSession(session, c.at, null),
    };
  }

  /** A commit or rollback of a session that left the live set answers its final status. */
  private answerEnded(xid: string): Outcome<DecisionResult> {
    const record = this.finished.get(xid);
    if (!record) return reject(this.missing(xid));
    return ok({ status: record.status, decided: false, finished: null });
  }

  private acquireDriver(c: AcquireDriverCommand): Outcome<CommandResults['AcquireDriver']> {
    const session = this.live(c.xid);
    if (!isSession(session)) return reject(session);
    const fenced = fence(session, c.term);
    if (fenced) return reject(fenced);
    session.driverTerm = c.term;
    return ok({ driverTerm: c.term });
  }

  // -------------------------------------------------------------------------------------
  // Helpers that mutate
  // -------------------------------------------------------------------------------------

  /** Counts `xid` again after a command: the failed set, the status counts. */
  private track(xid: string, beforeStatus: GlobalStatus | null, beforeStuck: boolean): void {
    const session = this.sessions.get(xid);
    if (session && isFailedEnd(session.status)) this.failed.add(xid);
    else this.failed.delete(xid);
    if (beforeStatus !== null) this.statusCounts.remove(beforeStatus, beforeStuck);
    if (session !== undefined) this.statusCounts.add(session);
  }

  /** Live sessions in a *Failed end state (counted apart from the live-session limit). */
  failedSessionCount(): number {
    return this.failed.size;
  }

  /**
   * At the commit decision AT branches free their rows (as Seata: an AT commit only deletes
   * undo logs, the data is final); on rollback they keep them until rolled back.
   */
  private releaseAtLocks(session: GlobalSession): void {
    for (const branch of session.branches)
      if (branch.type === BranchType.AT && branch.lockedRows.length > 0)
        this.releaseBranchLocks(branch);
  }

  private releaseBranchLocks(branch: BranchSession): number {
    const released = this.locks.release(branch);
    assert(
      released === branch.lockedRows.length,
      () =>
        `branch ${branch.branchId} of ${branch.xid} held ${branch.lockedRows.length} rows, the lock table ${released}`,
    );
    branch.lockedRows = NO_ROWS;
    return released;
  }

  /**
   * Leaves the live set: frees every row (no lock outlives its transaction) and keeps the final
   * status.
   */
  private endSession(
    session: GlobalSession,
    at: number,
    resolvedBy: string | null,
  ): FinishedSession {
    assert(isEndStatus(session.status), () => `${session.xid} ends while ${session.status}`);
    for (const branch of session.branches) this.releaseBranchLocks(branch);
    this.sessions.delete(session.xid);
    this.xids.delete(session.xid);
    this.usage.sessionRemoved(session);
    this.rememberFinished({ xid: session.xid, status: session.status, finishedAt: at, resolvedBy });
    return {
      xid: session.xid,
      status: session.status,
      branches: session.branches.map(cloneBranch),
    };
  }

  private rememberFinished(record: FinishedRecord): void {
    this.finished.set(record.xid, record);
    // Kept for finishedRetentionMs of command time (never goes backwards, so insertion
    // order is time order and pruning stops at the first young record); the count bound
    // is a memory guard far above what the retention holds.
    const horizon = record.finishedAt - this.retention.finishedRetentionMs;
    for (const [xid, old] of this.finished) {
      if (this.finished.size <= this.retention.finishedEntries && old.finishedAt > horizon) break;
      this.finished.delete(xid);
      this.capturing?.finished.forgotten(old);
    }
  }

  /**
   * Answers a retried request (same kind and requestId) with its first result. Results are
   * kept for dedupRetentionMs of command time; when the table is full of younger ones, a
   * new request is refused (CAPACITY) instead of evicting one a client may still retry.
   */
  private withDedup<T>(
    kind: string,
    requestId: string | null,
    at: number,
    run: () => Outcome<T>,
  ): Outcome<T> {
    if (requestId === null) return run();
    const key = compactKey(kind, requestId);
    const remembered = this.dedup.getKey(key);
    if (remembered !== undefined) return ok(remembered as T);
    if (this.dedupFull(at)) {
      return reject({
        code: 'CAPACITY',
        message: `${this.retention.dedupEntries} requests of the last ${this.retention.dedupRetentionMs} ms are remembered, the limit; retry later`,
      });
    }
    const outcome = run();
    // Only a result is remembered: a refused request changed nothing, so a retry re-decides.
    if (outcome.ok) {
      this.pruneDedup(at);
      // Frozen: the same object answers every retry, so no caller may change it.
      this.dedup.addKey(key, Object.freeze(outcome.value), at);
    }
    return outcome;
  }

  /** True when no entry could be added at `at` without evicting one younger than the retention. */
  private dedupFull(at: number): boolean {
    if (this.dedup.size < this.retention.dedupEntries) return false;
    return this.dedup.oldestAt()! + this.retention.dedupRetentionMs > at;
  }

  private pruneDedup(at: number): number {
    return this.dedup.forgetUntil(at - this.retention.dedupRetentionMs);
  }

  /** Prune: what the retention lets go at `at`, as the next command would have let go. */
  private prune(at: number): CommandResults['Prune'] {
    let finished = 0;
    for (const [xid, old] of this.finished) {
      if (old.finishedAt + this.retention.finishedRetentionMs > at) break;
      this.finished.delete(xid);
      this.capturing?.finished.forgotten(old);
      finished++;
    }
    return { finished, dedup: this.pruneDedup(at) };
  }

  /**
   * The command time at which a Prune would forget something: the oldest finished record's
   * or remembered result's end of retention (Infinity when there is none).
   */
  prunableAt(): number {
    const oldestFinished = this.finished.values().next().value;
    const oldestDedup = this.dedup.oldestAt();
    return Math.min(
      oldestFinished ? oldestFinished.finishedAt + this.retention.finishedRetentionMs : Infinity,
      oldestDedup !== undefined ? oldestDedup + this.retention.dedupRetentionMs : Infinity,
    );
  }

  // -------------------------------------------------------------------------------------
  // Lookups
  // -------------------------------------------------------------------------------------

  /** The live session `xid`, about to be changed (or a rejection naming why there is none). */
  private live(xid: string): GlobalSession | Rejection {
    return this.changeable(xid) ?? this.missing(xid);
  }

  /**
   * The live session `xid`, which the caller may change: every handler finds the session it
   * changes here (or in live()). While a capture is under way, a session it captured is
   * copied first (copy-on-write: the capture encodes the copy).
   */
  private changeable(xid: string): GlobalSession | undefined {
    const session = this.sessions.get(xid);
    const image = this.capturing;
    if (session !== undefined && image !== null)
      if (!image.before.has(session) && !image.born.has(session))
        image.before.set(session, cloneSession(session));
    return session;
  }

  private missing(xid: string): Rejection {
    const record = this.finished.get(xid);
    if (record)
      return {
        code: 'ILLEGAL_STATUS',
        message: `${xid} is ${record.status}: the transaction has ended`,
        xid,
        globalStatus: record.status,
      };
    return { code: 'UNKNOWN_XID', message: `unknown global transaction ${xid}`, xid };
  }

  // -------------------------------------------------------------------------------------
  // View
  // -------------------------------------------------------------------------------------

  getSession(xid: string): GlobalSession | undefined {
    const session = this.sessions.get(xid);
    return session ? cloneSession(session) : undefined;
  }

  getFinished(xid: string): FinishedRecord | undefined {
    const record = this.finished.get(xid);
    return record ? { ...record } : undefined;
  }

  liveSessionCount(): number {
    return this.sessions.size;
  }

  countedLiveSessions(): number {
    return this.sessions.size - this.failed.size;
  }

  liveXids(): Xid[] {
    return Array.from(this.sessions.values(), (session) => session.xid);
  }

  liveXidPage(after: string | null, limit: number): Xid[] {
    assert(Number.isSafeInteger(limit) && limit >= 0, () => `page limit ${limit}`);
    return this.xids.page(after, limit) as Xid[];
  }

  liveStatusCounts(): LiveStatusCountsView {
    return this.statusCounts;
  }

  liveSessionsSlice(
    cursor: LiveCursor | null,
    limit: number,
    visit: (session: LiveSessionRef) => void,
  ): LiveCursor | null {
    assert(Number.isSafeInteger(limit) && limit > 0, () => `slice limit ${limit}`);
    let walk: SessionWalk;
    if (cursor === null) walk = new SessionWalk(this.sessions);
    else {
      assert(cursor instanceof SessionWalk, 'a live cursor of another view');
      // A restore replaced the map (not on a leader in practice): the walk starts over;
      // visiting a session twice is harmless to a sweep.
      walk = cursor.over === this.sessions ? cursor : new SessionWalk(this.sessions);
    }
    for (let i = 0; i < limit; i++) {
      const next = walk.iterator.next();
      if (next.done === true) return null;
      visit(next.value);
    }
    return walk;
  }

  isLive(xid: string): boolean {
    return this.sessions.has(xid);
  }

  isLockable(xid: string, rows: readonly string[]): boolean {
    return this.locks.isLockable(xid, rows);
  }

  lockHolder(row: string): { xid: string; branchIds: string[] } | undefined {
    const holder = this.locks.holderOf(row);
    return holder ? { xid: holder.xid, branchIds: [...holder.branchIds].sort() } : undefined;
  }

  forEachLockedRow(visit: (row: string, holder: LockHolder) => void): void {
    this.locks.forEachRow(visit);
  }

  lockedRowCount(): number {
    return this.locks.size;
  }

  liveUsage(): LiveUsageView {
    return this.usage;
  }

  forEachLiveStatus(visit: (session: LiveStatusView) => void): void {
    for (const s of this.sessions.values())
      visit({
        xid: s.xid,
        status: s.status,
        reportedStatus: reportedStatus(s),
        beginTime: s.beginTime,
        statusChangedAt: s.statusChangedAt,
        retryAttempts: s.retry.attempts,
        stuck: isStuck(s),
      });
  }

  commandTime(): number {
    return this.lastCommandTime;
  }

  /** Every locked row with its holder (for checkers and the console). */
  lockEntries(): { row: string; xid: string; branchIds: string[] }[] {
    return [...this.locks.entries()].map(([row, h]) => ({
      row,
      xid: h.xid,
      branchIds: [...h.branchIds].sort(),
    }));
  }

  // -------------------------------------------------------------------------------------
  // Snapshot
  // -------------------------------------------------------------------------------------

  /** The whole state, canonically encoded: equal states give equal bytes. */
  snapshot(): Uint8Array {
    this.checkInvariants();
    return encodeSnapshot({
      version: SNAPSHOT_FORMAT_VERSION,
      sessions: [...this.sessions.values()],
      finished: [...this.finished.values()],
      dedup: this.dedup.rows(),
      commandTime: this.lastCommandTime,
    });
  }

  /**
   * The same bytes as snapshot() at this point (the capture point), made in slices (issue 19:
   * ~1.7 s in one go at 100,000 live transactions), while commands go on applying: each
   * step() does a bounded part (the sort, the check of SNAPSHOT_SLICE_ROWS rows of what it
   * captured, or the encode of as many) and the last returns the bytes.
   *
   * Copy-on-write (issue 12: a capture used to hold applies for 0.3–1.0 s in the lock bench):
   * at the point it takes the list of live sessions (references), a reader of the finished
   * records as of the point (FinishedCapture: O(1); a record never changes, one forgotten
   * before the capture read it is kept) and one of the dedup table's entries
   * (DedupTable.capture: likewise); afterwards a handler about to change a session it
   * captured copies it first (changeable()), and sessions begun since are left out. So the
   * bytes are the state's at the point (test/coordinator/snapshot.test.ts checks them
   * against snapshot() of that state, with commands applied between the slices).
   *
   * The check: what it encodes is checked as it would be restored (each session and branch,
   * finished records not live, the live usage and failed count recounted against the
   * counts at the point, distinct locked rows against the lock table's size at the point).
   * The cross-check of each row against the lock table needs the live state at one moment:
   * checkInvariants() (tests, restore, snapshot()).
   *
   * A restore, or another capture, ends this one: its next step() fails (AssertionFailure).
   */
  snapshotInSlices(sliceRows = SNAPSHOT_SLICE_ROWS): {
    /** Commands may apply between the steps (the driver does not hold them). */
    readonly appliesMeanwhile: true;
    step(): Uint8Array | null;
  } {
    assert(sliceRows >= 1, 'a snapshot slice holds at least one row');
    assert(this.dedup.size <= this.retention.dedupEntries, 'dedup map is over its bound');
    assert(
      this.finished.size <= this.retention.finishedEntries,
      'recently-finished map is over its bound',
    );
    const image: CaptureImage = {
      before: new Map(),
      born: new Set(),
      finished: new FinishedCapture(this.finished),
    };
    this.capturing = image;
    const rows = this.snapshotRows();
    const sizeHint =
      this.lastSnapshotRows > 0
        ? Math.ceil((this.lastSnapshotBytes * rows) / this.lastSnapshotRows)
        : this.lastSnapshotBytes;
    const steps = this.captureSteps(image, sliceRows, {
      sizeHint,
      // In xid order, as encoded (the index: no sort).
      sessions: this.xids.all().map((xid) => this.sessions.get(xid)!),
      dedup: this.dedup.capture(),
      commandTime: this.lastCommandTime,
      usage: this.usage.copy(),
      failed: this.failed.size,
      lockedRows: this.locks.size,
    });
    return {
      appliesMeanwhile: true,
      step: () => {
        assert(this.capturing === image, 'a restore or another capture ended this capture');
        const r = steps.next();
        if (!r.done) return null;
        this.capturing = null;
        this.lastSnapshotBytes = r.value.length;
        this.lastSnapshotRows = rows;
        return r.value;
      },
    };
  }

  /** The steps of a capture (snapshotInSlices): sort, check, encode. */
  private *captureSteps(
    image: CaptureImage,
    sliceRows: number,
    at: {
      sizeHint: number;
      sessions: GlobalSession[];
      dedup: DedupCapture;
      commandTime: number;
      usage: LiveUsage;
      failed: number;
      lockedRows: number;
    },
  ): Generator<void, Uint8Array, void> {
    const { sessions } = at;
    const finished = image.finished;
    // A session as of the point: its copy if it changed since (xids never change).
    const asCaptured = (s: GlobalSession) => image.before.get(s) ?? s;
    const usage = new LiveUsage();
    let [failed, lockedRows] = [0, 0];
    for (let i = 0; i < sessions.length; i++) {
      if (i > 0 && i % sliceRows === 0) yield;
      const session = asCaptured(sessions[i]!);
      checkCapturedSession(session);
      assert(
        i === 0 || compareStrings(sessions[i - 1]!.xid, session.xid) < 0,
        () => `${session.xid} is live twice or out of xid order`,
      );
      usage.sessionAdded(session.applicationId);
      for (const branch of session.branches) usage.branchAdded(branch.applicationData);
      if (isFailedEnd(session.status)) failed++;
      lockedRows += distinctLockedRows(session);
    }
    assert(
      usage.equals(at.usage),
      () => `live usage said ${at.usage.describe()}, the captured sessions ${usage.describe()}`,
    );
    assert(
      failed === at.failed,
      () => `${failed} captured sessions are failed, the failed set held ${at.failed}`,
    );
    assert(
      lockedRows === at.lockedRows,
      () =>
        `captured branches record ${lockedRows} distinct rows, the lock table held ${at.lockedRows}`,
    );
    yield;
    return yield* encodeSnapshotInSlices(
      {
        version: SNAPSHOT_FORMAT_VERSION,
        dedupCount: at.dedup.size,
        dedupRows: (from, to) => at.dedup.rowsBetween(from, to),
        finishedCount: finished.count,
        finishedRows: (from, to) => {
          const rows = finished.read(from, to);
          for (const { xid } of rows)
            assert(!holdsXid(sessions, xid), () => `${xid} is both live and finished`);
          return rows;
        },
        sessionCount: sessions.length,
        sessionRows: (from, to) => sessions.slice(from, to).map(asCaptured),
        commandTime: at.commandTime,
      },
      sliceRows,
      at.sizeHint,
    );
  }

  /** The rows a snapshot of the state now holds (sessions, finished records, request ids). */
  private snapshotRows(): number {
    return this.sessions.size + this.finished.size + this.dedup.size;
  }

  /**
   * A session decoded from a snapshot as apply would have built it: one copy of the repeated
   * strings (interned.ts), flat copies of the rest (no slice of the decoded snapshot), the
   * shared records of a session that never retried or has no branch.
   */
  private internSession(session: GlobalSession): void {
    const of = (v: string) => this.interned.of(v);
    session.xid = detached(session.xid) as Xid;
    session.transactionId = detached(session.transactionId);
    session.applicationId = of(session.applicationId);
    session.transactionServiceGroup = of(session.transactionServiceGroup);
    session.name = of(session.name);
    const r = session.retry;
    const untouched = typeof r === 'object' && r !== null && !r.stopped && r.attempts === 0;
    if (untouched && r.nextRetryAt === null && r.retryDeadline === null) session.retry = NO_RETRY;
    if (session.branches.length === 0) session.branches = NO_BRANCHES;
    for (const branch of session.branches) {
      branch.xid = session.xid;
      branch.branchId = detached(branch.branchId) as BranchId;
      branch.resourceId = of(branch.resourceId);
      branch.clientId = of(branch.clientId);
      branch.applicationId = of(branch.applicationId);
      branch.lockKey = detached(branch.lockKey);
      branch.applicationData = detached(branch.applicationData);
      branch.lockedRows =
        branch.lockedRows.length === 0 ? NO_ROWS : branch.lockedRows.map(detached);
    }
  }

  restore(bytes: Uint8Array): void {
    // The capture under way (if any) no longer describes this machine.
    this.capturing = null;
    const data = decodeSnapshot(bytes);
    const sessions = new Map<string, GlobalSession>();
    const locks = new LockTable();
    for (const session of data.sessions) {
      if (sessions.has(session.xid))
        throw new StorageCorruptError(`coordinator snapshot holds ${session.xid} twice`);
      this.internSession(session);
      sessions.set(session.xid, session);
      for (const branch of session.branches) {
        if (!locks.acquire(branch).ok) {
          throw new StorageCorruptError(
            `coordinator snapshot has conflicting locks for ${session.xid} branch ${branch.branchId}`,
          );
        }
      }
    }
    // Format 1 kept no time: such entries count as remembered at the snapshot's command time.
    const dedup = DedupTable.of(
      data.dedup.map(([key, value, at]): DedupRow => [key, value, at ?? data.commandTime ?? 0]),
    );
    const previous = {
      sessions: this.sessions,
      locks: this.locks,
      finished: this.finished,
      dedup: this.dedup,
      lastCommandTime: this.lastCommandTime,
      failed: this.failed,
      usage: this.usage,
      statusCounts: this.statusCounts,
      xids: this.xids,
    };
    this.sessions = sessions;
    this.usage = LiveUsage.of(sessions.values());
    this.statusCounts = LiveStatusCounts.of(sessions.values());
    this.xids = XidIndex.of(sessions.keys());
    this.locks = locks;
    this.finished = new Map(data.finished.map((r) => [r.xid, r]));
    this.lastCommandTime = data.commandTime ?? 0;
    this.failed = new Set(
      [...sessions.values()].filter((x) => isFailedEnd(x.status)).map((x) => x.xid),
    );
    this.dedup = dedup;
    try {
      this.checkInvariants();
    } catch (err) {
      Object.assign(this, previous);
      throw new StorageCorruptError('coordinator snapshot breaks an invariant', { cause: err });
    }
    // The next capture's buffer: a restarted node's first one was sized from nothing.
    this.lastSnapshotBytes = bytes.length;
    this.lastSnapshotRows = this.snapshotRows();
  }

  /**
   * Asserts the invariants the state must always hold (run around every snapshot write and
   * read; tests run it after every command). A failure is a bug, not a recoverable error.
   */
  checkInvariants(): void {
    const checks = this.invariantChecks(Infinity);
    while (!checks.next().done);
  }

  /**
   * checkInvariants in slices: yields after every `sliceRows` sessions, lock rows or finished
   * records (the sliced snapshot runs it across turns; the state must not change meanwhile).
   */
  private *invariantChecks(sliceRows: number): Generator<void, void, void> {
    let [visited, lockedRows] = [0, 0];
    const slice = () => ++visited % sliceRows === 0;
    for (const [xid, session] of this.sessions) {
      if (slice()) yield;
      assert(session.xid === xid, () => `session keyed ${xid} is ${session.xid}`);
      checkCapturedSession(session);
      for (const branch of session.branches) {
        for (const row of branch.lockedRows) {
          const holder = this.locks.holderOf(row);
          assert(
            holder?.xid === xid && holder.branchIds.includes(branch.branchId),
            () => `row ${row} of ${xid}/${branch.branchId} is not in the lock table`,
          );
        }
        lockedRows += branch.lockedRows.length;
      }
    }
    let tableRows = 0;
    for (const [row, holder] of this.locks.entries()) {
      if (slice()) yield;
      const session = this.sessions.get(holder.xid);
      assert(session !== undefined, () => `row ${row} is held by ${holder.xid}, which is not live`);
      for (const branchId of holder.branchIds) {
        const branch = findBranch(session, branchId);
        assert(
          branch?.lockedRows.includes(row),
          () => `row ${row} is held by ${holder.xid}/${branchId}, which does not record it`,
        );
        tableRows += 1;
      }
    }
    assert(
      lockedRows === tableRows,
      () => `branches record ${lockedRows} row locks, the lock table ${tableRows}`,
    );
    this.checkCounts();
    assert(this.dedup.size <= this.retention.dedupEntries, 'dedup map is over its bound');
    assert(
      this.finished.size <= this.retention.finishedEntries,
      'recently-finished map is over its bound',
    );
    for (const xid of this.finished.keys()) {
      if (slice()) yield;
      assert(!this.sessions.has(xid), () => `${xid} is both live and finished`);
    }
    let failed = 0;
    for (const session of this.sessions.values()) if (isFailedEnd(session.status)) failed += 1;
    assert(
      failed === this.failed.size && [...this.failed].every((x) => this.sessions.has(x)),
      () => `${failed} live sessions are failed, the failed set holds ${this.failed.size}`,
    );
  }

  /** The counts kept as commands apply, recounted (invariantChecks). */
  private checkCounts(): void {
    const counted = LiveUsage.of(this.sessions.values());
    assert(
      counted.equals(this.usage),
      () => `live usage says ${this.usage.describe()}, the sessions ${counted.describe()}`,
    );
    const statuses = LiveStatusCounts.of(this.sessions.values());
    assert(
      statuses.equals(this.statusCounts),
      () =>
        `status counts say ${this.statusCounts.describe()}, the sessions ${statuses.describe()}`,
    );
    this.xids.check((xid) => this.sessions.has(xid));
    assert(
      this.xids.size === this.sessions.size,
      () => `the xid index holds ${this.xids.size}, the live set ${this.sessions.size}`,
    );
  }
}

// ---------------------------------------------------------------------------------------

/**
 * The retry record of every session that never retried, and the branch list of every session
 * without branches: one shared frozen copy each instead of one per live session (issue 19).
 * A handler that changes them first takes a copy of its own (ownRetry, appended).
 */
const NO_RETRY: RetryInfo = Object.freeze({
  attempts: 0,
  nextRetryAt: null,
  retryDeadline: null,
  stopped: false,
});
const NO_BRANCHES = Object.freeze([]) as unknown as BranchSession[];
/** The rows of every branch that holds none (released, or registered without a lock key). */
const NO_ROWS = Object.freeze([]) as unknown as string[];

/** What a capture under way keeps (snapshotInSlices): the state as of its point. */
interface CaptureImage {
  /** Copies of captured sessions, taken before their first change since the point. */
  readonly before: Map<GlobalSession, GlobalSession>;
  /** Sessions begun since the point: not part of the capture. */
  readonly born: Set<GlobalSession>;
  /** The finished records as of the point. */
  readonly finished: FinishedCapture;
}

/**
 * The recently-finished map as of a capture's point, read once, oldest first, while commands
 * go on changing it: O(1) at the point. The map only grows at its end (records finished
 * since the point, which the capture leaves out: it reads `count`) and is pruned from its
 * start (oldest first), and a record never changes: so the k-th record forgotten since the
 * point is the capture's k-th, kept here if the capture has not read it yet; the rest is
 * read through a live iterator of the map, which skips the forgotten ones.
 */
class FinishedCapture {
  readonly count: number;
  private readonly live: IterableIterator<FinishedRecord>;
  /** Records read so far (the capture's positions 0 to read - 1). */
  private readCount = 0;
  /** Records forgotten since the point (the capture's positions 0 to forgot - 1). */
  private forgot = 0;
  /** Forgotten before they were read: their positions and records, in order. */
  private readonly kept: { at: number; record: FinishedRecord }[] = [];
  private keptHead = 0;

  constructor(finished: Map<string, FinishedRecord>) {
    this.count = finished.size;
    this.live = finished.values();
  }

  /** The state machine forgot `record`, the oldest of its map. */
  forgotten(record: FinishedRecord): void {
    const at = this.forgot++;
    if (at < this.count && at >= this.readCount) this.kept.push({ at, record });
  }

  /** Records `from` (the next unread) to `to` (exclusive), oldest first. */
  read(from: number, to: number): FinishedRecord[] {
    assert(
      from === this.readCount,
      () => `finished records read from ${from}, not ${this.readCount}`,
    );
    const out: FinishedRecord[] = [];
    for (let at = from; at < Math.min(to, this.count); at++) {
      let record: FinishedRecord | undefined;
      if (at < this.forgot) {
        const kept = this.kept[this.keptHead++];
        assert(kept?.at === at, () => `finished record ${at} was forgotten unread and not kept`);
        record = kept.record;
      } else record = this.live.next().value as FinishedRecord | undefined;
      assert(record !== undefined, () => `finished record ${at} of ${this.count} is missing`);
      out.push(record);
      this.readCount = at + 1;
    }
    return out;
  }
}

/**
 * The invariants of one session that need no other part of the state: a capture's check, and
 * the first part of checkInvariants()'s (which adds the cross-check with the lock table).
 */
function checkCapturedSession(session: GlobalSession): void {
  const xid = session.xid;
  assert(!isSuccessfulEnd(session.status), () => `${xid} is ${session.status} but still live`);
  assert(session.driverTerm >= 0, () => `${xid} has driver term ${session.driverTerm}`);
  for (const branch of session.branches) {
    assert(branch.xid === xid, () => `branch ${branch.branchId} of ${xid} names ${branch.xid}`);
    assert(
      typeof branch.applicationId === 'string',
      () => `branch ${branch.branchId} of ${xid} records no application`,
    );
    const done =
      branch.status === BranchStatus.PhaseTwo_Committed ||
      branch.status === BranchStatus.PhaseTwo_Rollbacked;
    assert(
      !done || branch.lockedRows.length === 0,
      () => `branch ${branch.branchId} of ${xid} is ${branch.status} but holds locks`,
    );
  }
}

/** Rows the session's branches lock, each counted once (its branches may share a row). */
function distinctLockedRows(session: GlobalSession): number {
  const branches = session.branches;
  if (branches.length === 1) {
    const rows = branches[0]!.lockedRows;
    return rows.length <= 1 ? rows.length : new Set(rows).size;
  }
  if (branches.length === 0) return 0;
  const rows = new Set<string>();
  for (const branch of branches) for (const row of branch.lockedRows) rows.add(row);
  return rows.size;
}

/** True when `sorted` (sessions sorted by xid) holds `xid`. */
function holdsXid(sorted: readonly GlobalSession[], xid: string): boolean {
  let [lo, hi] = [0, sorted.length - 1];
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const c = compareStrings(sorted[mid]!.xid, xid);
    if (c === 0) return true;
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return false;
}

/** The session's own retry record, ready to change. */
function ownRetry(session: GlobalSession): RetryInfo {
  if (session.retry === NO_RETRY) session.retry = { ...NO_RETRY };
  return session.retry;
}

/** `list` and `item` in a new array of exactly their size. */
function appended<T>(list: readonly T[], item: T): T[] {
  const out = new Array<T>(list.length + 1);
  for (let i = 0; i < list.length; i++) out[i] = list[i]!;
  out[list.length] = item;
  return out;
}

function fence(session: GlobalSession, term: number): Rejection | null {
  if (term >= session.driverTerm) return null;
  return {
    code: 'STALE_TERM',
    message: `term ${term} is stale for ${session.xid}: driven by term ${session.driverTerm}`,
    xid: session.xid,
    term,
    driverTerm: session.driverTerm,
  };
}

/** The leader's "now" a command carries (0 for commands that carry none). */
function commandTimeOf(c: Command): number {
  switch (c.kind) {
    case 'Begin':
      return c.beginTime;
    case 'RegisterBranch':
    case 'ChangeGlobalStatus':
    case 'RetryStopped':
    case 'RetryResumed':
    case 'MarkResolved':
    case 'GlobalReport':
    case 'FinishGlobal':
    case 'CommitGlobal':
    case 'RollbackGlobal':
    case 'Prune':
      return c.at;
    default:
      return 0;
  }
}

const DECIDED_STATUS = {
  onePhase: GlobalStatus.Committing,
  async: GlobalStatus.AsyncCommitting,
  sync: GlobalStatus.Committing,
  rollback: GlobalStatus.Rollbacking,
  timeout: GlobalStatus.TimeoutRollbacking,
} as const;

/** The answer to a commit or rollback of a session that is already decided. */
function undecided(session: GlobalSession): DecisionResult {
  return { status: reportedStatus(session), decided: false, finished: null };
}

function findBranch(session: GlobalSession, branchId: string): BranchSession | undefined {
  return session.branches.find((b) => b.branchId === branchId);
}

function isSession(value: GlobalSession | Rejection): value is GlobalSession {
  return 'xid' in value && 'branches' in value;
}

function ok<T>(value: T): Outcome<T> {
  return { ok: true, value };
}

function reject<T>(rejection: Rejection): Outcome<T> {
  return { ok: false, rejection };
}

function bad<T>(message: string): Outcome<T> {
  return reject({ code: 'BAD_REQUEST', message });
}

function illegal<T>(session: GlobalSession, message: string): Outcome<T> {
  return reject({
    code: 'ILLEGAL_STATUS',
    message: `${session.xid} is ${session.status}: ${message}`,
    xid: session.xid,
    globalStatus: session.status,
  });
}

/**
 * A walk over the live sessions map (liveSessionsSlice's cursor). A Map iterator follows the
 * map as it changes: entries deleted before it reaches them are skipped, entries added are
 * visited.
 */
class SessionWalk implements LiveCursor {
  readonly kind = 'live-cursor';
  readonly iterator: MapIterator<GlobalSession>;
  constructor(readonly over: Map<string, GlobalSession>) {
    this.iterator = over.values();
  }
}

export function cloneBranch(branch: BranchSession): BranchSession {
  return { ...branch, lockedRows: [...branch.lockedRows] };
}

export function cloneSession(session: GlobalSession): GlobalSession {
  return { ...session, branches: session.branches.map(cloneBranch), retry: { ...session.retry } };
}
