/**
 * The ports the coordinator needs from the world. Session stores (src/store/raft,
 * src/store/db, src/store/memory) implement SessionStore; the server's RM channel
 * implements BranchGateway; the process supplies Clock and IdSource. The coordinator
 * imports none of them, only these interfaces.
 */
import type { Command, Outcome, ResultOf } from './commands.ts';
import type { CoordinatorStateView } from './state-machine.ts';
import type { BranchSession, BranchStatus, GlobalSession } from './types.ts';

export interface LeadershipEvent {
  isLeader: boolean;
  /** The term (Raft) or epoch (db lease) this event belongs to; never decreases. */
  term: number;
}

/**
 * Where sessions live. Every implementation applies commands to a CoordinatorStateMachine
 * (or to something that behaves exactly like one) in one agreed order.
 */
export interface SessionStore {
  /**
   * Makes the command durable (committed on a quorum for raft; committed in the database
   * for db) and applied, then resolves with apply's outcome. Invariant 1 rests on this:
   * the coordinator answers the TM and calls branches only after the decision's submit
   * resolved. A refused command resolves `{ok: false}`; the promise REJECTS only when the
   * store could not get the command decided: NotLeaderError (a follower, with the leader's
   * address), ProposalDroppedError (leadership lost before it committed: the command may
   * or may not apply later), TimeoutError, StoppedError.
   */
  submit<C extends Command>(command: C): Promise<Outcome<ResultOf<C>>>;
  /**
   * A linearizable read (ReadIndex or a lease for raft): `fn` sees every command whose
   * submit resolved before `read` was called. `fn` runs synchronously against the state
   * and must not keep references into it (the view returns copies). It must be free of
   * side effects: a store may run it more than once (the db store runs it again after
   * fetching what it asked for) and keeps the last run's result. Rejects like submit
   * when this node cannot serve it (NotLeaderError, ...).
   */
  read<T>(fn: (state: CoordinatorStateView) => T): Promise<T>;
  /**
   * Optional: `fn` on this node's applied state at once, with no barrier, for the leader's
   * own phase-two work (DESIGN.md: "works phase two from its applied state"). It may miss
   * commands in flight, so what it shows may be stale, never ahead: a command built from
   * it is decided (and refused if stale) in apply. Throws NotLeaderError when this node
   * does not serve as leader. Absent (db mode): the driver uses `read`.
   */
  readLocal?<T>(fn: (state: CoordinatorStateView) => T): T;
  /**
   * Optional: `fn` on this node's applied state in any role, no barrier (a follower's, or a
   * new leader's before it applied its first entry of the term, may lag). Only for the
   * command clock's "never backwards" floor, which must not fall back to the wall clock
   * while a new leader confirms its term. Absent: readLocal stands in.
   */
  readApplied?<T>(fn: (state: CoordinatorStateView) => T): T;
  /**
   * Optional: resolves once this node may stamp a command's time — a leader that has applied
   * its first entry of the term, so every command time its log will commit before its own is
   * applied (command-clock.ts). At once in any other case (a follower's submit refuses
   * anyway). Absent: at once.
   */
  readyToStamp?(): Promise<void>;
  /** True while this node is the leader (may only serve writes). */
  isLeader(): boolean;
  /**
   * Optional: true while this node should run the phase-two driver (retries, async
   * commit, timeouts). Absent means the same as isLeader(). A db store serves writes on
   * every node (isLeader() is always true there) but runs the driver on one node at a
   * time, the holder of its lease; onLeadershipChange follows that lease.
   */
  drivesPhaseTwo?(): boolean;
  /**
   * Optional: true when nodes that do not drive phase two also commit commands (db mode:
   * any node decides, resumes or resolves a transaction). The driver then re-checks, on
   * every sweep, the transactions it already tracks, since their state may have changed
   * behind its back. Absent: false (only the leader writes).
   */
  readonly concurrentWriters?: boolean;
  /**
   * Optional (db mode): up to `limit` live transactions whose next step is due at `now` —
   * decided on another node, a retry time or a deadline passed — most urgent first, by one
   * cheap indexed query. The driving node polls it between sweeps (duePollIntervalMs), so
   * a transaction another node decided is driven within that interval, not the sweep's.
   */
  dueXids?(now: number, limit: number): Promise<string[]>;
  /**
   * Optional (db mode): every node that decides a transaction runs its first phase-two pass
   * itself, at its own term (PhaseTwoDriver.driveDecision), and the driving node leaves a
   * session in phase two that has no retry scheduled alone until this time: then it takes it
   * over (acquiring it at its higher term, which fences the decider off). Absent: only the
   * driving node runs phase two, at once.
   */
  handOffAt?(session: Pick<GlobalSession, 'statusChangedAt' | 'driverTerm'>): number;
  /**
   * Optional: true when the submits made in one event-loop turn are applied in the order
   * they were made (raft: they share an entry; memory: each applies at once). The driver
   * then sends the last branch's result and the session's end together. Absent: false
   * (db mode runs concurrent submits in separate database transactions).
   */
  readonly submitsInOrder?: boolean;
  /**
   * Optional: true when a FinishGlobal carrying the last branch's result (lastBranch) costs
   * the store no more than the end alone (db mode: one statement on PostgreSQL, one
   * transaction on MySQL), so the driver folds the result in. Stores that submit in order
   * fold too.
   */
  readonly foldsLastBranch?: boolean;
  /** The current term (or epoch); drivers stamp their commands with it as their fence. */
  term(): number;
  /**
   * Called on every leadership change of this node. `isLeader: true` must be emitted only
   * once the state holds every command committed before the term began (for raft: after
   * the new leader's own first entry is applied), because the coordinator re-drives
   * phase two from a scan of that state. Returns an unsubscribe function.
   */
  onLeadershipChange(listener: (event: LeadershipEvent) => void): () => void;
}

/**
 * The RM channel: asks the resource manager that owns a branch to run its phase two — an
 * RM of the branch's application (`branch.applicationId`) only, never another
 * application's, whatever resources it serves. Resolves with the branch's new status:
 * PhaseTwo_Committed / PhaseTwo_Rollbacked on success, *_Retryable or *_Unretryable on
 * failure. A rejection (RM offline, timeout, no channel) is treated as retryable; an
 * ApplicationRmUnavailableError says no RM of the application serving the resource is
 * connected, and the branch is shown as waiting for one. Calls must be idempotent on the
 * RM side: a branch may be told twice (a retry, a new leader re-driving).
 */
export interface BranchGateway {
  commitBranch(branch: BranchSession): Promise<BranchStatus>;
  rollbackBranch(branch: BranchSession): Promise<BranchStatus>;
}

/**
 * Wall-clock time and timers. Wall clock (not monotonic) because times chosen by one leader
 * (beginTime, deadlines, retry times) are read by the next one on another machine.
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Calls fn once after `ms`; returns a cancel function. */
  after(ms: number, fn: () => void): () => void;
  /** Calls fn every `ms` until cancelled. */
  every(ms: number, fn: () => void): () => void;
  /**
   * Optional: a monotonic clock in ms (any origin; never steps). Command time advances no
   * faster than it (command-clock.ts). Absent: differences of now() stand in for it.
   */
  monotonicNow?(): number;
}

/** Unique 64-bit ids as decimal strings, unique across nodes and leader changes. */
export interface IdSource {
  nextTransactionId(): string;
  nextBranchId(): string;
}
