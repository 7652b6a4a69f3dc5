/**
 * RaftDriver: connects a RaftCore (a pure state machine) to the world through the ports
 * of ports.ts — log storage, peer transport, clock, replicated state machine. The same
 * driver runs in the server (LevelDB, gRPC, real timers) and in the deterministic
 * simulator (fakes), so the persist → send → apply ordering below is what the simulator
 * checks.
 *
 * One round (a "Ready"), strictly in this order:
 *   1. send the Ready's `messages`, which the core says may leave before the write (a
 *      leader's appends and heartbeats of its durable term);
 *   2. persist hardState + entries + received snapshot in ONE synced write — started
 *      here, and while it is under way, apply the round's committed entries (they are
 *      durable on a quorum; with applyBeforeOwnWrite off, only those already durable here);
 *   3. only then send `messagesAfterPersist` (vote grants and append responses depend on 2);
 *   4. restore the received snapshot into the state machine, apply the other committed
 *      entries; resolve the proposals and reads they complete; core.advance(ready).
 * Only one round runs at a time. Messages, ticks and proposals that arrive while a round
 * awaits the disk step the core at once and make the loop run again; meanwhile what needs
 * no write of this node leaves at once (scheduleUnblocked: heartbeats, read states, with
 * pipelineAppends a leader's appends of the entries proposed meanwhile) and the entries
 * committed meanwhile are applied (applyBeforeOwnWrite).
 *
 * A failed disk write is fatal: the driver sends nothing from that round, rejects every
 * pending request, stops, and reports through `onFatal`. It never carries on.
 */
import type { Logger } from '../shared/logger.ts';
import { silentLogger } from '../shared/logger.ts';
import {
  AssertionFailure,
  ConcordError,
  type ConcordErrorOptions,
  NotLeaderError,
  ProposalDroppedError,
  StoppedError,
  StorageCorruptError,
  TimeoutError,
  assert,
} from '../shared/errors.ts';
import { crc32 } from './storage/crc32.ts';
import { RaftCore } from './core/raft.ts';
import { defaultRaftConfig } from './core/config.ts';
import type {
  ConfChange,
  ConfState,
  DurableState,
  Entry,
  HardState,
  Message,
  NodeId,
  RaftConfig,
  ReadState,
  Ready,
  Role,
  Snapshot,
  SnapshotChunkSend,
  SnapshotMeta,
  SnapshotRef,
  Status,
  Unblocked,
} from './core/types.ts';
import type { Clock, LogStorage, PeerTransport, SnapshotCapture, StateMachine } from './ports.ts';
import { latencyTrace } from '../shared/latency-trace.ts';

// ---------------------------------------------------------------------------------------
// Limits and defaults (units in the names).

/** Milliseconds between two core ticks. Election and heartbeat timeouts are counted in ticks. */
export const DEFAULT_TICK_MS = 100;
/** Applied entries between two automatic snapshots (log compactions). */
export const DEFAULT_SNAPSHOT_EVERY_ENTRIES = 10_000;
/**
 * Applied entry bytes between two automatic snapshots: whichever of the two limits comes
 * first triggers one, so a log of large entries is compacted before it holds this much.
 */
export const DEFAULT_SNAPSHOT_EVERY_BYTES = 64 * 1024 * 1024;
/**
 * An idle node (nothing applied for DEFAULT_SNAPSHOT_IDLE_TICKS ticks) takes a snapshot once
 * it has applied this many entry bytes since the last one, so the log a burst left in memory
 * does not stay there until the next burst reaches the triggers above (issue 19).
 */
export const DEFAULT_SNAPSHOT_IDLE_BYTES = 1024 * 1024;
/** Ticks with nothing applied after which a node counts as idle (5 s at the default tick). */
export const DEFAULT_SNAPSHOT_IDLE_TICKS = 50;
/**
 * The trigger by the state's size (issue 19): a snapshot once the entry bytes applied since
 * the last one reach `ratio` × the last snapshot's size, and at least `minBytes`. The log a
 * node holds in memory stays within a fraction of its state, and the cost of the snapshots
 * stays proportional to the bytes applied (each costs about the state's size to encode).
 */
export const DEFAULT_SNAPSHOT_LOG_TO_STATE = { ratio: 0.5, minBytes: 8 * 1024 * 1024 };
/** DEFAULT_SNAPSHOT_LOG_TO_STATE's ratio in percent (the node's configuration key). */
export const DEFAULT_SNAPSHOT_LOG_PERCENT_OF_STATE = 50;
/**
 * Between two slices of a sliced snapshot, ms: a timer, so the network and disk callbacks
 * that came meanwhile run between them (Node's setTimeout waits at least 1 ms anyway).
 */
const CAPTURE_SLICE_GAP_MS = 1;
/**
 * A sliced snapshot's steps run one after another in one turn until this much time has
 * passed, then the rest waits for the next turn: a small state is encoded at once, a large
 * one (2,000 sessions a step) yields about every this many ms.
 */
export const DEFAULT_SNAPSHOT_SLICE_MS = 20;
/**
 * Proposals (entries and membership changes) accepted but not yet applied; beyond it propose() is
 * refused.
 */
export const DEFAULT_MAX_PENDING_PROPOSALS = 4_096;
/** Linearizable reads waiting for their read index; beyond it read() is refused. */
export const DEFAULT_MAX_PENDING_READS = 4_096;
/**
 * Ticks a read may wait for its read index to be confirmed and applied before it fails with
 * TimeoutError.
 */
export const DEFAULT_READ_TIMEOUT_TICKS = 50;
/**
 * With lease reads: the bound assumed on how much two nodes' clocks may drift apart, as a
 * fraction of elapsed time (0.05: while one node measures 1 s, another measures 0.95 to
 * 1.05 s). A lease is shortened by it; a drift beyond it can serve a stale read.
 */
export const DEFAULT_MAX_CLOCK_DRIFT = 0.05;
/** Largest drift bound accepted: beyond it a lease would be too short to be of use. */
export const MAX_CLOCK_DRIFT = 0.5;
/** How much earlier than asked a timer may fire (libuv truncates to the millisecond), per tick. */
export const TIMER_EARLY_MS = 1;

/** A request refused because a bounded queue of the driver is full. Retry later (with backoff). */
export class OverloadedError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super('UNAVAILABLE', message, { retryable: true, ...options });
  }
}

/**
 * A snapshot received from a leader that the state machine could not decode or validate.
 * Nothing of it was persisted; the leader resends (a corrupt frame is usually transient).
 */
export class SnapshotRejectedError extends ConcordError {
  readonly index: number;
  readonly term: number;
  constructor(index: number, term: number, from: NodeId | null, options: ConcordErrorOptions) {
    super(
      'BAD_REQUEST',
      `refused the snapshot at ${index} (term ${term})${from ? ` from ${from}` : ''}: it does not decode into a valid state`,
      { retryable: true, ...options },
    );
    this.index = index;
    this.term = term;
  }
}

/** The part of RaftCore the driver uses (the real core implements it; tests may wrap it). */
export interface RaftCoreApi {
  tick(): void;
  step(m: Message): void;
  propose(data: Uint8Array): { index: number; term: number };
  proposeConfChange(cc: ConfChange): { index: number; term: number };
  transferLeadership(to: NodeId): void;
  readIndex(ctx: string): void;
  /**
   * The index a lease read may be served at (leader, committed in its term, no transfer), or null.
   */
  leaseReadIndex(): number | null;
  /**
   * Between a Ready and its advance: what may leave before a write (a leader's appends,
   * heartbeats, their answers), read states, and (if `committed`) the entries committed
   * since, to apply at once after the Ready's own (see RaftCore.takeUnblocked).
   */
  takeUnblocked(opts?: { committed?: boolean; appends?: boolean }): Unblocked;
  campaign(): void;
  hasReady(): boolean;
  ready(): Ready;
  advance(rd: Ready): void;
  compact(snapshot: SnapshotRef): void;
  /** Term and membership as of an applied index, for a local snapshot. */
  snapshotMeta(index: number): SnapshotMeta;
  status(): Status;
}

/**
 * Timings the driver reports as they happen, for latency histograms (the server feeds its
 * /metrics from it). Called synchronously; must not throw, and should be cheap.
 */
export interface RaftObserver {
  /** One synced write of a round (a Ready): its duration in seconds. */
  persisted(seconds: number): void;
  /**
   * A peer answered a request of `type` (app, heartbeat, snap, vote, preVote): seconds from
   * the oldest such request still unanswered to that peer until this answer (the round
   * trip, the peer's disk write included where its answer waits for one).
   */
  rpc(type: string, seconds: number): void;
}

/** A request unanswered this long is taken as lost: the next one starts the clock again. */
export const RPC_ANSWER_LOST_MS = 5_000;

/** Which request each answer answers, for RaftObserver.rpc. */
const REQUEST_OF_ANSWER: Partial<Record<Message['type'], Message['type']>> = {
  appResp: 'app',
  heartbeatResp: 'heartbeat',
  snapResp: 'snap',
  voteResp: 'vote',
  preVoteResp: 'preVote',
};
const ANSWERED_TYPES: ReadonlySet<Message['type']> = new Set(
  Object.values(REQUEST_OF_ANSWER) as Message['type'][],
);

export interface RaftDriverOptions {
  id: NodeId;
  storage: LogStorage;
  transport: PeerTransport;
  clock: Clock;
  stateMachine: StateMachine;
  /** Bootstrap membership, used only when storage holds no snapshot and no conf entry. */
  initialConf: ConfState;
  logger?: Logger;
  /**
   * Overrides of the core's defaults (src/raft/core/config.ts). `id`, `random` and `acceptSnapshot`
   * are the driver's.
   */
  raft?: Partial<Omit<RaftConfig, 'id' | 'random' | 'acceptSnapshot'>>;
  /** Randomness for election timeouts. Default Math.random; the simulator passes a seeded one. */
  random?: () => number;
  /** Default DEFAULT_TICK_MS. */
  tickMs?: number;
  /** Default DEFAULT_SNAPSHOT_EVERY_ENTRIES. 0 disables this trigger. */
  snapshotEveryEntries?: number;
  /** Default DEFAULT_SNAPSHOT_EVERY_BYTES (of applied entry data). 0 disables this trigger. */
  snapshotEveryBytes?: number;
  /**
   * The idle trigger: a snapshot once nothing was applied for `ticks` ticks and at least
   * `bytes` of entry data were applied since the last one. Default DEFAULT_SNAPSHOT_IDLE_BYTES
   * and DEFAULT_SNAPSHOT_IDLE_TICKS; bytes 0 disables it.
   */
  snapshotWhenIdle?: { bytes: number; ticks: number };
  /**
   * The trigger by the state's size: a snapshot once the entry bytes applied since the last
   * reach max(minBytes, ratio × the last snapshot's bytes). Default
   * DEFAULT_SNAPSHOT_LOG_TO_STATE; ratio 0 disables it.
   */
  snapshotLogToState?: { ratio: number; minBytes: number };
  /**
   * Staggered snapshot points (default true): members take their snapshots at different
   * points of the log rather than all at the same index (each one holds its applies while
   * it encodes, issue 19). After a snapshot it did not take itself — the bootstrap seed,
   * or one received from a leader — a node takes its next one early, at (1 − k/n) of every
   * trigger's threshold, k being its rank among the n members counted from the leader's
   * (from the first member at bootstrap). From then on each takes one per threshold, so the
   * members' points stay k/n of a threshold apart: the thresholds are the same on every
   * member (the same log; a state of about the same size). A restart keeps a node's point:
   * it replays its log from its own snapshot. Never later than the unstaggered triggers.
   */
  snapshotStagger?: boolean;
  /**
   * A sliced snapshot's time per event-loop turn, ms. Default DEFAULT_SNAPSHOT_SLICE_MS;
   * 0: one step per turn (tests and the simulator use it to exercise the slicing).
   */
  snapshotSliceMs?: number;
  /** Default DEFAULT_MAX_PENDING_PROPOSALS. */
  maxPendingProposals?: number;
  /** Default DEFAULT_MAX_PENDING_READS. */
  maxPendingReads?: number;
  /** Default DEFAULT_READ_TIMEOUT_TICKS. */
  readTimeoutTicks?: number;
  /**
   * Serve reads on a leader's lease, without a quorum round per read (default false: every
   * read is a ReadIndex round). Must be the same on every node (followers then hold their
   * votes as the lease needs, see RaftConfig.leaseReads); needs checkQuorum. A lease lasts
   * (electionTicks − 1) ticks shortened by the clock drift bound, from the moment the last
   * heartbeat a quorum confirmed was sent; it is off while leadership is being transferred.
   * Unsafe if clocks drift apart faster than `maxClockDrift`.
   */
  leaseReads?: boolean;
  /** Default DEFAULT_MAX_CLOCK_DRIFT; in [0, MAX_CLOCK_DRIFT). */
  maxClockDrift?: number;
  /** Called once if the driver fail-stops (a failed disk write, a broken invariant). */
  onFatal?: (error: unknown) => void;
  /** Latency hooks (persist, peer round trips); default none. */
  observer?: RaftObserver;
  /**
   * Awaited between sending a leader's appends and starting the write of the same round,
   * so the transport can put them on the wire first (the server passes a setImmediate:
   * Node's HTTP/2 sends what a stream wrote from its own immediate, after the JavaScript
   * of the round). The followers' fsyncs are on the path of a commit, the leader's own
   * seldom is: they start a little sooner, the leader's a little later. Default none.
   */
  yieldBeforePersist?: () => Promise<void>;
  /**
   * Pipelined appends: a leader's appends of entries proposed while its round's write is
   * under way leave at once (the followers' fsyncs overlap the leader's; the next round
   * writes the entries here), instead of with the next round. Off, they wait for the
   * round's end, as one batch per follower; committed entries are applied during the
   * write either way. Default true.
   */
  pipelineAppends?: boolean;
  /**
   * Apply at quorum before this node's own write (Raft thesis §10.2.1): a round applies
   * its committed entries as soon as its write has started, also those the write holds, and
   * entries committed during the write (a quorum of the others answered first) are applied
   * at once. Off, a round applies before its write only what was on this node's disk
   * before it, the rest after, and nothing is applied during a write. Default true.
   */
  applyBeforeOwnWrite?: boolean;
  /** Builds the core. Default `new RaftCore(config, durable)`; tests may wrap it. */
  createCore?: (config: RaftConfig, durable: DurableState) => RaftCoreApi;
}

/** What onStateChange listeners receive: the role, term, leader and membership now. */
export interface RaftStateChange {
  id: NodeId;
  role: Role;
  term: number;
  leader: NodeId | null;
  conf: ConfState;
}

export interface DriverStatus extends Status {
  started: boolean;
  stopped: boolean;
  /** Last log index known durable on this node's disk. */
  durableLastIndex: number;
  /** Index of the latest snapshot on this node's disk (0 if none). */
  snapshotIndex: number;
  /**
   * Entry data applied since the latest local snapshot was taken, bytes: what the in-memory
   * log holds besides unapplied entries (and the entries of a snapshot still being written).
   */
  bytesSinceSnapshot: number;
  /** A local snapshot is being encoded or written (its buffers are in use until it ends). */
  snapshotInFlight: boolean;
  /** Snapshots received from a leader and restored into the state machine since start. */
  snapshotsRestored: number;
  /** Snapshots received from a leader and refused (they did not decode) since start. */
  snapshotsRejected: number;
  pendingProposals: number;
  pendingReads: number;
  /** Reads served on the leader's lease (no quorum round) since start. */
  leaseReadsServed: number;
  /**
   * Hot-path counters since start (rates and ratios are the caller's: rounds/s, entries
   * per round, reads per round): Readies handled, entries they persisted, entries applied,
   * reads completed (ReadIndex and lease), local snapshots taken and their time.
   */
  counters: DriverCounters;
  /** Milliseconds the leader's lease still holds (0 if none, or lease reads are off). */
  leaseRemainingMs: number;
}

export interface DriverCounters {
  rounds: number;
  entriesPersisted: number;
  entriesApplied: number;
  /**
   * Of them: applied before this node's own write of them ended (committed by a quorum of
   * the others: Raft thesis §10.2.1), and applied during a round rather than at its start.
   */
  appliedBeforeOwnWrite: number;
  appliedUnblocked: number;
  readsCompleted: number;
  snapshotsTaken: number;
  /** Total milliseconds of local snapshots (encode + write). */
  snapshotMsTotal: number;
  /**
   * The last local snapshot: encode ms (on the event loop; in slices, their sum), write ms
   * (off it), bytes, the slices it was encoded in (1: in one go) and the longest one, ms.
   */
  lastSnapshotEncodeMs: number;
  lastSnapshotSlices: number;
  lastSnapshotLongestSliceMs: number;
  lastSnapshotWriteMs: number;
  lastSnapshotBytes: number;
}

/** A heartbeat round the driver asked for to renew its lease. */
interface LeaseProbe {
  ctx: string;
  /** The clock when it was asked for: its heartbeats leave at or after this. */
  sentAt: number;
  epoch: number;
}

interface PendingProposal {
  index: number;
  term: number;
  kind: 'data' | 'conf';
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
}

interface PendingRead {
  ctx: string;
  /** The term this node led when the read was requested. */
  term: number;
  /** Set once the core reported the read index; the read completes once applied ≥ index. */
  index: number | null;
  deadlineTick: number;
  resolve: () => void;
  reject: (error: Error) => void;
}

interface SnapshotRequest {
  resolve: () => void;
  reject: (error: Error) => void;
}

function cloneConf(conf: ConfState): ConfState {
  return { voters: [...conf.voters], learners: [...conf.learners], context: { ...conf.context } };
}

function confSignature(conf: ConfState): string {
  return JSON.stringify([conf.voters, conf.learners, conf.context]);
}

export class RaftDriver {
  readonly id: NodeId;
  private readonly storage: LogStorage;
  private readonly transport: PeerTransport;
  private readonly clock: Clock;
  private readonly sm: StateMachine;
  private readonly initialConf: ConfState;
  private readonly log: Logger;
  private readonly raftOverrides: Partial<Omit<RaftConfig, 'id' | 'random' | 'acceptSnapshot'>>;
  private readonly random: () => number;
  private readonly createCore: (config: RaftConfig, durable: DurableState) => RaftCoreApi;
  private readonly yieldBeforePersist: (() => Promise<void>) | null;
  private readonly pipelineAppends: boolean;
  private readonly applyBeforeOwnWrite: boolean;

  readonly tickMs: number;
  readonly snapshotEveryEntries: number;
  readonly snapshotEveryBytes: number;
  readonly snapshotWhenIdle: { bytes: number; ticks: number };
  readonly snapshotLogToState: { ratio: number; minBytes: number };
  readonly snapshotStagger: boolean;
  readonly snapshotSliceMs: number;
  readonly maxPendingProposals: number;
  readonly maxPendingReads: number;
  readonly readTimeoutTicks: number;
  readonly leaseReads: boolean;
  readonly maxClockDrift: number;
  /** How long a confirmed heartbeat round holds the lease, in clock ms (set at start). */
  private leaseMs = 0;
  private leaseStart = Number.NEGATIVE_INFINITY;
  /** Bumped whenever a lease must not carry over (a role or term change, a transfer). */
  private leaseEpoch = 0;
  private leaseProbe: LeaseProbe | null = null;
  private leaseReadsServed = 0;
  private unblockedScheduled = false;
  private readonly observer: RaftObserver | null;
  /**
   * With an observer: when the oldest unanswered request of a type went to a peer ("peer|type").
   */
  private readonly rpcSentAt = new Map<string, number>();

  private core: RaftCoreApi | null = null;
  private started = false;
  private stopped = false;
  private cancelTick: (() => void) | null = null;
  private ticks = 0;

  // The ready loop's re-entrancy guard.
  private looping = false;
  /**
   * Whether the round under way has applied its Ready's committed entries, so that entries
   * committed since may be applied now, after them (takeUnblocked).
   */
  private roundApplied = false;
  private loopAgain = false;

  // What is durable on this node's disk, as far as the driver knows (for assertions) — but
  // for its commit index, which may run ahead of the disk's: a round that changes nothing
  // but the commit index writes nothing (persistReady), and `commitOnDisk` is what the
  // last write held.
  private durable: HardState = { term: 0, vote: null, commit: 0 };
  private commitOnDisk = 0;
  private durableLastIndex = 0;
  private snapshotIndex = 0;

  // What the state machine holds.
  private applied = 0;
  private snapshotsRestored = 0;
  private snapshotsRejected = 0;

  // Soft state as last reported, and membership as last pushed to the transport.
  private role: Role = 'follower';
  private term = 0;
  private leader: NodeId | null = null;
  private peersSignature = '';
  private confNow: ConfState;

  private readonly proposals = new Map<number, PendingProposal>();
  private readonly reads = new Map<string, PendingRead>();
  private readSeq = 0;
  private readNonce = '';
  private snapshotRequests: SnapshotRequest[] = [];
  /** A local snapshot whose write is under way (at most one); rounds go on meanwhile. */
  private snapshotInFlight = false;
  /**
   * A local snapshot being encoded in slices (StateMachine.snapshotInSlices), one per turn:
   * committed entries handed out meanwhile wait in `deferred` and are applied after its last
   * slice, so the state it encodes stays as of its index — unless the capture keeps that
   * state itself (`appliesMeanwhile`, copy-on-write): then they apply as they come.
   */
  private capture: {
    capture: SnapshotCapture;
    meta: SnapshotMeta;
    requests: SnapshotRequest[];
    encodeMs: number;
    slices: number;
    longestSliceMs: number;
    cancel: (() => void) | null;
  } | null = null;
  private deferred: Entry[] = [];
  /** The commit index the core gave with the deferred entries (it need not be durable). */
  private deferredCommit = 0;
  /** Bytes of the latest snapshot taken, restored or loaded (the trigger by the state's size). */
  private stateBytes = 0;
  /** Applied index and entry bytes since the last snapshot taken or restored (the triggers). */
  private capturedIndex = 0;
  private bytesSinceCapture = 0;
  /**
   * How early the next snapshot comes, as a fraction of each trigger's threshold: set after
   * a snapshot this node did not take (snapshotStagger), 0 after one it took.
   */
  private snapshotHeadStart = 0;
  /** The tick at which an entry was last applied (the idle trigger counts from it). */
  private lastApplyTick = 0;
  // Counters for the status (and the server's /metrics).
  private rounds = 0;
  private entriesPersisted = 0;
  private entriesApplied = 0;
  /** Entries applied before this node's own write of them ended (a quorum of others held them). */
  private appliedBeforeOwnWrite = 0;
  /** Entries the driver applied between a round's start and its end (takeUnblocked). */
  private appliedUnblocked = 0;
  private readsCompleted = 0;
  private snapshotsTaken = 0;
  private snapshotMsTotal = 0;
  private lastSnapshot = { encodeMs: 0, writeMs: 0, bytes: 0, slices: 0, longestSliceMs: 0 };

  private readonly stateListeners = new Set<(s: RaftStateChange) => void>();
  private readonly fatalListeners = new Set<(e: unknown) => void>();

  constructor(options: RaftDriverOptions) {
    this.id = options.id;
    this.storage = options.storage;
    this.transport = options.transport;
    this.clock = options.clock;
    this.sm = options.stateMachine;
    this.initialConf = cloneConf(options.initialConf);
    this.confNow = cloneConf(options.initialConf);
    this.log = (options.logger ?? silentLogger()).child({
      component: 'raft-driver',
      node: options.id,
    });
    this.raftOverrides = options.raft ?? {};
    this.random = options.random ?? Math.random;
    this.createCore = options.createCore ?? ((config, durable) => new RaftCore(config, durable));
    this.yieldBeforePersist = options.yieldBeforePersist ?? null;
    this.pipelineAppends = options.pipelineAppends ?? true;
    this.applyBeforeOwnWrite = options.applyBeforeOwnWrite ?? true;
    this.tickMs = options.tickMs ?? DEFAULT_TICK_MS;
    this.snapshotEveryEntries = options.snapshotEveryEntries ?? DEFAULT_SNAPSHOT_EVERY_ENTRIES;
    this.snapshotEveryBytes = options.snapshotEveryBytes ?? DEFAULT_SNAPSHOT_EVERY_BYTES;
    this.snapshotWhenIdle = options.snapshotWhenIdle ?? {
      bytes: DEFAULT_SNAPSHOT_IDLE_BYTES,
      ticks: DEFAULT_SNAPSHOT_IDLE_TICKS,
    };
    this.snapshotLogToState = options.snapshotLogToState ?? DEFAULT_SNAPSHOT_LOG_TO_STATE;
    this.snapshotStagger = options.snapshotStagger ?? true;
    this.snapshotSliceMs = options.snapshotSliceMs ?? DEFAULT_SNAPSHOT_SLICE_MS;
    this.maxPendingProposals = options.maxPendingProposals ?? DEFAULT_MAX_PENDING_PROPOSALS;
    this.maxPendingReads = options.maxPendingReads ?? DEFAULT_MAX_PENDING_READS;
    this.readTimeoutTicks = options.readTimeoutTicks ?? DEFAULT_READ_TIMEOUT_TICKS;
    this.leaseReads = options.leaseReads ?? false;
    this.maxClockDrift = options.maxClockDrift ?? DEFAULT_MAX_CLOCK_DRIFT;
    assert(
      this.maxClockDrift >= 0 && this.maxClockDrift < MAX_CLOCK_DRIFT,
      () => `maxClockDrift must be in [0, ${MAX_CLOCK_DRIFT}), got ${this.maxClockDrift}`,
    );
    if (options.onFatal) this.fatalListeners.add(options.onFatal);
    this.observer = options.observer ?? null;
    assert(this.tickMs > 0, 'tickMs must be positive');
    assert(this.snapshotEveryEntries >= 0, 'snapshotEveryEntries must be ≥ 0');
    assert(this.snapshotEveryBytes >= 0, 'snapshotEveryBytes must be ≥ 0');
    assert(
      this.snapshotWhenIdle.bytes >= 0 && this.snapshotWhenIdle.ticks > 0,
      'snapshotWhenIdle: bytes must be ≥ 0 and ticks > 0',
    );
    assert(
      this.snapshotLogToState.ratio >= 0 && this.snapshotLogToState.minBytes >= 0,
      'snapshotLogToState: ratio and minBytes must be ≥ 0',
    );
    assert(this.snapshotSliceMs >= 0, 'snapshotSliceMs must be ≥ 0');
    assert(
      this.maxPendingProposals > 0 && this.maxPendingReads > 0,
      'pending limits must be positive',
    );
  }

  // -------------------------------------------------------------------------------------
  // Lifecycle

  /**
   * Loads the durable state, restores the state machine from the snapshot, builds the core and
   * starts ticking.
   */
  async start(): Promise<void> {
    assert(!this.started, 'start() called twice');
    this.started = true;
    const loaded = await this.storage.load();
    if (this.stopped) return;
    const snap = loaded.snapshot;
    const snapIndex = snap?.meta.index ?? 0;
    // Paired with the storage's write-side checks: what we read back must be a contiguous log after
    // the snapshot.
    loaded.entries.forEach((e, i) => {
      assert(
        e.index === snapIndex + 1 + i,
        () =>
          `loaded log not contiguous after snapshot ${snapIndex}: entry ${i} has index ${e.index}`,
      );
    });
    assert(
      loaded.hardState.commit <= snapIndex + loaded.entries.length,
      () =>
        `loaded commit ${loaded.hardState.commit} beyond the loaded log (last ${snapIndex + loaded.entries.length})`,
    );

    if (snap) this.sm.restore(snap.data, snap.meta.index);
    this.stateBytes = snap?.data.length ?? 0;
    // From here on only the snapshot's meta and size are kept: its data stays on disk, read
    // back chunk by chunk if a follower needs it (sendSnapshotChunks).
    const snapRef = snap ? { meta: snap.meta, bytes: snap.data.length } : null;
    loaded.snapshot = null;
    this.applied = snapIndex;
    this.snapshotIndex = snapIndex;
    this.capturedIndex = snapIndex;
    this.durable = { ...loaded.hardState };
    this.commitOnDisk = loaded.hardState.commit;
    this.durableLastIndex = snapIndex + loaded.entries.length;

    this.readNonce = Math.floor(this.random() * 2 ** 32).toString(36);
    const config: RaftConfig = {
      ...defaultRaftConfig(this.id, this.random),
      ...this.raftOverrides,
      id: this.id,
      random: this.random,
      leaseReads: this.leaseReads,
      acceptSnapshot: (snapshot, crc) => this.acceptSnapshot(snapshot, crc),
    };
    // A follower that confirmed a heartbeat sent at t grants no vote until an election
    // timeout of its own ticks has passed: (electionTicks − 1) ticks of its clock at least
    // (the first may fire at once). Measured on this node's clock, shortened for drift.
    const rho = this.maxClockDrift;
    const ticks = config.electionTicks - 1;
    this.leaseMs = Math.max(
      0,
      (ticks * this.tickMs * (1 - rho)) / (1 + rho) - ticks * TIMER_EARLY_MS,
    );
    this.core = this.createCore(config, {
      hardState: { ...loaded.hardState },
      snapshot: snapRef,
      entries: loaded.entries,
      initialConf: cloneConf(this.initialConf),
    });
    const st = this.core.status();
    // A node that starts from a snapshot it took replays its log from there: its snapshot
    // point stays where it was. From the seed or a leader's, it moves to its own.
    if (snap === null || loaded.snapshotReceived === true)
      this.snapshotHeadStart = this.staggerFraction(st.conf, null);
    this.role = st.role;
    this.term = st.term;
    this.leader = st.leader;
    this.transport.onMessage((m) => this.onMessage(m));
    this.refreshPeers(true);
    this.cancelTick = this.clock.every(this.tickMs, () => this.onTick());
    this.log.info(
      { term: st.term, commit: st.commit, lastIndex: st.lastIndex, snapshotIndex: snapIndex },
      'raft driver started',
    );
    this.kick();
  }

  /**
   * Stops ticking and serving; rejects pending requests with StoppedError and closes the
   * transport and the storage. A round awaiting the disk is abandoned (nothing it would
   * send is sent).
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.halt(new StoppedError());
    await this.transport.close();
    await this.storage.close();
  }

  onStateChange(listener: (s: RaftStateChange) => void): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  onFatal(listener: (error: unknown) => void): () => void {
    this.fatalListeners.add(listener);
    return () => this.fatalListeners.delete(listener);
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  // -------------------------------------------------------------------------------------
  // Requests

  /**
   * Proposes one entry. Resolves with the state machine's apply result once the entry is
   * applied on this node. Rejects with NotLeaderError (carrying the known leader) on a
   * follower, OverloadedError beyond maxPendingProposals, ProposalDroppedError if the
   * entry at its index was applied with another term, or if this node lost leadership
   * before the entry committed (then its outcome is unknown: it may still be committed
   * by the next leader, so retry only idempotent commands), StoppedError on shutdown.
   */
  propose(data: Uint8Array): Promise<unknown> {
    return this.submit('data', (core) => core.propose(data));
  }

  /** Proposes one membership change; resolves when its entry is applied on this node. */
  changeMembership(cc: ConfChange): Promise<void> {
    return this.submit('conf', (core) => core.proposeConfChange(cc)) as Promise<void>;
  }

  /**
   * A linearizable read barrier (ReadIndex): resolves once this node, still the leader
   * confirmed by a quorum, has applied everything committed when read() was called.
   * NotLeaderError on a follower; TimeoutError after readTimeoutTicks.
   */
  read(): Promise<void> {
    const core = this.liveCore();
    if (this.reads.size >= this.maxPendingReads) {
      return Promise.reject(
        new OverloadedError(`too many pending reads (max ${this.maxPendingReads})`),
      );
    }
    // Unique across restarts too: a late heartbeat response must never confirm another
    // incarnation's read.
    const ctx = `${this.id}:${this.readNonce}:${++this.readSeq}`;
    // On a lease: the index now, no quorum round (it waits only for apply).
    const leaseIndex = this.leaseRemainingMs() > 0 ? core.leaseReadIndex() : null;
    if (leaseIndex === null) {
      try {
        core.readIndex(ctx);
      } catch (err) {
        return Promise.reject(this.checkCoreError(err));
      }
    } else this.leaseReadsServed++;
    const p = new Promise<void>((resolve, reject) => {
      this.reads.set(ctx, {
        ctx,
        term: this.term,
        index: leaseIndex,
        deadlineTick: this.ticks + this.readTimeoutTicks,
        resolve,
        reject,
      });
    });
    if (leaseIndex !== null) this.completeReads();
    else this.kick();
    return p;
  }

  /**
   * Milliseconds the lease still holds by this node's clock (0 if none, or lease reads are off).
   */
  private leaseRemainingMs(): number {
    if (!this.leaseReads || this.role !== 'leader') return 0;
    return Math.max(0, this.leaseStart + this.leaseMs - this.clock.now());
  }

  /** Forgets the lease: it must not carry over a role or term change, or a transfer. */
  private dropLease(): void {
    this.leaseEpoch++;
    this.leaseStart = Number.NEGATIVE_INFINITY;
    this.leaseProbe = null;
  }

  /**
   * Asks for a heartbeat round to renew the lease (one at a time; a lost one is given up
   * after an election timeout). Its confirmation moves the lease's start to when it was
   * asked for — no later than its heartbeats left.
   */
  private renewLease(core: RaftCoreApi): void {
    if (!this.leaseReads || this.role !== 'leader') return;
    const now = this.clock.now();
    const probe = this.leaseProbe;
    if (probe !== null && now - probe.sentAt < this.leaseMs) return;
    // Not while leadership is handed over, nor before the leader knows the commit index.
    if (core.leaseReadIndex() === null) return;
    const ctx = `${this.id}:${this.readNonce}:lease:${++this.readSeq}`;
    try {
      core.readIndex(ctx);
    } catch {
      return; // too many pending reads, or not leader any more: try on the next tick
    }
    this.leaseProbe = { ctx, sentAt: now, epoch: this.leaseEpoch };
  }

  /** Read states from the core: read indexes for reads, renewals for the lease. */
  private onReadStates(readStates: readonly ReadState[]): void {
    for (const rs of readStates) {
      const probe = this.leaseProbe;
      if (probe !== null && rs.ctx === probe.ctx) {
        this.leaseProbe = null;
        if (probe.epoch === this.leaseEpoch && probe.sentAt > this.leaseStart)
          this.leaseStart = probe.sentAt;
        continue;
      }
      const r = this.reads.get(rs.ctx);
      if (r) r.index = rs.index;
    }
    this.completeReads();
  }

  /**
   * Asks the leader to hand leadership to `to` (Raft thesis §3.10). Throws NotLeaderError on a
   * follower.
   */
  transferLeadership(to: NodeId): void {
    const core = this.liveCore();
    // The transferee may be elected at once, by voters that still honour this leader.
    this.dropLease();
    try {
      core.transferLeadership(to);
    } catch (err) {
      throw this.checkCoreError(err);
    }
    this.kick();
  }

  /** Starts an election now (operator action; tests). */
  campaign(): void {
    const core = this.liveCore();
    core.campaign();
    this.kick();
  }

  /** Takes a snapshot of the applied state now and compacts the log behind it. */
  snapshotNow(): Promise<void> {
    this.liveCore();
    const p = new Promise<void>((resolve, reject) =>
      this.snapshotRequests.push({ resolve, reject }),
    );
    this.kick();
    return p;
  }

  /**
   * What bounds a peer's numbers (transport/bounds.ts), read per received message: the term
   * as last reported (it may lag the core's by a round, which only tightens the bound) and
   * the last index — the durable one when that answers, else the core's.
   */
  peerBounds(): { term: number; lastIndex: (atLeast: number) => number } {
    return {
      term: this.term,
      lastIndex: (atLeast) =>
        atLeast <= this.durableLastIndex || !this.core
          ? this.durableLastIndex
          : this.core.status().lastIndex,
    };
  }

  status(): DriverStatus {
    const core = this.core;
    const base: Status = core
      ? core.status()
      : {
          id: this.id,
          role: 'follower',
          term: 0,
          leader: null,
          vote: null,
          commit: 0,
          applied: 0,
          lastIndex: 0,
          firstIndex: 1,
          conf: cloneConf(this.initialConf),
          progress: null,
          leadTransferee: null,
        };
    // An explicit literal, not `{ ...base, extra }`: V8 builds the spread-then-extend
    // shape on a slow path (tens of µs), and the simulator calls status() after every step.
    return {
      id: base.id,
      role: base.role,
      term: base.term,
      leader: base.leader,
      vote: base.vote,
      commit: base.commit,
      lastIndex: base.lastIndex,
      firstIndex: base.firstIndex,
      conf: base.conf,
      progress: base.progress,
      leadTransferee: base.leadTransferee,
      applied: this.applied,
      started: this.started,
      stopped: this.stopped,
      durableLastIndex: this.durableLastIndex,
      snapshotIndex: this.snapshotIndex,
      bytesSinceSnapshot: this.bytesSinceCapture,
      snapshotInFlight: this.snapshotInFlight,
      snapshotsRestored: this.snapshotsRestored,
      snapshotsRejected: this.snapshotsRejected,
      pendingProposals: this.proposals.size,
      pendingReads: this.reads.size,
      leaseReadsServed: this.leaseReadsServed,
      leaseRemainingMs: this.leaseRemainingMs(),
      counters: {
        rounds: this.rounds,
        entriesPersisted: this.entriesPersisted,
        entriesApplied: this.entriesApplied,
        appliedBeforeOwnWrite: this.appliedBeforeOwnWrite,
        appliedUnblocked: this.appliedUnblocked,
        readsCompleted: this.readsCompleted,
        snapshotsTaken: this.snapshotsTaken,
        snapshotMsTotal: this.snapshotMsTotal,
        lastSnapshotEncodeMs: this.lastSnapshot.encodeMs,
        lastSnapshotWriteMs: this.lastSnapshot.writeMs,
        lastSnapshotBytes: this.lastSnapshot.bytes,
        lastSnapshotSlices: this.lastSnapshot.slices,
        lastSnapshotLongestSliceMs: this.lastSnapshot.longestSliceMs,
      },
    };
  }

  // -------------------------------------------------------------------------------------
  // Events from the world

  private onTick(): void {
    if (this.stopped || !this.core) return;
    this.ticks++;
    latencyTrace?.('d.tick', this.ticks);
    try {
      this.core.tick();
    } catch (err) {
      this.fail(err);
      return;
    }
    this.expireReads();
    this.renewLease(this.core);
    this.kick();
  }

  /** Hands messages to the transport, noting when requests left (for RaftObserver.rpc). */
  private send(messages: Message[]): void {
    if (this.observer !== null) {
      const now = this.clock.now();
      for (const m of messages) {
        if (!ANSWERED_TYPES.has(m.type)) continue;
        const key = `${m.to}|${m.type}`;
        const sentAt = this.rpcSentAt.get(key);
        if (sentAt === undefined || now - sentAt > RPC_ANSWER_LOST_MS) this.rpcSentAt.set(key, now);
      }
    }
    this.transport.send(messages);
  }

  /** A peer's answer: the round trip since the oldest request of its type still unanswered. */
  private observeAnswer(m: Message): void {
    const request = REQUEST_OF_ANSWER[m.type];
    if (request === undefined || this.observer === null) return;
    const key = `${m.from}|${request}`;
    const sentAt = this.rpcSentAt.get(key);
    if (sentAt === undefined) return;
    this.rpcSentAt.delete(key);
    this.observer.rpc(request, (this.clock.now() - sentAt) / 1000);
  }

  private onMessage(m: Message): void {
    if (this.stopped || !this.core) return;
    this.observeAnswer(m);
    latencyTrace?.(
      `d.recv.${m.type}`,
      m.type === 'app' ? m.prevIndex + m.entries.length : m.type === 'appResp' ? m.index : 0,
    );
    if (m.to !== this.id) {
      this.log.warn(
        { to: m.to, from: m.from, type: m.type },
        'dropping a message addressed to another node',
      );
      return;
    }
    try {
      this.core.step(m);
    } catch (err) {
      if (err instanceof AssertionFailure) {
        this.fail(err);
        return;
      }
      // A peer's bad message must not take the node down; Raft retransmits what matters.
      this.log.warn({ err, from: m.from, type: m.type }, 'core refused a peer message');
      return;
    }
    this.kick();
  }

  private submit(
    kind: 'data' | 'conf',
    call: (core: RaftCoreApi) => { index: number; term: number },
  ): Promise<unknown> {
    let core: RaftCoreApi;
    try {
      core = this.liveCore();
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.proposals.size >= this.maxPendingProposals) {
      return Promise.reject(
        new OverloadedError(`too many pending proposals (max ${this.maxPendingProposals})`),
      );
    }
    let at: { index: number; term: number };
    try {
      at = call(core);
    } catch (err) {
      return Promise.reject(this.checkCoreError(err));
    }
    latencyTrace?.('d.propose', at.index);
    const p = new Promise<unknown>((resolve, reject) => {
      const old = this.proposals.get(at.index);
      // An older proposal at the same index was overwritten by this leader's log.
      if (old)
        old.reject(
          new ProposalDroppedError(
            `entry ${old.index} of term ${old.term} was overwritten by term ${at.term}`,
          ),
        );
      this.proposals.set(at.index, { index: at.index, term: at.term, kind, resolve, reject });
    });
    this.kick();
    return p;
  }

  // -------------------------------------------------------------------------------------
  // The ready loop

  private kick(): void {
    if (this.stopped || !this.core) return;
    if (this.looping) {
      this.loopAgain = true;
      this.scheduleUnblocked();
      return;
    }
    this.looping = true;
    // The round starts in a microtask, not now: every message of a received batch and
    // every proposal of one I/O callback steps the core first, so one round — one fsync,
    // one batch per peer — carries them all.
    queueMicrotask(() => void this.loop());
  }

  /**
   * While a round awaits the disk, what depends on no write of this node goes out at once,
   * in one batch per microtask, instead of waiting for the round to end: a leader's appends
   * of entries proposed meanwhile (pipelined: the followers' fsyncs overlap the leader's;
   * the next round persists them here), heartbeats and their answers, read states; and the
   * entries committed meanwhile are applied (a quorum holds them durably, which may not
   * include this node yet: Raft thesis §10.2.1), after the round's own.
   */
  private scheduleUnblocked(): void {
    if (this.unblockedScheduled) return;
    this.unblockedScheduled = true;
    queueMicrotask(() => {
      this.unblockedScheduled = false;
      const core = this.core;
      // Between rounds the next Ready carries them.
      if (this.stopped || core === null || !this.looping) return;
      try {
        const { messages, readStates, committedEntries, commit } = core.takeUnblocked({
          committed: this.applyBeforeOwnWrite && this.roundApplied,
          appends: this.pipelineAppends,
        });
        if (messages.length > 0) {
          latencyTrace?.('d.send.unblocked', messages.length);
          // A member added by an entry this round has not handed out yet is a peer already.
          this.refreshPeers(false);
          for (const m of messages)
            assert(
              m.term <= this.durable.term,
              () => `${m.type} of term ${m.term} taken before term ${m.term} is durable`,
            );
          this.send(messages);
        }
        if (committedEntries.length > 0) {
          latencyTrace?.('d.apply.unblocked', committedEntries.length);
          this.appliedUnblocked += committedEntries.length;
          for (const e of committedEntries) this.applyOrDefer(e, commit);
          if (readStates.length === 0) this.completeReads();
        }
        if (readStates.length > 0) this.onReadStates(readStates);
      } catch (err) {
        this.fail(err);
      }
    });
  }

  private async loop(): Promise<void> {
    const core = this.core;
    assert(core !== null, 'loop without a core');
    try {
      do {
        this.loopAgain = false;
        while (!this.stopped && core.hasReady()) {
          await this.handleReady(core, core.ready());
        }
        if (!this.stopped && !this.snapshotInFlight && this.wantsSnapshot())
          this.startSnapshot(core);
      } while (this.loopAgain && !this.stopped);
    } catch (err) {
      this.fail(err);
    } finally {
      this.looping = false;
    }
  }

  private async handleReady(core: RaftCoreApi, rd: Ready): Promise<void> {
    this.rounds++;
    this.roundApplied = false;
    latencyTrace?.('d.round', rd.entries.length);
    this.entriesPersisted += rd.entries.length;
    // 0. Check what the core asks us to persist against what we know is durable.
    this.checkReady(rd);

    // Membership may change on append of a conf entry, on truncation of one, or with a snapshot.
    const first = rd.entries[0];
    const confMayChange =
      rd.snapshot !== null ||
      (first !== undefined &&
        (first.index <= this.durableLastIndex || rd.entries.some((e) => e.type === 'conf')));
    // The transport must know every member before the messages to them go out.
    if (confMayChange) this.refreshPeers(false);

    this.sendBeforePersist(rd);
    if (this.yieldBeforePersist !== null && rd.messages.length > 0 && rd.entries.length > 0) {
      await this.yieldBeforePersist();
      if (this.stopped) return;
    }

    // 1. Persist: one synced write; nothing else leaves before it is durable. The write
    // starts first (the disk is the slow part: a follower's answer waits for it), then
    // the committed entries are applied while the disk works.
    const persisted = this.persistReady(rd);
    const appliedEarly = this.applyCommittedEarly(rd);
    if (!(await persisted)) return;

    // 2. Send what depends on the write: vote grants, append responses, everything else.
    if (rd.messagesAfterPersist.length > 0) {
      latencyTrace?.('d.send.after', rd.messagesAfterPersist.length);
      this.send(rd.messagesAfterPersist);
    }
    if (rd.snapshotChunks.length > 0) this.sendSnapshotChunks(rd.snapshotChunks);

    // Soft state: role, term, leader.
    if (rd.softState)
      this.onSoftState(
        rd.softState.role,
        rd.softState.term,
        rd.softState.leader,
        rd.hardState?.commit ?? this.durable.commit,
      );

    // 3. Restore, then apply.
    if (rd.snapshot) {
      this.abandonCapture(rd.snapshot.meta.index);
      this.restoreSnapshot(rd.snapshot);
    }
    for (let i = appliedEarly; i < rd.committedEntries.length; i++)
      this.applyOrDefer(rd.committedEntries[i]!, this.durable.commit);
    this.roundApplied = true;

    // 4. Complete reads; advance.
    this.onReadStates(rd.readStates);
    core.advance(rd);
  }

  /** Step 0: what the core asks us to persist, checked against what we know is durable. */
  private checkReady(rd: Ready): void {
    const first = rd.entries[0];
    if (first) {
      rd.entries.forEach((e, i) =>
        assert(
          e.index === first.index + i,
          () => `ready entries not contiguous at ${i}: ${e.index}`,
        ),
      );
      const base = rd.snapshot ? rd.snapshot.meta.index : this.durableLastIndex;
      assert(
        first.index <= base + 1,
        () =>
          `ready entries start at ${first.index}, leaving a gap after durable last index ${base}`,
      );
      assert(
        first.index > (rd.snapshot ? rd.snapshot.meta.index : this.snapshotIndex),
        () => `ready entry ${first.index} lies inside the snapshot`,
      );
    }
    if (rd.hardState) this.checkHardState(rd.hardState);
    if (rd.snapshot) {
      assert(
        rd.snapshot.meta.index > this.applied,
        () =>
          `received snapshot ${rd.snapshot?.meta.index} is not ahead of applied ${this.applied}`,
      );
    }
  }

  /** Term and commit never go backwards; the vote never changes within a term. */
  private checkHardState(hs: HardState): void {
    assert(
      hs.term >= this.durable.term,
      () => `term goes backwards: ${this.durable.term} → ${hs.term}`,
    );
    assert(
      hs.commit >= this.durable.commit,
      () => `commit index goes backwards: ${this.durable.commit} → ${hs.commit}`,
    );
    assert(
      hs.term > this.durable.term || this.durable.vote === null || hs.vote === this.durable.vote,
      () => `vote changes within term ${hs.term}: ${this.durable.vote} → ${hs.vote}`,
    );
  }

  /**
   * Step 1a. What the core says may leave before the write leaves now (Raft thesis §10.2.1):
   * a leader's appends, heartbeats, snapshot chunks and timeoutNow of its durable term,
   * so its fsync and its followers' run in parallel. Its own new entries count for
   * nothing before they are durable: the core counts only its durable index toward a
   * commit, so no commit index these messages carry covers what this round writes.
   */
  private sendBeforePersist(rd: Ready): void {
    if (rd.messages.length === 0) return;
    latencyTrace?.('d.send.early', rd.messages.length);
    for (const m of rd.messages)
      assert(
        m.term <= this.durable.term,
        () => `${m.type} of term ${m.term} may not leave before term ${m.term} is durable`,
      );
    this.send(rd.messages);
  }

  /**
   * Step 1b. The round's committed entries are applied while its write is under way (it
   * was started just before): they are committed, so a quorum holds them durably (a
   * leader counts itself only at its durable index), and nothing in this round's write
   * can change them — even those this write holds, not yet on this node's disk (Raft
   * thesis §10.2.1; etcd applies in parallel with its WAL write for the same reason). A
   * proposer hears its answer one fsync sooner. The commit index itself need not be
   * durable first: a restarted node rebuilds its state machine from its snapshot and the
   * log, and learns the commit index again from the leader; a local snapshot is taken only
   * between rounds, when everything applied is on this node's disk (startSnapshot). Entries
   * that follow a received snapshot wait until it is durable and restored (step 3).
   * Returns how many it applied.
   */
  private applyCommittedEarly(rd: Ready): number {
    if (rd.snapshot !== null) return 0;
    const commitNow = rd.hardState?.commit ?? this.durable.commit;
    let n = 0;
    // Off (applyBeforeOwnWrite false): only what was on this node's disk before the round.
    while (
      n < rd.committedEntries.length &&
      (this.applyBeforeOwnWrite || rd.committedEntries[n]!.index <= this.durableLastIndex)
    )
      this.applyOrDefer(rd.committedEntries[n++]!, commitNow);
    if (n === rd.committedEntries.length) this.roundApplied = true;
    return n;
  }

  /**
   * Step 1. Persist: one synced write; nothing else leaves before it is durable. Returns
   * false when the round must stop here (the write failed, or the driver stopped meanwhile).
   *
   * A round that changes nothing but the commit index writes nothing at all (it was an
   * unsynced write before; etcd's MustSync is false for it too): such a round then does
   * not wait for the disk, and the next round — a proposal's — does not wait behind it.
   * The commit index goes to disk with the next write (an append, a term, a vote). Nothing
   * depends on it being there: a restarted node rebuilds its state machine from its
   * snapshot and log, applies up to the commit index it finds, and learns the rest from
   * the leader; a commit index found on disk is still one this node knew (never ahead of
   * its durable log: asserted below).
   */
  private async persistReady(rd: Ready): Promise<boolean> {
    const hs = rd.hardState;
    if (
      hs !== null &&
      rd.entries.length === 0 &&
      rd.snapshot === null &&
      hs.term === this.durable.term &&
      hs.vote === this.durable.vote
    ) {
      this.durable = { ...hs };
    } else if (hs !== null || rd.entries.length > 0 || rd.snapshot !== null) {
      // A commit index that no write carried yet rides along with this one.
      const hardState =
        hs ?? (this.durable.commit > this.commitOnDisk ? { ...this.durable } : null);
      const t0 = this.clock.now();
      latencyTrace?.('d.persist.sync', rd.entries.length);
      try {
        await this.storage.save({ hardState, entries: rd.entries, snapshot: rd.snapshot });
      } catch (err) {
        this.fail(err, 'disk write failed');
        return false;
      }
      latencyTrace?.('d.persisted', rd.entries.length);
      if (this.observer !== null) this.observer.persisted((this.clock.now() - t0) / 1000);
      if (this.stopped) return false;
      if (hardState !== null) this.commitOnDisk = hardState.commit;
      this.markDurable(rd);
    }
    assert(
      this.durable.commit <= this.durableLastIndex,
      () =>
        `durable commit ${this.durable.commit} beyond durable last index ${this.durableLastIndex}`,
    );
    return true;
  }

  /** After the round's write: what it wrote is what this node knows is durable. */
  private markDurable(rd: Ready): void {
    if (rd.hardState) this.durable = { ...rd.hardState };
    if (rd.snapshot) {
      this.snapshotIndex = rd.snapshot.meta.index;
      this.durableLastIndex = rd.snapshot.meta.index;
    }
    const last = rd.entries[rd.entries.length - 1];
    if (last) this.durableLastIndex = last.index;
  }

  /**
   * Snapshot chunks the core wants sent: read from the storage (nobody holds a snapshot's
   * data in memory), sent as they arrive, then let go. A chunk of a snapshot the disk no
   * longer holds (a newer one replaced it) is dropped: the leader's next attempt (the next
   * heartbeat's answer) streams the newer one. A chunk that cannot be read is dropped and
   * logged: the follower stays behind, the node goes on serving the others.
   */
  private sendSnapshotChunks(chunks: readonly SnapshotChunkSend[]): void {
    for (const c of chunks) {
      assert(
        c.term <= this.durable.term,
        () => `snapshot chunk of term ${c.term} before term ${c.term} is durable`,
      );
      const at = { to: c.to, index: c.meta.index, offset: c.offset };
      this.storage.readSnapshotChunk(c.meta.index, c.meta.term, c.offset, c.length).then(
        (read) => {
          if (this.stopped) return;
          if (read === null) {
            this.log.debug(at, 'snapshot chunk not sent: that snapshot was replaced');
            return;
          }
          if (read.data.length !== c.length || (c.offset + c.length === read.bytes) !== c.done) {
            this.log.error(
              { ...at, length: c.length, read: read.data.length, bytes: read.bytes },
              'snapshot chunk not sent: the data on disk does not have the size the core knows',
            );
            return;
          }
          latencyTrace?.('d.send.snap', c.offset);
          this.send([
            {
              type: 'snap',
              from: c.from,
              to: c.to,
              term: c.term,
              meta: c.meta,
              offset: c.offset,
              chunk: read.data,
              done: c.done,
              crc: read.crc,
            },
          ]);
        },
        (err: unknown) => {
          if (!this.stopped)
            this.log.error({ ...at, err }, 'snapshot chunk not sent: it could not be read');
        },
      );
    }
  }

  /**
   * The core asks, before it keeps a received snapshot: is it the data the leader's disk
   * recorded (its CRC-32), and does it decode into a valid state? Decoded into a scratch
   * state machine by the port; the live state is not touched.
   */
  private acceptSnapshot(snapshot: Snapshot, crc: number | undefined): boolean {
    try {
      if (crc !== undefined && crc32(snapshot.data) !== crc)
        throw new StorageCorruptError(
          `snapshot data of ${snapshot.data.length} bytes does not match the leader's checksum`,
        );
      this.sm.validateSnapshot(snapshot.data);
      return true;
    } catch (cause) {
      // Whatever the decoder trips on, the bytes came from a peer: refused, never fatal.
      this.snapshotsRejected++;
      const err = new SnapshotRejectedError(snapshot.meta.index, snapshot.meta.term, this.leader, {
        cause,
      });
      this.log.warn({ err, bytes: snapshot.data.length }, err.message);
      return false;
    }
  }

  private restoreSnapshot(snap: Snapshot): void {
    this.sm.restore(snap.data, snap.meta.index);
    this.stateBytes = snap.data.length;
    this.applied = snap.meta.index;
    this.capturedIndex = snap.meta.index;
    this.bytesSinceCapture = 0;
    this.snapshotHeadStart = this.staggerFraction(snap.meta.conf, this.leader);
    this.snapshotsRestored++;
    // Proposals the snapshot covers cannot be matched to their entries any more.
    for (const [index, p] of this.proposals) {
      if (index <= snap.meta.index) {
        this.proposals.delete(index);
        p.reject(
          new ProposalDroppedError(
            `entry ${index} was superseded by a snapshot at ${snap.meta.index}; its outcome is unknown`,
          ),
        );
      }
    }
    this.log.info(
      { index: snap.meta.index, term: snap.meta.term },
      'restored a snapshot from the leader',
    );
  }

  /**
   * Applies one committed entry, or keeps it for after the sliced snapshot under way (one
   * that does not apply meanwhile).
   */
  private applyOrDefer(e: Entry, commit: number): void {
    if (this.capture !== null && this.capture.capture.appliesMeanwhile !== true) {
      this.deferred.push(e);
      this.deferredCommit = Math.max(this.deferredCommit, commit);
    } else this.applyEntry(e, commit);
  }

  /** Applies one committed entry; `commit` is the core's commit index for this round. */
  private applyEntry(e: Entry, commit: number): void {
    assert(
      e.index === this.applied + 1,
      () => `applying entry ${e.index} after applied ${this.applied}: applied must grow by one`,
    );
    // An entry beyond this node's durable log may be applied: it is committed, so durable on
    // a quorum (applyCommittedEarly). Only the commit index bounds what is applied.
    assert(e.index <= commit, () => `applying entry ${e.index} beyond the commit index ${commit}`);
    if (e.index > this.durableLastIndex) this.appliedBeforeOwnWrite++;
    let result: unknown = undefined;
    latencyTrace?.('d.apply', e.index);
    if (e.type === 'normal') {
      if (e.data.length > 0) result = this.sm.apply(e.index, e.data);
      this.bytesSinceCapture += e.data.length;
    }
    this.lastApplyTick = this.ticks;
    this.applied = e.index;
    this.entriesApplied++;

    const p = this.proposals.get(e.index);
    if (p) {
      this.proposals.delete(e.index);
      const sameEntry = p.term === e.term && (p.kind === 'conf') === (e.type === 'conf');
      latencyTrace?.('d.resolve', e.index);
      if (sameEntry) p.resolve(p.kind === 'conf' ? undefined : result);
      else
        p.reject(
          new ProposalDroppedError(
            `entry ${e.index} was applied with term ${e.term}, not the proposal's term ${p.term}`,
          ),
        );
    }
  }

  private onSoftState(role: Role, term: number, leader: NodeId | null, commit: number): void {
    const changed = role !== this.role || term !== this.term || leader !== this.leader;
    this.role = role;
    this.term = term;
    this.leader = leader;
    if (!changed) return;
    this.dropLease();
    // A request made as leader of an older term (or of this term, now that this node no
    // longer leads) lost its leader. What is committed will still be applied here; an
    // uncommitted entry may or may not survive under the next leader. Requests of a newer
    // term than this soft state (made after it, as a leader again) are kept.
    const lost = (t: number) => t < term || (t === term && role !== 'leader');
    for (const [index, p] of this.proposals) {
      if (index > commit && lost(p.term)) {
        this.proposals.delete(index);
        p.reject(
          new ProposalDroppedError(
            `leadership lost (term ${p.term} → ${term}) before entry ${index} committed; it may still be committed by the new leader`,
          ),
        );
      }
    }
    for (const [ctx, r] of this.reads) {
      if (r.index === null && lost(r.term)) {
        this.reads.delete(ctx);
        r.reject(new NotLeaderError(leader));
      }
    }
    this.log.info({ role, term, leader }, 'raft state changed');
    this.emitState();
  }

  private completeReads(): void {
    for (const [ctx, r] of this.reads) {
      if (r.index !== null && r.index <= this.applied) {
        this.reads.delete(ctx);
        this.readsCompleted++;
        r.resolve();
      }
    }
  }

  private expireReads(): void {
    for (const [ctx, r] of this.reads) {
      if (this.ticks >= r.deadlineTick) {
        this.reads.delete(ctx);
        r.reject(new TimeoutError(`read not confirmed within ${this.readTimeoutTicks} ticks`));
      }
    }
  }

  // -------------------------------------------------------------------------------------
  // Snapshots (local compaction)

  private wantsSnapshot(): boolean {
    if (this.snapshotRequests.length > 0) return true;
    // Staggered (snapshotStagger): each threshold is reached early by the head start.
    return this.thresholdReached() >= 1 - this.snapshotHeadStart || this.idleWithLog();
  }

  /**
   * How far the log since the last snapshot is toward the nearest of the triggers by
   * entries, bytes and the state's size, as a fraction of its threshold (0: none is on).
   */
  private thresholdReached(): number {
    let reached = 0;
    if (this.snapshotEveryEntries > 0)
      reached = (this.applied - this.capturedIndex) / this.snapshotEveryEntries;
    if (this.snapshotEveryBytes > 0)
      reached = Math.max(reached, this.bytesSinceCapture / this.snapshotEveryBytes);
    const { ratio, minBytes } = this.snapshotLogToState;
    if (ratio > 0) {
      const threshold = Math.max(minBytes, ratio * this.stateBytes, 1);
      reached = Math.max(reached, this.bytesSinceCapture / threshold);
    }
    return reached;
  }

  /**
   * This node's head start (snapshotStagger) after a snapshot taken at `from`'s point (the
   * leader that sent it; null: the bootstrap seed, the same point on every member): its rank
   * among the members, counted from `from`'s, over their number. Members are ranked by id,
   * voters then learners, so every node computes the same ranks.
   */
  private staggerFraction(conf: ConfState, from: NodeId | null): number {
    if (!this.snapshotStagger) return 0;
    const members = [...[...conf.voters].sort(), ...[...conf.learners].sort()];
    const n = members.length;
    const mine = members.indexOf(this.id);
    if (n < 2 || mine < 0) return 0;
    const base = from === null ? 0 : Math.max(0, members.indexOf(from));
    const k = (((mine - base) % n) + n) % n;
    return k / n;
  }

  /**
   * The idle trigger (snapshotWhenIdle): a burst's log is not kept in memory while idle.
   * Staggered (snapshotStagger): the member of rank k waits (1 + k) × `ticks`, so the
   * members do not all capture at once when the whole cluster pauses (a pause is what a
   * leader's own capture makes of a closed-loop load: it holds the answers).
   */
  private idleWithLog(): boolean {
    const { bytes, ticks } = this.snapshotWhenIdle;
    if (bytes <= 0 || this.bytesSinceCapture < bytes) return false;
    const idle = this.ticks - this.lastApplyTick;
    if (idle < ticks) return false;
    if (!this.snapshotStagger) return true;
    const conf = this.confNow;
    const members = [...[...conf.voters].sort(), ...[...conf.learners].sort()];
    return idle >= ticks * (1 + Math.max(0, members.indexOf(this.id)));
  }

  /**
   * Takes a local snapshot off the round loop: the state is encoded here, between two
   * rounds (the state machine's own cost; everything applied so far, nothing half-applied),
   * and its write — a data file and a small meta batch — goes on while the next rounds
   * run. Once durable, the in-memory log is trimmed behind it.
   */
  private startSnapshot(core: RaftCoreApi): void {
    const requests = this.snapshotRequests;
    this.snapshotRequests = [];
    if (this.applied <= this.snapshotIndex) {
      for (const r of requests) r.resolve();
      return;
    }
    const meta = core.snapshotMeta(this.applied);
    assert(meta.index <= this.durableLastIndex, 'snapshot beyond the durable log');
    // The next point is one threshold after where this one was due, not after where it is
    // taken: a round applies many entries at once (a catch-up, a burst), and this one may
    // come later than its point, or earlier (idle, on request). So each member keeps its
    // place (snapshotStagger); never later than one threshold from this snapshot.
    this.snapshotHeadStart = this.snapshotStagger
      ? (this.snapshotHeadStart + this.thresholdReached()) % 1
      : 0;
    this.capturedIndex = meta.index;
    this.bytesSinceCapture = 0;
    this.snapshotInFlight = true;
    if (this.commitOnDisk < meta.index) {
      // The commit index this snapshot stands on may be one no write carried yet (a round
      // that changes only the commit index writes nothing): it goes first, now, between two
      // rounds (no write of a newer hard state is under way), in the same write chain as
      // the snapshot's meta batch. Unsynced: that synced batch comes after it.
      const hardState = { ...this.durable };
      assert(hardState.commit >= meta.index, 'snapshot beyond the commit index');
      this.commitOnDisk = hardState.commit;
      this.storage
        .save({ hardState, entries: [], snapshot: null, sync: false })
        .catch((err: unknown) => this.fail(err, 'disk write failed'));
    }
    const capture = this.sm.snapshotInSlices?.();
    if (capture === undefined) {
      const t0 = this.clock.now();
      const data = this.sm.snapshot();
      const ms = this.clock.now() - t0;
      this.writeSnapshot(core, { meta, data }, requests, {
        encodeMs: ms,
        slices: 1,
        longestSliceMs: ms,
      });
      return;
    }
    this.capture = {
      capture,
      meta,
      requests,
      encodeMs: 0,
      slices: 0,
      longestSliceMs: 0,
      cancel: null,
    };
    this.stepCapture(core);
  }

  /**
   * One slice of the sliced snapshot under way (its steps until snapshotSliceMs passed); the
   * last applies what waited and writes the snapshot.
   */
  private stepCapture(core: RaftCoreApi): void {
    const c = this.capture;
    if (c === null || this.stopped) return;
    c.cancel = null;
    const t0 = this.clock.now();
    let data: Uint8Array | null;
    try {
      do data = c.capture.step();
      while (data === null && this.clock.now() - t0 < this.snapshotSliceMs);
    } catch (err) {
      this.fail(err, 'snapshot encode failed');
      return;
    }
    const ms = this.clock.now() - t0;
    c.encodeMs += ms;
    c.slices++;
    c.longestSliceMs = Math.max(c.longestSliceMs, ms);
    if (data === null) {
      c.cancel = this.clock.after(CAPTURE_SLICE_GAP_MS, () => this.stepCapture(core));
      return;
    }
    this.capture = null;
    this.applyDeferred();
    this.writeSnapshot(core, { meta: c.meta, data }, c.requests, c);
  }

  /** The entries that waited for a sliced snapshot, applied in order; then the reads. */
  private applyDeferred(): void {
    const deferred = this.deferred;
    this.deferred = [];
    try {
      const commit = Math.max(this.deferredCommit, this.durable.commit);
      for (const e of deferred) this.applyEntry(e, commit);
    } catch (err) {
      this.fail(err, 'apply failed');
      return;
    }
    if (deferred.length > 0) this.completeReads();
  }

  /**
   * A snapshot received from the leader (at `index`) replaces the state: the sliced snapshot
   * under way is dropped, and so are the entries that waited for it (the snapshot covers them).
   */
  private abandonCapture(index: number): void {
    const c = this.capture;
    if (c === null) return;
    c.cancel?.();
    this.capture = null;
    this.snapshotInFlight = false;
    for (const e of this.deferred)
      assert(
        e.index <= index,
        () => `entry ${e.index} waited for a local snapshot beyond the received ${index}`,
      );
    this.deferred = [];
    // The received snapshot is newer than the one they asked for.
    for (const r of c.requests) r.resolve();
  }

  /** The encoded snapshot's write, off the round loop; the log is trimmed once it is durable. */
  private writeSnapshot(
    core: RaftCoreApi,
    snap: Snapshot,
    requests: SnapshotRequest[],
    encoded: { encodeMs: number; slices: number; longestSliceMs: number },
  ): void {
    const t1 = this.clock.now();
    this.storage.saveSnapshot(snap).then(
      () => {
        this.snapshotInFlight = false;
        this.finishSnapshot(core, snap, requests, {
          encodeMs: encoded.encodeMs,
          writeMs: this.clock.now() - t1,
          slices: encoded.slices,
          longestSliceMs: encoded.longestSliceMs,
        });
      },
      (err: unknown) => {
        this.snapshotInFlight = false;
        this.fail(err, 'snapshot write failed');
        for (const r of requests)
          r.reject(new StoppedError('snapshot write failed', { cause: err }));
      },
    );
  }

  private finishSnapshot(
    core: RaftCoreApi,
    snap: Snapshot,
    requests: SnapshotRequest[],
    ms: { encodeMs: number; writeMs: number; slices: number; longestSliceMs: number },
  ): void {
    if (this.stopped) {
      for (const r of requests) r.reject(new StoppedError());
      return;
    }
    // A snapshot received from the leader meanwhile is newer: then there is nothing to trim.
    // The core keeps the meta and size only; the data is on disk now, and goes from memory
    // with this closure.
    if (snap.meta.index > this.snapshotIndex) {
      core.compact({ meta: snap.meta, bytes: snap.data.length });
      this.snapshotIndex = snap.meta.index;
    }
    this.snapshotsTaken++;
    this.snapshotMsTotal += ms.encodeMs + ms.writeMs;
    this.lastSnapshot = { ...ms, bytes: snap.data.length };
    this.stateBytes = snap.data.length;
    // Info: one line per snapshot (seconds apart at the most), where each member took its
    // own (snapshotStagger) and what it cost.
    this.log.info(
      { index: snap.meta.index, term: snap.meta.term, bytes: snap.data.length, ...ms },
      'log compacted',
    );
    for (const r of requests) r.resolve();
    // Requests that came meanwhile, or a trigger reached again.
    if (this.wantsSnapshot()) this.kick();
  }

  // -------------------------------------------------------------------------------------
  // Helpers

  private refreshPeers(force: boolean): void {
    const core = this.core;
    if (!core) return;
    const conf = core.status().conf;
    const sig = confSignature(conf);
    if (!force && sig === this.peersSignature) return;
    this.peersSignature = sig;
    this.confNow = cloneConf(conf);
    const peers = new Map<NodeId, string>();
    for (const id of [...conf.voters, ...conf.learners]) {
      if (id !== this.id) peers.set(id, conf.context[id] ?? '');
    }
    this.transport.setPeers(peers);
    if (!force) this.emitState();
  }

  private emitState(): void {
    const s: RaftStateChange = {
      id: this.id,
      role: this.role,
      term: this.term,
      leader: this.leader,
      conf: cloneConf(this.confNow),
    };
    for (const l of this.stateListeners) {
      try {
        l(s);
      } catch (err) {
        this.log.warn({ err }, 'state listener threw');
      }
    }
  }

  private liveCore(): RaftCoreApi {
    if (this.stopped) throw new StoppedError();
    if (!this.core) throw new StoppedError('the raft driver is not started');
    return this.core;
  }

  private checkCoreError(err: unknown): Error {
    if (err instanceof AssertionFailure) {
      this.fail(err);
      return new StoppedError('raft core assertion failed', { cause: err });
    }
    return err instanceof Error ? err : new Error(String(err));
  }

  /** Stops everything without touching the ports. */
  private halt(reason: Error): void {
    this.stopped = true;
    this.cancelTick?.();
    this.cancelTick = null;
    for (const p of this.proposals.values()) p.reject(reason);
    this.proposals.clear();
    for (const r of this.reads.values()) r.reject(reason);
    this.reads.clear();
    for (const r of this.snapshotRequests) r.reject(reason);
    this.snapshotRequests = [];
    if (this.capture !== null) {
      this.capture.cancel?.();
      for (const r of this.capture.requests) r.reject(reason);
      this.capture = null;
      this.deferred = [];
    }
  }

  /** Fail-stop: a failed disk write or a broken invariant. */
  private fail(err: unknown, what = 'fatal error'): void {
    if (this.stopped) return;
    this.log.error({ err }, `raft driver stopping: ${what}`);
    this.halt(new StoppedError(`raft node stopped: ${what}`, { cause: err }));
    for (const l of this.fatalListeners) {
      try {
        l(err);
      } catch (e) {
        this.log.warn({ err: e }, 'fatal listener threw');
      }
    }
  }
}
