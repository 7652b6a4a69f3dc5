/**
 * The phase-two driver's waits (due-queue.ts): each fires once, at its time, in time order;
 * a replaced or cancelled wait does not fire; one clock timer is armed at a time.
 */
import { describe, expect, it } from 'vitest';
import { DueQueue } from '../../src/coordinator/due-queue.ts';
import { FakeClock } from './fakes.ts';

describe('DueQueue', () => {
  it('fires each wait once at its time, replaced and cancelled ones not, with one timer armed', async () => {
    const clock = new FakeClock();
    const fired: string[] = [];
    const q = new DueQueue(clock, (xid) => fired.push(`${xid}@${clock.now() - t0}`));
    const t0 = clock.now();
    for (let i = 0; i < 50; i++) q.set(`x${i}`, t0 + 1_000 + ((i * 37) % 50) * 10);
    q.set('x3', t0 + 5_000); // replaced: fires at the new time only
    q.delete('x4'); // cancelled
    expect(q.size).toBe(49);
    expect(q.get('x3')).toBe(t0 + 5_000);
    expect(clock.pendingTimers).toBe(1);
    await clock.advance(10_000);
    expect(fired).toHaveLength(49);
    const times = fired.map((f) => Number(f.split('@')[1]));
    expect(times).toEqual([...times].sort((a, b) => a - b));
    expect(fired).toContain('x3@5000');
    expect(fired.some((f) => f.startsWith('x4@'))).toBe(false);
    for (let i = 0; i < 50; i++)
      if (i !== 3 && i !== 4) expect(fired).toContain(`x${i}@${1_000 + ((i * 37) % 50) * 10}`);
    expect(q.size).toBe(0);
    expect(clock.pendingTimers).toBe(0);
  });

  it('clear() cancels every wait and the timer', async () => {
    const clock = new FakeClock();
    const fired: string[] = [];
    const q = new DueQueue(clock, (xid) => fired.push(xid));
    q.set('a', clock.now() + 100);
    q.set('b', clock.now() + 200);
    q.clear();
    expect(clock.pendingTimers).toBe(0);
    await clock.advance(1_000);
    expect(fired).toEqual([]);
  });
});
