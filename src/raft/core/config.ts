import type { NodeId, RaftConfig } from './types.ts';

/** Defaults, in ticks and bytes. A tick is a driver-chosen interval (100 ms on a real node). */
export const DEFAULT_ELECTION_TICKS = 10;
export const DEFAULT_HEARTBEAT_TICKS = 1;
export const DEFAULT_MAX_MSG_BYTES = 1024 * 1024;
export const DEFAULT_MAX_INFLIGHT_MSGS = 256;
export const DEFAULT_MAX_ENTRY_BYTES = 1024 * 1024;
export const DEFAULT_MAX_UNCOMMITTED_BYTES = 64 * 1024 * 1024;
export const DEFAULT_SNAPSHOT_CHUNK_BYTES = 512 * 1024;
/** Bound on ReadIndex requests a leader holds at once. */
export const MAX_PENDING_READS = 4096;
/** Rough per-entry overhead counted against maxMsgBytes besides the data. */
export const ENTRY_OVERHEAD_BYTES = 32;

export function defaultRaftConfig(id: NodeId, random: () => number): RaftConfig {
  return {
    id,
    electionTicks: DEFAULT_ELECTION_TICKS,
    heartbeatTicks: DEFAULT_HEARTBEAT_TICKS,
    preVote: true,
    checkQuorum: true,
    leaseReads: false,
    maxMsgBytes: DEFAULT_MAX_MSG_BYTES,
    maxInflightMsgs: DEFAULT_MAX_INFLIGHT_MSGS,
    maxEntryBytes: DEFAULT_MAX_ENTRY_BYTES,
    maxUncommittedBytes: DEFAULT_MAX_UNCOMMITTED_BYTES,
    snapshotChunkBytes: DEFAULT_SNAPSHOT_CHUNK_BYTES,
    random,
    acceptSnapshot: () => true,
  };
}

export function validateRaftConfig(c: RaftConfig): void {
  const positive: Array<keyof RaftConfig> = [
    'electionTicks',
    'heartbeatTicks',
    'maxMsgBytes',
    'maxInflightMsgs',
    'maxEntryBytes',
    'maxUncommittedBytes',
    'snapshotChunkBytes',
  ];
  for (const k of positive) {
    const v = c[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0)
      throw new RangeError(`raft config ${k} must be a positive integer, got ${String(v)}`);
  }
  if (c.heartbeatTicks >= c.electionTicks)
    throw new RangeError('raft config heartbeatTicks must be smaller than electionTicks');
  if (c.id.length === 0) throw new RangeError('raft config id must not be empty');
  if (c.leaseReads && !c.checkQuorum)
    throw new RangeError(
      'raft config leaseReads needs checkQuorum (a leader must step down on losing its quorum)',
    );
}

export function entrySize(data: Uint8Array): number {
  return data.length + ENTRY_OVERHEAD_BYTES;
}
