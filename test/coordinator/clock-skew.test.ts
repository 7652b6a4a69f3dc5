/**
 * Issue 13 item 9, second half: windows do not collapse on a clock jump. Three nodes over
 * one log (MemoryStores sharing one state machine), each with its own wall clock skewed by
 * up to an hour either way but one shared real (monotonic) time; leaders change at random
 * while TMs begin, register, commit and roll back, RMs keep failing, and the timeout job
 * and the retries run. Measured in REAL time, no transaction may be timed out, and none
 * marked stuck, earlier than its window allows: command time runs at most
 * COMMAND_TIME_MAX_RATE times as fast as real time, plus COMMAND_TIME_SLACK_MS per
 * leader change. Without the bound a leader an hour ahead times everything out at once.
 */
import type { Xid } from '../../src/shared/ids.ts';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as commandClock from '../../src/coordinator/command-clock.ts';
import { Coordinator } from '../../src/coordinator/coordinator.ts';
import { MemoryStore } from '../../src/store/memory/index.ts';
import { CoordinatorStateMachine } from '../../src/coordinator/state-machine.ts';
import { silentLogger } from '../../src/shared/logger.ts';
import { FakeClock, FakeGateway, SequentialIds, flush } from './fakes.ts';
import { runTmOp, type Op } from './tm-ops.ts';

const HOUR = 3_600_000;
const PHASE_TWO = {
  stuckAfterMs: 4_000,
  retryBaseMs: 500,
  retryMaxBackoffMs: 1_000,
  branchCallTimeoutMs: 2_000,
  sweepIntervalMs: 3_000,
};

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    arbitrary: fc.record({
      t: fc.constant('begin' as const),
      timeoutMs: fc.integer({ min: 2_000, max: 20_000 }),
    }),
    weight: 2,
  },
  { arbitrary: fc.record({ t: fc.constant('register' as const), x: fc.nat(20) }), weight: 2 },
  { arbitrary: fc.record({ t: fc.constant('commit' as const), x: fc.nat(20) }), weight: 2 },
  { arbitrary: fc.record({ t: fc.constant('rollback' as const), x: fc.nat(20) }), weight: 1 },
  { arbitrary: fc.record({ t: fc.constant('elect' as const), node: fc.nat(2) }), weight: 1 },
  {
    arbitrary: fc.record({
      t: fc.constant('tick' as const),
      ms: fc.integer({ min: 1, max: 3_000 }),
    }),
    weight: 4,
  },
);

/**
 * The bound this test holds command time to: at most 10 % faster than real time, plus 1 s
 * per leader change (docs/time.md). The clock's constants may only be tighter.
 */
const MAX_RATE = 1.1;
const SLACK_MS = 1_000;

/**
 * The earliest real time a window of `ms` command time may close, with `changes` leader changes in
 * it.
 */
function earliest(ms: number, changes: number): number {
  return (ms - SLACK_MS * (changes + 1)) / MAX_RATE;
}

/** What the runs exercised, so the property cannot pass by never timing out or getting stuck. */
const seen = { timeouts: 0, stuck: 0 };

async function run(skews: number[], ops: Op[]): Promise<string[]> {
  const machine = new CoordinatorStateMachine();
  const base = 1_700_000_000_000;
  const violations: string[] = [];
  let real = 0;
  let elections = 0;
  const began = new Map<string, { real: number; elections: number; timeoutMs: number }>();
  const firstFailure = new Map<string, { real: number; elections: number }>();
  const stuck = new Set<string>();
  const nodes = skews.map((skew, i) => {
    const store = new MemoryStore({ machine, leader: i === 0, term: 1 });
    const clock = new FakeClock(base + skew);
    const gateway = new FakeGateway();
    store.onApply((command, outcome) => {
      if (!outcome.ok || command.kind === 'Prune') return;
      const xid = command.xid;
      if (command.kind === 'Begin')
        began.set(xid, { real, elections, timeoutMs: command.timeoutMs });
      if (command.kind === 'RollbackGlobal' && command.timeout) {
        seen.timeouts += 1;
        const b = began.get(xid)!;
        const open = real - b.real;
        if (open < earliest(b.timeoutMs, elections - b.elections))
          violations.push(
            `${xid} (timeout ${b.timeoutMs} ms) timed out after ${open} ms of real time`,
          );
      }
      if (command.kind === 'RetryScheduled') {
        if (!firstFailure.has(xid)) firstFailure.set(xid, { real, elections });
        if (command.nextRetryAt > command.retryDeadline && !stuck.has(xid)) {
          stuck.add(xid);
          seen.stuck += 1;
          const f = firstFailure.get(xid)!;
          const failing = real - f.real;
          if (failing < earliest(PHASE_TWO.stuckAfterMs, elections - f.elections))
            violations.push(`${xid} marked stuck after ${failing} ms of real time`);
        }
      }
    });
    const coordinator = new Coordinator({
      store,
      gateway,
      ids: new SequentialIds(1_000 + i * 100_000),
      clock,
      logger: silentLogger(),
      address: { host: '10.0.0.1', port: 8091 },
      phaseTwo: PHASE_TWO,
    });
    coordinator.start();
    return { store, clock, gateway, coordinator };
  });
  let leader = 0;
  let term = 1;
  const xids: Xid[] = [];
  for (const op of ops) {
    switch (op.t) {
      case 'elect':
        if (op.node !== leader) {
          term += 1;
          elections += 1;
          for (const n of nodes) n.store.setLeadership(false, term);
          leader = op.node;
          nodes[leader]!.store.setLeadership(true, term);
          await flush();
        }
        break;
      case 'tick': {
        // Real time passes on every node alike (each clock's monotonic time moves by `ms`).
        real += op.ms;
        for (const n of nodes) await n.clock.advance(op.ms);
        break;
      }
      default: {
        const branchId = await runTmOp(nodes[leader]!.coordinator, xids, op);
        // Every RM of a registered branch keeps failing: its phase two is retried until stuck.
        if (branchId)
          for (const n of nodes) n.gateway.script(branchId, ...Array<'throw'>(500).fill('throw'));
      }
    }
  }
  for (const n of nodes) n.coordinator.stop();
  return violations;
}

describe('a leader whose wall clock is far off', () => {
  it('command time is bounded no looser than this test assumes', () => {
    expect(commandClock.COMMAND_TIME_MAX_RATE).toBeLessThanOrEqual(MAX_RATE);
    expect(commandClock.COMMAND_TIME_SLACK_MS).toBeLessThanOrEqual(SLACK_MS);
  });

  it('causes no early timeout and no early stuck mark (per-node skew up to ±1 h)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: -HOUR, max: HOUR }), { minLength: 3, maxLength: 3 }),
        fc.array(opArb, { minLength: 5, maxLength: 60 }),
        async (skews, ops) => {
          expect(await run(skews, ops)).toEqual([]);
        },
      ),
      { numRuns: 120, seed: Number(process.env.CONCORD_PROPERTY_SEED ?? 1313) },
    );
    expect(seen.timeouts).toBeGreaterThan(5);
    expect(seen.stuck).toBeGreaterThan(3);
  });

  it('a new leader an hour ahead does not time out an open transaction', async () => {
    const violations = await run(
      [0, HOUR, 0],
      [
        { t: 'begin', timeoutMs: 10_000 },
        { t: 'tick', ms: 1_000 },
        { t: 'elect', node: 1 },
        { t: 'tick', ms: 1_000 },
        { t: 'register', x: 0 },
        { t: 'tick', ms: 3_000 },
      ],
    );
    expect(violations).toEqual([]);
  });

  it('a leader an hour ahead does not mark a failing transaction stuck at once', async () => {
    const violations = await run(
      [0, HOUR, 0],
      [
        { t: 'begin', timeoutMs: 20_000 },
        { t: 'register', x: 0 },
        { t: 'commit', x: 0 },
        { t: 'tick', ms: 1_000 },
        { t: 'elect', node: 1 },
        { t: 'tick', ms: 2_000 },
        { t: 'tick', ms: 2_000 },
      ],
    );
    expect(violations).toEqual([]);
  });
});
