// text_store.ts: many strings kept as UTF-8 in a few large byte chunks instead of one JS string each. The captions of
// a 15 M-sample dataset then cost their bytes plus 12 per entry, and the garbage collector traces a few dozen buffers
// instead of 15 M heap strings. It trades a UTF-8 decode per read (well under a microsecond for a caption) for that,
// and it only appends: no removal, no update.

const CHUNK_BYTES = 16 * 1024 * 1024;
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8");

/** An append-only list of strings stored as UTF-8. */
export class TextStore {
  readonly #chunks: Uint8Array[] = [];
  #used = 0;
  // Per entry: chunk, byte offset in it, byte length.
  #entries = new Uint32Array(3 * 1024);
  #count = 0;

  get size(): number {
    return this.#count;
  }

  /** Appends `text` and returns its index. */
  push(text: string): number {
    let chunk = this.#chunks.at(-1);
    let written = -1;
    if (chunk !== undefined) {
      const result = encoder.encodeInto(text, chunk.subarray(this.#used));
      if (result.read === text.length) written = result.written;
    }
    if (written < 0) {
      // A UTF-8 byte per UTF-16 unit is at most 3 bytes: a chunk of that size always holds the string.
      chunk = new Uint8Array(Math.max(CHUNK_BYTES, 3 * text.length));
      this.#chunks.push(chunk);
      this.#used = 0;
      written = encoder.encodeInto(text, chunk).written;
    }
    if (3 * (this.#count + 1) > this.#entries.length) {
      const grown = new Uint32Array(Math.max(3 * 1024, this.#entries.length * 2));
      grown.set(this.#entries);
      this.#entries = grown;
    }
    const at = 3 * this.#count;
    this.#entries[at] = this.#chunks.length - 1;
    this.#entries[at + 1] = this.#used;
    this.#entries[at + 2] = written;
    this.#used += written;
    return this.#count++;
  }

  /** The string at `index`. */
  get(index: number): string {
    if (!(index >= 0 && index < this.#count)) {
      throw new RangeError(`TextStore: index ${index} outside [0, ${this.#count})`);
    }
    const at = 3 * index;
    const offset = this.#entries[at + 1];
    return decoder.decode(this.#chunks[this.#entries[at]].subarray(offset, offset + this.#entries[at + 2]));
  }

  /** Gives back the unused tail of the last chunk and of the entry table (call once the store is complete). */
  trim(): void {
    const last = this.#chunks.length - 1;
    if (last >= 0 && this.#used < this.#chunks[last].length) {
      this.#chunks[last] = this.#chunks[last].slice(0, this.#used);
    }
    this.#entries = this.#entries.slice(0, 3 * this.#count);
  }

  /** Bytes held: the UTF-8 chunks plus the entry table. */
  get byteLength(): number {
    return this.#chunks.reduce((sum, chunk) => sum + chunk.length, 0) + this.#entries.byteLength;
  }
}
