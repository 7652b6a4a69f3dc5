/**
 * Helpers for scripted scenario tests on the simulated world (real driver + real core
 * behind fake disk, network and clock).
 */
import type { NodeId } from '../../src/shared/ids.ts';
import { Prng } from '../support/prng.ts';
import {
  DEFAULT_SETTINGS,
  World,
  type SimNode,
  type SimSettings,
  type WorldOptions,
} from '../sim/world.ts';
import type { SimApplyResult } from '../sim/state-machine.ts';

export async function bootWorld(
  settings: Partial<SimSettings> = {},
  seed = 1,
  extra: Partial<WorldOptions> = {},
): Promise<World> {
  const w = new World({
    settings: { ...DEFAULT_SETTINGS, ...settings },
    prng: new Prng(seed),
    traceSize: 200,
    ...extra,
  });
  w.recorded = [];
  await w.act(() => w.boot());
  return w;
}

/** Runs rounds (tick every live node, deliver and sync everything) until `cond` holds. */
export async function until(
  w: World,
  cond: () => boolean,
  what: string,
  maxRounds = 400,
): Promise<number> {
  for (let r = 0; r < maxRounds; r++) {
    if (cond()) return r;
    assertSafe(w);
    await w.round();
  }
  if (cond()) return maxRounds;
  throw new Error(`not reached within ${maxRounds} rounds: ${what}\n${w.trace.tail().join('\n')}`);
}

export async function electedLeader(w: World): Promise<SimNode> {
  await until(w, () => w.leader() !== null, 'a leader');
  return w.leader()!;
}

/** Proposes on `id` and runs rounds until the client has an answer. */
export async function proposeAndWait(
  w: World,
  id: NodeId,
  key = 'k',
  value?: string,
): Promise<{ ok: true; result: SimApplyResult } | { ok: false; error: Error }> {
  const seq = w.propose(id, key, value);
  await w.act(() => {});
  await until(w, () => w.outcomes.has(seq), `an answer to proposal ${seq}`);
  return w.outcomes.get(seq)!;
}

export function assertSafe(w: World): void {
  const v = w.checker.violation;
  if (v)
    throw new Error(
      `invariant violated: [${v.invariant}] ${v.message}\n${w.trace.tail().join('\n')}`,
    );
}

export function status(w: World, id: NodeId) {
  const d = w.node(id).driver;
  if (!d) throw new Error(`${id} is down`);
  return d.status();
}
