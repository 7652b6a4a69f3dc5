/**
 * The one seeded PRNG of the simulator (test/sim) and the chaos suite (chaos/):
 * xoshiro128** seeded through splitmix32, so one 32-bit seed gives a well-mixed state. ONE
 * seed drives a whole run, and every random choice comes from it or from streams forked
 * off it:
 *
 *  - `fork(label)`: an independent stream named by a label (same seed + same label → same
 *    numbers), so adding a consumer does not shift the numbers another one sees (chaos: the
 *    nemesis schedule, each client's workload mix and jitter);
 *  - `fork()`: a stream seeded by the next draw of this one (the simulator: each node's
 *    election randomness, in node order).
 */
export class Prng {
  /** The seed this stream was made from (forks derive from it, not from the state). */
  readonly seed: number;
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    this.seed = seed >>> 0;
    let s = this.seed;
    const next = () => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1;
  }

  /** Uniform 32-bit unsigned integer. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.b << 9) >>> 0;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    this.a >>>= 0;
    this.b >>>= 0;
    this.c >>>= 0;
    return result;
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.nextU32() / 4294967296;
  }

  /** Uniform integer in [lo, hi] (inclusive). */
  int(lo: number, hi: number): number {
    if (hi < lo) throw new RangeError(`empty range [${lo}, ${hi}]`);
    return lo + Math.floor(this.float() * (hi - lo + 1));
  }

  chance(p: number): boolean {
    return this.float() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('pick from an empty list');
    return items[this.int(0, items.length - 1)]!;
  }

  /** Picks a key by weight; weights ≤ 0 are never picked. */
  weighted<K extends string>(weights: Readonly<Record<K, number>>): K {
    let total = 0;
    for (const k in weights) if (weights[k] > 0) total += weights[k];
    if (total <= 0) throw new RangeError('all weights are zero');
    let x = this.float() * total;
    let last: K | undefined;
    for (const k in weights) {
      const w = weights[k];
      if (w <= 0) continue;
      last = k;
      if (x < w) return k;
      x -= w;
    }
    return last as K;
  }

  /** A new array, Fisher–Yates shuffled. */
  shuffle<T>(items: readonly T[]): T[] {
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
      const j = this.int(0, i);
      [out[i], out[j]] = [out[j]!, out[i]!];
    }
    return out;
  }

  /**
   * An independent stream: named `label` (same seed + same label → same numbers, whatever
   * was drawn before), or without a label seeded by the next draw of this stream.
   */
  fork(label?: string): Prng {
    return new Prng(label === undefined ? this.nextU32() : forkSeed(this.seed, label));
  }
}

/** A seed derived from `seed` and a label (FNV-1a over the label, mixed with the seed). */
export function forkSeed(seed: number, label: string): number {
  let h = (0x811c9dc5 ^ (seed >>> 0)) >>> 0;
  for (let i = 0; i < label.length; i++) {
    h ^= label.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  // One splitmix round so nearby labels do not give nearby seeds.
  h = (h + 0x9e3779b9) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
