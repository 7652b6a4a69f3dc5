/**
 * Seata's numeric codes of the vocabulary (tc-vocabulary.ts) as the TC protocol carries them
 * (proto/tc.proto), and the conversions. Only the wire edges use these — the server's gRPC
 * mapping and RM hub, the client's TC client and RM channel: inside Concord statuses are
 * words, so logs, snapshots and tests read as words.
 */
import { BranchStatus, BranchType, GlobalStatus } from './tc-vocabulary.ts';

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

/** Seata's numeric codes (io.seata.core.model.BranchType). */
export const BRANCH_TYPE_CODES: Readonly<Record<BranchType, number>> = {
  AT: 0,
  TCC: 1,
  SAGA: 2,
  XA: 3,
};

function invert<K extends string>(table: Readonly<Record<K, number>>): ReadonlyMap<number, K> {
  return new Map(Object.entries(table).map(([name, code]) => [code as number, name as K]));
}

const GLOBAL_STATUS_BY_CODE = invert<GlobalStatus>(GLOBAL_STATUS_CODES);
const BRANCH_STATUS_BY_CODE: ReadonlyMap<number, BranchStatus> = new Map<number, BranchStatus>([
  ...invert<BranchStatus>(BRANCH_STATUS_CODES),
  // Seata's XA codes: "XAER_NOTA, retry" is a retryable failure to Concord.
  [11, BranchStatus.PhaseTwo_CommitFailed_Retryable],
  [12, BranchStatus.PhaseTwo_RollbackFailed_Retryable],
  // PhaseOne_RDONLY (an XA branch with nothing to commit) counts as phase one done.
  [13, BranchStatus.PhaseOne_Done],
]);
const BRANCH_TYPE_BY_CODE = invert<BranchType>(BRANCH_TYPE_CODES);

export function globalStatusToCode(status: GlobalStatus): number {
  return GLOBAL_STATUS_CODES[status];
}

/**
 * An unknown code decodes to Unknown (a newer peer may add statuses): the edge validates what it
 * needs.
 */
export function globalStatusFromCode(code: number): GlobalStatus {
  return GLOBAL_STATUS_BY_CODE.get(code) ?? GlobalStatus.Unknown;
}

export function branchStatusToCode(status: BranchStatus): number {
  return BRANCH_STATUS_CODES[status];
}

/** An unknown code decodes to Unknown. */
export function branchStatusFromCode(code: number): BranchStatus {
  return BRANCH_STATUS_BY_CODE.get(code) ?? BranchStatus.Unknown;
}

export function branchTypeToCode(type: BranchType): number {
  return BRANCH_TYPE_CODES[type];
}

/** Null for a code Concord does not know: the edge refuses it as a bad request. */
export function branchTypeFromCode(code: number): BranchType | null {
  return BRANCH_TYPE_BY_CODE.get(code) ?? null;
}
