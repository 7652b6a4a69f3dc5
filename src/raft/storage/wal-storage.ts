/**
 * LogStorage on a write-ahead log of our own (wal.ts): the Raft entries, the hard state and
 * the snapshot meta go to the WAL, one record per round written by ONE O_DSYNC overwrite of
 * a preallocated segment; the snapshot data goes to files (snapshot-files.ts) as with
 * LevelDbStorage; the node's identity records stay in LevelDB (`<dataDir>/raft`, read and
 * written through a LevelDbStorage that never holds a log).
 *
 * A round's record: { s?: snapshot meta, k?: whether the log after it was kept, e?: entries,
 * h?: hard state }, applied on load in that order:
 *  - s: a snapshot became durable (received from a leader, or a local compaction). k true:
 *    the log held its last entry (Raft §7, always for a local one), the entries after it stay;
 *    k false: the whole log goes.
 *  - e: the entries, the first of which may overwrite: the log is cut before it.
 *  - h: the hard state.
 * A round too large for one record is split over several, written by the same write; each
 * part also carries { r: the round's nonce, p: its index, n: the count, o: its distance in
 * bytes from the round's first part }, so load cuts a round a crash left partly written
 * whole (wal.ts, parseSegment).
 * A local snapshot is a record of its own ({ s, k: true }), written once its data file is
 * durable. Segments whose entries all lie at or below the durable snapshot are deleted after
 * it (each segment's header carries the state before it, see wal.ts).
 *
 * A data directory whose LevelDB holds a log (the format before the WAL) is refused with a
 * ConfigError here; the node keeps such a directory on LevelDbStorage instead
 * (src/raft/node/raft-node.ts, openLogStorage), so an upgrade needs no conversion.
 *
 * Memory (issue 19): after load only the terms of the log and the segment list are kept,
 * as LevelDbStorage keeps its terms and runs.
 */
import { randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import type { Entry, HardState, Snapshot, SnapshotMeta } from '../core/types.ts';
import type { LoadedState, LogStorage, PersistBatch, SnapshotChunkRead } from '../ports.ts';
import { assert, ConfigError, StorageCorruptError } from '../../shared/errors.ts';
import { isNodeId } from '../../shared/ids.ts';
import type { Logger } from '../../shared/logger.ts';
import { LevelDbStorage, type StorageStats, type StoredIdentity } from './leveldb-storage.ts';
import { checkEntry, checkSnapshotMeta, isIndex, isObject } from './shape.ts';
import { durableRange, durableTermAt, lastDurableIndex } from './durable-terms.ts';
import { SerialWrites } from './serial-writes.ts';
import { SnapshotFiles, type SnapshotFile } from './snapshot-files.ts';
import {
  DEFAULT_SEGMENT_BYTES,
  encodeRecord,
  listSegments,
  makeWalDir,
  MAX_RECORD_BYTES,
  parseSegment,
  readSegment,
  RECORD_HEADER,
  RECORD_ROUND,
  removeSegments,
  WalWriter,
} from './wal.ts';

/** Most entries one record holds; a larger round is split over several records. */
export const MAX_RECORD_ENTRIES = 4096;

export interface WalStorageOptions {
  /** The WAL directory (the node puts it at `<dataDir>/raft-wal`). */
  walDir: string;
  /** The LevelDB directory for the node's identity (`<dataDir>/raft`). */
  levelPath: string;
  /** Snapshot data files; default `<levelPath>-snapshots`. */
  snapshotDir?: string;
  logger: Logger;
  nodeId?: string;
  /** Preallocated bytes of one segment; default 16 MiB. */
  segmentBytes?: number;
}

interface StoredSnapshotMeta extends SnapshotMeta {
  dataBytes: number;
  dataCrc: number;
  file: string;
  received?: boolean;
}

interface HeaderBody {
  seq: number;
  hs: HardState;
  snap: StoredSnapshotMeta | null;
  last: number;
  lastTerm: number;
}

interface RoundBody {
  /** A round split over several records: its nonce, this part's index, the count (wal.ts). */
  r?: number;
  p?: number;
  n?: number;
  o?: number;
  s?: StoredSnapshotMeta;
  k?: boolean;
  e?: Entry[];
  h?: HardState;
}

interface Segment {
  seq: number;
  /** The last index of the log when the segment began (its header's). */
  last: number;
}

interface View {
  hardState: HardState;
  snap: StoredSnapshotMeta | null;
  snapshotIndex: number;
  snapshotTerm: number;
  /** Terms of the entries snapshotIndex+1 .. snapshotIndex+terms.length. */
  terms: number[];
}

/** The log being replayed on load: entries base+1 .. base+entries.length. */
interface Replay {
  hs: HardState;
  snap: StoredSnapshotMeta | null;
  base: number;
  /** The term of entry `base`; null when that entry is in a deleted segment. */
  baseTerm: number | null;
  entries: Entry[];
}

function checkHardState(x: unknown, what: string): HardState {
  if (
    !isObject(x) ||
    !isIndex(x.term) ||
    !isIndex(x.commit) ||
    !(x.vote === null || isNodeId(x.vote))
  )
    throw new StorageCorruptError(`${what}: malformed hard state`);
  return { term: x.term, vote: x.vote, commit: x.commit };
}

function checkStoredMeta(x: unknown, what: string): StoredSnapshotMeta {
  const problem = checkSnapshotMeta(x, what);
  if (problem) throw new StorageCorruptError(problem);
  const m = x as unknown as StoredSnapshotMeta;
  if (!isIndex(m.dataBytes) || !isIndex(m.dataCrc) || typeof m.file !== 'string')
    throw new StorageCorruptError(`${what}: snapshot meta lacks its file, size or checksum`);
  return m;
}

function checkEntries(x: unknown, what: string): Entry[] {
  if (!Array.isArray(x) || x.length === 0)
    throw new StorageCorruptError(`${what}: entries are not a non-empty list`);
  for (let i = 0; i < x.length; i++) {
    const problem = checkEntry(x[i], `${what} entry ${i}`);
    if (problem) throw new StorageCorruptError(problem);
    const e = x[i] as Entry;
    if (i > 0 && (e.index !== (x[i - 1] as Entry).index + 1 || e.term < (x[i - 1] as Entry).term))
      throw new StorageCorruptError(`${what}: entry ${e.index} does not follow its predecessor`);
  }
  return x as Entry[];
}

function lastOf(r: Replay): number {
  return r.base + r.entries.length;
}

function termOf(r: Replay, index: number): number | null {
  if (index === r.base) return r.baseTerm;
  if (index < r.base || index > lastOf(r)) return null;
  return r.entries[index - r.base - 1]!.term;
}

/** Applies one round record to the replayed log. */
function replayRound(r: Replay, body: unknown, what: string): void {
  if (!isObject(body)) throw new StorageCorruptError(`${what}: malformed round`);
  if (body.s !== undefined) {
    const s = checkStoredMeta(body.s, what);
    if (r.snap !== null && (s.index <= r.snap.index || s.term < r.snap.term))
      throw new StorageCorruptError(`${what}: snapshot ${s.index} not newer than ${r.snap.index}`);
    if (body.k === true) {
      if (
        s.index > lastOf(r) ||
        (s.index >= r.base && termOf(r, s.index) !== null && termOf(r, s.index) !== s.term)
      )
        throw new StorageCorruptError(
          `${what}: snapshot ${s.index} kept a log that does not hold it`,
        );
      if (s.index >= r.base) {
        r.entries = r.entries.slice(s.index - r.base);
        r.base = s.index;
        r.baseTerm = s.term;
      }
    } else {
      r.entries = [];
      r.base = s.index;
      r.baseTerm = s.term;
    }
    r.snap = s;
  }
  if (body.e !== undefined) {
    const e = checkEntries(body.e, what);
    const first = e[0]!.index;
    const snapIndex = r.snap?.index ?? 0;
    if (first <= snapIndex)
      throw new StorageCorruptError(
        `${what}: entry ${first} at or below the snapshot ${snapIndex}`,
      );
    if (first > lastOf(r) + 1)
      throw new StorageCorruptError(`${what}: gap in the log before entry ${first}`);
    if (first <= r.base) {
      // Overwrites entries of a deleted segment: those are covered by the final snapshot.
      r.entries = [];
      r.base = first - 1;
      r.baseTerm = null;
    } else r.entries.length = first - r.base - 1;
    const prev = termOf(r, first - 1);
    if (prev !== null && e[0]!.term < prev)
      throw new StorageCorruptError(`${what}: entry ${first} term below its predecessor's`);
    for (const x of e) r.entries.push(x);
  }
  if (body.h !== undefined) r.hs = checkHardState(body.h, what);
}

/**
 * The replayed log against its snapshot: the log must run contiguously from it (entries at
 * or below it go), the commit index lie within it, its last term within the current term.
 */
function settleReplay(r: Replay): {
  snapshotIndex: number;
  snapshotTerm: number;
  lastIndex: number;
} {
  const snapshotIndex = r.snap?.index ?? 0;
  const snapshotTerm = r.snap?.term ?? 0;
  // The log must now run contiguously from the snapshot: entries at or below it go.
  if (r.base > snapshotIndex)
    throw new StorageCorruptError(
      `WAL: entries ${snapshotIndex + 1}..${r.base} are missing (a segment was lost?)`,
    );
  if (r.base < snapshotIndex) {
    if (lastOf(r) < snapshotIndex || termOf(r, snapshotIndex) !== snapshotTerm)
      throw new StorageCorruptError(
        `WAL: the log does not hold the snapshot's entry ${snapshotIndex}`,
      );
    r.entries = r.entries.slice(snapshotIndex - r.base);
    r.base = snapshotIndex;
  }
  const lastIndex = lastOf(r);
  if (r.hs.commit > lastIndex)
    throw new StorageCorruptError(
      `hard state commit index ${r.hs.commit} is beyond the last durable entry ${lastIndex} (lost tail?)`,
    );
  const lastTerm = r.entries.length > 0 ? r.entries[r.entries.length - 1]!.term : snapshotTerm;
  if (lastTerm > r.hs.term)
    throw new StorageCorruptError(
      `last entry term ${lastTerm} is above the hard state term ${r.hs.term}`,
    );
  return { snapshotIndex, snapshotTerm, lastIndex };
}

/**
 * Checks a round's entries against the log (after the snapshot, no gap, terms ascending);
 * returns how many of the log's terms stay (the rest are overwritten).
 */
function checkNewEntries(
  entries: readonly Entry[],
  snapshotIndex: number,
  snapshotTerm: number,
  terms: readonly number[],
): number {
  if (entries.length === 0) return terms.length;
  const first = entries[0]!;
  const last = snapshotIndex + terms.length;
  assert(
    first.index > snapshotIndex,
    () => `entry ${first.index} would overwrite the snapshot at ${snapshotIndex}`,
  );
  assert(
    first.index <= last + 1,
    () => `entry ${first.index} leaves a gap after the last entry ${last}`,
  );
  const keepTerms = first.index - snapshotIndex - 1;
  const prevTerm = keepTerms === 0 ? snapshotTerm : terms[keepTerms - 1]!;
  assert(
    first.term >= prevTerm,
    () => `entry ${first.index} term ${first.term} below its predecessor's ${prevTerm}`,
  );
  for (let k = 1; k < entries.length; k++) {
    const a = entries[k - 1]!;
    const b = entries[k]!;
    assert(
      b.index === a.index + 1 && b.term >= a.term,
      () => `entries not contiguous: ${a.index} then ${b.index}`,
    );
  }
  return keepTerms;
}

/** A new hard state: term and commit never move back, the vote never changes within a term. */
function nextHardState(old: HardState, hs: HardState): HardState {
  assert(hs.term >= old.term, () => `hard state term moves back from ${old.term} to ${hs.term}`);
  assert(
    hs.term > old.term || old.vote === null || hs.vote === old.vote,
    () => `vote changes within term ${hs.term} from ${old.vote} to ${hs.vote}`,
  );
  assert(
    hs.commit >= old.commit,
    () => `commit index moves back from ${old.commit} to ${hs.commit}`,
  );
  return { term: hs.term, vote: hs.vote, commit: hs.commit };
}

export class WalStorage implements LogStorage {
  private readonly identityStore: LevelDbStorage;
  private readonly files: SnapshotFiles;
  private readonly logger: Logger;
  private readonly walDir: string;
  private readonly levelPath: string;
  private readonly segmentBytes: number;
  private writer: WalWriter | null = null;
  private segments: Segment[] = [];
  private view: View | null = null;
  private identityRead = false;
  private readonly writes: SerialWrites;
  private housekeeping: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly counters = {
    syncedWrites: 0,
    unsyncedWrites: 0,
    entriesWritten: 0,
    bytesWritten: 0,
    syncMsTotal: 0,
    syncMsMax: 0,
  };

  constructor(options: WalStorageOptions) {
    this.logger = options.logger.child({ component: 'raft-storage' });
    this.writes = new SerialWrites(
      this.logger,
      () => this.closed,
      () => this.view !== null,
    );
    this.walDir = options.walDir;
    this.levelPath = options.levelPath;
    this.segmentBytes = options.segmentBytes ?? DEFAULT_SEGMENT_BYTES;
    assert(
      this.segmentBytes >= 4096 && this.segmentBytes % 8 === 0,
      () => `WAL segment size ${this.segmentBytes} must be a multiple of 8, at least 4096`,
    );
    this.identityStore = new LevelDbStorage({
      path: options.levelPath,
      logger: options.logger,
      ...(options.nodeId !== undefined ? { nodeId: options.nodeId } : {}),
    });
    this.files = new SnapshotFiles(
      options.snapshotDir ?? `${options.levelPath}-snapshots`,
      this.logger,
    );
  }

  /** The data directory layout the node uses. */
  static forDataDir(dataDir: string, logger: Logger, nodeId?: string): WalStorage {
    return new WalStorage({
      walDir: join(dataDir, 'raft-wal'),
      levelPath: join(dataDir, 'raft'),
      logger,
      ...(nodeId !== undefined ? { nodeId } : {}),
    });
  }

  private get lastIndex(): number {
    return lastDurableIndex(this.view!);
  }

  /** The term of a durable entry (or of the snapshot's last entry); null if not held. */
  private termAt(index: number): number | null {
    return durableTermAt(this.view!, index);
  }

  stats(): StorageStats {
    return { ...this.counters, ...durableRange(this.view) };
  }

  /**
   * Who this directory belongs to; refuses (ConfigError) a LevelDB that holds a log, the
   * format before the WAL.
   */
  async readIdentity(): Promise<StoredIdentity> {
    // A new directory gets its WAL directory first: one with LevelDB but no WAL directory
    // is the older format (openLogStorage). A refused one is left as it was.
    if (!existsSync(this.levelPath)) await makeWalDir(this.walDir);
    const id = await this.identityStore.readIdentity();
    this.identityRead = true;
    if (!id.empty) {
      await this.identityStore.close();
      throw new ConfigError(
        'dataDir',
        'the raft log of this data directory is in LevelDB (the format before the write-ahead log); ' +
          'WalStorage does not read it: open it with LevelDbStorage',
      );
    }
    await makeWalDir(this.walDir);
    const segments = await listSegments(this.walDir);
    return { ...id, empty: segments.length === 0 };
  }

  saveClusterId(clusterId: string): Promise<void> {
    return this.identityStore.saveClusterId(clusterId);
  }

  savePeerIdentities(peerUids: Readonly<Record<string, string>>): Promise<void> {
    return this.identityStore.savePeerIdentities(peerUids);
  }

  async load(): Promise<LoadedState> {
    assert(!this.closed, 'load after close');
    assert(this.view === null, 'load called twice');
    if (!this.identityRead) await this.readIdentity();
    try {
      return await this.doLoad();
    } catch (err) {
      await this.identityStore.close().catch(() => undefined);
      throw err;
    }
  }

  private headerRecord(seq: number): Buffer {
    const v = this.view!;
    const body: HeaderBody = {
      seq,
      hs: v.hardState,
      snap: v.snap,
      last: this.lastIndex,
      lastTerm: this.termAt(this.lastIndex)!,
    };
    return encodeRecord(RECORD_HEADER, body);
  }

  /** Reads every segment in order and replays its rounds. */
  private async replaySegments(
    seqs: readonly number[],
  ): Promise<{ replay: Replay; end: number; torn: boolean }> {
    let replay: Replay | null = null;
    let end = 0;
    let torn = false;
    for (let i = 0; i < seqs.length; i++) {
      const seq = seqs[i]!;
      const name = `WAL segment ${seq}`;
      const parsed = parseSegment(await readSegment(this.walDir, seq), name, i === seqs.length - 1);
      const header = parsed.records[0]!.body as HeaderBody;
      if (
        !isObject(header) ||
        header.seq !== seq ||
        !isIndex(header.last) ||
        !isIndex(header.lastTerm)
      )
        throw new StorageCorruptError(`${name}: malformed header`);
      if (replay === null) {
        replay = {
          hs: checkHardState(header.hs, name),
          snap: header.snap === null ? null : checkStoredMeta(header.snap, name),
          base: header.last,
          baseTerm: header.lastTerm,
          entries: [],
        };
      } else if (header.last !== lastOf(replay)) {
        throw new StorageCorruptError(
          `${name}: header says the log ended at ${header.last}, the segments before end at ${lastOf(replay)}`,
        );
      }
      this.segments.push({ seq, last: header.last });
      for (let k = 1; k < parsed.records.length; k++) {
        const rec = parsed.records[k]!;
        const what = `${name} @${rec.offset}`;
        if (rec.type !== RECORD_ROUND)
          throw new StorageCorruptError(`${what}: unknown record type ${rec.type}`);
        replayRound(replay, rec.body, what);
      }
      end = parsed.end;
      torn = parsed.torn;
      if (torn) this.logger.warn({ segment: seq, offset: end }, 'WAL torn tail cut off');
    }
    return { replay: replay!, end, torn };
  }

  private async doLoad(): Promise<LoadedState> {
    const seqs = await listSegments(this.walDir);
    if (seqs.length === 0) {
      this.view = {
        hardState: { term: 0, vote: null, commit: 0 },
        snap: null,
        snapshotIndex: 0,
        snapshotTerm: 0,
        terms: [],
      };
      this.writer = await WalWriter.create(this.walDir, this.segmentBytes, this.headerRecord(1));
      this.segments = [{ seq: 1, last: 0 }];
      this.logger.info('raft storage (WAL) created');
      return { hardState: this.view.hardState, snapshot: null, entries: [] };
    }
    const { replay: r, end, torn } = await this.replaySegments(seqs);
    const { snapshotIndex, snapshotTerm, lastIndex } = settleReplay(r);
    let snapshot: Snapshot | null = null;
    if (r.snap !== null) {
      const data = await this.files.read(r.snap.file, r.snap.dataBytes, r.snap.dataCrc);
      snapshot = { meta: { index: r.snap.index, term: r.snap.term, conf: r.snap.conf }, data };
    }
    this.tidySnapshotFiles(r.snap?.file ?? null);
    this.view = {
      hardState: r.hs,
      snap: r.snap,
      snapshotIndex,
      snapshotTerm,
      terms: r.entries.map((e) => e.term),
    };
    const lastSeq = seqs[seqs.length - 1]!;
    this.writer = await WalWriter.resume(this.walDir, this.segmentBytes, lastSeq, end, torn);
    this.logger.info(
      { term: r.hs.term, commit: r.hs.commit, snapshotIndex, lastIndex, segments: seqs.length },
      'raft storage (WAL) loaded',
    );
    const hardState = r.hs;
    if (r.snap?.received === true)
      return { hardState, snapshot, snapshotReceived: true, entries: r.entries };
    return { hardState, snapshot, entries: r.entries };
  }

  async readSnapshotChunk(
    index: number,
    term: number,
    offset: number,
    length: number,
  ): Promise<SnapshotChunkRead | null> {
    const d = this.view?.snap ?? null;
    if (this.closed || d === null || d.index !== index || d.term !== term) return null;
    if (!(isIndex(offset) && isIndex(length) && offset + length <= d.dataBytes)) {
      throw new StorageCorruptError(
        `snapshot chunk [${offset}, +${length}) asked beyond the snapshot's ${d.dataBytes} bytes at ${index}`,
      );
    }
    try {
      const data = await this.files.readAt(d.file, offset, length);
      return { data, bytes: d.dataBytes, crc: d.dataCrc };
    } catch (err) {
      if (this.view?.snap !== d) return null;
      throw err;
    }
  }

  private tidySnapshotFiles(keep: string | null): void {
    this.housekeeping = this.housekeeping.then(() => this.files.removeAllBut(keep));
  }

  save(batch: PersistBatch): Promise<void> {
    return this.serialize(() => this.doSave(batch));
  }

  async saveSnapshot(snapshot: Snapshot): Promise<void> {
    assert(!this.closed, 'saveSnapshot after close');
    const file = await this.files.write(snapshot);
    await this.serialize(() => this.doSaveSnapshot(snapshot, file));
  }

  private serialize(write: () => Promise<void>): Promise<void> {
    return this.writes.run(write);
  }

  private static storedMeta(
    snapshot: Snapshot,
    file: SnapshotFile,
    received: boolean,
  ): StoredSnapshotMeta {
    return {
      index: snapshot.meta.index,
      term: snapshot.meta.term,
      conf: snapshot.meta.conf,
      dataBytes: file.bytes,
      dataCrc: file.crc,
      file: file.file,
      ...(received ? { received } : {}),
    };
  }

  /** Writes records (rolling to a new segment first if they do not fit), timed and counted. */
  private async writeRecords(records: Buffer[], entries: number, sync: boolean): Promise<void> {
    const buf = records.length === 1 ? records[0]! : Buffer.concat(records);
    const writer = this.writer!;
    if (!writer.fits(buf.length)) {
      const seq = writer.currentSeq + 1;
      await writer.roll(this.headerRecord(seq));
      this.segments.push({ seq, last: this.lastIndex });
    }
    const t0 = performance.now();
    await writer.write(buf);
    const ms = performance.now() - t0;
    const c = this.counters;
    if (sync) c.syncedWrites++;
    else c.unsyncedWrites++;
    c.entriesWritten += entries;
    c.bytesWritten += buf.length;
    c.syncMsTotal += ms;
    if (ms > c.syncMsMax) c.syncMsMax = ms;
  }

  /** The round's records: the snapshot and the first entries, more entries, the hard state last. */
  private static roundRecords(
    s: StoredSnapshotMeta | null,
    keep: boolean,
    entries: readonly Entry[],
    hs: HardState | null,
  ): Buffer[] {
    const bodies: RoundBody[] = [];
    let k = 0;
    do {
      const body: RoundBody = {};
      if (bodies.length === 0 && s !== null) {
        body.s = s;
        body.k = keep;
      }
      if (k < entries.length) {
        let bytes = 0;
        let n = 0;
        while (k + n < entries.length && n < MAX_RECORD_ENTRIES) {
          const e = entries[k + n]!;
          const size = e.type === 'normal' ? e.data.length + 32 : 256;
          if (n > 0 && bytes + size > MAX_RECORD_BYTES / 2) break;
          bytes += size;
          n++;
        }
        body.e = k === 0 && n === entries.length ? (entries as Entry[]) : entries.slice(k, k + n);
        k += n;
      }
      bodies.push(body);
    } while (k < entries.length);
    if (hs !== null) bodies[bodies.length - 1]!.h = hs;
    if (bodies.length === 1) return [encodeRecord(RECORD_ROUND, bodies[0])];
    // One write, several records: a crash may keep any of them, so load cuts the round whole
    // unless every part is there; each part says where the round began (parseSegment).
    const r = randomInt(0x7fffffff);
    const out: Buffer[] = [];
    let o = 0;
    for (let p = 0; p < bodies.length; p++) {
      const rec = encodeRecord(RECORD_ROUND, { ...bodies[p], r, p, n: bodies.length, o });
      out.push(rec);
      o += rec.length;
    }
    return out;
  }

  private async doSave(batch: PersistBatch): Promise<void> {
    const file = batch.snapshot ? await this.files.write(batch.snapshot) : null;
    const v = this.view!;
    let snapshotIndex = v.snapshotIndex;
    let snapshotTerm = v.snapshotTerm;
    let terms = v.terms;
    let snap = v.snap;
    let keep = true;
    if (batch.snapshot) {
      const meta = batch.snapshot.meta;
      assert(
        meta.index > snapshotIndex && meta.term >= snapshotTerm,
        () =>
          `received snapshot at ${meta.index} is not newer than the durable snapshot at ${snapshotIndex}`,
      );
      keep = this.termAt(meta.index) === meta.term;
      terms = keep ? terms.slice(meta.index - snapshotIndex) : [];
      snapshotIndex = meta.index;
      snapshotTerm = meta.term;
      snap = WalStorage.storedMeta(batch.snapshot, file!, true);
    }
    const entries = batch.entries;
    const keepTerms = checkNewEntries(entries, snapshotIndex, snapshotTerm, terms);
    const hardState = batch.hardState ? nextHardState(v.hardState, batch.hardState) : v.hardState;
    const lastIndex = snapshotIndex + keepTerms + entries.length;
    const lastTerm =
      entries.length > 0
        ? entries[entries.length - 1]!.term
        : keepTerms > 0
          ? terms[keepTerms - 1]!
          : snapshotTerm;
    assert(
      hardState.commit <= lastIndex,
      () => `commit index ${hardState.commit} beyond the last durable entry ${lastIndex}`,
    );
    assert(
      lastTerm <= hardState.term,
      () => `last entry term ${lastTerm} above the current term ${hardState.term}`,
    );
    if (!batch.snapshot && entries.length === 0 && !batch.hardState) return;

    const records = WalStorage.roundRecords(
      batch.snapshot ? snap : null,
      keep,
      entries,
      batch.hardState ? hardState : null,
    );
    await this.writeRecords(records, entries.length, batch.sync ?? true);
    terms.length = keepTerms;
    for (const e of entries) terms.push(e.term);
    this.view = { hardState, snap, snapshotIndex, snapshotTerm, terms };
    if (batch.snapshot) {
      this.tidySnapshotFiles(file!.file);
      await this.dropCoveredSegments();
    }
  }

  private async doSaveSnapshot(snapshot: Snapshot, file: SnapshotFile): Promise<void> {
    const v = this.view!;
    const meta = snapshot.meta;
    if (meta.index <= v.snapshotIndex) {
      this.logger.debug(
        { index: meta.index, durable: v.snapshotIndex },
        'stale local snapshot ignored',
      );
      this.tidySnapshotFiles(v.snap?.file ?? null);
      return;
    }
    assert(
      meta.index <= v.hardState.commit,
      () => `snapshot at ${meta.index} beyond the commit index ${v.hardState.commit}`,
    );
    const term = this.termAt(meta.index);
    assert(
      term === meta.term,
      () => `snapshot at ${meta.index} says term ${meta.term}, the log holds ${term}`,
    );
    const snap = WalStorage.storedMeta(snapshot, file, false);
    await this.writeRecords(WalStorage.roundRecords(snap, true, [], null), 0, true);
    this.view = {
      hardState: v.hardState,
      snap,
      snapshotIndex: meta.index,
      snapshotTerm: meta.term,
      terms: v.terms.slice(meta.index - v.snapshotIndex),
    };
    this.tidySnapshotFiles(file.file);
    await this.dropCoveredSegments();
  }

  /**
   * Deletes the segments before one whose header's last index is at or below the durable
   * snapshot: everything live in them is covered by it.
   */
  private async dropCoveredSegments(): Promise<void> {
    const snapshotIndex = this.view!.snapshotIndex;
    let drop = 0;
    while (drop + 1 < this.segments.length && this.segments[drop + 1]!.last <= snapshotIndex)
      drop++;
    if (drop === 0) return;
    const gone = this.segments.splice(0, drop).map((s) => s.seq);
    await removeSegments(this.walDir, gone);
    this.logger.debug(
      { segments: gone.length, snapshotIndex },
      'WAL segments covered by the snapshot removed',
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.writes.drained();
    await this.housekeeping;
    this.closed = true;
    await this.writer?.close();
    await this.identityStore.close();
  }
}
