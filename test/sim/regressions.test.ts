/**
 * Seeds that once broke an invariant, replayed exactly (the simulator is deterministic).
 * Each names the bug it found; a regression shows up as the same violation again.
 */
import { describe, expect, it } from 'vitest';
import { runSimulation } from './runner.ts';

const REGRESSIONS: Array<{ seed: number; nodes: number; bug: string }> = [
  { seed: 2, nodes: 3, bug: 'a full in-flight window of lost appends stalled a follower forever' },
  {
    seed: 1459845513,
    nodes: 5,
    bug: 'a full in-flight window of lost appends stalled a follower forever (5 nodes)',
  },
  {
    seed: 1450411913,
    nodes: 3,
    bug: 'an append response of an old term was sent after a new leader truncated what it acknowledged',
  },
  {
    seed: 698889132,
    nodes: 1,
    bug: 'a single voter counted its unsynced tail toward the commit index its early appends carried, so a crash lost an entry reported committed',
  },
];

describe('simulator regressions', () => {
  for (const r of REGRESSIONS) {
    it(`seed ${r.seed}: ${r.bug}`, async () => {
      const result = await runSimulation({ seed: r.seed, steps: 2000, nodes: r.nodes });
      expect(
        result.violation,
        result.violation ? `[${result.violation.invariant}] ${result.violation.message}` : '',
      ).toBeNull();
    });
  }
});
