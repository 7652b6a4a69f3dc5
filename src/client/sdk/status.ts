/**
 * Global and branch statuses as the SDK sees them: the shared constants
 * (src/shared/tc-vocabulary.ts) and the helpers the SDK needs.
 */
import { BranchStatus, GlobalStatus } from '../../shared/tc-vocabulary.ts';

export { BranchStatus, GlobalStatus };

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
