/**
 * What the generated codecs (scripts/gen-codecs.mjs → *-codecs.gen.ts) share: the typed
 * refusal of malformed bytes and the few readers protobufjs's Reader lacks in the shape we
 * need. Every read is bounded by the Reader's length (the enclosing message's end while a
 * nested message is read); a length or varint past it, an unsupported wire type (groups)
 * or field number 0 is refused as a whole.
 */
import type protobuf from 'protobufjs/minimal.js';
import { BadRequestError } from './errors.ts';

/**
 * Bytes that are not a valid encoding of the message type. gRPC answers a request that
 * cannot be read with INTERNAL ("Error deserializing request"), as it did with the loader.
 */
export class WireDecodeError extends BadRequestError {
  constructor(
    readonly messageType: string,
    cause: unknown,
  ) {
    super(`malformed ${messageType}: ${cause instanceof Error ? cause.message : String(cause)}`, {
      cause,
    });
  }
}

/** A uint64 as a number (as the loader's `longs: Number`: exact up to 2^53). */
export function readU64(r: protobuf.Reader): number {
  const v = r.uint64() as unknown as number | { low: number; high: number };
  if (typeof v === 'number') return v;
  return (v.high >>> 0) * 4294967296 + (v.low >>> 0);
}

/** A bytes field (a view of the received buffer, as the loader gives it). */
export function readBytes(r: protobuf.Reader): Uint8Array {
  return r.bytes();
}

/** The default of a singular bytes field (a fresh empty buffer, as the loader's). */
/** An enum number as its name; a number the enum does not name stays a number (as the loader). */
export function enumName(names: readonly (string | undefined)[], n: number): string | number {
  return names[n] ?? n;
}

/** Skips a field the message does not know (or whose wire type it does not expect). */
export function skipField(r: protobuf.Reader, tag: number): void {
  if (tag >>> 3 === 0) throw new RangeError('field number 0');
  switch (tag & 7) {
    case 0:
      r.skip();
      return;
    case 1:
      r.skip(8);
      return;
    case 2:
      r.skip(r.uint32());
      return;
    case 5:
      r.skip(4);
      return;
    default:
      throw new RangeError(`wire type ${tag & 7} not supported`);
  }
}
