/**
 * Seata's numeric codes as the TC protocol carries them (proto/tc.proto), and the names the
 * client speaks. A copy of the coordinator's tables (src/coordinator/types.ts): the client
 * may not import the coordinator, and the codes are part of the wire contract anyway.
 */

export const GLOBAL_STATUS_CODES = {
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
} as const;
export type GlobalStatusName = keyof typeof GLOBAL_STATUS_CODES;

export const BRANCH_STATUS_CODES = {
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
} as const;
export type BranchStatusName = keyof typeof BRANCH_STATUS_CODES;

export const BRANCH_TYPE_CODES = { AT: 0, TCC: 1, SAGA: 2, XA: 3 } as const;
export type BranchTypeName = keyof typeof BRANCH_TYPE_CODES;

function invert<K extends string>(table: Readonly<Record<K, number>>): ReadonlyMap<number, K> {
  return new Map(Object.entries(table).map(([name, code]) => [code as number, name as K]));
}

const GLOBAL_BY_CODE = invert<GlobalStatusName>(GLOBAL_STATUS_CODES);
const BRANCH_BY_CODE = invert<BranchStatusName>(BRANCH_STATUS_CODES);
const TYPE_BY_CODE = invert<BranchTypeName>(BRANCH_TYPE_CODES);

/** A code the client does not know reads as Unknown (a newer server may add statuses). */
export function globalStatusName(code: number): GlobalStatusName {
  return GLOBAL_BY_CODE.get(code) ?? 'Unknown';
}

export function branchStatusName(code: number): BranchStatusName {
  return BRANCH_BY_CODE.get(code) ?? 'Unknown';
}

/** Null for a code the client does not know. */
export function branchTypeName(code: number): BranchTypeName | null {
  return TYPE_BY_CODE.get(code) ?? null;
}

export function isGlobalStatusName(value: unknown): value is GlobalStatusName {
  return typeof value === 'string' && Object.hasOwn(GLOBAL_STATUS_CODES, value);
}

export function isBranchStatusName(value: unknown): value is BranchStatusName {
  return typeof value === 'string' && Object.hasOwn(BRANCH_STATUS_CODES, value);
}

export function isBranchTypeName(value: unknown): value is BranchTypeName {
  return typeof value === 'string' && Object.hasOwn(BRANCH_TYPE_CODES, value);
}
