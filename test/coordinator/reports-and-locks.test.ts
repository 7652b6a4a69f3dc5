/**
 * Issue 13 items 8 and 12: AT row locks are released at the commit decision (kept until
 * rolled back on rollback); reports are accepted only when they may be.
 */
import { describe, expect, it } from 'vitest';
import { IllegalStatusError } from '../../src/coordinator/errors.ts';
import { CoordinatorStateMachine } from '../../src/coordinator/state-machine.ts';
import { BranchStatus, GlobalStatus } from '../../src/coordinator/types.ts';
import { begin, flush, makeWorld, register } from './fakes.ts';

const ROW = 'jdbc:db^^^orders^^^1';

describe('AT locks at the decision (item 8)', () => {
  // Before the fix the row stayed locked until the RM acknowledged: with the RM offline,
  // for the whole retry window.
  it('a commit frees AT rows at the decision, before any RM answered', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    await register(world, xid, 'AT', 'orders:1');
    world.gateway.manual = true;
    expect(await world.coordinator.commit({ xid })).toBe(GlobalStatus.AsyncCommitting);
    await flush();
    expect(world.gateway.pendingCount).toBe(1); // the RM has not answered
    expect(world.machine.lockHolder(ROW)).toBeUndefined();
    const other = await begin(world);
    await expect(register(world, other, 'AT', 'orders:1')).resolves.toMatch(/^\d+$/);
    world.gateway.settle(0, 'success');
    await flush();
    expect(world.machine.getFinished(xid)?.status).toBe(GlobalStatus.Committed);
  });

  it('a rollback keeps AT rows until the branch is rolled back', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    await register(world, xid, 'AT', 'orders:1');
    world.gateway.manual = true;
    const rolling = world.coordinator.rollback({ xid });
    await flush();
    expect(world.machine.lockHolder(ROW)?.xid).toBe(xid);
    world.gateway.settle(0, 'success');
    expect(await rolling).toBe(GlobalStatus.Rollbacked);
    expect(world.machine.lockHolder(ROW)).toBeUndefined();
  });

  it('a TCC branch keeps its rows until it is committed', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    await register(world, xid, 'TCC', 'orders:1');
    world.gateway.manual = true;
    const committing = world.coordinator.commit({ xid });
    await flush();
    expect(world.machine.lockHolder(ROW)?.xid).toBe(xid);
    world.gateway.settle(0, 'success');
    expect(await committing).toBe(GlobalStatus.Committed);
  });
});

describe('reports at the right time (item 12)', () => {
  // Before the fix GlobalReport ended any transaction.
  it('GlobalReport is refused for a transaction with a branch that is not Saga', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    await register(world, xid, 'TCC');
    await expect(
      world.coordinator.globalReport({ xid, status: GlobalStatus.Committed }),
    ).rejects.toBeInstanceOf(IllegalStatusError);
    expect(world.machine.getSession(xid)?.status).toBe(GlobalStatus.Begin);
  });

  it('GlobalReport ends an all-Saga transaction', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    await register(world, xid, 'SAGA');
    expect(await world.coordinator.globalReport({ xid, status: GlobalStatus.Committed })).toBe(
      GlobalStatus.Committed,
    );
  });

  // Before the fix a repeated PhaseOne report rewrote the branch's data after the decision.
  it('a repeated report with other data is refused, the same one answered, and none after the decision', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    const b = await register(world, xid, 'TCC');
    const report = (status: BranchStatus, applicationData?: string) =>
      world.coordinator.branchReport({
        xid,
        branchId: b,
        status,
        ...(applicationData === undefined ? {} : { applicationData }),
      });
    await report(BranchStatus.PhaseOne_Done, '{"v":1}');
    await expect(report(BranchStatus.PhaseOne_Done, '{"v":1}')).resolves.toBeUndefined();
    await expect(report(BranchStatus.PhaseOne_Done, '{"v":2}')).rejects.toBeInstanceOf(
      IllegalStatusError,
    );
    world.gateway.manual = true;
    const committing = world.coordinator.commit({ xid });
    await flush();
    await expect(report(BranchStatus.PhaseOne_Failed)).rejects.toBeInstanceOf(IllegalStatusError);
    expect(world.machine.getSession(xid)?.branches[0]?.applicationData).toBe('{"v":1}');
    world.gateway.settle(0, 'success');
    expect(await committing).toBe(GlobalStatus.Committed);
  });

  it('a branch still Registered cannot report after the decision', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    const b = await register(world, xid, 'TCC');
    world.gateway.manual = true;
    const committing = world.coordinator.commit({ xid });
    await flush();
    await expect(
      world.coordinator.branchReport({ xid, branchId: b, status: BranchStatus.PhaseOne_Failed }),
    ).rejects.toBeInstanceOf(IllegalStatusError);
    world.gateway.settle(0, 'success');
    expect(await committing).toBe(GlobalStatus.Committed);
  });
});

describe('failed sessions and the live limit (item 11)', () => {
  // Before the fix failed sessions (waiting for an operator) used up the live limit, so
  // new Begins were refused more and more over time.
  it('failed sessions are counted apart: they do not use up the room of new transactions', () => {
    const machine = new CoordinatorStateMachine({ maxLiveSessions: 2 });
    const at = 1_700_000_000_000;
    const beginN = (n: number) =>
      machine.apply({
        kind: 'Begin',
        xid: `10.0.0.1:8091:${n}`,
        transactionId: String(n),
        applicationId: 'a',
        transactionServiceGroup: 'g',
        name: '',
        timeoutMs: 60_000,
        beginTime: at,
        requestId: null,
        term: 1,
      });
    for (const n of [1, 2]) {
      const xid = `10.0.0.1:8091:${n}`;
      expect(beginN(n).ok).toBe(true);
      machine.apply({
        kind: 'RegisterBranch',
        xid,
        branchId: String(100 + n),
        type: 'TCC',
        resourceId: 'r',
        lockKey: '',
        applicationData: '',
        clientId: 'c',
        applicationId: 'a',
        at,
        requestId: null,
      });
      expect(machine.apply({ kind: 'CommitGlobal', xid, at, term: 1 }).ok).toBe(true);
      const fail = machine.apply({
        kind: 'ChangeGlobalStatus',
        xid,
        from: GlobalStatus.Committing,
        to: GlobalStatus.CommitFailed,
        at,
        term: 1,
      });
      expect(fail.ok).toBe(true);
    }
    expect(machine.failedSessionCount()).toBe(2);
    expect(beginN(3).ok).toBe(true);
    expect(beginN(4).ok).toBe(true);
    const full = beginN(5);
    expect(full.ok).toBe(false);
    if (!full.ok) expect(full.rejection.code).toBe('CAPACITY');
    machine.checkInvariants();
    // A restored replica counts the same.
    const copy = new CoordinatorStateMachine({ maxLiveSessions: 2 });
    copy.restore(machine.snapshot());
    expect(copy.failedSessionCount()).toBe(2);
  });
});
