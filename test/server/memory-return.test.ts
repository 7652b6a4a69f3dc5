/**
 * Memory back after a burst (issue 19): one full collection once the node is quiet and its
 * log compacted, none while it works, none again until it worked again. The status comes
 * from a fake Raft control (raft-control.ts is written for that); the collection is the
 * process's real gc, counted.
 */
import { describe, expect, it } from 'vitest';
import { MemoryReturn, exposedGc } from '../../src/server/memory-return.ts';
import { createLogger } from '../../src/shared/logger.ts';
import type { RaftControlStatus } from '../../src/server/raft-control.ts';

function world(minIntervalMs = 60_000) {
  const st = { applied: 0, bytesSinceSnapshot: 0 } as RaftControlStatus;
  let now = 0;
  let collections = 0;
  const gc = exposedGc();
  expect(gc).not.toBeNull();
  const job = new MemoryReturn({
    control: { status: () => st },
    gc: () => {
      collections++;
      gc!();
    },
    logger: createLogger({ level: 'silent' }),
    now: () => now,
    minIntervalMs,
  });
  const look = (dtMs: number) => {
    now += dtMs;
    return job.check();
  };
  return { st, look, collections: () => collections };
}

describe('MemoryReturn', () => {
  it('collects once after a burst, when quiet and compacted; not while busy, not twice', () => {
    const w = world();
    expect(w.look(5_000)).toBe(false); // first look: nothing known yet
    w.st.applied = 500;
    w.st.bytesSinceSnapshot = 2_000_000;
    expect(w.look(5_000)).toBe(false); // busy
    expect(w.look(5_000)).toBe(false); // quiet, but the log is not compacted yet
    w.st.bytesSinceSnapshot = 300; // compacted; a Prune's few bytes since
    expect(w.look(5_000)).toBe(true);
    expect(w.look(60_000)).toBe(false); // nothing applied since
    expect(w.collections()).toBe(1);
  });

  it('runs at most once per interval however often the node goes quiet', () => {
    const w = world(60_000);
    const burst = () => {
      w.st.applied += 10;
      w.look(5_000);
      return w.look(5_000);
    };
    expect(burst()).toBe(true);
    expect(burst()).toBe(false); // 10 s later: deferred
    expect(w.look(50_000)).toBe(true); // the deferred one, once the interval has passed
    expect(w.look(5_000)).toBe(false);
    expect(w.collections()).toBe(2);
  });

  it('waits for a local snapshot under way, and collects after one was taken', () => {
    const w = world(60_000);
    w.st.counters = { snapshotsTaken: 0 } as NonNullable<RaftControlStatus['counters']>;
    w.look(5_000);
    // A burst; then the idle snapshot starts: the driver counts the log's bytes from 0 again.
    w.st.applied = 500;
    w.st.bytesSinceSnapshot = 2_000_000;
    expect(w.look(5_000)).toBe(false);
    w.st.bytesSinceSnapshot = 0;
    w.st.snapshotInFlight = true;
    expect(w.look(5_000)).toBe(false); // quiet and "compacted", but its buffers are in use
    expect(w.look(5_000)).toBe(false);
    w.st.snapshotInFlight = false;
    w.st.counters.snapshotsTaken = 1;
    expect(w.look(5_000)).toBe(true); // done: its buffers are garbage now
    expect(w.collections()).toBe(1);
    // Nothing applied since, but another snapshot taken (e.g. on request): collect again,
    // once the interval has passed.
    w.st.counters.snapshotsTaken = 2;
    expect(w.look(5_000)).toBe(false);
    expect(w.look(60_000)).toBe(true);
    expect(w.look(60_000)).toBe(false);
    expect(w.collections()).toBe(2);
  });

  it('does nothing without gc', () => {
    const job = new MemoryReturn({
      control: { status: () => ({ applied: 1 }) as RaftControlStatus },
      gc: null,
      logger: createLogger({ level: 'silent' }),
    });
    job.start();
    expect(job.check()).toBe(false);
    expect(job.check()).toBe(false);
    job.stop();
  });
});
