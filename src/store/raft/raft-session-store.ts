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
  CapacityError,
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
} from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { SubmitBatcher } from './command-batch.ts';

/** How long a submitted command may take to be committed and applied before the caller hears TimeoutError (outcome unknown), ms. */
export const DEFAULT_SUBMIT_TIMEOUT_MS = 10_000;
/** How long a linearizable read may take (barrier + waiting for the term's first entry), ms. */
export const DEFAULT_READ_TIMEOUT_MS = 10_000;
/** Pause between attempts of the leadership barrier while the term's no-op is not yet committed, ms. */
export const DEFAULT_BARRIER_RETRY_MS = 20;
/** Callers waiting for one ReadIndex barrier; beyond it they queue for the next one (keeps one batch bounded). */
export const MAX_READS_PER_BARRIER = 4_096;
/** Callers that may wait for a barrier at once; beyond it a read is refused (CapacityError). */
export const MAX_QUEUED_READS = 65_536;

/** What the store needs of a Raft node (RaftNode satisfies it structurally). */
export interface RaftPort {
  /** Resolves with the state machine's apply result once the entry is applied on this node. */
  propose(data: Uint8Array): Promise<unknown>;
  /** ReadIndex barrier: resolves once this node, confirmed leader, applied everything committed when called. */
  read(): Promise<void>;
  status(): { id: NodeId; role: Role; term: number; leader: NodeId | null };
  onStateChange(
    listener: (change: { role: Role; term: number; leader: NodeId | null }) => void,
  ): () => void;
}

export interface RaftSessionStoreOptions {
  raft: RaftPort;
  /** The coordinator state the Raft's state machine applies commands to. */
  state: CoordinatorStateView;
  logger: Logger;
  submitTimeoutMs?: number;
  readTimeoutMs?: number;
  barrierRetryMs?: number;
}

interface ReadyWaiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

export class RaftSessionStore implements SessionStore {
  private readonly raft: RaftPort;
  private readonly state: CoordinatorStateView;
  private readonly log: Logger;
  readonly submitTimeoutMs: number;
  readonly readTimeoutMs: number;
  private readonly barrierRetryMs: number;

  private role: Role;
  private currentTerm: number;
  private leaderId: NodeId | null;
  /** The term whose first entry this node, as its leader, has applied; -1 for none. */
  private readyTerm = -1;
  /** Whether listeners were last told isLeader: true. */
  private announced = false;
  private barrierTerm = -1;
  private readyWaiters: ReadyWaiter[] = [];
  private readonly listeners = new Set<(event: LeadershipEvent) => void>();
  private readonly reads: ReadBatcher;
  private readonly submits: SubmitBatcher;
  private unsubscribe: (() => void) | null;
  private closed = false;

  constructor(options: RaftSessionStoreOptions) {
    this.raft = options.raft;
    this.state = options.state;
    this.log = options.logger.child({ component: 'raft-store' });
    this.submitTimeoutMs = options.submitTimeoutMs ?? DEFAULT_SUBMIT_TIMEOUT_MS;
    this.readTimeoutMs = options.readTimeoutMs ?? DEFAULT_READ_TIMEOUT_MS;
    this.barrierRetryMs = options.barrierRetryMs ?? DEFAULT_BARRIER_RETRY_MS;
    const st = this.raft.status();
    this.role = st.role;
    this.currentTerm = st.term;
    this.leaderId = st.leader;
    this.reads = new ReadBatcher(() => this.raft.read());
    this.submits = new SubmitBatcher((data) => this.raft.propose(data));
    this.unsubscribe = this.raft.onStateChange((change) =>
      this.onRaftState(change.role, change.term, change.leader),
    );
    this.onRaftState(st.role, st.term, st.leader);
  }

  /** Stops following the Raft; pending waits fail with StoppedError. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe?.();
    this.unsubscribe = null;
    this.failReadyWaiters(new StoppedError());
    if (this.announced) {
      this.announced = false;
      this.emit({ isLeader: false, term: this.currentTerm });
    }
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

  /** Joins the other submits of this event-loop turn in one entry (see SubmitBatcher). */
  async submit<C extends Command>(command: C): Promise<Outcome<ResultOf<C>>> {
    this.requireLeaderRole();
    const data = encodeCommand(command);
    const deadline = Date.now() + this.submitTimeoutMs;
    await this.waitReady(deadline);
    let result: unknown;
    try {
      result = await withDeadline(
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
    if (!isOutcome(result))
      throw new AssertionFailure(
        `the raft state machine answered ${command.kind} with something that is no coordinator outcome`,
      );
    return result as Outcome<ResultOf<C>>;
  }

  async read<T>(fn: (state: CoordinatorStateView) => T): Promise<T> {
    this.requireLeaderRole();
    const deadline = Date.now() + this.readTimeoutMs;
    await this.waitReady(deadline);
    const waiter = this.reads.barrier();
    try {
      await withDeadline(
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
    return fn(this.state);
  }

  /** The applied state of this leader, no barrier: for its own phase-two work only. */
  readLocal<T>(fn: (state: CoordinatorStateView) => T): T {
    this.requireLeaderRole();
    if (!this.isLeader()) throw this.notLeaderError();
    return fn(this.state);
  }

  isLeader(): boolean {
    return !this.closed && this.role === 'leader' && this.readyTerm === this.currentTerm;
  }

  term(): number {
    return this.currentTerm;
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
    return !this.closed && this.role === 'leader';
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
    return this.leaderId;
  }

  /** A NotLeaderError naming the leader this node knows (the edge that answers adds where it is reached). */
  notLeaderError(): NotLeaderError {
    return new NotLeaderError(this.otherLeader(this.leaderId));
  }

  /** `id`, unless it names this node (a leader that stepped down still names itself for a moment). */
  private otherLeader(id: NodeId | null): NodeId | null {
    return id !== null && id !== this.raft.status().id ? id : null;
  }

  // -------------------------------------------------------------------------------------
  // Leadership

  private onRaftState(role: Role, term: number, leader: NodeId | null): void {
    if (this.closed) return;
    this.role = role;
    this.currentTerm = term;
    this.leaderId = leader;
    if (role === 'leader') {
      if (this.announced && this.readyTerm !== term) {
        // Leader again in a later term without a seen step-down (coalesced events): the
        // old term's work must stop before the new term's starts.
        this.announced = false;
        this.emit({ isLeader: false, term });
      }
      if (this.barrierTerm !== term && this.readyTerm !== term) void this.runBarrier(term);
      return;
    }
    this.readyTerm = -1;
    this.barrierTerm = -1;
    this.failReadyWaiters(this.notLeaderError());
    if (this.announced) {
      this.announced = false;
      this.log.info({ term, leader }, 'leadership lost');
      this.emit({ isLeader: false, term });
    }
  }

  /** Waits until this leader applied its first entry of `term`, then announces leadership. */
  private async runBarrier(term: number): Promise<void> {
    this.barrierTerm = term;
    const stillLeading = () => !this.closed && this.role === 'leader' && this.currentTerm === term;
    while (stillLeading()) {
      try {
        await this.raft.read();
      } catch (err) {
        if (!stillLeading()) return;
        // ProposalDroppedError: the no-op of the term is not committed yet. Try again.
        if (!(
          err instanceof ProposalDroppedError ||
          err instanceof TimeoutError ||
          (err instanceof ConcordError && err.retryable)
        )) {
          this.log.warn({ err, term }, 'leadership barrier failed');
        }
        await sleep(this.barrierRetryMs);
        continue;
      }
      if (!stillLeading()) return;
      this.readyTerm = term;
      this.barrierTerm = -1;
      const waiters = this.readyWaiters;
      this.readyWaiters = [];
      for (const w of waiters) w.resolve();
      this.announced = true;
      this.log.info({ term }, 'leader of the term applied its first entry; serving');
      this.emit({ isLeader: true, term });
      return;
    }
  }

  private waitReady(deadline: number): Promise<void> {
    if (this.isLeader()) return Promise.resolve();
    const ready = new Promise<void>((resolve, reject) =>
      this.readyWaiters.push({ resolve, reject }),
    );
    return withDeadline(
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

  private failReadyWaiters(err: Error): void {
    const waiters = this.readyWaiters;
    this.readyWaiters = [];
    for (const w of waiters) w.reject(err);
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
    if (this.closed) throw new StoppedError('the session store is closed');
    if (this.role !== 'leader') throw this.notLeaderError();
  }

  /** The Raft's NotLeaderError may name no leader, or this node: name the one this node knows. */
  private translate(err: unknown): unknown {
    if (err instanceof NotLeaderError)
      return new NotLeaderError(this.otherLeader(err.leaderId ?? this.leaderId), { cause: err });
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
   * queue refuses at once (CapacityError), so memory stays bounded under overload.
   */
  barrier(): { done: Promise<void>; cancel: () => void } {
    if (this.waiting.length >= MAX_QUEUED_READS) {
      const full = new CapacityError(
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
  promise: Promise<T>,
  deadline: number,
  onTimeout: () => Error,
): Promise<T> {
  const ms = deadline - Date.now();
  if (ms <= 0) return Promise.reject(onTimeout());
  return new Promise<T>((resolve, reject) => {
    // One wheel for every submit's deadline, not a timer each (issue 12 item 5).
    const cancel = deadlines.at(deadline, () => reject(onTimeout()));
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

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref?.());
}
