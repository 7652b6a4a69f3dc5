import { requireBranchId, requireXid } from '../../src/shared/ids.ts';
import { describe, expect, it } from 'vitest';
import { IllegalStatusError, UnknownXidError } from '../../src/coordinator/errors.ts';
import { MemoryStore } from '../../src/store/memory/index.ts';
import { BranchStatus, GlobalStatus, type BranchSession } from '../../src/coordinator/types.ts';
import { BadRequestError, NotLeaderError } from '../../src/shared/errors.ts';
import { FakeGateway, begin, flush, makeWorld, register, type World } from './fakes.ts';

const rm = (world: World, xid: string) =>
  world.gateway.callsFor(xid).map((c) => `${c.kind}:${c.branchId}`);

describe('commit', () => {
  it('commits a transaction without branches at once', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    expect(xid).toMatch(/^10\.0\.0\.1:8091:\d+$/);
    expect(await world.coordinator.commit({ xid })).toBe(GlobalStatus.Committed);
    expect(world.gateway.calls).toHaveLength(0);
    expect(world.machine.getSession(xid)).toBeUndefined();
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.Committed);
  });

  it('commits one branch and releases its locks', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    const b = await register(world, xid, 'TCC', 'orders:1');
    expect(await world.coordinator.commit({ xid })).toBe(GlobalStatus.Committed);
    expect(rm(world, xid)).toEqual([`commit:${b}`]);
    expect(world.machine.lockedRowCount()).toBe(0);
  });

  it('commits many branches in registration order', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    const ids = [];
    for (let i = 0; i < 5; i++)
      ids.push(await register(world, xid, i % 2 ? 'TCC' : 'XA', `t${i}:1`));
    expect(await world.coordinator.commit({ xid })).toBe(GlobalStatus.Committed);
    expect(rm(world, xid)).toEqual(ids.map((id) => `commit:${id}`));
  });

  it('answers AsyncCommitting at once when every branch is AT, and commits them in the background', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    await register(world, xid, 'AT', 'orders:1');
    await register(world, xid, 'AT', 'orders:2');
    world.gateway.manual = true;
    expect(await world.coordinator.commit({ xid })).toBe(GlobalStatus.AsyncCommitting);
    await flush();
    expect(world.gateway.pendingCount).toBe(1);
    world.gateway.settle(0, 'success');
    await flush();
    world.gateway.settle(0, 'success');
    await flush();
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.Committed);
  });

  it('records the decision durably before any branch hears of it (invariant 1)', async () => {
    const store = new MemoryStore();
    const seen: string[] = [];
    const gateway = new FakeGateway();
    const spy = {
      commitBranch: (branch: BranchSession) => {
        seen.push(store.machine.getSession(branch.xid)!.status);
        return gateway.commitBranch(branch);
      },
      rollbackBranch: (branch: BranchSession) => {
        seen.push(store.machine.getSession(branch.xid)!.status);
        return gateway.rollbackBranch(branch);
      },
    };
    const world = makeWorld({ store, gateway: spy as unknown as FakeGateway });
    const c = await begin(world);
    await register(world, c, 'TCC');
    await world.coordinator.commit({ xid: c });
    const r = await begin(world);
    await register(world, r, 'TCC');
    await world.coordinator.rollback({ xid: r });
    expect(seen).toEqual([GlobalStatus.Committing, GlobalStatus.Rollbacking]);
  });

  it('retries a branch that fails commit twice, with backoff, then commits', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    const ok = await register(world, xid, 'TCC', 'a:1');
    const flaky = await register(world, xid, 'TCC', 'b:1');
    world.gateway.script(flaky, BranchStatus.PhaseTwo_CommitFailed_Retryable, 'throw');
    expect(await world.coordinator.commit({ xid })).toBe(GlobalStatus.CommitRetrying);
    let session = world.machine.getSession(xid)!;
    expect(session.retry).toMatchObject({
      attempts: 1,
      nextRetryAt: world.clock.now() + 1_000,
      stopped: false,
    });
    // The committed branch let go of its rows; the failing one keeps them.
    expect(session.branches.map((b) => b.lockedRows.length)).toEqual([0, 1]);
    await world.clock.advance(1_000);
    session = world.machine.getSession(xid)!;
    expect(session.retry.attempts).toBe(2);
    expect(session.retry.nextRetryAt).toBe(world.clock.now() + 2_000);
    await world.clock.advance(1_999);
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.CommitRetrying);
    await world.clock.advance(1);
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.Committed);
    expect(rm(world, xid)).toEqual([
      `commit:${ok}`,
      `commit:${flaky}`,
      `commit:${flaky}`,
      `commit:${flaky}`,
    ]);
    expect(world.machine.lockedRowCount()).toBe(0);
  });

  it('counts a branch call that hangs past branchCallTimeoutMs as retryable', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    const b = await register(world, xid, 'TCC');
    world.gateway.script(b, 'hang');
    const answer = world.coordinator.commit({ xid });
    await world.clock.advance(5_000);
    expect(await answer).toBe(GlobalStatus.CommitRetrying);
    await world.clock.advance(1_000);
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.Committed);
  });

  it('an unretryable failure ends CommitFailed at once, keeps the locks; mark-resolved releases them', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    const b = await register(world, xid, 'TCC', 'orders:1');
    world.gateway.script(b, BranchStatus.PhaseTwo_CommitFailed_Unretryable);
    expect(await world.coordinator.commit({ xid })).toBe(GlobalStatus.CommitFailed);
    expect(await world.coordinator.lockQuery({ resourceId: 'jdbc:db', lockKey: 'orders:1' })).toBe(
      false,
    );
    await world.clock.advance(120_000);
    expect(world.gateway.calls).toHaveLength(1); // nobody retries a failed transaction
    await expect(
      world.coordinator.markResolved({
        xid,
        confirmXid: requireXid('10.0.0.1:8091:999999'),
        operator: 'ops',
      }),
    ).rejects.toBeInstanceOf(BadRequestError);
    expect(world.machine.lockedRowCount()).toBe(1);
    const resolved = await world.coordinator.markResolved({
      xid,
      confirmXid: xid,
      operator: 'ops',
    });
    expect(resolved.status).toBe(GlobalStatus.CommitFailed);
    expect(world.machine.lockedRowCount()).toBe(0);
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.CommitFailed);
    expect((await world.coordinator.getSession({ xid })).live).toBe(false);
  });

  it('answers a retried commit with the current status, and refuses unknown xids (malformed ones are refused at the edge)', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    await world.coordinator.rollback({ xid });
    expect(await world.coordinator.commit({ xid })).toBe(GlobalStatus.Rollbacked);
    await expect(
      world.coordinator.commit({ xid: requireXid('10.0.0.1:8091:4242') }),
    ).rejects.toBeInstanceOf(UnknownXidError);
    expect(() => requireXid('garbage')).toThrow(BadRequestError);
    expect(() => requireXid('10.0.0.1:99999:1')).toThrow(BadRequestError);
  });
});

describe('rollback', () => {
  it('rolls branches back in reverse registration order', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    const ids = [
      await register(world, xid, 'TCC', 'a:1'),
      await register(world, xid, 'AT', 'b:1'),
      await register(world, xid, 'XA', 'c:1'),
    ];
    expect(await world.coordinator.rollback({ xid })).toBe(GlobalStatus.Rollbacked);
    expect(rm(world, xid)).toEqual(ids.reverse().map((id) => `rollback:${id}`));
    expect(world.machine.lockedRowCount()).toBe(0);
  });

  it('does not wait for an earlier branch while a later one still fails (order is kept across retries)', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    const first = await register(world, xid, 'TCC');
    const last = await register(world, xid, 'TCC');
    world.gateway.script(last, BranchStatus.PhaseTwo_RollbackFailed_Retryable);
    expect(await world.coordinator.rollback({ xid })).toBe(GlobalStatus.RollbackRetrying);
    expect(rm(world, xid)).toEqual([`rollback:${last}`]);
    await world.clock.advance(1_000);
    expect(rm(world, xid)).toEqual([`rollback:${last}`, `rollback:${last}`, `rollback:${first}`]);
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.Rollbacked);
  });

  it('drops a branch that failed phase one without calling its RM', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    const done = await register(world, xid, 'AT', 'a:1');
    const failed = await register(world, xid, 'AT', 'a:2');
    await world.coordinator.branchReport({
      xid,
      branchId: failed,
      status: BranchStatus.PhaseOne_Failed,
    });
    expect(await world.coordinator.rollback({ xid })).toBe(GlobalStatus.Rollbacked);
    expect(rm(world, xid)).toEqual([`rollback:${done}`]);
    expect(world.machine.lockedRowCount()).toBe(0);
  });
});

describe('timeout', () => {
  it('rolls back a transaction left in Begin past its deadline: TimeoutRollbacked', async () => {
    const world = makeWorld();
    const xid = await begin(world, 5_000);
    const a = await register(world, xid, 'TCC', 'a:1');
    const b = await register(world, xid, 'TCC', 'a:2');
    await world.clock.advance(4_999);
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.Begin);
    await world.clock.advance(1);
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.TimeoutRollbacked);
    expect(rm(world, xid)).toEqual([`rollback:${b}`, `rollback:${a}`]);
    expect(world.machine.lockedRowCount()).toBe(0);
  });

  it('a commit that arrives after the deadline rolls back instead', async () => {
    const world = makeWorld({ start: false });
    world.coordinator.start();
    const xid = await begin(world, 1_000);
    await register(world, xid, 'TCC');
    world.clock.set(world.clock.now() + 1_000); // time passes, the timer has not fired yet
    expect(await world.coordinator.commit({ xid })).toBe(GlobalStatus.TimeoutRollbacked);
  });

  it('refuses a branch registering after the deadline', async () => {
    const world = makeWorld();
    const xid = await begin(world, 1_000);
    world.clock.set(world.clock.now() + 1_000);
    await expect(register(world, xid, 'TCC')).rejects.toBeInstanceOf(IllegalStatusError);
  });
});

describe('requests', () => {
  it('a begin retried with the same requestId returns the first xid', async () => {
    const world = makeWorld();
    const request = {
      applicationId: 'app',
      transactionServiceGroup: 'g',
      timeoutMs: 1_000,
      requestId: 'req-7',
    };
    const first = await world.coordinator.begin(request);
    const second = await world.coordinator.begin(request);
    expect(second).toEqual(first);
    expect(world.machine.liveSessionCount()).toBe(1);
  });

  it('validates requests before anything is submitted', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    const c = world.coordinator;
    await expect(
      c.begin({ applicationId: '', transactionServiceGroup: 'g', timeoutMs: 1 }),
    ).rejects.toBeInstanceOf(BadRequestError);
    await expect(
      c.begin({ applicationId: 'a', transactionServiceGroup: 'g', timeoutMs: 0 }),
    ).rejects.toBeInstanceOf(BadRequestError);
    await expect(
      c.registerBranch({
        xid,
        branchType: 'XX' as never,
        resourceId: 'r',
        clientId: 'c',
        applicationId: 'a',
      }),
    ).rejects.toBeInstanceOf(BadRequestError);
    await expect(
      c.registerBranch({
        xid,
        branchType: 'AT',
        resourceId: 'r',
        lockKey: 't:',
        clientId: 'c',
        applicationId: 'a',
      }),
    ).rejects.toThrow(/no primary keys/);
    await expect(
      c.registerBranch({
        xid,
        branchType: 'TCC',
        resourceId: 'r',
        clientId: 'c',
        applicationId: '',
      }),
    ).rejects.toThrow(/applicationId/);
    expect(() => requireBranchId('abc')).toThrow(BadRequestError);
    await expect(c.globalReport({ xid, status: GlobalStatus.Begin })).rejects.toBeInstanceOf(
      BadRequestError,
    );
    await expect(c.lockQuery({ resourceId: 'r', lockKey: '' })).rejects.toBeInstanceOf(
      BadRequestError,
    );
    expect(world.machine.getSession(xid)!.branches).toHaveLength(0);
  });

  it('a follower refuses with NotLeaderError', async () => {
    const world = makeWorld();
    world.store.setLeadership(false, 2);
    await expect(begin(world)).rejects.toBeInstanceOf(NotLeaderError);
  });

  it('a Saga TM reports the end its engine reached', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    await register(world, xid, 'SAGA', 'a:1');
    expect(await world.coordinator.globalReport({ xid, status: GlobalStatus.Committed })).toBe(
      GlobalStatus.Committed,
    );
    expect(world.gateway.calls).toHaveLength(0);
    expect(world.machine.lockedRowCount()).toBe(0);
  });

  it('a Saga TM may hand compensation to the TC by reporting RollbackRetrying', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    const b = await register(world, xid, 'SAGA');
    expect(
      await world.coordinator.globalReport({ xid, status: GlobalStatus.RollbackRetrying }),
    ).toBe(GlobalStatus.RollbackRetrying);
    await flush();
    expect(rm(world, xid)).toEqual([`rollback:${b}`]);
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.Rollbacked);
  });
});

describe('operator actions', () => {
  it('stop retry reads StopCommitOrCommitRetry and halts retries; resume drives it home', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    const b = await register(world, xid, 'TCC', 'a:1');
    world.gateway.script(b, 'throw');
    expect(await world.coordinator.commit({ xid })).toBe(GlobalStatus.CommitRetrying);
    await world.coordinator.stopRetry({ xid });
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.StopCommitOrCommitRetry);
    await expect(world.coordinator.retryNow({ xid })).rejects.toBeInstanceOf(IllegalStatusError);
    await world.clock.advance(30_000);
    expect(world.gateway.calls).toHaveLength(1);
    await world.coordinator.resumeRetry({ xid });
    await flush();
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.Committed);
  });

  it('retry now skips the backoff', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    const b = await register(world, xid, 'TCC');
    world.gateway.script(b, BranchStatus.PhaseTwo_CommitFailed_Retryable);
    await world.coordinator.commit({ xid });
    expect(await world.coordinator.retryNow({ xid })).toBe(GlobalStatus.Committed);
  });

  it('a retry-stopped transaction may be marked resolved, ending in its failed state', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    const b = await register(world, xid, 'TCC', 'a:1');
    world.gateway.script(b, 'throw');
    await world.coordinator.rollback({ xid });
    await expect(
      world.coordinator.markResolved({ xid, confirmXid: xid, operator: 'ops' }),
    ).rejects.toBeInstanceOf(IllegalStatusError);
    await world.coordinator.stopRetry({ xid });
    const resolved = await world.coordinator.markResolved({
      xid,
      confirmXid: xid,
      operator: 'ops',
    });
    expect(resolved.status).toBe(GlobalStatus.RollbackFailed);
    expect(world.machine.lockedRowCount()).toBe(0);
  });
});
