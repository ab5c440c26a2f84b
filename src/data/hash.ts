// hash.ts: stateless 32-bit integer hashing, so seeded draws (synthetic images, replacement candidates, shard orders)
// are the same in every JavaScript engine and need no generator state to save or restore.

/** lowbias32 (Chris Wellons): a bijective 32-bit mixer, used to spread seeds over the whole word. */
export function hash32(x: number): number {
  x = x >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** One 32-bit hash of several non-negative integers (each up to 2^53: its low and high words are mixed in turn). */
export function hashMany(...values: number[]): number {
  let h = 0x9e3779b9;
  for (const v of values) {
    h = hash32((h ^ (v >>> 0)) >>> 0);
    h = hash32((h + Math.floor(v / 4294967296)) >>> 0);
  }
  return h;
}
