// checkpoint.ts: training checkpoints as plain safetensors files, written atomically and verified on load, so a
// run killed at any moment (even mid-write) resumes from the newest good file. The header's __metadata__ holds the
// format tag, the run state as JSON (`meta`) and two SHA-256 digests: one of the data section, one of the meta
// string and tensor index, so a flipped byte anywhere is caught, not only truncation. The trade: saving hashes
// while it writes, and every `--resume auto` probe hashes the whole file (about 1.5 GB/s on this 2-core machine:
// 0.26 s for 400 MB), which is small next to a silently wrong resume.
import { createHash } from "node:crypto";
import {
  type Device,
  SAFETENSORS_TEMP_SUFFIX,
  SafeTensorsError,
  SafeTensorsFile,
  Tensor,
  writeSafeTensors,
} from "../torch/mod.ts";
import { syncDirectory } from "../fs/atomic_write.ts";
import { countNonFinite, describeNonFinite, nonFiniteTensors } from "./finite.ts";

/** The `format` tag in every checkpoint's metadata; bump the number when the layout changes meaning. */
export const CHECKPOINT_FORMAT = "detailclip-checkpoint/1";
/** Name of the copy kept of the best checkpoint (judged by the caller). */
export const BEST_CHECKPOINT = "checkpoint-best.safetensors";

const REGULAR = /^checkpoint-(\d{8,})\.safetensors$/;
const TEMP = new RegExp(`^checkpoint-(?:\\d{8,}|best)\\.safetensors${escapeRegExp(SAFETENSORS_TEMP_SUFFIX)}(\\d+)$`);
const DEFAULT_KEEP_LAST = 3;
/** Read size of the streaming hash: large enough to run at disk speed, small next to any model. */
const HASH_CHUNK_BYTES = 8 << 20;

/** What a checkpoint holds. Keys are namespaced by the caller (`model.<key>`, `optimizer.<param>.exp_avg`, ...). */
export interface CheckpointState {
  tensors: Map<string, Tensor>;
  /** JSON-serialisable run state; `step` (a non-negative integer, the optimizer step) is required and names the file. */
  meta: Record<string, unknown>;
}

export interface SaveCheckpointOptions {
  /** How many regular checkpoints to keep, newest by step (default 3; Infinity keeps all). */
  keepLast?: number;
  /** Also make this checkpoint `checkpoint-best.safetensors`. */
  best?: boolean;
  /** Receives one line per file removed by pruning (default: nothing is printed). */
  log?: (message: string) => void;
  /**
   * The caller has just run nonFiniteTensors over these very tensors (the training loop does, on every rank), so the
   * save does not check again. Otherwise a state holding NaN or Inf is refused (problem `non-finite`).
   */
  finiteChecked?: boolean;
}

/** A checkpoint read back: its path, step, tensors (owned by the caller) and meta. */
export interface LoadedCheckpoint {
  path: string;
  step: number;
  tensors: Map<string, Tensor>;
  meta: Record<string, unknown>;
}

export interface SkippedCheckpoint {
  path: string;
  reason: string;
}

export interface ResumeCheckpoint {
  path: string;
  step: number;
  meta: Record<string, unknown>;
  /** Newer checkpoints that were passed over, newest first, each with why (print these). */
  skipped: SkippedCheckpoint[];
}

/** What went wrong; `truncated` and `digest-mismatch` mean the bytes on disk are not the ones written. */
export type CheckpointProblem =
  | "unreadable"
  | "truncated"
  | "digest-mismatch"
  | "wrong-format"
  | "invalid-state"
  | "write-failed"
  | "non-finite"
  | "no-good-checkpoint";

/** A checkpoint that cannot be written, read or trusted; the message names the file and the problem. */
export class CheckpointError extends Error {
  readonly path: string;
  readonly problem: CheckpointProblem;
  /** For `no-good-checkpoint`: every candidate and why it was rejected. */
  readonly skipped: SkippedCheckpoint[];

  constructor(path: string, problem: CheckpointProblem, detail: string, options: ErrorOptions & {
    skipped?: SkippedCheckpoint[];
  } = {}) {
    super(`checkpoint ${path}: ${problem}: ${detail}`, options);
    this.name = "CheckpointError";
    this.path = path;
    this.problem = problem;
    this.skipped = options.skipped ?? [];
  }

  /** The message without the path prefix, for lists that already show the path. */
  get reason(): string {
    return this.message.slice(`checkpoint ${this.path}: `.length);
  }
}

/** `<dir>/checkpoint-<step, 8 digits>.safetensors`. */
export function checkpointPath(dir: string, step: number): string {
  return `${dir}/checkpoint-${String(step).padStart(8, "0")}.safetensors`;
}

/**
 * Writes `<dir>/checkpoint-<step>.safetensors` atomically (temp file in `dir`, fsync, rename, fsync of `dir`), then
 * prunes. Earlier files are not touched until the new one is complete under its final name. Pruning keeps the
 * newest `keepLast` checkpoints up to this step and removes any with a larger step: those belong to a timeline this
 * run abandoned (it resumed from an older file), and `--resume auto` must not jump back onto it. With `best`, the
 * file is also hard-linked (copied where links are unsupported) to `checkpoint-best.safetensors`, atomically.
 * Returns the path written.
 */
export function saveCheckpoint(dir: string, state: CheckpointState, options: SaveCheckpointOptions = {}): string {
  const { keepLast = DEFAULT_KEEP_LAST, best = false, log, finiteChecked = false } = options;
  if (!(keepLast === Infinity || (Number.isSafeInteger(keepLast) && keepLast >= 1))) {
    throw new CheckpointError(dir, "invalid-state", `keepLast must be an integer >= 1 or Infinity, got ${keepLast}`);
  }
  const step = stepOf(state.meta, dir);
  const path = checkpointPath(dir, step);
  checkJson(state.meta, "meta", path);
  const metaText = JSON.stringify(state.meta);
  const index: IndexEntry[] = [];
  for (const [name, tensor] of state.tensors) {
    if (!(tensor instanceof Tensor) || tensor.disposed) {
      throw new CheckpointError(path, "invalid-state", `tensor '${name}' is disposed or not a Tensor`);
    }
    index.push([name, tensor.dtype, tensor.shape]);
  }
  const metadata = { format: CHECKPOINT_FORMAT, meta: metaText, index_sha256: indexDigest(metaText, index) };
  if (!finiteChecked) {
    const bad = nonFiniteTensors(state.tensors);
    if (bad.length > 0) {
      throw new CheckpointError(
        path,
        "non-finite",
        `${describeNonFinite(bad, state.tensors.size)}; not written (earlier checkpoints are untouched)`,
      );
    }
  }

  try {
    Deno.mkdirSync(dir, { recursive: true });
    writeSafeTensors(path, state.tensors, metadata, { sha256Key: "sha256" });
  } catch (error) {
    const detail = error instanceof SafeTensorsError ? error.message : (error as Error).message;
    throw new CheckpointError(path, "write-failed", `${detail} (earlier checkpoints are untouched)`, { cause: error });
  }
  if (best) publishBest(dir, path);
  prune(dir, step, keepLast, log);
  return path;
}

/**
 * Reads a checkpoint, verifying its format tag and both digests while the tensors load (one pass over the file).
 * Tensors land on `device` (default cpu) and belong to the caller. Throws CheckpointError on any problem, having
 * freed whatever it had loaded.
 */
export function loadCheckpoint(path: string, options: { device?: Device } = {}): LoadedCheckpoint {
  using file = openVerifiedHeader(path);
  const { step, meta } = file;
  const names = file.st.names();
  const tiles = tilesDataSection(file.st);
  // Our writer lays tensors end to end in header order, so hashing each tensor's bytes as it loads hashes the data
  // section. Anything else (a file edited by another tool) is hashed separately first.
  if (!tiles) verifyDataDigest(file.st, file.digest);
  const hash = tiles ? createHash("sha256") : null;
  const tensors = new Map<string, Tensor>();
  const nonFinite: string[] = [];
  try {
    for (const name of names) {
      const info = file.st.info(name);
      const bytes = file.st.readBytes(name);
      hash?.update(bytes);
      if (countNonFinite(bytes, info.dtype) > 0) nonFinite.push(name);
      tensors.set(name, Tensor.fromBytes(bytes, info.shape, { dtype: info.dtype, device: options.device }).keep());
    }
    if (hash !== null) checkDigest(path, hash.digest("hex"), file.digest);
    if (nonFinite.length > 0) throw nonFiniteError(path, nonFinite, names.length);
  } catch (error) {
    for (const t of tensors.values()) t.dispose();
    throw asCheckpointError(path, error);
  }
  return { path, step, tensors, meta };
}

/**
 * Checks a checkpoint without loading its tensors (streams the data through the hash and the finiteness scan, 8 MiB
 * at a time) and returns its step and meta. A file holding NaN or Inf fails with problem `non-finite`.
 */
export function verifyCheckpoint(path: string): { step: number; meta: Record<string, unknown> } {
  using file = openVerifiedHeader(path);
  try {
    const nonFinite = verifyData(file.st, file.digest);
    if (nonFinite.length > 0) throw nonFiniteError(path, nonFinite, file.st.names().length);
  } catch (error) {
    throw asCheckpointError(path, error);
  }
  return { step: file.step, meta: file.meta };
}

/**
 * The step and meta of a checkpoint, from its header alone (the index digest is checked, the data is not read): what
 * a run needs to tell whose checkpoints a folder holds.
 */
export function readCheckpointHeader(path: string): { step: number; meta: Record<string, unknown> } {
  using file = openVerifiedHeader(path);
  return { step: file.step, meta: file.meta };
}

/** The regular checkpoint files of `dir` (not the best copy, not temp files), newest step first; [] if none. */
export function listCheckpoints(dir: string): { path: string; step: number }[] {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw new CheckpointError(dir, "unreadable", `cannot list the directory: ${(error as Error).message}`);
  }
  return regularCheckpoints(entries).sort((a, b) => b.step - a.step).map(({ name, step }) => ({
    path: `${dir}/${name}`,
    step,
  }));
}

/**
 * For `--resume auto`: the newest verified checkpoint in `dir`, with the newer ones that failed verification listed
 * in `skipped`. Temp files left by a killed writer are ignored and removed (unless their process is still alive on
 * this host). Returns null when `dir` holds no checkpoint at all; throws a `no-good-checkpoint` CheckpointError when
 * it holds some but none verifies, because silently starting over would then prune or shadow them.
 */
export function findResumeCheckpoint(dir: string): ResumeCheckpoint | null {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw new CheckpointError(dir, "unreadable", `cannot list the directory: ${(error as Error).message}`);
  }
  removeStaleTempFiles(dir, entries);
  const candidates = regularCheckpoints(entries).sort((a, b) => b.step - a.step);
  const skipped: SkippedCheckpoint[] = [];
  for (const { name } of candidates) {
    const path = `${dir}/${name}`;
    try {
      const { step, meta } = verifyCheckpoint(path);
      return { path, step, meta, skipped };
    } catch (error) {
      if (!(error instanceof CheckpointError)) throw error;
      skipped.push({ path, reason: error.reason });
    }
  }
  if (skipped.length === 0) return null;
  const list = skipped.map((s) => `  ${s.path}: ${s.reason}`).join("\n");
  throw new CheckpointError(
    dir,
    "no-good-checkpoint",
    `none of ${skipped.length} checkpoint(s) verifies; remove them or use another --output-dir to start over:\n${list}`,
    { skipped },
  );
}

// ---- header verification ---------------------------------------------------------------------------------------

/** [name, dtype, shape], in file order: what the index digest covers besides the meta string. */
type IndexEntry = [string, string, number[]];

interface VerifiedHeader {
  st: SafeTensorsFile;
  step: number;
  meta: Record<string, unknown>;
  /** The data-section digest the header claims. */
  digest: string;
  [Symbol.dispose](): void;
}

/** Opens a file and checks everything but the data digest; the caller closes it (`using`). */
function openVerifiedHeader(path: string): VerifiedHeader {
  let st: SafeTensorsFile;
  try {
    st = SafeTensorsFile.open(path);
  } catch (error) {
    if (error instanceof SafeTensorsError) {
      const truncation = describeTruncation(path);
      if (truncation !== null) throw new CheckpointError(path, "truncated", truncation, { cause: error });
      throw new CheckpointError(path, "unreadable", error.message, { cause: error });
    }
    throw error;
  }
  try {
    const format = st.metadata.format;
    if (format !== CHECKPOINT_FORMAT) {
      const found = format === undefined ? "no 'format' in __metadata__ (a plain weights file?)" : `'${format}'`;
      throw new CheckpointError(path, "wrong-format", `expected format '${CHECKPOINT_FORMAT}', found ${found}`);
    }
    const required = (key: string): string => {
      const value = st.metadata[key];
      if (value === undefined) throw new CheckpointError(path, "wrong-format", `__metadata__ lacks '${key}'`);
      return value;
    };
    const metaText = required("meta");
    const sha256 = required("sha256");
    const indexSha = required("index_sha256");
    const index: IndexEntry[] = st.names().map((name) => {
      const info = st.info(name);
      return [name, info.dtype, info.shape];
    });
    checkDigest(path, indexDigest(metaText, index), indexSha, "meta and tensor index");
    let meta: unknown;
    try {
      meta = JSON.parse(metaText);
    } catch (error) {
      throw new CheckpointError(path, "wrong-format", `meta is not JSON: ${(error as Error).message}`);
    }
    if (typeof meta !== "object" || meta === null || Array.isArray(meta)) {
      throw new CheckpointError(path, "wrong-format", "meta is not a JSON object");
    }
    const record = meta as Record<string, unknown>;
    const step = stepOf(record, path);
    const named = REGULAR.exec(path.slice(path.lastIndexOf("/") + 1));
    if (named !== null && Number(named[1]) !== step) {
      throw new CheckpointError(path, "wrong-format", `file name says step ${Number(named[1])}, meta says ${step}`);
    }
    return { st, step, meta: record, digest: sha256, [Symbol.dispose]: () => st.close() };
  } catch (error) {
    st.close();
    throw asCheckpointError(path, error);
  }
}

/** Whether the tensors lie end to end in header order and fill the data section (our writer's layout). */
function tilesDataSection(st: SafeTensorsFile): boolean {
  const dataLength = Deno.statSync(st.path).size - st.dataOffset;
  const ranges = st.names().map((name) => st.dataRange(name));
  return ranges.every(([begin], i) => begin === (i === 0 ? 0 : ranges[i - 1][1])) &&
    (ranges.length === 0 ? dataLength === 0 : ranges[ranges.length - 1][1] === dataLength);
}

/**
 * Checks the data digest and scans every floating-point tensor for NaN and Inf, reading one chunk at a time (one pass
 * in our writer's layout, two otherwise). Returns the names of the tensors holding non-finite values.
 */
function verifyData(st: SafeTensorsFile, expected: string): string[] {
  const tiles = tilesDataSection(st);
  if (!tiles) verifyDataDigest(st, expected);
  const hash = tiles ? createHash("sha256") : null;
  const nonFinite: string[] = [];
  const file = Deno.openSync(st.path, { read: true });
  try {
    const chunk = new Uint8Array(HASH_CHUNK_BYTES); // a multiple of every element size, so chunks split no element
    for (const name of st.names()) {
      const [begin, end] = st.dataRange(name);
      const dtype = st.info(name).dtype;
      let bad = 0;
      file.seekSync(st.dataOffset + begin, Deno.SeekMode.Start);
      for (let at = begin; at < end;) {
        const part = chunk.subarray(0, Math.min(HASH_CHUNK_BYTES, end - at));
        readFully(file, part);
        hash?.update(part);
        bad += countNonFinite(part, dtype);
        at += part.byteLength;
      }
      if (bad > 0) nonFinite.push(name);
    }
  } finally {
    file.close();
  }
  if (hash !== null) checkDigest(st.path, hash.digest("hex"), expected);
  return nonFinite;
}

function nonFiniteError(path: string, names: string[], total: number): CheckpointError {
  return new CheckpointError(
    path,
    "non-finite",
    `${describeNonFinite(names, total)}: it was written from values that had overflowed, and would resume or ` +
      "evaluate into NaN; use an earlier checkpoint",
  );
}

/** Hashes the data section in fixed-size chunks, so verifying never holds more than one chunk. */
function verifyDataDigest(st: SafeTensorsFile, expected: string): void {
  const file = Deno.openSync(st.path, { read: true });
  try {
    const hash = createHash("sha256");
    const chunk = new Uint8Array(HASH_CHUNK_BYTES);
    file.seekSync(st.dataOffset, Deno.SeekMode.Start);
    for (;;) {
      const n = file.readSync(chunk);
      if (n === null || n === 0) break;
      hash.update(chunk.subarray(0, n));
    }
    checkDigest(st.path, hash.digest("hex"), expected);
  } finally {
    file.close();
  }
}

function checkDigest(path: string, actual: string, expected: string, what = "data section"): void {
  if (actual !== expected) {
    throw new CheckpointError(
      path,
      "digest-mismatch",
      `SHA-256 of the ${what} is ${actual}, the header says ${expected}: the file changed after it was written`,
    );
  }
}

function indexDigest(metaText: string, index: IndexEntry[]): string {
  return createHash("sha256").update(JSON.stringify([metaText, index])).digest("hex");
}

/**
 * Why a file that failed to parse is too short, or null when its length is not the problem. Only called on the
 * error path, so it may re-read the header.
 */
function describeTruncation(path: string): string | null {
  let file: Deno.FsFile;
  try {
    if (!Deno.statSync(path).isFile) return null; // opening a FIFO would block
    file = Deno.openSync(path, { read: true });
  } catch {
    return null;
  }
  try {
    const size = file.statSync().size;
    if (size < 8) return `the file is ${size} bytes, shorter than the 8-byte header length`;
    const prefix = new Uint8Array(8);
    readFully(file, prefix);
    const headerLength = Number(new DataView(prefix.buffer).getBigUint64(0, true));
    // A length beyond this is corruption of the prefix, not truncation.
    if (headerLength > 100_000_000) return null;
    if (8 + headerLength > size) return `the header needs ${8 + headerLength} bytes, the file has ${size}`;
    const header = new Uint8Array(headerLength);
    readFully(file, header);
    const parsed = JSON.parse(new TextDecoder().decode(header)) as Record<string, { data_offsets?: unknown }>;
    let needed = 0;
    for (const [name, entry] of Object.entries(parsed)) {
      if (name === "__metadata__" || !Array.isArray(entry?.data_offsets)) continue;
      needed = Math.max(needed, Number(entry.data_offsets[1]));
    }
    const expected = 8 + headerLength + needed;
    return expected > size ? `the header describes ${expected} bytes, the file has ${size}` : null;
  } catch {
    return null;
  } finally {
    file.close();
  }
}

function readFully(file: Deno.FsFile, out: Uint8Array): void {
  let filled = 0;
  while (filled < out.byteLength) {
    const n = file.readSync(out.subarray(filled));
    if (n === null || n === 0) throw new Error("unexpected end of file");
    filled += n;
  }
}

function asCheckpointError(path: string, error: unknown): Error {
  if (error instanceof CheckpointError) return error;
  if (error instanceof SafeTensorsError) {
    return new CheckpointError(path, "unreadable", error.message, { cause: error });
  }
  if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.PermissionDenied) {
    return new CheckpointError(path, "unreadable", (error as Error).message, { cause: error });
  }
  return error as Error;
}

// ---- state validation ------------------------------------------------------------------------------------------

function stepOf(meta: Record<string, unknown>, where: string): number {
  const step = meta?.step;
  if (typeof step !== "number" || !Number.isSafeInteger(step) || step < 0) {
    throw new CheckpointError(where, "invalid-state", `meta.step must be a non-negative integer, got ${String(step)}`);
  }
  return step;
}

/**
 * Rejects what JSON would silently change (NaN and Infinity become null, Dates become strings, Maps become {}),
 * so the meta read back is the meta saved. Undefined object properties are allowed: JSON drops them, as optional
 * fields should be.
 */
function checkJson(value: unknown, where: string, path: string): void {
  const fail = (what: string): never => {
    throw new CheckpointError(path, "invalid-state", `${where} is ${what}, which JSON cannot hold exactly`);
  };
  switch (typeof value) {
    case "string":
    case "boolean":
      return;
    case "number":
      if (!Number.isFinite(value)) fail(String(value));
      return;
    case "object":
      if (value === null) return;
      if (Array.isArray(value)) {
        value.forEach((item, i) => {
          if (item === undefined) fail("undefined (in an array)");
          checkJson(item, `${where}[${i}]`, path);
        });
        return;
      }
      {
        const proto = Object.getPrototypeOf(value);
        if (proto !== Object.prototype && proto !== null) fail(`a ${value.constructor?.name ?? "non-plain object"}`);
        for (const [key, item] of Object.entries(value)) {
          if (item !== undefined) checkJson(item, `${where}.${key}`, path);
        }
      }
      return;
    default:
      fail(`a ${typeof value}`);
  }
}

// ---- directory housekeeping ------------------------------------------------------------------------------------

function regularCheckpoints(entries: Deno.DirEntry[]): { name: string; step: number }[] {
  const out: { name: string; step: number }[] = [];
  for (const entry of entries) {
    const match = entry.isFile ? REGULAR.exec(entry.name) : null;
    if (match !== null) out.push({ name: entry.name, step: Number(match[1]) });
  }
  return out;
}

function prune(dir: string, step: number, keepLast: number, log?: (message: string) => void): void {
  const all = regularCheckpoints([...Deno.readDirSync(dir)]).sort((a, b) => b.step - a.step);
  const abandoned = all.filter((c) => c.step > step);
  const older = all.filter((c) => c.step <= step).slice(keepLast);
  for (const { name } of abandoned) remove(`${dir}/${name}`, `its step is past ${step}, from an abandoned run`, log);
  for (const { name } of older) remove(`${dir}/${name}`, `keeping the newest ${keepLast}`, log);
}

/** Pruning is housekeeping: a file that cannot be removed is reported, not fatal to the run. */
function remove(path: string, why: string, log?: (message: string) => void): void {
  try {
    Deno.removeSync(path);
    log?.(`removed ${path} (${why})`);
  } catch (error) {
    log?.(`could not remove ${path} (${why}): ${(error as Error).message}`);
  }
}

/** Makes `path` also reachable as the best checkpoint without a moment where that name is missing or partial. */
function publishBest(dir: string, path: string): void {
  const best = `${dir}/${BEST_CHECKPOINT}`;
  const tmp = `${best}${SAFETENSORS_TEMP_SUFFIX}${Deno.pid}`;
  try {
    try {
      Deno.removeSync(tmp);
    } catch { /* usually absent */ }
    try {
      Deno.linkSync(path, tmp);
    } catch {
      // Some file systems have no hard links: copy, and make the copy durable before it takes the name.
      Deno.copyFileSync(path, tmp);
      const copy = Deno.openSync(tmp, { read: true, write: true });
      try {
        copy.syncSync();
      } finally {
        copy.close();
      }
    }
    Deno.renameSync(tmp, best);
    // rename() between two links of one file is a no-op that leaves the source; drop it.
    try {
      Deno.removeSync(tmp);
    } catch { /* renamed away, as usual */ }
    syncDirectory(dir);
  } catch (error) {
    throw new CheckpointError(best, "write-failed", `cannot publish ${path} as best: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/** Temp files whose writer died; those of a live process on this host (another run's write) are left alone. */
function removeStaleTempFiles(dir: string, entries: Deno.DirEntry[]): void {
  for (const entry of entries) {
    const match = entry.isFile ? TEMP.exec(entry.name) : null;
    if (match === null) continue;
    const pid = Number(match[1]);
    if (pid !== Deno.pid && processIsAlive(pid)) continue;
    try {
      Deno.removeSync(`${dir}/${entry.name}`);
    } catch { /* another process cleaned it up first */ }
  }
}

/** Whether a process of this host still runs (Linux: its /proc entry exists). */
export function processIsAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
