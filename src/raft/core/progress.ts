import { Inflights } from './inflights.ts';
import type { Progress as ProgressView } from './types.ts';

/**
 * The leader's view of one follower (etcd's Progress). `probe`: one append at a time until
 * a match is found; `replicate`: pipelined appends within the inflight window; `snapshot`:
 * a snapshot is being streamed chunk by chunk and appends wait.
 */
export class Progress {
  match = 0;
  next: number;
  state: 'probe' | 'replicate' | 'snapshot' = 'probe';
  /** In probe state: an append was sent and no answer came yet. */
  probeSent = false;
  recentActive = false;
  /** In snapshot state: which snapshot is being sent and how much of it was acknowledged. */
  snapIndex = 0;
  snapOffset = 0;
  readonly inflights: Inflights;

  constructor(next: number, maxInflight: number) {
    this.next = next;
    this.inflights = new Inflights(maxInflight);
  }

  becomeProbe(): void {
    // After a snapshot, the follower holds at least the snapshot's index.
    if (this.state === 'snapshot') this.next = Math.max(this.match + 1, this.snapIndex + 1);
    else this.next = this.match + 1;
    this.state = 'probe';
    this.probeSent = false;
    this.inflights.reset();
  }

  becomeReplicate(): void {
    this.state = 'replicate';
    this.next = this.match + 1;
    this.probeSent = false;
    this.inflights.reset();
  }

  becomeSnapshot(snapIndex: number): void {
    this.state = 'snapshot';
    this.snapIndex = snapIndex;
    this.snapOffset = 0;
    this.inflights.reset();
  }

  /** Records an acknowledged match; returns false if the acknowledgement is stale. */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (this.match < index) {
      this.match = index;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, index + 1);
    return updated;
  }

  paused(): boolean {
    switch (this.state) {
      case 'probe':
        return this.probeSent;
      case 'replicate':
        return this.inflights.full();
      case 'snapshot':
        return true;
    }
  }

  view(): ProgressView {
    return {
      match: this.match,
      next: this.next,
      state: this.state,
      inflight: this.inflights.count,
      recentActive: this.recentActive,
    };
  }
}
