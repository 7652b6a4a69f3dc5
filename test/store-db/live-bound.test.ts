/**
 * The live-session cap's estimate (src/store/db/live-bound.ts): a count at most
 * DB_LIVE_COUNT_MAX_AGE_MS old plus this node's admissions, exact from 90 % of the cap.
 * Pure logic: the count is a function and the clock a number.
 */
import { describe, expect, it } from 'vitest';
import { MAX_LIVE_SESSIONS } from '../../src/coordinator/limits.ts';
import { LiveSessionBound } from '../../src/store/db/live-bound.ts';
import { DB_LIVE_COUNT_EXACT_FROM, DB_LIVE_COUNT_MAX_AGE_MS } from '../../src/store/db/limits.ts';

const EXACT_FROM = MAX_LIVE_SESSIONS * DB_LIVE_COUNT_EXACT_FROM;

function world(live: number) {
  const w = { live, now: 1_000_000, counts: 0 };
  const bound = new LiveSessionBound(
    async () => {
      w.counts += 1;
      return w.live;
    },
    () => w.now,
  );
  return { w, bound };
}

describe('the live-session estimate', () => {
  it('counts once per interval, shared by concurrent Begins', async () => {
    const { w, bound } = world(10);
    expect(await Promise.all([bound.mayBegin(), bound.mayBegin(), bound.mayBegin()])).toEqual([
      true,
      true,
      true,
    ]);
    expect(w.counts).toBe(1);
    w.now += DB_LIVE_COUNT_MAX_AGE_MS;
    await bound.mayBegin();
    expect(w.counts).toBe(1);
    w.now += 1;
    await bound.mayBegin();
    expect(w.counts).toBe(2);
  });

  it('adds this node’s admissions to the count and sends Begins the exact way from 90 % of the cap', async () => {
    const { w, bound } = world(EXACT_FROM - 2);
    expect(await bound.mayBegin()).toBe(true);
    bound.admitted();
    expect(await bound.mayBegin()).toBe(true);
    bound.admitted();
    expect(await bound.mayBegin()).toBe(false);
    // A new count that sees sessions ended starts from it, forgetting the admissions it includes.
    w.live = 5;
    w.now += DB_LIVE_COUNT_MAX_AGE_MS + 1;
    expect(await bound.mayBegin()).toBe(true);
  });

  it('keeps the admissions made while a count was running', async () => {
    let release!: (n: number) => void;
    const bound = new LiveSessionBound(
      () => new Promise<number>((ok) => (release = ok)),
      () => 0,
    );
    const first = bound.mayBegin();
    bound.admitted(); // admitted while the count runs: it may be missing from the count
    release(EXACT_FROM - 1);
    expect(await first).toBe(false);
  });
});
