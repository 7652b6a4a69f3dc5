/**
 * The snapshot encoding of coordinator state. Replicas that applied the same commands must
 * produce byte-identical snapshots, so the encoding is canonical.
 *
 * Format 4 (written): sessions, their branches and the finished records are positional
 * msgpack arrays in the fixed field order below (records.ts-style rows: no keys, no copy of
 * the state to sort them), live sessions sorted by xid, the two bounded maps whose eviction
 * depends on insertion order (dedup, recently finished) as arrays in that order, and the
 * dedup results (small, of any shape) with their object keys sorted. Encoding and decoding
 * cost a fraction of the keyed form's (issue 19: a 100,000-transaction state took seconds
 * on the event loop). Formats 1–3 (keyed maps, every object's keys sorted) are still read.
 * msgpack maps without msgpackr records (records would make the bytes depend on the
 * encoder's history).
 *
 * A snapshot comes from disk or from a leader: every row's shape and every field's type is
 * checked on decode, and a snapshot that fails is refused (StorageCorruptError), never
 * half-restored.
 */
import { Packr } from 'msgpackr';
import { releaseLargePackBuffer, releaseUnpackSource } from '../shared/msgpack-buffer.ts';
import { AssertionFailure, StorageCorruptError } from '../shared/errors.ts';
import type { BranchId, Xid } from '../shared/ids.ts';
import {
  isBranchStatus,
  isBranchType,
  isGlobalStatus,
  type BranchSession,
  type FinishedRecord,
  type GlobalSession,
} from './types.ts';
import { compareStrings } from './lock-key.ts';

/**
 * 4: sessions, branches and finished records as positional rows (this file's field order).
 * 3: the latest command time (`commandTime`) and the time of each dedup entry.
 * 2: every branch records its application (`applicationId`).
 * Formats 1–3 (keyed) are read: format 1's branches are given '' as their application;
 * formats 1 and 2 read as commandTime 0, their dedup entries as remembered at that time.
 */
export const SNAPSHOT_FORMAT_VERSION = 4;
/** Format 1 (before branches kept their application). */
const LEGACY_FORMAT_VERSION = 1;
/** The keyed formats (every record a map with sorted keys). */
const KEYED_VERSIONS: readonly number[] = [1, 2, 3];
const READABLE_VERSIONS: readonly number[] = [...KEYED_VERSIONS, SNAPSHOT_FORMAT_VERSION];

export interface SnapshotData {
  version: number;
  /** Sorted by xid. */
  sessions: GlobalSession[];
  /** Oldest first (eviction order). */
  finished: FinishedRecord[];
  /**
   * [dedup key, result, command time remembered at], oldest first (eviction order). The
   * time is absent in format 1 and in the db store's partial states.
   */
  dedup: ([string, unknown] | [string, unknown, number])[];
  /**
   * The latest command time applied (ms): a new leader stamps no command below it.
   * Absent in format 1 and in the partial states the db store restores: 0.
   */
  commandTime?: number;
}

const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

/**
 * Format 4's bytes of `data`, labelled `data.version`: callers pass SNAPSHOT_FORMAT_VERSION
 * (tests pass other numbers to make a snapshot of a foreign format).
 */
export function encodeSnapshot(data: SnapshotData): Uint8Array {
  const sessions = [...data.sessions].sort((a, b) => compareStrings(a.xid, b.xid));
  // Keys in sorted order, as every map of the keyed formats.
  const top: Record<string, unknown> = {};
  if (data.commandTime !== undefined) top.commandTime = data.commandTime;
  top.dedup = data.dedup.map(([key, value, at]) => [key, canonical(value), at ?? null]);
  top.finished = data.finished.map((f) => defined(finishedRow(f), 'finished'));
  top.sessions = sessions.map((x) => defined(sessionRow(x), 'session'));
  top.version = data.version;
  const packed = packr.pack(top);
  const bytes = Uint8Array.from(packed);
  // msgpackr grew its shared buffer to twice the snapshot for this: not for every later pack.
  releaseLargePackBuffer(packed);
  return bytes;
}

/**
 * Rows one msgpackr pack() call writes (a sliced encode's slice is packed in parts of this
 * many). msgpackr writes every pack() of the process into one shared buffer that grows to 4×
 * the largest pack and stays at that size: 2,000 rows (~0.6 MB) made it 2.5 MB, and each
 * small encoding kept later (a lone command's entry, a cached entry encoding) then pinned a
 * whole 2.5 MB buffer. 64 rows (~20 KB) keep it at the size an entry's encoding makes it.
 */
export const PACK_ROWS = 64;
/** The pieces a sliced encode adds when its size hint falls short: bounds, bytes. */
const MIN_PIECE_BYTES = 256 * 1024;
const MAX_PIECE_BYTES = 16 * 1024 * 1024;

/** Rows (sessions, finished records, remembered request ids) one slice of a sliced encode packs. */
export const SNAPSHOT_SLICE_ROWS = 2_000;

/**
 * What a sliced encode reads: the state's parts, read slice by slice, never copied whole.
 * Each part is given as a count and a reader of rows `from` (inclusive) to `to` (exclusive),
 * in the snapshot's order; the reader may be called long after the encode began (a capture
 * that lets commands apply meanwhile hands out the rows as of its point).
 */
export interface SnapshotSource {
  version: number;
  /** Dedup rows oldest first, their results canonical (canonical() of them changes nothing). */
  dedupCount: number;
  dedupRows(from: number, to: number): SnapshotData['dedup'];
  /** Oldest first. */
  finishedCount: number;
  finishedRows(from: number, to: number): readonly FinishedRecord[];
  /** Sorted by xid. */
  sessionCount: number;
  sessionRows(from: number, to: number): readonly GlobalSession[];
  commandTime?: number;
}

/**
 * The same bytes as encodeSnapshot, made in slices: each `next()` packs at most `sliceRows`
 * rows and the last returns the whole snapshot. A caller runs the slices across event-loop
 * turns (issue 19: a 100,000-transaction state took ~1.7 s to encode in one go); the source
 * is read as the slices go, so it must show the same rows throughout (the state machine's
 * capture shows the state as of its point while commands apply).
 *
 * The bytes are assembled by hand around msgpackr's: the top map's header (map16, as
 * msgpackr writes objects) and keys, each
 * array's header (msgpack's shortest form, as msgpackr writes them), then each slice's rows
 * packed as arrays of at most PACK_ROWS rows whose headers are cut off (so msgpackr's shared
 * buffer, which every later pack of the process writes into, stays small: issue 19).
 * test/coordinator/snapshot.test.ts checks the bytes equal encodeSnapshot's. They are
 * written into one buffer of `sizeHint` bytes (the caller's estimate, from the last
 * snapshot): no copy per slice, no final concatenation. A hint too small is not doubled
 * and copied (at 100,000 live, 3× the snapshot's size of garbage per capture): the rest
 * goes into pieces, joined once at the end.
 */
export function* encodeSnapshotInSlices(
  data: SnapshotSource,
  sliceRows = SNAPSHOT_SLICE_ROWS,
  sizeHint = 0,
): Generator<void, Uint8Array, void> {
  const out = new SnapshotOut(sizeHint);
  const put = (bytes: Uint8Array, from = 0) => out.put(bytes, from);
  const rows = (all: unknown[]) => {
    for (let i = 0; i < all.length; i += PACK_ROWS) {
      const part = all.length <= PACK_ROWS ? all : all.slice(i, i + PACK_ROWS);
      // A header cut off: the rows' own bytes, as they sit inside the whole array.
      const packed = packr.pack(part);
      put(packed, arrayHeader(part.length).length);
      releaseLargePackBuffer(packed); // rows of megabytes (a session of many branches)
    }
  };
  const keys = data.commandTime !== undefined ? 5 : 4;
  // msgpackr writes an object's map header as map16 whatever its size.
  put(Uint8Array.of(0xde, 0, keys));
  if (data.commandTime !== undefined) {
    put(packr.pack('commandTime'));
    put(packr.pack(data.commandTime));
  }
  put(packr.pack('dedup'));
  put(arrayHeader(data.dedupCount));
  for (let from = 0; from < data.dedupCount; from += sliceRows) {
    rows(
      data.dedupRows(from, from + sliceRows).map(([key, value, at]) => [key, value, at ?? null]),
    );
    yield;
  }
  put(packr.pack('finished'));
  put(arrayHeader(data.finishedCount));
  for (let from = 0; from < data.finishedCount; from += sliceRows) {
    rows(data.finishedRows(from, from + sliceRows).map((f) => defined(finishedRow(f), 'finished')));
    yield;
  }
  put(packr.pack('sessions'));
  put(arrayHeader(data.sessionCount));
  for (let from = 0; from < data.sessionCount; from += sliceRows) {
    rows(data.sessionRows(from, from + sliceRows).map((x) => defined(sessionRow(x), 'session')));
    yield;
  }
  put(packr.pack('version'));
  put(packr.pack(data.version));
  return out.finish();
}

/**
 * A sliced encode's output: one buffer of the size hint (+5 %); if that falls short, pieces
 * after it (a quarter of what is written so far each, 256 KiB to 16 MiB), joined once at
 * the end into a buffer of the exact size.
 */
class SnapshotOut {
  private out: Uint8Array;
  private length = 0;
  /** Full buffers before `out`, and their bytes. */
  private readonly pieces: Uint8Array[] = [];
  private piecesBytes = 0;

  constructor(sizeHint: number) {
    // Every byte is written before it is read: no zero fill (tens of MB at 100,000 sessions).
    this.out = Buffer.allocUnsafeSlow(Math.max(64 * 1024, Math.ceil(sizeHint * 1.05)));
  }

  /** Appends `bytes` from offset `from`. */
  put(bytes: Uint8Array, from = 0): void {
    while (from < bytes.length) {
      if (this.length === this.out.length) {
        this.pieces.push(this.out);
        this.piecesBytes += this.out.length;
        this.out = Buffer.allocUnsafeSlow(
          Math.min(MAX_PIECE_BYTES, Math.max(MIN_PIECE_BYTES, this.piecesBytes >>> 2)),
        );
        this.length = 0;
      }
      const n = Math.min(bytes.length - from, this.out.length - this.length);
      this.out.set(
        from === 0 && n === bytes.length ? bytes : bytes.subarray(from, from + n),
        this.length,
      );
      this.length += n;
      from += n;
    }
  }

  /** The bytes written, in one buffer. */
  finish(): Uint8Array {
    const { out, length } = this;
    if (this.pieces.length > 0) {
      // The hint fell short: one copy of the pieces into a buffer of the exact size.
      const whole = Buffer.allocUnsafeSlow(this.piecesBytes + length);
      let at = 0;
      for (const p of this.pieces) {
        whole.set(p, at);
        at += p.length;
      }
      whole.set(out.subarray(0, length), at);
      return whole;
    }
    // A hint too large (the state shrank) keeps at most a quarter unused.
    return length >= out.length * 0.75
      ? out.subarray(0, length)
      : Uint8Array.prototype.slice.call(out, 0, length);
  }
}

/** A msgpack array header for `n` elements, in the shortest form (as msgpackr writes it). */
function arrayHeader(n: number): Uint8Array {
  if (n < 16) return Uint8Array.of(0x90 | n);
  if (n < 0x10000) return Uint8Array.of(0xdc, n >>> 8, n & 0xff);
  return Uint8Array.of(0xdd, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

/** Throws StorageCorruptError when the bytes are not a snapshot of a format this node reads. */
export function decodeSnapshot(bytes: Uint8Array): SnapshotData {
  let value: unknown;
  try {
    value = packr.unpack(bytes);
  } catch (err) {
    throw new StorageCorruptError('coordinator snapshot does not decode', { cause: err });
  } finally {
    releaseUnpackSource(); // msgpackr would keep the snapshot's bytes until its next unpack
  }
  const data = value as Partial<SnapshotData> | null;
  if (typeof data !== 'object' || data === null)
    throw new StorageCorruptError('coordinator snapshot is not an object');
  if (!READABLE_VERSIONS.includes(data.version as number)) {
    throw new StorageCorruptError(
      `coordinator snapshot has format version ${String(data.version)}, this node reads ${READABLE_VERSIONS.join(' to ')}`,
    );
  }
  if (
    data.commandTime !== undefined &&
    !(Number.isSafeInteger(data.commandTime) && data.commandTime >= 0)
  )
    throw new StorageCorruptError('coordinator snapshot has a bad commandTime');
  if (
    !Array.isArray(data.sessions) ||
    !Array.isArray(data.finished) ||
    !Array.isArray(data.dedup)
  ) {
    throw new StorageCorruptError('coordinator snapshot lacks sessions, finished or dedup');
  }
  if (data.version === LEGACY_FORMAT_VERSION) return upgradeLegacy(data as SnapshotData);
  if (KEYED_VERSIONS.includes(data.version!)) return data as SnapshotData;
  return {
    version: SNAPSHOT_FORMAT_VERSION,
    sessions: data.sessions.map((row) => sessionOf(row as unknown)),
    finished: data.finished.map((row) => finishedOf(row as unknown)),
    dedup: data.dedup.map((row) => dedupOf(row as unknown)),
    ...(data.commandTime !== undefined ? { commandTime: data.commandTime } : {}),
  };
}

// ------------------------------------------------------------------ format 4's rows

/**
 * The row, asserted to hold no `undefined`: it has no canonical encoding (it could be dropped
 * or written as nil), and a row holding one would not decode: state must not hold it.
 */
function defined(row: unknown[], what: string): unknown[] {
  for (let i = 0; i < row.length; i++)
    if (row[i] === undefined)
      throw new AssertionFailure(`coordinator state: field ${i} of a ${what} row is undefined`);
  return row;
}

/** A session's row: its fields in this order, then its retry info, then its branch rows. */
function sessionRow(s: GlobalSession): unknown[] {
  const r = s.retry;
  return [
    s.xid,
    s.transactionId,
    s.applicationId,
    s.transactionServiceGroup,
    s.name,
    s.timeoutMs,
    s.beginTime,
    s.deadline,
    s.status,
    s.statusChangedAt,
    s.driverTerm,
    r.attempts,
    r.nextRetryAt,
    r.retryDeadline,
    r.stopped,
    s.branches.map((b) => defined(branchRow(b), 'branch')),
  ];
}
const SESSION_ROW_LENGTH = 16;

/** A branch's row (its xid is its session's). */
function branchRow(b: BranchSession): unknown[] {
  return [
    b.branchId,
    b.type,
    b.resourceId,
    b.lockKey,
    b.applicationData,
    b.status,
    b.clientId,
    b.applicationId,
    b.lockedRows,
  ];
}
const BRANCH_ROW_LENGTH = 9;

function finishedRow(f: FinishedRecord): unknown[] {
  return [f.xid, f.status, f.finishedAt, f.resolvedBy];
}

/** Reads one row of a decoded snapshot, naming what is wrong with it. */
class RowReader {
  private i = 0;
  constructor(
    private readonly row: unknown[],
    private readonly what: string,
  ) {}

  static of(value: unknown, length: number, what: string): RowReader {
    if (!Array.isArray(value) || value.length !== length)
      throw new StorageCorruptError(`coordinator snapshot holds a malformed ${what} row`);
    return new RowReader(value, what);
  }

  private bad(expected: string): never {
    throw new StorageCorruptError(
      `coordinator snapshot: field ${this.i - 1} of a ${this.what} row is not ${expected}`,
    );
  }

  string(): string {
    const v = this.row[this.i++];
    return typeof v === 'string' ? v : this.bad('a string');
  }

  int(): number {
    const v = this.row[this.i++];
    return Number.isSafeInteger(v) ? (v as number) : this.bad('an integer');
  }

  intOrNull(): number | null {
    const v = this.row[this.i++];
    if (v === null) return null;
    return Number.isSafeInteger(v) ? (v as number) : this.bad('an integer or nil');
  }

  stringOrNull(): string | null {
    const v = this.row[this.i++];
    return v === null || typeof v === 'string' ? v : this.bad('a string or nil');
  }

  bool(): boolean {
    const v = this.row[this.i++];
    return typeof v === 'boolean' ? v : this.bad('a boolean');
  }

  strings(): string[] {
    const v = this.row[this.i++];
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) this.bad('a list of strings');
    return v as string[];
  }

  list(): unknown[] {
    const v = this.row[this.i++];
    return Array.isArray(v) ? v : this.bad('a list');
  }

  /** The next field, as it decoded. */
  any(): unknown {
    return this.row[this.i++];
  }
}

function sessionOf(value: unknown): GlobalSession {
  const r = RowReader.of(value, SESSION_ROW_LENGTH, 'session');
  const xid = r.string() as Xid;
  const session: GlobalSession = {
    xid,
    transactionId: r.string(),
    applicationId: r.string(),
    transactionServiceGroup: r.string(),
    name: r.string(),
    timeoutMs: r.int(),
    beginTime: r.int(),
    deadline: r.int(),
    status: r.string() as GlobalSession['status'],
    statusChangedAt: r.int(),
    driverTerm: r.int(),
    retry: {
      attempts: r.int(),
      nextRetryAt: r.intOrNull(),
      retryDeadline: r.intOrNull(),
      stopped: r.bool(),
    },
    branches: [],
  };
  if (!isGlobalStatus(session.status))
    throw new StorageCorruptError(`coordinator snapshot: ${xid} has no valid status`);
  session.branches = r.list().map((b) => branchOf(b, xid));
  return session;
}

function branchOf(value: unknown, xid: Xid): BranchSession {
  const r = RowReader.of(value, BRANCH_ROW_LENGTH, 'branch');
  const branch: BranchSession = {
    branchId: r.string() as BranchId,
    xid,
    type: r.string() as BranchSession['type'],
    resourceId: r.string(),
    lockKey: r.string(),
    applicationData: r.string(),
    status: r.string() as BranchSession['status'],
    clientId: r.string(),
    applicationId: r.string(),
    lockedRows: r.strings(),
  };
  if (!isBranchType(branch.type) || !isBranchStatus(branch.status))
    throw new StorageCorruptError(
      `coordinator snapshot: branch ${branch.branchId} of ${xid} has no valid type or status`,
    );
  return branch;
}

function finishedOf(value: unknown): FinishedRecord {
  const r = RowReader.of(value, 4, 'finished');
  const record: FinishedRecord = {
    xid: r.string() as Xid,
    status: r.string() as FinishedRecord['status'],
    finishedAt: r.int(),
    resolvedBy: r.stringOrNull(),
  };
  if (!isGlobalStatus(record.status))
    throw new StorageCorruptError(`coordinator snapshot: ${record.xid} has no valid end status`);
  return record;
}

function dedupOf(value: unknown): SnapshotData['dedup'][number] {
  const r = RowReader.of(value, 3, 'dedup');
  const key = r.string();
  const result = r.any();
  const at = r.intOrNull();
  return at === null ? [key, result] : [key, result, at];
}

/** A format-1 snapshot as the current format: its branches recorded no application (''). */
function upgradeLegacy(data: SnapshotData): SnapshotData {
  for (const session of data.sessions) {
    if (typeof session !== 'object' || session === null || !Array.isArray(session.branches))
      throw new StorageCorruptError('coordinator snapshot holds a session without branches');
    for (const branch of session.branches) {
      if (typeof branch !== 'object' || branch === null)
        throw new StorageCorruptError('coordinator snapshot holds a malformed branch');
      branch.applicationId ??= '';
    }
  }
  return { ...data, version: SNAPSHOT_FORMAT_VERSION };
}

/**
 * A copy with every plain object's keys in sorted order. `undefined` has no canonical
 * msgpack form (it could be dropped or written as nil), so state must not hold it.
 */
export function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (value === undefined)
    throw new AssertionFailure(
      'coordinator state holds undefined, which has no canonical encoding',
    );
  if (typeof value !== 'object' || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value).sort(compareStrings))
    out[key] = canonical((value as Record<string, unknown>)[key]);
  return out;
}
