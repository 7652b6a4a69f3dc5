/**
 * The remembered results of requests that carried a requestId (the state machine's
 * `withDedup`), oldest first: part of the replicated state, so deterministic and clockless.
 *
 * Compact by design (issue 19: every live transaction leaves two of these, its Begin's and
 * its branch's, for DEDUP_RETENTION_MS): one ring of slots in insertion order (which is
 * command-time order) over a few flat arrays, and one Map from a short key to its slot. No
 * object per entry:
 * - the key is one tag character for the request kind, then the requestId, or, for the
 *   SDK's requestIds (lower-case UUIDs), its 16 bytes as characters: 17 one-byte characters
 *   instead of a 51-character `RegisterBranch\n<uuid>`;
 * - the result of a Begin ({xid, deadline}) is kept as its xid (the string the session holds
 *   too) and a number, a RegisterBranch's ({branchId}) as its branch id; any other result as
 *   it came.
 * What the table shows (get, rows) is the same values as the results it was given: the
 * snapshot's rows are `[kind + '\n' + requestId, result, command time]` as before.
 */
import { StorageCorruptError, assert } from '../shared/errors.ts';
import { detached } from './interned.ts';
import { canonical } from './snapshot-codec.ts';

/** A remembered result as a snapshot holds it: [key, result, command time]. */
export type DedupRow = [string, unknown, number];

/** Slots the ring starts with, and never shrinks below. */
const MIN_CAPACITY = 1_024;
/** Tag characters: upper case, the requestId follows as it is; lower case, as 16 bytes. */
const KIND_TAGS: Readonly<Record<string, string>> = { Begin: 'B', RegisterBranch: 'R' };
const TAG_KINDS: Readonly<Record<string, string>> = { B: 'Begin', R: 'RegisterBranch' };
/** Tag of a key kept whole (`kind\nrequestId`): a kind without a tag, or a malformed key. */
const WHOLE = '~';

export class DedupTable {
  /**
   * Packed keys (the SDK's UUIDs: a lower-case tag and 16 bytes) are indexed by an
   * open-addressing table over a typed array (no Map entry, no key string per entry): each
   * cell holds 0 (empty), 1 (a deleted entry's tombstone) or 2 + the entry's sequence number
   * (its position since the table began) modulo 2^31; growing or halving the ring moves
   * entries to other slots and the cells stay as they are. The key itself is in the ring
   * (tags, words). Other keys (rare: requestIds that are not lower-case UUIDs, kinds without
   * a tag) are in a Map from the key to its sequence number, and the key by sequence number.
   */
  private cells = new Uint32Array(MIN_CELLS);
  /** Cells that hold an entry, and tombstones. */
  private used = 0;
  private tombstones = 0;
  private readonly otherIndex = new Map<string, number>();
  private readonly otherKeys = new Map<number, string>();
  /** Per slot: the packed key's tag character code (0: another key, in otherKeys). */
  private tags = new Uint8Array(MIN_CAPACITY);
  /** Per slot: the packed key's 16 bytes as four 32-bit words. */
  private words = new Uint32Array(MIN_CAPACITY * 4);
  private values: unknown[] = new Array<unknown>(MIN_CAPACITY);
  /** A Begin result's deadline (NaN for the rest). */
  private nums = new Float64Array(MIN_CAPACITY);
  private ats = new Float64Array(MIN_CAPACITY);
  /** Slot of the oldest entry. */
  private head = 0;
  /** Sequence number of the oldest entry. */
  private base = 0;
  private count = 0;
  /** The capture under way (capture()): entries it has not read are kept when forgotten. */
  private view: CaptureView | null = null;

  get size(): number {
    return this.count;
  }

  private get capacity(): number {
    return this.tags.length;
  }

  /** The remembered result of `kind` `requestId`, or undefined. */
  get(kind: string, requestId: string): unknown {
    return this.getKey(compactKey(kind, requestId));
  }

  /** Remembers `value` (a new requestId: the caller looked it up first) at command time `at`. */
  add(kind: string, requestId: string, value: unknown, at: number): void {
    this.addCompact(compactKey(kind, requestId), value, at);
  }

  /** get() by the key compactKey(kind, requestId) made (made once for a lookup and an add). */
  getKey(key: string): unknown {
    const seq = this.find(key);
    return seq < 0 ? undefined : this.valueAt(this.slotOf(seq));
  }

  /** add() by the key compactKey(kind, requestId) made. */
  addKey(key: string, value: unknown, at: number): void {
    this.addCompact(key, value, at);
  }

  /** Command time of the oldest entry (undefined when empty). */
  oldestAt(): number | undefined {
    return this.count === 0 ? undefined : this.ats[this.head];
  }

  /** Forgets, oldest first, every entry remembered at or before `horizon`; returns how many. */
  forgetUntil(horizon: number): number {
    let forgotten = 0;
    const view = this.view;
    while (this.count > 0 && this.ats[this.head]! <= horizon) {
      const slot = this.head;
      // An entry of the capture under way that it has not read yet: kept for it (copy-on-write).
      if (view !== null && this.base >= view.next && this.base < view.start + view.count)
        view.kept.push({
          seq: this.base,
          key: this.keyAt(slot, this.base),
          value: this.values[slot],
          num: this.nums[slot]!,
          at: this.ats[slot]!,
        });
      if (this.tags[slot] === 0) {
        this.otherIndex.delete(this.otherKeys.get(this.base)!);
        this.otherKeys.delete(this.base);
      } else this.unindex(slot, this.base);
      this.values[slot] = undefined;
      this.head = (this.head + 1) % this.capacity;
      this.base++;
      this.count--;
      forgotten++;
    }
    // Memory comes back after a burst: a ring a quarter full is halved.
    if (forgotten > 0 && this.capacity > MIN_CAPACITY && this.count < this.capacity / 4)
      this.relayout(Math.max(MIN_CAPACITY, this.capacity / 2));
    // Tombstones are cleared (and the cells shrink with the entries) once they are many.
    if (this.tombstones > this.cells.length / 4) this.reindex();
    return forgotten;
  }

  /** Every entry as a snapshot row, oldest first. */
  rows(): DedupRow[] {
    return this.rowsBetween(0, this.count);
  }

  /** Entries `from` (inclusive) to `to` (exclusive), oldest first: a slice of rows(). */
  rowsBetween(from: number, to: number): DedupRow[] {
    const end = Math.min(to, this.count);
    const out = new Array<DedupRow>(Math.max(0, end - from));
    for (let i = from; i < end; i++) {
      const slot = (this.head + i) % this.capacity;
      out[i - from] = [
        wholeKey(this.keyAt(slot, this.base + i)),
        this.valueAt(slot),
        this.ats[slot]!,
      ];
    }
    return out;
  }

  /**
   * The entries as they are now, readable once, oldest first, while the table goes on
   * changing (a snapshot capture that lets commands apply meanwhile): O(1) now. Entries are
   * added at the end (after the captured ones, which is all it reads) and forgotten from the
   * start: one the capture has not read yet is kept for it as it is forgotten (its four
   * fields). The rows it gives hold canonical results (sorted keys, as a snapshot encodes
   * them). A later capture() ends this one.
   */
  capture(): DedupCapture {
    const view: CaptureView = {
      start: this.base,
      count: this.count,
      next: this.base,
      kept: [],
      keptHead: 0,
    };
    this.view = view;
    return {
      size: view.count,
      rowsBetween: (from: number, to: number): DedupRow[] => {
        assert(this.view === view, 'a later capture of the dedup table ended this one');
        assert(view.start + from === view.next, () => `dedup rows read from ${from}, not in order`);
        const end = Math.min(to, view.count);
        const out = new Array<DedupRow>(Math.max(0, end - from));
        for (let i = from; i < end; i++) {
          const seq = view.start + i;
          let [key, value, num, at]: [string, unknown, number, number] = ['', undefined, NaN, 0];
          if (seq < this.base) {
            const kept = view.kept[view.keptHead++];
            assert(kept?.seq === seq, () => `dedup entry ${seq} was forgotten unread and not kept`);
            ({ key, value, num, at } = kept);
          } else {
            const slot = this.slotOf(seq);
            [key, value, num, at] = [
              this.keyAt(slot, seq),
              this.values[slot],
              this.nums[slot]!,
              this.ats[slot]!,
            ];
          }
          out[i - from] = [
            wholeKey(key),
            typeof value === 'string' ? compactResult(key, value, num) : canonical(value),
            at,
          ];
          view.next = seq + 1;
        }
        // What was read is not needed again.
        if (view.keptHead > 1024 && view.keptHead * 2 > view.kept.length) {
          view.kept.splice(0, view.keptHead);
          view.keptHead = 0;
        }
        if (view.next === view.start + view.count) this.view = null;
        return out;
      },
    };
  }

  /** A table holding `rows` (a snapshot's, oldest first). */
  static of(rows: Iterable<DedupRow>): DedupTable {
    const table = new DedupTable();
    for (const [key, value, at] of rows) {
      if (typeof key !== 'string' || typeof at !== 'number')
        throw new StorageCorruptError('coordinator snapshot holds a malformed dedup entry');
      const nl = key.indexOf('\n');
      const compact =
        nl < 0 ? detached(WHOLE + key) : compactKey(key.slice(0, nl), key.slice(nl + 1));
      if (table.find(compact) >= 0)
        throw new StorageCorruptError(`coordinator snapshot remembers ${key} twice`);
      table.addCompact(compact, value, at);
    }
    return table;
  }

  /** The slot of the entry with sequence number `seq` (held). */
  private slotOf(seq: number): number {
    return (this.head + (seq - this.base)) % this.capacity;
  }

  /** The sequence number of `key`, or -1. */
  private find(key: string): number {
    if (!isPacked(key)) return this.otherIndex.get(key) ?? -1;
    packWords(key, scratch);
    const tag = key.charCodeAt(0);
    const mask = this.cells.length - 1;
    for (let cell = hashOf(tag, scratch) & mask; ; cell = (cell + 1) & mask) {
      const v = this.cells[cell]!;
      if (v === EMPTY) return -1;
      if (v === TOMBSTONE) continue;
      const seq = this.seqOf(v);
      const slot = this.slotOf(seq);
      const w = slot * 4;
      const words = this.words;
      if (
        this.tags[slot] === tag &&
        words[w] === scratch[0] &&
        words[w + 1] === scratch[1] &&
        words[w + 2] === scratch[2] &&
        words[w + 3] === scratch[3]
      )
        return seq;
    }
  }

  /** The held sequence number a cell value names (it is within the ring's count of base). */
  private seqOf(cell: number): number {
    return this.base + ((cell - CELL_OFFSET - (this.base % SEQ_MOD) + SEQ_MOD) % SEQ_MOD);
  }

  /** Puts the entry in `slot` (sequence `seq`, packed) into the cells. */
  private index(slot: number, seq: number): void {
    if ((this.used + 1) * 2 > this.cells.length) {
      this.reindex();
      // After the tombstones are cleared: still more than half full, the cells double.
      if ((this.used + 1) * 2 > this.cells.length) this.reindex(this.cells.length * 2);
    }
    this.place(slot, seq);
  }

  private place(slot: number, seq: number): void {
    const mask = this.cells.length - 1;
    let cell = hashAt(this.tags[slot]!, this.words, slot * 4) & mask;
    while (this.cells[cell]! > TOMBSTONE) cell = (cell + 1) & mask;
    if (this.cells[cell] === TOMBSTONE) this.tombstones--;
    else this.used++;
    this.cells[cell] = CELL_OFFSET + (seq % SEQ_MOD);
  }

  /** Takes the packed entry in `slot` (sequence `seq`) out of the cells: a tombstone. */
  private unindex(slot: number, seq: number): void {
    const mask = this.cells.length - 1;
    const want = CELL_OFFSET + (seq % SEQ_MOD);
    for (let cell = hashAt(this.tags[slot]!, this.words, slot * 4) & mask; ;) {
      const v = this.cells[cell]!;
      assert(v !== EMPTY, () => `dedup entry ${seq} is not in its index`);
      if (v === want) {
        this.cells[cell] = TOMBSTONE;
        this.tombstones++;
        return;
      }
      cell = (cell + 1) & mask;
    }
  }

  /** New cells (no tombstones) for the packed entries, `size` of them (default: fitted). */
  private reindex(size = 0): void {
    let cells = MIN_CELLS;
    // At most 3/8 full after: room to add before the next (at half full).
    while (cells < size || cells * 3 < this.count * 8) cells *= 2;
    this.cells = new Uint32Array(cells);
    this.used = 0;
    this.tombstones = 0;
    for (let i = 0; i < this.count; i++) {
      const slot = (this.head + i) % this.capacity;
      if (this.tags[slot] !== 0) this.place(slot, this.base + i);
    }
  }

  private addCompact(key: string, value: unknown, at: number): void {
    if (this.count === this.capacity) this.relayout(this.capacity * 2);
    const slot = (this.head + this.count) % this.capacity;
    const seq = this.base + this.count;
    const tag = key[0];
    this.ats[slot] = at;
    this.nums[slot] = NaN;
    this.values[slot] = value;
    if (tag === 'B' || tag === 'b') {
      const r = value as { xid?: unknown; deadline?: unknown };
      if (isExactly(r, 'deadline', 'xid') && typeof r.xid === 'string') {
        if (typeof r.deadline === 'number' && !Number.isNaN(r.deadline)) {
          this.values[slot] = r.xid;
          this.nums[slot] = r.deadline;
        }
      }
    } else if (tag === 'R' || tag === 'r') {
      const r = value as { branchId?: unknown };
      if (isExactly(r, 'branchId') && typeof r.branchId === 'string')
        this.values[slot] = r.branchId;
    }
    this.count++;
    if (isPacked(key)) {
      this.tags[slot] = key.charCodeAt(0);
      packWords(key, this.words, slot * 4);
      this.index(slot, seq);
    } else {
      this.tags[slot] = 0;
      this.otherIndex.set(key, seq);
      this.otherKeys.set(seq, key);
    }
  }

  /** The compact key of the entry in `slot` (sequence `seq`), as compactKey made it. */
  private keyAt(slot: number, seq: number): string {
    const tag = this.tags[slot]!;
    if (tag === 0) return this.otherKeys.get(seq)!;
    const codes = keyCodes;
    codes[0] = tag;
    for (let k = 0; k < 4; k++) {
      const word = this.words[slot * 4 + k]!;
      codes[1 + k * 4] = word >>> 24;
      codes[2 + k * 4] = (word >>> 16) & 0xff;
      codes[3 + k * 4] = (word >>> 8) & 0xff;
      codes[4 + k * 4] = word & 0xff;
    }
    return String.fromCharCode.apply(null, codes);
  }

  /** The result in `slot`, rebuilt from its compact form (frozen: nobody may change it). */
  private valueAt(slot: number): unknown {
    const value = this.values[slot];
    if (typeof value !== 'string') return value;
    const tag = this.tags[slot] !== 0 ? String.fromCharCode(this.tags[slot]!) : undefined;
    const kind = tag ?? this.otherKeys.get(this.seqAtSlot(slot))![0];
    if (kind === 'B' || kind === 'b')
      return Object.freeze({ xid: value, deadline: this.nums[slot] });
    return Object.freeze({ branchId: value });
  }

  /** The sequence number of the entry in `slot` (held). */
  private seqAtSlot(slot: number): number {
    return this.base + ((slot - this.head + this.capacity) % this.capacity);
  }

  /**
   * Moves the entries, oldest first, into new arrays of `capacity` slots (the cells hold
   * sequence numbers: they do not change).
   */
  private relayout(capacity: number): void {
    const tags = new Uint8Array(capacity);
    const words = new Uint32Array(capacity * 4);
    const values = new Array<unknown>(capacity);
    const nums = new Float64Array(capacity);
    const ats = new Float64Array(capacity);
    for (let i = 0; i < this.count; i++) {
      const from = (this.head + i) % this.capacity;
      tags[i] = this.tags[from]!;
      words.set(this.words.subarray(from * 4, from * 4 + 4), i * 4);
      values[i] = this.values[from];
      nums[i] = this.nums[from]!;
      ats[i] = this.ats[from]!;
    }
    this.tags = tags;
    this.words = words;
    this.values = values;
    this.nums = nums;
    this.ats = ats;
    this.head = 0;
  }
}

/** Cells of the packed keys' index at least (a power of two). */
const MIN_CELLS = 2_048;
const EMPTY = 0;
const TOMBSTONE = 1;
/** A cell holds CELL_OFFSET + the sequence number modulo SEQ_MOD. */
const CELL_OFFSET = 2;
const SEQ_MOD = 2 ** 31;
/** Scratch for a looked-up key's words, and for a key's character codes. */
const scratch = new Uint32Array(4);
const keyCodes: number[] = new Array<number>(17).fill(0);

/** A key compactKey packed: a lower-case tag and 16 one-byte characters. */
function isPacked(key: string): boolean {
  const tag = key.charCodeAt(0);
  return key.length === 17 && (tag === 0x62 || tag === 0x72); // 'b', 'r'
}

/** The 16 bytes of a packed key as four 32-bit words, into `out` at `at`. */
function packWords(key: string, out: Uint32Array, at = 0): void {
  for (let k = 0; k < 4; k++) {
    const c = 1 + k * 4;
    out[at + k] =
      ((key.charCodeAt(c) << 24) |
        (key.charCodeAt(c + 1) << 16) |
        (key.charCodeAt(c + 2) << 8) |
        key.charCodeAt(c + 3)) >>>
      0;
  }
}

function hashOf(tag: number, w: Uint32Array): number {
  return hashAt(tag, w, 0);
}

/** A hash of a tag and four words (murmur3's finalizer over a multiply-xor mix). */
function hashAt(tag: number, w: Uint32Array, at: number): number {
  let h = Math.imul(tag, 0x9e3779b1);
  for (let k = 0; k < 4; k++) {
    h = Math.imul(h ^ w[at + k]!, 0x85ebca6b);
    h ^= h >>> 13;
  }
  h = Math.imul(h ^ (h >>> 16), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** A capture's reading position, and the entries forgotten before it read them. */
interface CaptureView {
  /** Sequence number of the first captured entry, and how many there are. */
  readonly start: number;
  readonly count: number;
  /** Sequence number of the next entry to read. */
  next: number;
  readonly kept: { seq: number; key: string; value: unknown; num: number; at: number }[];
  keptHead: number;
}

/** What DedupTable.capture() gives: the entries as of the capture, in slices. */
export interface DedupCapture {
  readonly size: number;
  /** Rows `from` (the next unread) to `to` (exclusive), oldest first, results canonical. */
  rowsBetween(from: number, to: number): DedupRow[];
}

/**
 * A compact result (kept as a string) as a snapshot encodes it: a Begin's as {deadline, xid},
 * a RegisterBranch's as {branchId}, keys in sorted order (what canonical() makes of them).
 */
function compactResult(key: string, value: string, num: number): unknown {
  const tag = key[0];
  if (tag === 'B' || tag === 'b') return { deadline: num, xid: value };
  return { branchId: value };
}

/** True when `value` is a plain object whose own keys are exactly `names` (sorted). */
function isExactly(value: unknown, ...names: string[]): boolean {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const keys = Object.keys(value).sort();
  return keys.length === names.length && keys.every((k, i) => k === names[i]);
}

/** The table's key of a request: a tag, then the requestId (or its 16 bytes). */
export function compactKey(kind: string, requestId: string): string {
  const tag = KIND_TAGS[kind];
  if (tag === undefined) return detached(`${WHOLE}${kind}\n${requestId}`);
  return uuidKey(tag.toLowerCase().charCodeAt(0), requestId) ?? detached(tag + requestId);
}

/**
 * A lower-case UUID (the SDK's requestIds: 8-4-4-4-12 hex digits) as its tag and 16 bytes,
 * one flat string of 17 one-byte characters; null for anything else. One pass over the
 * characters (no regex, no slices: it runs twice per command with a requestId, on every node).
 */
function uuidKey(tagCode: number, id: string): string | null {
  if (
    id.length !== 36 ||
    id.charCodeAt(8) !== DASH ||
    id.charCodeAt(13) !== DASH ||
    id.charCodeAt(18) !== DASH ||
    id.charCodeAt(23) !== DASH
  )
    return null;
  const codes = new Array<number>(17);
  codes[0] = tagCode;
  let j = 1;
  for (let i = 0; i < 36; i += 2) {
    if (i === 8 || i === 13 || i === 18 || i === 23) i++; // the groups have even lengths
    const hi = hexDigit(id.charCodeAt(i));
    const lo = hexDigit(id.charCodeAt(i + 1));
    if (hi < 0 || lo < 0) return null;
    codes[j++] = hi * 16 + lo;
  }
  // One flat string (a concatenation would be a cons string).
  return String.fromCharCode(...codes);
}

const DASH = 0x2d;

/** A lower-case hex digit's value, or -1. */
function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  return -1;
}

/** The key a snapshot shows: `kind\nrequestId`. */
export function wholeKey(compact: string): string {
  const tag = compact[0]!;
  if (tag === WHOLE) return compact.slice(1);
  const kind = TAG_KINDS[tag.toUpperCase()]!;
  if (tag === tag.toUpperCase()) return `${kind}\n${compact.slice(1)}`;
  // One flat string from its character codes (a template of 21 parts is a rope of them, which
  // every reader flattens again): the kind, a newline, the 16 bytes as 8-4-4-4-12 hex digits.
  const codes = uuidCodes;
  const prefix = kind === 'Begin' ? BEGIN_CODES : REGISTER_CODES;
  let j = 0;
  for (; j < prefix.length; j++) codes[j] = prefix[j]!;
  for (let i = 1; i < 17; i++) {
    if (i === 5 || i === 7 || i === 9 || i === 11) codes[j++] = DASH;
    const b = compact.charCodeAt(i);
    codes[j++] = HEX_CODES[b >>> 4]!;
    codes[j++] = HEX_CODES[b & 15]!;
  }
  return String.fromCharCode.apply(null, codes.length === j ? codes : codes.slice(0, j));
}

/** Scratch for wholeKey's character codes (the longest prefix, then 36 characters). */
const uuidCodes: number[] = new Array<number>('RegisterBranch\n'.length + 36).fill(0);
const codesOf = (s: string) => Array.from(s, (c) => c.charCodeAt(0));
const BEGIN_CODES = codesOf('Begin\n');
const REGISTER_CODES = codesOf('RegisterBranch\n');
const HEX_CODES = codesOf('0123456789abcdef');
