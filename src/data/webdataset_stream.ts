// webdataset_stream.ts: webdataset shards streamed the way OpenCLIP reads them (`--dataset-type webdataset
// --train-data 'shards/{00000..01023}.tar' --train-num-samples N [--dataset-resampled]`): no index at start-up, each
// shard read front to back once per pass, shards split over ranks × workers (src/data/shard_list.ts), samples shuffled
// in a bounded, seeded buffer per worker. Batch n of a rank comes from its worker n mod W, so which samples a batch
// holds depends on the files and the seed only, never on thread timing.
//
// Exact resume: a worker's state is its pass, its position in the pass's shard list, the next sample's ordinal in the
// current shard, its buffer's random state and the (shard position, ordinal) of every buffered sample. The state after
// each batch goes into the checkpoint; restoring re-reads only the few shards that buffered samples came from.
//
// Bad data is counted, never fatal: a missing shard (or a pipe that printed nothing), a truncated or corrupt tar, a
// group without image or caption, a bad caption while streaming; an image that does not decode in the native workers,
// whose slot is refilled with the worker's next sample.
import type { Device, Tensor } from "../torch/mod.ts";
import {
  batchOnDevice,
  type CaptionSkip,
  decodeCaption,
  type FileSourceOptions,
  imageSkipReason,
  type NativeLoader,
  nativeLoaderFor,
  SkipCounter,
} from "./loader.ts";
import type { TrainBatch, TrainSource } from "./sources.ts";
import { hashMany } from "./hash.ts";
import { ShardPlan, shardUrls } from "./shard_list.ts";
import {
  type ByteSource,
  FileByteSource,
  type GroupMember,
  type MemberGroup,
  PipeByteSource,
  TarGroupReader,
  TarStreamReader,
} from "./tar_stream.ts";
import { CAPTION_EXTENSIONS, IMAGE_EXTENSIONS } from "./webdataset.ts";
import { DEFAULT_CONTEXT_LENGTH } from "./tokenizer.ts";

export const DEFAULT_SHUFFLE_BUFFER = 2000;

export interface StreamingWebDatasetOptions extends FileSourceOptions {
  /** Shard URLs: paths or `pipe:CMD`, brace patterns, several joined with "::". */
  shards: string | readonly string[];
  root?: string;
  /** The caption field of a .json member when there is no .txt (default "caption"). */
  jsonField?: string;
  /** Samples per epoch over all ranks (`--train-num-samples`). */
  epochSize: number;
  /** Draw shards with replacement (`--dataset-resampled`). */
  resampled?: boolean;
  /** Streams per rank (default 1). */
  workers?: number;
  /** Samples per worker's shuffle buffer (default 2000; 1 = no shuffling). */
  bufferSize?: number;
  rank: number;
  world: number;
  /**
   * For tests: a path prefix; each batch this rank reads appends one JSON line of its sample keys to PREFIX.rank<r>
   * (the training CLI's hidden --test-hook-sample-log), so a test can see which samples a run read.
   */
  sampleLog?: string;
}

/** One worker's position, as saved in a checkpoint. */
export interface StreamWorkerState {
  pass: number;
  slot: number;
  ordinal: number;
  rng: number;
  /** (slot, ordinal) of every buffered sample, flattened, in buffer order. */
  buffer: number[];
}

/** A rank's streaming state: what a checkpoint holds for it. */
export interface StreamState {
  kind: "webdataset-stream";
  shards: number;
  rank: number;
  world: number;
  workers: number;
  seed: number;
  resampled: boolean;
  bufferSize: number;
  /** The next batch this rank will read (counting from the start of training). */
  batch: number;
  streams: StreamWorkerState[];
}

export interface StreamingTrainSource extends TrainSource {
  state(): StreamState;
  restore(state: unknown): void;
  /** `url#key` of the samples in the last batch returned, in slot order. */
  lastKeys(): string[];
  skipped(): Record<string, number>;
  readonly skips: SkipCounter;
  close(): void;
}

interface Spool {
  path: string;
  file: Deno.FsFile | null;
  size: number;
  live: number;
}

interface StreamSample {
  slot: number;
  ordinal: number;
  key: string;
  caption: string;
  image: { path: string; offset: number; length: number };
  spool: Spool | null;
  /** Keys the sample's augmentation random stream in the native workers. */
  uid: number;
}

const captionExts = new Set<string>(CAPTION_EXTENSIONS);
const imageExts = new Set<string>(IMAGE_EXTENSIONS);

/** What the workers of one source share. */
interface Shared {
  urls: string[];
  plan: ShardPlan;
  seed: number;
  bufferSize: number;
  jsonField: string;
  skips: SkipCounter;
  spoolDir: () => string;
}

function caption(group: MemberGroup, jsonField: string): string | CaptionSkip {
  const text = group.members.get("txt");
  const member = text ?? group.members.get("json")!;
  const decoded = decodeCaption(member.data!);
  if (text !== undefined || typeof decoded !== "string") return decoded;
  let value: unknown;
  try {
    value = JSON.parse(decoded);
  } catch {
    return { skip: "caption_bad_json" };
  }
  const field = typeof value === "object" && value !== null ? (value as Record<string, unknown>)[jsonField] : null;
  return typeof field === "string" && field.trim() !== "" ? field : { skip: "caption_empty" };
}

/** One stream: global worker g's shards, pass after pass (or draw after draw), through its shuffle buffer. */
class StreamWorker {
  readonly g: number;
  readonly #s: Shared;
  pass = 0;
  slot = 0;
  ordinal = 0;
  rng: number;
  buffer: StreamSample[] = [];
  #reader: TarGroupReader | null = null;
  #spool: Spool | null = null;
  #pipe = false;
  #emptyShards = 0;
  #usableInShard = 0;
  /** Off while a restore re-reads shards: their skips were counted before the checkpoint. */
  counting = true;

  constructor(g: number, shared: Shared) {
    this.g = g;
    this.#s = shared;
    this.rng = hashMany(shared.seed, g, 0xb0f);
  }

  #random(): number {
    // mulberry32: one 32-bit state, saved in the checkpoint
    this.rng = (this.rng + 0x6d2b79f5) >>> 0;
    let t = this.rng;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  #skip(reason: string): void {
    if (this.counting) this.#s.skips.add(reason);
  }

  // Opens the shard at (pass, slot); false when the worker's share of the pass is done.
  #open(): boolean {
    const shard = this.#s.plan.shardAt(this.g, this.pass, this.slot);
    if (shard < 0) return false;
    const url = this.#s.urls[shard];
    this.#pipe = url.startsWith("pipe:");
    let source: ByteSource;
    try {
      source = this.#pipe
        ? new PipeByteSource(url.slice(5), this.#s.spoolDir(), `w${this.g}`)
        : new FileByteSource(url);
    } catch {
      source = { read: () => 0, skip: () => 0, close: () => {} }; // counted as shard_missing when it ends
    }
    // From a file the native workers read images by offset; from a pipe they are spooled to a file first.
    const wants = this.#pipe
      ? (ext: string) => captionExts.has(ext) || imageExts.has(ext)
      : (ext: string) => captionExts.has(ext);
    this.#reader = new TarGroupReader(new TarStreamReader(source), wants);
    this.#usableInShard = 0;
    if (this.#pipe) {
      const path = `${this.#s.spoolDir()}/w${this.g}-p${this.pass}-s${this.slot}.spool`;
      this.#spool = {
        path,
        file: Deno.openSync(path, { write: true, create: true, truncate: true }),
        size: 0,
        live: 0,
      };
    }
    return true;
  }

  #closeShard(): void {
    const reader = this.#reader!;
    if (reader.ended === "truncated") this.#skip("tar_truncated");
    if (reader.ended === "corrupt") this.#skip("tar_corrupt");
    if (reader.reader.bytesSeen === 0) this.#skip("shard_missing");
    reader.close();
    this.#reader = null;
    if (this.#spool !== null) {
      this.#spool.file?.close();
      this.#spool.file = null;
      if (this.#spool.live === 0) removeSpool(this.#spool);
      this.#spool = null;
    }
    this.#emptyShards = this.#usableInShard === 0 ? this.#emptyShards + 1 : 0;
    const limit = this.#s.plan.resampled ? 4 * this.#s.plan.shards + 16 : 2 * this.#s.plan.shards + 2;
    if (this.#emptyShards > limit) {
      throw new Error(
        `webdataset: worker ${this.g} found no usable sample in ${this.#emptyShards} shards in a row ` +
          `(skips so far: ${this.#s.skips})`,
      );
    }
    this.slot += 1;
    this.ordinal = 0;
  }

  // The group at the reader's position as a sample, or why it is unusable.
  #sample(group: MemberGroup, ordinal: number): StreamSample | CaptionSkip {
    const image = IMAGE_EXTENSIONS.map((e) => group.members.get(e)).find((m) => m !== undefined);
    if (image === undefined) return { skip: "tar_no_image" };
    if (!group.members.has("txt") && !group.members.has("json")) return { skip: "tar_no_caption" };
    const text = caption(group, this.#s.jsonField);
    if (typeof text !== "string") return text;
    const shard = this.#s.plan.shardAt(this.g, this.pass, this.slot);
    const url = this.#s.urls[shard];
    return {
      slot: this.slot,
      ordinal,
      key: `${url}#${group.key}`,
      caption: text,
      image: this.#imageRef(url, image),
      spool: this.#spool,
      uid: hashMany(this.#s.seed, this.g, this.pass, this.slot) * 2097152 + (ordinal & 0x1fffff),
    };
  }

  #imageRef(url: string, image: GroupMember): { path: string; offset: number; length: number } {
    const spool = this.#spool;
    if (spool === null) return { path: url, offset: image.offset, length: image.size };
    const offset = spool.size;
    const data = image.data!;
    let written = 0;
    while (written < data.length) written += spool.file!.writeSync(data.subarray(written));
    spool.size += data.length;
    spool.live += 1;
    return { path: spool.path, offset, length: data.length };
  }

  /** The next usable sample of the current pass (null when the pass is done), counting the unusable ones. */
  #read(): StreamSample | null {
    for (;;) {
      if (this.#reader === null && !this.#open()) return null;
      const group = this.#reader!.next();
      if (group === null) {
        this.#closeShard();
        continue;
      }
      const sample = this.#sample(group, this.ordinal++);
      if ("skip" in sample) {
        this.#skip(sample.skip);
        continue;
      }
      this.#usableInShard += 1;
      return sample;
    }
  }

  /** The next sample of the stream: fill the buffer, then draw from it; a pass ends when its buffer is drained. */
  next(): StreamSample {
    for (;;) {
      while (this.buffer.length < this.#s.bufferSize) {
        const sample = this.#read();
        if (sample === null) break;
        this.buffer.push(sample);
      }
      if (this.buffer.length > 0) {
        const at = Math.floor(this.#random() * this.buffer.length);
        const sample = this.buffer[at];
        this.buffer[at] = this.buffer[this.buffer.length - 1];
        this.buffer.pop();
        return sample;
      }
      this.pass += 1;
      this.slot = 0;
      this.ordinal = 0;
    }
  }

  snapshot(): StreamWorkerState {
    const buffer: number[] = [];
    for (const s of this.buffer) buffer.push(s.slot, s.ordinal);
    return { pass: this.pass, slot: this.slot, ordinal: this.ordinal, rng: this.rng, buffer };
  }

  /** Puts the worker where `state` says, re-reading the shards its buffered samples came from. */
  restore(state: StreamWorkerState): void {
    this.close();
    this.pass = state.pass;
    this.rng = state.rng;
    this.#emptyShards = 0;
    const wanted = new Map<number, Set<number>>();
    for (let i = 0; i < state.buffer.length; i += 2) {
      const [slot, ordinal] = [state.buffer[i], state.buffer[i + 1]];
      if (slot > state.slot || (slot === state.slot && ordinal >= state.ordinal)) {
        throw new Error(`webdataset resume: worker ${this.g} buffers sample ${slot}:${ordinal} not yet read`);
      }
      if (!wanted.has(slot)) wanted.set(slot, new Set());
      wanted.get(slot)!.add(ordinal);
    }
    const found = new Map<string, StreamSample>();
    this.counting = false;
    try {
      const slots = [...wanted.keys()].sort((a, b) => a - b);
      if (state.ordinal > 0 && !wanted.has(state.slot)) slots.push(state.slot);
      for (const slot of slots) {
        this.slot = slot;
        this.ordinal = 0;
        if (!this.#open()) throw new Error(`webdataset resume: worker ${this.g} has no shard at position ${slot}`);
        const need = wanted.get(slot) ?? new Set<number>();
        const until = slot === state.slot ? state.ordinal : Math.max(...need) + 1;
        while (this.ordinal < until) {
          const group = this.#reader!.next();
          if (group === null) throw new Error(`webdataset resume: shard at position ${slot} ended early`);
          const ordinal = this.ordinal++;
          if (!need.has(ordinal)) continue;
          const sample = this.#sample(group, ordinal);
          if ("skip" in sample) throw new Error(`webdataset resume: sample ${slot}:${ordinal} is no longer usable`);
          found.set(`${slot}:${ordinal}`, sample);
        }
        if (slot !== state.slot) this.#closeShard();
      }
    } finally {
      this.counting = true;
    }
    this.#emptyShards = 0; // the shards re-read above were not empty before the checkpoint
    this.slot = state.slot;
    this.ordinal = state.ordinal;
    this.buffer = [];
    for (let i = 0; i < state.buffer.length; i += 2) {
      this.buffer.push(found.get(`${state.buffer[i]}:${state.buffer[i + 1]}`)!);
    }
  }

  close(): void {
    if (this.#reader !== null) {
      this.#reader.close();
      this.#reader = null;
    }
    if (this.#spool !== null) {
      this.#spool.file?.close();
      this.#spool.file = null;
      this.#spool = null;
    }
    this.buffer = [];
  }
}

function removeSpool(spool: Spool): void {
  try {
    Deno.removeSync(spool.path);
  } catch { /* already gone */ }
}

function release(samples: readonly StreamSample[]): void {
  for (const s of samples) {
    if (s.spool === null) continue;
    s.spool.live -= 1;
    if (s.spool.live === 0 && s.spool.file === null) removeSpool(s.spool);
  }
}

interface Planned {
  n: number;
  batchSize: number;
  worker: number;
  samples: StreamSample[];
  job: ReturnType<NativeLoader["submit"]>;
}

/** The streaming webdataset TrainSource of one rank. */
export function streamingWebDatasetSource(options: StreamingWebDatasetOptions): StreamingTrainSource {
  const urls = shardUrls(options.shards, options.root);
  if (urls.length === 0) throw new Error("webdataset: no shards given");
  const seed = options.seed ?? 0;
  const workers = Math.max(1, options.workers ?? 1);
  const resampled = options.resampled ?? false;
  const bufferSize = Math.max(1, options.bufferSize ?? DEFAULT_SHUFFLE_BUFFER);
  const { rank, world } = options;
  const views = options.views ?? 2;
  const contextLength = options.contextLength ?? DEFAULT_CONTEXT_LENGTH;
  const maxRounds = options.maxRounds ?? 8;
  const plan = new ShardPlan({ shards: urls.length, globalWorkers: world * workers, seed, resampled });
  const skips = new SkipCounter();
  let spoolDir: string | null = null;
  const shared: Shared = {
    urls,
    plan,
    seed,
    bufferSize,
    jsonField: options.jsonField ?? "caption",
    skips,
    spoolDir: () => (spoolDir ??= Deno.makeTempDirSync({ prefix: "dc_wds_pipe_" })),
  };
  const streams = Array.from({ length: workers }, (_, w) => new StreamWorker(rank * workers + w, shared));
  let committed = streams.map((s) => s.snapshot());
  let next = 0; // the next batch of this rank
  let expected: { epoch: number; index: number } | null = null;
  let pending: Planned | null = null;
  let last: string[] = [];
  const sampleLog = options.sampleLog;
  const loader = nativeLoaderFor(options, views);

  const submit = (samples: StreamSample[], slots: number, into?: { u: Tensor; v: Tensor | null }) => {
    const slotBegin = Array.from({ length: slots + 1 }, (_, b) => Math.min(b, samples.length));
    return loader.submit({
      candidates: samples.map((s) => ({ ...s.image, index: s.uid })),
      slotBegin,
      seed,
      rank,
      epoch: 0, // the sample uid already differs per pass and per draw
      u: into?.u,
      v: into?.v,
    });
  };

  const planBatch = (n: number, batchSize: number): Planned => {
    const worker = n % workers;
    const samples = Array.from({ length: batchSize }, () => streams[worker].next());
    return { n, batchSize, worker, samples, job: submit(samples, batchSize) };
  };

  const dropPending = (): void => {
    if (pending === null) return;
    const stale = loader.collect(pending.job);
    stale.u.dispose();
    stale.v?.dispose();
    release(pending.samples);
    pending = null;
  };

  const finish = (p: Planned, device: Device): TrainBatch => {
    const first = loader.collect(p.job);
    const chosen: (StreamSample | null)[] = [];
    const all = [...p.samples];
    first.used.forEach((c, b) => chosen[b] = c >= 0 ? p.samples[c] : null);
    for (const s of first.status) if (s > 0) skips.add(imageSkipReason(s));
    // Slots whose image did not decode take the worker's next samples, in slot order, until every slot is filled.
    for (let round = 1; round < maxRounds && chosen.includes(null); round++) {
      const missing = chosen.flatMap((c, b) => (c === null ? [b] : []));
      const refill = missing.map(() => streams[p.worker].next());
      all.push(...refill);
      const candidates: StreamSample[] = [];
      const slotBegin: number[] = [];
      let k = 0;
      for (let b = 0; b < p.batchSize; b++) {
        slotBegin.push(candidates.length);
        if (chosen[b] === null) candidates.push(refill[k++]);
      }
      slotBegin.push(candidates.length);
      const job = loader.submit({
        candidates: candidates.map((s) => ({ ...s.image, index: s.uid })),
        slotBegin,
        seed,
        rank,
        epoch: 0,
        u: first.u,
        v: first.v,
      });
      const again = loader.collect(job);
      again.u.dispose(); // new handles to the storage of first.u / first.v
      again.v?.dispose();
      for (const s of again.status) if (s > 0) skips.add(imageSkipReason(s));
      for (let b = 0; b < p.batchSize; b++) {
        if (chosen[b] === null && again.used[b] >= 0) chosen[b] = candidates[again.used[b]];
      }
    }
    release(all);
    if (chosen.includes(null)) {
      first.u.dispose();
      first.v?.dispose();
      throw new Error(`webdataset: no decodable image in ${maxRounds} samples for a batch slot; skips: ${skips}`);
    }
    const batch = chosen as StreamSample[];
    last = batch.map((s) => s.key);
    if (sampleLog !== undefined) {
      Deno.writeTextFileSync(`${sampleLog}.rank${rank}`, JSON.stringify({ batch: p.n, keys: last }) + "\n", {
        append: true,
      });
    }
    const text = options.tokenizer.tokenize(batch.map((s) => s.caption), contextLength);
    return batchOnDevice(first.u, first.v, text, device);
  };

  // What a saved state must agree on to be restored here: the same streams over the same shards, seeded alike.
  const identity = {
    kind: "webdataset-stream" as const,
    shards: urls.length,
    rank,
    world,
    workers,
    seed,
    resampled,
    bufferSize,
  };

  return {
    name: `webdataset-stream:${urls.length} shards${resampled ? ", resampled" : ""}`,
    epochSize: options.epochSize,
    imageSize: options.imageSize,
    tokenizer: options.tokenizer,
    contextLength,
    skips,
    batch(epoch, index, batchSize, shard, device): TrainBatch {
      if (shard.rank !== rank || shard.world !== world) {
        throw new Error(
          `webdataset stream built for rank ${rank} of ${world}, asked for ${shard.rank} of ${shard.world}`,
        );
      }
      if (expected !== null) {
        const inOrder = (epoch === expected.epoch && index === expected.index) ||
          (epoch === expected.epoch + 1 && index === 0);
        if (!inOrder) {
          throw new Error(
            `webdataset stream: batches are read in order; expected epoch ${expected.epoch} batch ${expected.index} ` +
              `(or the next epoch's first), got epoch ${epoch} batch ${index}`,
          );
        }
      }
      expected = { epoch, index: index + 1 };
      if (pending !== null && (pending.n !== next || pending.batchSize !== batchSize)) dropPending();
      const p = pending ?? planBatch(next, batchSize);
      pending = null;
      const batch = finish(p, device);
      committed[p.worker] = streams[p.worker].snapshot();
      next += 1;
      pending = planBatch(next, batchSize); // decodes while the loop trains on this batch
      return batch;
    },
    state(): StreamState {
      return {
        ...identity,
        batch: next,
        streams: committed.map((s) => ({ ...s, buffer: [...s.buffer] })),
      };
    },
    restore(raw: unknown): void {
      const state = raw as Partial<StreamState> | null;
      const differs = Object.entries(identity).filter(([k, v]) => state?.[k as keyof StreamState] !== v);
      if (state === null || typeof state !== "object" || differs.length > 0 || !Array.isArray(state.streams)) {
        const what = differs.map(([k, v]) => `${k} ${JSON.stringify(state?.[k as keyof StreamState])} (now ${v})`);
        throw new Error(`webdataset resume: the checkpoint's data state does not match this run: ${what.join(", ")}`);
      }
      dropPending();
      state.streams.forEach((s, w) => streams[w].restore(s));
      committed = streams.map((s) => s.snapshot());
      next = state.batch ?? 0;
      expected = null;
    },
    lastKeys: () => [...last],
    skipped: () => skips.snapshot(),
    close(): void {
      dropPending();
      for (const s of streams) s.close();
      loader.close();
      if (spoolDir !== null) {
        try {
          Deno.removeSync(spoolDir, { recursive: true });
        } catch { /* already gone */ }
      }
    },
  };
}
