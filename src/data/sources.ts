// sources.ts: what the training loop reads. A TrainSource turns (epoch, batch index, rank) into a batch, purely,
// so a resumed run sees exactly the batches the interrupted one would have seen. The synthetic captioned shapes are
// built in; the file-based sources (CSV, webdataset, COCO, YFCC) plug in here through the native loader.
import { type Device, Tensor } from "../torch/mod.ts";
import { trainBpe } from "./bpe_trainer.ts";
import { syntheticBatchArrays, syntheticSample } from "./synthetic.ts";
import { ClipTokenizer } from "./tokenizer.ts";

export interface TrainBatch {
  /** (B, 3, H, W) two augmented views (v absent for single-view CLIP training). */
  u: Tensor;
  v: Tensor | null;
  /** (B, T) int64 token ids. */
  text: Tensor;
}

export interface TrainSource {
  readonly name: string;
  /** Samples per epoch (over all ranks). */
  readonly epochSize: number;
  readonly imageSize: number;
  readonly tokenizer: ClipTokenizer;
  readonly contextLength: number;
  /** The `index`-th batch of `batchSize` samples of `epoch` for `rank` of `world`; deterministic. */
  batch(
    epoch: number,
    index: number,
    batchSize: number,
    shard: { rank: number; world: number },
    device: Device,
  ): TrainBatch;
  /**
   * Optional (file sources): the same batch, waiting for the native decode workers off the JS thread. The caller owns
   * the returned tensors (no scope is active across an await) and disposes them after the step.
   */
  batchAsync?(
    epoch: number,
    index: number,
    batchSize: number,
    shard: { rank: number; world: number },
    device: Device,
  ): Promise<TrainBatch>;
  /** Optional: a hint that this batch comes next, so its decoding starts now (file sources guess by themselves). */
  prefetch?(epoch: number, index: number, batchSize: number, shard: { rank: number; world: number }): void;
  /** Optional: samples skipped so far by reason (corrupt images, empty captions, ...), for the metrics. */
  skipped?(): Record<string, number>;
  /** Optional: stops worker threads and closes files. */
  close?(): void;
  /**
   * Optional (streaming sources, whose batches depend on what was read before): where the source is, as JSON, after
   * the last batch returned; the training loop saves it in checkpoints and hands it back to restore() on resume.
   */
  state?(): unknown;
  restore?(state: unknown): void;
}

/** A deterministic permutation of [0, n) from a 32-bit seed (Fisher–Yates over a mulberry32 stream). */
export function permutation(n: number, seed: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = i;
  let state = seed >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    const tmp = out[i];
    out[i] = out[j];
    out[j] = tmp;
  }
  return out;
}

export interface SyntheticSourceOptions {
  seed: number;
  epochSize: number;
  imageSize: number;
  contextLength: number;
  views: 1 | 2;
  /** Target vocabulary of the BPE learned from the synthetic captions. */
  vocabSize?: number;
  /** Objects per training image (1–3); default: drawn per sample (1–3). */
  objects?: number;
}

/**
 * The built-in captioned shapes. Each epoch draws fresh samples (epoch e uses indices [e·N, (e+1)·N) of the
 * unbounded train split, shuffled), and the tokenizer is a BPE learned from 4,096 train captions at start-up, so
 * nothing is downloaded.
 */
export function syntheticTrainSource(options: SyntheticSourceOptions): TrainSource {
  const { seed, epochSize, imageSize, contextLength, views } = options;
  const corpus = Array.from({ length: 4096 }, (_, i) => syntheticSample("train", i, { seed, size: 16 }).caption);
  const tokenizer = new ClipTokenizer(trainBpe(corpus, options.vocabSize ?? 768));
  const orders = new Map<number, Int32Array>();
  const order = (epoch: number): Int32Array => {
    let perm = orders.get(epoch);
    if (perm === undefined) {
      perm = permutation(epochSize, (seed * 1_000_003 + epoch) >>> 0);
      orders.clear();
      orders.set(epoch, perm);
    }
    return perm;
  };
  return {
    name: "synthetic",
    epochSize,
    imageSize,
    tokenizer,
    contextLength,
    batch(epoch, index, batchSize, shard, device): TrainBatch {
      const perm = order(epoch);
      const indices: number[] = [];
      for (let b = 0; b < batchSize; b++) {
        // Rank r takes every world-th sample of the global batch, so ranks never overlap.
        const position = (index * batchSize + b) * shard.world + shard.rank;
        indices.push(epoch * epochSize + perm[position % epochSize]);
      }
      const arrays = syntheticBatchArrays("train", indices, {
        seed,
        size: imageSize,
        views,
        epoch,
        objects: options.objects,
      });
      const u = Tensor.fromArray(arrays.u, arrays.shape, { device });
      const v = arrays.v ? Tensor.fromArray(arrays.v, arrays.shape, { device }) : null;
      const text = tokenizer.tokenize(arrays.captions, contextLength);
      return { u, v, text: device === "cpu" ? text : text.to({ device }) };
    },
  };
}
