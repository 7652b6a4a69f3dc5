/**
 * The Raft-backed session store: where the coordinator and the Raft meet. This module owns
 * both halves — proposing coordinator commands (RaftSessionStore) and applying committed
 * ones (CoordinatorLogStateMachine) — and is the server shell's only door to the Raft: the
 * node's config and the types its control surface speaks are re-exported here.
 */
export {
  DEFAULT_BARRIER_RETRY_MS,
  DEFAULT_READ_TIMEOUT_MS,
  DEFAULT_SUBMIT_TIMEOUT_MS,
  MAX_QUEUED_READS,
  MAX_READS_PER_BARRIER,
  RaftSessionStore,
} from './raft-session-store.ts';
export type { RaftPort, RaftSessionStoreOptions } from './raft-session-store.ts';
export {
  MAX_COMMANDS_PER_ENTRY,
  MAX_ENTRY_BYTES,
  SubmitBatcher,
  applyEntry,
  encodeBinBatchEntry,
  encodeEntry,
  isBatchEntry,
} from './command-batch.ts';
export { CoordinatorLogStateMachine } from './coordinator-log.ts';
export { createRaftSessions } from './raft-sessions.ts';
export type {
  RaftNodeControl,
  RaftSessions,
  RaftSessionsOptions,
  RaftStoreOptions,
} from './raft-sessions.ts';
export { validateRaftNodeConfig } from '../../raft/node/config.ts';
export type { RaftNodeConfig } from '../../raft/node/config.ts';
export type { DriverCounters } from '../../raft/driver.ts';
export type {
  ConfChange,
  ConfState,
  NodeId,
  Role,
  Status as RaftStatus,
} from '../../raft/core/types.ts';
