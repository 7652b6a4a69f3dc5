/**
 * CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), table-driven, one byte at a time.
 * Guards every value the LevelDB storage writes, so a flipped or torn value is detected on
 * load instead of being handed to the Raft core. Check value: crc32("123456789") = 0xCBF43926.
 */

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

/** Continues a running CRC (pass the previous result as `crc`), so data can be checksummed in parts. */
export function crc32(data: Uint8Array, crc = 0): number {
  let c = (crc ^ 0xffffffff) >>> 0;
  for (let i = 0; i < data.length; i++) {
    c = TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  }
  return (c ^ 0xffffffff) >>> 0;
}
