import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { DeadlineWheel } from '../../src/shared/deadline-wheel.ts';

describe('DeadlineWheel', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('fires a deadline never early and at most one tick late', () => {
    const wheel = new DeadlineWheel({ tickMs: 10 });
    const start = Date.now();
    const firedAt: number[] = [];
    for (const ms of [0, 1, 9, 10, 11, 25, 1_000])
      wheel.after(ms, () => firedAt.push(Date.now() - start - ms));
    expect(wheel.size).toBe(7);
    vi.advanceTimersByTime(2_000);
    expect(firedAt).toHaveLength(7);
    for (const late of firedAt) {
      expect(late).toBeGreaterThanOrEqual(0);
      expect(late).toBeLessThanOrEqual(10);
    }
    expect(wheel.size).toBe(0);
  });

  it('a cancelled deadline does not fire; cancelling twice or after firing is a no-op', () => {
    const wheel = new DeadlineWheel({ tickMs: 10 });
    const fired: string[] = [];
    const a = wheel.after(50, () => fired.push('a'));
    const b = wheel.after(50, () => fired.push('b'));
    wheel.after(70, () => fired.push('c'));
    a();
    a();
    expect(wheel.size).toBe(2);
    vi.advanceTimersByTime(60);
    expect(fired).toEqual(['b']);
    b();
    expect(wheel.size).toBe(1);
    vi.advanceTimersByTime(20);
    expect(fired).toEqual(['b', 'c']);
    expect(wheel.size).toBe(0);
  });

  it('an earlier deadline added after later ones fires on time', () => {
    const wheel = new DeadlineWheel({ tickMs: 10 });
    const fired: string[] = [];
    wheel.after(60_000, () => fired.push('late'));
    wheel.after(30, () => fired.push('early'));
    vi.advanceTimersByTime(40);
    expect(fired).toEqual(['early']);
    vi.advanceTimersByTime(60_000);
    expect(fired).toEqual(['early', 'late']);
  });

  it('a callback that cancels another deadline of its bucket stops it firing', () => {
    const wheel = new DeadlineWheel({ tickMs: 10 });
    const fired: string[] = [];
    let cancelB: () => void = () => undefined;
    wheel.after(20, () => {
      fired.push('a');
      cancelB();
    });
    cancelB = wheel.after(20, () => fired.push('b'));
    vi.advanceTimersByTime(30);
    expect(fired).toEqual(['a']);
    expect(wheel.size).toBe(0);
  });

  it('a deadline added by a callback for a later bucket does not delay one already pending', () => {
    const wheel = new DeadlineWheel({ tickMs: 10 });
    const fired: string[] = [];
    wheel.after(10, () => {
      fired.push('first');
      wheel.after(500, () => fired.push('added'));
    });
    wheel.after(100, () => fired.push('pending'));
    vi.advanceTimersByTime(110);
    expect(fired).toEqual(['first', 'pending']);
    vi.advanceTimersByTime(500);
    expect(fired).toEqual(['first', 'pending', 'added']);
  });

  it('arms one timer however many deadlines are pending', () => {
    const wheel = new DeadlineWheel({ tickMs: 10 });
    const cancels = Array.from({ length: 1_000 }, (_, i) =>
      wheel.after(1_000 + i, () => undefined),
    );
    expect(vi.getTimerCount()).toBe(1);
    for (const c of cancels) c();
    expect(wheel.size).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('refuses a tick that is not a positive number', () => {
    expect(() => new DeadlineWheel({ tickMs: 0 })).toThrow(RangeError);
    expect(() => new DeadlineWheel({ tickMs: Number.NaN })).toThrow(RangeError);
  });
});
