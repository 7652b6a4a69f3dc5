/**
 * A node's disk in the simulator. A write lands in `written` (think: the OS page cache) at
 * once; it becomes durable (`synced`) only when the simulator decides to sync it, and only
 * then does save() resolve. A crash throws away everything unsynced. A write can be made to
 * fail (fsync error). Broken variants exist only to prove the checkers catch them.
 */
import type { Entry, HardState, Snapshot } from '../../src/raft/core/types.ts';
import type {
  LoadedState,
  LogStorage,
  PersistBatch,
  SnapshotChunkRead,
} from '../../src/raft/ports.ts';
import { crc32 } from '../../src/raft/storage/crc32.ts';
import type { DiskView, LogView } from './invariants.ts';

export interface DiskState {
  hardState: HardState;
  snapshot: Snapshot | null;
  /** Contiguous entries after the snapshot. */
  entries: Entry[];
}

/**
 * 'none': correct. 'ackBeforeSync': save() resolves as soon as the data is written, before
 * it is synced (a storage layer that forgot fsync). 'forgetVote': the vote never reaches the
 * disk (a storage layer that drops a field).
 */
export type DiskBug = 'none' | 'ackBeforeSync' | 'forgetVote';

export interface DiskObserver {
  onWrite(batch: PersistBatch, prevTermOfFirst: number | undefined): void;
  onSync(before: HardState, after: HardState): void;
}

export function emptyDiskState(): DiskState {
  return { hardState: { term: 0, vote: null, commit: 0 }, snapshot: null, entries: [] };
}

function snapIndex(s: DiskState): number {
  return s.snapshot?.meta.index ?? 0;
}

export function lastIndex(s: DiskState): number {
  return snapIndex(s) + s.entries.length;
}

export function termAt(s: DiskState, index: number): number | undefined {
  const si = snapIndex(s);
  if (index === si) return s.snapshot?.meta.term ?? 0;
  if (index < si || index > lastIndex(s)) return undefined;
  return s.entries[index - si - 1]?.term;
}

function cloneState(s: DiskState): DiskState {
  return { hardState: { ...s.hardState }, snapshot: s.snapshot, entries: s.entries.slice() };
}

/** Applies one save() batch: snapshot (replaces the whole log), truncate-and-append, hard state. */
export function applyBatch(s: DiskState, b: PersistBatch): void {
  if (b.snapshot) {
    s.snapshot = b.snapshot;
    s.entries = [];
  }
  const first = b.entries[0];
  if (first) {
    const keep = first.index - snapIndex(s) - 1;
    if (keep < 0 || keep > s.entries.length)
      throw new Error(
        `disk: batch starting at ${first.index} does not fit a log of ${snapIndex(s)}+${s.entries.length}`,
      );
    s.entries.length = keep;
    for (const e of b.entries) s.entries.push(e);
  }
  if (b.hardState) s.hardState = { ...b.hardState };
}

/** Local compaction: keep the snapshot, drop the entries it covers. */
export function applyCompaction(s: DiskState, snap: Snapshot): void {
  const si = snapIndex(s);
  if (snap.meta.index <= si) return;
  if (snap.meta.index > lastIndex(s))
    throw new Error(`disk: snapshot at ${snap.meta.index} beyond the log's end ${lastIndex(s)}`);
  // As LevelDbStorage: a local snapshot covers only what the disk's commit index covers.
  if (snap.meta.index > s.hardState.commit)
    throw new Error(
      `disk: snapshot at ${snap.meta.index} beyond the commit index ${s.hardState.commit}`,
    );
  s.entries = s.entries.slice(snap.meta.index - si);
  s.snapshot = snap;
}

function view(get: () => DiskState): LogView {
  return {
    hardState: () => get().hardState,
    lastIndex: () => lastIndex(get()),
    snapshotIndex: () => snapIndex(get()),
    termAt: (i) => termAt(get(), i),
  };
}

interface PendingWrite {
  apply: (s: DiskState) => void;
  resolve: () => void;
  reject: (e: Error) => void;
  settled: boolean;
}

export class FakeDisk {
  synced: DiskState = emptyDiskState();
  written: DiskState = emptyDiskState();
  private pending: PendingWrite[] = [];
  private generation = 0;
  /** The incarnation whose storage a failed fsync poisoned: its later writes fail too. */
  private poisoned = -1;
  /** The next sync fails (EIO) instead of making the write durable. */
  failNextSync = false;
  readonly bug: DiskBug;
  observer: DiskObserver | null = null;
  readonly view: DiskView;
  writes = 0;
  syncs = 0;
  /** Snapshot chunks read back to be sent to a follower. */
  snapshotReads = 0;
  /** Each snapshot's CRC-32 as recorded when written (LevelDbStorage keeps it in the meta). */
  private readonly crcs = new WeakMap<Snapshot, number>();
  /** Snapshots received from a leader (LevelDbStorage marks them in the meta). */
  private readonly received = new WeakSet<Snapshot>();

  constructor(bug: DiskBug = 'none') {
    this.bug = bug;
    this.view = { synced: view(() => this.synced), written: view(() => this.written) };
  }

  get pendingWrites(): number {
    return this.pending.length;
  }

  /** A LogStorage handle for one incarnation of the node; it dies with the next crash. */
  open(): LogStorage {
    const gen = this.generation;
    return {
      load: async (): Promise<LoadedState> => {
        const s = cloneState(this.synced);
        return {
          hardState: s.hardState,
          snapshot: s.snapshot,
          snapshotReceived: s.snapshot !== null && this.received.has(s.snapshot),
          entries: s.entries.map((e) => ({ ...e })),
        };
      },
      save: (batch) => {
        if (batch.snapshot) {
          this.crcs.set(batch.snapshot, crc32(batch.snapshot.data));
          this.received.add(batch.snapshot);
        }
        const first = batch.entries[0];
        const prevTerm = first
          ? batch.snapshot && first.index - 1 === batch.snapshot.meta.index
            ? batch.snapshot.meta.term
            : termAt(this.written, first.index - 1)
          : undefined;
        return this.write(
          gen,
          (s) => applyBatch(s, batch),
          () => this.observer?.onWrite(batch, prevTerm),
          batch.sync ?? true,
        );
      },
      saveSnapshot: (snap) => {
        this.crcs.set(snap, crc32(snap.data));
        return this.write(
          gen,
          (s) => applyCompaction(s, snap),
          () => {},
        );
      },
      readSnapshotChunk: (index, term, offset, length) =>
        this.readSnapshotChunk(gen, index, term, offset, length),
      close: async () => {},
    };
  }

  /**
   * Reads a chunk of the snapshot on this disk, as LevelDbStorage reads its snapshot file:
   * what was written (the page cache) is what a read sees; null if the snapshot there is
   * another one. The driver holds no snapshot data: every chunk it sends comes from here.
   */
  private readSnapshotChunk(
    gen: number,
    index: number,
    term: number,
    offset: number,
    length: number,
  ): Promise<SnapshotChunkRead | null> {
    // A dead incarnation's read never completes (its process is gone).
    if (gen !== this.generation) return new Promise<SnapshotChunkRead | null>(() => {});
    this.snapshotReads++;
    const snap = this.written.snapshot;
    if (snap === null || snap.meta.index !== index || snap.meta.term !== term)
      return Promise.resolve(null);
    if (offset + length > snap.data.length)
      return Promise.reject(
        new Error(`disk: chunk beyond the snapshot's ${snap.data.length} bytes`),
      );
    return Promise.resolve({
      data: snap.data.slice(offset, offset + length),
      bytes: snap.data.length,
      crc: this.crcs.get(snap) ?? crc32(snap.data),
    });
  }

  private write(
    gen: number,
    apply: (s: DiskState) => void,
    observe: () => void,
    sync = true,
  ): Promise<void> {
    // A dead incarnation's write never completes (its process is gone).
    if (gen !== this.generation) return new Promise<void>(() => {});
    // After a failed fsync every write fails, as LevelDbStorage's poisoned storage does.
    if (gen === this.poisoned) return Promise.reject(new Error('EIO: the storage failed before'));
    apply(this.written);
    this.writes++;
    observe();
    return new Promise<void>((resolve, reject) => {
      const w: PendingWrite = { apply, resolve, reject, settled: false };
      this.pending.push(w);
      // An unsynced write (PersistBatch.sync false) resolves once written; it stays queued
      // and becomes durable with the next sync, or is lost in a crash before it.
      if (this.bug === 'ackBeforeSync' || !sync) {
        w.settled = true;
        resolve();
      }
    });
  }

  /** Makes the oldest unsynced write durable (or fails it). Returns false if none. */
  syncOne(): boolean {
    const w = this.pending.shift();
    if (!w) return false;
    this.syncs++;
    if (this.failNextSync) {
      this.failNextSync = false;
      // Whatever later writes were queued behind the failed one are lost too, and fail
      // (a failed fsync poisons the storage, as LevelDbStorage's): an unsynced write that
      // already resolved cannot be failed, but the synced writes behind it are.
      const lost = [w, ...this.pending];
      this.pending = [];
      this.poisoned = this.generation;
      for (const x of lost) if (!x.settled) x.reject(new Error('EIO: injected fsync failure'));
      return true;
    }
    const before = this.synced.hardState;
    w.apply(this.synced);
    if (this.bug === 'forgetVote') this.synced.hardState = { ...this.synced.hardState, vote: null };
    this.observer?.onSync(before, this.synced.hardState);
    if (!w.settled) w.resolve();
    return true;
  }

  /** The process died: unsynced writes are lost; the old handle is dead. */
  crash(): void {
    this.pending = [];
    this.written = cloneState(this.synced);
    this.generation++;
  }
}
