/**
 * Phase two across leader changes: two coordinators over one shared log (two MemoryStores
 * sharing a state machine), each told of leadership by the test, so a deposed leader that
 * has not heard the news yet can be played.
 */
import { describe, expect, it } from 'vitest';
import { MemoryStore } from '../../src/store/memory/index.ts';
import { CoordinatorStateMachine } from '../../src/coordinator/state-machine.ts';
import { BranchStatus, GlobalStatus } from '../../src/coordinator/types.ts';
import { FakeClock, FakeGateway, begin, flush, makeWorld, register } from './fakes.ts';

function twoNodes() {
  const machine = new CoordinatorStateMachine();
  const clock = new FakeClock();
  const gateway = new FakeGateway();
  const a = makeWorld({
    clock,
    gateway,
    store: new MemoryStore({ machine, leader: true, term: 1 }),
  });
  const b = makeWorld({
    clock,
    gateway,
    store: new MemoryStore({ machine, leader: false, term: 1 }),
  });
  const rejections: string[] = [];
  for (const world of [a, b]) {
    world.store.onApply((_c, outcome) => {
      if (!outcome.ok) rejections.push(outcome.rejection.code);
    });
  }
  return { machine, clock, gateway, a, b, rejections };
}

describe('phase two across leader changes', () => {
  it("a deposed leader's late branch result is fenced off by the new leader's term", async () => {
    const { machine, gateway, a, b, rejections } = twoNodes();
    const xid = await begin(a);
    await register(a, xid, 'TCC', 'orders:1');
    gateway.manual = true;
    const answer = a.coordinator.commit({ xid });
    await flush();
    expect(gateway.pendingCount).toBe(1); // A told the branch to commit: driven by term 1

    // B is elected in term 2; A has not heard yet and is still waiting for its RM.
    b.store.setLeadership(true, 2);
    await flush();
    expect(machine.getSession(xid)!.driverTerm).toBe(2);
    expect(gateway.pendingCount).toBe(2);

    // A's RM answers first, with a failure that would end the transaction CommitFailed.
    gateway.settle(0, BranchStatus.PhaseTwo_CommitFailed_Unretryable);
    await flush();
    expect(rejections).toEqual(['STALE_TERM']);
    expect(machine.getSession(xid)!.status).toBe(GlobalStatus.Committing);
    expect(machine.getSession(xid)!.branches[0]!.status).toBe(BranchStatus.Registered);
    // A answers its TM with what is recorded, not with its own stale view.
    expect(await answer).toBe(GlobalStatus.Committing);

    gateway.settle(0, 'success');
    await flush();
    expect(machine.getFinished(xid)?.status).toBe(GlobalStatus.Committed);
    expect(machine.lockedRowCount()).toBe(0);
  });

  it('a new leader re-drives every live transaction it inherits', async () => {
    const { machine, gateway, a, b } = twoNodes();
    gateway.manual = true;
    const committing = await begin(a);
    await register(a, committing, 'TCC', 'x:1');
    const rollingBack = await begin(a);
    await register(a, rollingBack, 'TCC', 'x:2');
    const open = await begin(a, 30_000);
    await register(a, open, 'TCC', 'x:3');
    void a.coordinator.commit({ xid: committing });
    void a.coordinator.rollback({ xid: rollingBack });
    await flush();
    // A crashes: its RM calls never return, it never learns anything again.
    a.coordinator.stop();
    gateway.manual = false;

    b.store.setLeadership(true, 2);
    await flush();
    expect(machine.getFinished(committing)?.status).toBe(GlobalStatus.Committed);
    expect(machine.getFinished(rollingBack)?.status).toBe(GlobalStatus.Rollbacked);
    // The open one keeps its deadline under the new leader.
    expect(machine.getSession(open)!.status).toBe(GlobalStatus.Begin);
    await b.clock.advance(30_000);
    expect(machine.getFinished(open)?.status).toBe(GlobalStatus.TimeoutRollbacked);
    expect(machine.lockedRowCount()).toBe(0);
  });

  it('a leader that steps down stops driving: no timer fires, no command is sent', async () => {
    const { machine, gateway, a, clock } = twoNodes();
    const xid = await begin(a);
    const branch = await register(a, xid, 'TCC');
    gateway.script(branch, 'throw');
    expect(await a.coordinator.commit({ xid })).toBe(GlobalStatus.CommitRetrying);
    a.store.setLeadership(false, 2);
    const before = machine.snapshot();
    await clock.advance(120_000);
    expect(gateway.calls).toHaveLength(1);
    expect(Buffer.from(machine.snapshot()).equals(Buffer.from(before))).toBe(true);
    expect(a.coordinator.driver.isActive).toBe(false);
  });

  it('a leader that regains leadership in a later term takes its transactions back', async () => {
    const { machine, gateway, a, clock } = twoNodes();
    const xid = await begin(a);
    const branch = await register(a, xid, 'TCC');
    gateway.script(branch, 'throw');
    await a.coordinator.commit({ xid });
    a.store.setLeadership(false, 2);
    a.store.setLeadership(true, 3);
    await clock.advance(1_000);
    expect(machine.getFinished(xid)?.status).toBe(GlobalStatus.Committed);
  });
});
