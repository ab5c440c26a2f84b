// loader.ts: drives the native image pipeline (native/src/data.cpp) and turns a table of (image, caption) samples into
// a TrainSource. The native loader decodes and augments a batch on its own worker threads while the JS thread runs the
// training step; this file decides *which* images a batch holds and keeps that decision a pure function of
// (seed, epoch, batch index, rank, world), so a resumed run sees exactly the batches the interrupted one would have.
//
// A batch slot is not one image but a chain of candidates: the slot's own sample first, then replacement draws (other
// samples of the same epoch, chosen by a hash of the slot's position and the attempt number). Native workers take the
// first decodable candidate of each chain, so a corrupt file never shortens a batch, and which candidate wins depends
// only on the files, never on thread timing. Captions are checked here before a candidate is sent (an empty or
// invalid-UTF-8 caption skips the sample the same way). Every skip is counted by reason.
import { DataError } from "./data_error.ts";
import { cudaIsAvailable, type Device, Tensor } from "../torch/mod.ts";
import { lastError, native } from "../torch/lib.ts";
import { codes } from "../torch/symbols.ts";
import { own } from "../torch/tensor.ts";
import { TorchError } from "../torch/errors.ts";
import { permutation, type TrainBatch, type TrainSource } from "./sources.ts";
import { IMAGENET_MEAN, IMAGENET_STD } from "./synthetic.ts";
import { hashMany } from "./hash.ts";
import { type ClipTokenizer, DEFAULT_CONTEXT_LENGTH } from "./tokenizer.ts";

// ---- skip counting -------------------------------------------------------------------------------------------------

/** The reason names of the native status codes (DC_IMG_* in detailclip.h). */
export const IMAGE_SKIP_REASONS: Readonly<Record<number, string>> = {
  [codes.IMG_MISSING]: "image_missing",
  [codes.IMG_UNREADABLE]: "image_unreadable",
  [codes.IMG_EMPTY]: "image_empty",
  [codes.IMG_UNSUPPORTED]: "image_unsupported",
  [codes.IMG_TOO_LARGE]: "image_too_large",
  [codes.IMG_CORRUPT]: "image_corrupt",
  [codes.IMG_TRUNCATED]: "image_truncated",
  [codes.IMG_FAILED]: "image_failed",
  [codes.IMG_MEMBER_CORRUPT]: "zip_member_corrupt",
};

/** The reason name of a native status code. */
export function imageSkipReason(status: number): string {
  return IMAGE_SKIP_REASONS[status] ?? `image_status_${status}`;
}

/** Counts of skipped samples by reason; what the training loop prints in its metrics and at the end. */
export class SkipCounter {
  readonly #counts = new Map<string, number>();

  add(reason: string, count = 1): void {
    if (count !== 0) this.#counts.set(reason, (this.#counts.get(reason) ?? 0) + count);
  }

  addAll(other: SkipCounter | Readonly<Record<string, number>>): void {
    const entries = other instanceof SkipCounter ? Object.entries(other.snapshot()) : Object.entries(other);
    for (const [reason, count] of entries) this.add(reason, count);
  }

  get(reason: string): number {
    return this.#counts.get(reason) ?? 0;
  }

  get total(): number {
    let sum = 0;
    for (const count of this.#counts.values()) sum += count;
    return sum;
  }

  /** A plain object with the reasons in alphabetical order (stable JSON in the metrics). */
  snapshot(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const reason of [...this.#counts.keys()].sort()) out[reason] = this.#counts.get(reason)!;
    return out;
  }

  /** "image_corrupt 3, caption_empty 1", or "none". */
  toString(): string {
    const parts = Object.entries(this.snapshot()).map(([reason, count]) => `${reason} ${count}`);
    return parts.length === 0 ? "none" : parts.join(", ");
  }
}

/** A caption that cannot be trained on, with the reason. */
export interface CaptionSkip {
  skip: string;
}

/** Empty after trimming → caption_empty; otherwise the caption. */
export function checkCaption(text: string): string | CaptionSkip {
  return text.trim() === "" ? { skip: "caption_empty" } : text;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Decodes caption bytes strictly: invalid UTF-8 → caption_invalid_utf8 (never a replacement character). */
export function decodeCaption(bytes: Uint8Array): string | CaptionSkip {
  let text: string;
  try {
    text = strictUtf8.decode(bytes);
  } catch {
    return { skip: "caption_invalid_utf8" };
  }
  return checkCaption(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
}

// ---- configuration -------------------------------------------------------------------------------------------------

/** The train augmentation's parameters (docs/data.md#image-transforms), as ranges the native side draws from. */
export interface AugmentOptions {
  scale: readonly [number, number];
  ratio: readonly [number, number];
  jitterP: number;
  /** Factor ranges; a range equal to the identity ([1, 1], hue [0, 0]) is not drawn (torchvision's None). */
  brightness: readonly [number, number];
  contrast: readonly [number, number];
  saturation: readonly [number, number];
  hue: readonly [number, number];
  grayP: number;
  blurP: number;
  blurSigma: readonly [number, number];
  solarizeP: number;
  solarizeThreshold: number;
  mean: readonly [number, number, number];
  std: readonly [number, number, number];
}

/** torchvision's ColorJitter(b, c, s, h) as factor ranges: [max(0, 1 - x), 1 + x] and [-h, h]. */
export function colorJitterRanges(
  brightness: number,
  contrast: number,
  saturation: number,
  hue: number,
): Pick<AugmentOptions, "brightness" | "contrast" | "saturation" | "hue"> {
  const around = (x: number): [number, number] => [Math.max(0, 1 - x), 1 + x];
  return {
    brightness: around(brightness),
    contrast: around(contrast),
    saturation: around(saturation),
    hue: [-hue, hue],
  };
}

/** The official train augmentation (docs/data.md#image-transforms). */
export const OFFICIAL_AUGMENT: AugmentOptions = {
  scale: [0.14, 1.0],
  ratio: [3 / 4, 4 / 3],
  jitterP: 0.8,
  ...colorJitterRanges(0.4, 0.4, 0.2, 0.1),
  grayP: 0.2,
  blurP: 0.1,
  blurSigma: [0.1, 2.0],
  solarizeP: 0.2,
  solarizeThreshold: 128,
  mean: IMAGENET_MEAN,
  std: IMAGENET_STD,
};

/** PIL's Image.MAX_IMAGE_PIXELS: the default decompression-bomb limit. */
export const DEFAULT_MAX_PIXELS = 89_478_485;
export const DEFAULT_MAX_BYTES = 256 * 1024 * 1024;

export interface NativeLoaderOptions {
  /** Worker threads (default: 4, at most the machine's cores). */
  threads?: number;
  imageSize: number;
  /** "train": the docs/data.md#image-transforms augmentation; "eval": Resize(S) bilinear, CenterCrop(S). */
  mode?: "train" | "eval";
  views?: 1 | 2;
  maxPixels?: number;
  maxBytes?: number;
  /** "drop" (PIL's convert("RGB"), the official behaviour) or "black" (composite on black). */
  alpha?: "drop" | "black";
  /** Decode large JPEGs at a reduced DCT scale that still covers the output (default true). */
  dctScaling?: boolean;
  /** Allocate batches in pinned host memory (only where CUDA is available). */
  pin?: boolean;
  augment?: Partial<AugmentOptions>;
}

function defaultThreads(): number {
  return Math.max(1, Math.min(4, navigator.hardwareConcurrency ?? 1));
}

/** The DC_CFG_* array of the native loader. */
export function loaderConfig(options: NativeLoaderOptions): Float64Array {
  const a: AugmentOptions = { ...OFFICIAL_AUGMENT, ...options.augment };
  const c = new Float64Array(codes.CFG_COUNT);
  c[codes.CFG_THREADS] = options.threads ?? defaultThreads();
  c[codes.CFG_IMAGE_SIZE] = options.imageSize;
  c[codes.CFG_MODE] = (options.mode ?? "train") === "train" ? 0 : 1;
  c[codes.CFG_VIEWS] = options.views ?? 2;
  c[codes.CFG_MAX_PIXELS] = options.maxPixels ?? DEFAULT_MAX_PIXELS;
  c[codes.CFG_MAX_BYTES] = options.maxBytes ?? DEFAULT_MAX_BYTES;
  c[codes.CFG_ALPHA] = (options.alpha ?? "drop") === "drop" ? 0 : 1;
  c[codes.CFG_DCT_SCALING] = options.dctScaling === false ? 0 : 1;
  c[codes.CFG_PIN] = options.pin ? 1 : 0;
  const pairs: [number, readonly [number, number]][] = [
    [codes.CFG_SCALE_MIN, a.scale],
    [codes.CFG_RATIO_MIN, a.ratio],
    [codes.CFG_BRIGHTNESS_MIN, a.brightness],
    [codes.CFG_CONTRAST_MIN, a.contrast],
    [codes.CFG_SATURATION_MIN, a.saturation],
    [codes.CFG_HUE_MIN, a.hue],
    [codes.CFG_BLUR_SIGMA_MIN, a.blurSigma],
  ];
  for (const [index, [lo, hi]] of pairs) {
    c[index] = lo;
    c[index + 1] = hi;
  }
  c[codes.CFG_JITTER_P] = a.jitterP;
  c[codes.CFG_GRAY_P] = a.grayP;
  c[codes.CFG_BLUR_P] = a.blurP;
  c[codes.CFG_SOLARIZE_P] = a.solarizeP;
  c[codes.CFG_SOLARIZE_THRESHOLD] = a.solarizeThreshold;
  for (let k = 0; k < 3; k++) {
    c[codes.CFG_MEAN_R + k] = a.mean[k];
    c[codes.CFG_STD_R + k] = a.std[k];
  }
  return c;
}

// ---- the native loader ------------------------------------------------------------------------------------------

/** How an archive stores a member: where its data starts, whether it is compressed, and what to check it against. */
export interface ArchiveMember {
  /** `offset` is the member's zip local file header (the native worker reads it); else `offset` is the data. */
  zipLocalHeader: boolean;
  /** The stored bytes are a raw deflate stream (zip method 8), inflated by the worker. */
  deflated: boolean;
  /** The uncompressed size, checked (-1: unknown). */
  size: number;
  /** The CRC-32 of the uncompressed bytes, checked (-1: not checked). */
  crc32: number;
}

/** Where one candidate's encoded bytes are: a file, a byte range of one (a tar member), or a zip member. */
export interface ImageRef {
  path: string;
  offset?: number;
  /** Bytes from offset (from the data start for a zip member: its compressed size); absent or -1 = to the end. */
  length?: number;
  /** Absent: the bytes are the encoded image as they are. A failing member check is `zip_member_corrupt`. */
  member?: ArchiveMember;
  /** The sample index that keys its random stream (with seed, rank, epoch). */
  index: number;
}

export interface LoaderRequest {
  candidates: readonly ImageRef[];
  /** batch + 1 offsets into candidates: slot b tries [slotBegin[b], slotBegin[b + 1]) in order. */
  slotBegin: readonly number[];
  seed: number;
  rank: number;
  epoch: number;
  /** Tensors to fill (a refill round writes into the first round's batch); allocated when absent. */
  u?: Tensor;
  v?: Tensor | null;
}

export interface LoaderJob {
  readonly id: bigint;
  readonly batch: number;
  readonly count: number;
}

export interface LoaderResult {
  u: Tensor;
  v: Tensor | null;
  /** The candidate each slot used, -1 when none of its chain decoded. */
  used: number[];
  /** Per candidate: -1 not tried, 0 decoded, otherwise a DC_IMG_* reason code. */
  status: number[];
  /** The raw per-slot records (codes.INFO_STRIDE int64 values each, see detailclip.h). */
  info: BigInt64Array;
}

const encoder = new TextEncoder();

/** One native loader: a pool of decode/augment workers. Close it (or `using`) to stop the threads. */
export class NativeLoader {
  readonly #id: bigint;
  readonly views: 1 | 2;
  readonly imageSize: number;
  #closed = false;

  constructor(options: NativeLoaderOptions) {
    this.views = options.views ?? 2;
    this.imageSize = options.imageSize;
    const config = loaderConfig(options);
    const id = native().dc_loader_new(config, BigInt(config.length));
    if (Number(id) < 0) throw new TorchError("loader_new", [], lastError());
    this.#id = BigInt(id);
  }

  #checkOpen(): void {
    if (this.#closed) throw new TorchError("loader", [], "loader used after close()");
  }

  /** Queues one batch on the workers and returns at once. */
  submit(request: LoaderRequest): LoaderJob {
    this.#checkOpen();
    const { candidates, slotBegin } = request;
    const batch = slotBegin.length - 1;
    if (batch < 1) throw new RangeError("loader: slotBegin needs batch + 1 >= 2 entries");
    const pathBytes: Uint8Array[] = [];
    let total = 0;
    const spans = new BigInt64Array(candidates.length * codes.CAND_STRIDE);
    candidates.forEach((c, i) => {
      const bytes = encoder.encode(c.path + "\0");
      pathBytes.push(bytes);
      total += bytes.length;
      const at = i * codes.CAND_STRIDE, m = c.member;
      spans[at + codes.CAND_OFFSET] = BigInt(c.offset ?? 0);
      spans[at + codes.CAND_LENGTH] = BigInt(c.length ?? -1);
      spans[at + codes.CAND_INDEX] = BigInt(c.index);
      spans[at + codes.CAND_METHOD] = BigInt(m?.deflated ? codes.CAND_DEFLATE : codes.CAND_RAW);
      spans[at + codes.CAND_FLAGS] = BigInt(m?.zipLocalHeader ? codes.CAND_ZIP_LOCAL : 0);
      spans[at + codes.CAND_SIZE] = BigInt(m?.size ?? -1);
      spans[at + codes.CAND_CRC32] = BigInt(m?.crc32 ?? -1);
    });
    const paths = new Uint8Array(Math.max(total, 1));
    let at = 0;
    for (const bytes of pathBytes) {
      paths.set(bytes, at);
      at += bytes.length;
    }
    const begins = BigInt64Array.from(slotBegin, (x) => BigInt(x));
    const job = native().dc_loader_submit(
      this.#id,
      paths,
      BigInt(total),
      spans,
      BigInt(candidates.length),
      begins,
      BigInt(batch),
      BigInt.asUintN(64, BigInt(request.seed)),
      BigInt(request.rank),
      BigInt(request.epoch),
      request.u ? request.u.handle : null,
      request.v ? request.v.handle : null,
    );
    if (Number(job) < 0) throw new TorchError("loader_submit", request.u ? [request.u.shape] : [], lastError());
    return { id: BigInt(job), batch, count: candidates.length };
  }

  /** Resolves when the job is done; the waiting happens on a Deno FFI thread, not the JS thread. */
  async wait(job: LoaderJob): Promise<void> {
    this.#checkOpen();
    await native().dc_loader_wait(this.#id, job.id);
    // A failure (unknown job, closed loader) is reported by collect(), which has the message.
  }

  /** Blocks until the job is done (immediately after wait()) and returns its tensors and per-candidate statuses. */
  collect(job: LoaderJob): LoaderResult {
    this.#checkOpen();
    const views = new BigUint64Array(2);
    const info = new BigInt64Array(job.batch * codes.INFO_STRIDE);
    const status = new BigInt64Array(Math.max(job.count, 1));
    if (native().dc_loader_collect(this.#id, job.id, views, info, status) !== 0) {
      throw new TorchError("loader_collect", [], lastError());
    }
    const u = own(Deno.UnsafePointer.create(views[0]), "loader_collect", []);
    const v = views[1] === 0n ? null : own(Deno.UnsafePointer.create(views[1]), "loader_collect", []);
    const used: number[] = [];
    for (let b = 0; b < job.batch; b++) used.push(Number(info[b * codes.INFO_STRIDE + codes.INFO_CANDIDATE]));
    return { u, v, used, status: Array.from(status.subarray(0, job.count), Number), info };
  }

  /** submit + collect on the calling thread. */
  run(request: LoaderRequest): LoaderResult {
    return this.collect(this.submit(request));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    native().dc_loader_free(this.#id);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Decodes one encoded image to RGB8 (tests, tools). `minSide` lets a JPEG decode at a reduced DCT scale. */
export function decodeImage(
  bytes: Uint8Array,
  options: { maxPixels?: number; minSide?: number; alpha?: "drop" | "black" } = {},
): { width: number; height: number; pixels: Uint8Array } | { skip: string } {
  const out = new BigUint64Array(1);
  const status = native().dc_image_decode(
    bytes.length === 0 ? new Uint8Array(1) : bytes,
    BigInt(bytes.length),
    BigInt(options.maxPixels ?? DEFAULT_MAX_PIXELS),
    BigInt(options.minSide ?? 0),
    (options.alpha ?? "drop") === "drop" ? 0 : 1,
    out,
  );
  if (status !== 0) return { skip: imageSkipReason(status) };
  const t = own(Deno.UnsafePointer.create(out[0]), "image_decode", []);
  try {
    const [height, width] = t.shape;
    return { width, height, pixels: t.toBytes() };
  } finally {
    t.dispose();
  }
}

/** A RandomResizedCrop box (torchvision's (i, j, h, w)) and the attempt that produced it (0 = fallback). */
export interface CropBox {
  top: number;
  left: number;
  height: number;
  width: number;
  attempt: number;
}

/** The boxes the loader draws for view u of samples 0..count-1 at (seed, rank 0, epoch 0). */
export function cropParams(
  width: number,
  height: number,
  count: number,
  options: { seed?: number; augment?: Partial<AugmentOptions> } = {},
): CropBox[] {
  const config = loaderConfig({ imageSize: 1, augment: options.augment });
  const out = new BigInt64Array(count * 5);
  const status = native().dc_crop_params(
    config,
    BigInt(config.length),
    BigInt(width),
    BigInt(height),
    BigInt.asUintN(64, BigInt(options.seed ?? 0)),
    BigInt(count),
    out,
  );
  if (status !== 0) throw new TorchError("crop_params", [], lastError());
  const boxes: CropBox[] = [];
  for (let k = 0; k < count; k++) {
    const o = Array.from(out.subarray(k * 5, k * 5 + 5), Number);
    boxes.push({ top: o[0], left: o[1], height: o[2], width: o[3], attempt: o[4] });
  }
  return boxes;
}

// ---- sample tables and the file-backed TrainSource ------------------------------------------------------------------

/** A dataset as the loader sees it: N samples, each an image location and a caption. */
export interface SampleTable {
  readonly name: string;
  readonly size: number;
  /** Where sample i's encoded image is. */
  image(i: number): Omit<ImageRef, "index">;
  /** Sample i's caption for one draw (`choice`, a 32-bit number, picks among several), or why it is unusable. */
  caption(i: number, choice: number): string | CaptionSkip;
  /** Samples dropped while indexing (bad rows, truncated shards, members without a caption, ...). */
  readonly indexSkips: SkipCounter;
  close?(): void;
}

export interface FileSourceOptions {
  tokenizer: ClipTokenizer;
  contextLength?: number;
  imageSize: number;
  views?: 1 | 2;
  seed?: number;
  threads?: number;
  mode?: "train" | "eval";
  augment?: Partial<AugmentOptions>;
  maxPixels?: number;
  maxBytes?: number;
  alpha?: "drop" | "black";
  dctScaling?: boolean;
  /** Batches in pinned host memory, for asynchronous copies to the GPU (default: when CUDA is available). */
  pin?: boolean;
  /** Batches decoded ahead of the one being trained on (default 1). */
  prefetch?: number;
  /** Caption-valid candidates per slot sent in one native round (default 4). */
  candidatesPerRound?: number;
  /** Rounds before a slot is declared unfillable (default 8). */
  maxRounds?: number;
}

/** A TrainSource over a SampleTable, with the extras the loop can use (async batches, prefetch hints, skips). */
export interface FileTrainSource extends TrainSource {
  readonly table: SampleTable;
  /** Like batch(), but waits for the workers off the JS thread. The caller owns (disposes) the tensors. */
  batchAsync(
    epoch: number,
    index: number,
    batchSize: number,
    shard: { rank: number; world: number },
    device: Device,
  ): Promise<TrainBatch>;
  /** Starts decoding a batch the loop will ask for next (batch() already guesses the next index by itself). */
  prefetch(epoch: number, index: number, batchSize: number, shard: { rank: number; world: number }): void;
  /** Skips so far (indexing + draws), by reason. */
  skipped(): Record<string, number>;
  readonly skips: SkipCounter;
  /** Dataset indices of the samples in the last batch returned, in slot order. */
  lastSamples(): number[];
  close(): void;
}

interface Plan {
  candidates: ImageRef[];
  captions: string[];
  slotBegin: number[];
  captionSkips: SkipCounter;
}

interface Pending {
  job: LoaderJob;
  plan: Plan;
  /** Per slot, the next attempt number for a refill round. */
  nextAttempt: number[];
  batchSize: number;
  shard: { rank: number; world: number };
  epoch: number;
  index: number;
  /** Asked for through prefetch(): kept until the loop has moved past it, even when not guessed. */
  hinted: boolean;
}

/** A decoded batch moved to `device` (asynchronously from pinned memory); the host copies are freed. */
export function batchOnDevice(u: Tensor, v: Tensor | null, text: Tensor, device: Device): TrainBatch {
  const move = (t: Tensor): Tensor => {
    if (device === "cpu") return t;
    const moved = t.to({ device, nonBlocking: true });
    t.dispose();
    return moved;
  };
  return { u: move(u), v: v ? move(v) : null, text: move(text) };
}

/** The native decode workers a file-backed source drives, configured from its options. */
export function nativeLoaderFor(options: FileSourceOptions, views: 1 | 2): NativeLoader {
  return new NativeLoader({
    threads: options.threads,
    imageSize: options.imageSize,
    mode: options.mode,
    views,
    maxPixels: options.maxPixels,
    maxBytes: options.maxBytes,
    alpha: options.alpha,
    dctScaling: options.dctScaling,
    pin: options.pin ?? cudaIsAvailable(),
    augment: options.augment,
  });
}

/** Builds the file-backed TrainSource (used by the CSV, webdataset, COCO, YFCC15M and RedCaps sources). */
export function fileTrainSource(table: SampleTable, options: FileSourceOptions): FileTrainSource {
  if (table.size < 1) {
    throw new DataError(`${table.name}: no usable samples (skipped while indexing: ${table.indexSkips})`);
  }
  const seed = options.seed ?? 0;
  const views = options.views ?? 2;
  const contextLength = options.contextLength ?? DEFAULT_CONTEXT_LENGTH;
  const perRound = options.candidatesPerRound ?? 4;
  const maxRounds = options.maxRounds ?? 8;
  const depth = options.prefetch ?? 1;
  const loader = nativeLoaderFor(options, views);
  const skips = new SkipCounter();
  skips.addAll(table.indexSkips);
  const size = table.size;
  const pending = new Map<string, Pending>();
  let last: number[] = [];
  // Two epochs' orders: around an epoch boundary the prefetch of the next epoch interleaves with the current one.
  const orders = new Map<number, Int32Array>();
  const order = (epoch: number): Int32Array => {
    let perm = orders.get(epoch);
    if (perm === undefined) {
      perm = permutation(size, hashMany(seed, epoch, 0x5eed));
      if (orders.size >= 2) orders.delete(orders.keys().next().value!);
      orders.set(epoch, perm);
    }
    return perm;
  };
  const keyOf = (epoch: number, index: number, batchSize: number, shard: { rank: number; world: number }): string =>
    `${epoch}:${index}:${batchSize}:${shard.rank}:${shard.world}`;

  // The sample of attempt `attempt` for the slot at global position `position` of `epoch`: the slot's own sample
  // first, then replacement draws spread over the epoch.
  const sampleAt = (epoch: number, position: number, attempt: number): number => {
    const perm = order(epoch);
    if (attempt === 0) return perm[position % size];
    const hi = hashMany(seed, epoch, position, attempt, 1), lo = hashMany(seed, epoch, position, attempt, 2);
    const unit = (hi * 2 ** 21 + (lo >>> 11)) / 2 ** 53;
    return perm[Math.floor(unit * size)];
  };

  // Chains for the given slots, starting at each slot's next attempt; captions are checked here, so only
  // caption-valid candidates reach the workers.
  const plan = (
    epoch: number,
    index: number,
    batchSize: number,
    shard: { rank: number; world: number },
    slots: readonly number[],
    nextAttempt: number[],
  ): Plan => {
    const candidates: ImageRef[] = [];
    const captions: string[] = [];
    const captionSkips = new SkipCounter();
    const slotBegin: number[] = new Array(batchSize + 1).fill(0);
    const wanted = new Set(slots);
    for (let b = 0; b < batchSize; b++) {
      slotBegin[b] = candidates.length;
      if (!wanted.has(b)) continue;
      const position = (index * batchSize + b) * shard.world + shard.rank;
      let found = 0;
      // Bounded: a slot looks at no more than 4 × perRound samples per round for captions.
      for (let tries = 0; found < perRound && tries < perRound * 4; tries++) {
        const attempt = nextAttempt[b]++;
        const sample = sampleAt(epoch, position, attempt);
        const caption = table.caption(sample, hashMany(seed, epoch, sample, 0xc0c0));
        if (typeof caption !== "string") {
          captionSkips.add(caption.skip);
          continue;
        }
        candidates.push({ ...table.image(sample), index: sample });
        captions.push(caption);
        found++;
      }
    }
    slotBegin[batchSize] = candidates.length;
    return { candidates, captions, slotBegin, captionSkips };
  };

  const start = (
    epoch: number,
    index: number,
    batchSize: number,
    shard: { rank: number; world: number },
  ): Pending => {
    const nextAttempt = new Array(batchSize).fill(0);
    const all = Array.from({ length: batchSize }, (_, b) => b);
    const p = plan(epoch, index, batchSize, shard, all, nextAttempt);
    const job = loader.submit({ candidates: p.candidates, slotBegin: p.slotBegin, seed, rank: shard.rank, epoch });
    return { job, plan: p, nextAttempt, batchSize, shard, epoch, index, hinted: false };
  };

  const countStatuses = (status: readonly number[]): void => {
    for (const s of status) if (s > 0) skips.add(imageSkipReason(s));
  };

  const nextKeys = (epoch: number, index: number, batchSize: number, shard: { rank: number; world: number }) => {
    const perEpoch = Math.max(1, Math.floor(size / (batchSize * shard.world)));
    const keys: { epoch: number; index: number }[] = [];
    let e = epoch, i = index;
    for (let k = 0; k < depth; k++) {
      i += 1;
      if (i >= perEpoch) {
        e += 1;
        i = 0;
      }
      keys.push({ epoch: e, index: i });
    }
    return keys;
  };

  const schedule = (epoch: number, index: number, batchSize: number, shard: { rank: number; world: number }): void => {
    const wanted = nextKeys(epoch, index, batchSize, shard);
    const wantedKeys = new Set(wanted.map((w) => keyOf(w.epoch, w.index, batchSize, shard)));
    // A guess that turned out wrong (epoch rollover, a resume, another batch size), or a hint the loop has moved
    // past: collect and drop it.
    for (const [key, p] of pending) {
      if (wantedKeys.has(key)) continue;
      const behind = p.epoch < epoch || (p.epoch === epoch && p.index <= index);
      if (p.hinted && !behind) continue;
      pending.delete(key);
      const stale = loader.collect(p.job);
      stale.u.dispose();
      stale.v?.dispose();
    }
    for (const w of wanted) {
      const key = keyOf(w.epoch, w.index, batchSize, shard);
      if (!pending.has(key)) pending.set(key, start(w.epoch, w.index, batchSize, shard));
    }
  };

  const take = (epoch: number, index: number, batchSize: number, shard: { rank: number; world: number }): Pending => {
    const key = keyOf(epoch, index, batchSize, shard);
    const found = pending.get(key);
    if (found !== undefined) {
      pending.delete(key);
      return found;
    }
    return start(epoch, index, batchSize, shard);
  };

  // Collects round 0, then refills unfilled slots (every candidate of their chain failed) with further attempts. A
  // generator, so one body serves both drivers: it yields each job it needs finished, and the driver either lets
  // collect() block (batch) or awaits the job off the JS thread first (batchAsync).
  function* finish(p: Pending, device: Device): Generator<LoaderJob, TrainBatch, void> {
    yield p.job;
    const first = loader.collect(p.job);
    countStatuses(first.status);
    skips.addAll(p.plan.captionSkips);
    const captions: (string | null)[] = first.used.map((c) => (c >= 0 ? p.plan.captions[c] : null));
    const samples: number[] = first.used.map((c) => (c >= 0 ? p.plan.candidates[c].index : -1));
    for (let round = 1; round < maxRounds && captions.includes(null); round++) {
      const missing = captions.flatMap((c, b) => (c === null ? [b] : []));
      const refill = plan(p.epoch, p.index, p.batchSize, p.shard, missing, p.nextAttempt);
      skips.addAll(refill.captionSkips);
      if (refill.candidates.length === 0) continue;
      const job = loader.submit({
        candidates: refill.candidates,
        slotBegin: refill.slotBegin,
        seed,
        rank: p.shard.rank,
        epoch: p.epoch,
        u: first.u,
        v: first.v,
      });
      yield job;
      const again = loader.collect(job);
      again.u.dispose(); // new handles to the storage of first.u / first.v
      again.v?.dispose();
      countStatuses(again.status);
      for (const b of missing) {
        const c = again.used[b];
        if (c >= 0) {
          captions[b] = refill.captions[c];
          samples[b] = refill.candidates[c].index;
        }
      }
    }
    if (captions.includes(null)) {
      first.u.dispose();
      first.v?.dispose();
      throw new DataError(
        `${table.name}: no usable image among ${maxRounds * perRound} draws for a batch slot; ` +
          `is the dataset mostly broken? skips so far: ${skips}`,
      );
    }
    last = samples;
    const text = options.tokenizer.tokenize(captions as string[], contextLength);
    return batchOnDevice(first.u, first.v, text, device);
  }

  return {
    name: table.name,
    epochSize: size,
    imageSize: options.imageSize,
    tokenizer: options.tokenizer,
    contextLength,
    table,
    skips,
    batch(epoch, index, batchSize, shard, device): TrainBatch {
      const p = take(epoch, index, batchSize, shard);
      schedule(epoch, index, batchSize, shard);
      const steps = finish(p, device);
      let step = steps.next();
      while (!step.done) step = steps.next(); // collect() blocks until each yielded job is done
      return step.value;
    },
    async batchAsync(epoch, index, batchSize, shard, device): Promise<TrainBatch> {
      const p = take(epoch, index, batchSize, shard);
      schedule(epoch, index, batchSize, shard);
      const steps = finish(p, device);
      let step = steps.next();
      while (!step.done) {
        await loader.wait(step.value);
        step = steps.next();
      }
      return step.value;
    },
    prefetch(epoch, index, batchSize, shard): void {
      const key = keyOf(epoch, index, batchSize, shard);
      const entry = pending.get(key) ?? start(epoch, index, batchSize, shard);
      entry.hinted = true;
      pending.set(key, entry);
    },
    skipped(): Record<string, number> {
      return skips.snapshot();
    },
    lastSamples(): number[] {
      return [...last];
    },
    close(): void {
      pending.clear();
      loader.close();
      table.close?.();
    },
  };
}
