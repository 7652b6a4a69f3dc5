/**
 * Prune (issue 19): an idle node lets go of finished records and remembered request results
 * once their retention has passed in command time, with no new transaction to prune them.
 */
import { describe, expect, it } from 'vitest';
import { decodeCommand, encodeCommand, type Command } from '../../src/coordinator/commands.ts';
import { DEDUP_RETENTION_MS, RECENTLY_FINISHED_TTL_MS } from '../../src/coordinator/limits.ts';
import { CoordinatorStateMachine } from '../../src/coordinator/state-machine.ts';
import { T0, applyOk, beginCmd } from './commands-fixtures.ts';
import { makeWorld } from './fakes.ts';

const equalBytes = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

describe('Prune', () => {
  it('forgets what the retention lets go at its command time, and nothing younger', () => {
    const machine = new CoordinatorStateMachine();
    const log: Command[] = [];
    const run = (c: Command) => {
      log.push(c);
      return applyOk(machine, c);
    };
    expect(machine.prunableAt()).toBe(Infinity);
    const { xid } = run(beginCmd(1, { requestId: 'r-1' })) as { xid: string };
    run({ kind: 'CommitGlobal', xid, at: T0 + 10, term: 1 }); // branchless: ends at once
    expect(machine.getFinished(xid)).toBeDefined();
    expect(machine.prunableAt()).toBe(T0 + DEDUP_RETENTION_MS);

    expect(run({ kind: 'Prune', at: T0 + DEDUP_RETENTION_MS - 1 })).toEqual({
      finished: 0,
      dedup: 0,
    });
    expect(run({ kind: 'Prune', at: T0 + DEDUP_RETENTION_MS })).toEqual({ finished: 0, dedup: 1 });
    expect(machine.getFinished(xid)).toBeDefined();
    expect(machine.prunableAt()).toBe(T0 + 10 + RECENTLY_FINISHED_TTL_MS);
    expect(run({ kind: 'Prune', at: T0 + 10 + RECENTLY_FINISHED_TTL_MS })).toEqual({
      finished: 1,
      dedup: 0,
    });
    expect(machine.getFinished(xid)).toBeUndefined();
    expect(machine.prunableAt()).toBe(Infinity);
    expect(machine.commandTime()).toBe(T0 + 10 + RECENTLY_FINISHED_TTL_MS);
    machine.checkInvariants();

    // A replica that applies the same log (through the codec) holds the same bytes.
    const replica = new CoordinatorStateMachine();
    for (const c of log) replica.apply(decodeCommand(encodeCommand(c)));
    expect(equalBytes(replica.snapshot(), machine.snapshot())).toBe(true);
  });

  it('refuses a Prune without a time', () => {
    const machine = new CoordinatorStateMachine();
    const outcome = machine.apply({ kind: 'Prune' } as unknown as Command);
    expect(outcome.ok).toBe(false);
    if (!outcome.ok) expect(outcome.rejection.code).toBe('BAD_REQUEST');
  });

  it('an idle leader prunes with no transaction coming: the finished record and request ids go', async () => {
    const world = makeWorld();
    const { coordinator, clock, machine } = world;
    const { xid } = await coordinator.begin({
      applicationId: 'app',
      transactionServiceGroup: 'group',
      name: 'tx',
      timeoutMs: 60_000,
      requestId: 'req-1',
    });
    await coordinator.commit({ xid });
    expect(machine.getFinished(xid)).toBeDefined();
    expect(machine.prunableAt()).toBeLessThan(Infinity);
    const applied: string[] = [];
    world.store.onApply((command, outcome) => {
      if (outcome.ok) applied.push(command.kind);
    });
    // Nothing but time: the sweeps (every 10 s) propose Prune once something is due.
    await clock.advance(RECENTLY_FINISHED_TTL_MS + 20_000);
    expect(machine.getFinished(xid)).toBeUndefined();
    expect(machine.prunableAt()).toBe(Infinity);
    // One Prune per retention that passed (request id, then finished record), not one per sweep.
    expect(applied).toEqual(['Prune', 'Prune']);
    coordinator.stop();
  });
});
