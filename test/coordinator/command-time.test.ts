/**
 * Issue 13 item 9: command time never goes backwards across leaders. Three nodes over one
 * log (MemoryStores sharing one state machine), each with its own skewed clock; leaders
 * change at random while TMs begin, register, commit and roll back and the timeout job
 * runs. Every accepted command's time must be at least every earlier one's, and no
 * transaction may be timed out before timeoutMs of command time since it began.
 */
import type { Xid } from '../../src/shared/ids.ts';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Command } from '../../src/coordinator/commands.ts';
import { Coordinator } from '../../src/coordinator/coordinator.ts';
import { MemoryStore } from '../../src/store/memory/index.ts';
import { CoordinatorStateMachine } from '../../src/coordinator/state-machine.ts';
import { silentLogger } from '../../src/shared/logger.ts';
import { FakeClock, FakeGateway, SequentialIds, TEST_PHASE_TWO, flush } from './fakes.ts';
import { runTmOp, type Op } from './tm-ops.ts';

function timeOf(c: Command): number | null {
  if (c.kind === 'Begin') return c.beginTime;
  return 'at' in c ? c.at : null;
}

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ t: fc.constant('begin' as const), timeoutMs: fc.integer({ min: 500, max: 5_000 }) }),
  fc.record({ t: fc.constant('register' as const), x: fc.nat(20) }),
  fc.record({ t: fc.constant('commit' as const), x: fc.nat(20) }),
  fc.record({ t: fc.constant('rollback' as const), x: fc.nat(20) }),
  fc.record({ t: fc.constant('elect' as const), node: fc.nat(2) }),
  fc.record({ t: fc.constant('tick' as const), ms: fc.integer({ min: 1, max: 2_000 }) }),
);

async function run(skews: number[], ops: Op[]): Promise<string[]> {
  const machine = new CoordinatorStateMachine();
  const base = 1_700_000_000_000;
  const violations: string[] = [];
  let latest = 0;
  const began = new Map<string, { at: number; timeoutMs: number }>();
  const nodes = skews.map((skew, i) => {
    const store = new MemoryStore({ machine, leader: i === 0, term: 1 });
    const clock = new FakeClock(base + skew);
    store.onApply((command, outcome) => {
      const at = timeOf(command);
      if (!outcome.ok || at === null) return;
      if (at < latest)
        violations.push(`${command.kind} by node ${i} at ${at} after command time ${latest}`);
      latest = Math.max(latest, at);
      if (command.kind === 'Begin') began.set(command.xid, { at, timeoutMs: command.timeoutMs });
      if (command.kind === 'RollbackGlobal' && command.timeout) {
        const b = began.get(command.xid)!;
        if (at < b.at + b.timeoutMs)
          violations.push(`${command.xid} timed out ${b.at + b.timeoutMs - at} ms early`);
      }
    });
    const coordinator = new Coordinator({
      store,
      gateway: new FakeGateway(),
      ids: new SequentialIds(1_000 + i * 100_000),
      clock,
      logger: silentLogger(),
      address: { host: '10.0.0.1', port: 8091 },
      phaseTwo: TEST_PHASE_TWO,
    });
    coordinator.start();
    return { store, clock, coordinator };
  });
  let leader = 0;
  let term = 1;
  const xids: Xid[] = [];
  for (const op of ops) {
    switch (op.t) {
      case 'elect':
        if (op.node !== leader) {
          term += 1;
          nodes[leader]!.store.setLeadership(false, term);
          for (const n of nodes) if (n !== nodes[op.node]) n.store.setLeadership(false, term);
          leader = op.node;
          nodes[leader]!.store.setLeadership(true, term);
          await flush();
        }
        break;
      case 'tick':
        for (const n of nodes) await n.clock.advance(op.ms);
        break;
      default:
        await runTmOp(nodes[leader]!.coordinator, xids, op);
    }
  }
  for (const n of nodes) n.coordinator.stop();
  return violations;
}

describe('command time across leaders', () => {
  it('never goes backwards, whatever each node clock says (per-node skew up to ±10 s)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: -10_000, max: 10_000 }), { minLength: 3, maxLength: 3 }),
        fc.array(opArb, { minLength: 5, maxLength: 60 }),
        async (skews, ops) => {
          expect(await run(skews, ops)).toEqual([]);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('a new leader whose clock lags stamps its commands no earlier than the last applied one', async () => {
    const violations = await run(
      [0, -5_000, 0],
      [
        { t: 'begin', timeoutMs: 5_000 },
        { t: 'elect', node: 1 },
        { t: 'commit', x: 0 },
      ],
    );
    expect(violations).toEqual([]);
  });
});
