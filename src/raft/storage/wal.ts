/**
 * A write-ahead log of our own, as etcd keeps one: segment files `<seq>.wal` in one
 * directory, each preallocated (zero-filled and fsynced before use), written by overwrites
 * through a descriptor opened O_DSYNC. One round is ONE `pwrite` that returns durable: no
 * separate fdatasync (a second thread-pool hop), and no file-size change to flush, since the
 * blocks already exist (`npm run bench -- fsync`: WalStorage.save of a round 0.16–0.25 ms
 * here, LevelDbStorage.save 0.31–0.48 ms, with 40–50 % of its CPU).
 *
 * Record (8-byte aligned):  u32le payloadBytes ‖ u32le crc32(payload) ‖ payload ‖ zero pad,
 * payload = u8 type ‖ msgpackr(body). A zero length is the end of the written part of a segment.
 *
 * Every segment begins with a HEADER record (written before the file gets its name, so a
 * named segment always has one) holding the state the records before it left: the hard
 * state, the snapshot meta, the last index and its term. Segments before one whose header's
 * last index is at or below the durable snapshot hold nothing live and are deleted; the
 * first remaining segment's header stands in for them on load.
 *
 * Reading back (`readWal`): the records of every segment in order. In the LAST segment, a
 * zero header ends the log; a record that fails its checksum or whose length runs past the
 * segment is a torn tail (a write in flight at a crash) only if a 512-byte sector of the
 * span it claims is all zeros (etcd's isTornEntry: a sector the write never reached — the
 * segment is zero-filled) and no valid record follows it; otherwise (a flipped bit in the
 * last record, say: cutting it could lose an entry a quorum counted) StorageCorruptError. A
 * torn tail is cut off and the rest of the file zeroed. The search for a valid record after
 * a bad one checksums only candidates with a record's type and map bytes, and at most
 * TAIL_SCAN_BYTES_PER_SEGMENT_BYTE × the segment's size (then StorageCorruptError).
 * A round split over several records (one write) is torn whole: its parts after a bad record
 * are no corruption, and an incomplete last round is cut back to its first part. Any other
 * bad record followed by a valid one, or a bad record in an earlier segment, is
 * StorageCorruptError.
 *
 * Names: the directory holding a new name (raft-wal in the data directory, a segment in
 * raft-wal) is fsynced before anything depends on it; segments go oldest first, the
 * directory synced after each.
 */
import { closeSync, constants, openSync, writeSync, fsyncSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Packr } from 'msgpackr';
import { assert, StorageCorruptError } from '../../shared/errors.ts';
import { crc32 } from './crc32.ts';

/** Bytes of a record's header: payload length and CRC. */
export const RECORD_HEADER_BYTES = 8;
/** Largest payload one record may hold; a larger round is split over several records. */
export const MAX_RECORD_BYTES = 16 * 1024 * 1024;
/** Default preallocated size of one segment. */
export const DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024;
/** Most segment files a WAL directory may hold before load refuses it. */
export const MAX_SEGMENTS = 100_000;

export const RECORD_HEADER = 1;
export const RECORD_ROUND = 2;

const SEGMENT_PATTERN = /^(\d{16})\.wal$/;
const ZERO_CHUNK = Buffer.alloc(1024 * 1024);

export const walPackr = new Packr({ useRecords: false, copyBuffers: true });

export function segmentName(seq: number): string {
  return `${String(seq).padStart(16, '0')}.wal`;
}

function align8(n: number): number {
  return (n + 7) & ~7;
}

/** A msgpack map's first byte (fixmap, map16): what every record's body begins with. */
function isMapByte(b: number): boolean {
  return (b & 0xf0) === 0x80 || b === 0xde;
}

/** Frames one record: header, payload (type byte then the packed body), zero pad. */
export function encodeRecord(type: number, body: unknown): Buffer {
  const packed = walPackr.pack(body);
  // The scan after a bad record checksums only candidates that begin so (validRecordsAfter).
  assert(
    (type === RECORD_HEADER || type === RECORD_ROUND) && isMapByte(packed[0]!),
    () => `WAL record of type ${type} whose body is not a map`,
  );
  const payloadBytes = 1 + packed.length;
  assert(
    payloadBytes <= MAX_RECORD_BYTES,
    () => `WAL record of ${payloadBytes} bytes over the bound ${MAX_RECORD_BYTES}`,
  );
  const out = Buffer.alloc(align8(RECORD_HEADER_BYTES + payloadBytes));
  out[RECORD_HEADER_BYTES] = type;
  out.set(packed, RECORD_HEADER_BYTES + 1);
  const payload = out.subarray(RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + payloadBytes);
  out.writeUInt32LE(payloadBytes, 0);
  out.writeUInt32LE(crc32(payload), 4);
  return out;
}

/** A record read back: its type, its decoded body, where it starts and where the next begins. */
export interface WalRecord {
  type: number;
  body: unknown;
  offset: number;
  end: number;
}

/**
 * Work done reading segments, for tests and tools: bytes checksummed (every record's payload
 * read back, and every candidate tried after a bad record). The scan after a bad record is
 * bounded by TAIL_SCAN_BYTES_PER_SEGMENT_BYTE times the segment's size.
 */
export const walReadWork = { crcBytes: 0 };

/** Bytes the scan after a bad record may checksum, per byte of the segment. */
export const TAIL_SCAN_BYTES_PER_SEGMENT_BYTE = 4;

/** Sector size assumed atomic: a write torn by a crash reached a sector whole or not at all. */
export const SECTOR_BYTES = 512;

/** The valid record at `offset`, or null (none, cut off, zeroed, bad checksum). */
function recordAt(buf: Buffer, offset: number): { payload: Buffer; end: number } | null {
  if (offset + RECORD_HEADER_BYTES > buf.length) return null;
  const len = buf.readUInt32LE(offset);
  if (len === 0 || len > MAX_RECORD_BYTES) return null;
  const start = offset + RECORD_HEADER_BYTES;
  if (start + len > buf.length) return null;
  const payload = buf.subarray(start, start + len);
  walReadWork.crcBytes += len;
  if (crc32(payload) !== buf.readUInt32LE(offset + 4)) return null;
  return { payload, end: align8(start + len) };
}

/**
 * Whether a bad record at `offset` (non-zero header) reads as a torn write (etcd's
 * isTornEntry): some sector the span it claims touches is all zeros in the file, from the
 * record's start (or the sector's) to the sector's end — a sector the write never reached,
 * since segments are zero-filled and nothing is written after the write in flight. The span
 * claimed runs to the end of the segment when the length is beyond the bound or the file.
 */
function tornSpan(buf: Buffer, offset: number): boolean {
  const len = buf.readUInt32LE(offset);
  const claimed = offset + RECORD_HEADER_BYTES + len;
  const spanEnd = len > MAX_RECORD_BYTES || claimed > buf.length ? buf.length : claimed;
  for (let sector = offset - (offset % SECTOR_BYTES); sector < spanEnd; sector += SECTOR_BYTES) {
    const from = Math.max(sector, offset);
    if (isZero(buf, from, Math.min(sector + SECTOR_BYTES, buf.length))) return true;
  }
  return false;
}

/**
 * A part of a round split over several records (written by ONE write, so a crash can leave
 * any subset of its parts): the round's nonce `r`, the part's index `p` and the count `n`.
 * Null for a round in one record.
 */
export interface RoundPart {
  r: number;
  p: number;
  n: number;
  /** Bytes of the round's records before this one: where the round begins, seen from here. */
  o: number;
}

function partOf(body: unknown, what: string): RoundPart | null {
  if (typeof body !== 'object' || body === null || !('n' in body)) return null;
  const { r, p, n, o } = body as Record<string, unknown>;
  if (
    typeof r !== 'number' ||
    typeof p !== 'number' ||
    typeof n !== 'number' ||
    typeof o !== 'number' ||
    !Number.isSafeInteger(r) ||
    !Number.isSafeInteger(p) ||
    !Number.isSafeInteger(n) ||
    !Number.isSafeInteger(o) ||
    n < 2 ||
    p < 0 ||
    p >= n ||
    o < 0 ||
    (p === 0) !== (o === 0)
  )
    throw new StorageCorruptError(`${what}: malformed round part`);
  return { r, p, n, o };
}

function decode(payload: Buffer, what: string): unknown {
  try {
    return walPackr.unpack(payload.subarray(1));
  } catch (cause) {
    throw new StorageCorruptError(`${what}: undecodable record`, { cause });
  }
}

/**
 * The valid records starting at aligned offsets at or after `from` (skipping each one found).
 * Bounded: a candidate is checksummed only if its type byte and the first byte of its body
 * (a msgpack map) are what a record holds, and the bytes checksummed stop at
 * TAIL_SCAN_BYTES_PER_SEGMENT_BYTE × the segment's size — past that the tail is refused as
 * corruption (what a crash leaves after a bad record is zeros and the parts of one write;
 * crafted lengths would otherwise cost a checksum of up to 16 MiB at every 8 bytes).
 */
function validRecordsAfter(
  buf: Buffer,
  from: number,
  what: string,
): { offset: number; body: unknown }[] {
  const found: { offset: number; body: unknown }[] = [];
  const budget = walReadWork.crcBytes + TAIL_SCAN_BYTES_PER_SEGMENT_BYTE * buf.length;
  for (let o = align8(from); o + RECORD_HEADER_BYTES + 2 <= buf.length;) {
    const type = buf[o + RECORD_HEADER_BYTES]!;
    const map = buf[o + RECORD_HEADER_BYTES + 1]!;
    if (
      buf.readUInt32LE(o) !== 0 &&
      (type === RECORD_HEADER || type === RECORD_ROUND) &&
      isMapByte(map)
    ) {
      const at = recordAt(buf, o);
      if (walReadWork.crcBytes > budget)
        throw new StorageCorruptError(
          `${what}: the bytes after a bad record are not what a crash leaves (scan bound reached @${o})`,
        );
      if (at !== null) {
        found.push({ offset: o, body: decode(at.payload, `@${o}`) });
        o = at.end;
        continue;
      }
    }
    o += 8;
  }
  return found;
}

/** One segment's records; `tornAt` is where a torn tail begins (last segment only), else null. */
export interface ParsedSegment {
  records: WalRecord[];
  /** Where the written part ends (the next record goes here). */
  end: number;
  /** Set when a torn tail was cut at `end` (bytes after it are not zero). */
  torn: boolean;
}

/**
 * Parses a segment's bytes. `last`: the segment being written at the crash, where a bad
 * record with nothing valid after it is a torn tail; elsewhere any bad record is corruption.
 *
 * A round split over several records is one write: a crash can leave any subset of its
 * parts (pages reach the disk in no set order). The round in flight at the end — its parts
 * in the valid prefix not all there, or valid parts of it after a bad record — is torn
 * whole: cut back to its first part. A valid record after a bad one that is not a part of
 * that round is corruption.
 */
export function parseSegment(buf: Buffer, name: string, last: boolean): ParsedSegment {
  const records: WalRecord[] = [];
  let offset = 0;
  /** The split round whose parts are being read: its nonce, count, last part, first offset. */
  let open: (RoundPart & { start: number }) | null = null;
  for (;;) {
    const at = recordAt(buf, offset);
    if (at === null) break;
    const type = at.payload[0]!;
    const what = `WAL ${name} @${offset}`;
    const body = decode(at.payload, what);
    const part = partOf(body, what);
    if (part === null || part.p === 0) {
      if (open !== null)
        throw new StorageCorruptError(`${what}: a record inside round ${open.r}'s parts`);
      if (part !== null) open = { ...part, start: offset };
    } else {
      if (
        open === null ||
        part.r !== open.r ||
        part.n !== open.n ||
        part.p !== open.p + 1 ||
        offset - part.o !== open.start
      )
        throw new StorageCorruptError(`${what}: part ${part.p} of a round out of place`);
      open.p = part.p;
    }
    if (open !== null && open.p === open.n - 1) open = null;
    records.push({ type, body, offset, end: at.end });
    offset = at.end;
  }
  // After the valid records: zeros to the end of the file (never written), or a torn tail
  // (bytes of a write cut short) — unless a valid record lies beyond that is not a part of
  // the round in flight, which no crash makes.
  const roundStart = open?.start ?? offset;
  let torn = open !== null;
  if (!isZero(buf, offset, buf.length)) {
    torn = true;
    // A bad record (its header not zero) is a torn write only if a sector of it is zero: a
    // flipped bit in the last record written is corruption, not a tail to cut.
    if (last && buf.readUInt32LE(offset) !== 0 && !tornSpan(buf, offset)) {
      throw new StorageCorruptError(
        `WAL ${name} @${offset}: a damaged record (bad checksum or length, no sector of it unwritten)`,
      );
    }
    const after = validRecordsAfter(buf, offset + 8, `WAL ${name} @${offset}`);
    let nonce = open?.r ?? null;
    let count = open?.n ?? null;
    for (const rec of after) {
      const part = partOf(rec.body, `WAL ${name} @${rec.offset}`);
      const ours =
        part !== null &&
        part.p > (open?.p ?? 0) &&
        (nonce === null || part.r === nonce) &&
        (count === null || part.n === count) &&
        rec.offset - part.o === roundStart;
      if (!ours) {
        throw new StorageCorruptError(
          `WAL ${name} @${offset}: a bad record followed by a valid one @${rec.offset}`,
        );
      }
      nonce = part.r;
      count = part.n;
    }
  }
  if (torn && !last) {
    throw new StorageCorruptError(
      `WAL ${name} @${offset}: a bad record, or a round cut short, in a segment before the last`,
    );
  }
  const kept = records.filter((rec) => rec.offset < roundStart);
  if (kept.length === 0 || kept[0]!.type !== RECORD_HEADER) {
    throw new StorageCorruptError(`WAL ${name}: does not begin with its header record`);
  }
  return { records: kept, end: roundStart, torn };
}

function isZero(buf: Buffer, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (buf[i] !== 0) return false;
  return true;
}

/** The segment files of a WAL directory, by sequence; leftovers (`.tmp`) are removed. */
export async function listSegments(dir: string): Promise<number[]> {
  await makeWalDir(dir);
  const seqs: number[] = [];
  for (const name of await readdir(dir)) {
    const m = SEGMENT_PATTERN.exec(name);
    if (m) seqs.push(Number(m[1]));
    else if (name.endsWith('.tmp')) await unlink(join(dir, name));
    else throw new StorageCorruptError(`WAL directory ${dir} holds a foreign file ${name}`);
  }
  if (seqs.length > MAX_SEGMENTS)
    throw new StorageCorruptError(`WAL directory ${dir} holds ${seqs.length} segments`);
  seqs.sort((a, b) => a - b);
  for (let i = 1; i < seqs.length; i++) {
    if (seqs[i] !== seqs[i - 1]! + 1)
      throw new StorageCorruptError(`WAL segment ${seqs[i - 1]! + 1} is missing`);
  }
  return seqs;
}

export async function readSegment(dir: string, seq: number): Promise<Buffer> {
  return readFile(join(dir, segmentName(seq)));
}

/**
 * Makes the WAL directory; when it is new, its parent is fsynced, so its name survives a
 * power cut with what is written in it (and the node does not take the data directory for
 * one of the format before the WAL, openLogStorage).
 */
export async function makeWalDir(dir: string): Promise<void> {
  const made = await mkdir(dir, { recursive: true });
  if (made !== undefined) await syncDir(dirname(dir));
}

export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Writes zeros over [from, to) of a file and fsyncs it (preallocation, and a cut torn tail).
 * Each megabyte is flushed on its own: a background fill then never puts a 16 MiB flush in
 * front of a round's write (bench/README.md, "The Raft log on a write-ahead log of our own").
 */
async function zeroFill(fh: FileHandle, from: number, to: number): Promise<void> {
  for (let o = from; o < to; o += ZERO_CHUNK.length) {
    await fh.write(ZERO_CHUNK, 0, Math.min(ZERO_CHUNK.length, to - o), o);
    await fh.datasync();
  }
  await fh.sync();
}

/**
 * The segment being written: an O_DSYNC descriptor and the offset of the next record. The
 * next segment is preallocated in the background once this one is half full.
 */
export class WalWriter {
  private fh: FileHandle;
  private seq: number;
  private offset: number;
  private next: Promise<string> | null = null;

  private constructor(
    private readonly dir: string,
    private readonly segmentBytes: number,
    fh: FileHandle,
    seq: number,
    offset: number,
  ) {
    this.fh = fh;
    this.seq = seq;
    this.offset = offset;
  }

  /**
   * Opens the last segment for writing at `end`; a torn tail beyond it is zeroed first
   * (so no stale bytes lie after the records written from now on).
   */
  static async resume(
    dir: string,
    segmentBytes: number,
    seq: number,
    end: number,
    torn: boolean,
  ): Promise<WalWriter> {
    const fh = await open(join(dir, segmentName(seq)), constants.O_RDWR | constants.O_DSYNC);
    if (torn) {
      const size = (await fh.stat()).size;
      await zeroFill(fh, end, Math.max(size, end));
    }
    return new WalWriter(dir, segmentBytes, fh, seq, end);
  }

  /** Makes the first segment of an empty directory, with `header` as its header record. */
  static async create(dir: string, segmentBytes: number, header: Buffer): Promise<WalWriter> {
    await makeWalDir(dir);
    const tmp = await preallocate(dir, 1, segmentBytes);
    const fh = await installSegment(dir, tmp, 1, header);
    return new WalWriter(dir, segmentBytes, fh, 1, header.length);
  }

  get currentSeq(): number {
    return this.seq;
  }

  /** Whether `bytes` more fit in the current segment's preallocated space. */
  fits(bytes: number): boolean {
    return this.offset + bytes <= this.segmentBytes;
  }

  /** Writes records at the current offset; resolves once durable (O_DSYNC). */
  async write(records: Buffer): Promise<void> {
    let done = 0;
    while (done < records.length) {
      const { bytesWritten } = await this.fh.write(
        records,
        done,
        records.length - done,
        this.offset + done,
      );
      assert(bytesWritten > 0, 'WAL write wrote nothing');
      done += bytesWritten;
    }
    this.offset += records.length;
    if (this.next === null && this.offset * 2 > this.segmentBytes) {
      this.next = preallocate(this.dir, this.seq + 1, this.segmentBytes);
      this.next.catch(() => undefined);
    }
  }

  /** Starts the next segment with `header` as its first record; the current one is closed. */
  async roll(header: Buffer): Promise<void> {
    const seq = this.seq + 1;
    const tmp = await (this.next ?? preallocate(this.dir, seq, this.segmentBytes));
    this.next = null;
    const fh = await installSegment(this.dir, tmp, seq, header);
    await this.fh.close();
    this.fh = fh;
    this.seq = seq;
    this.offset = header.length;
  }

  async close(): Promise<void> {
    await this.next?.catch(() => undefined);
    await this.fh.close();
  }
}

async function preallocate(dir: string, seq: number, bytes: number): Promise<string> {
  const tmp = join(dir, `${segmentName(seq)}.tmp`);
  const fh = await open(tmp, 'w');
  try {
    await zeroFill(fh, 0, bytes);
  } finally {
    await fh.close();
  }
  return tmp;
}

/** Writes the header into a preallocated file, then gives it its segment name (durably). */
async function installSegment(
  dir: string,
  tmp: string,
  seq: number,
  header: Buffer,
): Promise<FileHandle> {
  const fh = await open(tmp, constants.O_RDWR | constants.O_DSYNC);
  try {
    const { bytesWritten } = await fh.write(header, 0, header.length, 0);
    assert(bytesWritten === header.length, 'WAL segment header written short');
    await rename(tmp, join(dir, segmentName(seq)));
    await syncDir(dir);
  } catch (err) {
    await fh.close();
    throw err;
  }
  return fh;
}

/**
 * Removes whole segments (compaction), oldest first, the directory synced after each: a
 * power cut then leaves the segments a prefix shorter, never with a gap (which load
 * refuses as a lost segment).
 */
export async function removeSegments(dir: string, seqs: readonly number[]): Promise<void> {
  for (let i = 1; i < seqs.length; i++) assert(seqs[i] === seqs[i - 1]! + 1, 'segments to remove');
  for (const seq of seqs) {
    await unlink(join(dir, segmentName(seq)));
    await syncDir(dir);
  }
}

/** For tests and tools: writes raw bytes into a segment (a synchronous, synced overwrite). */
export function overwriteSegmentForTest(
  dir: string,
  seq: number,
  offset: number,
  bytes: Buffer,
): void {
  const fd = openSync(join(dir, segmentName(seq)), 'r+');
  try {
    writeSync(fd, bytes, 0, bytes.length, offset);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
