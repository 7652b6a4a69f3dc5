/**
 * A SessionStore in memory, for unit tests and single-node development: submit applies
 * the command to a CoordinatorStateMachine at once ("durable" = applied). Several
 * MemoryStores may share one machine to play several nodes over one log; each has its own
 * leadership flag and term, set by the test, so a deposed leader that has not heard the news
 * yet can be played (its late commands reach the shared machine and meet the fence).
 */
import {
  CoordinatorStateMachine,
  decodeCommand,
  encodeCommand,
  type Command,
  type CoordinatorStateView,
  type LeadershipEvent,
  type Outcome,
  type ResultOf,
  type SessionStore,
} from '../../coordinator/index.ts';
import { NotLeaderError } from '../../shared/errors.ts';

export interface MemoryStoreOptions {
  /** Share one machine between stores to play several nodes on one log. Default: a new one. */
  machine?: CoordinatorStateMachine;
  /** Default true. */
  leader?: boolean;
  /** Default 1. */
  term?: number;
  /**
   * Encode and decode every command as a real log would, so nothing unserializable slips through.
   * Default true.
   */
  roundTrip?: boolean;
}

export type ApplyListener = (command: Command, outcome: Outcome<unknown>) => void;

export class MemoryStore implements SessionStore {
  readonly machine: CoordinatorStateMachine;
  private leader: boolean;
  private currentTerm: number;
  private readonly roundTrip: boolean;
  private readonly leadershipListeners = new Set<(event: LeadershipEvent) => void>();
  private readonly applyListeners = new Set<ApplyListener>();

  constructor(options: MemoryStoreOptions = {}) {
    this.machine = options.machine ?? new CoordinatorStateMachine();
    this.leader = options.leader ?? true;
    this.currentTerm = options.term ?? 1;
    this.roundTrip = options.roundTrip ?? true;
  }

  /** Each submit applies at once, so a turn's submits apply in the order made. */
  readonly submitsInOrder = true;

  submit<C extends Command>(command: C): Promise<Outcome<ResultOf<C>>> {
    if (!this.leader) return Promise.reject(new NotLeaderError(null));
    const applied = (this.roundTrip ? decodeCommand(encodeCommand(command)) : command) as C;
    const outcome = this.machine.apply(applied);
    for (const listener of this.applyListeners) listener(applied, outcome);
    return Promise.resolve(outcome);
  }

  read<T>(fn: (state: CoordinatorStateView) => T): Promise<T> {
    if (!this.leader) return Promise.reject(new NotLeaderError(null));
    try {
      return Promise.resolve(fn(this.machine));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  readLocal<T>(fn: (state: CoordinatorStateView) => T): T {
    if (!this.leader) throw new NotLeaderError(null);
    return fn(this.machine);
  }

  isLeader(): boolean {
    return this.leader;
  }

  term(): number {
    return this.currentTerm;
  }

  onLeadershipChange(listener: (event: LeadershipEvent) => void): () => void {
    this.leadershipListeners.add(listener);
    return () => this.leadershipListeners.delete(listener);
  }

  /** Test hook: sees every applied command and its outcome. */
  onApply(listener: ApplyListener): () => void {
    this.applyListeners.add(listener);
    return () => this.applyListeners.delete(listener);
  }

  /** Changes this node's leadership and tells the listeners. Terms never go back. */
  setLeadership(isLeader: boolean, term: number = this.currentTerm): void {
    if (term < this.currentTerm)
      throw new RangeError(`term ${term} is below the current term ${this.currentTerm}`);
    this.leader = isLeader;
    this.currentTerm = term;
    for (const listener of [...this.leadershipListeners]) listener({ isLeader, term });
  }
}
