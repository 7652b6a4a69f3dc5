/**
 * CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320). Guards every value the LevelDB
 * storage writes and every snapshot file, so a flipped or torn value is detected on load
 * instead of being handed to the Raft core. Check value: crc32("123456789") = 0xCBF43926.
 *
 * zlib's native crc32 (`zlib.crc32`, Node ≥ 20.15 / 22.2) when the runtime has it: it runs
 * at memory speed, where a table-driven loop in JavaScript takes milliseconds a megabyte.
 * The table-driven one remains for older runtimes (package.json allows Node ≥ 20).
 */
import * as zlib from 'node:zlib';

const POLYNOMIAL_REFLECTED = 0xedb88320;

const TABLE: Uint32Array = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? POLYNOMIAL_REFLECTED ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** The table-driven CRC, one byte at a time (exported so tests can compare both). */
export function crc32Table(data: Uint8Array, crc = 0): number {
  let c = (crc ^ 0xffffffff) >>> 0;
  for (let i = 0; i < data.length; i++) {
    c = TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  }
  return (c ^ 0xffffffff) >>> 0;
}

type NativeCrc32 = (data: Uint8Array, value?: number) => number;
const native = (zlib as unknown as { crc32?: NativeCrc32 }).crc32;

/** Whether the native zlib crc32 is in use. */
export const CRC32_IS_NATIVE = typeof native === 'function';

/**
 * Continues a running CRC (pass the previous result as `crc`), so data can be checksummed in parts.
 */
export const crc32: (data: Uint8Array, crc?: number) => number =
  typeof native === 'function' ? (data, crc = 0) => native(data, crc) >>> 0 : crc32Table;
