/**
 * "One entry per decision" (issue 12 item 1; DESIGN.md "Decide in apply"): a commit or
 * rollback is one command decided by apply against the state at that moment, a branchless
 * one ends in that entry, the first phase-two pass needs no AcquireDriver, and neither the
 * TM's answer nor phase two waits for a linearizable read.
 */
import { describe, expect, it } from 'vitest';
import type { Command } from '../../src/coordinator/commands.ts';
import { CoordinatorStateMachine } from '../../src/coordinator/state-machine.ts';
import { BranchStatus, GlobalStatus } from '../../src/coordinator/types.ts';
import { begin, makeWorld, register, type World } from './fakes.ts';

/** Records the kinds of applied commands and counts linearizable reads. */
function instrument(world: World): { kinds: string[]; reads: () => number } {
  const kinds: string[] = [];
  world.store.onApply((command) => kinds.push(command.kind));
  let reads = 0;
  const read = world.store.read.bind(world.store);
  world.store.read = (fn) => {
    reads += 1;
    return read(fn);
  };
  return { kinds, reads: () => reads };
}

describe('one entry per decision', () => {
  it('a branchless begin + commit is two entries and no read (one-phase commit)', async () => {
    const world = makeWorld();
    const seen = instrument(world);
    const xid = await begin(world);
    const readsBefore = seen.reads();
    expect(await world.coordinator.commit({ xid })).toBe(GlobalStatus.Committed);
    expect(seen.kinds).toEqual(['Begin', 'CommitGlobal']);
    expect(seen.reads()).toBe(readsBefore);
    expect(world.machine.getFinished(xid)?.status).toBe(GlobalStatus.Committed);
  });

  it('a branchless rollback ends Rollbacked in its one entry', async () => {
    const world = makeWorld();
    const seen = instrument(world);
    const xid = await begin(world);
    expect(await world.coordinator.rollback({ xid })).toBe(GlobalStatus.Rollbacked);
    expect(seen.kinds).toEqual(['Begin', 'RollbackGlobal']);
  });

  it('a TCC commit needs no AcquireDriver and no read: Begin drives from its term', async () => {
    const world = makeWorld();
    const seen = instrument(world);
    const xid = await begin(world);
    await register(world, xid, 'TCC');
    const reads = seen.reads();
    expect(await world.coordinator.commit({ xid })).toBe(GlobalStatus.Committed);
    // The last branch's result travels in the end (FinishGlobal.lastBranch): 4 commands, not 5.
    expect(seen.kinds).toEqual(['Begin', 'RegisterBranch', 'CommitGlobal', 'FinishGlobal']);
    expect(seen.reads()).toBe(reads);
  });

  it('the timeout job is one RollbackGlobal entry, ending a branchless transaction in it', async () => {
    const world = makeWorld();
    const seen = instrument(world);
    const xid = await begin(world, 1_000);
    await world.clock.advance(1_500);
    expect(seen.kinds).toEqual(['Begin', 'RollbackGlobal']);
    expect(world.machine.getFinished(xid)?.status).toBe(GlobalStatus.TimeoutRollbacked);
  });

  it('a timeout rollback before the deadline is refused by apply and changes nothing', () => {
    const machine = new CoordinatorStateMachine();
    const at = 1_700_000_000_000;
    const xid = '10.0.0.1:8091:1';
    expect(
      machine.apply({
        kind: 'Begin',
        xid,
        transactionId: '1',
        applicationId: 'a',
        transactionServiceGroup: 'g',
        name: '',
        timeoutMs: 1_000,
        beginTime: at,
        requestId: null,
        term: 3,
      }).ok,
    ).toBe(true);
    const before = machine.snapshot();
    const early = machine.apply({ kind: 'RollbackGlobal', xid, timeout: true, at, term: 3 });
    expect(early.ok).toBe(false);
    expect(Buffer.from(machine.snapshot()).equals(Buffer.from(before))).toBe(true);
    expect(machine.getSession(xid)?.driverTerm).toBe(3);
  });

  // Issue 13 item 10. Before the fix, commit read the session (all AT), a TCC branch
  // registered, the AsyncCommitting compare-and-set was refused, and the TM was answered
  // `Begin` (the SDK threw IllegalStatusError and the transaction later timed out).
  it('a commit racing a late branch registration is decided against the state at that moment', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    const at = await register(world, xid, 'AT', 'orders:1');
    let late: string | null = null;
    const submit = world.store.submit.bind(world.store);
    world.store.submit = (async (command: Command) => {
      const decision = command.kind === 'CommitGlobal' || command.kind === 'ChangeGlobalStatus';
      if (decision && late === null) {
        late = 'pending';
        late = await register(world, xid, 'TCC');
      }
      return submit(command);
    }) as typeof world.store.submit;
    const answer = await world.coordinator.commit({ xid });
    expect(late).toMatch(/^\d+$/);
    expect(answer).toBe(GlobalStatus.Committed);
    expect(world.gateway.callsFor(xid).map((c) => `${c.kind}:${c.branchId}`)).toEqual([
      `commit:${at}`,
      `commit:${late}`,
    ]);
    expect(world.machine.getFinished(xid)?.status).toBe(GlobalStatus.Committed);
  });

  it('an entry written before CommitGlobal existed still replays: Begin without a term drives from term 0', () => {
    const machine = new CoordinatorStateMachine();
    const xid = '10.0.0.1:8091:7';
    const at = 1_700_000_000_000;
    // As logged then: no Begin term, no RegisterBranch applicationId.
    const old = [
      {
        kind: 'Begin',
        xid,
        transactionId: '7',
        applicationId: 'a',
        transactionServiceGroup: 'g',
        name: '',
        timeoutMs: 60_000,
        beginTime: at,
        requestId: null,
      },
      {
        kind: 'RegisterBranch',
        xid,
        branchId: '8',
        type: 'TCC',
        resourceId: 'r',
        lockKey: '',
        applicationData: '',
        clientId: 'c',
        at,
        requestId: null,
      },
      {
        kind: 'ChangeGlobalStatus',
        xid,
        from: GlobalStatus.Begin,
        to: GlobalStatus.Committing,
        at,
        term: 1,
      },
      { kind: 'AcquireDriver', xid, term: 1 },
      {
        kind: 'BranchPhaseTwoResult',
        xid,
        branchId: '8',
        status: BranchStatus.PhaseTwo_Committed,
        term: 1,
      },
      { kind: 'FinishGlobal', xid, status: GlobalStatus.Committed, at, term: 1 },
    ];
    for (const command of old) expect(machine.apply(command as Command).ok).toBe(true);
    expect(machine.getFinished(xid)?.status).toBe(GlobalStatus.Committed);
  });
});
