/** The Raft-backed session store: the coordinator's SessionStore over Concord's own Raft. */
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
  encodeEntry,
  isBatchEntry,
} from './command-batch.ts';
