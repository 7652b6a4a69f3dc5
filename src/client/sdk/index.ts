/** The client SDK (TM, TCC, Saga): its export list. The package's public API is src/index.ts. */
export {
  createClient,
  DEFAULT_GROUP,
  DEFAULT_TRANSACTION_SERVICE_GROUP,
  SERVERS_ENV,
} from './client.ts';
export type { ClientOptions, ConcordClient, TccApi, SagaApi } from './client.ts';
export { TransactionAlreadyCommittedError } from './tm.ts';
export type {
  BeginOptions,
  TransactionOptions,
  TransactionScope,
  TransactionRole,
  TransactionOutcome,
  GlobalTransaction,
  NoRollbackRule,
} from './tm.ts';
export type { PhaseTwoOutcome, PhaseTwoState } from './phase-two-wait.ts';
export type { ClientHooks, BranchPoint } from './hooks.ts';
export { createBranchGate, MAX_GATE_WAITING } from './testing.ts';
export type { BranchGate, BranchGateOptions } from './testing.ts';
export { Propagation, planPropagation } from './propagation-mode.ts';
export type { PropagationPlan } from './propagation-mode.ts';
export type {
  ActionContext,
  TccActionDefinition,
  SagaActionDefinition,
  BranchAction,
} from './actions.ts';
export { GlobalStatus, BranchStatus, decisionOf, isEndStatus } from '../../shared/tc-vocabulary.ts';
export {
  TransactionTimeoutError,
  TransactionOutcomeUnknownError,
  TransactionPropagationError,
  NoGlobalTransactionError,
  TransactionRolledBackError,
  GlobalTimeoutError,
  TransactionRollingBackError,
  NoTransactionToJoinError,
  TransactionFailedError,
  BranchRefusedError,
  UnretryableBranchError,
  ForeignBranchError,
  ClientClosedError,
  isOutcomeUnknown,
} from './errors.ts';
export type { TransactionPhase } from './errors.ts';
export type {
  TcPort,
  TcCallOptions,
  BeginArgs,
  BranchRegisterArgs,
  BranchReportArgs,
  PhaseTwoRequest,
  PhaseTwoHandler,
  RmChannelArgs,
  RmChannelPort,
} from '../tc/port.ts';
export {
  DEFAULT_TRANSACTION_TIMEOUT_MS,
  MIN_TRANSACTION_TIMEOUT_MS,
  MAX_TRANSACTION_TIMEOUT_MS,
  MAX_APPLICATION_DATA_BYTES,
  MAX_RESOURCES_PER_CLIENT,
  MAX_CONCURRENT_PHASE_TWO,
  MAX_QUEUED_PHASE_TWO,
  RM_READY_TIMEOUT_MS,
  DEFAULT_CLOSE_DRAIN_MS,
  COMMIT_OUTCOME_QUERY_MS,
  MAX_PHASE_TWO_WAIT_MS,
} from './limits.ts';
