/**
 * The phase-two driver's waits: transaction → the time its next pass is due (a deadline, a
 * retry, a hand-off), in one map of small numbers and one binary min-heap, with one clock
 * timer armed for the earliest. A waiting transaction costs a map entry and a heap slot (tens
 * of bytes), not an object, a closure and a timer of its own (issue 19: 1,000,000 live per
 * node). A wait replaced or cancelled leaves its heap slot behind, skipped when it surfaces.
 */
import { assert } from '../shared/errors.ts';
import type { Clock } from './ports.ts';

export class DueQueue {
  /** xid → due time − base (a small integer for V8 while within ±12 days of base). */
  private readonly dueAt = new Map<string, number>();
  private readonly heapAt: number[] = [];
  private readonly heapXid: string[] = [];
  private readonly base: number;
  private armedAt = Infinity;
  private cancelArmed: (() => void) | null = null;

  constructor(
    private readonly clock: Clock,
    private readonly fire: (xid: string) => void,
  ) {
    this.base = clock.now();
  }

  get size(): number {
    return this.dueAt.size;
  }

  /** When `xid`'s pass is due, or undefined when it waits for none here. */
  get(xid: string): number | undefined {
    const at = this.dueAt.get(xid);
    return at === undefined ? undefined : at + this.base;
  }

  has(xid: string): boolean {
    return this.dueAt.has(xid);
  }

  /** `xid`'s pass is due at `at` (replaces its wait). */
  set(xid: string, at: number): void {
    assert(Number.isFinite(at), () => `due time ${at}`);
    const rel = at - this.base;
    this.dueAt.set(xid, rel);
    this.push(rel, xid);
    if (at < this.armedAt) this.arm(at);
  }

  /** Cancels `xid`'s wait; true when it had one. */
  delete(xid: string): boolean {
    return this.dueAt.delete(xid);
  }

  /** Cancels every wait and the timer. */
  clear(): void {
    this.dueAt.clear();
    this.heapAt.length = 0;
    this.heapXid.length = 0;
    this.disarm();
  }

  private arm(at: number): void {
    this.disarm();
    this.armedAt = at;
    this.cancelArmed = this.clock.after(Math.max(0, at - this.clock.now()), () => {
      this.cancelArmed = null;
      this.armedAt = Infinity;
      this.run();
    });
  }

  private disarm(): void {
    this.cancelArmed?.();
    this.cancelArmed = null;
    this.armedAt = Infinity;
  }

  /** Fires every wait due now (each once), then arms for the next one still current. */
  private run(): void {
    const now = this.clock.now() - this.base;
    const due: string[] = [];
    while (this.heapAt.length > 0 && this.heapAt[0]! <= now) {
      const at = this.heapAt[0]!;
      const xid = this.heapXid[0]!;
      this.pop();
      if (this.dueAt.get(xid) !== at) continue; // replaced or cancelled
      this.dueAt.delete(xid);
      due.push(xid);
    }
    // Stale slots at the top are dropped, so the timer is armed for a current wait.
    while (this.heapAt.length > 0 && this.dueAt.get(this.heapXid[0]!) !== this.heapAt[0])
      this.pop();
    if (this.heapAt.length > 0) this.arm(this.heapAt[0]! + this.base);
    for (const xid of due) this.fire(xid);
  }

  private push(at: number, xid: string): void {
    const a = this.heapAt;
    const x = this.heapXid;
    let i = a.length;
    a.push(at);
    x.push(xid);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (a[parent]! <= at) break;
      a[i] = a[parent]!;
      x[i] = x[parent]!;
      i = parent;
    }
    a[i] = at;
    x[i] = xid;
  }

  private pop(): void {
    const a = this.heapAt;
    const x = this.heapXid;
    const lastAt = a.pop()!;
    const lastXid = x.pop()!;
    const n = a.length;
    if (n === 0) return;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && a[r]! < a[l]! ? r : l;
      if (a[c]! >= lastAt) break;
      a[i] = a[c]!;
      x[i] = x[c]!;
      i = c;
    }
    a[i] = lastAt;
    x[i] = lastXid;
  }
}
