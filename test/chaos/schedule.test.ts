/** The nemesis schedule: a pure function of the seed, touching every enabled nemesis. */
import { describe, expect, it } from 'vitest';
import {
  NEMESIS_KINDS,
  describeStep,
  parseNemesisList,
  planSchedule,
  resolveTarget,
} from '../../chaos/schedule.ts';
import { Prng } from '../support/prng.ts';

const settings = {
  seed: 42,
  durationMs: 60_000,
  kinds: NEMESIS_KINDS,
  clients: 4,
  electionTimeoutMaxMs: 1_000,
};

describe('nemesis schedule', () => {
  it('is the same for the same seed and differs for another', () => {
    expect(planSchedule(settings)).toEqual(planSchedule(settings));
    expect(planSchedule({ ...settings, seed: 43 })).not.toEqual(planSchedule(settings));
  });

  it('touches every enabled nemesis once first, even when the duration is short', () => {
    const steps = planSchedule({ ...settings, durationMs: 1 });
    expect(steps.map((s) => s.kind).sort()).toEqual([...NEMESIS_KINDS].sort());
    const only = planSchedule({ ...settings, kinds: ['kill', 'pause'], durationMs: 60_000 });
    expect(new Set(only.map((s) => s.kind))).toEqual(new Set(['kill', 'pause']));
    expect(only.length).toBeGreaterThan(2);
  });

  it('pauses a node for longer than the election timeout', () => {
    for (const s of planSchedule({ ...settings, kinds: ['pause'], durationMs: 120_000 })) {
      if (s.kind === 'pause') expect(s.pauseMs).toBeGreaterThan(settings.electionTimeoutMaxMs);
    }
  });

  it('parses nemesis lists and refuses unknown names', () => {
    expect(parseNemesisList('kill,pause')).toEqual(['kill', 'pause']);
    expect(parseNemesisList('all')).toEqual([...NEMESIS_KINDS]);
    expect(parseNemesisList('none')).toEqual([]);
    expect(() => parseNemesisList('kill,flood')).toThrow(/unknown nemesis "flood"/);
  });

  it('resolves abstract targets deterministically', () => {
    const nodes = { leader: 'node2', members: ['node3', 'node1', 'node2'] };
    expect(resolveTarget('leader', 7, nodes)).toBe('node2');
    expect(resolveTarget('follower', 0, nodes)).toBe('node1');
    expect(resolveTarget('follower', 1, nodes)).toBe('node3');
    expect(resolveTarget('random', 4, nodes)).toBe('node2');
    expect(resolveTarget('follower', 0, { leader: 'node1', members: ['node1'] })).toBeNull();
  });

  it('describes each step on one line', () => {
    for (const s of planSchedule(settings)) expect(describeStep(s)).toMatch(/^#\s*\d+ .*quiet$/);
  });
});

describe('prng', () => {
  it('forks independent, reproducible streams by name', () => {
    const a = new Prng(7).fork('client-1');
    const b = new Prng(7).fork('client-1');
    const c = new Prng(7).fork('client-2');
    const draw = (p: Prng) => Array.from({ length: 5 }, () => p.nextU32());
    expect(draw(a)).toEqual(draw(b));
    expect(draw(new Prng(7).fork('client-1'))).not.toEqual(draw(c));
  });
});
