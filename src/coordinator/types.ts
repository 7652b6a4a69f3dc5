/**
 * The coordinator's vocabulary: the shared statuses and branch types
 * (src/shared/tc-vocabulary.ts), the session records and the legal-transition table of
 * global statuses. Statuses are strings inside Concord so logs, snapshots and tests read as
 * words; Seata's numbers exist only at the wire edges (src/shared/tc-codes.ts).
 */
import {
  BranchStatus,
  BranchType,
  GlobalStatus,
  decisionOf,
  isBranchStatus,
  isBranchType,
  isEndStatus,
  isFailedEnd,
  isFinalStatus,
  isGlobalStatus,
  type Decision,
} from '../shared/tc-vocabulary.ts';
import type { BranchId, Xid } from '../shared/ids.ts';

export {
  BranchStatus,
  BranchType,
  GlobalStatus,
  decisionOf,
  isBranchStatus,
  isBranchType,
  isEndStatus,
  isFailedEnd,
  isFinalStatus,
  isGlobalStatus,
};
export type { Decision };

/** Statuses a live session can hold (the rest exist only at the edge). */
export const SESSION_STATUSES: readonly GlobalStatus[] = [
  GlobalStatus.Begin,
  GlobalStatus.Committing,
  GlobalStatus.CommitRetrying,
  GlobalStatus.AsyncCommitting,
  GlobalStatus.Rollbacking,
  GlobalStatus.RollbackRetrying,
  GlobalStatus.TimeoutRollbacking,
  GlobalStatus.TimeoutRollbackRetrying,
  GlobalStatus.Committed,
  GlobalStatus.CommitFailed,
  GlobalStatus.Rollbacked,
  GlobalStatus.RollbackFailed,
  GlobalStatus.TimeoutRollbacked,
  GlobalStatus.TimeoutRollbackFailed,
];

/**
 * End states reached because every branch finished its phase two: the final states a
 * session can hold (isFinalStatus less Finished, which no session enters).
 */
export function isSuccessfulEnd(status: GlobalStatus): boolean {
  return isFinalStatus(status) && status !== GlobalStatus.Finished;
}

/** Phase two is running: the driver owns the session. */
export function isPhaseTwoInFlight(status: GlobalStatus): boolean {
  return decisionOf(status) !== null && !isEndStatus(status) && SESSION_STATUSES.includes(status);
}

/**
 * Progress rank: every legal transition strictly raises it, so "a status never moves
 * backwards" is checkable as a number. The one exception is not a transition of this
 * table: an operator's resume of a failed end (RESUME_EDGES), which only apply's
 * RetryResumed takes.
 */
export function statusRank(status: GlobalStatus): number {
  switch (status) {
    case GlobalStatus.Begin:
      return 0;
    case GlobalStatus.Committing:
    case GlobalStatus.Rollbacking:
    case GlobalStatus.TimeoutRollbacking:
    case GlobalStatus.AsyncCommitting:
      return 1;
    case GlobalStatus.CommitRetrying:
    case GlobalStatus.RollbackRetrying:
    case GlobalStatus.TimeoutRollbackRetrying:
      return 2;
    default:
      return isEndStatus(status) ? 3 : -1;
  }
}

/**
 * The legal transitions of a session's status: one step each. Every edge raises the rank,
 * no edge leaves an end state, and no edge crosses from the commit family to the rollback
 * family: that is invariant 2 written as data. The driver, the TM and the timeout job move
 * a status only along these; an operator's resume of a failed end is RESUME_EDGES.
 */
export const GLOBAL_TRANSITIONS: ReadonlyMap<GlobalStatus, readonly GlobalStatus[]> = new Map<
  GlobalStatus,
  readonly GlobalStatus[]
>([
  [
    GlobalStatus.Begin,
    [
      GlobalStatus.Committing,
      GlobalStatus.AsyncCommitting,
      GlobalStatus.Rollbacking,
      GlobalStatus.TimeoutRollbacking,
    ],
  ],
  [
    GlobalStatus.Committing,
    [GlobalStatus.CommitRetrying, GlobalStatus.Committed, GlobalStatus.CommitFailed],
  ],
  [GlobalStatus.CommitRetrying, [GlobalStatus.Committed, GlobalStatus.CommitFailed]],
  [GlobalStatus.AsyncCommitting, [GlobalStatus.Committed, GlobalStatus.CommitFailed]],
  [
    GlobalStatus.Rollbacking,
    [GlobalStatus.RollbackRetrying, GlobalStatus.Rollbacked, GlobalStatus.RollbackFailed],
  ],
  [GlobalStatus.RollbackRetrying, [GlobalStatus.Rollbacked, GlobalStatus.RollbackFailed]],
  [
    GlobalStatus.TimeoutRollbacking,
    [
      GlobalStatus.TimeoutRollbackRetrying,
      GlobalStatus.TimeoutRollbacked,
      GlobalStatus.TimeoutRollbackFailed,
    ],
  ],
  [
    GlobalStatus.TimeoutRollbackRetrying,
    [GlobalStatus.TimeoutRollbacked, GlobalStatus.TimeoutRollbackFailed],
  ],
]);

/**
 * An operator's resume of a failed end: back to the matching driving status, in the same
 * decision family (a CommitFailed that was AsyncCommitting resumes as Committing: the TM
 * was answered long ago). The only way out of a failed end besides MarkResolved, and taken
 * only by an operator's RetryResumed; final states have none.
 */
export const RESUME_EDGES: ReadonlyMap<GlobalStatus, GlobalStatus> = new Map([
  [GlobalStatus.CommitFailed, GlobalStatus.Committing],
  [GlobalStatus.RollbackFailed, GlobalStatus.Rollbacking],
  [GlobalStatus.TimeoutRollbackFailed, GlobalStatus.TimeoutRollbacking],
]);

/** The driving status an operator's resume moves a failed end to (null: not a failed end). */
export function resumedStatusOf(status: GlobalStatus): GlobalStatus | null {
  return RESUME_EDGES.get(status) ?? null;
}

/** One legal step. */
export function canTransition(from: GlobalStatus, to: GlobalStatus): boolean {
  return GLOBAL_TRANSITIONS.get(from)?.includes(to) ?? false;
}

/**
 * Reachable in one or more legal steps (used by GlobalReport, where a Saga TM reports the end it
 * reached itself).
 */
export function canReach(from: GlobalStatus, to: GlobalStatus): boolean {
  const seen = new Set<GlobalStatus>();
  const stack: GlobalStatus[] = [from];
  while (stack.length > 0) {
    const s = stack.pop()!;
    for (const next of GLOBAL_TRANSITIONS.get(s) ?? []) {
      if (next === to) return true;
      if (!seen.has(next)) {
        seen.add(next);
        stack.push(next);
      }
    }
  }
  return false;
}

/**
 * The retrying status of an in-flight phase-two status (AsyncCommitting retries in place, as in
 * Seata).
 */
export function retryingStatusOf(status: GlobalStatus): GlobalStatus {
  switch (status) {
    case GlobalStatus.Committing:
      return GlobalStatus.CommitRetrying;
    case GlobalStatus.Rollbacking:
      return GlobalStatus.RollbackRetrying;
    case GlobalStatus.TimeoutRollbacking:
      return GlobalStatus.TimeoutRollbackRetrying;
    default:
      return status;
  }
}

/** The failed end of an in-flight phase-two status. */
export function failedStatusOf(status: GlobalStatus): GlobalStatus {
  switch (status) {
    case GlobalStatus.Committing:
    case GlobalStatus.CommitRetrying:
    case GlobalStatus.AsyncCommitting:
      return GlobalStatus.CommitFailed;
    case GlobalStatus.Rollbacking:
    case GlobalStatus.RollbackRetrying:
      return GlobalStatus.RollbackFailed;
    case GlobalStatus.TimeoutRollbacking:
    case GlobalStatus.TimeoutRollbackRetrying:
      return GlobalStatus.TimeoutRollbackFailed;
    default:
      return status;
  }
}

/** The successful end of an in-flight phase-two status. */
export function successfulEndOf(status: GlobalStatus): GlobalStatus {
  switch (status) {
    case GlobalStatus.Committing:
    case GlobalStatus.CommitRetrying:
    case GlobalStatus.AsyncCommitting:
      return GlobalStatus.Committed;
    case GlobalStatus.Rollbacking:
    case GlobalStatus.RollbackRetrying:
      return GlobalStatus.Rollbacked;
    case GlobalStatus.TimeoutRollbacking:
    case GlobalStatus.TimeoutRollbackRetrying:
      return GlobalStatus.TimeoutRollbacked;
    default:
      return status;
  }
}

// ---------------------------------------------------------------------------------------
// Branch status and type
// ---------------------------------------------------------------------------------------

/** Statuses an RM may report in phase one (BranchReport). */
export function isPhaseOneStatus(status: BranchStatus): boolean {
  return (
    status === BranchStatus.Registered ||
    status === BranchStatus.PhaseOne_Done ||
    status === BranchStatus.PhaseOne_Failed ||
    status === BranchStatus.PhaseOne_Timeout
  );
}

/** The results of a phase-two call for a decision. */
export function phaseTwoStatusesFor(decision: Decision): readonly BranchStatus[] {
  return decision === 'commit'
    ? [
        BranchStatus.PhaseTwo_Committed,
        BranchStatus.PhaseTwo_CommitFailed_Retryable,
        BranchStatus.PhaseTwo_CommitFailed_Unretryable,
      ]
    : [
        BranchStatus.PhaseTwo_Rollbacked,
        BranchStatus.PhaseTwo_RollbackFailed_Retryable,
        BranchStatus.PhaseTwo_RollbackFailed_Unretryable,
      ];
}

/** The branch status that completes phase two for a decision. */
export function branchDoneStatusFor(decision: Decision): BranchStatus {
  return decision === 'commit' ? BranchStatus.PhaseTwo_Committed : BranchStatus.PhaseTwo_Rollbacked;
}

/**
 * A branch status that phase two never changes again. An unretryable failure is one unless
 * an operator resumes its transaction (retryableAgainOf): then it is told again.
 */
export function isBranchEndStatus(status: BranchStatus): boolean {
  return (
    status === BranchStatus.PhaseTwo_Committed ||
    status === BranchStatus.PhaseTwo_Rollbacked ||
    status === BranchStatus.PhaseTwo_CommitFailed_Unretryable ||
    status === BranchStatus.PhaseTwo_RollbackFailed_Unretryable
  );
}

export function isUnretryableFailure(status: BranchStatus): boolean {
  return (
    status === BranchStatus.PhaseTwo_CommitFailed_Unretryable ||
    status === BranchStatus.PhaseTwo_RollbackFailed_Unretryable
  );
}

/**
 * The retryable failure an operator's resume turns an unretryable one back into (the
 * branch is told its phase two again); any other status stays as it is.
 */
export function retryableAgainOf(status: BranchStatus): BranchStatus {
  switch (status) {
    case BranchStatus.PhaseTwo_CommitFailed_Unretryable:
      return BranchStatus.PhaseTwo_CommitFailed_Retryable;
    case BranchStatus.PhaseTwo_RollbackFailed_Unretryable:
      return BranchStatus.PhaseTwo_RollbackFailed_Retryable;
    default:
      return status;
  }
}

/**
 * Seata's canBeCommittedAsync: an AT branch's phase-two commit only deletes undo logs, so
 * the TM may be told "committed" before it runs. A branch that failed phase one has
 * nothing to commit either.
 */
export function canBranchCommitAsync(branch: Pick<BranchSession, 'type' | 'status'>): boolean {
  return branch.type === BranchType.AT || branch.status === BranchStatus.PhaseOne_Failed;
}

// ---------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------

export interface BranchSession {
  /** 64-bit id as a decimal string (JS numbers lose precision above 2^53). */
  branchId: BranchId;
  xid: Xid;
  type: BranchType;
  resourceId: string;
  /** As the RM sent it (`table:pk1,pk2;table2:pk3`), '' for none. */
  lockKey: string;
  applicationData: string;
  status: BranchStatus;
  clientId: string;
  /**
   * The application of the RM that registered the branch. Phase two goes only to RMs of
   * this application (a resource id is unique within an application, not across the
   * cluster). '' only for a branch recorded before branches kept their application: its
   * phase two goes only to the client that registered it.
   */
  applicationId: string;
  /** Row keys this branch holds right now, sorted; emptied when its locks are released. */
  lockedRows: string[];
}

export interface RetryInfo {
  /** Phase-two passes that ended in a retryable failure. */
  attempts: number;
  /** When the driver tries again; null before the first failure. */
  nextRetryAt: number | null;
  /**
   * The alarm time, set at the first failure (first failure + the driver's stuckAfterMs) and
   * renewed when an operator resumes. It ends nothing: a decided transaction is retried
   * until it is done. A retry scheduled past it marks the transaction stuck (isStuck). The
   * name is kept from when it was a give-up deadline (logs, snapshots and db rows hold it).
   */
  retryDeadline: number | null;
  /** An operator stopped the retries (reported as Stop* at the edge). */
  stopped: boolean;
}

export interface GlobalSession {
  xid: Xid;
  /** 64-bit id as a decimal string. */
  transactionId: string;
  applicationId: string;
  transactionServiceGroup: string;
  name: string;
  timeoutMs: number;
  /** Wall-clock ms chosen by the leader. */
  beginTime: number;
  /** beginTime + timeoutMs: past it a Begin session is rolled back (TimeoutRollbacking). */
  deadline: number;
  status: GlobalStatus;
  /** When the status last changed (leader time from the command). */
  statusChangedAt: number;
  /** In registration order: phase-two commit walks it forwards, rollback backwards. */
  branches: BranchSession[];
  retry: RetryInfo;
  /**
   * Fence: the highest Raft term (or store epoch) whose driver acquired this session.
   * Driver commands carrying a lower term are rejected, so a deposed leader's late results
   * cannot race the new leader's.
   */
  driverTerm: number;
}

/** What is kept of a session after it leaves the live set, for status queries and retries. */
export interface FinishedRecord {
  xid: Xid;
  status: GlobalStatus;
  finishedAt: number;
  /** Set when an operator resolved a failed transaction by hand. */
  resolvedBy: string | null;
}

/**
 * Stuck: phase two has failed retryably since before the alarm time and is still being
 * retried after it (the next retry is scheduled past retry.retryDeadline). Shown to
 * operators (GetSession, ListSessions, a gauge, one warn line); nothing else changes: the
 * driver keeps retrying with capped backoff. A stopped transaction is not stuck (nobody
 * retries it); resuming renews the alarm time.
 */
export function isStuck(session: Pick<GlobalSession, 'status' | 'retry'>): boolean {
  const { retry } = session;
  return (
    isPhaseTwoInFlight(session.status) &&
    !retry.stopped &&
    retry.retryDeadline !== null &&
    retry.nextRetryAt !== null &&
    retry.nextRetryAt > retry.retryDeadline
  );
}

/**
 * The retry horizon of a session: its phase two is delivered on the driver's own only before
 * it. beginTime + retryHorizonMs (every fence row of the transaction is younger than that
 * then), unless an operator's forced resume set the alarm time beyond it: the alarm time
 * is otherwise capped at the horizon (the driver and an unforced resume cap it), so only a
 * forced resume moves the horizon, and only to its new alarm time.
 */
export function horizonOf(
  session: Pick<GlobalSession, 'beginTime' | 'retry'>,
  retryHorizonMs: number,
): number {
  return Math.max(session.beginTime + retryHorizonMs, session.retry.retryDeadline ?? 0);
}

/**
 * The status a client or console sees: the Stop* statuses while an operator has stopped retries.
 */
export function reportedStatus(session: Pick<GlobalSession, 'status' | 'retry'>): GlobalStatus {
  if (session.retry.stopped && isPhaseTwoInFlight(session.status)) {
    return decisionOf(session.status) === 'commit'
      ? GlobalStatus.StopCommitOrCommitRetry
      : GlobalStatus.StopRollbackOrRollbackRetry;
  }
  return session.status;
}
