import { assert } from '../../shared/errors.ts';

/**
 * The pipelining window to one follower: the last index of each append message sent and
 * not yet acknowledged. Full at `capacity`; acknowledgements free everything up to an index.
 */
export class Inflights {
  private readonly ends: number[] = [];
  constructor(readonly capacity: number) {}

  get count(): number {
    return this.ends.length;
  }

  full(): boolean {
    return this.ends.length >= this.capacity;
  }

  add(lastIndex: number): void {
    assert(!this.full(), 'inflight window overflow');
    const prev = this.ends[this.ends.length - 1];
    assert(
      prev === undefined || lastIndex >= prev,
      () => `inflight indices must not go backwards: ${prev} then ${lastIndex}`,
    );
    this.ends.push(lastIndex);
  }

  freeTo(index: number): void {
    let n = 0;
    while (n < this.ends.length && (this.ends[n] as number) <= index) n++;
    if (n > 0) this.ends.splice(0, n);
  }

  /** Frees the oldest slot, acknowledged or not (see the heartbeat response handling). */
  freeFirst(): void {
    this.ends.shift();
  }

  reset(): void {
    this.ends.length = 0;
  }
}
