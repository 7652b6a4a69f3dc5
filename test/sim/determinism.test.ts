/**
 * A run is a pure function of its seed: same seed, same trace, same statistics. Without
 * this, a printed seed would not replay the failure it came from.
 */
import { describe, expect, it } from 'vitest';
import { Prng } from '../support/prng.ts';
import { chooseSettings, runSimulation } from './runner.ts';

describe('determinism', () => {
  it('the same seed replays the same run, event for event', async () => {
    for (const seed of [7, 123456789]) {
      const a = await runSimulation({ seed, steps: 1500, traceSize: 400 });
      const b = await runSimulation({ seed, steps: 1500, traceSize: 400 });
      expect(b.trace).toEqual(a.trace);
      expect(b.stats).toEqual(a.stats);
      expect(b.steps).toBe(a.steps);
      expect(b.violation).toEqual(a.violation);
    }
  });

  it('different seeds choose different settings and runs', async () => {
    const a = await runSimulation({ seed: 1, steps: 300 });
    const b = await runSimulation({ seed: 2, steps: 300 });
    expect(b.trace).not.toEqual(a.trace);
  });

  it('--nodes with the value the seed chose replays the same run', async () => {
    const chosen = chooseSettings(new Prng(42), { seed: 42, steps: 0 }).settings.nodes;
    const a = await runSimulation({ seed: 42, steps: 800 });
    const b = await runSimulation({ seed: 42, steps: 800, nodes: chosen });
    expect(b.trace).toEqual(a.trace);
  });

  it('the PRNG is reproducible and roughly uniform', () => {
    const x = new Prng(99);
    const y = new Prng(99);
    const buckets = new Array<number>(10).fill(0);
    for (let i = 0; i < 10_000; i++) {
      const v = x.float();
      expect(v).toBe(y.float());
      expect(v).toBeGreaterThanOrEqual(0);
      expect(v).toBeLessThan(1);
      buckets[Math.floor(v * 10)]!++;
    }
    for (const n of buckets) expect(n).toBeGreaterThan(850);
    expect(new Prng(1).nextU32()).not.toBe(new Prng(2).nextU32());
  });
});
