/**
 * The coordinator's SessionStore over Concord's Raft: where the coordinator and the Raft
 * meet (DESIGN.md, "Layers"). Neither knows the other; this adapter
 *
 *  - submits a command by proposing `encodeCommand(command)` (with the other submits of
 *    the same event-loop turn, in one entry: command-batch.ts) and resolves with the
 *    coordinator state machine's apply outcome for it, which the Raft driver hands back only once
 *    the entry is committed on a quorum AND applied on this node (invariant 1: the
 *    coordinator answers a TM or calls a branch only after that);
 *  - serves linearizable reads: a ReadIndex barrier (`raft.read()`), then `fn` on the
 *    applied state. Concurrent reads share barriers (see ReadBatcher);
 *  - follows leadership, and announces `isLeader: true` only once this leader has applied
 *    its own first entry of the term (the no-op the Raft core appends on election). The
 *    coordinator re-drives phase two from a scan of the state at that moment, so the scan
 *    must see every command committed by earlier leaders. The first successful ReadIndex
 *    of a term proves exactly that: the core refuses ReadIndex until it has committed an
 *    entry of its term, and the read completes only when applied ≥ that commit index.
 *
 * The Raft's StateMachine is the coordinator's (coordinator-log.ts, the apply half; the two
 * are assembled in raft-sessions.ts); this store only needs a read view of the state it
 * applies to. It imports no server code: a not-leader answer names the leader's id, and the
 * edge that answers (the TC service) adds where that leader is reached.
 */
import {
  encodeCommand,
  type Command,
  type CoordinatorStateView,
  type LeadershipEvent,
  type Outcome,
  type ResultOf,
  type SessionStore,
} from '../../coordinator/index.ts';
import { deadlines } from '../../shared/deadline-wheel.ts';
import type { NodeId, Role } from '../../raft/core/types.ts';
import {
  AssertionFailure,
  ConcordError,
  NotLeaderError,
  ProposalDroppedError,
  StoppedError,
  TimeoutError,
  UnavailableError,
} from '../../shared/errors.ts';
import { latencyTrace } from '../../shared/latency-trace.ts';
import type { Logger } from '../../shared/logger.ts';
import { SubmitBatcher } from './command-batch.ts';

/**
 * How long a submitted command may take to be committed and applied before the caller hears
 * TimeoutError (outcome unknown), ms.
 */
export const DEFAULT_SUBMIT_TIMEOUT_MS = 10_000;
/** How long a linearizable read may take (barrier + waiting for the term's first entry), ms. */
export const DEFAULT_READ_TIMEOUT_MS = 10_000;
/**
 * Pause between attempts of the leadership barrier while the term's no-op is not yet committed, ms.
 */
export const DEFAULT_BARRIER_RETRY_MS = 20;
/**
 * Callers waiting for one ReadIndex barrier; beyond it they queue for the next one (keeps one batch
 * bounded).
 */
export const MAX_READS_PER_BARRIER = 4_096;
/** Callers that may wait for a barrier at once; beyond it a read is refused (UnavailableError). */
export const MAX_QUEUED_READS = 65_536;

/** What the store needs of a Raft node (RaftNode satisfies it structurally). */
export interface RaftPort {
  /** Resolves with the state machine's apply result once the entry is applied on this node. */
  propose(data: Uint8Array): Promise<unknown>;
  /**
   * ReadIndex barrier: resolves once this node, confirmed leader, applied everything committed when
   * called.
   */
  read(): Promise<void>;
  status(): { id: NodeId; role: Role; term: number; leader: NodeId | null };
  onStateChange(
    listener: (change: { role: Role; term: number; leader: NodeId | null }) => void,
  ): () => void;
}

/** The time the store's deadlines and retry pauses run on (the simulator passes its fake clock). */
export interface StoreTimers {
  now(): number;
  /** Calls fn once after `ms`; returns a cancel function. */
  after(ms: number, fn: () => void): () => void;
}

/**
 * Waits of at least this many ms (a submit's or a read's deadline) go to the process's
 * deadline wheel: one timer for all of them, at most its 10 ms tick late (issue 12 item 5).
 * Shorter waits (a barrier's retry pause) get a timer of their own, on time.
 */
const WHEEL_MIN_MS = 100;

/** Real time: Date.now, the deadline wheel and unref'd timeouts. */
const realTimers: StoreTimers = {
  now: () => Date.now(),
  after(ms, fn) {
    if (ms >= WHEEL_MIN_MS) return deadlines.after(ms, fn);
    const timer = setTimeout(fn, ms);
    timer.unref?.();
    return () => clearTimeout(timer);
  },
};

export interface RaftSessionStoreOptions {
  raft: RaftPort;
  /** The coordinator state the Raft's state machine applies commands to. */
  state: CoordinatorStateView;
  logger: Logger;
  submitTimeoutMs?: number;
  readTimeoutMs?: number;
  barrierRetryMs?: number;
  /** Default: real time. */
  timers?: StoreTimers;
}

interface ReadyWaiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * Where this store stands in the Raft's leadership, one phase at a time (like the Raft
 * core's progress: probe, replicate, snapshot), so that no impossible combination (say,
 * announced while not holding the role, or ready for a term other than the current one) can
 * be written down:
 *
 *  - `following`: this node does not hold the leader role (follower or candidate);
 *    `leader` is the one it knows of.
 *  - `confirming`: this node holds the leader role of `term` and a barrier runs until it
 *    applied its first entry of the term; submits and reads wait in `waiters`. Nothing is
 *    announced.
 *  - `serving`: the barrier of `term` completed and listeners were told `isLeader: true`.
 *  - `closed`: the store stopped following the Raft; every call is refused.
 *
 * `term` is the Raft term last seen; `leader` the leader last named by the Raft.
 */
type SessionState =
  | { phase: 'following'; term: number; leader: NodeId | null }
  | { phase: 'confirming'; term: number; leader: NodeId | null; waiters: ReadyWaiter[] }
  | { phase: 'serving'; term: number; leader: NodeId | null }
  | { phase: 'closed'; term: number; leader: NodeId | null };

export class RaftSessionStore implements SessionStore {
  private readonly raft: RaftPort;
  private readonly applied: CoordinatorStateView;
  private readonly log: Logger;
  readonly submitTimeoutMs: number;
  readonly readTimeoutMs: number;
  private readonly barrierRetryMs: number;
  private readonly timers: StoreTimers;

  private state: SessionState;
  private readonly listeners = new Set<(event: LeadershipEvent) => void>();
  private readonly reads: ReadBatcher;
  private readonly submits: SubmitBatcher;
  private unsubscribe: (() => void) | null;

  constructor(options: RaftSessionStoreOptions) {
    this.raft = options.raft;
    this.applied = options.state;
    this.log = options.logger.child({ component: 'raft-store' });
    this.submitTimeoutMs = options.submitTimeoutMs ?? DEFAULT_SUBMIT_TIMEOUT_MS;
    this.readTimeoutMs = options.readTimeoutMs ?? DEFAULT_READ_TIMEOUT_MS;
    this.barrierRetryMs = options.barrierRetryMs ?? DEFAULT_BARRIER_RETRY_MS;
    this.timers = options.timers ?? realTimers;
    const st = this.raft.status();
    this.state = { phase: 'following', term: st.term, leader: st.leader };
    this.reads = new ReadBatcher(() => this.raft.read());
    this.submits = new SubmitBatcher((data) => this.raft.propose(data));
    this.unsubscribe = this.raft.onStateChange((change) =>
      this.onRaftState(change.role, change.term, change.leader),
    );
    this.onRaftState(st.role, st.term, st.leader);
  }

  /** Stops following the Raft; pending waits fail with StoppedError. */
  close(): void {
    const was = this.state;
    if (was.phase === 'closed') return;
    this.state = { phase: 'closed', term: was.term, leader: was.leader };
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (was.phase === 'confirming') failAll(was.waiters, new StoppedError());
    if (was.phase === 'serving') this.emit({ isLeader: false, term: was.term });
    this.listeners.clear();
  }

  // -------------------------------------------------------------------------------------
  // SessionStore

  /** Reads waiting for a ReadIndex barrier that has not started. */
  queuedReads(): number {
    return this.reads.queued;
  }

  /** Entries proposed and the commands they carried, since start. */
  batchCounts(): { entries: number; commands: number } {
    return { ...this.submits.counts };
  }

  /** A turn's submits share an entry (or follow each other in entries): applied in order. */
  readonly submitsInOrder = true;

  /** Joins the other submits of this event-loop turn in one entry (see SubmitBatcher). */
  async submit<C extends Command>(command: C): Promise<Outcome<ResultOf<C>>> {
    this.requireLeaderRole();
    latencyTrace?.(`st.submit.${command.kind}`, 0);
    const data = encodeCommand(command);
    const deadline = this.timers.now() + this.submitTimeoutMs;
    await this.waitReady(deadline);
    let result: unknown;
    try {
      result = await withDeadline(
        this.timers,
        this.submits.add(data),
        deadline,
        () =>
          new TimeoutError(
            `${command.kind} was not committed within ${this.submitTimeoutMs} ms; its outcome is unknown`,
          ),
      );
    } catch (err) {
      throw this.translate(err);
    }
    latencyTrace?.('st.outcome', 0);
    if (!isOutcome(result))
      throw new AssertionFailure(
        `the raft state machine answered ${command.kind} with something that is no coordinator outcome`,
      );
    return result as Outcome<ResultOf<C>>;
  }

  async read<T>(fn: (state: CoordinatorStateView) => T): Promise<T> {
    this.requireLeaderRole();
    const deadline = this.timers.now() + this.readTimeoutMs;
    await this.waitReady(deadline);
    const waiter = this.reads.barrier();
    try {
      await withDeadline(
        this.timers,
        waiter.done,
        deadline,
        () => new TimeoutError(`read not confirmed within ${this.readTimeoutMs} ms`),
      );
    } catch (err) {
      waiter.cancel(); // a caller that gave up leaves the queue
      throw this.translate(err);
    }
    // A leader change between the barrier and here is harmless: the barrier proved that
    // this state includes everything acknowledged before read() was called.
    return fn(this.applied);
  }

  /**
   * This node's applied state in any role, no barrier (SessionStore.readApplied): for the
   * command clock only.
   */
  readApplied<T>(fn: (state: CoordinatorStateView) => T): T {
    return fn(this.applied);
  }

  /** The applied state of this leader, no barrier: for its own phase-two work only. */
  readLocal<T>(fn: (state: CoordinatorStateView) => T): T {
    this.requireLeaderRole();
    if (!this.isLeader()) throw this.notLeaderError();
    return fn(this.applied);
  }

  isLeader(): boolean {
    return this.state.phase === 'serving';
  }

  term(): number {
    return this.state.term;
  }

  onLeadershipChange(listener: (event: LeadershipEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * This node holds the Raft leader role, whether or not it has applied its first entry
   * of the term yet (submit and read wait for that, briefly). Edges use it to answer
   * NOT_LEADER at once instead of queueing a call that cannot succeed here.
   */
  hasLeaderRole(): boolean {
    return this.state.phase === 'confirming' || this.state.phase === 'serving';
  }

  /**
   * Follows the Raft leader role itself (holding, and its term), not only the announced
   * leadership: RMs may register as soon as this node holds the role (before it applied its
   * first entry of the term), and any step-down must send every RM to the new leader.
   * Returns an unsubscribe function.
   */
  onLeaderRoleChange(listener: (holding: boolean, term: number) => void): () => void {
    const st = this.raft.status();
    let leaderTerm = st.role === 'leader' ? st.term : -1;
    return this.raft.onStateChange((change) => {
      if (change.role !== 'leader') {
        leaderTerm = -1;
        listener(false, change.term);
      } else if (change.term !== leaderTerm) {
        leaderTerm = change.term;
        listener(true, change.term);
      }
    });
  }

  /** The leader this node knows of (for not-leader answers). */
  knownLeader(): NodeId | null {
    return this.state.leader;
  }

  /**
   * A NotLeaderError naming the leader this node knows (the edge that answers adds where it is
   * reached).
   */
  notLeaderError(): NotLeaderError {
    return new NotLeaderError(this.otherLeader(this.state.leader));
  }

  /**
   * `id`, unless it names this node (a leader that stepped down still names itself for a moment).
   */
  private otherLeader(id: string | null): string | null {
    return id !== null && id !== this.raft.status().id ? id : null;
  }

  // -------------------------------------------------------------------------------------
  // Leadership

  private onRaftState(role: Role, term: number, leader: NodeId | null): void {
    const was = this.state;
    if (was.phase === 'closed') return;
    if (role !== 'leader') {
      this.state = { phase: 'following', term, leader };
      if (was.phase === 'confirming') failAll(was.waiters, this.notLeaderError());
      if (was.phase === 'serving') {
        this.log.info({ term, leader }, 'leadership lost');
        this.emit({ isLeader: false, term });
      }
      return;
    }
    if (was.phase !== 'following' && was.term === term) {
      this.state = { ...was, leader }; // the same leadership, told again
      return;
    }
    // A new term of leadership. Callers waiting for an earlier term's barrier (coalesced
    // events) wait for this one's.
    this.state = {
      phase: 'confirming',
      term,
      leader,
      waiters: was.phase === 'confirming' ? was.waiters : [],
    };
    // Leader again in a later term without a seen step-down (coalesced events): the old
    // term's work must stop before the new term's starts.
    if (was.phase === 'serving') this.emit({ isLeader: false, term });
    void this.runBarrier(term);
  }

  /** Whether this store still confirms its leadership of `term` (the barrier's loop condition). */
  private confirming(term: number): boolean {
    return this.state.phase === 'confirming' && this.state.term === term;
  }

  /** Waits until this leader applied its first entry of `term`, then announces leadership. */
  private async runBarrier(term: number): Promise<void> {
    while (this.confirming(term)) {
      try {
        await this.raft.read();
      } catch (err) {
        if (!this.confirming(term)) return;
        // ProposalDroppedError: the no-op of the term is not committed yet. Try again.
        if (!(
          err instanceof ProposalDroppedError ||
          err instanceof TimeoutError ||
          (err instanceof ConcordError && err.retryable)
        )) {
          this.log.warn({ err, term }, 'leadership barrier failed');
        }
        await sleep(this.timers, this.barrierRetryMs);
        continue;
      }
      const was = this.state;
      if (was.phase !== 'confirming' || was.term !== term) return;
      this.state = { phase: 'serving', term, leader: was.leader };
      for (const w of was.waiters) w.resolve();
      this.log.info({ term }, 'leader of the term applied its first entry; serving');
      this.emit({ isLeader: true, term });
      return;
    }
  }

  /**
   * SessionStore.readyToStamp: a new leader stamps no command time before it applied its
   * first entry of the term. Until then its applied command time can be 0 while its log
   * holds its predecessor's commands, and the command clock would fall back to the raw
   * wall clock (an hour ahead, say: the predecessor's transactions would time out at once
   * and their finished records be dropped; coordinator sim seed 506348672).
   */
  readyToStamp(): Promise<void> {
    if (this.state.phase !== 'confirming') return Promise.resolve();
    return this.waitReady(this.timers.now() + this.submitTimeoutMs);
  }

  private waitReady(deadline: number): Promise<void> {
    const state = this.state;
    if (state.phase === 'serving') return Promise.resolve();
    if (state.phase !== 'confirming')
      throw new AssertionFailure(`waitReady in phase ${state.phase}, after requireLeaderRole`);
    const ready = new Promise<void>((resolve, reject) => state.waiters.push({ resolve, reject }));
    return withDeadline(
      this.timers,
      ready,
      deadline,
      () =>
        new TimeoutError(
          'this node was elected but has not yet applied its first entry of the term',
        ),
    ).catch((err: unknown) => {
      throw this.translate(err);
    });
  }

  private emit(event: LeadershipEvent): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch (err) {
        this.log.error({ err, event }, 'leadership listener threw');
      }
    }
  }

  private requireLeaderRole(): void {
    if (this.state.phase === 'closed') throw new StoppedError('the session store is closed');
    if (this.state.phase === 'following') throw this.notLeaderError();
  }

  /** The Raft's NotLeaderError may name no leader, or this node: name the one this node knows. */
  private translate(err: unknown): unknown {
    if (err instanceof NotLeaderError)
      return new NotLeaderError(this.otherLeader(err.leaderId ?? this.state.leader), {
        cause: err,
      });
    return err;
  }
}

/**
 * Shares ReadIndex barriers between concurrent reads. A barrier proves only what was
 * acknowledged before it STARTED, so a caller arriving while one is in flight waits for the
 * next one; everyone waiting then shares it. At most one barrier runs at a time: under load
 * that is one ReadIndex round per round trip instead of one per read.
 */
class ReadBatcher {
  private inFlight = false;
  private startQueued = false;
  private waiting: ReadyWaiter[] = [];

  constructor(private readonly barrierFn: () => Promise<void>) {}

  /**
   * Joins the next barrier. `cancel` takes a caller that gave up out of the queue; a full
   * queue refuses at once (UnavailableError), so memory stays bounded under overload.
   */
  barrier(): { done: Promise<void>; cancel: () => void } {
    if (this.waiting.length >= MAX_QUEUED_READS) {
      // Overload, not a bound on state: nothing was read or changed; the client retries.
      const full = new UnavailableError(
        `${MAX_QUEUED_READS} reads wait for a ReadIndex barrier, the limit; retry later`,
      );
      return { done: Promise.reject(full), cancel: () => {} };
    }
    let waiter!: ReadyWaiter;
    const p = new Promise<void>((resolve, reject) => {
      waiter = { resolve, reject };
      this.waiting.push(waiter);
    });
    const cancel = () => {
      const i = this.waiting.indexOf(waiter);
      if (i >= 0) this.waiting.splice(i, 1);
    };
    if (!this.inFlight && !this.startQueued) {
      // Start after the current microtasks: reads issued together share the first barrier.
      this.startQueued = true;
      queueMicrotask(() => {
        this.startQueued = false;
        if (!this.inFlight) this.start();
      });
    }
    return { done: p, cancel };
  }

  /** Callers waiting for a barrier that has not started (for tests and metrics). */
  get queued(): number {
    return this.waiting.length;
  }

  private start(): void {
    if (this.waiting.length === 0) return;
    const batch = this.waiting.splice(0, MAX_READS_PER_BARRIER);
    this.inFlight = true;
    let done: Promise<void>;
    try {
      done = this.barrierFn();
    } catch (err) {
      done = Promise.reject(err);
    }
    done
      .then(
        () => {
          for (const w of batch) w.resolve();
        },
        (err: Error) => {
          for (const w of batch) w.reject(err);
        },
      )
      .finally(() => {
        this.inFlight = false;
        this.start();
      });
  }
}

function isOutcome(value: unknown): value is Outcome<unknown> {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { ok?: unknown }).ok === 'boolean'
  );
}

function withDeadline<T>(
  timers: StoreTimers,
  promise: Promise<T>,
  deadline: number,
  onTimeout: () => Error,
): Promise<T> {
  const ms = deadline - timers.now();
  if (ms <= 0) return Promise.reject(onTimeout());
  return new Promise<T>((resolve, reject) => {
    const cancel = timers.after(ms, () => reject(onTimeout()));
    promise.then(
      (v) => {
        cancel();
        resolve(v);
      },
      (err: unknown) => {
        cancel();
        reject(err);
      },
    );
  });
}

function failAll(waiters: readonly ReadyWaiter[], err: Error): void {
  for (const w of waiters) w.reject(err);
}

function sleep(timers: StoreTimers, ms: number): Promise<void> {
  return new Promise((resolve) => timers.after(ms, resolve));
}
