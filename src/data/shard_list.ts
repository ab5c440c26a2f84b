// shard_list.ts: which shard each streaming worker reads (OpenCLIP's and webdataset's split, made deterministic).
// Every rank runs W workers; worker w of rank r is global worker g = r·W + w of G = world·W. Without resampling, pass p
// shuffles the whole shard list with (seed, p) and worker g reads positions g, g + G, g + 2G, ... of it, so within a
// pass no two workers (on any rank) read the same shard and together they read every shard once. With resampling each
// worker draws shards uniformly with replacement from its own stream (seed, g, draw number): no pass ends.
import { isAbsolute, join } from "node:path";
import { permutation } from "./sources.ts";
import { expandBraces } from "./webdataset.ts";
import { hashMany } from "./hash.ts";

/** The shard URLs of `--train-data`: "::"-joined brace patterns; relative paths start at `root`. */
export function shardUrls(patterns: string | readonly string[], root?: string): string[] {
  const list = (typeof patterns === "string" ? [patterns] : patterns).flatMap((s) => s.split("::")).filter((s) =>
    s !== ""
  );
  return list.flatMap(expandBraces).map((url) =>
    url.startsWith("pipe:") || root === undefined || isAbsolute(url) ? url : join(root, url)
  );
}

/** Assigns shards to global workers, per pass (or per draw, resampled). */
export class ShardPlan {
  readonly shards: number;
  readonly workers: number;
  readonly seed: number;
  readonly resampled: boolean;
  // Two passes' orders: near a pass boundary some workers are still in the old pass while others start the new one.
  readonly #orders = new Map<number, Int32Array>();

  constructor(options: { shards: number; globalWorkers: number; seed: number; resampled: boolean }) {
    this.shards = options.shards;
    this.workers = options.globalWorkers;
    this.seed = options.seed;
    this.resampled = options.resampled;
    if (!this.resampled && this.shards < this.workers) {
      throw new RangeError(
        `${this.shards} shards for ${this.workers} workers (ranks × --workers): each worker needs at least one shard ` +
          `(use fewer workers, more shards, or --dataset-resampled)`,
      );
    }
  }

  /** The shard worker g reads at position `slot` of pass `pass`; -1 when its share of the pass is done. */
  shardAt(g: number, pass: number, slot: number): number {
    if (this.resampled) {
      const hi = hashMany(this.seed, g, slot, 1), lo = hashMany(this.seed, g, slot, 2);
      return Math.floor(((hi * 2 ** 21 + (lo >>> 11)) / 2 ** 53) * this.shards);
    }
    const position = g + slot * this.workers;
    if (position >= this.shards) return -1;
    let order = this.#orders.get(pass);
    if (order === undefined) {
      order = permutation(this.shards, hashMany(this.seed, pass, 0x5a4d));
      if (this.#orders.size >= 2) this.#orders.delete(Math.min(...this.#orders.keys()));
      this.#orders.set(pass, order);
    }
    return order[position];
  }
}
