/**
 * A decision is final (issue 13 item 7): phase two keeps driving a decided transaction with
 * capped backoff however long its RMs fail; past the alarm time it is shown stuck (the
 * session's flag, the driver's count, one warn line) instead of given up, and an operator
 * can retry it now, stop it, or resume it (only the branches not yet done are told).
 */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { BranchStatus, GlobalStatus, isStuck } from '../../src/coordinator/types.ts';
import { begin, makeWorld, register, type World } from './fakes.ts';

const ALARM = { stuckAfterMs: 10_000, retryBaseMs: 1_000, retryMaxBackoffMs: 4_000 };

function worldWithLog(): { world: World; lines: { msg: string; level: number; xid?: string }[] } {
  const lines: { msg: string; level: number; xid?: string }[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split('\n')) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  const world = makeWorld({ phaseTwo: ALARM, logger: pino({ level: 'info' }, sink) });
  return { world, lines };
}

/**
 * Live sessions the coordinator shows stuck (what the concord_tc_global_stuck gauge counts):
 * the count kept as commands apply (what /metrics reads, no walk) is a walk's.
 */
const stuckCount = (world: World) => {
  const walked = world.machine.liveXids().filter((x) => isStuck(world.machine.getSession(x)!));
  expect(world.machine.liveStatusCounts().stuck).toBe(walked.length);
  world.machine.checkInvariants();
  return walked.length;
};

const stuckLines = (lines: { msg: string }[]) =>
  lines.filter((l) => l.msg.startsWith('phase two is stuck'));

describe('a decided transaction whose RM keeps failing', () => {
  it('is retried past the alarm time and shown stuck, never CommitFailed; the RM heals and it ends Committed', async () => {
    const { world, lines } = worldWithLog();
    const xid = await begin(world);
    const b = await register(world, xid, 'TCC', 'orders:1');
    world.gateway.script(
      b,
      ...Array<BranchStatus>(30).fill(BranchStatus.PhaseTwo_CommitFailed_Retryable),
    );
    const start = world.clock.now();
    expect(await world.coordinator.commit({ xid })).toBe(GlobalStatus.CommitRetrying);
    await world.clock.advance(9_000);
    let info = await world.coordinator.getSession({ xid });
    expect(info.live && info.stuck).toBe(false);
    expect(stuckCount(world)).toBe(0);

    await world.clock.advance(21_000);
    const session = world.machine.getSession(xid)!;
    expect(session.status).toBe(GlobalStatus.CommitRetrying);
    expect(session.retry.retryDeadline).toBe(start + 10_000);
    expect(isStuck(session)).toBe(true);
    info = await world.coordinator.getSession({ xid });
    expect(info.live && info.stuck).toBe(true);
    expect(stuckCount(world)).toBe(1);
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.CommitRetrying);
    // 1 + retries at +1, +3, +7, +10 (held at the alarm time), then every 4 s (the cap).
    const calls = world.gateway.callsFor(xid).length;
    expect(calls).toBeGreaterThanOrEqual(9);
    expect(world.machine.lockedRowCount()).toBe(1);
    expect(stuckLines(lines)).toHaveLength(1);
    expect(stuckLines(lines)[0]).toMatchObject({ level: 40, xid });

    // Still retried, at the capped backoff, long after.
    await world.clock.advance(40_000);
    expect(world.gateway.callsFor(xid).length).toBeGreaterThanOrEqual(calls + 9);
    expect(stuckLines(lines)).toHaveLength(1); // one line when it became stuck, not per retry

    // The RM heals: the next retry commits it.
    world.gateway.clearScript(b);
    await world.clock.advance(5_000);
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.Committed);
    expect(world.machine.lockedRowCount()).toBe(0);
    expect(stuckCount(world)).toBe(0);
  });

  it('a rollback is retried the same way: stuck, then Rollbacked once the RM heals', async () => {
    const world = makeWorld({ phaseTwo: ALARM });
    const xid = await begin(world);
    const b = await register(world, xid, 'TCC', 'orders:1');
    world.gateway.script(b, ...Array<'throw'>(20).fill('throw'));
    expect(await world.coordinator.rollback({ xid })).toBe(GlobalStatus.RollbackRetrying);
    await world.clock.advance(20_000);
    expect(world.machine.getSession(xid)!.status).toBe(GlobalStatus.RollbackRetrying);
    expect(isStuck(world.machine.getSession(xid)!)).toBe(true);
    world.gateway.clearScript(b);
    await world.clock.advance(5_000);
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.Rollbacked);
  });

  it('an unretryable answer still ends CommitFailed at once (the RM says it can never commit)', async () => {
    const world = makeWorld({ phaseTwo: ALARM });
    const xid = await begin(world);
    const b = await register(world, xid, 'TCC', 'orders:1');
    world.gateway.script(b, BranchStatus.PhaseTwo_CommitFailed_Unretryable);
    expect(await world.coordinator.commit({ xid })).toBe(GlobalStatus.CommitFailed);
    expect(isStuck(world.machine.getSession(xid)!)).toBe(false);
  });
});

describe('an operator and a stuck transaction', () => {
  async function stuckWithTwoBranches(): Promise<{
    world: World;
    xid: Awaited<ReturnType<typeof begin>>;
    first: string;
    second: string;
  }> {
    const world = makeWorld({ phaseTwo: ALARM });
    const xid = await begin(world);
    const first = await register(world, xid, 'TCC', 'a:1');
    const second = await register(world, xid, 'TCC', 'b:1');
    world.gateway.script(second, ...Array<'throw'>(1000).fill('throw'));
    expect(await world.coordinator.commit({ xid })).toBe(GlobalStatus.CommitRetrying);
    await world.clock.advance(15_000);
    expect(isStuck(world.machine.getSession(xid)!)).toBe(true);
    return { world, xid, first, second };
  }

  it('retry now runs a pass at once; resume drives only the branches not yet done and renews the alarm', async () => {
    const { world, xid, first, second } = await stuckWithTwoBranches();
    const before = world.gateway.callsFor(xid).length;
    expect(await world.coordinator.retryNow({ xid })).toBe(GlobalStatus.CommitRetrying);
    expect(world.gateway.callsFor(xid).length).toBe(before + 1);

    world.gateway.clearScript(second);
    world.gateway.script(second, 'throw'); // one more failure after the resume
    const resumedAt = world.clock.now();
    await world.coordinator.resumeRetry({ xid });
    await world.clock.advance(0);
    const session = world.machine.getSession(xid)!;
    expect(session.retry.retryDeadline).toBe(resumedAt + ALARM.stuckAfterMs);
    expect(isStuck(session)).toBe(false);
    await world.clock.advance(5_000);
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.Committed);
    // The first branch committed in the first pass and was never told again.
    expect(world.gateway.callsFor(xid).filter((c) => c.branchId === first)).toHaveLength(1);
    expect(world.gateway.callsFor(xid).filter((c) => c.branchId === second).length).toBe(
      before + 1 + 2 - 1,
    );
  });

  it('stop halts the retries (Stop*, no longer stuck); resume drives it home', async () => {
    const { world, xid, second } = await stuckWithTwoBranches();
    await world.coordinator.stopRetry({ xid });
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.StopCommitOrCommitRetry);
    const info = await world.coordinator.getSession({ xid });
    expect(info.live && info.stuck).toBe(false);
    expect(stuckCount(world)).toBe(0);
    const calls = world.gateway.callsFor(xid).length;
    await world.clock.advance(60_000);
    expect(world.gateway.callsFor(xid).length).toBe(calls);
    world.gateway.clearScript(second);
    await world.coordinator.resumeRetry({ xid });
    await world.clock.advance(0);
    expect(await world.coordinator.getStatus({ xid })).toBe(GlobalStatus.Committed);
  });
});
