/**
 * The production Clock: real timers. The simulator uses a fake clock it advances itself;
 * the driver only ever sees the `Clock` port.
 */
import { performance } from 'node:perf_hooks';
import type { Clock } from './ports.ts';

/** Smallest interval accepted by `every`, in milliseconds (a guard against busy loops). */
export const MIN_INTERVAL_MS = 1;

export const systemClock: Clock = {
  now(): number {
    return performance.now();
  },
  every(ms: number, fn: () => void): () => void {
    if (!Number.isFinite(ms) || ms < MIN_INTERVAL_MS)
      throw new RangeError(`interval must be ≥ ${MIN_INTERVAL_MS} ms, got ${ms}`);
    const handle = setInterval(fn, ms);
    // A timer alone must not keep the process alive: the server's sockets do.
    handle.unref();
    return () => clearInterval(handle);
  },
  after(ms: number, fn: () => void): () => void {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`delay must be ≥ 0 ms, got ${ms}`);
    const handle = setTimeout(fn, ms);
    handle.unref();
    return () => clearTimeout(handle);
  },
};
