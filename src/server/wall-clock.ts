/**
 * The node's wall clock: the Clock port of the coordinator, on real time and timers. Wall
 * clock (not monotonic) because times chosen by one leader (beginTime, deadlines, retry
 * times) are read by the next one on another machine. It lives with the server, which
 * assembles a node: the coordinator itself reads no clock (eslint.config.js).
 */
import type { Clock } from '../coordinator/index.ts';
import { deadlines } from '../shared/deadline-wheel.ts';

/**
 * Waits of at least this many ms go to the process's deadline wheel (one timer for all of
 * them, at most its 10 ms tick late): they are transaction deadlines and retry backoffs,
 * one per Begin on the hot path (issue 12 item 5). Shorter waits get a timer of their own,
 * on time.
 */
export const WHEEL_MIN_MS = 100;

export const wallClock: Clock = {
  now: () => Date.now(),
  monotonicNow: () => performance.now(),
  after(ms, fn) {
    if (ms >= WHEEL_MIN_MS) return deadlines.after(ms, fn);
    const timer = setTimeout(fn, ms);
    timer.unref?.();
    return () => clearTimeout(timer);
  },
  every(ms, fn) {
    const timer = setInterval(fn, ms);
    timer.unref?.();
    return () => clearInterval(timer);
  },
};
