/**
 * The live xids in xid order (code-unit order, compareStrings), kept as commands apply: the
 * operator's pages of live sessions (ListSessions, GET /tx/v1/sessions) read a bounded page
 * after a cursor from it instead of sorting every live xid per page (issue 19), and a
 * snapshot capture takes the sessions in the order it encodes them without a sort.
 *
 * Sorted chunks of at most CHUNK strings (a two-level B-tree without its upper nodes): an
 * insert or delete is a binary search over the chunks' last xids, one in the chunk, and a
 * splice of at most CHUNK slots; a page after a cursor is the same search and a walk. One
 * pointer per xid (plus the chunks' slack): the strings are the sessions' own.
 */
import { assert } from '../shared/errors.ts';
import { compareStrings } from './lock-key.ts';

/** Xids per chunk at most; a full chunk splits in two. */
const CHUNK = 512;

export class XidIndex {
  private chunks: string[][] = [];
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Adds `xid` (not held yet). */
  add(xid: string): void {
    if (this.chunks.length === 0) {
      this.chunks.push([xid]);
      this.count = 1;
      return;
    }
    let c = this.chunkFor(xid);
    if (c === this.chunks.length) c--; // past every chunk's last: the last chunk grows
    const chunk = this.chunks[c]!;
    const at = lowerBound(chunk, xid);
    assert(chunk[at] !== xid, () => `${xid} is indexed twice`);
    chunk.splice(at, 0, xid);
    this.count++;
    if (chunk.length > CHUNK) this.chunks.splice(c + 1, 0, chunk.splice(chunk.length >>> 1));
  }

  /** Removes `xid`; false when it was not held. */
  delete(xid: string): boolean {
    const c = this.chunkFor(xid);
    const chunk = this.chunks[c];
    if (chunk === undefined) return false;
    const at = lowerBound(chunk, xid);
    if (chunk[at] !== xid) return false;
    chunk.splice(at, 1);
    this.count--;
    if (chunk.length === 0) this.chunks.splice(c, 1);
    return true;
  }

  /** Up to `limit` xids after `after` (exclusive; null: from the first), in order. */
  page(after: string | null, limit: number): string[] {
    const out: string[] = [];
    let c = after === null ? 0 : this.chunkFor(after);
    let at = after === null || c === this.chunks.length ? 0 : upperBound(this.chunks[c]!, after);
    for (; c < this.chunks.length && out.length < limit; c++, at = 0) {
      const chunk = this.chunks[c]!;
      for (; at < chunk.length && out.length < limit; at++) out.push(chunk[at]!);
    }
    return out;
  }

  /** Every xid in order. */
  all(): string[] {
    const out = new Array<string>(this.count);
    let i = 0;
    for (const chunk of this.chunks) for (const xid of chunk) out[i++] = xid;
    return out;
  }

  /** An index of `xids` (any order, distinct). */
  static of(xids: Iterable<string>): XidIndex {
    const sorted = [...xids].sort(compareStrings);
    const index = new XidIndex();
    const half = CHUNK >>> 1;
    for (let i = 0; i < sorted.length; i += half) index.chunks.push(sorted.slice(i, i + half));
    index.count = sorted.length;
    for (let i = 1; i < sorted.length; i++)
      assert(sorted[i - 1] !== sorted[i], () => `${sorted[i]} is indexed twice`);
    return index;
  }

  /** Checks the order, the count, and that `holds` each xid (checkInvariants). */
  check(holds: (xid: string) => boolean): void {
    let n = 0;
    let last: string | null = null;
    for (const chunk of this.chunks) {
      assert(chunk.length > 0 && chunk.length <= CHUNK, () => `a chunk of ${chunk.length} xids`);
      for (const xid of chunk) {
        assert(last === null || compareStrings(last, xid) < 0, () => `${xid} is out of order`);
        assert(holds(xid), () => `${xid} is indexed but not live`);
        last = xid;
        n++;
      }
    }
    assert(n === this.count, () => `the xid index counts ${this.count}, holds ${n}`);
  }

  /** The first chunk whose last xid is >= `xid` (chunks.length: none). */
  private chunkFor(xid: string): number {
    let [lo, hi] = [0, this.chunks.length];
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const chunk = this.chunks[mid]!;
      if (compareStrings(chunk[chunk.length - 1]!, xid) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/** First index whose xid is >= `xid`. */
function lowerBound(sorted: readonly string[], xid: string): number {
  let [lo, hi] = [0, sorted.length];
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareStrings(sorted[mid]!, xid) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** First index whose xid is > `xid`. */
function upperBound(sorted: readonly string[], xid: string): number {
  let [lo, hi] = [0, sorted.length];
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareStrings(sorted[mid]!, xid) <= 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
