/**
 * The vocabulary of the Raft core. Say "committed entry" and "commit index" here; the
 * transaction layer's "global commit" is a different thing and never appears in src/raft.
 */

import type { NodeId } from '../../shared/ids.ts';

/**
 * A stable node id from config (e.g. "node1"), never an address: a node that moves is still
 * itself. One definition, in the shared vocabulary (src/shared/ids.ts).
 */
export type { NodeId };

export type Role = 'follower' | 'pre-candidate' | 'candidate' | 'leader';

/** Membership. Learners receive the log but do not vote and do not count toward quorum. */
export interface ConfState {
  voters: NodeId[];
  learners: NodeId[];
  /**
   * Opaque per-member context, carried through the log with the change that added the
   * member (the server layer stores the member's endpoints here as JSON). The core never
   * reads it; it keeps it so membership survives snapshots and restarts in one place.
   */
  context: Record<NodeId, string>;
}

/**
 * A single-server membership change. Concord uses one change at a time (Raft thesis §4.1)
 * with the safety fix: a leader proposes no change before it has committed an entry of
 * its own term. A change takes effect on each node when its entry is appended to that
 * node's log (not when committed), and is reverted if that entry is truncated.
 */
export type ConfChange =
  /** Adds a voter, or promotes a learner. An empty context keeps the member's existing one. */
  | { type: 'addVoter'; nodeId: NodeId; context: string }
  | { type: 'addLearner'; nodeId: NodeId; context: string }
  | { type: 'removeNode'; nodeId: NodeId };

/** A normal entry with empty data is the leader's no-op that opens its term. */
export type Entry =
  | { index: number; term: number; type: 'normal'; data: Uint8Array }
  | { index: number; term: number; type: 'conf'; change: ConfChange };

/** What must be durable before any vote grant or append response depending on it leaves. */
export interface HardState {
  term: number;
  vote: NodeId | null;
  commit: number;
}

export interface SnapshotMeta {
  /** The last log index the snapshot covers, and that entry's term. */
  index: number;
  term: number;
  /** Membership as of `index`. */
  conf: ConfState;
}

export interface Snapshot {
  meta: SnapshotMeta;
  data: Uint8Array;
}

/**
 * What the core keeps of its latest snapshot: the meta and the data's size, never the data
 * (tens to hundreds of MB at scale, issue 19). The data stays on the caller's disk; the
 * core asks for it chunk by chunk when a follower needs it (Ready.snapshotChunks), as
 * etcd's raft reads Storage.Snapshot() on demand.
 */
export interface SnapshotRef {
  meta: SnapshotMeta;
  /** Bytes of the snapshot's data. */
  bytes: number;
}

/**
 * A snapshot chunk the leader's core wants sent: the caller reads bytes
 * [offset, offset + length) of the snapshot `meta` names from its storage and sends them as
 * a `snap` message with these fields (and `crc`, the data's CRC-32 as stored, when it has
 * it). If that snapshot is no longer on its disk (a newer one replaced it), the chunk is
 * dropped: the leader's next attempt streams the newer one.
 */
export interface SnapshotChunkSend {
  from: NodeId;
  to: NodeId;
  term: number;
  meta: SnapshotMeta;
  offset: number;
  length: number;
  /** Whether this is the last chunk (offset + length = the data's size). */
  done: boolean;
}

interface MessageBase {
  from: NodeId;
  to: NodeId;
  term: number;
}

/**
 * Messages between cores. Snapshots travel in chunks (`snap` with offset/done) so that no
 * single message exceeds the configured size limit; the follower acknowledges each chunk.
 */
export type Message =
  | (MessageBase & {
      type: 'preVote';
      lastLogIndex: number;
      lastLogTerm: number;
      transfer: boolean;
    })
  | (MessageBase & { type: 'vote'; lastLogIndex: number; lastLogTerm: number; transfer: boolean })
  | (MessageBase & { type: 'preVoteResp'; reject: boolean })
  | (MessageBase & { type: 'voteResp'; reject: boolean })
  | (MessageBase & {
      type: 'app';
      prevIndex: number;
      prevTerm: number;
      entries: Entry[];
      commit: number;
    })
  | (MessageBase & {
      type: 'appResp';
      reject: boolean;
      /**
       * On success: the follower's last index matching the leader's. On reject: the prevIndex
       * rejected.
       */
      index: number;
      /**
       * Fast backtracking hint on reject: the conflicting term and the first index the follower
       * holds of it.
       */
      hintTerm: number;
      hintIndex: number;
    })
  | (MessageBase & { type: 'heartbeat'; commit: number; readCtx: string | null })
  | (MessageBase & { type: 'heartbeatResp'; readCtx: string | null })
  | (MessageBase & {
      type: 'snap';
      meta: SnapshotMeta;
      offset: number;
      chunk: Uint8Array;
      done: boolean;
      /**
       * CRC-32 of the whole snapshot's data, as the leader's storage recorded it when the
       * snapshot was written: the receiver checks the data it assembled against it, so a
       * snapshot damaged on the leader's disk or on the way is refused, never restored.
       * Optional on the wire (a peer of an older version sends none).
       */
      crc?: number;
    })
  | (MessageBase & { type: 'snapResp'; reject: boolean; index: number; offset: number })
  | (MessageBase & { type: 'timeoutNow' });

export type MessageType = Message['type'];

/** The answer to a ReadIndex request: reads may be served once applied ≥ index. */
export interface ReadState {
  ctx: string;
  index: number;
}

export interface SoftState {
  role: Role;
  leader: NodeId | null;
  term: number;
}

/**
 * What the core hands the caller after step/tick/propose. The core itself says which
 * messages may leave before this round's write (etcd's `msgs`) and which must wait for it
 * (etcd's `msgsAfterAppend`); the caller never decides by message type. The caller must:
 *  1. send `messages` whenever it likes, before or during the write: they depend on
 *     nothing this Ready persists (a leader's appends, heartbeats and timeoutNow, and
 *     heartbeat answers, of a term already durable) — so a leader's fsync
 *     and its followers' run in parallel (Raft thesis §10.2.1);
 *  2. persist `hardState`, `entries` (an entry whose index ≤ the durable last index
 *     replaces that index and everything after it) and `snapshot` in ONE synced write;
 *  3. only then send `messagesAfterPersist`: vote grants, append and snapshot answers, and
 *     anything of a term this Ready makes durable, depend on step 2; and read the
 *     `snapshotChunks` from storage and send them (they may leave whenever read);
 *  4. restore `snapshot` into the state machine if present, then apply `committedEntries`
 *     in order (without a snapshot they may be applied before or during step 2: they are
 *     committed, so durable on a quorum — a leader counts itself only at its durable index
 *     — and nothing in this write can change them; Raft thesis §10.2.1);
 *  5. hand `readStates` to their readers (any time: they depend on no write of this node);
 *  6. call `advance(ready)`.
 * No further Ready is produced until advance is called; in between, `takeUnblocked()`
 * hands out what depends on no write of this node: what may leave before a write (a
 * leader's appends of entries proposed meanwhile — pipelined, persisted by the next Ready
 * —, heartbeats and their answers), read states, and the entries committed meanwhile (a
 * quorum holds them durably; applied at once, after this Ready's own). So ReadIndex rounds
 * never wait behind the disk, the followers' fsyncs overlap the leader's, and an entry
 * both followers hold is applied before the leader's own write of it ends.
 */
export interface Ready {
  softState: SoftState | null;
  hardState: HardState | null;
  entries: Entry[];
  snapshot: Snapshot | null;
  /** May leave at once, before or during the write of this Ready. */
  messages: Message[];
  /** Must wait until this Ready's write is durable (etcd's msgsAfterAppend). */
  messagesAfterPersist: Message[];
  /**
   * Snapshot chunks to read from the caller's storage and send (the core holds no snapshot
   * data): as `messagesAfterPersist`, they leave after this Ready's write.
   */
  snapshotChunks: SnapshotChunkSend[];
  committedEntries: Entry[];
  readStates: ReadState[];
}

/**
 * What `takeUnblocked()` hands out between a Ready and its advance (while the caller awaits
 * the disk): see RaftCore.takeUnblocked.
 */
export interface Unblocked {
  /** May leave at once (as Ready.messages). */
  messages: Message[];
  readStates: ReadState[];
  /** Committed since the last hand-out: apply at once, in order, after the Ready's own. */
  committedEntries: Entry[];
  /** The commit index they stand on. */
  commit: number;
}

/** Limits, all named with their units. Defaults in config.ts. */
export interface RaftConfig {
  id: NodeId;
  /** Ticks a follower waits without hearing a leader before it campaigns; randomized in [n, 2n). */
  electionTicks: number;
  heartbeatTicks: number;
  preVote: boolean;
  checkQuorum: boolean;
  /** Upper bound on the encoded size of entries in one append message. */
  maxMsgBytes: number;
  /** Upper bound on append messages in flight to one follower (pipelining window). */
  maxInflightMsgs: number;
  /** Upper bound on one entry's data. */
  maxEntryBytes: number;
  /** Upper bound on proposed-but-uncommitted bytes on a leader; beyond it proposals are refused. */
  maxUncommittedBytes: number;
  /** Size of one snapshot chunk. */
  snapshotChunkBytes: number;
  /**
   * The whole cluster serves lease reads (the driver's `leaseReads`; needs checkQuorum).
   * Then a voter that heard a leader grants no vote, and campaigns on no operator's
   * command, until an election timeout of its own ticks has passed — after a restart as
   * well (it may have acknowledged a leader's heartbeat just before it went down). A
   * leader's lease rests on exactly that promise.
   */
  leaseReads: boolean;
  /** Seeded randomness for election timeouts: the core reads no global RNG. */
  random: () => number;
  /**
   * Whether a snapshot received from a leader may replace this node's state: called once
   * its last chunk arrived, BEFORE anything of it is persisted. The caller checks the data
   * against `crc` (the leader's CRC-32 of it, if its message carried one) and decodes it
   * into a scratch state machine (deterministic, no I/O); a refused one is answered with a
   * rejection and forgotten, and this node carries on with the state it has.
   */
  acceptSnapshot: (snapshot: Snapshot, crc: number | undefined) => boolean;
}

/** What a core restarts from: the durable state a driver loaded from storage. */
export interface DurableState {
  hardState: HardState;
  /** The durable snapshot's meta and size (its data stays with the caller). */
  snapshot: SnapshotRef | null;
  /** Entries after the snapshot, contiguous. */
  entries: Entry[];
  /** Membership if there is no snapshot and no conf entry in the log (bootstrap). */
  initialConf: ConfState;
}

export interface Progress {
  match: number;
  next: number;
  state: 'probe' | 'replicate' | 'snapshot';
  inflight: number;
  recentActive: boolean;
}

export interface Status {
  id: NodeId;
  role: Role;
  term: number;
  leader: NodeId | null;
  vote: NodeId | null;
  commit: number;
  applied: number;
  lastIndex: number;
  firstIndex: number;
  conf: ConfState;
  /** Only on a leader. */
  progress: Record<NodeId, Progress> | null;
  leadTransferee: NodeId | null;
}
