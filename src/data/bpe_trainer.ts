// bpe_trainer.ts: learns a CLIP-style byte-level BPE vocabulary from captions, so a tokenizer can be built offline
// for a corpus of one's own (OpenAI's vocabulary comes from `deno task data openai-bpe`). The merges file it writes has
// OpenAI's format and loads in ClipTokenizer; ids then follow the order of docs/data.md#tokenizer (512 byte tokens,
// merges, SOT, EOT).
//
// Words are the tokenizer's own pre-tokens (same cleaning, regex and byte alphabet), with '</w>' on the last symbol
// as in CLIP's vocab, so a trained merge can apply at encode time exactly where it applied in training. Each step
// merges the most frequent adjacent pair (ties: the lexicographically smallest (first, second), so the result does
// not depend on corpus order), every occurrence left to right as `bpe()` does. Pair counts are updated only for the
// words that hold the merged pair, and a lazy max-heap finds the next pair: no recount per merge.
import { gzipSync } from "node:zlib";
import { byteEncode, cleanCaption, END_OF_TEXT, splitWords, START_OF_TEXT } from "./tokenizer.ts";
import { writeFileAtomic } from "../fs/atomic_write.ts";

/** Ids that are not merges: 256 byte characters, the same with '</w>', and the two specials. */
export const NON_MERGE_TOKENS = 512 + 2;

export const PAIR_BASE = 2 ** 21; // symbol ids stay below this (a vocab of two million), so a*BASE+b is an exact double

/** Distinct pre-tokens of a corpus (byte-encoded) and how often each occurs. Special-token text is skipped. */
export function countWords(corpus: Iterable<string>): Map<string, number> {
  const counts = new Map<string, number>();
  for (const caption of corpus) {
    for (const word of splitWords(cleanCaption(caption))) {
      if (word === START_OF_TEXT || word === END_OF_TEXT) continue;
      const key = byteEncode(word);
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  }
  return counts;
}

/**
 * Learns merges ("a b" strings in rank order) for a vocabulary of `vocabSize` ids = 514 + merges. Stops early, with
 * fewer merges, when no adjacent pair is left in the corpus.
 */
export function trainBpe(corpus: Iterable<string>, vocabSize: number): string[] {
  if (!Number.isInteger(vocabSize) || vocabSize < NON_MERGE_TOKENS || vocabSize - NON_MERGE_TOKENS >= PAIR_BASE) {
    throw new RangeError(
      `trainBpe: vocabSize must be an integer in [${NON_MERGE_TOKENS}, ${PAIR_BASE}) ` +
        `(512 byte tokens + merges + 2 specials), got ${vocabSize}`,
    );
  }
  const target = vocabSize - NON_MERGE_TOKENS;

  // Symbols are interned by string, so a merge that yields an existing string reuses its id, as bpe() on strings does.
  const symbols: string[] = [];
  const symbolIds = new Map<string, number>();
  const intern = (s: string): number => {
    let id = symbolIds.get(s);
    if (id === undefined) {
      id = symbols.length;
      symbols.push(s);
      symbolIds.set(s, id);
    }
    return id;
  };

  const words: number[][] = [];
  const freqs: number[] = [];
  for (const [word, freq] of countWords(corpus)) {
    const chars = word.split("");
    chars[chars.length - 1] += "</w>";
    words.push(chars.map(intern));
    freqs.push(freq);
  }

  const pairCounts = new Map<number, number>();
  const pairWords = new Map<number, Set<number>>();
  const addPair = (key: number, w: number, delta: number): void => {
    const count = (pairCounts.get(key) ?? 0) + delta;
    if (count > 0) pairCounts.set(key, count);
    else pairCounts.delete(key);
    if (delta > 0) {
      let set = pairWords.get(key);
      if (set === undefined) pairWords.set(key, set = new Set());
      set.add(w);
    }
  };
  words.forEach((word, w) => {
    for (let i = 0; i + 1 < word.length; i++) addPair(word[i] * PAIR_BASE + word[i + 1], w, freqs[w]);
  });

  const heap = new PairHeap((x, y) => {
    if (x.count !== y.count) return x.count > y.count;
    const xa = symbols[Math.floor(x.key / PAIR_BASE)], ya = symbols[Math.floor(y.key / PAIR_BASE)];
    if (xa !== ya) return xa < ya;
    return symbols[x.key % PAIR_BASE] < symbols[y.key % PAIR_BASE];
  });
  for (const [key, count] of pairCounts) heap.push({ key, count });

  const merges: string[] = [];
  while (merges.length < target) {
    const best = heap.pop();
    if (best === undefined) break;
    // Entries go stale when a count changes; the fresh entry was pushed then, so a stale one is just dropped.
    if (pairCounts.get(best.key) !== best.count) continue;
    const a = Math.floor(best.key / PAIR_BASE), b = best.key % PAIR_BASE;
    const merged = intern(symbols[a] + symbols[b]);
    merges.push(symbols[a] + " " + symbols[b]);

    const touched = new Set<number>();
    for (const w of [...pairWords.get(best.key)!]) {
      const old = words[w], freq = freqs[w];
      const next: number[] = [];
      for (let i = 0; i < old.length;) {
        if (old[i] === a && i + 1 < old.length && old[i + 1] === b) {
          next.push(merged);
          i += 2;
        } else {
          next.push(old[i++]);
        }
      }
      const oldPairs = new Set<number>(), newPairs = new Set<number>();
      for (let i = 0; i + 1 < old.length; i++) {
        const key = old[i] * PAIR_BASE + old[i + 1];
        addPair(key, w, -freq);
        oldPairs.add(key);
      }
      for (let i = 0; i + 1 < next.length; i++) {
        const key = next[i] * PAIR_BASE + next[i + 1];
        addPair(key, w, freq);
        newPairs.add(key);
      }
      for (const key of oldPairs) {
        if (!newPairs.has(key)) pairWords.get(key)?.delete(w);
        touched.add(key);
      }
      for (const key of newPairs) touched.add(key);
      words[w] = next;
    }
    pairWords.delete(best.key);
    for (const key of touched) {
      const count = pairCounts.get(key);
      if (count === undefined) pairWords.delete(key);
      else heap.push({ key, count });
    }
  }
  return merges;
}

/** Writes merges in OpenAI's format ("#version: 0.2" then one "a b" per line), gzipped when the path ends in .gz.
 * Written atomically (temp file, fsync, rename), so a reader never sees half a file. */
export function writeMerges(path: string, merges: readonly string[]): void {
  merges.forEach((merge, i) => {
    if (!/^[^\s]+ [^\s]+$/.test(merge)) {
      throw new RangeError(`writeMerges: merge ${i} must be two symbols separated by one space, got ${merge}`);
    }
  });
  const text = ["#version: 0.2", ...merges].join("\n") + "\n";
  const bytes = new TextEncoder().encode(text);
  writeFileAtomic(path, path.endsWith(".gz") ? gzipSync(bytes) : bytes);
}

interface PairEntry {
  key: number;
  count: number;
}

/** A binary max-heap of pair entries under `better`. */
class PairHeap {
  readonly #items: PairEntry[] = [];
  constructor(readonly better: (x: PairEntry, y: PairEntry) => boolean) {}

  push(entry: PairEntry): void {
    const items = this.#items;
    items.push(entry);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.better(items[i], items[parent])) break;
      [items[i], items[parent]] = [items[parent], items[i]];
      i = parent;
    }
  }

  pop(): PairEntry | undefined {
    const items = this.#items;
    if (items.length === 0) return undefined;
    const top = items[0];
    const last = items.pop()!;
    if (items.length > 0) {
      items[0] = last;
      for (let i = 0;;) {
        const l = 2 * i + 1, r = l + 1;
        let best = i;
        if (l < items.length && this.better(items[l], items[best])) best = l;
        if (r < items.length && this.better(items[r], items[best])) best = r;
        if (best === i) break;
        [items[i], items[best]] = [items[best], items[i]];
        i = best;
      }
    }
    return top;
  }
}
