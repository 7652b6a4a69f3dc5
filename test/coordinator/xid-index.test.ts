/**
 * The ordered index of live xids (xid-index.ts) against a model (a sorted array): random adds
 * and deletes across chunk splits and emptied chunks, pages after any cursor (held or not).
 */
import { describe, expect, it } from 'vitest';
import { XidIndex } from '../../src/coordinator/xid-index.ts';

/** A deterministic generator (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('XidIndex', () => {
  it('holds what a sorted array holds, pages included, through adds and deletes', () => {
    const random = rng(19);
    const index = new XidIndex();
    const model = new Set<string>();
    const xid = () => `10.0.0.${Math.floor(random() * 3)}:8091:${Math.floor(random() * 5_000)}`;
    for (let step = 0; step < 12_000; step++) {
      const x = xid();
      // Grow to ~2,500 (several chunk splits), then shrink (chunks emptied and dropped).
      const adding = step < 6_000 ? random() < 0.8 : random() < 0.2;
      if (adding && !model.has(x)) {
        index.add(x);
        model.add(x);
      } else expect(index.delete(x)).toBe(model.delete(x));
      if (step % 500 === 0) {
        index.check((x) => model.has(x));
        const sorted = [...model].sort();
        expect(index.size).toBe(sorted.length);
        expect(index.all()).toEqual(sorted);
        for (const after of [null, xid(), sorted[Math.floor(random() * sorted.length)] ?? null]) {
          const from = after === null ? 0 : sorted.findIndex((s) => s > after);
          const expected = from < 0 ? [] : sorted.slice(from, from + 37);
          expect(index.page(after, 37)).toEqual(expected);
        }
      }
    }
    expect(XidIndex.of(model).all()).toEqual([...model].sort());
  });

  it('refuses an xid twice', () => {
    const index = new XidIndex();
    index.add('a');
    expect(() => index.add('a')).toThrow(/twice/);
    expect(() => XidIndex.of(['b', 'a', 'b'])).toThrow(/twice/);
  });
});
