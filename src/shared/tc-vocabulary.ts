/**
 * The transaction vocabulary shared by the coordinator and the client SDK: Seata's global
 * statuses, branch statuses and branch types as string constants, and what a status says.
 * One copy: the client may not import the coordinator, but both may import src/shared.
 * Seata's numeric codes for them exist only at the wire edges (tc-codes.ts).
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
  // End states: phase two has ended. Committed, Rollbacked and TimeoutRollbacked are final
  // (never change again); the three *Failed ones end phase two unless an operator resumes
  // it (isFinalStatus, isFailedEnd).
  Committed: 'Committed',
  CommitFailed: 'CommitFailed',
  Rollbacked: 'Rollbacked',
  RollbackFailed: 'RollbackFailed',
  TimeoutRollbacked: 'TimeoutRollbacked',
  TimeoutRollbackFailed: 'TimeoutRollbackFailed',
  /**
   * Seata: "not managed in the session map any more". Concord reports the real end state instead,
   * but decodes it.
   */
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

export const BranchType = {
  AT: 'AT',
  TCC: 'TCC',
  SAGA: 'SAGA',
  XA: 'XA',
} as const;
export type BranchType = (typeof BranchType)[keyof typeof BranchType];

export function isGlobalStatus(value: unknown): value is GlobalStatus {
  return typeof value === 'string' && Object.hasOwn(GlobalStatus, value);
}

export function isBranchStatus(value: unknown): value is BranchStatus {
  return typeof value === 'string' && Object.hasOwn(BranchStatus, value);
}

export function isBranchType(value: unknown): value is BranchType {
  return typeof value === 'string' && Object.hasOwn(BranchType, value);
}

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
 * Failed ends: an RM answered that a branch can never finish (unretryable), so phase two
 * stopped; the rows may be half-written. Ended, unless an operator resumes it: the
 * coordinator keeps such a session live, with its locks, until an operator either resumes
 * it (back to the matching driving status, Committing / Rollbacking / TimeoutRollbacking,
 * where only its unfinished branches are told again) or marks it resolved. Its decision
 * never changes either way.
 */
export function isFailedEnd(status: GlobalStatus): boolean {
  return (
    status === GlobalStatus.CommitFailed ||
    status === GlobalStatus.RollbackFailed ||
    status === GlobalStatus.TimeoutRollbackFailed
  );
}

const FINAL_STATUSES: ReadonlySet<GlobalStatus> = new Set([
  GlobalStatus.Committed,
  GlobalStatus.Rollbacked,
  GlobalStatus.TimeoutRollbacked,
  GlobalStatus.Finished,
]);

/**
 * Final states: the status never changes again, by anyone (Seata's "final status" less
 * its *Failed ones, which an operator may resume here). Finished is one — a code a
 * Seata-style server may answer — though a Concord session never enters it.
 */
export function isFinalStatus(status: GlobalStatus): boolean {
  return FINAL_STATUSES.has(status);
}

/**
 * End states: phase two has ended — a final state, or a failed end (isFailedEnd) that waits
 * for an operator and only an operator's resume can move. Nothing moves an end state on its
 * own, and the TM has been answered: a client that sees one stops waiting.
 */
export function isEndStatus(status: GlobalStatus): boolean {
  return isFinalStatus(status) || isFailedEnd(status);
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
