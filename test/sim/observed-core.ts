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
  /**
   * A leader's commit index moved from `from` to `to` (exclusive, inclusive), counted over
   * `voters` (its configuration at that moment).
   */
  onLeaderCommit?(from: number, to: number, voters: readonly NodeId[]): void;
  /** What takeUnblocked handed out (also shown to onReady, as a Ready of just that). */
  onUnblocked?(out: Unblocked): void;
}

export class ObservedCore implements RaftCoreApi {
  constructor(
    readonly inner: RaftCoreApi,
    private readonly observer: CoreObserver,
  ) {}

  /** The commit index last seen, to report a leader's advances (onLeaderCommit). */
  private commitSeen = 0;

  private watchCommit(): void {
    if (!this.observer.onLeaderCommit) return;
    const st = this.inner.status();
    if (st.commit > this.commitSeen && st.role === 'leader')
      this.observer.onLeaderCommit(this.commitSeen, st.commit, st.conf.voters);
    this.commitSeen = Math.max(this.commitSeen, st.commit);
  }

  tick(): void {
    this.inner.tick();
    this.watchCommit();
  }
  step(m: Message): void {
    this.inner.step(m);
    this.watchCommit();
  }
  propose(data: Uint8Array): { index: number; term: number } {
    const at = this.inner.propose(data);
    this.watchCommit();
    return at;
  }
  proposeConfChange(cc: ConfChange): { index: number; term: number } {
    const at = this.inner.proposeConfChange(cc);
    this.watchCommit();
    return at;
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
    this.watchCommit();
    this.observer.onReady(rd);
    return rd;
  }
  advance(rd: Ready): void {
    this.inner.advance(rd);
    this.watchCommit();
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
