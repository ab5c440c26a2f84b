// crc32.ts: CRC-32 (ISO 3309 / ITU-T V.42, the polynomial zlib, PNG and zip use), shared by the PNG encoder and the
// zip reader. A 256-entry table built on first use: fast enough for chunks and archive members, nothing to install.
// (TFRecord's CRC-32C is a different polynomial and lives with the TensorBoard writer.)

let crcTable: Uint32Array | null = null;

function crcTableOnce(): Uint32Array {
  if (crcTable !== null) return crcTable;
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  crcTable = table;
  return table;
}

/** CRC-32 of `bytes` (the same value as zlib.crc32 / Python's zlib.crc32). */
export function crc32(bytes: Uint8Array, start = 0, end: number = bytes.length): number {
  const table = crcTableOnce();
  let c = 0xffffffff;
  for (let i = start; i < end; i++) c = table[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
