/** AT mode's limits and defaults, with their units. */

/** How a branch waits for rows another global transaction holds. */
export interface LockRetryPolicy {
  /** Pause between attempts, ms. Default 10 (Seata's client.rm.lock.retryInterval). */
  intervalMs: number;
  /** Attempts in all. Default 30 (Seata's client.rm.lock.retryTimes). */
  times: number;
}

export const DEFAULT_LOCK_RETRY: LockRetryPolicy = { intervalMs: 10, times: 30 };
/** Rows one statement may image (the TC's per-branch lock limit is 5 000). */
export const MAX_IMAGE_ROWS = 5_000;
/** Undo rows younger than this are never cleaned up, ms (7 days). */
export const DEFAULT_UNDO_RETENTION_MS = 7 * 24 * 3_600_000;
/** Rows one cleanUp call looks at, by default. */
export const DEFAULT_CLEANUP_LIMIT = 500;
