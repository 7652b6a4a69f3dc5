/**
 * Every bound of the fence, named with its unit. Inputs outside them are refused with
 * BadRequestError before any database work.
 */

/** The default fence table name. */
export const DEFAULT_FENCE_TABLE = 'concord_fence';
/**
 * Characters of the fence table name (each part of `schema.table` on PostgreSQL); leaves room for
 * index-name suffixes within PostgreSQL's 63.
 */
export const MAX_FENCE_TABLE_NAME_CHARS = 48;
/** Digits of a branch id: an unsigned 64-bit integer in decimal. */
export const MAX_BRANCH_ID_DIGITS = 20;
/** The largest branch id (2^64 - 1). */
export const MAX_BRANCH_ID = (1n << 64n) - 1n;

/**
 * Attempts of one `run` that the database may abort in a way that leaves nothing behind
 * (serialization failure, deadlock victim) before the run fails with FenceConflictError. Each
 * attempt is a fresh transaction whose predecessor was rolled back entirely.
 */
export const DEFAULT_FENCE_MAX_ATTEMPTS = 3;
export const MAX_FENCE_MAX_ATTEMPTS = 10;
/**
 * Restarts of one run because PostgreSQL's REPEATABLE READ snapshot predated the try row it
 * waited on. After one restart the row is committed and visible; the bound is a backstop.
 */
export const MAX_STALE_SNAPSHOT_RESTARTS = 2;
/**
 * Backoff before a retried attempt: base * 2^(attempt-1), capped, then jittered to [0.5, 1] of
 * that.
 */
export const FENCE_RETRY_BACKOFF_BASE_MS = 5;
export const FENCE_RETRY_BACKOFF_MAX_MS = 200;

/**
 * The TC's bounds that decide how late a phase-two delivery can be, as the TC has them by
 * default (the client may not import the coordinator; these mirror it): the longest
 * transaction timeout it accepts (src/coordinator/limits.ts), and how long it retries a
 * branch's phase two before it shows it stuck (the phase-two driver's `stuckAfterMs`; it
 * never stops retrying a decision, but past that an operator is alerted).
 */
export const TC_MAX_TRANSACTION_TIMEOUT_MS = 24 * 60 * 60 * 1000;
export const TC_PHASE_TWO_RETRY_WINDOW_MS = 10 * 60 * 1000;
/**
 * The retry horizon: how long after a branch's fence row was written the TC may still
 * deliver an op of that branch — the transaction's timeout (phase two starts at the
 * decision, at the latest at the timeout) plus the TC's phase-two retry window. A fence row
 * deleted before that forgets a cancel or a confirm: a late try would run (hanging) and a
 * repeated confirm would find no row. Cleanup never deletes a row younger than the fence's
 * `retryHorizonMs`; the default covers every transaction the TC accepts (24 h + 10 min).
 * A service whose transactions are all short may declare a shorter horizon (its longest
 * timeout plus the TC's retry window), but not below MIN_RETRY_HORIZON_MS.
 */
export const DEFAULT_RETRY_HORIZON_MS =
  TC_MAX_TRANSACTION_TIMEOUT_MS + TC_PHASE_TWO_RETRY_WINDOW_MS;
/** The TC's default retry window plus the SDK's default transaction timeout (60 s). */
export const MIN_RETRY_HORIZON_MS = TC_PHASE_TWO_RETRY_WINDOW_MS + 60 * 1000;
/**
 * Rows cleanup deletes by default: those older than the fence's retry horizon (default
 * DEFAULT_RETRY_HORIZON_MS).
 */
export const DEFAULT_FENCE_RETENTION_MS = DEFAULT_RETRY_HORIZON_MS;
/**
 * Rows one cleanup DELETE removes: small enough to keep row locks short and the undo/WAL per
 * statement bounded.
 */
export const DEFAULT_CLEANUP_BATCH_SIZE = 1_000;
export const MAX_CLEANUP_BATCH_SIZE = 10_000;
/** DELETE statements one `cleanup` call issues at most; the next call (or tick) continues. */
export const DEFAULT_CLEANUP_MAX_BATCHES = 100;
export const MAX_CLEANUP_MAX_BATCHES = 10_000;
/** Period of the background cleanup started by `startCleanup`. */
export const DEFAULT_CLEANUP_INTERVAL_MS = 60 * 60 * 1000;
export const MIN_CLEANUP_INTERVAL_MS = 10;
/** Links of an error's `cause` chain inspected to classify it (guards against cycles). */
export const MAX_CAUSE_DEPTH = 8;
