/**
 * Global and branch statuses as the SDK sees them: the same string constants as the
 * coordinator's (src/coordinator/types.ts), repeated here because the client may not import
 * the coordinator (the layering test). Only the statuses and helpers the SDK needs.
 */

export const GlobalStatus = {
  Unknown: 'Unknown',
  Begin: 'Begin',
  Committing: 'Committing',
  CommitRetrying: 'CommitRetrying',
  Rollbacking: 'Rollbacking',
  RollbackRetrying: 'RollbackRetrying',
  TimeoutRollbacking: 'TimeoutRollbacking',
  TimeoutRollbackRetrying: 'TimeoutRollbackRetrying',
  AsyncCommitting: 'AsyncCommitting',
  Committed: 'Committed',
  CommitFailed: 'CommitFailed',
  Rollbacked: 'Rollbacked',
  RollbackFailed: 'RollbackFailed',
  TimeoutRollbacked: 'TimeoutRollbacked',
  TimeoutRollbackFailed: 'TimeoutRollbackFailed',
  Finished: 'Finished',
  CommitRetryTimeout: 'CommitRetryTimeout',
  RollbackRetryTimeout: 'RollbackRetryTimeout',
  Deleting: 'Deleting',
  StopCommitOrCommitRetry: 'StopCommitOrCommitRetry',
  StopRollbackOrRollbackRetry: 'StopRollbackOrRollbackRetry',
} as const;
export type GlobalStatus = (typeof GlobalStatus)[keyof typeof GlobalStatus];

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

const COMMIT_FAMILY: ReadonlySet<string> = new Set<GlobalStatus>([
  GlobalStatus.Committing,
  GlobalStatus.CommitRetrying,
  GlobalStatus.AsyncCommitting,
  GlobalStatus.Committed,
  GlobalStatus.CommitFailed,
  GlobalStatus.CommitRetryTimeout,
  GlobalStatus.StopCommitOrCommitRetry,
]);

const ROLLBACK_FAMILY: ReadonlySet<string> = new Set<GlobalStatus>([
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

const END_STATUSES: ReadonlySet<string> = new Set<GlobalStatus>([
  GlobalStatus.Committed,
  GlobalStatus.CommitFailed,
  GlobalStatus.Rollbacked,
  GlobalStatus.RollbackFailed,
  GlobalStatus.TimeoutRollbacked,
  GlobalStatus.TimeoutRollbackFailed,
  GlobalStatus.Finished,
]);

/** The decision a status implies: 'commit', 'rollback', or null while undecided (Begin, Unknown). */
export function decisionOf(status: GlobalStatus): 'commit' | 'rollback' | null {
  if (COMMIT_FAMILY.has(status)) return 'commit';
  if (ROLLBACK_FAMILY.has(status)) return 'rollback';
  return null;
}

/** A status that never changes again. */
export function isEndStatus(status: GlobalStatus): boolean {
  return END_STATUSES.has(status);
}

/** The end states that need an operator (phase two gave up): the rows may be half-done. */
export function isFailedStatus(status: GlobalStatus): boolean {
  return status === GlobalStatus.CommitFailed || status === GlobalStatus.RollbackFailed || status === GlobalStatus.TimeoutRollbackFailed;
}

/** A rollback the TC decided on its own because the transaction outlived its timeout. */
export function isTimeoutRollback(status: GlobalStatus): boolean {
  return (
    status === GlobalStatus.TimeoutRollbacking ||
    status === GlobalStatus.TimeoutRollbackRetrying ||
    status === GlobalStatus.TimeoutRollbacked ||
    status === GlobalStatus.TimeoutRollbackFailed
  );
}

export function isGlobalStatus(value: unknown): value is GlobalStatus {
  return typeof value === 'string' && Object.hasOwn(GlobalStatus, value);
}
