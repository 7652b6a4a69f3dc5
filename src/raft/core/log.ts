import { assert } from '../../shared/errors.ts';
import { ENTRY_OVERHEAD_BYTES } from './config.ts';
import type { Entry, Snapshot, SnapshotRef } from './types.ts';

function entryBytes(e: Entry): number {
  return (e.type === 'normal' ? e.data.length : 64) + ENTRY_OVERHEAD_BYTES;
}

/**
 * The Raft log as the core sees it: the latest snapshot (its meta and size only: the data
 * stays on the caller's disk, read from there when a lagging follower needs it) and every
 * entry after it, in memory. `stable` is the last index the
 * caller reported durable; entries above it are handed out in the next Ready.
 *
 * Invariants (asserted): entries are contiguous from snapIndex + 1; snapIndex ≤ applied ≤
 * committed ≤ lastIndex; committed never decreases; a committed entry is never truncated.
 */
export class RaftLog {
  snapshot: SnapshotRef | null;
  snapIndex: number;
  snapTerm: number;
  entries: Entry[];
  committed: number;
  applied: number;
  /**
   * Last index handed to the caller to apply (etcd's `applying`): ≥ applied; the entries in
   * between were handed out in a Ready not yet advanced.
   */
  applying: number;
  /** Last index durable on this node's disk. */
  stable: number;
  /**
   * A snapshot received from the leader, not yet persisted and restored by the caller: the
   * only time the core holds snapshot data, until the caller's advance().
   */
  pendingSnapshot: Snapshot | null = null;

  constructor(snapshot: SnapshotRef | null, entries: Entry[], committed: number) {
    // A copy of the two fields: never a reference to an object that may carry the data too.
    this.snapshot = snapshot ? { meta: snapshot.meta, bytes: snapshot.bytes } : null;
    this.snapIndex = snapshot?.meta.index ?? 0;
    this.snapTerm = snapshot?.meta.term ?? 0;
    this.entries = entries.filter((e) => e.index > this.snapIndex);
    for (let i = 0; i < this.entries.length; i++) {
      assert(
        this.entries[i]!.index === this.snapIndex + 1 + i,
        'durable log is not contiguous after the snapshot',
      );
    }
    this.stable = this.lastIndex();
    assert(
      committed <= this.lastIndex(),
      () => `durable commit ${committed} beyond the durable last index ${this.lastIndex()}`,
    );
    this.committed = Math.max(committed, this.snapIndex);
    this.applied = this.snapIndex;
    this.applying = this.snapIndex;
  }

  firstIndex(): number {
    return this.snapIndex + 1;
  }

  lastIndex(): number {
    return this.snapIndex + this.entries.length;
  }

  lastTerm(): number {
    return this.term(this.lastIndex()) ?? 0;
  }

  /** The term of the entry at `index`, or undefined if it is compacted away or beyond the end. */
  term(index: number): number | undefined {
    if (index === this.snapIndex) return this.snapTerm;
    if (index < this.snapIndex || index > this.lastIndex()) return undefined;
    return this.entries[index - this.snapIndex - 1]!.term;
  }

  entry(index: number): Entry | undefined {
    if (index <= this.snapIndex || index > this.lastIndex()) return undefined;
    return this.entries[index - this.snapIndex - 1];
  }

  matchTerm(index: number, term: number): boolean {
    return this.term(index) === term;
  }

  /** §5.4.1: a candidate's log is at least as up to date as ours. */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const myTerm = this.lastTerm();
    return lastTerm > myTerm || (lastTerm === myTerm && lastIndex >= this.lastIndex());
  }

  /** Entries in [lo, hi], capped at maxBytes (always at least one entry if any). */
  slice(lo: number, hi: number, maxBytes: number): Entry[] {
    assert(
      lo > this.snapIndex,
      () => `slice from ${lo} reaches into the snapshot at ${this.snapIndex}`,
    );
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = lo; i <= Math.min(hi, this.lastIndex()); i++) {
      const e = this.entry(i)!;
      bytes += entryBytes(e);
      if (out.length > 0 && bytes > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  /** Leader append of new entries at the end. */
  append(entries: Entry[]): void {
    for (const e of entries) {
      assert(
        e.index === this.lastIndex() + 1,
        () => `append at ${e.index} but last index is ${this.lastIndex()}`,
      );
      this.entries.push(e);
    }
  }

  /**
   * Follower append (§5.3): returns the last index of the new entries, or null if the log
   * does not contain an entry at prevIndex with prevTerm. A conflicting suffix is truncated
   * (never below the commit index) and replaced.
   */
  maybeAppend(
    prevIndex: number,
    prevTerm: number,
    entries: Entry[],
  ): { lastNew: number; truncatedFrom: number | null } | null {
    if (!this.matchTerm(prevIndex, prevTerm)) return null;
    const lastNew = prevIndex + entries.length;
    let truncatedFrom: number | null = null;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      assert(e.index === prevIndex + 1 + i, 'append message entries are not contiguous');
      if (e.index <= this.snapIndex) continue;
      const t = this.term(e.index);
      if (t === e.term) continue;
      if (t !== undefined) {
        assert(
          e.index > this.committed,
          () => `entry ${e.index} conflicts with the committed log (commit ${this.committed})`,
        );
        this.truncateFrom(e.index);
        truncatedFrom = e.index;
      }
      this.append(entries.slice(i));
      break;
    }
    return { lastNew, truncatedFrom };
  }

  private truncateFrom(index: number): void {
    this.entries.length = index - this.snapIndex - 1;
    if (this.stable >= index) this.stable = index - 1;
  }

  /**
   * The first index of the term held at `index` (bounded by the snapshot), for the
   * fast-backtracking hint a follower sends with a rejection.
   */
  firstIndexOfTermAt(index: number): number {
    const t = this.term(index);
    let i = index;
    while (i - 1 > this.snapIndex && this.term(i - 1) === t) i--;
    return i;
  }

  /** The last index holding `term`, or 0 if this log has none of it. */
  lastIndexOfTerm(term: number): number {
    for (let i = this.lastIndex(); i > this.snapIndex; i--) {
      const t = this.term(i)!;
      if (t === term) return i;
      if (t < term) return 0;
    }
    return this.snapTerm === term ? this.snapIndex : 0;
  }

  commitTo(index: number): boolean {
    if (index <= this.committed) return false;
    assert(
      index <= this.lastIndex(),
      () => `commit ${index} beyond last index ${this.lastIndex()}`,
    );
    this.committed = index;
    return true;
  }

  unstableEntries(): Entry[] {
    if (this.stable >= this.lastIndex()) return [];
    return this.entries.slice(Math.max(this.stable, this.snapIndex) - this.snapIndex);
  }

  stableTo(index: number, term: number): void {
    if (this.matchTerm(index, term) && index > this.stable) this.stable = index;
  }

  /** Committed entries not yet handed to the caller (none while a received snapshot waits). */
  nextCommitted(): Entry[] {
    const from = Math.max(this.applying, this.snapIndex) + 1;
    if (from > this.committed) return [];
    return this.entries.slice(from - this.snapIndex - 1, this.committed - this.snapIndex);
  }

  /** The caller was handed the committed entries up to `index`. */
  applyingTo(index: number): void {
    assert(index <= this.committed, () => `applying ${index} beyond commit ${this.committed}`);
    if (index > this.applying) this.applying = index;
  }

  appliedTo(index: number): void {
    assert(index <= this.committed, () => `applied ${index} beyond commit ${this.committed}`);
    if (index > this.applied) this.applied = index;
    if (index > this.applying) this.applying = index;
  }

  /** Replaces the whole log with a snapshot received from the leader. */
  restore(snapshot: Snapshot): void {
    const { index, term } = snapshot.meta;
    assert(index > this.committed, 'restoring a snapshot behind the commit index');
    this.snapshot = { meta: snapshot.meta, bytes: snapshot.data.length };
    this.snapIndex = index;
    this.snapTerm = term;
    this.entries = [];
    this.committed = index;
    this.stable = index;
    this.pendingSnapshot = snapshot;
  }

  /** Local compaction behind a snapshot of applied state. */
  compact(snapshot: SnapshotRef): void {
    const { index, term } = snapshot.meta;
    if (index <= this.snapIndex) return;
    assert(index <= this.applied, () => `compacting to ${index} beyond applied ${this.applied}`);
    assert(
      this.term(index) === term,
      () => `snapshot term ${term} at ${index} does not match the log`,
    );
    this.entries = this.entries.slice(index - this.snapIndex);
    this.snapIndex = index;
    this.snapTerm = term;
    this.snapshot = { meta: snapshot.meta, bytes: snapshot.bytes };
  }

  bytesBetween(lo: number, hi: number): number {
    let n = 0;
    for (let i = Math.max(lo, this.snapIndex + 1); i <= Math.min(hi, this.lastIndex()); i++)
      n += entryBytes(this.entry(i)!);
    return n;
  }
}
