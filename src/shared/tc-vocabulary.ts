/**
 * The transaction vocabulary shared by the coordinator and the client SDK: Seata's global
 * statuses, branch statuses and branch types as string constants, and Seata's numeric codes
 * for them as the TC protocol carries them (proto/tc.proto). One copy: the client may not
 * import the coordinator (the layering test), but both may import src/shared.
 */

export const GlobalStatus = {
  /** Not a state a session is ever in: the answer for "no such status" at the edge. */
  Unknown: 'Unknown',
  /** Phase one: branches may register. */
  Begin: 'Begin',
  // Phase two, in flight: may still change.
  Committing: 'Committing',
  CommitRetrying: 'CommitRetrying',
  Rollbacking: 'Rollbacking',
  RollbackRetrying: 'RollbackRetrying',
  TimeoutRollbacking: 'TimeoutRollbacking',
  TimeoutRollbackRetrying: 'TimeoutRollbackRetrying',
  /** Every branch can commit in the background (AT): the TM is answered at once. */
  AsyncCommitting: 'AsyncCommitting',
  // End states: never change again.
  Committed: 'Committed',
  CommitFailed: 'CommitFailed',
  Rollbacked: 'Rollbacked',
  RollbackFailed: 'RollbackFailed',
  TimeoutRollbacked: 'TimeoutRollbacked',
  TimeoutRollbackFailed: 'TimeoutRollbackFailed',
  /** Seata: "not managed in the session map any more". Concord reports the real end state instead, but decodes it. */
  Finished: 'Finished',
  // Seata statuses Concord decodes at the edge but never enters: a retry timeout is
  // reported as the matching *Failed state, and sessions are deleted by FinishGlobal.
  CommitRetryTimeout: 'CommitRetryTimeout',
  RollbackRetryTimeout: 'RollbackRetryTimeout',
  Deleting: 'Deleting',
  /**
   * Operator stopped the retries. Concord keeps the real status and a `retry.stopped`
   * flag (so the status machine stays monotonic: resuming is not a step backwards) and
   * REPORTS these two at the edge while the flag is set. See `reportedStatus`.
   */
  StopCommitOrCommitRetry: 'StopCommitOrCommitRetry',
  StopRollbackOrRollbackRetry: 'StopRollbackOrRollbackRetry',
} as const;
export type GlobalStatus = (typeof GlobalStatus)[keyof typeof GlobalStatus];

/** Seata's numeric codes (io.seata.core.model.GlobalStatus), for the proto edge only. */
export const GLOBAL_STATUS_CODES: Readonly<Record<GlobalStatus, number>> = {
  Unknown: 0,
  Begin: 1,
  Committing: 2,
  CommitRetrying: 3,
  Rollbacking: 4,
  RollbackRetrying: 5,
  TimeoutRollbacking: 6,
  TimeoutRollbackRetrying: 7,
  AsyncCommitting: 8,
  Committed: 9,
  CommitFailed: 10,
  Rollbacked: 11,
  RollbackFailed: 12,
  TimeoutRollbacked: 13,
  TimeoutRollbackFailed: 14,
  Finished: 15,
  CommitRetryTimeout: 16,
  RollbackRetryTimeout: 17,
  Deleting: 18,
  StopCommitOrCommitRetry: 19,
  StopRollbackOrRollbackRetry: 20,
};

export const BranchStatus = {
  Unknown: 'Unknown',
  Registered: 'Registered',
  PhaseOne_Done: 'PhaseOne_Done',
  PhaseOne_Failed: 'PhaseOne_Failed',
  PhaseOne_Timeout: 'PhaseOne_Timeout',
  PhaseTwo_Committed: 'PhaseTwo_Committed',
  PhaseTwo_CommitFailed_Retryable: 'PhaseTwo_CommitFailed_Retryable',
  PhaseTwo_CommitFailed_Unretryable: 'PhaseTwo_CommitFailed_Unretryable',
  PhaseTwo_Rollbacked: 'PhaseTwo_Rollbacked',
  PhaseTwo_RollbackFailed_Retryable: 'PhaseTwo_RollbackFailed_Retryable',
  PhaseTwo_RollbackFailed_Unretryable: 'PhaseTwo_RollbackFailed_Unretryable',
} as const;
export type BranchStatus = (typeof BranchStatus)[keyof typeof BranchStatus];

/** Seata's numeric codes (io.seata.core.model.BranchStatus). */
export const BRANCH_STATUS_CODES: Readonly<Record<BranchStatus, number>> = {
  Unknown: 0,
  Registered: 1,
  PhaseOne_Done: 2,
  PhaseOne_Failed: 3,
  PhaseOne_Timeout: 4,
  PhaseTwo_Committed: 5,
  PhaseTwo_CommitFailed_Retryable: 6,
  PhaseTwo_CommitFailed_Unretryable: 7,
  PhaseTwo_Rollbacked: 8,
  PhaseTwo_RollbackFailed_Retryable: 9,
  PhaseTwo_RollbackFailed_Unretryable: 10,
};

export const BranchType = {
  AT: 'AT',
  TCC: 'TCC',
  SAGA: 'SAGA',
  XA: 'XA',
} as const;
export type BranchType = (typeof BranchType)[keyof typeof BranchType];

/** Seata's numeric codes (io.seata.core.model.BranchType). */
export const BRANCH_TYPE_CODES: Readonly<Record<BranchType, number>> = {
  AT: 0,
  TCC: 1,
  SAGA: 2,
  XA: 3,
};

// ---------------------------------------------------------------------------------------
// What a status says about the decision
// ---------------------------------------------------------------------------------------

const COMMIT_FAMILY: ReadonlySet<GlobalStatus> = new Set([
  GlobalStatus.Committing,
  GlobalStatus.CommitRetrying,
  GlobalStatus.AsyncCommitting,
  GlobalStatus.Committed,
  GlobalStatus.CommitFailed,
  GlobalStatus.CommitRetryTimeout,
  GlobalStatus.StopCommitOrCommitRetry,
]);

const ROLLBACK_FAMILY: ReadonlySet<GlobalStatus> = new Set([
  GlobalStatus.Rollbacking,
  GlobalStatus.RollbackRetrying,
  GlobalStatus.TimeoutRollbacking,
  GlobalStatus.TimeoutRollbackRetrying,
  GlobalStatus.Rollbacked,
  GlobalStatus.RollbackFailed,
  GlobalStatus.TimeoutRollbacked,
  GlobalStatus.TimeoutRollbackFailed,
  GlobalStatus.RollbackRetryTimeout,
  GlobalStatus.StopRollbackOrRollbackRetry,
]);

export type Decision = 'commit' | 'rollback';

/** The decision a status implies, or null while undecided (Begin, Unknown, ...). */
export function decisionOf(status: GlobalStatus): Decision | null {
  if (COMMIT_FAMILY.has(status)) return 'commit';
  if (ROLLBACK_FAMILY.has(status)) return 'rollback';
  return null;
}

/**
 * End states that need an operator: phase two gave up, the rows may be half-written. The
 * coordinator keeps such a session live, with its locks, until MarkResolved.
 */
export function isFailedEnd(status: GlobalStatus): boolean {
  return (
    status === GlobalStatus.CommitFailed ||
    status === GlobalStatus.RollbackFailed ||
    status === GlobalStatus.TimeoutRollbackFailed
  );
}
