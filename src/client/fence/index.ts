/** The RM fence (dtm-style barrier): the public export list. */
export { createPgFence, classifyPgError } from './pg.ts';
export type { PgFence, PgFenceTx } from './pg.ts';
export { createMysqlFence, classifyMysqlError } from './mysql.ts';
export type { MysqlFence, MysqlFenceTx, MysqlQueryResult } from './mysql.ts';
export type {
  Fence,
  FenceOptions,
  FenceCleanupOptions,
  FenceCleanupResult,
  FenceCleanupSchedule,
  IsolationLevel,
  DbErrorInfo,
  DbErrorKind,
} from './core.ts';
export { FENCE_OPS, isFenceOp, normalizeFenceKey, normalizeBranchId } from './key.ts';
export type { FenceKey, FenceOp, FenceOutcome, NormalizedFenceKey } from './key.ts';
export {
  FenceError,
  FenceConflictError,
  FenceAbortedError,
  FenceSchemaError,
  FenceMisuseError,
  ConfirmWithoutTryError,
  FenceRetentionError,
} from './errors.ts';
export type { FenceErrorOptions } from './errors.ts';
export {
  DEFAULT_FENCE_TABLE,
  MAX_FENCE_TABLE_NAME_CHARS,
  MAX_BRANCH_ID_DIGITS,
  DEFAULT_FENCE_MAX_ATTEMPTS,
  MAX_FENCE_MAX_ATTEMPTS,
  MAX_STALE_SNAPSHOT_RESTARTS,
  DEFAULT_FENCE_RETENTION_MS,
  DEFAULT_RETRY_HORIZON_MS,
  MIN_RETRY_HORIZON_MS,
  TC_MAX_TRANSACTION_TIMEOUT_MS,
  TC_PHASE_TWO_RETRY_WINDOW_MS,
  TC_RETRY_HORIZON_MS,
  FENCE_HORIZON_MARGIN_MS,
  DEFAULT_CLEANUP_BATCH_SIZE,
  MAX_CLEANUP_BATCH_SIZE,
  DEFAULT_CLEANUP_MAX_BATCHES,
  MAX_CLEANUP_MAX_BATCHES,
  DEFAULT_CLEANUP_INTERVAL_MS,
  MIN_CLEANUP_INTERVAL_MS,
} from './limits.ts';
