/**
 * Global and branch statuses as the SDK sees them: the shared constants
 * (src/shared/tc-vocabulary.ts) and the helpers the SDK needs.
 */
import { BranchStatus, GlobalStatus, decisionOf, isFailedEnd } from '../../shared/tc-vocabulary.ts';

export { BranchStatus, GlobalStatus, decisionOf };
/** The end states that need an operator (phase two gave up): the rows may be half-done. */
export const isFailedStatus = isFailedEnd;

const END_STATUSES: ReadonlySet<string> = new Set<GlobalStatus>([
  GlobalStatus.Committed,
  GlobalStatus.CommitFailed,
  GlobalStatus.Rollbacked,
  GlobalStatus.RollbackFailed,
  GlobalStatus.TimeoutRollbacked,
  GlobalStatus.TimeoutRollbackFailed,
  GlobalStatus.Finished,
]);

/** A status that never changes again, as the client sees it: Finished (a code a Seata-style
 * server may answer) included, unlike the coordinator's own isEndStatus. */
export function isEndStatus(status: GlobalStatus): boolean {
  return END_STATUSES.has(status);
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
