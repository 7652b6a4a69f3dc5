/**
 * The coordinator's public API. Stores (src/store/*) implement SessionStore and apply
 * commands to CoordinatorStateMachine; the server wires Coordinator to gRPC and HTTP.
 */
export { Coordinator } from './coordinator.ts';
export type {
  BeginRequest,
  BranchReportRequest,
  CoordinatorOptions,
  GlobalReportRequest,
  LockQueryRequest,
  MarkResolvedRequest,
  RegisterBranchRequest,
  ResumeRequest,
  SessionInfo,
} from './coordinator.ts';
export { PhaseTwoDriver, DEFAULT_PHASE_TWO_OPTIONS, retryDelayMs } from './phase-two-driver.ts';
export type { PhaseTwoDriverDeps, PhaseTwoOptions, RmWait } from './phase-two-driver.ts';
export { CoordinatorStateMachine } from './state-machine.ts';
export type { CoordinatorStateView, LiveStatusView } from './state-machine.ts';
export { COMMAND_KINDS, commandEnvelope, decodeCommand, encodeCommand } from './commands.ts';
export type {
  AcquireDriverCommand,
  BeginCommand,
  BranchPhaseTwoResultCommand,
  BranchReportCommand,
  ChangeGlobalStatusCommand,
  Command,
  CommandKind,
  CommandResults,
  FinishGlobalCommand,
  FinishedSession,
  GlobalReportCommand,
  MarkResolvedCommand,
  Outcome,
  RegisterBranchCommand,
  RemoveBranchCommand,
  ResultOf,
  RetryResumedCommand,
  RetryScheduledCommand,
  RetryStoppedCommand,
} from './commands.ts';
export type { BranchGateway, Clock, IdSource, LeadershipEvent, SessionStore } from './ports.ts';
export {
  ApplicationRmUnavailableError,
  CapacityError,
  IllegalStatusError,
  LockConflictError,
  RetryHorizonPassedError,
  StaleTermError,
  UnknownXidError,
  rejectionToError,
} from './errors.ts';
export type { Rejection } from './errors.ts';
export { ROW_KEY_SEPARATOR, parseLockKey, rowKey, splitRowKey } from './lock-key.ts';
export { LockTable } from './lock-table.ts';
export { createSnowflakeIds } from './ids.ts';
export * from './limits.ts';
export {
  GLOBAL_TRANSITIONS,
  RESUME_EDGES,
  canTransition,
  isPhaseTwoInFlight,
  isSuccessfulEnd,
  isStuck,
  reportedStatus,
  resumedStatusOf,
  statusRank,
} from './types.ts';
export type { BranchSession, FinishedRecord, GlobalSession, RetryInfo } from './types.ts';
export {
  BranchStatus,
  BranchType,
  GlobalStatus,
  decisionOf,
  isBranchStatus,
  isBranchType,
  isEndStatus,
  isFailedEnd,
  isFinalStatus,
  isGlobalStatus,
} from '../shared/tc-vocabulary.ts';
export type { Decision } from '../shared/tc-vocabulary.ts';
