/**
 * Property tests: fast-check drives fault schedules through the simulator (real driver,
 * real core, fake disk/network/clock) and every invariant is checked after every step.
 *
 *  1. seed-driven: fast-check picks seeds and cluster sizes; a failure prints the
 *     `npm run sim -- --seed ...` line that replays it exactly.
 *  2. schedule-driven: fast-check builds the fault schedule itself (deliver, drop,
 *     duplicate, tick, sync, crash, restart, partition, disk failure, ...), so a failing
 *     schedule shrinks to a minimal one, printed as the counterexample.
 */
import fc from 'fast-check';
import { describe, it } from 'vitest';
import type { NodeId } from '../../src/raft/core/types.ts';
import { Prng } from '../support/prng.ts';
import { recoveryPhase, runSimulation } from './runner.ts';
import { DEFAULT_SETTINGS, World } from './world.ts';

const SEED_RUNS = 20;
const SEED_STEPS = 800;
const SCHEDULE_RUNS = 50;

describe('simulation properties', () => {
  it('no invariant breaks under random fault schedules (seed-driven)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        fc.constantFrom(1, 3, 5),
        async (seed, nodes) => {
          const r = await runSimulation({ seed, steps: SEED_STEPS, nodes });
          if (r.violation) {
            throw new Error(
              `[${r.violation.invariant}] ${r.violation.message}\nreplay: npm run sim -- --seed ${seed} --steps ${SEED_STEPS} --nodes ${nodes}\n${r.trace.slice(-20).join('\n')}`,
            );
          }
        },
      ),
      { numRuns: SEED_RUNS },
    );
  });

  type Action =
    | { k: 'deliver'; link: number; pos: number }
    | { k: 'drop' | 'dup'; link: number }
    | {
        k:
          | 'tick'
          | 'sync'
          | 'propose'
          | 'read'
          | 'crash'
          | 'restart'
          | 'isolate'
          | 'diskFail'
          | 'snapshot'
          | 'campaign';
        node: number;
      }
    | { k: 'oneWay'; from: number; to: number }
    | { k: 'transfer'; to: number }
    | { k: 'heal' };

  const node = fc.nat({ max: 4 });
  const action: fc.Arbitrary<Action> = fc.oneof(
    {
      weight: 12,
      arbitrary: fc.record({
        k: fc.constant('deliver' as const),
        link: fc.nat(),
        pos: fc.nat({ max: 3 }),
      }),
    },
    { weight: 6, arbitrary: fc.record({ k: fc.constant('tick' as const), node }) },
    { weight: 6, arbitrary: fc.record({ k: fc.constant('sync' as const), node }) },
    { weight: 3, arbitrary: fc.record({ k: fc.constant('propose' as const), node }) },
    {
      weight: 1,
      arbitrary: fc.record({ k: fc.constantFrom('drop' as const, 'dup' as const), link: fc.nat() }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        k: fc.constantFrom(
          'read' as const,
          'crash' as const,
          'restart' as const,
          'isolate' as const,
          'diskFail' as const,
          'snapshot' as const,
          'campaign' as const,
        ),
        node,
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({ k: fc.constant('oneWay' as const), from: node, to: node }),
    },
    { weight: 1, arbitrary: fc.record({ k: fc.constant('transfer' as const), to: node }) },
    { weight: 1, arbitrary: fc.constant({ k: 'heal' as const }) },
  );

  async function play(
    seed: number,
    nodes: number,
    schedule: Action[],
  ): Promise<{ invariant: string; message: string; diagnosis: string | null } | null> {
    const w = new World({
      settings: {
        ...DEFAULT_SETTINGS,
        nodes,
        spares: 0,
        electionTicks: 5,
        heartbeatTicks: 1,
        snapshotEveryEntries: 6,
        maxInflightMsgs: 2,
      },
      prng: new Prng(seed),
    });
    await w.act(() => w.boot());
    const ids = w.ids;
    const pick = (i: number): NodeId => ids[i % ids.length]!;
    for (const a of schedule) {
      if (w.checker.violation) break;
      await w.act(async () => {
        switch (a.k) {
          case 'deliver':
          case 'drop':
          case 'dup': {
            const busy = w.net.busyLinks();
            if (busy.length === 0) return;
            const link = busy[a.link % busy.length]!;
            const pos = a.k === 'deliver' ? a.pos % w.net.queueLength(link) : 0;
            if (a.k === 'drop') w.drop(link, pos);
            else w.deliver(link, pos, a.k === 'dup');
            return;
          }
          case 'tick':
            return w.tick(pick(a.node));
          case 'sync':
            return w.sync(pick(a.node));
          case 'propose':
            w.propose(pick(a.node));
            return;
          case 'read':
            void w.read(pick(a.node));
            return;
          case 'crash':
            return w.crash(pick(a.node));
          case 'restart':
            return w.startNode(pick(a.node));
          case 'isolate':
            return w.isolate([pick(a.node)]);
          case 'oneWay':
            if (pick(a.from) !== pick(a.to)) w.block([[pick(a.from), pick(a.to)]]);
            return;
          case 'heal':
            return w.heal();
          case 'diskFail':
            return w.failNextWrite(pick(a.node));
          case 'snapshot':
            return w.snapshotNow(pick(a.node));
          case 'campaign':
            return w.campaign(pick(a.node));
          case 'transfer': {
            const l = w.leader();
            if (l) w.transfer(l.id, pick(a.to));
            return;
          }
        }
      });
    }
    let diagnosis: string | null = null;
    if (!w.checker.violation) diagnosis = (await recoveryPhase(w)).diagnosis;
    const v = w.checker.violation;
    return v ? { ...v, diagnosis } : null;
  }

  it('no invariant breaks under generated fault schedules (shrinks to a minimal schedule)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        fc.constantFrom(1, 3, 5),
        fc.array(action, { minLength: 1, maxLength: 400 }),
        async (seed, nodes, schedule) => {
          const v = await play(seed, nodes, schedule);
          if (v) throw new Error(`[${v.invariant}] ${v.message}`);
        },
      ),
      { numRuns: SCHEDULE_RUNS },
    );
  });
});
