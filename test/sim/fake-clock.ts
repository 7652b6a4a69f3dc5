/**
 * A Clock the simulator advances by hand. Nothing fires unless `advance` is called, so a
 * run depends on the seed alone.
 */
import type { Clock } from '../../src/raft/ports.ts';

interface Timer {
  id: number;
  at: number;
  every: number | null;
  fn: () => void;
}

export class FakeClock implements Clock {
  private t = 0;
  private seq = 0;
  private timers: Timer[] = [];

  now(): number {
    return this.t;
  }

  every(ms: number, fn: () => void): () => void {
    return this.add(ms, ms, fn);
  }

  after(ms: number, fn: () => void): () => void {
    return this.add(ms, null, fn);
  }

  private add(ms: number, every: number | null, fn: () => void): () => void {
    if (!(ms > 0) && every !== null) throw new RangeError('interval must be positive');
    const timer: Timer = { id: ++this.seq, at: this.t + ms, every, fn };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((x) => x !== timer);
    };
  }

  /** Moves time forward by `ms`, firing due timers in time order (ties by creation order). */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      let next: Timer | undefined;
      for (const x of this.timers)
        if (
          x.at <= end &&
          (next === undefined || x.at < next.at || (x.at === next.at && x.id < next.id))
        )
          next = x;
      if (next === undefined) break;
      this.t = next.at;
      if (next.every !== null) next.at += next.every;
      else this.timers = this.timers.filter((x) => x !== next);
      next.fn();
    }
    this.t = end;
  }

  /** Drops every timer (the process died). */
  clear(): void {
    this.timers = [];
  }
}
