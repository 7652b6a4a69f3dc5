/**
 * An operator resumes a stuck, stopped or FAILED transaction from where it stopped (issue 13
 * item 7): a *Failed end (an RM answered unretryable) goes back to its driving status by an
 * operator's RetryResumed only, its unretryable branches become retryable again, and only
 * the unfinished branches are told again. And the retry horizon (the gap between items 7 and
 * 14): phase two is delivered on the driver's own only until `retryHorizonMs` after the
 * transaction began (the figure the RMs' fences keep their rows for); then its retries stop
 * and only an operator's forced resume delivers again.
 */
import { describe, expect, it } from 'vitest';
import type { RetryResumedCommand } from '../../src/coordinator/commands.ts';
import { RetryHorizonPassedError } from '../../src/coordinator/errors.ts';
import { DEFAULT_PHASE_TWO_OPTIONS } from '../../src/coordinator/phase-two-driver.ts';
import {
  DEFAULT_RETRY_HORIZON_MS as FENCE_DEFAULT_RETRY_HORIZON_MS,
  FENCE_HORIZON_MARGIN_MS,
  TC_RETRY_HORIZON_MS as FENCE_TC_RETRY_HORIZON_MS,
} from '../../src/client/fence/limits.ts';
import { DEFAULT_PHASE_TWO_RETRY_HORIZON_MS } from '../../src/shared/protocol-limits.ts';
import { CoordinatorStateMachine } from '../../src/coordinator/state-machine.ts';
import {
  BranchStatus,
  GlobalStatus,
  RESUME_EDGES,
  canReach,
  canTransition,
  decisionOf,
  isEndStatus,
  isFailedEnd,
  isFinalStatus,
  isStuck,
  resumedStatusOf,
} from '../../src/coordinator/types.ts';
import {
  T0,
  applyOk,
  beginCmd,
  changeCmd,
  finishCmd,
  registerCmd,
  resultCmd,
} from './commands-fixtures.ts';
import { FakeClock, FakeGateway, begin, makeWorld, register } from './fakes.ts';
import type { BranchSession } from '../../src/coordinator/types.ts';

/** A gateway that also notes when (on the test's clock) each call was made. */
class TimedGateway extends FakeGateway {
  readonly times: number[] = [];
  constructor(private readonly clock: FakeClock) {
    super();
  }
  override commitBranch(branch: BranchSession): Promise<BranchStatus> {
    this.times.push(this.clock.now());
    return super.commitBranch(branch);
  }
  override rollbackBranch(branch: BranchSession): Promise<BranchStatus> {
    this.times.push(this.clock.now());
    return super.rollbackBranch(branch);
  }
}

function timedWorld(phaseTwo: Parameters<typeof makeWorld>[0] extends infer O ? O : never) {
  const clock = new FakeClock();
  const gateway = new TimedGateway(clock);
  return { ...makeWorld({ ...phaseTwo, clock, gateway }), gateway };
}

const resumeCmd = (xid: string, over: Partial<RetryResumedCommand> = {}): RetryResumedCommand => ({
  kind: 'RetryResumed',
  xid,
  at: T0 + 10,
  retryDeadline: T0 + 10 + 60_000,
  term: 1,
  ...over,
});

describe('the vocabulary: final states vs failed ends', () => {
  it('a failed end is an end (the TM stops waiting) but not final; only the resume edge leaves it', () => {
    for (const status of Object.values(GlobalStatus)) {
      if (isFailedEnd(status)) {
        expect(isEndStatus(status)).toBe(true);
        expect(isFinalStatus(status)).toBe(false);
        const to = resumedStatusOf(status)!;
        // Same decision, a driving status, and no ordinary transition reaches it back.
        expect(decisionOf(to)).toBe(decisionOf(status));
        expect(isEndStatus(to)).toBe(false);
        expect(canTransition(status, to)).toBe(false);
        expect(canReach(status, to)).toBe(false);
      } else {
        expect(resumedStatusOf(status)).toBeNull();
      }
      if (isFinalStatus(status)) expect(isEndStatus(status)).toBe(true);
    }
    expect([...RESUME_EDGES]).toEqual([
      [GlobalStatus.CommitFailed, GlobalStatus.Committing],
      [GlobalStatus.RollbackFailed, GlobalStatus.Rollbacking],
      [GlobalStatus.TimeoutRollbackFailed, GlobalStatus.TimeoutRollbacking],
    ]);
  });
});

describe('RetryResumed of a failed end, in apply', () => {
  /** A CommitFailed session: branch 11 committed, branch 12 answered unretryable. */
  function commitFailed(): CoordinatorStateMachine {
    const m = new CoordinatorStateMachine();
    const xid = beginCmd(1).xid;
    applyOk(m, beginCmd(1));
    applyOk(m, registerCmd(xid, '11', 't:1'));
    applyOk(m, registerCmd(xid, '12', 't:2'));
    applyOk(m, changeCmd(xid, GlobalStatus.Begin, GlobalStatus.Committing));
    applyOk(m, resultCmd(xid, '11', BranchStatus.PhaseTwo_Committed));
    applyOk(m, resultCmd(xid, '12', BranchStatus.PhaseTwo_CommitFailed_Unretryable));
    applyOk(m, changeCmd(xid, GlobalStatus.Committing, GlobalStatus.CommitFailed));
    expect(m.failedSessionCount()).toBe(1);
    return m;
  }

  it('moves CommitFailed back to Committing: the unretryable branch is retryable again, the committed one stays committed', () => {
    const m = commitFailed();
    const xid = beginCmd(1).xid;
    expect(applyOk(m, resumeCmd(xid))).toEqual({ stopped: false, status: GlobalStatus.Committing });
    const s = m.getSession(xid)!;
    expect(s.status).toBe(GlobalStatus.Committing);
    expect(s.statusChangedAt).toBe(T0 + 10);
    expect(s.branches.map((b) => b.status)).toEqual([
      BranchStatus.PhaseTwo_Committed,
      BranchStatus.PhaseTwo_CommitFailed_Retryable,
    ]);
    expect(s.retry).toMatchObject({
      stopped: false,
      nextRetryAt: T0 + 10,
      retryDeadline: T0 + 10 + 60_000,
    });
    // Counted live again (it is driven); its locks as they were (branch 11 freed its row).
    expect(m.failedSessionCount()).toBe(0);
    expect(m.lockedRowCount()).toBe(1);
    m.checkInvariants();
    // Then phase two finishes it the ordinary way.
    applyOk(m, resultCmd(xid, '12', BranchStatus.PhaseTwo_Committed));
    applyOk(m, finishCmd(xid, GlobalStatus.Committed, { at: T0 + 20 }));
    expect(m.getFinished(xid)?.status).toBe(GlobalStatus.Committed);
    expect(m.lockedRowCount()).toBe(0);
  });

  it('RollbackFailed and TimeoutRollbackFailed go back to Rollbacking and TimeoutRollbacking', () => {
    for (const [timeout, failed, driving] of [
      [false, GlobalStatus.RollbackFailed, GlobalStatus.Rollbacking],
      [true, GlobalStatus.TimeoutRollbackFailed, GlobalStatus.TimeoutRollbacking],
    ] as const) {
      const m = new CoordinatorStateMachine();
      const xid = beginCmd(1).xid;
      applyOk(m, beginCmd(1));
      applyOk(m, registerCmd(xid, '11', 't:1'));
      applyOk(
        m,
        changeCmd(xid, GlobalStatus.Begin, driving, { at: timeout ? T0 + 60_000 : T0 + 2 }),
      );
      applyOk(m, resultCmd(xid, '11', BranchStatus.PhaseTwo_RollbackFailed_Unretryable));
      applyOk(m, changeCmd(xid, driving, failed, { at: T0 + 60_001 }));
      applyOk(m, resumeCmd(xid, { at: T0 + 70_000 }));
      const s = m.getSession(xid)!;
      expect(s.status).toBe(driving);
      expect(s.branches[0]!.status).toBe(BranchStatus.PhaseTwo_RollbackFailed_Retryable);
      // Rollback keeps its rows until rolled back.
      expect(s.branches[0]!.lockedRows).toHaveLength(1);
    }
  });

  it('no other command leaves a failed end: the driver, the TM and a stray result are refused', () => {
    const m = commitFailed();
    const xid = beginCmd(1).xid;
    for (const c of [
      changeCmd(xid, GlobalStatus.CommitFailed, GlobalStatus.Committing),
      changeCmd(xid, GlobalStatus.CommitFailed, GlobalStatus.CommitRetrying),
      resultCmd(xid, '12', BranchStatus.PhaseTwo_Committed),
      finishCmd(xid, GlobalStatus.Committed),
      { kind: 'RollbackGlobal', xid, timeout: false, at: T0 + 5, term: 1 } as const,
    ]) {
      const before = m.getSession(xid);
      const outcome = m.apply(c);
      if (outcome.ok) expect(m.getSession(xid)).toEqual(before);
      expect(m.getSession(xid)!.status).toBe(GlobalStatus.CommitFailed);
    }
  });

  it('a final state is never resumed (the session has ended); nor is Begin', () => {
    const m = new CoordinatorStateMachine();
    const xid = beginCmd(1).xid;
    applyOk(m, beginCmd(1));
    const early = m.apply(resumeCmd(xid));
    expect(early.ok || early.rejection.code).toBe('ILLEGAL_STATUS');
    applyOk(m, { kind: 'CommitGlobal', xid, at: T0 + 2, term: 1 });
    expect(m.getFinished(xid)?.status).toBe(GlobalStatus.Committed);
    const late = m.apply(resumeCmd(xid));
    expect(late.ok || late.rejection.code).toBe('ILLEGAL_STATUS');
  });

  it('a forced resume always takes effect (its alarm time is the new horizon); force must be a boolean', () => {
    const m = new CoordinatorStateMachine();
    const xid = beginCmd(1).xid;
    applyOk(m, beginCmd(1));
    applyOk(m, registerCmd(xid, '11', 't:1'));
    applyOk(m, changeCmd(xid, GlobalStatus.Begin, GlobalStatus.Committing));
    // Neither stopped nor stuck: an unforced resume is a harmless repeat, a forced one is not.
    applyOk(m, resumeCmd(xid, { retryDeadline: T0 + 5 }));
    expect(m.getSession(xid)!.retry.retryDeadline).toBeNull();
    applyOk(m, resumeCmd(xid, { retryDeadline: T0 + 5, force: true }));
    expect(m.getSession(xid)!.retry).toMatchObject({ retryDeadline: T0 + 5, nextRetryAt: T0 + 10 });
    const bad = m.apply({ ...resumeCmd(xid), force: 'yes' as unknown as boolean });
    expect(bad.ok || bad.rejection.code).toBe('BAD_REQUEST');
  });
});

describe('an operator resumes a failed transaction (coordinator and driver)', () => {
  it('CommitFailed: resume re-sends only the unfinished confirm, and it ends Committed', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    const first = await register(world, xid, 'TCC', 'a:1');
    const second = await register(world, xid, 'TCC', 'b:1');
    const third = await register(world, xid, 'TCC', 'c:1');
    world.gateway.script(second, BranchStatus.PhaseTwo_CommitFailed_Unretryable);
    expect(await world.coordinator.commit({ xid })).toBe(GlobalStatus.CommitFailed);
    // Nothing happens on its own: no retry, however long.
    await world.clock.advance(120_000);
    expect(world.gateway.callsFor(xid).map((c) => c.branchId)).toEqual([first, second]);

    // The operator fixed the cause and resumes it.
    expect(await world.coordinator.resumeRetry({ xid, operator: 'alice' })).toBe(
      GlobalStatus.Committing,
    );
    await world.clock.advance(0);
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.Committed);
    // The first branch was confirmed once; the second and third once each after the resume.
    expect(world.gateway.callsFor(xid).map((c) => c.branchId)).toEqual([
      first,
      second,
      second,
      third,
    ]);
    expect(world.machine.lockedRowCount()).toBe(0);
  });

  it('RollbackFailed: resume re-sends only the unfinished cancels, in reverse order', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    const first = await register(world, xid, 'TCC', 'a:1');
    const second = await register(world, xid, 'TCC', 'b:1');
    const third = await register(world, xid, 'TCC', 'c:1');
    world.gateway.script(second, BranchStatus.PhaseTwo_RollbackFailed_Unretryable);
    expect(await world.coordinator.rollback({ xid })).toBe(GlobalStatus.RollbackFailed);
    // Its rows stay locked while it waits for an operator.
    expect(world.machine.lockedRowCount()).toBe(2);
    expect(await world.coordinator.resumeRetry({ xid })).toBe(GlobalStatus.Rollbacking);
    await world.clock.advance(0);
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.Rollbacked);
    expect(world.gateway.callsFor(xid).map((c) => c.branchId)).toEqual([
      third,
      second,
      second,
      first,
    ]);
  });

  it('a resumed branch that fails retryably again is retried; unretryably again, it is CommitFailed again', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    const b = await register(world, xid, 'TCC', 'a:1');
    world.gateway.script(
      b,
      BranchStatus.PhaseTwo_CommitFailed_Unretryable,
      BranchStatus.PhaseTwo_CommitFailed_Retryable,
      BranchStatus.PhaseTwo_CommitFailed_Unretryable,
    );
    expect(await world.coordinator.commit({ xid })).toBe(GlobalStatus.CommitFailed);
    await world.coordinator.resumeRetry({ xid });
    await world.clock.advance(0);
    expect(world.machine.getSession(xid)!.status).toBe(GlobalStatus.CommitRetrying);
    await world.clock.advance(5_000);
    expect(world.machine.getSession(xid)!.status).toBe(GlobalStatus.CommitFailed);
    await world.coordinator.resumeRetry({ xid });
    await world.clock.advance(0);
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.Committed);
  });
});

describe('the retry horizon', () => {
  const HORIZON = { retryHorizonMs: 100_000, stuckAfterMs: 30_000 };

  it('retries stop at beginTime + retryHorizonMs (Stop*, no call after it); resume needs force, which grants one more alarm window', async () => {
    const world = timedWorld({ phaseTwo: HORIZON });
    const began = world.clock.now();
    const xid = await begin(world);
    const b = await register(world, xid, 'TCC', 'a:1');
    world.gateway.script(b, ...Array<'throw'>(10_000).fill('throw'));
    expect(await world.coordinator.commit({ xid })).toBe(GlobalStatus.CommitRetrying);
    await world.clock.advance(60_000);
    expect(isStuck(world.machine.getSession(xid)!)).toBe(true);

    await world.clock.advance(60_000);
    // Past the horizon: stopped by the driver, read as Stop*, its locks and decision kept.
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.StopCommitOrCommitRetry);
    const calls = world.gateway.callsFor(xid);
    expect(calls.length).toBeGreaterThan(5);
    expect(Math.max(...world.gateway.times)).toBeLessThan(began + HORIZON.retryHorizonMs);
    await world.clock.advance(600_000);
    expect(world.gateway.callsFor(xid)).toHaveLength(calls.length);
    expect(world.machine.lockedRowCount()).toBe(1);

    // An unforced resume is refused, naming the horizon; nothing changes.
    const refused = await world.coordinator.resumeRetry({ xid }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(RetryHorizonPassedError);
    expect((refused as Error).message).toContain('force');
    expect((refused as RetryHorizonPassedError).code).toBe('ILLEGAL_STATUS');
    await world.clock.advance(10_000);
    expect(world.gateway.callsFor(xid)).toHaveLength(calls.length);

    // Forced: driven again, for one more alarm window, then stopped again.
    const forcedAt = world.clock.now();
    expect(await world.coordinator.resumeRetry({ xid, force: true })).toBe(
      GlobalStatus.CommitRetrying,
    );
    await world.clock.advance(HORIZON.stuckAfterMs + 20_000);
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.StopCommitOrCommitRetry);
    const forcedCalls = world.gateway.times.slice(calls.length);
    expect(forcedCalls.length).toBeGreaterThan(2);
    expect(Math.max(...forcedCalls)).toBeLessThan(forcedAt + HORIZON.stuckAfterMs);

    // Healed and forced again: it commits.
    world.gateway.clearScript(b);
    await world.coordinator.resumeRetry({ xid, force: true });
    await world.clock.advance(0);
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.Committed);
  });

  it('a decision taken past the horizon is not delivered at all; a failed end past it resumes only with force', async () => {
    const world = makeWorld({ phaseTwo: { retryHorizonMs: 50_000 } });
    const xid = await begin(world, 60_000);
    const b = await register(world, xid, 'TCC', 'a:1');
    // Timed out at 60 s, past its 50 s horizon: rolled back, but no cancel is sent.
    await world.clock.advance(70_000);
    expect(await world.coordinator.getStatus({ xid })).toBe(
      GlobalStatus.StopRollbackOrRollbackRetry,
    );
    expect(world.gateway.callsFor(xid)).toEqual([]);
    await expect(world.coordinator.resumeRetry({ xid })).rejects.toBeInstanceOf(
      RetryHorizonPassedError,
    );
    world.gateway.script(b, BranchStatus.PhaseTwo_RollbackFailed_Unretryable);
    await world.coordinator.resumeRetry({ xid, force: true });
    await world.clock.advance(0);
    expect(world.machine.getSession(xid)!.status).toBe(GlobalStatus.TimeoutRollbackFailed);
    await world.clock.advance(600_000);
    await expect(world.coordinator.resumeRetry({ xid })).rejects.toBeInstanceOf(
      RetryHorizonPassedError,
    );
    await world.coordinator.resumeRetry({ xid, force: true });
    await world.clock.advance(0);
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.TimeoutRollbacked);
  });

  it('the alarm time is capped at the horizon, so only a forced resume moves the horizon', async () => {
    const world = makeWorld({ phaseTwo: { retryHorizonMs: 40_000, stuckAfterMs: 60_000 } });
    const began = world.clock.now();
    const xid = await begin(world, 5_000);
    const b = await register(world, xid, 'TCC', 'a:1');
    world.gateway.script(b, ...Array<'throw'>(100).fill('throw'));
    await world.coordinator.commit({ xid });
    expect(world.machine.getSession(xid)!.retry.retryDeadline).toBe(began + 40_000);
    // An unforced resume before the horizon keeps the alarm within it.
    await world.clock.advance(10_000);
    await world.coordinator.stopRetry({ xid });
    await world.coordinator.resumeRetry({ xid });
    expect(world.machine.getSession(xid)!.retry.retryDeadline).toBe(began + 40_000);
    await world.clock.advance(40_000);
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.StopCommitOrCommitRetry);
  });
});

describe('the retry horizon and the fence', () => {
  it("the fence keeps its rows past the TC's default horizon, by its margin", () => {
    expect(DEFAULT_PHASE_TWO_OPTIONS.retryHorizonMs).toBe(DEFAULT_PHASE_TWO_RETRY_HORIZON_MS);
    expect(FENCE_TC_RETRY_HORIZON_MS).toBe(DEFAULT_PHASE_TWO_OPTIONS.retryHorizonMs);
    expect(FENCE_DEFAULT_RETRY_HORIZON_MS).toBe(
      DEFAULT_PHASE_TWO_OPTIONS.retryHorizonMs + FENCE_HORIZON_MARGIN_MS,
    );
    expect(FENCE_HORIZON_MARGIN_MS).toBeGreaterThan(DEFAULT_PHASE_TWO_OPTIONS.branchCallTimeoutMs);
  });
});
