/**
 * Fakes for coordinator unit tests: a clock the test moves, an RM gateway the test scripts,
 * sequential ids, and a world that wires them to a Coordinator over a MemoryStore.
 */
import type { BranchId, Xid } from '../../src/shared/ids.ts';
import { Coordinator } from '../../src/coordinator/coordinator.ts';
import { ApplicationRmUnavailableError } from '../../src/coordinator/errors.ts';
import { MemoryStore } from '../../src/store/memory/index.ts';
import type { PhaseTwoOptions } from '../../src/coordinator/phase-two-driver.ts';
import type { BranchGateway, Clock, IdSource } from '../../src/coordinator/ports.ts';
import type { CoordinatorStateMachine } from '../../src/coordinator/state-machine.ts';
import { BranchStatus, type BranchSession } from '../../src/coordinator/types.ts';
import { silentLogger, type Logger } from '../../src/shared/logger.ts';

/** Lets every promise chain that waits on nothing but other promises run to its end. */
export async function flush(rounds = 3): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

interface Timer {
  id: number;
  at: number;
  fn: () => void;
  every: number | null;
}

export class FakeClock implements Clock {
  private time: number;
  /** The monotonic clock: moves with every advance and set, never with step. */
  private mono = 0;
  private nextId = 1;
  private timers: Timer[] = [];

  constructor(start = 1_700_000_000_000) {
    this.time = start;
  }

  now(): number {
    return this.time;
  }

  monotonicNow(): number {
    return this.mono;
  }

  after(ms: number, fn: () => void): () => void {
    return this.add(ms, fn, null);
  }

  every(ms: number, fn: () => void): () => void {
    return this.add(ms, fn, ms);
  }

  get pendingTimers(): number {
    return this.timers.length;
  }

  /** Moves time forward, firing due timers in time order and letting their work settle. */
  async advance(ms: number): Promise<void> {
    const target = this.time + ms;
    await flush();
    for (;;) {
      const next = this.timers
        .filter((t) => t.at <= target)
        .sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!next) break;
      this.moveTo(Math.max(this.time, next.at));
      if (next.every === null) this.timers = this.timers.filter((t) => t !== next);
      else next.at += next.every;
      next.fn();
      await flush();
    }
    this.moveTo(target);
    await flush();
  }

  /**
   * Fires the one earliest timer due now (time does not move) and lets its work settle: one
   * turn of a loop that yields with after(0). False when none is due.
   */
  async runOneDue(): Promise<boolean> {
    await flush();
    const next = this.timers
      .filter((t) => t.at <= this.time)
      .sort((a, b) => a.at - b.at || a.id - b.id)[0];
    if (!next) return false;
    if (next.every === null) this.timers = this.timers.filter((t) => t !== next);
    else next.at += next.every;
    next.fn();
    await flush();
    return true;
  }

  /** Moves time without firing anything (a long GC pause: the monotonic clock moves too). */
  set(time: number): void {
    this.moveTo(time);
  }

  /** Steps the wall clock only (an NTP step, a wrong clock): the monotonic clock stays. */
  step(ms: number): void {
    this.time += ms;
  }

  private moveTo(time: number): void {
    this.mono += time - this.time;
    this.time = time;
  }

  private add(ms: number, fn: () => void, every: number | null): () => void {
    const timer: Timer = { id: this.nextId++, at: this.time + Math.max(0, ms), fn, every };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((t) => t !== timer);
    };
  }
}

export class SequentialIds implements IdSource {
  constructor(private next = 1000) {}
  nextTransactionId(): string {
    return String(this.next++);
  }
  nextBranchId(): string {
    return String(this.next++);
  }
}

/** 'no-rm': no RM of the branch's application serving its resource is connected. */
export type GatewayAnswer = BranchStatus | 'throw' | 'hang' | 'no-rm';

export interface GatewayCall {
  kind: 'commit' | 'rollback';
  xid: string;
  branchId: string;
  resourceId: string;
}

/**
 * An RM gateway whose answers the test scripts per branch (a queue; once it is empty the
 * branch succeeds). In manual mode every call waits until the test settles it.
 */
export class FakeGateway implements BranchGateway {
  readonly calls: GatewayCall[] = [];
  private readonly scripts = new Map<string, GatewayAnswer[]>();
  private readonly pending: {
    call: GatewayCall;
    resolve: (s: BranchStatus) => void;
    reject: (e: Error) => void;
  }[] = [];
  manual = false;

  /** The next answers for one branch, in order. */
  script(branchId: string, ...answers: GatewayAnswer[]): void {
    this.scripts.set(branchId, [...(this.scripts.get(branchId) ?? []), ...answers]);
  }

  /** Drops the answers still scripted for a branch: from now on it succeeds (the RM healed). */
  clearScript(branchId: string): void {
    this.scripts.delete(branchId);
  }

  commitBranch(branch: BranchSession): Promise<BranchStatus> {
    return this.call('commit', branch);
  }

  rollbackBranch(branch: BranchSession): Promise<BranchStatus> {
    return this.call('rollback', branch);
  }

  get pendingCount(): number {
    return this.pending.length;
  }

  /**
   * Settles a pending call (manual mode). 'success', 'retryable' and 'unretryable' answer
   * the status of that kind for the call's direction; 'throw' rejects (RM unreachable).
   */
  settle(
    index: number,
    answer: BranchStatus | 'success' | 'retryable' | 'unretryable' | 'throw',
  ): GatewayCall | null {
    const entry = this.pending.splice(index, 1)[0];
    if (!entry) return null;
    const commit = entry.call.kind === 'commit';
    if (answer === 'throw') entry.reject(new Error('RM unreachable'));
    else if (answer === 'success') entry.resolve(success(entry.call.kind));
    else if (answer === 'retryable')
      entry.resolve(
        commit
          ? BranchStatus.PhaseTwo_CommitFailed_Retryable
          : BranchStatus.PhaseTwo_RollbackFailed_Retryable,
      );
    else if (answer === 'unretryable')
      entry.resolve(
        commit
          ? BranchStatus.PhaseTwo_CommitFailed_Unretryable
          : BranchStatus.PhaseTwo_RollbackFailed_Unretryable,
      );
    else entry.resolve(answer);
    return entry.call;
  }

  callsFor(xid: string): GatewayCall[] {
    return this.calls.filter((c) => c.xid === xid);
  }

  private call(kind: 'commit' | 'rollback', branch: BranchSession): Promise<BranchStatus> {
    const call: GatewayCall = {
      kind,
      xid: branch.xid,
      branchId: branch.branchId,
      resourceId: branch.resourceId,
    };
    this.calls.push(call);
    if (this.manual) {
      return new Promise((resolve, reject) => this.pending.push({ call, resolve, reject }));
    }
    const answer = this.scripts.get(branch.branchId)?.shift() ?? success(kind);
    if (answer === 'throw') return Promise.reject(new Error('RM unreachable'));
    if (answer === 'no-rm')
      return Promise.reject(
        new ApplicationRmUnavailableError(branch.applicationId, branch.resourceId),
      );
    if (answer === 'hang') return new Promise(() => {});
    return Promise.resolve(answer);
  }
}

function success(kind: 'commit' | 'rollback'): BranchStatus {
  return kind === 'commit' ? BranchStatus.PhaseTwo_Committed : BranchStatus.PhaseTwo_Rollbacked;
}

export interface World {
  clock: FakeClock;
  store: MemoryStore;
  gateway: FakeGateway;
  ids: SequentialIds;
  coordinator: Coordinator;
  machine: CoordinatorStateMachine;
}

export const TEST_PHASE_TWO: Partial<PhaseTwoOptions> = {
  stuckAfterMs: 60_000,
  retryBaseMs: 1_000,
  retryMaxBackoffMs: 8_000,
  branchCallTimeoutMs: 5_000,
  sweepIntervalMs: 10_000,
};

export function makeWorld(
  options: {
    phaseTwo?: Partial<PhaseTwoOptions>;
    clock?: FakeClock;
    store?: MemoryStore;
    gateway?: FakeGateway;
    start?: boolean;
    logger?: Logger;
    maxLiveSessions?: number;
    ids?: SequentialIds;
  } = {},
): World {
  const clock = options.clock ?? new FakeClock();
  const store = options.store ?? new MemoryStore();
  const gateway = options.gateway ?? new FakeGateway();
  const ids = options.ids ?? new SequentialIds();
  const coordinator = new Coordinator({
    store,
    gateway,
    ids,
    clock,
    logger: options.logger ?? silentLogger(),
    address: { host: '10.0.0.1', port: 8091 },
    phaseTwo: { ...TEST_PHASE_TWO, ...options.phaseTwo },
    ...(options.maxLiveSessions !== undefined ? { maxLiveSessions: options.maxLiveSessions } : {}),
  });
  if (options.start ?? true) coordinator.start();
  return { clock, store, gateway, ids, coordinator, machine: store.machine };
}

/** Begins a transaction with a default 60 s timeout. */
export async function begin(world: World, timeoutMs = 60_000): Promise<Xid> {
  const { xid } = await world.coordinator.begin({
    applicationId: 'app',
    transactionServiceGroup: 'group',
    name: 'tx',
    timeoutMs,
  });
  return xid;
}

export async function register(
  world: World,
  xid: Xid,
  branchType: 'AT' | 'TCC' | 'SAGA' | 'XA',
  lockKey = '',
  resourceId = 'jdbc:db',
): Promise<BranchId> {
  const { branchId } = await world.coordinator.registerBranch({
    xid,
    branchType,
    resourceId,
    lockKey,
    clientId: 'rm-1',
    applicationId: 'app',
  });
  return branchId;
}
