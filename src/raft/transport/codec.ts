/**
 * The wire encoding of one Raft message: msgpackr of the core's Message object. Decoding
 * never trusts the peer: every field the core will read is checked, and anything else is
 * reported as a MalformedMessage string so the transport can drop and log it.
 */
import { Packr } from 'msgpackr';
import { isNodeId } from '../../shared/ids.ts';
import type { Message } from '../core/types.ts';
import { checkEntry, checkSnapshotMeta, isIndex, isObject } from '../storage/shape.ts';
import { ownedCopy, releaseLargePackBuffer } from '../../shared/msgpack-buffer.ts';

/**
 * copyBuffers: decoded byte fields own their memory instead of pinning the whole
 * received frame for as long as the core keeps an entry.
 */
const packr = new Packr({ useRecords: false, copyBuffers: true });

/**
 * A leader sends the same entries to every follower (and again on a retry), so each
 * entry's encoding is kept, keyed by the entry object, the latest MAX_CACHED_ENCODING_BYTES
 * of them (oldest out first): an entry sent long ago, to a follower that lags, is encoded
 * again (the same bytes). Each encoding is a copy of its own size: a view of msgpackr's
 * shared pack buffer would keep that whole buffer alive while cached (issue 19).
 */
export const MAX_CACHED_ENCODING_BYTES = 4 * 1024 * 1024;

class EncodingCache {
  private readonly map = new Map<object, Uint8Array>();
  bytes = 0;

  get(entry: object): Uint8Array | undefined {
    return this.map.get(entry);
  }

  set(entry: object, bytes: Uint8Array): void {
    this.map.set(entry, bytes);
    this.bytes += bytes.length;
    // Map iteration is insertion order: the oldest first. The newest always stays.
    for (const [old, b] of this.map) {
      if (this.bytes <= MAX_CACHED_ENCODING_BYTES || old === entry) break;
      this.map.delete(old);
      this.bytes -= b.length;
    }
  }

  get size(): number {
    return this.map.size;
  }
}

const encodedEntries = new EncodingCache();

/** The cache's entries and bytes (tests). */
export function encodingCacheStats(): { entries: number; bytes: number } {
  return { entries: encodedEntries.size, bytes: encodedEntries.bytes };
}

function encodeEntry(entry: object): Uint8Array {
  let bytes = encodedEntries.get(entry);
  if (bytes === undefined) {
    const packed = packr.pack(entry);
    bytes = ownedCopy(packed);
    releaseLargePackBuffer(packed);
    encodedEntries.set(entry, bytes);
  }
  return bytes;
}

/** The msgpack head of an array of n elements. */
function arrayHead(n: number): Buffer {
  if (n < 16) return Buffer.from([0x90 | n]);
  if (n < 0x10000) return Buffer.from([0xdc, n >> 8, n & 0xff]);
  const head = Buffer.allocUnsafe(5);
  head[0] = 0xdd;
  head.writeUInt32BE(n, 1);
  return head;
}

/** The msgpack key `entries` (a fixstr). */
const ENTRIES_KEY = ownedCopy(packr.pack('entries'));

/** A message packed whole: a snapshot chunk (512 KiB) must not leave msgpackr's buffer large. */
function packWhole(message: Message): Buffer {
  const bytes = packr.pack(message);
  releaseLargePackBuffer(bytes);
  return bytes;
}

export function encodeMessage(message: Message): Buffer {
  if (message.type !== 'app' || message.entries.length === 0) return packWhole(message);
  // An append is encoded as its other fields plus an `entries` key (last) whose array is
  // spliced together from the cached entry encodings: the bytes msgpackr produces for the
  // object with `entries` as its last key, without encoding each entry once per follower.
  // (Until issue 19 this splice was never taken: it expected a fixmap header, and msgpackr
  // writes objects with a map16 one, so every append was packed whole, once per follower.)
  const { entries, ...rest } = message;
  const head = packr.pack(rest);
  // msgpackr writes an object's header as a map16 (0xde, 2 bytes of count); a fixmap is
  // read too. Anything else is a bug: then the message is packed whole.
  let fields: number;
  let body: Uint8Array;
  if (head[0] === 0xde) {
    fields = (head[1]! << 8) | head[2]!;
    body = head.subarray(3);
  } else if ((head[0]! & 0xf0) === 0x80) {
    fields = head[0]! & 0x0f;
    body = head.subarray(1);
  } else return packWhole(message);
  const n = fields + 1;
  if (n > (head[0] === 0xde ? 0xffff : 15)) return packWhole(message);
  const parts: Uint8Array[] = [
    // The header in the form msgpackr chose for the object.
    head[0] === 0xde ? Buffer.from([0xde, n >> 8, n & 0xff]) : Buffer.from([0x80 | n]),
    body,
    ENTRIES_KEY,
    arrayHead(entries.length),
  ];
  for (const e of entries) parts.push(encodeEntry(e));
  return Buffer.concat(parts);
}

export type DecodeResult = { ok: true; message: Message } | { ok: false; error: string };

const isBool = (x: unknown): x is boolean => typeof x === 'boolean';
const isCtx = (x: unknown): boolean =>
  x === null || (typeof x === 'string' && x.length <= MAX_READ_CTX_CHARS);

/** ReadIndex contexts are short request ids. */
export const MAX_READ_CTX_CHARS = 1024;

export function checkMessage(x: unknown): string | null {
  if (!isObject(x)) return 'message is not an object';
  if (!isNodeId(x.from)) return 'message.from is not a node id';
  if (!isNodeId(x.to)) return 'message.to is not a node id';
  if (!isIndex(x.term)) return 'message.term is not a non-negative integer';
  switch (x.type) {
    case 'preVote':
    case 'vote':
      if (!isIndex(x.lastLogIndex) || !isIndex(x.lastLogTerm))
        return `${x.type}: bad last log position`;
      return isBool(x.transfer) ? null : `${x.type}.transfer is not a boolean`;
    case 'preVoteResp':
    case 'voteResp':
      return isBool(x.reject) ? null : `${x.type}.reject is not a boolean`;
    case 'app': {
      if (!isIndex(x.prevIndex) || !isIndex(x.prevTerm) || !isIndex(x.commit))
        return 'app: bad prevIndex/prevTerm/commit';
      if (!Array.isArray(x.entries)) return 'app.entries is not a list';
      let expected = x.prevIndex + 1;
      for (let i = 0; i < x.entries.length; i++) {
        const problem = checkEntry(x.entries[i], `app.entries[${i}]`);
        if (problem) return problem;
        if ((x.entries[i] as { index: number }).index !== expected)
          return `app.entries[${i}] is not contiguous`;
        expected++;
      }
      return null;
    }
    case 'appResp':
      if (!isBool(x.reject)) return 'appResp.reject is not a boolean';
      return isIndex(x.index) && isIndex(x.hintTerm) && isIndex(x.hintIndex)
        ? null
        : 'appResp: bad index or hint';
    case 'heartbeat':
      if (!isIndex(x.commit)) return 'heartbeat.commit is not a non-negative integer';
      return isCtx(x.readCtx) ? null : 'heartbeat.readCtx is not a string or null';
    case 'heartbeatResp':
      return isCtx(x.readCtx) ? null : 'heartbeatResp.readCtx is not a string or null';
    case 'snap': {
      const problem = checkSnapshotMeta(x.meta, 'snap.meta');
      if (problem) return problem;
      if (!isIndex(x.offset)) return 'snap.offset is not a non-negative integer';
      if (!(x.chunk instanceof Uint8Array)) return 'snap.chunk is not bytes';
      if (x.crc !== undefined && !(isIndex(x.crc) && x.crc <= 0xffffffff))
        return 'snap.crc is not a 32-bit checksum';
      return isBool(x.done) ? null : 'snap.done is not a boolean';
    }
    case 'snapResp':
      if (!isBool(x.reject)) return 'snapResp.reject is not a boolean';
      return isIndex(x.index) && isIndex(x.offset) ? null : 'snapResp: bad index or offset';
    case 'timeoutNow':
      return null;
    default:
      return `unknown message type ${JSON.stringify(String(x.type)).slice(0, 40)}`;
  }
}

export function decodeMessage(bytes: Uint8Array): DecodeResult {
  let value: unknown;
  try {
    value = packr.unpack(bytes);
  } catch (err) {
    return { ok: false, error: `undecodable message: ${(err as Error).message}` };
  }
  const problem = checkMessage(value);
  return problem === null ? { ok: true, message: value as Message } : { ok: false, error: problem };
}
