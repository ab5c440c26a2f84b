// dist.ts: data-parallel process groups over libtorch's c10d (dist.cpp). A ProcessGroup comes from the launcher's
// variables (torchrun: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), from SLURM's (SLURM_PROCID,
// SLURM_NTASKS, SLURM_LOCALID and the first host of SLURM_JOB_NODELIST), or from a `tcp://host:port` URL plus a rank
// and world size. With a world of one it is a local stand-in: every collective is the identity and nothing native
// is touched, so single-process code runs exactly as it would without it.
//
// Every call is synchronous and must be made in the same order on every rank (c10d's rule). Failures (a peer died,
// a deadline passed, the store is gone) throw DistError with the native message, which names the lost ranks.
import { createHash } from "node:crypto";
import { lastError, native } from "./lib.ts";
import { handleList, own, Tensor } from "./tensor.ts";

const i64 = BigInt;

export type DistBackend = "gloo" | "nccl";
export type ReduceOp = "sum" | "avg" | "max" | "min";

const BACKEND_CODES: Record<DistBackend, number> = { gloo: 0, nccl: 1 };
const REDUCE_CODES: Record<ReduceOp, number> = { sum: 0, avg: 1, max: 2, min: 3 };

/** The default bucket for gradient averaging and broadcasts (DDP's default bucket_cap_mb). */
export const DEFAULT_BUCKET_MB = 25;
/** torch.distributed's default collective timeout. */
export const DEFAULT_TIMEOUT_MS = 30 * 60 * 1000;
export const DEFAULT_MASTER_PORT = 29500;

/** A rendezvous, collective or store failure; the message names the op, this rank and (when known) the lost ranks. */
export class DistError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DistError";
  }
}

/** Ranks started with different training options (the config hash differs); names each differing option. */
export class ConfigMismatchError extends DistError {
  constructor(
    message: string,
    readonly differences: { option: string; rank: number; here: unknown; there: unknown }[],
  ) {
    super(message);
    this.name = "ConfigMismatchError";
  }
}

/** Who this process is and where rank 0's store listens. */
export interface DistSpec {
  rank: number;
  world: number;
  localRank: number;
  localWorld: number;
  masterAddr: string;
  masterPort: number;
  /** Where the numbers came from. */
  source: "torchrun" | "slurm" | "url" | "single";
}

/**
 * Expands a SLURM host list: `node[01-04],other` -> node01, node02, node03, node04, other. Brackets may hold
 * comma-separated numbers and ranges (zero padding kept) and may appear more than once (`r[1-2]n[1-2]`).
 */
export function expandNodeList(list: string): string[] {
  const items: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < list.length; i++) {
    const c = list[i];
    if (c === "[") depth++;
    else if (c === "]") depth--;
    if (depth < 0) throw new DistError(`SLURM node list '${list}': unbalanced ']'`);
    if (c === "," && depth === 0) {
      items.push(list.slice(start, i));
      start = i + 1;
    }
  }
  if (depth !== 0) throw new DistError(`SLURM node list '${list}': unbalanced '['`);
  items.push(list.slice(start));
  const out: string[] = [];
  for (const item of items.map((s) => s.trim()).filter((s) => s.length > 0)) out.push(...expandHost(item, list));
  return out;
}

function expandHost(pattern: string, whole: string): string[] {
  const open = pattern.indexOf("[");
  if (open < 0) return [pattern];
  const close = pattern.indexOf("]", open);
  const prefix = pattern.slice(0, open);
  const rest = expandHost(pattern.slice(close + 1), whole);
  const values: string[] = [];
  for (const part of pattern.slice(open + 1, close).split(",")) {
    const range = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!range) throw new DistError(`SLURM node list '${whole}': cannot read '${part}' in '[...]'`);
    const [from, to] = [range[1], range[2] ?? range[1]];
    const width = from.length;
    for (let n = Number(from); n <= Number(to); n++) values.push(String(n).padStart(width, "0"));
  }
  return values.flatMap((v) => rest.map((r) => prefix + v + r));
}

function integerVariable(name: string, value: string | undefined, min: number): number | undefined {
  if (value === undefined || value === "") return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new DistError(`${name}=${value}: expected an integer >= ${min}`);
  return n;
}

/** Parses `tcp://host:port` (IPv6 hosts in brackets). */
export function parseDistUrl(url: string): { host: string; port: number } {
  const match = /^tcp:\/\/(\[[^\]]+\]|[^:/]+):(\d+)\/?$/.exec(url);
  if (!match) throw new DistError(`--dist-url ${url}: expected tcp://host:port (or env://)`);
  const port = Number(match[2]);
  if (port < 1 || port > 65535) throw new DistError(`--dist-url ${url}: port ${port} is out of range`);
  return { host: match[1].replace(/^\[|\]$/g, ""), port };
}

/**
 * Reads rank, world and the rendezvous address: torchrun variables first, then SLURM's; a `tcp://` URL overrides
 * the address. Nothing set means a single process.
 */
export function resolveDistSpec(options: { url?: string; env?: (name: string) => string | undefined } = {}): DistSpec {
  const env = options.env ?? ((name: string) => Deno.env.get(name));
  const url = options.url && options.url !== "env://" ? parseDistUrl(options.url) : null;
  const port = (): number => url?.port ?? integerVariable("MASTER_PORT", env("MASTER_PORT"), 1) ?? DEFAULT_MASTER_PORT;

  const rank = integerVariable("RANK", env("RANK"), 0);
  const world = integerVariable("WORLD_SIZE", env("WORLD_SIZE"), 1);
  if (rank !== undefined || world !== undefined) {
    if (rank === undefined || world === undefined) {
      throw new DistError("RANK and WORLD_SIZE must be set together (torchrun-style launch)");
    }
    if (rank >= world) throw new DistError(`RANK=${rank} is not below WORLD_SIZE=${world}`);
    const localRank = integerVariable("LOCAL_RANK", env("LOCAL_RANK"), 0) ?? rank;
    return {
      rank,
      world,
      localRank,
      localWorld: integerVariable("LOCAL_WORLD_SIZE", env("LOCAL_WORLD_SIZE"), 1) ?? world,
      masterAddr: url?.host ?? env("MASTER_ADDR") ?? "127.0.0.1",
      masterPort: port(),
      source: url ? "url" : "torchrun",
    };
  }

  const procId = integerVariable("SLURM_PROCID", env("SLURM_PROCID"), 0);
  const tasks = integerVariable("SLURM_NTASKS", env("SLURM_NTASKS"), 1);
  if (procId !== undefined && tasks !== undefined) {
    if (procId >= tasks) throw new DistError(`SLURM_PROCID=${procId} is not below SLURM_NTASKS=${tasks}`);
    const nodes = env("SLURM_JOB_NODELIST") ?? env("SLURM_NODELIST");
    let masterAddr = url?.host ?? env("MASTER_ADDR");
    if (masterAddr === undefined) {
      if (tasks > 1 && (nodes === undefined || nodes === "")) {
        throw new DistError("SLURM launch: set MASTER_ADDR or SLURM_JOB_NODELIST (rank 0's host) or pass --dist-url");
      }
      masterAddr = nodes ? expandNodeList(nodes)[0] : "127.0.0.1";
    }
    const localRank = integerVariable("SLURM_LOCALID", env("SLURM_LOCALID"), 0) ?? 0;
    const perNode = env("SLURM_NTASKS_PER_NODE")?.match(/^\d+/)?.[0];
    return {
      rank: procId,
      world: tasks,
      localRank,
      localWorld: perNode ? Number(perNode) : tasks,
      masterAddr,
      masterPort: port(),
      source: url ? "url" : "slurm",
    };
  }

  if (url) {
    throw new DistError(`--dist-url ${options.url}: also set RANK and WORLD_SIZE (or run under srun)`);
  }
  return { rank: 0, world: 1, localRank: 0, localWorld: 1, masterAddr: "127.0.0.1", masterPort: 0, source: "single" };
}

export interface ProcessGroupOptions {
  rank: number;
  world: number;
  localRank?: number;
  masterAddr: string;
  masterPort: number;
  backend?: DistBackend;
  /** Bounds the rendezvous, every collective and every store wait (default 30 minutes, as torch.distributed). */
  timeoutMs?: number;
}

function cString(s: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(s + "\0");
}

/** Sorted-key JSON, so equal configs hash equally whatever their key order. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined);
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

export class ProcessGroup {
  readonly rank: number;
  readonly world: number;
  readonly localRank: number;
  readonly backend: DistBackend;
  readonly masterAddr: string;
  readonly masterPort: number;
  readonly timeoutMs: number;
  #id: bigint | null;
  #destroyed = false;
  #sequence = 0;
  #collectiveMs = 0;
  readonly #localStore = new Map<string, Uint8Array>();

  private constructor(options: ProcessGroupOptions, id: bigint | null) {
    this.rank = options.rank;
    this.world = options.world;
    this.localRank = options.localRank ?? options.rank;
    this.backend = options.backend ?? "gloo";
    this.masterAddr = options.masterAddr;
    this.masterPort = options.masterPort;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#id = id;
  }

  /** Whether the backend was compiled into the native library. */
  static available(backend: DistBackend): boolean {
    const result = native().dc_dist_available(BACKEND_CODES[backend]);
    if (result < 0) throw new DistError(lastError());
    return result === 1;
  }

  /** Joins a group (blocking until every rank has joined, within the timeout); a world of one joins nothing. */
  static init(options: ProcessGroupOptions): ProcessGroup {
    const { rank, world } = options;
    if (!Number.isInteger(world) || world < 1) throw new DistError(`world size must be an integer >= 1, got ${world}`);
    if (!Number.isInteger(rank) || rank < 0 || rank >= world) {
      throw new DistError(`rank ${rank} is outside [0, ${world})`);
    }
    if (world === 1) return new ProcessGroup(options, null);
    const backend = options.backend ?? "gloo";
    if (!ProcessGroup.available(backend)) {
      throw new DistError(
        `the ${backend} backend is not in this build of the native library ` +
          (backend === "nccl" ? "(it needs a CUDA libtorch with NCCL headers)" : "(install libgloo-dev and rebuild)"),
      );
    }
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const id = native().dc_dist_init(
      cString(options.masterAddr),
      i64(options.masterPort),
      i64(rank),
      i64(world),
      BACKEND_CODES[backend],
      i64(Math.max(1, Math.round(timeoutMs))),
    );
    if (id < 0n) throw new DistError(lastError());
    return new ProcessGroup({ ...options, backend, timeoutMs }, id);
  }

  /**
   * The group this process was launched into: torchrun or SLURM variables, or `url` (`tcp://host:port`) for the
   * address. The backend defaults to NCCL for CUDA training and Gloo otherwise.
   */
  static fromEnv(
    options: {
      url?: string;
      timeoutMs?: number;
      backend?: DistBackend;
      device?: string;
      env?: (name: string) => string | undefined;
    } = {},
  ): ProcessGroup {
    const spec = resolveDistSpec({ url: options.url, env: options.env });
    const backend = options.backend ?? (options.device?.startsWith("cuda") ? "nccl" : "gloo");
    return ProcessGroup.init({ ...spec, backend, timeoutMs: options.timeoutMs });
  }

  /**
   * Wall seconds this process has spent inside collectives called from TypeScript (waiting for slower ranks
   * included). The all-reduce in the backward of gatherWithGrad runs inside backward and is not counted.
   */
  get collectiveSeconds(): number {
    return this.#collectiveMs / 1000;
  }

  #timed<T>(fn: () => T): T {
    const start = performance.now();
    try {
      return fn();
    } finally {
      this.#collectiveMs += performance.now() - start;
    }
  }

  /** More than one rank: collectives do something. */
  get distributed(): boolean {
    return this.world > 1;
  }

  #group(op: string): bigint {
    if (this.#destroyed || this.#id === null) throw new DistError(`dist ${op}: the process group was destroyed`);
    return this.#id;
  }

  #check(status: number | bigint): void {
    if (status !== 0 && status !== 0n) throw new DistError(lastError());
  }

  /** Reduces `t` over ranks in place (avg = sum / world); returns t. */
  allReduce_(t: Tensor, op: ReduceOp = "sum"): Tensor {
    if (!this.distributed) return t;
    const group = this.#group("all_reduce");
    this.#check(this.#timed(() => native().dc_dist_all_reduce_(group, t.handle, REDUCE_CODES[op])));
    return t;
  }

  /** A new tensor holding the mean of `t` over ranks (no gradient); `t` itself on a single process. */
  allReduceMean(t: Tensor): Tensor {
    if (!this.distributed) return t;
    const out = t.detach().clone();
    try {
      return this.allReduce_(out, "avg");
    } catch (error) {
      out.dispose();
      throw error;
    }
  }

  /** Copies root's values into every rank's tensors, in place, in flat buckets. */
  broadcast_(tensors: Tensor | readonly Tensor[], root = 0, bucketMb = DEFAULT_BUCKET_MB): void {
    const list = tensors instanceof Tensor ? [tensors] : tensors;
    if (!this.distributed || list.length === 0) return;
    const group = this.#group("broadcast");
    const bucket = i64(Math.max(1, Math.round(bucketMb * 2 ** 20)));
    const status = this.#timed(() =>
      native().dc_dist_broadcast_(group, handleList(list), i64(list.length), i64(root), bucket)
    );
    this.#check(status);
  }

  /** (B, ...) -> (world·B, ...) in rank order, without gradient. */
  allGather(t: Tensor): Tensor {
    if (!this.distributed) return t.detach();
    const group = this.#group("all_gather");
    const pointer = this.#timed(() => native().dc_dist_all_gather(group, t.handle));
    if (pointer === null) throw new DistError(lastError());
    return own(pointer, "all_gather", [t]);
  }

  /**
   * (B, ...) -> (world·B, ...) in rank order, with gradient: backward sums the gradient over ranks and returns this
   * rank's rows. The identity on a single process.
   */
  gatherWithGrad(t: Tensor): Tensor {
    if (!this.distributed) return t;
    const group = this.#group("gather_with_grad");
    const pointer = this.#timed(() => native().dc_dist_gather_with_grad(group, t.handle));
    if (pointer === null) throw new DistError(lastError());
    return own(pointer, "gather_with_grad", [t]);
  }

  barrier(): void {
    if (!this.distributed) return;
    const group = this.#group("barrier");
    this.#check(this.#timed(() => native().dc_dist_barrier(group)));
  }

  /** DDP's gradient averaging: every parameter's .grad becomes its mean over ranks (flat buckets, one all-reduce each). */
  averageGradients(params: readonly Tensor[], bucketMb = DEFAULT_BUCKET_MB): void {
    if (!this.distributed || params.length === 0) return;
    const group = this.#group("average_grads");
    const bucket = i64(Math.max(1, Math.round(bucketMb * 2 ** 20)));
    const status = this.#timed(() =>
      native().dc_dist_average_grads_(group, handleList(params), i64(params.length), bucket)
    );
    this.#check(status);
  }

  /**
   * averageGradients overlapped with backward (DDP's buckets): call prepare() before the backward of the last
   * micro-step and finish() after it. null on a single process, where there is nothing to average.
   */
  gradientReducer(params: readonly Tensor[], bucketMb = DEFAULT_BUCKET_MB): GradientReducer | null {
    if (!this.distributed || params.length === 0) return null;
    const group = this.#group("reducer");
    const bucket = i64(Math.max(1, Math.round(bucketMb * 2 ** 20)));
    const id = native().dc_dist_reducer_new(group, handleList(params), i64(params.length), bucket);
    if (id < 0n) throw new DistError(lastError());
    return new GradientReducer(id, (fn) => this.#timed(fn));
  }

  /** Sets a key in the rendezvous store (a local map on a single process). */
  storeSet(key: string, value: string | Uint8Array): void {
    const bytes = typeof value === "string" ? new TextEncoder().encode(value) : value;
    if (!this.distributed) {
      this.#localStore.set(key, bytes.slice());
      return;
    }
    const buffer = new Uint8Array(bytes.byteLength);
    buffer.set(bytes);
    this.#check(native().dc_dist_store_set(this.#group("store_set"), cString(key), buffer, i64(buffer.byteLength)));
  }

  /** Reads a key, waiting for it up to the timeout. */
  storeGet(key: string): Uint8Array {
    if (!this.distributed) {
      const value = this.#localStore.get(key);
      if (value === undefined) throw new DistError(`dist store get '${key}': no such key`);
      return value.slice();
    }
    const id = this.#group("store_get");
    let buffer = new Uint8Array(256);
    for (;;) {
      const size = native().dc_dist_store_get(id, cString(key), buffer, i64(buffer.byteLength));
      if (size < 0n) throw new DistError(lastError());
      if (size <= BigInt(buffer.byteLength)) return buffer.slice(0, Number(size));
      buffer = new Uint8Array(Number(size));
    }
  }

  storeGetText(key: string): string {
    return new TextDecoder().decode(this.storeGet(key));
  }

  /** Root's `value` on every rank, through the store (for small things: a path, a decision). */
  broadcastText(value: string, root = 0): string {
    if (!this.distributed) return value;
    const key = `dc/broadcast/${this.#sequence++}`;
    if (this.rank === root) {
      this.storeSet(key, value);
      return value;
    }
    return this.storeGetText(key);
  }

  /**
   * Checks that every rank was started with the same configuration: each rank publishes a hash of `config`
   * (canonical JSON) and compares every rank's with rank 0's. A difference throws ConfigMismatchError on every rank,
   * naming each differing option (through `optionName`) and the ranks' values.
   */
  checkConfig(config: Record<string, unknown>, optionName: (key: string) => string = (k) => k): string {
    const json = canonicalJson(config);
    const hash = createHash("sha256").update(json).digest("hex");
    if (!this.distributed) return hash;
    this.storeSet(`dc/config/${this.rank}`, JSON.stringify({ hash, config: JSON.parse(json) }));
    const published = Array.from(
      { length: this.world },
      (_, r) => r === this.rank ? { hash, config: JSON.parse(json) } : JSON.parse(this.storeGetText(`dc/config/${r}`)),
    );
    const reference = published[0] as { hash: string; config: Record<string, unknown> };
    const differences: ConfigMismatchError["differences"] = [];
    for (let r = 1; r < this.world; r++) {
      const other = published[r] as { hash: string; config: Record<string, unknown> };
      if (other.hash === reference.hash) continue;
      const keys = [...new Set([...Object.keys(reference.config), ...Object.keys(other.config)])].sort();
      for (const key of keys) {
        if (canonicalJson(reference.config[key]) !== canonicalJson(other.config[key])) {
          differences.push({ option: key, rank: r, here: reference.config[key], there: other.config[key] });
        }
      }
    }
    // Nobody leaves (rank 0 takes the store with it) before every rank has read every config: all reach one verdict.
    this.barrier();
    if (differences.length > 0) {
      const show = (v: unknown): string => (v === undefined ? "unset" : JSON.stringify(v));
      const lines = differences.map((d) =>
        `${optionName(d.option)} is ${show(d.here)} on rank 0 but ${show(d.there)} on rank ${d.rank}`
      );
      throw new ConfigMismatchError(
        `the ranks were started with different options (config hash differs): ${lines.join("; ")}`,
        differences,
      );
    }
    return hash;
  }

  /** Leaves the group (a broken group's backend is leaked rather than torn down). Idempotent. */
  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    if (this.#id !== null) this.#check(native().dc_dist_destroy(this.#id));
  }

  [Symbol.dispose](): void {
    this.destroy();
  }
}

/**
 * Gradient averaging whose bucket all-reduces start during backward (dist.cpp's reducer): hooks on the parameters'
 * gradient accumulators launch a bucket as soon as all its gradients are in. The first prepared step learns how many
 * gradients each parameter receives per backward and reduces only at finish(); later steps overlap. The result equals
 * ProcessGroup.averageGradients'.
 */
export class GradientReducer {
  #id: bigint | null;

  constructor(id: bigint, readonly timed: <T>(fn: () => T) => T) {
    this.#id = id;
  }

  #reducer(op: string): bigint {
    if (this.#id === null) throw new DistError(`dist reducer ${op}: the reducer was disposed`);
    return this.#id;
  }

  /** Arms the hooks for the next backward (the last micro-step's). */
  prepare(): void {
    if (native().dc_dist_reducer_prepare(this.#reducer("prepare")) !== 0) throw new DistError(lastError());
  }

  /**
   * After that backward: launches the buckets not yet launched, waits for all, and leaves the mean in each .grad.
   * Returns how many buckets backward had already launched (overlapped with it).
   */
  finish(): number {
    const id = this.#reducer("finish");
    const overlapped = this.timed(() => native().dc_dist_reducer_finish(id));
    if (overlapped < 0n) throw new DistError(lastError());
    return Number(overlapped);
  }

  /** How many buckets the parameters were split into. */
  get buckets(): number {
    const count = native().dc_dist_reducer_buckets(this.#reducer("buckets"));
    if (count < 0n) throw new DistError(lastError());
    return Number(count);
  }

  dispose(): void {
    if (this.#id === null) return;
    const id = this.#id;
    this.#id = null;
    if (native().dc_dist_reducer_free(id) !== 0) throw new DistError(lastError());
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
