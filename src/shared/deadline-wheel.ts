/**
 * One coarse timer for many deadlines (issue 12 item 5): deadlines are kept in buckets of
 * `tickMs` and one Node timer is armed for the earliest bucket, instead of a setTimeout and
 * a clearTimeout per call. Node keeps a timer list per distinct duration in a priority
 * queue, so per-call deadlines of varied lengths (a call's budget, a transaction's timeout)
 * each cost a list and a queue operation; here adding and cancelling a deadline is a Set
 * operation, and a new bucket a heap push.
 *
 * A deadline never fires early: it fires at the end of its bucket, at most `tickMs` late
 * (plus the event loop's own delay). The timer is unref'd, like the timers it replaces:
 * pending deadlines do not keep a process alive. Use it for deadlines (timeouts that
 * usually do not fire), not for short waits that must be precise.
 */

/** Cancels a deadline; a no-op once it fired or was cancelled. */
export type CancelDeadline = () => void;

export interface DeadlineWheelOptions {
  /** Bucket width, ms (default 10). */
  tickMs?: number;
  /** The clock, ms (default Date.now). */
  now?: () => number;
}

/** Default bucket width, ms. */
export const DEFAULT_WHEEL_TICK_MS = 10;

interface Entry {
  fire: () => void;
  bucket: number;
  /** False once fired or cancelled. */
  live: boolean;
}

export class DeadlineWheel {
  private readonly tickMs: number;
  private readonly now: () => number;
  private readonly buckets = new Map<number, Set<Entry>>();
  /** Min-heap of bucket numbers; a number whose bucket is gone is skipped when it surfaces. */
  private readonly heap: number[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** The bucket the armed timer fires for. */
  private timerBucket = Infinity;
  private count = 0;

  constructor(options: DeadlineWheelOptions = {}) {
    const tick = options.tickMs ?? DEFAULT_WHEEL_TICK_MS;
    if (!Number.isFinite(tick) || tick <= 0)
      throw new RangeError(`tickMs must be a positive number, got ${tick}`);
    this.tickMs = tick;
    this.now = options.now ?? Date.now;
  }

  /** Deadlines pending. */
  get size(): number {
    return this.count;
  }

  /** Calls `fire` once, `ms` from now (at most one tick late); returns its cancel. */
  after(ms: number, fire: () => void): CancelDeadline {
    return this.at(this.now() + Math.max(0, ms), fire);
  }

  /** Calls `fire` once the clock reaches `deadline` (ms; at most one tick late). */
  at(deadline: number, fire: () => void): CancelDeadline {
    const bucket = Math.ceil(deadline / this.tickMs);
    let set = this.buckets.get(bucket);
    if (set === undefined) {
      set = new Set();
      this.buckets.set(bucket, set);
      this.push(bucket);
    }
    const entry: Entry = { fire, bucket, live: true };
    set.add(entry);
    this.count += 1;
    if (bucket < this.timerBucket) this.arm(bucket);
    return () => this.cancel(entry);
  }

  /** Drops every pending deadline without firing it. */
  clear(): void {
    this.buckets.clear();
    this.heap.length = 0;
    this.count = 0;
    this.disarm();
  }

  private cancel(entry: Entry): void {
    if (!entry.live) return;
    entry.live = false;
    // Not in the map: its bucket is firing now (the run skips it) or was cleared.
    const set = this.buckets.get(entry.bucket);
    if (set === undefined || !set.delete(entry)) return;
    this.count -= 1;
    if (set.size === 0) this.buckets.delete(entry.bucket);
    if (this.count === 0) this.clear();
  }

  private arm(bucket: number): void {
    this.disarm();
    this.timerBucket = bucket;
    const timer = setTimeout(() => this.run(), Math.max(0, bucket * this.tickMs - this.now()));
    timer.unref?.();
    this.timer = timer;
  }

  private disarm(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.timerBucket = Infinity;
  }

  private run(): void {
    this.timer = null;
    this.timerBucket = Infinity;
    const due = Math.floor(this.now() / this.tickMs);
    const errors: unknown[] = [];
    while (this.heap.length > 0 && this.heap[0]! <= due) {
      const bucket = this.pop();
      const set = this.buckets.get(bucket);
      if (set === undefined) continue;
      this.buckets.delete(bucket);
      this.count -= set.size;
      for (const entry of set) {
        if (!entry.live) continue; // cancelled by an earlier callback of this run
        entry.live = false;
        try {
          entry.fire();
        } catch (err) {
          errors.push(err);
        }
      }
    }
    // Skip numbers whose bucket was emptied by cancels, then wait for the next one (a
    // callback may have armed the timer for a later bucket already).
    while (this.heap.length > 0 && !this.buckets.has(this.heap[0]!)) this.pop();
    if (this.heap.length > 0 && this.heap[0]! < this.timerBucket) this.arm(this.heap[0]!);
    // A throwing callback is an uncaught exception, as it would be from its own timer; the
    // others of its bucket still ran.
    for (const err of errors)
      queueMicrotask(() => {
        throw err;
      });
  }

  private push(bucket: number): void {
    const h = this.heap;
    h.push(bucket);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (h[parent]! <= bucket) break;
      h[i] = h[parent]!;
      i = parent;
    }
    h[i] = bucket;
  }

  private pop(): number {
    const h = this.heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= h.length) break;
        const r = l + 1;
        const c = r < h.length && h[r]! < h[l]! ? r : l;
        if (h[c]! >= last) break;
        h[i] = h[c]!;
        i = c;
      }
      h[i] = last;
    }
    return top;
  }
}

/** The process's wheel for call and transaction deadlines (10 ms buckets). */
export const deadlines = new DeadlineWheel();
