/**
 * The phase-two driver's sweep walks the live set a slice per event-loop turn (issue 19: a
 * new leader's takeover must not scan every session before it serves). Two coordinators
 * over one shared state machine: A fills it, B takes over with small slices, and the test
 * turns B's clock one yield at a time, counting what each slice did.
 */
import { describe, expect, it } from 'vitest';
import type { Xid } from '../../src/shared/ids.ts';
import { MemoryStore } from '../../src/store/memory/index.ts';
import { CoordinatorStateMachine } from '../../src/coordinator/state-machine.ts';
import { GlobalStatus } from '../../src/coordinator/types.ts';
import {
  FakeClock,
  FakeGateway,
  SequentialIds,
  begin,
  flush,
  makeWorld,
  register,
} from './fakes.ts';

const SLICE = 10;

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
    phaseTwo: { sweepSliceSessions: SLICE },
    ids: new SequentialIds(900_000),
  });
  return { machine, clock, gateway, a, b };
}

/** Sessions of `xids` the leader of `term` has acquired (its passes began on them). */
function acquiredBy(machine: CoordinatorStateMachine, term: number, xids: string[]): number {
  return xids.filter((x) => machine.getSession(x)!.driverTerm === term).length;
}

/** N transactions decided commit on A whose branch calls hang: B's sweep must drive them. */
async function decidedOnA(world: ReturnType<typeof twoNodes>, n: number): Promise<Xid[]> {
  const { a, gateway } = world;
  gateway.manual = true;
  const xids: Xid[] = [];
  for (let i = 0; i < n; i++) {
    const xid = await begin(a);
    await register(a, xid, 'TCC', `orders:${i}`);
    void a.coordinator.commit({ xid });
    xids.push(xid);
  }
  await flush();
  a.store.setLeadership(false, 2);
  await flush();
  return xids;
}

describe('the sliced sweep', () => {
  it('drives a live set of 45 in slices of 10: one slice per turn, every session in the end', async () => {
    const world = twoNodes();
    const { machine, clock, b } = world;
    const xids = await decidedOnA(world, 45);
    expect(acquiredBy(machine, 2, xids)).toBe(0);

    b.store.setLeadership(true, 2);
    await flush();
    const perTurn = [acquiredBy(machine, 2, xids)];
    while (await clock.runOneDue()) perTurn.push(acquiredBy(machine, 2, xids));
    // Each turn drives at most one slice more; the walk ends with every session driven.
    expect(perTurn.slice(0, 5)).toEqual([10, 20, 30, 40, 45]);
    expect(acquiredBy(machine, 2, xids)).toBe(45);
  });

  it('serves a TM between slices of its takeover sweep', async () => {
    const world = twoNodes();
    const { machine, b } = world;
    const xids = await decidedOnA(world, 45);
    b.store.setLeadership(true, 2);
    await flush();
    expect(acquiredBy(machine, 2, xids)).toBe(SLICE); // the walk is under way
    const xid = await begin(b);
    expect(machine.getSession(xid)?.status).toBe(GlobalStatus.Begin);
    expect(acquiredBy(machine, 2, xids)).toBe(SLICE); // served before the next slice
  });

  it('handles sessions that end, change and begin mid-sweep; each branch is told once', async () => {
    const world = twoNodes();
    const { machine, clock, gateway, a, b } = world;
    // 30 transactions begun on A, waiting for their deadline (60 s).
    const xids: Xid[] = [];
    for (let i = 0; i < 30; i++) {
      const xid = await begin(a);
      await register(a, xid, 'AT', `stock:${i}`);
      xids.push(xid);
    }
    a.store.setLeadership(false, 2);
    b.store.setLeadership(true, 2);
    await flush(); // the first slice of B's sweep ran; the walk waits for its next turn
    const late = xids.slice(-5); // not reached yet (a Map walks in insertion order)
    await b.coordinator.commit({ xid: late[0]! }); // ends before the walk reaches it
    await b.coordinator.rollback({ xid: late[1]! }); // ends too, the other way
    // Changes: decided commit, its branch fails (a retry is scheduled) before the walk sees it.
    gateway.script(machine.getSession(late[2]!)!.branches[0]!.branchId, 'throw');
    await b.coordinator.commit({ xid: late[2]! });
    const begunMidSweep = await begin(b);
    await register(b, begunMidSweep, 'AT', 'stock:new');
    while (await clock.runOneDue());
    expect(machine.getSession(late[2]!)?.retry.attempts).toBe(1); // a retry is scheduled

    // Past every deadline and retry: each one is driven to its end, exactly once per branch.
    await clock.advance(61_000);
    expect(machine.liveXids()).toEqual([]);
    // One call per branch; the failed one's retry is the second call of its branch.
    const calls = new Map<string, number>();
    for (const c of gateway.calls) calls.set(c.xid, (calls.get(c.xid) ?? 0) + 1);
    expect(calls.size).toBe(31);
    for (const [xid, n] of calls) expect([xid, n]).toEqual([xid, xid === late[2] ? 2 : 1]);
    const ended = (xid: string) =>
      xid === late[0] || xid === late[2]
        ? GlobalStatus.Committed
        : xid === late[1]
          ? GlobalStatus.Rollbacked
          : GlobalStatus.TimeoutRollbacked;
    for (const xid of [...xids, begunMidSweep])
      expect([xid, machine.getFinished(xid)!.status]).toEqual([xid, ended(xid)]);
  });

  it('a leadership loss mid-sweep stops the walk', async () => {
    const world = twoNodes();
    const { machine, clock, b } = world;
    const xids = await decidedOnA(world, 45);
    b.store.setLeadership(true, 2);
    await flush();
    expect(acquiredBy(machine, 2, xids)).toBe(SLICE);
    b.store.setLeadership(false, 3);
    while (await clock.runOneDue());
    expect(acquiredBy(machine, 2, xids)).toBe(SLICE);
  });
});
