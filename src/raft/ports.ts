/**
 * The driver reaches disk, network and clock only through these ports, so the
 * deterministic simulator can run the real driver (and its persist → send → apply
 * ordering) with fakes behind it, and the real node with LevelDB, gRPC and timers.
 */
import type { Entry, HardState, Message, NodeId, Snapshot } from './core/types.ts';

export interface LoadedState {
  hardState: { term: number; vote: NodeId | null; commit: number };
  /** The durable snapshot with its data: the driver restores it, then lets the data go. */
  snapshot: Snapshot | null;
  /**
   * Whether that snapshot came from elsewhere (a leader, or the bootstrap seed) rather than
   * from a local compaction: the driver staggers its next snapshot point then (see
   * RaftDriverOptions.snapshotStagger). Absent: local.
   */
  snapshotReceived?: boolean;
  /** Entries after the snapshot index, contiguous, in index order. */
  entries: Entry[];
}

/** One round's durable write: ONE synced batch. */
export interface PersistBatch {
  hardState: HardState | null;
  /**
   * Entries to append; the first one may overwrite: every durable entry at index ≥ entries[0].index
   * is deleted in the same batch.
   */
  entries: Entry[];
  /** A snapshot received from the leader: replaces the whole log up to and including its index. */
  snapshot: Snapshot | null;
  /**
   * Whether save() must be durable (fsync) before it resolves; default true. The driver
   * always syncs: a round that changes nothing but the commit index writes nothing at all
   * (the commit index rides on the next write; see RaftDriver.persistReady). Entries, a
   * snapshot, a new term or a vote are always synced, because the messages that leave
   * after them depend on them. An unsynced write is still ordered: a later synced write
   * makes it durable too.
   */
  sync?: boolean;
}

export interface LogStorage {
  /**
   * Reads the durable state; detects a corrupt or torn tail (checksums) and throws
   * StorageCorruptError.
   */
  load(): Promise<LoadedState>;
  /**
   * Writes the batch in one synced write. Resolves only once durable. Rejects on a failed write
   * (the node must stop).
   */
  save(batch: PersistBatch): Promise<void>;
  /**
   * Local compaction: persists a snapshot of applied state and deletes the entries it covers, in
   * one synced write.
   */
  saveSnapshot(snapshot: Snapshot): Promise<void>;
  /**
   * Reads `length` bytes at `offset` of the durable snapshot at (index, term), to send to a
   * follower that needs it: nobody keeps a snapshot's data in memory (issue 19), it is read
   * from disk chunk by chunk, on demand (as etcd's raft reads Storage.Snapshot()). Resolves
   * with the bytes, the data's whole size and its CRC-32 as recorded when it was written;
   * with null if that snapshot is not the durable one (a newer one replaced it, or it is not
   * durable yet). Rejects with StorageCorruptError if the data cannot be read as recorded.
   */
  readSnapshotChunk(
    index: number,
    term: number,
    offset: number,
    length: number,
  ): Promise<SnapshotChunkRead | null>;
  close(): Promise<void>;
}

/** What LogStorage.readSnapshotChunk read. */
export interface SnapshotChunkRead {
  data: Uint8Array;
  /** Bytes of the snapshot's whole data. */
  bytes: number;
  /** CRC-32 of the snapshot's whole data. */
  crc: number;
}

export interface PeerTransport {
  /**
   * Queues messages for their peers. Never throws, never blocks: per-peer queues are
   * bounded and drop (Raft retransmits) rather than grow without limit.
   */
  send(messages: Message[]): void;
  /** Messages from peers are delivered here. */
  onMessage(handler: (message: Message) => void): void;
  /** The current membership's raft addresses by node id; peers not listed are disconnected. */
  setPeers(peers: ReadonlyMap<NodeId, string>): void;
  close(): Promise<void>;
}

export interface Clock {
  /** Milliseconds, monotonic. */
  now(): number;
  /** Calls fn every `ms` milliseconds until the returned cancel function is called. */
  every(ms: number, fn: () => void): () => void;
  /** Calls fn once after `ms`; returns a cancel function. */
  after(ms: number, fn: () => void): () => void;
}

/** A snapshot being encoded in slices (StateMachine.snapshotInSlices). */
export interface SnapshotCapture {
  /** One bounded part of the encode: null while more remain, then the snapshot's bytes. */
  step(): Uint8Array | null;
  /**
   * True: the capture shows the state as of its start while entries go on applying
   * (copy-on-write), so the driver applies committed entries between the steps instead of
   * holding them until the last.
   */
  readonly appliesMeanwhile?: boolean;
}

/**
 * The replicated state machine under the Raft. apply must be deterministic: it depends
 * only on the current state and the entry data, never on time or randomness.
 */
export interface StateMachine {
  /** Applies one committed entry's data; the result is handed to the proposer. */
  apply(index: number, data: Uint8Array): unknown;
  /** Encodes the whole state as of the last applied index. */
  snapshot(): Uint8Array;
  /**
   * Optional: the same bytes as snapshot(), in slices. Each `step()` of the capture does a
   * bounded part of the encode and returns null, the last returns the bytes. The driver runs
   * one step per event-loop turn and restores nothing until the last (a restore abandons the
   * capture); it applies nothing either, unless the capture applies meanwhile
   * (`appliesMeanwhile`): rounds, heartbeats and votes go on; the bytes are the state's at
   * the capture's start.
   */
  snapshotInSlices?(): SnapshotCapture;
  /** Replaces the whole state with a snapshot's. */
  restore(data: Uint8Array, index: number): void;
  /**
   * Decodes a snapshot received from a peer into a scratch state machine and checks it,
   * without touching the live state; throws a typed error (StorageCorruptError or the
   * state machine's own) if `restore` could not take it. The driver calls it before the
   * snapshot is persisted: a bad one is refused and the node keeps running.
   */
  validateSnapshot(data: Uint8Array): void;
}
