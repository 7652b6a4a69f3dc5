/**
 * Every bound of the coordinator, named with its unit. The state machine enforces them
 * (they are part of replicated behaviour: changing one changes what a replica accepts, so
 * treat a change like a log-format change), the edge validates against the same numbers.
 *
 * The request value limits the client checks too live in src/shared/protocol-limits.ts.
 */
export {
  MAX_APPLICATION_DATA_BYTES,
  MAX_LOCK_KEY_CHARS,
  MAX_NAME_CHARS,
  MAX_REQUEST_ID_CHARS,
  MAX_RESOURCE_ID_CHARS,
  MAX_TRANSACTION_TIMEOUT_MS,
  MAX_XID_CHARS,
  MIN_TRANSACTION_TIMEOUT_MS,
} from '../shared/protocol-limits.ts';

/** Branches one global transaction may register. */
export const MAX_BRANCHES_PER_GLOBAL = 1_000;
/**
 * Global sessions alive at once (Begin, in phase two; failed ones awaiting an operator do
 * not count): the default of config `limits.maxLiveTransactions`, which the leader checks
 * before it proposes a Begin.
 */
export const MAX_LIVE_SESSIONS = 100_000;
/**
 * The highest live limit config may set, and the bound apply enforces on every replica (a
 * constant, not the node's config: replicas must accept the same Begins). 1,000,000 live
 * transactions take ~1 GB of heap (bench/README.md, "scale"); this leaves room above that.
 */
export const MAX_LIVE_SESSIONS_CEILING = 10_000_000;
/**
 * Node-wide budgets on what live transactions hold, checked by the leader before it
 * proposes (coordinator.ts): the per-transaction limits multiplied by MAX_LIVE_SESSIONS
 * would be gigabytes on every replica. Defaults; config `limits.*` lowers or raises them.
 */
export interface NodeBudgets {
  /** Live branches over all live transactions. */
  maxLiveBranches: number;
  /** Rows locked at once. */
  maxLockedRows: number;
  /** UTF-8 bytes of the live branches' application data. */
  maxApplicationDataBytes: number;
}

export const DEFAULT_NODE_BUDGETS: Readonly<NodeBudgets> = Object.freeze({
  maxLiveBranches: 1_000_000,
  maxLockedRows: 1_000_000,
  maxApplicationDataBytes: 256 * 1024 * 1024,
});

/** The highest value config may give each budget. */
export const MAX_NODE_BUDGETS: Readonly<NodeBudgets> = Object.freeze({
  maxLiveBranches: 10_000_000,
  maxLockedRows: 10_000_000,
  maxApplicationDataBytes: 4 * 1024 * 1024 * 1024,
});

/** Row keys one branch may lock. */
export const MAX_LOCK_ROWS_PER_BRANCH = 5_000;
/** Characters of a table name inside a lock key. */
export const MAX_TABLE_NAME_CHARS = 128;
/** Characters of one primary-key value inside a lock key. */
export const MAX_PK_CHARS = 256;
/** Conflicting rows named in one LockConflictError (the message stays small). */
export const MAX_REPORTED_CONFLICT_ROWS = 20;

/**
 * How long a requestId's result is kept to answer a client's retry, ms of command time:
 * twice the client's default call budget (30 s), so no retry within the budget finds it
 * gone (issue 13 item 5).
 */
export const DEDUP_RETENTION_MS = 60_000;
/**
 * requestId → result entries kept at most. Entries leave only by age: when the table is
 * full of entries younger than DEDUP_RETENTION_MS, a new request with a requestId is
 * refused (CAPACITY, retryable) rather than evict a live entry. 5,000 requests/s for a
 * whole retention fit.
 */
export const MAX_DEDUP_ENTRIES = 400_000;
/** How long a finished session's status stays queryable, ms of command time. */
export const RECENTLY_FINISHED_TTL_MS = 5 * 60 * 1000;
/**
 * Finished records kept at most: a memory bound far above what the retention holds at
 * the rates the TC sustains; past it the oldest is dropped even if young (the client
 * never reads UNKNOWN_XID after an unknown outcome as a failure, so nothing is lost).
 */
export const MAX_RECENTLY_FINISHED = 1_000_000;

/** The retention bounds a state machine applies (replicated behaviour; tests shrink them). */
export interface RetentionLimits {
  dedupEntries: number;
  dedupRetentionMs: number;
  finishedEntries: number;
  finishedRetentionMs: number;
}

export const DEFAULT_RETENTION: Readonly<RetentionLimits> = {
  dedupEntries: MAX_DEDUP_ENTRIES,
  dedupRetentionMs: DEDUP_RETENTION_MS,
  finishedEntries: MAX_RECENTLY_FINISHED,
  finishedRetentionMs: RECENTLY_FINISHED_TTL_MS,
};
