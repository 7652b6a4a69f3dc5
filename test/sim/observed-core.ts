/**
 * A transparent wrapper around a core that shows its Readies (and ReadIndex requests) to
 * an observer before the driver acts on them. Test-only instrumentation: the driver takes
 * it through its `createCore` option, the core itself is untouched.
 */
import type { RaftCoreApi } from '../../src/raft/driver.ts';
import type {
  ConfChange,
  Message,
  NodeId,
  Ready,
  SnapshotRef,
  SnapshotMeta,
  Status,
  Unblocked,
} from '../../src/raft/core/types.ts';

export interface CoreObserver {
  onReady(rd: Ready): void;
  onReadIndex?(ctx: string): void;
  /** What takeUnblocked handed out (also shown to onReady, as a Ready of just that). */
  onUnblocked?(out: Unblocked): void;
}

export class ObservedCore implements RaftCoreApi {
  constructor(
    readonly inner: RaftCoreApi,
    private readonly observer: CoreObserver,
  ) {}

  tick(): void {
    this.inner.tick();
  }
  step(m: Message): void {
    this.inner.step(m);
  }
  propose(data: Uint8Array): { index: number; term: number } {
    return this.inner.propose(data);
  }
  proposeConfChange(cc: ConfChange): { index: number; term: number } {
    return this.inner.proposeConfChange(cc);
  }
  transferLeadership(to: NodeId): void {
    this.inner.transferLeadership(to);
  }
  readIndex(ctx: string): void {
    this.inner.readIndex(ctx);
    this.observer.onReadIndex?.(ctx);
  }
  leaseReadIndex(): number | null {
    return this.inner.leaseReadIndex();
  }
  takeUnblocked(opts?: { committed?: boolean; appends?: boolean }): Unblocked {
    const out = this.inner.takeUnblocked(opts);
    this.observer.onUnblocked?.(out);
    if (out.messages.length > 0 || out.readStates.length > 0 || out.committedEntries.length > 0) {
      this.observer.onReady({
        softState: null,
        hardState: null,
        entries: [],
        snapshot: null,
        messages: out.messages,
        messagesAfterPersist: [],
        snapshotChunks: [],
        committedEntries: out.committedEntries,
        readStates: out.readStates,
      });
    }
    return out;
  }
  campaign(): void {
    this.inner.campaign();
  }
  hasReady(): boolean {
    return this.inner.hasReady();
  }
  ready(): Ready {
    const rd = this.inner.ready();
    this.observer.onReady(rd);
    return rd;
  }
  advance(rd: Ready): void {
    this.inner.advance(rd);
  }
  compact(snapshot: SnapshotRef): void {
    this.inner.compact(snapshot);
  }
  snapshotMeta(index: number): SnapshotMeta {
    return this.inner.snapshotMeta(index);
  }
  status(): Status {
    return this.inner.status();
  }
}
