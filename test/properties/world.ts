/**
 * The coordinator world of the property suite: three coordinators over one store (three
 * MemoryStores sharing one machine, or three db stores sharing one database), random TM/RM
 * calls, RM answers (success, retryable, unretryable, unreachable, the wrong way), clock
 * steps and leader changes (deposed leaders that have not heard yet keep working); then a
 * recovery phase with one leader and healthy RMs, in which every transaction must end, as
 * decided, with no lock left. What differs per store is a WorldBackend (backends.ts).
 */
import fc from 'fast-check';
import { expect } from 'vitest';
import { Coordinator } from '../../src/coordinator/coordinator.ts';
import type { BranchGateway, SessionStore } from '../../src/coordinator/ports.ts';
import type { CoordinatorStateMachine } from '../../src/coordinator/state-machine.ts';
import {
  BranchStatus,
  decisionOf,
  isFailedEnd,
  isPhaseTwoInFlight,
  type BranchSession,
  type GlobalSession,
} from '../../src/coordinator/types.ts';
import { ConcordError } from '../../src/shared/errors.ts';
import { requireXid, type Xid } from '../../src/shared/ids.ts';
import { silentLogger } from '../../src/shared/logger.ts';
import { FakeClock, FakeGateway, SequentialIds } from '../coordinator/fakes.ts';
import type { InvariantChecker } from '../coordinator/invariants.ts';
import { BRANCH_TYPES, LOCK_KEYS, T0 } from './commands.ts';

export const NODES = 3;

export type Action =
  | { t: 'begin'; node: number; timeout: number }
  | { t: 'register'; node: number; x: number; lock: number; type: number }
  | { t: 'report'; node: number; x: number; b: number; failed: boolean }
  | { t: 'commit' | 'rollback' | 'status'; node: number; x: number }
  | {
      t: 'answer';
      call: number;
      answer: 'success' | 'retryable' | 'unretryable' | 'throw' | 'wrong-way';
    }
  | { t: 'tick'; ms: number }
  | { t: 'elect'; node: number; tellOld: boolean }
  | { t: 'tell' }
  | { t: 'stop' | 'resume' | 'resolve' | 'retryNow'; node: number; x: number };

/** How often a call goes to a node other than the current leader, and leaders change. */
export interface ActionWeights {
  /** Weight of "any node by number" against 4 for "the current leader". */
  strayNode: number;
  elect: number;
}

/**
 * -1 is "the current leader" (most calls find it, as clients follow the metadata); else a node by
 * number.
 */
export function actionArb({ strayNode, elect }: ActionWeights): fc.Arbitrary<Action> {
  const node = fc.oneof(
    { arbitrary: fc.constant(-1), weight: 4 },
    { arbitrary: fc.nat(NODES - 1), weight: strayNode },
  );
  const x = fc.nat(50);
  const answers = ['success', 'success', 'success', 'retryable', 'unretryable', 'throw'] as const;
  const weighted = (weight: number, arbitrary: fc.Arbitrary<Action>) => ({ arbitrary, weight });
  return fc.oneof(
    weighted(3, fc.record({ t: fc.constant('begin'), node, timeout: timeouts })),
    weighted(4, fc.record({ t: fc.constant('register'), node, x, lock: x, type: x })),
    weighted(1, fc.record({ t: fc.constant('report'), node, x, b: x, failed: fc.boolean() })),
    weighted(4, fc.record({ t: fc.constantFrom('commit', 'rollback'), node, x })),
    weighted(1, fc.record({ t: fc.constant('status'), node, x })),
    weighted(
      6,
      fc.record({
        t: fc.constant('answer'),
        call: x,
        answer: fc.constantFrom(...answers, 'wrong-way'),
      }),
    ),
    weighted(3, fc.record({ t: fc.constant('tick'), ms: fc.integer({ min: 1, max: 6_000 }) })),
    weighted(elect, fc.record({ t: fc.constant('elect'), node, tellOld: fc.boolean() })),
    weighted(1, fc.record({ t: fc.constant('tell') })),
    weighted(
      1,
      fc.record({ t: fc.constantFrom('stop', 'resume', 'resolve', 'retryNow'), node, x }),
    ),
  );
}
const timeouts = fc.constantFrom(3_000, 30_000, 120_000);

/** The actions that call one coordinator (a TM's or an operator's call). */
type CallAction = Exclude<Action, { t: 'answer' | 'tick' | 'elect' | 'tell' }>;

function isCall(action: Action): action is CallAction {
  return 'node' in action && action.t !== 'elect';
}

/** A failed transaction, or one whose retries an operator stopped: only the operator may act. */
function waitsForOperator(s: GlobalSession): boolean {
  return isFailedEnd(s.status) || (isPhaseTwoInFlight(s.status) && s.retry.stopped);
}

/** What the world needs of the stores under test. */
export interface WorldBackend {
  /** One store per coordinator. */
  readonly stores: readonly SessionStore[];
  /** The state the checks look at: the shared machine, or the database's state re-read. */
  readonly view: CoordinatorStateMachine;
  readonly checker: InvariantChecker;
  /** Command kinds applied and rejection codes met, for the generator guard. */
  readonly seen: Set<string>;
  /** Error codes a TM call may meet in this world. */
  readonly expectedErrors: ReadonlySet<string>;
  /** The coordinators' sweep, and the clock step of the recovery phase, ms. */
  readonly stepMs: number;
  /** Clock steps the recovery phase may take. */
  readonly recoverySteps: number;
  setLeadership(node: number, holding: boolean, term: number): void;
  /** Whether the node still believes it leads (drives phase two). */
  leads(node: number): boolean;
  /**
   * Invariant 1: a branch is called only after its transaction's decision is recorded.
   * Resolves with a description of the call if it came too early.
   */
  calledTooEarly(kind: 'commit' | 'rollback', branch: BranchSession): Promise<string | null>;
  /** After every action: lets the work in flight land and brings `view` up to date. */
  settle(): Promise<void>;
}

export class World {
  readonly clock = new FakeClock(T0);
  readonly gateway = new FakeGateway();
  readonly nodes: Coordinator[] = [];
  readonly xids: Xid[] = [];
  readonly unexpected: string[] = [];
  /** xids whose RM answered an unretryable failure: the only ones allowed to end *Failed. */
  readonly unretryable = new Set<string>();
  /** Branch calls made before their transaction's decision was recorded (invariant 1). */
  readonly undecidedCalls: string[] = [];
  leader = 0;
  private readonly inFlight: Promise<unknown>[] = [];

  /** `term`: above every term the stores have seen (a store's term never goes back). */
  constructor(
    readonly backend: WorldBackend,
    public term: number,
  ) {
    this.gateway.manual = true;
    const gateway: BranchGateway = {
      commitBranch: (b) => this.call('commit', b),
      rollbackBranch: (b) => this.call('rollback', b),
    };
    backend.stores.forEach((store, i) => {
      backend.setLeadership(i, i === 0, term);
      const coordinator = new Coordinator({
        store,
        gateway,
        // Distinct id spaces per node, as snowflake worker ids would give.
        ids: new SequentialIds((i + 1) * 1_000_000),
        clock: this.clock,
        logger: silentLogger(),
        address: { host: `10.0.0.${i + 1}`, port: 8091 },
        // Retries never give up here, so only an unretryable answer may fail a transaction.
        phaseTwo: {
          stuckAfterMs: 365 * 24 * 3600 * 1000,
          retryBaseMs: 500,
          retryMaxBackoffMs: 4_000,
          branchCallTimeoutMs: 20_000,
          sweepIntervalMs: backend.stepMs,
        },
      });
      coordinator.start();
      this.nodes.push(coordinator);
    });
  }

  get view(): CoordinatorStateMachine {
    return this.backend.view;
  }

  private call(kind: 'commit' | 'rollback', branch: BranchSession) {
    this.track(
      this.backend.calledTooEarly(kind, branch).then((early) => {
        if (early !== null) this.undecidedCalls.push(early);
      }),
    );
    return kind === 'commit'
      ? this.gateway.commitBranch(branch)
      : this.gateway.rollbackBranch(branch);
  }

  private track(p: Promise<unknown>): void {
    this.inFlight.push(
      p.catch((err: unknown) => {
        if (!(err instanceof ConcordError) || !this.backend.expectedErrors.has(err.code))
          this.unexpected.push(String((err as Error)?.stack ?? err));
      }),
    );
  }

  private xid(n: number): Xid {
    const live = this.view.liveXids();
    if (n % 4 !== 0 && live.length > 0) return live[n % live.length]!;
    return this.xids[n % (this.xids.length + 1)] ?? requireXid('10.0.0.9:8091:1');
  }

  async run(action: Action): Promise<void> {
    if (isCall(action)) this.callTm(action);
    else await this.runOther(action);
    await this.backend.settle();
  }

  /** A TM's (or an operator's) call to one coordinator. */
  private callTm(action: CallAction): void {
    const c = this.nodes[action.node >= 0 ? action.node : this.leader]!;
    if (action.t === 'begin') {
      const begun = c.begin({
        applicationId: 'app',
        transactionServiceGroup: 'g',
        timeoutMs: action.timeout,
      });
      return this.track(begun.then((r) => this.xids.push(r.xid)));
    }
    const xid = this.xid(action.x);
    switch (action.t) {
      case 'register':
        return this.track(
          c.registerBranch({
            xid,
            branchType: BRANCH_TYPES[action.type % 4]!,
            resourceId: 'db',
            lockKey: LOCK_KEYS[action.lock % 10],
            clientId: 'rm',
            applicationId: 'app',
          }),
        );
      case 'report': {
        const branches = this.view.getSession(xid)?.branches ?? [];
        const branch = branches[action.b % Math.max(1, branches.length)];
        const status = action.failed ? BranchStatus.PhaseOne_Failed : BranchStatus.PhaseOne_Done;
        if (branch) this.track(c.branchReport({ xid, branchId: branch.branchId, status }));
        return;
      }
      case 'commit':
        return this.track(c.commit({ xid }));
      case 'rollback':
        return this.track(c.rollback({ xid }));
      case 'status':
        return this.track(c.getStatus({ xid }));
      case 'stop':
        return this.track(c.stopRetry({ xid }));
      case 'resume':
        return this.track(c.resumeRetry({ xid }));
      case 'resolve':
        return this.track(c.markResolved({ xid, confirmXid: xid, operator: 'ops' }));
      case 'retryNow':
        return this.track(c.retryNow({ xid }));
    }
  }

  /** RM answers, time and leadership. */
  private async runOther(action: Exclude<Action, CallAction>): Promise<void> {
    switch (action.t) {
      case 'answer': {
        if (this.gateway.pendingCount === 0) return;
        const index = action.call % this.gateway.pendingCount;
        // 'wrong-way' answers a commit's status to a rollback (or the reverse): it must count as
        // retryable.
        const answer =
          action.answer === 'wrong-way'
            ? BranchStatus.PhaseTwo_CommitFailed_Retryable
            : action.answer;
        const call = this.gateway.settle(index, answer);
        if (call && action.answer === 'unretryable') this.unretryable.add(call.xid);
        return;
      }
      case 'tick':
        return this.clock.advance(action.ms);
      case 'elect': {
        this.term += 1;
        const old = this.leader;
        this.leader = action.node >= 0 ? action.node : (old + 1) % NODES;
        this.backend.setLeadership(this.leader, true, this.term);
        if (action.tellOld && old !== this.leader)
          this.backend.setLeadership(old, false, this.term);
        return;
      }
      case 'tell':
        return this.tellAll();
    }
  }

  tellAll(): void {
    for (let i = 0; i < NODES; i++)
      if (i !== this.leader && this.backend.leads(i))
        this.backend.setLeadership(i, false, this.term);
  }

  /** Every live transaction is failed or has its retries stopped: only the operator may act. */
  waitsForOperator(): boolean {
    return this.view.liveXids().every((x) => waitsForOperator(this.view.getSession(x)!));
  }

  /** One leader that everyone knows of, healthy RMs, and time: everything must end. */
  async recover(): Promise<void> {
    this.term += 1;
    this.backend.setLeadership(this.leader, true, this.term);
    this.tellAll();
    this.gateway.manual = false;
    while (this.gateway.pendingCount > 0) this.gateway.settle(0, 'success');
    await this.backend.settle();
    for (let i = 0; i < this.backend.recoverySteps && !this.waitsForOperator(); i++) {
      await this.clock.advance(this.backend.stepMs);
      await this.backend.settle();
    }
    await Promise.all(this.inFlight);
  }

  /** Stops the coordinators and lets what they had in flight end. */
  async stop(): Promise<void> {
    for (const n of this.nodes) n.stop();
    this.gateway.manual = false;
    while (this.gateway.pendingCount > 0) this.gateway.settle(0, 'success');
    await Promise.all(this.inFlight);
  }
}

/**
 * After recover(): no invariant was broken, nothing is left in Begin or in a running phase
 * two (only operator cases remain, and a failed one only after an unretryable answer); the
 * operator clears those (resumes the stopped ones and half of the failed ones, which must then
 * finish as decided, and resolves the other half), then no transaction and no lock is left,
 * and every transaction ended as its decision said. Adds the final statuses met to `seen`.
 */
export async function expectEveryTransactionEnds(world: World, seen: Set<string>): Promise<void> {
  const { view, backend } = world;
  const { checker } = backend;
  expect(world.unexpected).toEqual([]);
  expect(world.undecidedCalls).toEqual([]);
  expect(checker.violations).toEqual([]);
  for (const xid of view.liveXids()) {
    const session = view.getSession(xid)!;
    expect(waitsForOperator(session), `${xid} is stuck ${session.status}`).toBe(true);
    if (isFailedEnd(session.status))
      expect(world.unretryable.has(xid), `${xid} failed without an unretryable answer`).toBe(true);
  }
  // The operator clears what waits for them: resumes what was stopped and every other failed
  // one (its RM "fixed": the RMs answer success now), and resolves the rest by hand.
  const leader = world.nodes[world.leader]!;
  const failed = view.liveXids().filter((x) => isFailedEnd(view.getSession(x)!.status));
  const toResolve = new Set(failed.filter((_, i) => i % 2 === 1));
  for (const xid of view.liveXids()) {
    const session = view.getSession(xid)!;
    if (toResolve.has(xid)) continue;
    if (session.retry.stopped || isFailedEnd(session.status)) await leader.resumeRetry({ xid });
  }
  const unresolved = () => view.liveXids().some((x) => !toResolve.has(x));
  for (let i = 0; i < backend.recoverySteps && unresolved(); i++) {
    await world.clock.advance(backend.stepMs);
    await backend.settle();
  }
  for (const xid of view.liveXids()) {
    const status = view.getSession(xid)!.status;
    expect(toResolve.has(xid), `${xid} is stuck ${status} after resume`).toBe(true);
    expect(isFailedEnd(status), `${xid} to resolve is ${status}`).toBe(true);
    await leader.markResolved({ xid, confirmXid: xid, operator: 'ops' });
  }
  await backend.settle();
  expect(view.liveSessionCount()).toBe(0);
  expect(view.lockedRowCount()).toBe(0);
  expect(checker.violations).toEqual([]);
  // Every transaction that ended ended as its decision said (checked per branch by the checker).
  for (const [xid, finished] of checker.finished) {
    seen.add(finished.status);
    expect(decisionOf(finished.status)).toBe(checker.decisionOf(xid));
  }
}
