/**
 * The phase-two driver with concurrent writers (db mode), without a database: two
 * coordinators over one state machine, where only one drives phase two but both decide.
 * A decision, resume or resolve made on the other node must reach the driver even for a
 * transaction it already tracks (a deadline timer, a park), at its next sweep.
 */
import { describe, expect, it } from 'vitest';
import { MemoryStore } from '../../src/store/memory/index.ts';
import { CoordinatorStateMachine } from '../../src/coordinator/state-machine.ts';
import type { PhaseTwoOptions } from '../../src/coordinator/phase-two-driver.ts';
import { GlobalStatus } from '../../src/coordinator/types.ts';
import { DB_DECIDER_HANDOFF_MS } from '../../src/store/db/limits.ts';
import { dueAtOf } from '../../src/store/db/rows.ts';
import {
  FakeClock,
  FakeGateway,
  TEST_PHASE_TWO,
  begin,
  makeWorld,
  register,
} from '../coordinator/fakes.ts';

/** Serves writes (isLeader) on every node; drives phase two only where told. */
class SharedStore extends MemoryStore {
  constructor(
    machine: CoordinatorStateMachine,
    private readonly drives: boolean,
    readonly concurrentWriters: boolean,
  ) {
    super({ machine, leader: true, term: 1 });
  }
  drivesPhaseTwo(): boolean {
    return this.drives;
  }
  /** What the db store's `due_at <= now` statement answers (the same dueAtOf it writes). */
  async dueXids(now: number, limit: number): Promise<string[]> {
    return this.machine
      .liveXids()
      .map((xid) => ({ xid, due: dueAtOf(this.machine.getSession(xid)!, DB_DECIDER_HANDOFF_MS) }))
      .filter((x) => x.due <= now)
      .sort((a, b) => a.due - b.due || (a.xid < b.xid ? -1 : 1))
      .slice(0, limit)
      .map((x) => x.xid);
  }
}

function pair(concurrentWriters: boolean, phaseTwo: Partial<PhaseTwoOptions> = {}) {
  const machine = new CoordinatorStateMachine();
  const clock = new FakeClock();
  const gateway = new FakeGateway();
  const holder = makeWorld({
    clock,
    gateway,
    phaseTwo,
    store: new SharedStore(machine, true, concurrentWriters),
  });
  const other = makeWorld({
    clock,
    gateway,
    phaseTwo,
    store: new SharedStore(machine, false, concurrentWriters),
  });
  return { machine, clock, gateway, holder, other };
}

describe('phase-two driver with concurrent writers', () => {
  it('drives a transaction decided on another node although it already holds a deadline timer for it', async () => {
    const { machine, clock, holder, other } = pair(true);
    expect(holder.coordinator.driver.isActive).toBe(true);
    expect(other.coordinator.driver.isActive).toBe(false);
    const xid = await begin(holder, 600_000); // the holder now has a timer at the deadline
    await register(holder, xid, 'TCC', 'r:1');
    expect(await other.coordinator.commit({ xid })).toBe(GlobalStatus.Committing);
    await clock.advance(TEST_PHASE_TWO.sweepIntervalMs!);
    expect(machine.getFinished(xid)?.status).toBe(GlobalStatus.Committed);
  });

  it('drives a transaction decided on another node at its next due poll, long before the sweep', async () => {
    const { machine, clock, holder, other } = pair(true, { duePollIntervalMs: 100 });
    const xid = await begin(holder, 600_000);
    await register(holder, xid, 'TCC', 'r:1');
    expect(await other.coordinator.commit({ xid })).toBe(GlobalStatus.Committing);
    await clock.advance(100);
    expect(machine.getFinished(xid)?.status).toBe(GlobalStatus.Committed);
  });

  it('with no due poll, a decision made elsewhere waits for the sweep', async () => {
    const { machine, clock, holder, other } = pair(true, { duePollIntervalMs: 0 });
    const xid = await begin(holder, 600_000);
    await register(holder, xid, 'TCC', 'r:1');
    await other.coordinator.commit({ xid });
    await clock.advance(100);
    expect(machine.getSession(xid)?.status).toBe(GlobalStatus.Committing);
    await clock.advance(TEST_PHASE_TWO.sweepIntervalMs!);
    expect(machine.getFinished(xid)?.status).toBe(GlobalStatus.Committed);
  });

  it('without concurrent writers the driver trusts its timer (raft mode: only the leader decides)', async () => {
    const { machine, clock, holder, other } = pair(false);
    const xid = await begin(holder, 600_000);
    await register(holder, xid, 'TCC', 'r:1');
    await other.coordinator.commit({ xid });
    await clock.advance(TEST_PHASE_TWO.sweepIntervalMs!);
    expect(machine.getSession(xid)?.status).toBe(GlobalStatus.Committing);
  });

  it('drives a parked transaction once another node resumed its retries', async () => {
    const { machine, clock, gateway, holder, other } = pair(true);
    const xid = await begin(holder);
    const branchId = await register(holder, xid, 'TCC', 'p:1');
    gateway.script(branchId, 'throw');
    expect(await holder.coordinator.commit({ xid })).toBe(GlobalStatus.CommitRetrying);
    // decided elsewhere: the holder's retry timer no longer fits
    await other.coordinator.stopRetry({ xid });
    await clock.advance(TEST_PHASE_TWO.sweepIntervalMs!); // the holder parks it
    expect(machine.getSession(xid)?.retry.stopped).toBe(true);
    await other.coordinator.resumeRetry({ xid });
    await clock.advance(TEST_PHASE_TWO.sweepIntervalMs!);
    expect(machine.getFinished(xid)?.status).toBe(GlobalStatus.Committed);
  });
});
