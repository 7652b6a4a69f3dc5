/**
 * Every branch records the application of the RM that registered it, in the replicated
 * state (commands, snapshots), and the phase-two driver keeps a branch whose application
 * has no RM connected waiting: shown to operators, counted, logged once per backoff step,
 * and driven at once when an RM of that application connects.
 */
import type { Xid } from '../../src/shared/ids.ts';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { decodeCommand, encodeCommand } from '../../src/coordinator/commands.ts';
import { CoordinatorStateMachine } from '../../src/coordinator/state-machine.ts';
import { canonical, decodeSnapshot } from '../../src/coordinator/snapshot-codec.ts';
import { BranchStatus, GlobalStatus } from '../../src/coordinator/types.ts';
import { BadRequestError } from '../../src/shared/errors.ts';
import { beginCmd, registerCmd } from './commands-fixtures.ts';
import { begin, makeWorld, type World } from './fakes.ts';

const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

describe('the branch records its application', () => {
  it('RegisterBranch keeps the application; a snapshot round trip keeps it', () => {
    const m = new CoordinatorStateMachine();
    m.apply(beginCmd(1));
    const xid = beginCmd(1).xid;
    expect(m.apply(registerCmd(xid, '11', '', { applicationId: 'team-a' })).ok).toBe(true);
    expect(m.getSession(xid)!.branches[0]!.applicationId).toBe('team-a');
    const restored = new CoordinatorStateMachine();
    restored.restore(m.snapshot());
    expect(restored.getSession(xid)!.branches[0]!.applicationId).toBe('team-a');
  });

  it('a command without an application is refused unless it is a legacy log entry', () => {
    const m = new CoordinatorStateMachine();
    m.apply(beginCmd(1));
    const xid = beginCmd(1).xid;
    const empty = m.apply(registerCmd(xid, '11', '', { applicationId: '' }));
    expect(empty.ok).toBe(false);
    expect(!empty.ok && empty.rejection.code).toBe('BAD_REQUEST');
    // A RegisterBranch logged before branches kept their application: applied as '', the
    // same on every replica (it decodes from the log without the field).
    const { applicationId: _dropped, ...legacy } = registerCmd(xid, '12', '');
    const decoded = decodeCommand(encodeCommand(legacy as never));
    expect(m.apply(decoded).ok).toBe(true);
    expect(m.getSession(xid)!.branches.map((b) => b.applicationId)).toEqual(['']);
  });

  it('reads a format-1 snapshot (before branches kept their application) with an empty application', () => {
    const m = new CoordinatorStateMachine();
    m.apply(beginCmd(1));
    const xid = beginCmd(1).xid;
    m.apply(registerCmd(xid, '11', 't:1', { applicationId: 'team-a' }));
    // Format 1 was keyed (every record a map, keys sorted) and its branches had no application.
    const current = decodeSnapshot(m.snapshot()) as unknown as {
      sessions: { branches: Record<string, unknown>[] }[];
    };
    for (const s of current.sessions) for (const b of s.branches) delete b.applicationId;
    const legacyBytes = Uint8Array.from(packr.pack(canonical({ ...current, version: 1 })));
    const restored = new CoordinatorStateMachine();
    restored.restore(legacyBytes);
    expect(restored.getSession(xid)!.branches[0]!.applicationId).toBe('');
    expect(restored.lockedRowCount()).toBe(1);
  });

  it('the coordinator refuses a branch registration that names no application', async () => {
    const world = makeWorld();
    const xid = await begin(world);
    await expect(
      world.coordinator.registerBranch({
        xid,
        branchType: 'TCC',
        resourceId: 'debit',
        clientId: 'rm-1',
        applicationId: '',
      }),
    ).rejects.toBeInstanceOf(BadRequestError);
  });
});

/** A world whose logs are kept as JSON lines. */
function loggedWorld(): { world: World; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split('\n')) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  const world = makeWorld({ logger: pino({ level: 'info' }, sink) });
  return { world, lines };
}

async function tccBranch(world: World, xid: Xid, applicationId: string): Promise<string> {
  const { branchId } = await world.coordinator.registerBranch({
    xid,
    branchType: 'TCC',
    resourceId: 'debit',
    clientId: `${applicationId}-rm-1`,
    applicationId,
  });
  return branchId;
}

describe('a branch waiting for its application’s RM', () => {
  it('is shown and counted, logged once per backoff step with the reason, and ends when the RM is back', async () => {
    const { world, lines } = loggedWorld();
    const { coordinator, gateway, clock } = world;
    const xid = await begin(world);
    const branchId = await tccBranch(world, xid, 'team-a');
    gateway.script(branchId, 'no-rm', 'no-rm', 'no-rm');
    const started = clock.now();

    expect(await coordinator.commit({ xid })).toBe(GlobalStatus.CommitRetrying);
    const wait = { xid, branchId, applicationId: 'team-a', resourceId: 'debit', since: started };
    expect(coordinator.driver.rmWaitsOf(xid)).toEqual([wait]);
    expect(coordinator.driver.rmWaitCount()).toBe(1);
    const info = await coordinator.getSession({ xid });
    expect(info.live && info.rmWaits).toEqual([wait]);

    // Two more backoff steps (1 s, 2 s) that still find no RM: the wait keeps its start.
    await clock.advance(1_000);
    await clock.advance(2_000);
    expect(gateway.callsFor(xid)).toHaveLength(3);
    expect(coordinator.driver.rmWaitsOf(xid)).toEqual([wait]);
    const waitLogs = lines.filter((l) => l.msg === 'phase two waits; will be retried');
    expect(waitLogs.map((l) => l.attempt)).toEqual([1, 2, 3]);
    for (const l of waitLogs) expect(l.reason).toMatch(/application "team-a".*resource "debit"/);
    // No other line about the failed calls: one line per step.
    expect(lines.filter((l) => /call failed/.test(String(l.msg)))).toEqual([]);

    // The next step (4 s) reaches the RM.
    await clock.advance(4_000);
    expect((await coordinator.getSession({ xid })).live).toBe(false);
    expect(await coordinator.getStatus({ xid })).toBe(GlobalStatus.Committed);
    expect(coordinator.driver.rmWaitCount()).toBe(0);
  });

  it('is driven at once when an RM of its application connects, not when another application’s does', async () => {
    const { world } = loggedWorld();
    const { coordinator, gateway, clock } = world;
    const xid = await begin(world);
    const branchId = await tccBranch(world, xid, 'team-a');
    gateway.script(branchId, 'no-rm');
    expect(await coordinator.commit({ xid })).toBe(GlobalStatus.CommitRetrying);
    expect(gateway.callsFor(xid)).toHaveLength(1);

    // team-b serves a resource of the same name: nothing happens for team-a's branch.
    coordinator.driver.rmConnected('team-b', ['debit']);
    // team-a serving another resource: nothing either.
    coordinator.driver.rmConnected('team-a', ['credit']);
    await clock.advance(10);
    expect(gateway.callsFor(xid)).toHaveLength(1);

    coordinator.driver.rmConnected('team-a', ['credit', 'debit']);
    await clock.advance(10);
    expect(gateway.callsFor(xid)).toHaveLength(2);
    expect(await coordinator.getStatus({ xid })).toBe(GlobalStatus.Committed);
    expect(coordinator.driver.rmWaitsOf(xid)).toEqual([]);
  });

  it('a rollback waits the same way (Saga compensation), and an answer from the RM ends the wait', async () => {
    const { world } = loggedWorld();
    const { coordinator, gateway, clock } = world;
    const xid = await begin(world);
    const { branchId } = await coordinator.registerBranch({
      xid,
      branchType: 'SAGA',
      resourceId: 'ship',
      clientId: 'team-a-rm-1',
      applicationId: 'team-a',
    });
    gateway.script(branchId, 'no-rm', BranchStatus.PhaseTwo_RollbackFailed_Retryable);
    expect(await coordinator.rollback({ xid })).toBe(GlobalStatus.RollbackRetrying);
    expect(coordinator.driver.rmWaitsOf(xid).map((w) => w.resourceId)).toEqual(['ship']);
    await clock.advance(1_000);
    // The RM answered (a failure of its own): no longer waiting for an RM.
    expect(coordinator.driver.rmWaitsOf(xid)).toEqual([]);
    await clock.advance(2_000);
    expect(await coordinator.getStatus({ xid })).toBe(GlobalStatus.Rollbacked);
  });

  it('an operator stopping the retries, or losing leadership, clears the wait', async () => {
    const { world } = loggedWorld();
    const { coordinator, gateway } = world;
    const xid = await begin(world);
    const branchId = await tccBranch(world, xid, 'team-a');
    gateway.script(branchId, 'no-rm');
    await coordinator.commit({ xid });
    expect(coordinator.driver.rmWaitCount()).toBe(1);
    await coordinator.stopRetry({ xid });
    expect(coordinator.driver.rmWaitCount()).toBe(0);

    const other = await begin(world);
    const otherBranch = await tccBranch(world, other, 'team-c');
    gateway.script(otherBranch, 'no-rm');
    await coordinator.commit({ xid: other });
    expect(coordinator.driver.rmWaitCount()).toBe(1);
    coordinator.driver.stop();
    expect(coordinator.driver.rmWaitCount()).toBe(0);
  });
});
