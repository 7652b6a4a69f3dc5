/**
 * The node's wall clock: the Clock port of the coordinator, on real time and timers. Wall
 * clock (not monotonic) because times chosen by one leader (beginTime, deadlines, retry
 * times) are read by the next one on another machine. It lives with the server, which
 * assembles a node: the coordinator itself reads no clock (eslint.config.js).
 */
import type { Clock } from '../coordinator/index.ts';

export const wallClock: Clock = {
  now: () => Date.now(),
  monotonicNow: () => performance.now(),
  after(ms, fn) {
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
