/**
 * Memory back after a burst (issue 19). When transactions end, their sessions and the Raft
 * log's entries become garbage, but a node that then goes idle allocates nothing, so V8 runs
 * no major collection: the garbage (and the Buffers it holds outside the heap) stays, and so
 * does RSS. This job runs one full collection once the node is quiet: nothing applied for
 * one interval, the in-memory log compacted (the idle snapshot, src/raft/driver.ts: less
 * than MEMORY_RETURN_MAX_LOG_BYTES held; the leader's occasional Prune leaves a few bytes
 * that trigger no snapshot), no local snapshot under way, and something applied or a
 * snapshot taken since the last collection it ran, at most once per minInterval.
 *
 * Not during a snapshot (issue 19): the driver resets its count of the log's bytes when a
 * capture starts, so the idle snapshot itself looked "compacted"; the collection then ran
 * while the capture's buffers were in use (at 100,000 live, 35–55 MB of external memory)
 * and they became garbage right after it, which no collection of an idle node ever freed.
 * A snapshot taken since the last collection is reason enough for the next one.
 *
 * The collection needs `gc`: `node --expose-gc` gives it; otherwise it is exposed at start
 * through v8.setFlagsFromString (as Node's own tests do). Without either, the job does
 * nothing. A full collection of a few hundred MB pauses the loop for ~0.1–0.5 s, which is
 * why it runs only when the node is idle.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Logger } from '../shared/logger.ts';
import type { RaftControl } from './raft-control.ts';

/** How often the job looks, ms. */
export const MEMORY_RETURN_CHECK_MS = 5_000;
/** Entry bytes the in-memory log may hold for the job to count it compacted. */
export const MEMORY_RETURN_MAX_LOG_BYTES = 1024 * 1024;
/** Collections it runs at most once per this, ms. */
export const MEMORY_RETURN_MIN_INTERVAL_MS = 60_000;

export type FullGc = () => void;

/** The process's `gc`, exposed if it is not yet; null when it cannot be had. */
export function exposedGc(): FullGc | null {
  const own = (globalThis as { gc?: unknown }).gc;
  if (typeof own === 'function') return own as FullGc;
  try {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as unknown;
    return typeof gc === 'function' ? (gc as FullGc) : null;
  } catch {
    return null;
  }
}

export class MemoryReturn {
  private timer: NodeJS.Timeout | null = null;
  /** Applied index at the previous look, and at the last collection. */
  private appliedBefore = -1;
  private appliedAtGc = -1;
  /** Local snapshots the driver had taken at the last collection. */
  private takenAtGc = -1;
  private lastGcAt = -Infinity;
  /** Collections run (tests and logs). */
  collections = 0;

  constructor(
    private readonly options: {
      control: Pick<RaftControl, 'status'>;
      gc: FullGc | null;
      logger: Logger;
      now?: () => number;
      checkMs?: number;
      minIntervalMs?: number;
    },
  ) {}

  start(): void {
    if (this.options.gc === null || this.timer !== null) return;
    this.timer = setInterval(() => this.check(), this.options.checkMs ?? MEMORY_RETURN_CHECK_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** One look: collects when the node is quiet and compacted and was busy since the last one. */
  check(): boolean {
    const gc = this.options.gc;
    const st = this.options.control.status();
    const applied = st.applied;
    const quiet = applied === this.appliedBefore;
    this.appliedBefore = applied;
    const now = (this.options.now ?? Date.now)();
    const minInterval = this.options.minIntervalMs ?? MEMORY_RETURN_MIN_INTERVAL_MS;
    const taken = st.counters?.snapshotsTaken ?? 0;
    if (gc === null || !quiet || st.snapshotInFlight === true) return false;
    if (applied === this.appliedAtGc && taken === this.takenAtGc) return false;
    if ((st.bytesSinceSnapshot ?? 0) >= MEMORY_RETURN_MAX_LOG_BYTES) return false;
    if (now - this.lastGcAt < minInterval) return false;
    const before = process.memoryUsage();
    gc();
    const after = process.memoryUsage();
    this.appliedAtGc = applied;
    this.takenAtGc = taken;
    this.lastGcAt = now;
    this.collections++;
    const mb = (n: number) => Math.round(n / 1_048_576);
    this.options.logger.info(
      {
        ms: (this.options.now ?? Date.now)() - now,
        heapMb: [mb(before.heapUsed), mb(after.heapUsed)],
        externalMb: [mb(before.external), mb(after.external)],
        rssMb: [mb(before.rss), mb(after.rss)],
      },
      'idle: full collection ran, memory returned',
    );
    return true;
  }
}
