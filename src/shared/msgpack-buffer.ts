/**
 * msgpackr's shared pack buffer, kept small (issue 19). msgpackr writes every pack() of the
 * process — of any Packr instance — into one module-level buffer and returns a view of it;
 * when a value does not fit, it moves to a new buffer of 4× the value (2× past 16 MiB), and
 * every later buffer it starts is that size again. So one large pack (a snapshot, a long
 * log run) made every later small encoding a view of a buffer of megabytes, and a small
 * encoding kept for long (a lone command's log entry, a cached entry encoding) pinned the
 * whole buffer. After a pack that may have grown it, callers hand msgpackr a fresh small
 * buffer here; views already returned keep their own buffer, as before.
 */
import { Packr } from 'msgpackr';

/** A shared buffer larger than this is replaced after the pack that grew it, bytes. */
export const MAX_SHARED_PACK_BUFFER_BYTES = 256 * 1024;
/** What msgpackr starts with, bytes. */
const FRESH_PACK_BUFFER_BYTES = 8 * 1024;

/** Any instance will do: the buffer is msgpackr's module state, shared by all. */
const packr = new Packr();

/**
 * Call right after a pack() whose result is `packed` (and before any other pack): if the
 * buffer it was written into is larger than MAX_SHARED_PACK_BUFFER_BYTES, the next pack()
 * of the process writes into a fresh small buffer instead. True when it replaced it.
 */
export function releaseLargePackBuffer(packed: Uint8Array): boolean {
  if (packed.buffer.byteLength <= MAX_SHARED_PACK_BUFFER_BYTES) return false;
  packr.useBuffer(Buffer.allocUnsafeSlow(FRESH_PACK_BUFFER_BYTES));
  return true;
}

/**
 * An encoding kept for long, in a buffer of its own size: a view of msgpackr's shared buffer
 * would keep all of it alive (other encodings, garbage) for as long as it is held.
 */
export function ownedCopy(bytes: Uint8Array): Uint8Array {
  return bytes.byteLength === bytes.buffer.byteLength
    ? bytes
    : Uint8Array.prototype.slice.call(bytes);
}

/** One msgpack nil: the smallest source msgpackr's unpack can be pointed at. */
const NIL = Uint8Array.of(0xc0);

/**
 * msgpackr's unpack keeps a DataView of the last source it read (module state, shared by
 * every instance) until the next unpack: after decoding a large buffer (a snapshot of tens
 * of MB) that nothing else keeps, this lets it go at once.
 */
export function releaseUnpackSource(): void {
  packr.unpack(NIL);
}
