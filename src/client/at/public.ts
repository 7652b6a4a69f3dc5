/** AT mode's database-neutral public names (errors, options, types). */
export {
  AtStatementRefusedError,
  AtLockConflictError,
  AtLockHolderRollingBackError,
  AtDirtyRollbackError,
  AtImageMismatchError,
  AtUndoFormatError,
  AtLockQueryUnavailableError,
  AtParserMissingError,
} from './errors.ts';
export type { AtRefusal, AtDirtyRow } from './errors.ts';
export { DEFAULT_LOCK_RETRY, MAX_IMAGE_ROWS, DEFAULT_UNDO_RETENTION_MS } from './limits.ts';
export type { LockRetryPolicy } from './limits.ts';
export type { AtDataSource, AtDataSourceOptions, AtTx, CleanUpOptions } from './datasource.ts';
export type { AtHooks } from './core.ts';
