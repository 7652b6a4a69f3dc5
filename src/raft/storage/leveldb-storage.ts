/**
 * LogStorage on LevelDB (`level`): one database per node data dir holding the Raft log,
 * the hard state and the latest snapshot (its meta carries the membership as of its index;
 * later membership changes are conf entries in the log).
 *
 * Layout (keys are binary and sort in log order):
 *   0x01 ‖ u64be(index)   one log entry
 *   0x02                  hard state {term, vote, commit}
 *   0x03                  snapshot meta {index, term, conf, dataBytes, dataCrc}
 *   0x04                  snapshot data
 *   0x05                  identity {format, nodeId}
 *
 * Every value is framed as  u8 format ‖ u32be crc32(key ‖ payload) ‖ msgpackr(payload),
 * so a flipped byte, a truncated value or a value stored under the wrong key is caught by
 * `load()` and reported as StorageCorruptError rather than handed to the core.
 *
 * Durability: `save()` is ONE `db.batch(ops, { sync: true })` per Raft round (group
 * commit): the round's entries, the deletion of any conflicting durable tail, a received
 * snapshot (with the deletion of the entries it covers) and the hard state. `saveSnapshot()`
 * is likewise one synced batch. Writes are serialized; a failed write poisons the storage
 * (the node must stop — its in-memory view of the disk can no longer be trusted).
 */
import { performance } from 'node:perf_hooks';
import { Level } from 'level';
import { Packr } from 'msgpackr';
import type { Entry, HardState, Snapshot, SnapshotMeta } from '../core/types.ts';
import type { LoadedState, LogStorage, PersistBatch } from '../ports.ts';
import { assert, ConfigError, StorageCorruptError, StoppedError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { crc32 } from './crc32.ts';
import { checkEntry, checkSnapshotMeta, isIndex, isNodeId, isObject } from './shape.ts';

/** Version byte at the head of every stored value; bump on an incompatible layout change. */
export const STORAGE_FORMAT_VERSION = 1;
/** u8 format + u32 crc. */
const VALUE_HEADER_BYTES = 5;

const PREFIX_ENTRY = 0x01;
const KEY_HARD_STATE = Buffer.from([0x02]);
const KEY_SNAPSHOT_META = Buffer.from([0x03]);
const KEY_SNAPSHOT_DATA = Buffer.from([0x04]);
const KEY_IDENTITY = Buffer.from([0x05]);
const ENTRY_KEY_BYTES = 9;

/** Upper bound on the LevelDB block cache; the log is read once at start, so small is fine. */
export const LEVELDB_CACHE_BYTES = 8 * 1024 * 1024;
/** LevelDB memtable size before a flush to an sstable. */
export const LEVELDB_WRITE_BUFFER_BYTES = 4 * 1024 * 1024;

const packr = new Packr({ useRecords: false, copyBuffers: true });

export function entryKey(index: number): Buffer {
  const key = Buffer.allocUnsafe(ENTRY_KEY_BYTES);
  key[0] = PREFIX_ENTRY;
  key.writeBigUInt64BE(BigInt(index), 1);
  return key;
}

function entryIndexOfKey(key: Buffer): number | null {
  if (key.length !== ENTRY_KEY_BYTES || key[0] !== PREFIX_ENTRY) return null;
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

function unframeValue(key: Buffer, value: Buffer, what: string): Buffer {
  if (value.length < VALUE_HEADER_BYTES) {
    throw new StorageCorruptError(`${what}: value of ${value.length} bytes is shorter than its header (torn write?)`);
  }
  if (value[0] !== STORAGE_FORMAT_VERSION) {
    throw new StorageCorruptError(`${what}: unknown storage format ${value[0]} (expected ${STORAGE_FORMAT_VERSION})`);
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

function encodeEntry(entry: Entry): Buffer {
  return frameValue(entryKey(entry.index), packr.pack(entry));
}

interface StoredSnapshotMeta extends SnapshotMeta {
  dataBytes: number;
  dataCrc: number;
}

export interface LevelDbStorageOptions {
  /** The LevelDB directory (the node puts it at `<dataDir>/raft`). Created if missing. */
  path: string;
  logger: Logger;
  /**
   * When set, the database records the node id on first use and refuses to open under
   * another id: a data dir copied to or mounted on the wrong node is a config error.
   */
  nodeId?: string;
}

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

/** Everything the storage knows about the durable state, mirrored in memory after load. */
interface DurableView {
  hardState: HardState;
  snapshotIndex: number;
  snapshotTerm: number;
  /** Terms of the durable entries snapshotIndex+1 .. snapshotIndex+terms.length. */
  terms: number[];
}

export class LevelDbStorage implements LogStorage {
  private readonly db: Level<Buffer, Buffer>;
  private readonly logger: Logger;
  private readonly nodeId: string | undefined;
  private view: DurableView | null = null;
  /** Serializes writes: each waits for the previous one. */
  private tail: Promise<void> = Promise.resolve();
  private failed: unknown = null;
  private closed = false;
  private readonly counters = { syncedWrites: 0, unsyncedWrites: 0, entriesWritten: 0, bytesWritten: 0, syncMsTotal: 0, syncMsMax: 0 };

  constructor(options: LevelDbStorageOptions) {
    this.db = new Level<Buffer, Buffer>(options.path, {
      keyEncoding: 'buffer',
      valueEncoding: 'buffer',
      cacheSize: LEVELDB_CACHE_BYTES,
      writeBufferSize: LEVELDB_WRITE_BUFFER_BYTES,
    });
    this.logger = options.logger.child({ component: 'raft-storage' });
    this.nodeId = options.nodeId;
  }

  private get lastIndex(): number {
    const v = this.view!;
    return v.snapshotIndex + v.terms.length;
  }

  /** The term of a durable entry (or of the snapshot's last entry); null if not held. */
  private termAt(index: number): number | null {
    const v = this.view!;
    if (index === v.snapshotIndex) return v.snapshotTerm;
    if (index < v.snapshotIndex || index > this.lastIndex) return null;
    return v.terms[index - v.snapshotIndex - 1] ?? null;
  }

  stats(): StorageStats {
    const v = this.view;
    return {
      ...this.counters,
      snapshotIndex: v?.snapshotIndex ?? 0,
      firstIndex: (v?.snapshotIndex ?? 0) + 1,
      lastIndex: v ? this.lastIndex : 0,
    };
  }

  /** One LevelDB batch, synced unless the caller says it need not be (see PersistBatch.sync), timed. */
  private async syncedBatch(ops: Array<{ type: 'put'; key: Buffer; value: Buffer } | { type: 'del'; key: Buffer }>, entries: number, sync = true): Promise<void> {
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
    const snapshot = await this.readSnapshot();
    const snapshotIndex = snapshot?.meta.index ?? 0;
    const snapshotTerm = snapshot?.meta.term ?? 0;

    const entries: Entry[] = [];
    let expected = snapshotIndex + 1;
    let prevTerm = snapshotTerm;
    for await (const [key, value] of this.db.iterator({ gte: entryKey(0), lte: entryKey(Number.MAX_SAFE_INTEGER) })) {
      const index = entryIndexOfKey(key);
      if (index === null) throw new StorageCorruptError(`malformed entry key ${key.toString('hex')}`);
      const what = `log entry ${index}`;
      if (index !== expected) {
        throw new StorageCorruptError(
          index < expected
            ? `${what}: at or below the snapshot index ${snapshotIndex} (a compaction was not atomic?)`
            : `${what}: gap in the log, expected index ${expected} (torn tail?)`,
        );
      }
      const entry = decodePayload(unframeValue(key, value, what), what);
      const problem = checkEntry(entry, what);
      if (problem) throw new StorageCorruptError(problem);
      const e = entry as Entry;
      if (e.index !== index) throw new StorageCorruptError(`${what}: value says index ${e.index}`);
      if (e.term < prevTerm) throw new StorageCorruptError(`${what}: term ${e.term} below the previous term ${prevTerm}`);
      entries.push(e);
      prevTerm = e.term;
      expected++;
    }

    const lastIndex = snapshotIndex + entries.length;
    if (hardState.commit > lastIndex) {
      throw new StorageCorruptError(
        `hard state commit index ${hardState.commit} is beyond the last durable entry ${lastIndex} (lost tail?)`,
      );
    }
    if (prevTerm > hardState.term) {
      throw new StorageCorruptError(`last entry term ${prevTerm} is above the hard state term ${hardState.term}`);
    }

    this.view = { hardState, snapshotIndex, snapshotTerm, terms: entries.map((e) => e.term) };
    this.logger.info(
      { term: hardState.term, commit: hardState.commit, snapshotIndex, firstIndex: snapshotIndex + 1, lastIndex },
      'raft storage loaded',
    );
    return { hardState, snapshot, entries };
  }

  private async checkIdentity(): Promise<void> {
    const raw = await this.db.get(KEY_IDENTITY);
    if (raw === undefined) {
      const payload = packr.pack({ format: STORAGE_FORMAT_VERSION, nodeId: this.nodeId ?? null });
      await this.db.put(KEY_IDENTITY, frameValue(KEY_IDENTITY, payload), { sync: true });
      return;
    }
    const identity = decodePayload(unframeValue(KEY_IDENTITY, raw, 'identity'), 'identity');
    if (!isObject(identity) || identity.format !== STORAGE_FORMAT_VERSION) {
      throw new StorageCorruptError('identity record has an unknown format');
    }
    if (this.nodeId !== undefined && isNodeId(identity.nodeId) && identity.nodeId !== this.nodeId) {
      throw new ConfigError(
        'dataDir',
        `the raft data belongs to node "${identity.nodeId}", not "${this.nodeId}"; wrong data directory?`,
      );
    }
  }

  private async readHardState(): Promise<HardState> {
    const raw = await this.db.get(KEY_HARD_STATE);
    if (raw === undefined) return { term: 0, vote: null, commit: 0 };
    const hs = decodePayload(unframeValue(KEY_HARD_STATE, raw, 'hard state'), 'hard state');
    if (!isObject(hs) || !isIndex(hs.term) || !isIndex(hs.commit) || !(hs.vote === null || isNodeId(hs.vote))) {
      throw new StorageCorruptError('hard state has a malformed value');
    }
    return { term: hs.term, vote: hs.vote, commit: hs.commit };
  }

  private async readSnapshot(): Promise<Snapshot | null> {
    const [rawMeta, rawData] = await this.db.getMany([KEY_SNAPSHOT_META, KEY_SNAPSHOT_DATA]);
    if (rawMeta === undefined && rawData === undefined) return null;
    if (rawMeta === undefined || rawData === undefined) {
      throw new StorageCorruptError(`snapshot ${rawMeta === undefined ? 'meta' : 'data'} is missing`);
    }
    const meta = decodePayload(unframeValue(KEY_SNAPSHOT_META, rawMeta, 'snapshot meta'), 'snapshot meta');
    const problem = checkSnapshotMeta(meta, 'snapshot meta');
    if (problem) throw new StorageCorruptError(problem);
    const m = meta as unknown as StoredSnapshotMeta;
    if (!isIndex(m.dataBytes) || !isIndex(m.dataCrc)) throw new StorageCorruptError('snapshot meta lacks its data size and checksum');
    const data = unframeValue(KEY_SNAPSHOT_DATA, rawData, 'snapshot data');
    if (data.length !== m.dataBytes || crc32(data) !== m.dataCrc) {
      throw new StorageCorruptError(
        `snapshot data does not match its meta (${data.length} bytes, meta says ${m.dataBytes})`,
      );
    }
    return {
      meta: { index: m.index, term: m.term, conf: m.conf },
      data: new Uint8Array(data.buffer, data.byteOffset, data.length),
    };
  }

  save(batch: PersistBatch): Promise<void> {
    return this.serialize(() => this.doSave(batch));
  }

  saveSnapshot(snapshot: Snapshot): Promise<void> {
    return this.serialize(() => this.doSaveSnapshot(snapshot));
  }

  private serialize(write: () => Promise<void>): Promise<void> {
    const run = this.tail.then(async () => {
      if (this.closed) throw new StoppedError('raft storage is closed');
      if (this.failed !== null) throw new StoppedError('raft storage failed an earlier write', { cause: this.failed });
      assert(this.view !== null, 'raft storage written before load');
      try {
        await write();
      } catch (err) {
        this.failed = err;
        this.logger.error({ err }, 'raft storage write failed; storage refuses further writes');
        throw err;
      }
    });
    this.tail = run.catch(() => undefined);
    return run;
  }

  private snapshotOps(snapshot: Snapshot): Array<{ type: 'put'; key: Buffer; value: Buffer }> {
    const data = snapshot.data;
    const meta: StoredSnapshotMeta = {
      index: snapshot.meta.index,
      term: snapshot.meta.term,
      conf: snapshot.meta.conf,
      dataBytes: data.length,
      dataCrc: crc32(data),
    };
    return [
      { type: 'put', key: KEY_SNAPSHOT_META, value: frameValue(KEY_SNAPSHOT_META, packr.pack(meta)) },
      { type: 'put', key: KEY_SNAPSHOT_DATA, value: frameValue(KEY_SNAPSHOT_DATA, data) },
    ];
  }

  private async doSave(batch: PersistBatch): Promise<void> {
    const view = this.view!;
    type Op = { type: 'put'; key: Buffer; value: Buffer } | { type: 'del'; key: Buffer };
    const ops: Op[] = [];
    // The view after this batch, built up as ops are added and installed only once durable:
    // the first `keep` of `terms`, then `appended` (applied in place after the write, so a
    // round costs O(entries), not O(log)).
    let snapshotIndex = view.snapshotIndex;
    let snapshotTerm = view.snapshotTerm;
    let terms = view.terms;
    let keep = terms.length;
    let appended: number[] = [];
    const lastOf = () => snapshotIndex + keep + appended.length;

    if (batch.snapshot) {
      const meta = batch.snapshot.meta;
      assert(
        meta.index > view.snapshotIndex,
        () => `received snapshot at ${meta.index} is not newer than the durable snapshot at ${view.snapshotIndex}`,
      );
      assert(meta.term >= view.snapshotTerm, () => `received snapshot term ${meta.term} below ${view.snapshotTerm}`);
      // Raft §7: if the log holds the snapshot's last entry (same index and term), the
      // entries after it stay; otherwise the whole log is discarded.
      const keepSuffix = this.termAt(meta.index) === meta.term;
      const deleteThrough = keepSuffix ? meta.index : lastOf();
      for (let i = snapshotIndex + 1; i <= deleteThrough; i++) ops.push({ type: 'del', key: entryKey(i) });
      ops.push(...this.snapshotOps(batch.snapshot));
      terms = keepSuffix ? terms.slice(meta.index - snapshotIndex) : [];
      keep = terms.length;
      snapshotIndex = meta.index;
      snapshotTerm = meta.term;
    }

    const entries = batch.entries;
    if (entries.length > 0) {
      const first = entries[0]!;
      assert(first.index > snapshotIndex, () => `entry ${first.index} would overwrite the snapshot at ${snapshotIndex}`);
      assert(first.index <= lastOf() + 1, () => `entry ${first.index} leaves a gap after the last entry ${lastOf()}`);
      const prevTerm = first.index - 1 === snapshotIndex ? snapshotTerm : terms[first.index - 1 - snapshotIndex - 1]!;
      assert(first.term >= prevTerm, () => `entry ${first.index} term ${first.term} below its predecessor's ${prevTerm}`);
      for (let k = 1; k < entries.length; k++) {
        const a = entries[k - 1]!;
        const b = entries[k]!;
        assert(b.index === a.index + 1, () => `entries not contiguous: ${a.index} then ${b.index}`);
        assert(b.term >= a.term, () => `entry ${b.index} term ${b.term} below entry ${a.index} term ${a.term}`);
      }
      const newLast = entries[entries.length - 1]!.index;
      // The conflicting durable tail beyond the new entries goes in the same batch.
      for (let i = newLast + 1; i <= lastOf(); i++) ops.push({ type: 'del', key: entryKey(i) });
      for (const e of entries) ops.push({ type: 'put', key: entryKey(e.index), value: encodeEntry(e) });
      keep = first.index - snapshotIndex - 1;
      appended = entries.map((e) => e.term);
    }

    let hardState = view.hardState;
    if (batch.hardState) {
      const hs = batch.hardState;
      const old = view.hardState;
      assert(hs.term >= old.term, () => `hard state term moves back from ${old.term} to ${hs.term}`);
      assert(
        hs.term > old.term || old.vote === null || hs.vote === old.vote,
        () => `vote changes within term ${hs.term} from ${old.vote} to ${hs.vote}`,
      );
      assert(hs.commit >= old.commit, () => `commit index moves back from ${old.commit} to ${hs.commit}`);
      hardState = { term: hs.term, vote: hs.vote, commit: hs.commit };
      ops.push({ type: 'put', key: KEY_HARD_STATE, value: frameValue(KEY_HARD_STATE, packr.pack(hardState)) });
    }
    assert(
      hardState.commit <= lastOf(),
      () => `commit index ${hardState.commit} beyond the last durable entry ${lastOf()}`,
    );
    const lastTerm = appended.length > 0 ? appended[appended.length - 1]! : keep > 0 ? terms[keep - 1]! : snapshotTerm;
    assert(lastTerm <= hardState.term, () => `last entry term ${lastTerm} above the current term ${hardState.term}`);

    if (ops.length === 0) return;
    await this.syncedBatch(ops, entries.length, batch.sync ?? true);
    terms.length = keep;
    for (const t of appended) terms.push(t);
    if (batch.snapshot) {
      this.logger.debug({ index: snapshotIndex, term: snapshotTerm, keptEntries: keep }, 'received snapshot persisted');
    }
    this.view = { hardState, snapshotIndex, snapshotTerm, terms };
  }

  private async doSaveSnapshot(snapshot: Snapshot): Promise<void> {
    const view = this.view!;
    const meta = snapshot.meta;
    if (meta.index <= view.snapshotIndex) {
      // A snapshot from the leader already covered this point; compaction has nothing to do.
      this.logger.debug({ index: meta.index, durable: view.snapshotIndex }, 'stale local snapshot ignored');
      return;
    }
    assert(meta.index <= view.hardState.commit, () => `snapshot at ${meta.index} beyond the commit index ${view.hardState.commit}`);
    const term = this.termAt(meta.index);
    assert(term === meta.term, () => `snapshot at ${meta.index} says term ${meta.term}, the log holds ${term}`);
    const ops: Array<{ type: 'put'; key: Buffer; value: Buffer } | { type: 'del'; key: Buffer }> = [];
    for (let i = view.snapshotIndex + 1; i <= meta.index; i++) ops.push({ type: 'del', key: entryKey(i) });
    ops.push(...this.snapshotOps(snapshot));
    await this.syncedBatch(ops, 0);
    this.view = {
      hardState: view.hardState,
      snapshotIndex: meta.index,
      snapshotTerm: meta.term,
      terms: view.terms.slice(meta.index - view.snapshotIndex),
    };
    this.logger.debug({ index: meta.index, term: meta.term, bytes: snapshot.data.length }, 'log compacted');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.tail;
    this.closed = true;
    if (this.db.status === 'open' || this.db.status === 'opening') await this.db.close();
  }
}
