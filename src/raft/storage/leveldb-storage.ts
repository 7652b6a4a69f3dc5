/**
 * LogStorage on LevelDB (`level`): one database per node data dir holding the Raft log,
 * the hard state and the latest snapshot (its meta carries the membership as of its index;
 * later membership changes are conf entries in the log).
 *
 * Layout (keys are binary and sort in log order):
 *   0x01 ‖ u64be(first)   one run: the entries first .. first+n-1 (n ≥ 1) written by one round
 *   0x02                  hard state {term, vote, commit}
 *   0x03                  snapshot meta {index, term, conf, dataBytes, dataCrc, file}
 *   0x04                  snapshot data of a snapshot written before snapshot files (read only)
 *   0x05                  identity {format, nodeId, clusterId, nodeUid}
 *   0x06                  peer identities {nodeId → nodeUid}: the identity each member was
 *                         last seen with (a member whose identity changes lost its disk)
 *
 * Every value is framed as  u8 format ‖ u32be crc32(key ‖ payload) ‖ msgpackr(payload),
 * so a flipped byte, a truncated value or a value stored under the wrong key is caught by
 * `load()` and reported as StorageCorruptError rather than handed to the core. A database
 * in another format (the identity record says which) is refused, not upgraded.
 *
 * Why runs: abstract-level and LevelDB charge per operation, and a busy follower writes
 * about ten entries a round; one put per entry made `save()` a quarter of its CPU. A round
 * now writes its entries as ONE value (split only past MAX_RUN_ENTRIES) next to the hard
 * state.
 *
 * Runs are never rewritten, so the log is read back with one rule: a run is truncated
 * where the next run (in key order) begins. It reproduces the durable log because
 *  - a round whose entries start at f (Raft's conflicting-tail overwrite) deletes every
 *    run keyed ≥ f in the same batch; a run that starts before f and reaches past it
 *    stays, and the new run keyed f cuts it on load;
 *  - compaction at S (a local snapshot, or a received one that keeps its suffix, §7)
 *    deletes the runs whose entries, so truncated, all lie at or below S; a run that
 *    straddles S stays and its entries up to S are skipped on load. A received snapshot
 *    that does not match the log deletes every run.
 * So only the first run may start at or below the snapshot index, every later run starts
 * right after the (truncated) previous one, and anything else is corruption.
 *
 * Snapshot data lives in files beside the database (snapshot-files.ts); the meta names
 * its file. A local snapshot's file is written in parallel with the rounds, outside their
 * write chain; only its small meta batch joins the chain.
 *
 * Durability: `save()` is ONE `db.batch(ops, { sync: true })` per Raft round (group
 * commit): the round's run, the deletion of the runs it supersedes, a received snapshot's
 * meta (its file written and fsynced first, with the deletion of the runs it covers) and
 * the hard state. `saveSnapshot()` writes its file, then one synced batch. Writes are serialized; a
 * failed write poisons the storage (the node must stop — its in-memory view of the disk can no
 * longer be trusted).
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Level } from 'level';
import { Packr } from 'msgpackr';
import type { Entry, HardState, Snapshot, SnapshotMeta } from '../core/types.ts';
import type { LoadedState, LogStorage, PersistBatch, SnapshotChunkRead } from '../ports.ts';
import { assert, ConfigError, StorageCorruptError } from '../../shared/errors.ts';
import { isNodeId } from '../../shared/ids.ts';
import type { Logger } from '../../shared/logger.ts';
import { crc32 } from './crc32.ts';
import { checkEntry, checkSnapshotMeta, isIndex, isObject } from './shape.ts';
import { durableRange, durableTermAt } from './durable-terms.ts';
import { SerialWrites } from './serial-writes.ts';
import { SnapshotFiles, type SnapshotFile } from './snapshot-files.ts';
import { releaseLargePackBuffer } from '../../shared/msgpack-buffer.ts';

/**
 * Version byte at the head of every stored value; bump on an incompatible layout change.
 * 1: one key per entry. 2: one key per run of entries.
 */
export const STORAGE_FORMAT_VERSION = 2;
/** u8 format + u32 crc. */
const VALUE_HEADER_BYTES = 5;

const PREFIX_RUN = 0x01;
const KEY_HARD_STATE = Buffer.from([0x02]);
const KEY_SNAPSHOT_META = Buffer.from([0x03]);
const KEY_SNAPSHOT_DATA = Buffer.from([0x04]);
const KEY_IDENTITY = Buffer.from([0x05]);
const KEY_PEER_IDENTITIES = Buffer.from([0x06]);
const RUN_KEY_BYTES = 9;

/**
 * Most entries one run holds. A larger batch (a follower catching up) is split into several
 * runs in the same synced write, so that no single value (which load() decodes whole and
 * msgpackr packs in one buffer) grows without bound.
 */
export const MAX_RUN_ENTRIES = 4096;

/** Upper bound on the LevelDB block cache; the log is read once at start, so small is fine. */
export const LEVELDB_CACHE_BYTES = 8 * 1024 * 1024;
/** LevelDB memtable size before a flush to an sstable. */
export const LEVELDB_WRITE_BUFFER_BYTES = 4 * 1024 * 1024;

const packr = new Packr({ useRecords: false, copyBuffers: true });

/** The key of the run whose first entry is `firstIndex`. Exported for tests. */
export function runKey(firstIndex: number): Buffer {
  const key = Buffer.allocUnsafe(RUN_KEY_BYTES);
  key[0] = PREFIX_RUN;
  key.writeBigUInt64BE(BigInt(firstIndex), 1);
  return key;
}

function runFirstOfKey(key: Buffer): number | null {
  if (key.length !== RUN_KEY_BYTES || key[0] !== PREFIX_RUN) return null;
  const index = key.readBigUInt64BE(1);
  return index <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(index) : null;
}

/** Frames a payload: format byte, crc32 over key and payload, payload. Exported for tests. */
export function frameValue(key: Buffer, payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(VALUE_HEADER_BYTES + payload.length);
  out[0] = STORAGE_FORMAT_VERSION;
  out.writeUInt32BE(crc32(payload, crc32(key)), 1);
  out.set(payload, VALUE_HEADER_BYTES);
  return out;
}

/**
 * Checks a value's frame and returns its payload. `anyFormat` leaves the format byte to the caller
 * (identity).
 */
function unframeValue(key: Buffer, value: Buffer, what: string, anyFormat = false): Buffer {
  if (value.length < VALUE_HEADER_BYTES) {
    throw new StorageCorruptError(
      `${what}: value of ${value.length} bytes is shorter than its header (torn write?)`,
    );
  }
  if (!anyFormat && value[0] !== STORAGE_FORMAT_VERSION) {
    throw new StorageCorruptError(
      `${what}: unknown storage format ${value[0]} (expected ${STORAGE_FORMAT_VERSION})`,
    );
  }
  const payload = value.subarray(VALUE_HEADER_BYTES);
  const stored = value.readUInt32BE(1);
  const actual = crc32(payload, crc32(key));
  if (stored !== actual) {
    throw new StorageCorruptError(
      `${what}: checksum mismatch (stored ${stored.toString(16)}, computed ${actual.toString(16)})`,
    );
  }
  return payload;
}

function decodePayload(payload: Buffer, what: string): unknown {
  try {
    return packr.unpack(payload);
  } catch (cause) {
    throw new StorageCorruptError(`${what}: undecodable value`, { cause });
  }
}

type WriteOp = { type: 'put'; key: Buffer; value: Buffer } | { type: 'del'; key: Buffer };

interface StoredSnapshotMeta extends SnapshotMeta {
  dataBytes: number;
  dataCrc: number;
  /** The data's file (snapshot-files.ts); absent in data written before snapshot files. */
  file?: string;
  /** Received from a leader (or the bootstrap seed), not a local compaction; absent: local. */
  received?: boolean;
}

export interface LevelDbStorageOptions {
  /** The LevelDB directory (the node puts it at `<dataDir>/raft`). Created if missing. */
  path: string;
  /** Where snapshot data files go; default `<path>-snapshots`. */
  snapshotDir?: string;
  logger: Logger;
  /**
   * When set, the database records the node id on first use and refuses to open under
   * another id: a data dir copied to or mounted on the wrong node is a config error.
   */
  nodeId?: string;
}

/** Who this data directory belongs to (see src/raft/node/identity.ts). */
export interface StoredIdentity {
  /**
   * Null until the node learned or founded its cluster (and for data written before ids existed).
   */
  clusterId: string | null;
  /** This node's persisted identity, made on first use of the directory. */
  nodeUid: string;
  /** The identity each peer was last seen with. */
  peerUids: Record<string, string>;
  /** No hard state, no snapshot, no log: the directory holds no Raft state. */
  empty: boolean;
}

/** Bounds on identity strings read back (they are short ids). */
export const MAX_IDENTITY_CHARS = 128;
const isIdentityString = (x: unknown): x is string =>
  typeof x === 'string' && x.length > 0 && x.length <= MAX_IDENTITY_CHARS;

/** Counters of the synced writes, for status pages and benchmarks. */
export interface StorageStats {
  /** Synced batches written (save and saveSnapshot). */
  syncedWrites: number;
  /** Commit-index-only rounds written without fsync (PersistBatch.sync false). */
  unsyncedWrites: number;
  entriesWritten: number;
  bytesWritten: number;
  /** Wall time spent in synced batches, total and worst, in milliseconds. */
  syncMsTotal: number;
  syncMsMax: number;
  snapshotIndex: number;
  firstIndex: number;
  lastIndex: number;
}

/** Where the durable snapshot's data is, to read it back in chunks (readSnapshotChunk). */
interface DurableSnapshotData {
  index: number;
  term: number;
  /** Its file; null for data written before snapshot files (kept in LevelDB). */
  file: string | null;
  bytes: number;
  crc: number;
}

/** A durable run: its key, and its last entry once truncated where the next run begins. */
interface Run {
  first: number;
  last: number;
}

/** Everything the storage knows about the durable state, mirrored in memory after load. */
interface DurableView {
  hardState: HardState;
  snapshotIndex: number;
  snapshotTerm: number;
  /** Terms of the durable entries snapshotIndex+1 .. snapshotIndex+terms.length. */
  terms: number[];
  /**
   * The durable runs in key order, so a round knows which keys to delete without reading
   * LevelDB. Their ranges (after truncation) are contiguous and end at the last index;
   * only the first may start at or below snapshotIndex, and every one ends above it.
   * Empty exactly when `terms` is.
   */
  runs: Run[];
}

/** A run read back, held until the next run's key says where it ends. */
interface HeldRun {
  first: number;
  entries: Entry[];
}

/** The log as load() reads it back: its entries after the snapshot and its runs. */
interface LoadedLog {
  snapshotIndex: number;
  snapshotTerm: number;
  entries: Entry[];
  runs: Run[];
  /** The term of the last entry accepted so far (the snapshot's before any). */
  prevTerm: number;
}

/**
 * Accepts a held run into the log, truncated where the next run (keyed `next`) begins, or
 * whole if it is the last; anything but a contiguous log above the snapshot is corruption.
 */
function acceptRun(log: LoadedLog, run: HeldRun, next: number | null): void {
  const { snapshotIndex, snapshotTerm } = log;
  const heldLast = run.first + run.entries.length - 1;
  if (next !== null && next > heldLast + 1) {
    throw new StorageCorruptError(
      `log run ${next}: gap in the log, expected index ${heldLast + 1} (torn tail?)`,
    );
  }
  const last = next === null ? heldLast : next - 1;
  if (last <= snapshotIndex) {
    throw new StorageCorruptError(
      `log run ${run.first}: its entries through ${last} are all at or below the snapshot index ${snapshotIndex} (a compaction was not atomic?)`,
    );
  }
  if (run.first <= snapshotIndex) {
    // A run straddling the snapshot: the entry at the snapshot index was checked
    // against the snapshot's term when the snapshot was written.
    const atSnapshot = run.entries[snapshotIndex - run.first]!;
    if (atSnapshot.term !== snapshotTerm) {
      throw new StorageCorruptError(
        `log entry ${snapshotIndex}: term ${atSnapshot.term}, the snapshot at that index says ${snapshotTerm}`,
      );
    }
  }
  for (let i = Math.max(run.first, snapshotIndex + 1); i <= last; i++) {
    const e = run.entries[i - run.first]!;
    if (e.term < log.prevTerm)
      throw new StorageCorruptError(
        `log entry ${i}: term ${e.term} below the previous term ${log.prevTerm}`,
      );
    log.entries.push(e);
    log.prevTerm = e.term;
  }
  log.runs.push({ first: run.first, last });
}

/**
 * One round's write in the making: its ops, and the view after it, built up as ops are added
 * and installed only once durable: the first `keep` of `terms`, then `appended`; of `runs`,
 * those in [dropFront, keepTo) (the last of them cut to end at `cutLast` if set), then
 * `added`. Installed in place after the write, so a round costs O(entries + runs deleted),
 * not O(log).
 */
interface SavePlan {
  /**
   * Deletions go first: a new run may reuse the key of a run it supersedes, and within
   * a LevelDB batch the later op on a key wins.
   */
  dels: WriteOp[];
  puts: WriteOp[];
  snapshotIndex: number;
  snapshotTerm: number;
  terms: number[];
  keep: number;
  appended: number[];
  runs: Run[];
  dropFront: number;
  keepTo: number;
  cutLast: number | null;
  added: Run[];
  hardState: HardState;
}

function newSavePlan(view: DurableView): SavePlan {
  return {
    dels: [],
    puts: [],
    snapshotIndex: view.snapshotIndex,
    snapshotTerm: view.snapshotTerm,
    terms: view.terms,
    keep: view.terms.length,
    appended: [],
    runs: view.runs,
    dropFront: 0,
    keepTo: view.runs.length,
    cutLast: null,
    added: [],
    hardState: view.hardState,
  };
}

/** The last index of the log once the plan is written. */
function planLastIndex(p: SavePlan): number {
  return p.snapshotIndex + p.keep + p.appended.length;
}

function deleteRun(p: SavePlan, run: Run): void {
  p.dels.push({ type: 'del', key: runKey(run.first) });
}

/**
 * A received snapshot: the runs it covers go (all of them unless `keepSuffix`, the log
 * holding its last entry), and it becomes the plan's snapshot. Its meta ops are the caller's.
 */
function planReceivedSnapshot(p: SavePlan, meta: SnapshotMeta, keepSuffix: boolean): void {
  assert(
    meta.index > p.snapshotIndex,
    () =>
      `received snapshot at ${meta.index} is not newer than the durable snapshot at ${p.snapshotIndex}`,
  );
  assert(
    meta.term >= p.snapshotTerm,
    () => `received snapshot term ${meta.term} below ${p.snapshotTerm}`,
  );
  const runs = p.runs;
  if (keepSuffix) {
    while (p.dropFront < p.keepTo && runs[p.dropFront]!.last <= meta.index)
      deleteRun(p, runs[p.dropFront++]!);
  } else {
    while (p.dropFront < p.keepTo) deleteRun(p, runs[p.dropFront++]!);
  }
  p.terms = keepSuffix ? p.terms.slice(meta.index - p.snapshotIndex) : [];
  p.keep = p.terms.length;
  p.snapshotIndex = meta.index;
  p.snapshotTerm = meta.term;
}

/** New entries fit after the log (or overwrite its tail) and are contiguous, terms ascending. */
function checkEntries(p: SavePlan, entries: readonly Entry[]): void {
  const first = entries[0]!;
  assert(
    first.index > p.snapshotIndex,
    () => `entry ${first.index} would overwrite the snapshot at ${p.snapshotIndex}`,
  );
  assert(
    first.index <= planLastIndex(p) + 1,
    () => `entry ${first.index} leaves a gap after the last entry ${planLastIndex(p)}`,
  );
  const prevTerm =
    first.index - 1 === p.snapshotIndex
      ? p.snapshotTerm
      : p.terms[first.index - 1 - p.snapshotIndex - 1]!;
  assert(
    first.term >= prevTerm,
    () => `entry ${first.index} term ${first.term} below its predecessor's ${prevTerm}`,
  );
  for (let k = 1; k < entries.length; k++) {
    const a = entries[k - 1]!;
    const b = entries[k]!;
    assert(b.index === a.index + 1, () => `entries not contiguous: ${a.index} then ${b.index}`);
    assert(
      b.term >= a.term,
      () => `entry ${b.index} term ${b.term} below entry ${a.index} term ${a.term}`,
    );
  }
}

/** New entries: the conflicting durable tail goes, and the entries are written as runs. */
function planEntries(p: SavePlan, entries: readonly Entry[]): void {
  checkEntries(p, entries);
  const first = entries[0]!;
  const runs = p.runs;
  // The conflicting durable tail: every run keyed at or after the new first entry goes
  // in the same batch. The run before it, if it reaches that far, stays and is cut on
  // load by the new run's key — unless all it keeps is covered by the snapshot.
  while (p.keepTo > p.dropFront && runs[p.keepTo - 1]!.first >= first.index)
    deleteRun(p, runs[--p.keepTo]!);
  if (p.keepTo > p.dropFront && runs[p.keepTo - 1]!.last >= first.index) {
    if (first.index - 1 <= p.snapshotIndex) deleteRun(p, runs[--p.keepTo]!);
    else p.cutLast = first.index - 1;
  }
  for (let k = 0; k < entries.length; k += MAX_RUN_ENTRIES) {
    const run = entries.length <= MAX_RUN_ENTRIES ? entries : entries.slice(k, k + MAX_RUN_ENTRIES);
    const runFirst = run[0]!.index;
    const key = runKey(runFirst);
    const packed = packr.pack(run);
    p.puts.push({ type: 'put', key, value: frameValue(key, packed) });
    releaseLargePackBuffer(packed); // a catch-up's run of megabytes (frameValue copied it)
    p.added.push({ first: runFirst, last: run[run.length - 1]!.index });
  }
  p.keep = first.index - p.snapshotIndex - 1;
  p.appended = entries.map((e) => e.term);
}

/** A new hard state: term and commit never move back, the vote never changes within a term. */
function planHardState(p: SavePlan, hs: HardState): void {
  const old = p.hardState;
  assert(hs.term >= old.term, () => `hard state term moves back from ${old.term} to ${hs.term}`);
  assert(
    hs.term > old.term || old.vote === null || hs.vote === old.vote,
    () => `vote changes within term ${hs.term} from ${old.vote} to ${hs.vote}`,
  );
  assert(
    hs.commit >= old.commit,
    () => `commit index moves back from ${old.commit} to ${hs.commit}`,
  );
  p.hardState = { term: hs.term, vote: hs.vote, commit: hs.commit };
  p.puts.push({
    type: 'put',
    key: KEY_HARD_STATE,
    value: frameValue(KEY_HARD_STATE, packr.pack(p.hardState)),
  });
}

/** After the plan: the commit index within the log, the last entry's term within the term. */
function checkPlan(p: SavePlan): void {
  const hardState = p.hardState;
  assert(
    hardState.commit <= planLastIndex(p),
    () => `commit index ${hardState.commit} beyond the last durable entry ${planLastIndex(p)}`,
  );
  const lastTerm =
    p.appended.length > 0
      ? p.appended[p.appended.length - 1]!
      : p.keep > 0
        ? p.terms[p.keep - 1]!
        : p.snapshotTerm;
  assert(
    lastTerm <= hardState.term,
    () => `last entry term ${lastTerm} above the current term ${hardState.term}`,
  );
}

/** Once the plan's write is durable: the view after it (the view's arrays edited in place). */
function installPlan(p: SavePlan): DurableView {
  const { terms, runs, keepTo } = p;
  terms.length = p.keep;
  for (const t of p.appended) terms.push(t);
  runs.length = keepTo;
  if (p.cutLast !== null) runs[keepTo - 1] = { first: runs[keepTo - 1]!.first, last: p.cutLast };
  for (const r of p.added) runs.push(r);
  if (p.dropFront > 0) runs.splice(0, p.dropFront);
  const { hardState, snapshotIndex, snapshotTerm } = p;
  return { hardState, snapshotIndex, snapshotTerm, terms, runs };
}

export class LevelDbStorage implements LogStorage {
  private readonly db: Level<Buffer, Buffer>;
  private readonly logger: Logger;
  private readonly nodeId: string | undefined;
  private view: DurableView | null = null;
  /** The durable snapshot's data, where it is (set once its meta is durable). */
  private snapshotData: DurableSnapshotData | null = null;
  /** Serializes writes: each waits for the previous one. */
  private readonly writes: SerialWrites;
  /** Serializes the (advisory) peer identity writes, apart from the log's. */
  private identityTail: Promise<void> = Promise.resolve();
  private readonly files: SnapshotFiles;
  /** Removal of snapshot files no meta names any more, after each new durable meta. */
  private housekeeping: Promise<void> = Promise.resolve();
  /** The identity record as read or written (set by readIdentity or load). */
  private identity: { clusterId: string | null; nodeUid: string } | null = null;
  private closed = false;
  private readonly counters = {
    syncedWrites: 0,
    unsyncedWrites: 0,
    entriesWritten: 0,
    bytesWritten: 0,
    syncMsTotal: 0,
    syncMsMax: 0,
  };

  constructor(options: LevelDbStorageOptions) {
    this.db = new Level<Buffer, Buffer>(options.path, {
      keyEncoding: 'buffer',
      valueEncoding: 'buffer',
      cacheSize: LEVELDB_CACHE_BYTES,
      writeBufferSize: LEVELDB_WRITE_BUFFER_BYTES,
    });
    this.logger = options.logger.child({ component: 'raft-storage' });
    this.writes = new SerialWrites(
      this.logger,
      () => this.closed,
      () => this.view !== null,
    );
    this.nodeId = options.nodeId;
    this.files = new SnapshotFiles(options.snapshotDir ?? `${options.path}-snapshots`, this.logger);
  }

  /** The term of a durable entry (or of the snapshot's last entry); null if not held. */
  private termAt(index: number): number | null {
    return durableTermAt(this.view!, index);
  }

  stats(): StorageStats {
    return { ...this.counters, ...durableRange(this.view) };
  }

  /**
   * One LevelDB batch, synced unless the caller says it need not be (see PersistBatch.sync), timed.
   */
  private async syncedBatch(ops: WriteOp[], entries: number, sync = true): Promise<void> {
    const t0 = performance.now();
    await this.db.batch(ops, { sync });
    const ms = performance.now() - t0;
    const c = this.counters;
    if (sync) c.syncedWrites++;
    else c.unsyncedWrites++;
    c.entriesWritten += entries;
    for (const op of ops) if (op.type === 'put') c.bytesWritten += op.key.length + op.value.length;
    c.syncMsTotal += ms;
    if (ms > c.syncMsMax) c.syncMsMax = ms;
  }

  async load(): Promise<LoadedState> {
    assert(!this.closed, 'load after close');
    assert(this.view === null, 'load called twice');
    if (this.db.status !== 'open') await this.db.open();
    try {
      return await this.doLoad();
    } catch (err) {
      // Release the database (and its lock) so an operator's tools can inspect it.
      await this.db.close().catch(() => undefined);
      throw err;
    }
  }

  private async doLoad(): Promise<LoadedState> {
    await this.checkIdentity();

    const hardState = await this.readHardState();
    const stored = await this.readSnapshot();
    const snapshot = stored && { meta: stored.meta, data: stored.data };
    const snapshotIndex = snapshot?.meta.index ?? 0;
    const snapshotTerm = snapshot?.meta.term ?? 0;
    const { entries, runs, prevTerm } = await this.readRuns(snapshotIndex, snapshotTerm);

    const lastIndex = snapshotIndex + entries.length;
    if (hardState.commit > lastIndex) {
      throw new StorageCorruptError(
        `hard state commit index ${hardState.commit} is beyond the last durable entry ${lastIndex} (lost tail?)`,
      );
    }
    if (prevTerm > hardState.term) {
      throw new StorageCorruptError(
        `last entry term ${prevTerm} is above the hard state term ${hardState.term}`,
      );
    }

    this.view = { hardState, snapshotIndex, snapshotTerm, terms: entries.map((e) => e.term), runs };
    this.logger.info(
      {
        term: hardState.term,
        commit: hardState.commit,
        snapshotIndex,
        firstIndex: snapshotIndex + 1,
        lastIndex,
        runs: runs.length,
      },
      'raft storage loaded',
    );
    if (stored?.received) return { hardState, snapshot, snapshotReceived: true, entries };
    return { hardState, snapshot, entries };
  }

  /**
   * Reads the runs in key order; each is held back until the next one's key says where it
   * ends (see the header: a run is truncated where the next run begins).
   */
  private async readRuns(snapshotIndex: number, snapshotTerm: number): Promise<LoadedLog> {
    const log: LoadedLog = {
      snapshotIndex,
      snapshotTerm,
      entries: [],
      runs: [],
      prevTerm: snapshotTerm,
    };
    let held: HeldRun | null = null;
    for await (const [key, value] of this.db.iterator({
      gte: runKey(0),
      lte: runKey(Number.MAX_SAFE_INTEGER),
    })) {
      const first = runFirstOfKey(key);
      if (first === null) throw new StorageCorruptError(`malformed run key ${key.toString('hex')}`);
      const what = `log run ${first}`;
      if (held === null && first > snapshotIndex + 1) {
        throw new StorageCorruptError(
          `${what}: gap in the log, expected index ${snapshotIndex + 1} (torn tail?)`,
        );
      }
      if (held !== null && first <= snapshotIndex) {
        throw new StorageCorruptError(
          `${what}: at or below the snapshot index ${snapshotIndex} (a compaction was not atomic?)`,
        );
      }
      const run = this.decodeRun(key, value, first, what);
      if (held !== null) acceptRun(log, held, first);
      held = { first, entries: run };
    }
    if (held !== null) acceptRun(log, held, null);
    return log;
  }

  /** Decodes one run value and checks each entry: its shape, and that it sits at first+i. */
  private decodeRun(key: Buffer, value: Buffer, first: number, what: string): Entry[] {
    const run = decodePayload(unframeValue(key, value, what), what);
    if (!Array.isArray(run) || run.length === 0)
      throw new StorageCorruptError(`${what}: not a non-empty list of entries`);
    for (let i = 0; i < run.length; i++) {
      const ewhat = `log entry ${first + i} (run ${first})`;
      const problem = checkEntry(run[i], ewhat);
      if (problem) throw new StorageCorruptError(problem);
      const e = run[i] as Entry;
      if (e.index !== first + i)
        throw new StorageCorruptError(`${ewhat}: value says index ${e.index}`);
    }
    return run as Entry[];
  }

  /**
   * Reads (on first use: makes and persists) who this directory belongs to, before the
   * log is loaded: the node decides from it whether it may start (src/raft/node).
   */
  async readIdentity(): Promise<StoredIdentity> {
    assert(!this.closed, 'readIdentity after close');
    assert(this.view === null, 'readIdentity after load');
    if (this.db.status !== 'open') await this.db.open();
    try {
      await this.checkIdentity();
      const [hs, meta] = await this.db.getMany([KEY_HARD_STATE, KEY_SNAPSHOT_META]);
      let runs = 0;
      for await (const key of this.db.keys({
        gte: runKey(0),
        lte: runKey(Number.MAX_SAFE_INTEGER),
        limit: 1,
      }))
        if (key) runs++;
      const id = this.identity!;
      return {
        clusterId: id.clusterId,
        nodeUid: id.nodeUid,
        peerUids: await this.readPeerIdentities(),
        empty: hs === undefined && meta === undefined && runs === 0,
      };
    } catch (err) {
      await this.db.close().catch(() => undefined);
      throw err;
    }
  }

  /** Records the cluster this directory belongs to (once: founded or learned at first start). */
  async saveClusterId(clusterId: string): Promise<void> {
    assert(this.view === null, 'the cluster id is settled before the log is loaded');
    const id = this.identity;
    assert(id !== null, 'saveClusterId before readIdentity');
    assert(
      id.clusterId === null || id.clusterId === clusterId,
      () => `the directory belongs to cluster ${id.clusterId}, not ${clusterId}`,
    );
    if (id.clusterId === clusterId) return;
    await this.writeIdentity(clusterId, id.nodeUid);
  }

  /**
   * Persists the identities peers were last seen with. Advisory (a lost write only means a
   * wiped peer is recognised later), so it runs beside the log's writes, in order, and a
   * failure is logged, not fatal.
   */
  savePeerIdentities(peerUids: Readonly<Record<string, string>>): Promise<void> {
    const payload = packr.pack({ ...peerUids });
    const run = this.identityTail.then(async () => {
      if (this.closed || this.db.status !== 'open') return;
      await this.db.put(KEY_PEER_IDENTITIES, frameValue(KEY_PEER_IDENTITIES, payload), {
        sync: true,
      });
    });
    this.identityTail = run.catch((err: unknown) =>
      this.logger.warn({ err }, 'could not persist peer identities'),
    );
    return this.identityTail;
  }

  private async readPeerIdentities(): Promise<Record<string, string>> {
    const raw = await this.db.get(KEY_PEER_IDENTITIES);
    if (raw === undefined) return {};
    const value = decodePayload(
      unframeValue(KEY_PEER_IDENTITIES, raw, 'peer identities'),
      'peer identities',
    );
    if (!isObject(value)) throw new StorageCorruptError('peer identities record is malformed');
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(value)) {
      if (!isNodeId(k) || !isIdentityString(v))
        throw new StorageCorruptError('peer identities record holds a malformed entry');
      out[k] = v;
    }
    return out;
  }

  private async writeIdentity(clusterId: string | null, nodeUid: string): Promise<void> {
    const payload = packr.pack({
      format: STORAGE_FORMAT_VERSION,
      nodeId: this.nodeId ?? null,
      clusterId,
      nodeUid,
    });
    await this.db.put(KEY_IDENTITY, frameValue(KEY_IDENTITY, payload), { sync: true });
    this.identity = { clusterId, nodeUid };
  }

  private async checkIdentity(): Promise<void> {
    if (this.identity !== null) return;
    const raw = await this.db.get(KEY_IDENTITY);
    if (raw === undefined) {
      await this.writeIdentity(null, randomUUID());
      return;
    }
    // Read whatever format wrote it (the checksum still holds across formats), so that data
    // from another build is named as such rather than reported as a torn value.
    const identity = decodePayload(unframeValue(KEY_IDENTITY, raw, 'identity', true), 'identity');
    if (!isObject(identity) || !isIndex(identity.format))
      throw new StorageCorruptError('identity record is malformed');
    const format = raw[0] !== STORAGE_FORMAT_VERSION ? raw[0]! : identity.format;
    if (format !== STORAGE_FORMAT_VERSION) {
      throw new ConfigError(
        'dataDir',
        `the raft data is in unknown storage format ${format}: this build reads format ${STORAGE_FORMAT_VERSION} only ` +
          'and does not convert data in place; wrong data directory, or data from another Concord version?',
      );
    }
    if (this.nodeId !== undefined && isNodeId(identity.nodeId) && identity.nodeId !== this.nodeId) {
      throw new ConfigError(
        'dataDir',
        `the raft data belongs to node "${identity.nodeId}", not "${this.nodeId}"; wrong data directory?`,
      );
    }
    const clusterId = identity.clusterId ?? null;
    const nodeUid = identity.nodeUid ?? null;
    if (
      !(clusterId === null || isIdentityString(clusterId)) ||
      !(nodeUid === null || isIdentityString(nodeUid))
    )
      throw new StorageCorruptError('identity record has a malformed cluster id or node identity');
    // Data from before node identities existed gets one now.
    if (nodeUid === null) await this.writeIdentity(clusterId, randomUUID());
    else this.identity = { clusterId, nodeUid };
  }

  private async readHardState(): Promise<HardState> {
    const raw = await this.db.get(KEY_HARD_STATE);
    if (raw === undefined) return { term: 0, vote: null, commit: 0 };
    const hs = decodePayload(unframeValue(KEY_HARD_STATE, raw, 'hard state'), 'hard state');
    if (
      !isObject(hs) ||
      !isIndex(hs.term) ||
      !isIndex(hs.commit) ||
      !(hs.vote === null || isNodeId(hs.vote))
    ) {
      throw new StorageCorruptError('hard state has a malformed value');
    }
    return { term: hs.term, vote: hs.vote, commit: hs.commit };
  }

  private async readSnapshot(): Promise<(Snapshot & { received: boolean }) | null> {
    const [rawMeta, rawData] = await this.db.getMany([KEY_SNAPSHOT_META, KEY_SNAPSHOT_DATA]);
    if (rawMeta === undefined && rawData === undefined) {
      this.tidySnapshotFiles(null);
      return null;
    }
    if (rawMeta === undefined) throw new StorageCorruptError('snapshot meta is missing');
    const meta = decodePayload(
      unframeValue(KEY_SNAPSHOT_META, rawMeta, 'snapshot meta'),
      'snapshot meta',
    );
    const problem = checkSnapshotMeta(meta, 'snapshot meta');
    if (problem) throw new StorageCorruptError(problem);
    const m = meta as unknown as StoredSnapshotMeta;
    if (!isIndex(m.dataBytes) || !isIndex(m.dataCrc))
      throw new StorageCorruptError('snapshot meta lacks its data size and checksum');
    const snapshotMeta = { index: m.index, term: m.term, conf: m.conf };
    if (m.file !== undefined) {
      if (typeof m.file !== 'string')
        throw new StorageCorruptError('snapshot meta file is malformed');
      const data = await this.files.read(m.file, m.dataBytes, m.dataCrc);
      this.tidySnapshotFiles(m.file);
      this.snapshotData = {
        index: m.index,
        term: m.term,
        file: m.file,
        bytes: m.dataBytes,
        crc: m.dataCrc,
      };
      return { meta: snapshotMeta, data, received: m.received === true };
    }
    if (rawData === undefined) throw new StorageCorruptError('snapshot data is missing');
    const data = unframeValue(KEY_SNAPSHOT_DATA, rawData, 'snapshot data');
    if (data.length !== m.dataBytes || crc32(data) !== m.dataCrc) {
      throw new StorageCorruptError(
        `snapshot data does not match its meta (${data.length} bytes, meta says ${m.dataBytes})`,
      );
    }
    this.snapshotData = {
      index: m.index,
      term: m.term,
      file: null,
      bytes: m.dataBytes,
      crc: m.dataCrc,
    };
    return {
      meta: snapshotMeta,
      data: new Uint8Array(data.buffer, data.byteOffset, data.length),
      received: m.received === true,
    };
  }

  async readSnapshotChunk(
    index: number,
    term: number,
    offset: number,
    length: number,
  ): Promise<SnapshotChunkRead | null> {
    const d = this.snapshotData;
    if (this.closed || d === null || d.index !== index || d.term !== term) return null;
    if (!(isIndex(offset) && isIndex(length) && offset + length <= d.bytes)) {
      throw new StorageCorruptError(
        `snapshot chunk [${offset}, +${length}) asked beyond the snapshot's ${d.bytes} bytes at ${index}`,
      );
    }
    let data: Uint8Array;
    if (d.file !== null) {
      try {
        data = await this.files.readAt(d.file, offset, length);
      } catch (err) {
        // Removed under us because a newer snapshot replaced it: that one is sent instead.
        if (this.snapshotData !== d) return null;
        throw err;
      }
    } else {
      // Data written before snapshot files, in LevelDB: read whole, checked, then sliced.
      const raw = await this.db.get(KEY_SNAPSHOT_DATA);
      if (this.snapshotData !== d) return null;
      if (raw === undefined) throw new StorageCorruptError('snapshot data is missing');
      const all = unframeValue(KEY_SNAPSHOT_DATA, raw, 'snapshot data');
      if (all.length !== d.bytes || crc32(all) !== d.crc)
        throw new StorageCorruptError('snapshot data does not match its meta');
      data = new Uint8Array(all.buffer, all.byteOffset + offset, length);
    }
    return { data, bytes: d.bytes, crc: d.crc };
  }

  /** Removes the snapshot files no durable meta names (after `keep` became the one). */
  private tidySnapshotFiles(keep: string | null): void {
    this.housekeeping = this.housekeeping.then(() => this.files.removeAllBut(keep));
  }

  save(batch: PersistBatch): Promise<void> {
    return this.serialize(() => this.doSave(batch));
  }

  /**
   * Local compaction. The data file is written and fsynced first, in parallel with the
   * rounds' writes; only the meta batch (which names the file and deletes the runs the
   * snapshot covers) joins their chain.
   */
  async saveSnapshot(snapshot: Snapshot): Promise<void> {
    assert(!this.closed, 'saveSnapshot after close');
    const file = await this.files.write(snapshot);
    await this.serialize(() => this.doSaveSnapshot(snapshot, file));
  }

  private serialize(write: () => Promise<void>): Promise<void> {
    return this.writes.run(write);
  }

  private snapshotOps(snapshot: Snapshot, file: SnapshotFile, received: boolean): WriteOp[] {
    const meta: StoredSnapshotMeta = {
      index: snapshot.meta.index,
      term: snapshot.meta.term,
      conf: snapshot.meta.conf,
      dataBytes: file.bytes,
      dataCrc: file.crc,
      file: file.file,
      ...(received ? { received } : {}),
    };
    return [
      { type: 'del', key: KEY_SNAPSHOT_DATA },
      {
        type: 'put',
        key: KEY_SNAPSHOT_META,
        value: frameValue(KEY_SNAPSHOT_META, packr.pack(meta)),
      },
    ];
  }

  private async doSave(batch: PersistBatch): Promise<void> {
    // A received snapshot's data goes to its file first; the batch below names it.
    const file = batch.snapshot ? await this.files.write(batch.snapshot) : null;
    const plan = newSavePlan(this.view!);
    if (batch.snapshot) {
      const meta = batch.snapshot.meta;
      // Raft §7: if the log holds the snapshot's last entry (same index and term), the
      // entries after it stay (so does a run straddling it); otherwise the whole log is discarded.
      planReceivedSnapshot(plan, meta, this.termAt(meta.index) === meta.term);
      plan.puts.push(...this.snapshotOps(batch.snapshot, file!, true));
    }
    if (batch.entries.length > 0) planEntries(plan, batch.entries);
    if (batch.hardState) planHardState(plan, batch.hardState);
    checkPlan(plan);

    const ops = plan.dels.length === 0 ? plan.puts : plan.dels.concat(plan.puts);
    if (ops.length === 0) return;
    await this.syncedBatch(ops, batch.entries.length, batch.sync ?? true);
    const view = installPlan(plan);
    if (batch.snapshot) {
      this.snapshotData = {
        index: batch.snapshot.meta.index,
        term: batch.snapshot.meta.term,
        file: file!.file,
        bytes: file!.bytes,
        crc: file!.crc,
      };
      this.logger.debug(
        { index: view.snapshotIndex, term: view.snapshotTerm, keptEntries: plan.keep },
        'received snapshot persisted',
      );
      this.tidySnapshotFiles(file!.file);
    }
    this.view = view;
  }

  private async doSaveSnapshot(snapshot: Snapshot, file: SnapshotFile): Promise<void> {
    const view = this.view!;
    const meta = snapshot.meta;
    if (meta.index <= view.snapshotIndex) {
      // A snapshot from the leader already covered this point; compaction has nothing to do.
      this.logger.debug(
        { index: meta.index, durable: view.snapshotIndex },
        'stale local snapshot ignored',
      );
      this.tidySnapshotFiles(SnapshotFiles.fileName(view.snapshotIndex, view.snapshotTerm));
      return;
    }
    assert(
      meta.index <= view.hardState.commit,
      () => `snapshot at ${meta.index} beyond the commit index ${view.hardState.commit}`,
    );
    const term = this.termAt(meta.index);
    assert(
      term === meta.term,
      () => `snapshot at ${meta.index} says term ${meta.term}, the log holds ${term}`,
    );
    // Only runs wholly covered go; one straddling the snapshot stays (load skips its head).
    const runs = view.runs;
    const ops: WriteOp[] = [];
    let drop = 0;
    while (drop < runs.length && runs[drop]!.last <= meta.index)
      ops.push({ type: 'del', key: runKey(runs[drop++]!.first) });
    ops.push(...this.snapshotOps(snapshot, file, false));
    await this.syncedBatch(ops, 0);
    this.snapshotData = {
      index: meta.index,
      term: meta.term,
      file: file.file,
      bytes: file.bytes,
      crc: file.crc,
    };
    this.tidySnapshotFiles(file.file);
    runs.splice(0, drop);
    this.view = {
      hardState: view.hardState,
      snapshotIndex: meta.index,
      snapshotTerm: meta.term,
      terms: view.terms.slice(meta.index - view.snapshotIndex),
      runs,
    };
    this.logger.debug(
      { index: meta.index, term: meta.term, bytes: snapshot.data.length, runsDeleted: drop },
      'log compacted',
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.writes.drained();
    await this.identityTail;
    await this.housekeeping;
    this.closed = true;
    if (this.db.status === 'open' || this.db.status === 'opening') await this.db.close();
  }
}
