/**
 * Every bound of the fence, named with its unit. Inputs outside them are refused with
 * BadRequestError before any database work.
 */
import { DEFAULT_PHASE_TWO_RETRY_HORIZON_MS } from '../../shared/protocol-limits.ts';

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
 * default. The one that counts is its retry horizon (`phaseTwo.retryHorizonMs`, one
 * definition in src/shared/protocol-limits.ts): the TC delivers a transaction's phase two on
 * its own only until that long after the transaction began; then it stops the retries and
 * leaves the transaction to an operator, who may force a resume past it knowingly. Every
 * fence row of a transaction is written after it began, so a row kept longer than the TC's
 * horizon is there for every automatic delivery. The other two are shown for reference: the
 * longest transaction timeout the TC accepts and its alarm time (`phaseTwo.stuckAfterMs`,
 * when a transaction still failing is shown stuck).
 */
export const TC_RETRY_HORIZON_MS = DEFAULT_PHASE_TWO_RETRY_HORIZON_MS;
export const TC_MAX_TRANSACTION_TIMEOUT_MS = 24 * 60 * 60 * 1000;
export const TC_PHASE_TWO_RETRY_WINDOW_MS = 10 * 60 * 1000;
/**
 * What a fence keeps beyond the TC's retry horizon: clock skew between the TC and this
 * database (row times are the database's, the horizon the TC's), and a call sent just before
 * the horizon that arrives a little after it.
 */
export const FENCE_HORIZON_MARGIN_MS = 10 * 60 * 1000;
/**
 * The retry horizon a fence declares: how long after a branch's fence row was written the
 * TC may still deliver an op of that branch. A fence row deleted before that forgets a
 * cancel or a confirm: a late try would run (hanging) and a repeated confirm would find no
 * row. Cleanup never deletes a row younger than the fence's `retryHorizonMs`; the default
 * is the TC's default horizon plus the margin (24 h + 10 min). A service whose TC runs a
 * shorter `phaseTwo.retryHorizonMs` may declare less (that horizon plus the margin), but not
 * below MIN_RETRY_HORIZON_MS.
 */
export const DEFAULT_RETRY_HORIZON_MS = TC_RETRY_HORIZON_MS + FENCE_HORIZON_MARGIN_MS;
/** The margin plus a one-minute TC horizon (the SDK's default transaction timeout). */
export const MIN_RETRY_HORIZON_MS = FENCE_HORIZON_MARGIN_MS + 60 * 1000;
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
