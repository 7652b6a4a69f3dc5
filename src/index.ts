/**
 * Concord's public API: the client SDK a service imports (the `@concord/client` package,
 * built from this file by packages/client). An explicit export list — what is not named
 * here is internal and may change.
 *
 *   import { createClient, xidFetch, wrapHttpHandler } from '@concord/client';
 *   import { createPgFence } from '@concord/client/pg';        // src/pg.ts
 *   import { createMysqlFence } from '@concord/client/mysql';  // src/mysql.ts
 *
 * What needs a database driver lives in that driver's entry point, so that neither this
 * entry nor its type declarations reach for `pg` or `mysql2` (optional peer dependencies).
 *
 * docs/sdk.md documents every export and its defaults.
 */

// ---- The client: TM (global transactions), RM (TCC and Saga actions) ----
export {
  createClient,
  DEFAULT_GROUP,
  DEFAULT_TRANSACTION_SERVICE_GROUP,
  Propagation,
  planPropagation,
  GlobalStatus,
  BranchStatus,
  decisionOf,
  isEndStatus,
  DEFAULT_TRANSACTION_TIMEOUT_MS,
  MIN_TRANSACTION_TIMEOUT_MS,
  MAX_TRANSACTION_TIMEOUT_MS,
  MAX_APPLICATION_DATA_BYTES,
  MAX_RESOURCES_PER_CLIENT,
  MAX_CONCURRENT_PHASE_TWO,
  MAX_QUEUED_PHASE_TWO,
  RM_READY_TIMEOUT_MS,
  DEFAULT_CLOSE_DRAIN_MS,
  MAX_PHASE_TWO_WAIT_MS,
  createBranchGate,
} from './client/sdk/index.ts';
export type {
  ClientOptions,
  ConcordClient,
  TccApi,
  SagaApi,
  BeginOptions,
  TransactionOptions,
  TransactionScope,
  TransactionRole,
  TransactionOutcome,
  PhaseTwoOutcome,
  PhaseTwoState,
  ClientHooks,
  BranchPoint,
  BranchGate,
  BranchGateOptions,
  GlobalTransaction,
  NoRollbackRule,
  ActionContext,
  TccActionDefinition,
  SagaActionDefinition,
  BranchAction,
  TransactionPhase,
  PropagationPlan,
  TcPort,
  BeginArgs,
  BranchRegisterArgs,
  BranchReportArgs,
  PhaseTwoRequest,
  PhaseTwoHandler,
  RmChannelArgs,
  RmChannelPort,
} from './client/sdk/index.ts';

// ---- Errors ----
export {
  TransactionTimeoutError,
  TransactionOutcomeUnknownError,
  isOutcomeUnknown,
  TransactionPropagationError,
  NoGlobalTransactionError,
  TransactionRolledBackError,
  GlobalTimeoutError,
  TransactionRollingBackError,
  NoTransactionToJoinError,
  TransactionFailedError,
  TransactionAlreadyCommittedError,
  BranchRefusedError,
  UnretryableBranchError,
  ForeignBranchError,
  ClientClosedError,
} from './client/sdk/index.ts';
export {
  CapacityError,
  LockConflictError,
  UnknownXidError,
  IllegalStatusError,
  TcInternalError,
  UnavailableError,
  OutcomeUnknownError,
} from './client/tc/errors.ts';
export { TlsMismatchError, WrongPortError } from './client/wrong-port.ts';
export { ConcordError, BadRequestError, NotLeaderError, TimeoutError } from './shared/errors.ts';
export type { ErrorCode } from './shared/errors.ts';

// ---- The xid of the current async context ----
export {
  currentXid,
  currentContext,
  runWithXid,
  runWithoutXid,
  bindToCurrentContext,
  isValidXid,
  parseXid,
  MAX_XID_CHARS,
} from './client/context.ts';
export type { GlobalTxContext, ParsedXid, BranchType, Xid } from './client/context.ts';
export type { BranchId } from './shared/ids.ts';

// ---- xid propagation: HTTP (TX_XID header) and gRPC (tx_xid metadata) ----
export {
  XID_HEADER,
  xidHeaders,
  withXidHeaders,
  withXidInit,
  xidFetch,
  xidFromHeaders,
  xidMiddleware,
  wrapHttpHandler,
  xidFastifyPlugin,
  XID_METADATA_KEY,
  xidClientInterceptor,
  xidFromMetadata,
  withXidFromMetadata,
  InvalidIncomingXidError,
} from './client/propagation/index.ts';
export type {
  XidServerOptions,
  XidMiddleware,
  XidServerCallOptions,
  RequestWithHeaders,
} from './client/propagation/index.ts';

// ---- Logging: pino, or any logger with the usual methods (console) ----
export type { LoggerLike } from './client/logger.ts';

// ---- The fence (idempotent phase two, empty rollback, hanging prevention) ----
// The database-neutral part; createPgFence and createMysqlFence are in src/pg.ts and
// src/mysql.ts.
export {
  FenceError,
  FenceConflictError,
  FenceAbortedError,
  FenceSchemaError,
  FenceMisuseError,
  ConfirmWithoutTryError,
  FenceRetentionError,
} from './client/fence/errors.ts';
export {
  DEFAULT_FENCE_TABLE,
  DEFAULT_FENCE_RETENTION_MS,
  DEFAULT_RETRY_HORIZON_MS,
  MIN_RETRY_HORIZON_MS,
} from './client/fence/limits.ts';
export type {
  Fence,
  FenceOptions,
  FenceCleanupOptions,
  FenceCleanupResult,
} from './client/fence/core.ts';
export type { FenceOutcome, FenceOp, FenceKey } from './client/fence/key.ts';

// ---- AT mode (createPgAtDataSource / createMysqlAtDataSource are in src/pg.ts, src/mysql.ts) ----
export * from './client/at/public.ts';

// ---- XA (docs/sdk-xa.md); createPgXaDataSource / createMysqlXaDataSource: src/pg.ts, src/mysql.ts
export {
  XaError,
  PreparedTransactionsDisabledError,
  XaRecoverPermissionError,
  XaIdentifierTooLongError,
  XaMisuseError,
  XaHeuristicCommitError,
  XaNotStartedError,
  ONE_PHASE_MIN_REMAINING_MS,
  DEFAULT_RECOVERY_INTERVAL_MS,
} from './client/xa/index.ts';
export type {
  XaDataSource,
  XaDataSourceOptions,
  XaBranchContext,
  XaHooks,
  XaMetrics,
  RecoveryReport,
} from './client/xa/index.ts';
