// bench/train_step.ts: the wall time of one DetailCLIP training step, beside the same step in PyTorch eager
// (bench/train_step_baseline.py on Debian's python3-torch, the same libtorch 1.13) run in the same invocation.
// The step is the one `deno task golden` checks: EMA update, teacher with CLS attention, masks, student, decoder,
// heads, text, losses with the iBOT center update, backward, AdamW (official groups), zero_grad, logit-scale clamp.
// It runs the production path: the student iBOT patch head is evaluated only at the removed patches
// (docs/parity.md#student-patch-head-at-removed-positions; --full-student-patch evaluates it on every patch, as the
// official code and the golden check do).
// The model is built from DIR/meta.json's dims, loaded from DIR/weights.safetensors and trained on
// DIR/inputs.safetensors; the first (untimed) step is checked against the golden total loss.
// The share of the step spent outside libtorch is estimated from a separate counting pass (every native symbol
// wrapped in a counter; the timed steps run unwrapped) times the per-call wrapper overhead measured as
// bench/ffi.ts does, and cross-checked by a direct pass that times the inside of every native call.
// The baseline is one long-lived process; with --rounds R, R rounds of N timed steps alternate between ours and
// its two variants, so both see the same load from other processes (measured and reported as foreign_load_cores).
// Usage: deno task bench:step --ref DIR [--steps N] [--threads T] [--warmup W] [--rounds R]
//        [--full-student-patch] [--no-baseline] [--json]
import { parseArgs } from "node:util";
import { buildGoldenModel, type GoldenMeta, GoldenMetaSchema } from "../src/train/golden_meta.ts";
import { detailClipLoss, IBOTLoss } from "../src/losses/mod.ts";
import { DetailCLIP } from "../src/models/detailclip.ts";
import { liveTensors, loadSafeTensors, native, setNumThreads, Tensor, tidy } from "../src/torch/internal.ts";
import { symbols } from "../src/torch/symbols.ts";
import { AdamW, officialParamGroups } from "../src/train/optimizer.ts";

const usage = "usage: deno task bench:step --ref DIR [--steps N] [--threads T] [--warmup W] [--rounds R] " +
  "[--full-student-patch] [--no-baseline] [--json]";

// The golden meta.json schema is shared with `deno task golden`.
export const MetaSchema = GoldenMetaSchema;
export type Meta = GoldenMeta;

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function positiveInt(name: string, text: string | undefined, fallback: number, min = 1): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min) {
    console.error(`bench:step: --${name} must be an integer >= ${min}, got '${text}'\n${usage}`);
    Deno.exit(2);
  }
  return value;
}

// ---- the training step ----------------------------------------------------------------------------------------
/** What one step works on (exposed for bench/train_step_phases.ts, which replays the step phase by phase). */
export interface StepParts {
  model: DetailCLIP;
  ibot: IBOTLoss;
  optimizer: AdamW;
  /** (B, 3, H, W) views and (B, T) token ids. */
  u: Tensor;
  v: Tensor;
  text: Tensor;
  momentum: number;
  meta: Meta;
  patchSize: number;
}

export interface Trainer {
  /** One step; returns the total loss (a host read) only when asked, so timed steps never sync. */
  step(readLoss: boolean): number | null;
  parts: StepParts;
  dispose(): void;
}

export function buildTrainer(ref: string, meta: Meta, fullStudentPatch: boolean): Trainer {
  const model = buildGoldenModel(ref, meta);
  const config = model.config;
  const inputs = loadSafeTensors(`${ref}/inputs.safetensors`);
  const need = (name: string): Tensor => {
    const t = inputs.get(name);
    if (t === undefined) throw new Error(`${ref}/inputs.safetensors has no tensor '${name}'`);
    return t;
  };
  const [u, v, text] = [need("u"), need("v"), need("text")]; // (B, 3, H, W), (B, 3, H, W), (B, T)
  const momentum = need("momentum").item();
  const ibot = new IBOTLoss({
    outDim: config.ibot.outDim,
    patchOutDim: config.ibot.patchOutDim,
    studentTemp: meta.student_temp ?? 0.1,
    centerMomentum: meta.center_momentum ?? 0.9,
    centerMomentum2: meta.center_momentum ?? 0.9,
  });
  const optimizer = new AdamW(officialParamGroups(model.namedParameters(), meta.wd), {
    betas: meta.betas,
    eps: meta.eps,
  });
  const patchSize = config.vision.patchSize;
  return {
    parts: { model, ibot, optimizer, u, v, text, momentum, meta, patchSize },
    step(readLoss: boolean): number | null {
      return tidy(() => {
        const out = model.forwardTrain(u, v, text, momentum, { fullStudentPatch });
        const losses = detailClipLoss(out, { u, v }, ibot, meta.epoch, { patchSize });
        const total = readLoss ? losses.loss.item() : null;
        losses.loss.backward();
        optimizer.step(meta.lr);
        optimizer.zeroGrad();
        model.clampLogitScale();
        return total;
      });
    },
    dispose(): void {
      for (const t of inputs.values()) t.dispose();
      optimizer.dispose();
      ibot.dispose();
      model.dispose();
    },
  };
}

// ---- native-call accounting -----------------------------------------------------------------------------------
type SymbolTable = Record<string, (...args: unknown[]) => unknown>;

/** Runs fn with every native symbol replaced by `wrap(name, original)`, then restores the originals. */
function withWrappedSymbols(
  wrap: (name: string, original: (...args: unknown[]) => unknown) => (...args: unknown[]) => unknown,
  fn: () => void,
): void {
  const table = native() as unknown as SymbolTable;
  const originals = new Map<string, (...args: unknown[]) => unknown>();
  for (const name of Object.keys(symbols)) {
    const original = table[name];
    // Nonblocking symbols (data loading) are read-only properties; a training step makes no such call.
    if (typeof original !== "function" || !Object.getOwnPropertyDescriptor(table, name)?.writable) continue;
    originals.set(name, original);
    table[name] = wrap(name, original);
  }
  try {
    fn();
  } finally {
    for (const [name, original] of originals) table[name] = original;
  }
}

interface CallCounts {
  /** Every native call per step. */
  calls: number;
  /** dc_free calls per step: in a steady-state step, one per tensor handle the step created. */
  frees: number;
  /** The most frequent symbols. */
  top: [string, number][];
}

function countCalls(trainer: Trainer, steps: number): CallCounts {
  const counts = new Map<string, number>();
  withWrappedSymbols((name, original) => (...args: unknown[]) => {
    counts.set(name, (counts.get(name) ?? 0) + 1);
    return original(...args);
  }, () => {
    for (let i = 0; i < steps; i++) trainer.step(false);
  });
  const calls = [...counts.values()].reduce((a, b) => a + b, 0) / steps;
  const frees = (counts.get("dc_free") ?? 0) / steps;
  const top = [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, 8)
    .map(([name, n]): [string, number] => [name, n / steps]);
  return { calls, frees, top };
}

/**
 * Direct cross-check: each native call timed from inside a wrapper; outside = wall − inside − the wrapper's own
 * cost (calibrated on a symbol that does nothing in libtorch). It covers all TypeScript work of the step (model
 * code, scopes, wrappers), not only the per-call overhead.
 */
function directOutsideShare(trainer: Trainer, steps: number): number {
  const table = native() as unknown as SymbolTable;
  let inside = 0;
  let calls = 0;
  const timed = (_name: string, original: (...args: unknown[]) => unknown) => (...args: unknown[]) => {
    calls += 1;
    const start = performance.now();
    const result = original(...args);
    inside += performance.now() - start;
    return result;
  };
  const probe = (n: number): number => {
    const start = performance.now();
    for (let i = 0; i < n; i++) table.dc_is_grad_enabled();
    return performance.now() - start;
  };
  const n = 200_000;
  probe(n);
  const bare = probe(n);
  let wrapped = 0;
  withWrappedSymbols(timed, () => {
    probe(n);
    wrapped = probe(n);
  });
  const wrapperCostMs = (wrapped - bare) / n; // what one timing wrapper adds to a call
  const shares: number[] = [];
  withWrappedSymbols(timed, () => {
    for (let i = 0; i < steps; i++) {
      inside = 0;
      calls = 0;
      const start = performance.now();
      trainer.step(false);
      const wall = performance.now() - start - calls * wrapperCostMs;
      shares.push(Math.max(0, wall - inside) / wall);
    }
  });
  return median(shares);
}

/** The per-op wrapper overhead exactly as bench/ffi.ts measures it (a + b on 1-element tensors, freed by tidy). */
function wrapperOverhead(): { opNs: number; callNs: number } {
  const iterations = 100_000;
  const a = Tensor.fromArray([1]).keep();
  const b = Tensor.fromArray([2]).keep();
  const lib = native();
  const scoped = (n: number): number => {
    const start = performance.now();
    tidy(() => {
      for (let i = 0; i < n; i++) a.add(b);
    });
    return (performance.now() - start) / 1000;
  };
  const bareCall = (n: number): number => {
    const start = performance.now();
    for (let i = 0; i < n; i++) lib.dc_is_grad_enabled();
    return (performance.now() - start) / 1000;
  };
  scoped(20_000);
  lib.dc_bench_add_loop(a.handle, b.handle, 20_000n);
  bareCall(20_000);
  const scopedSeconds: number[] = [];
  const nativeSeconds: number[] = [];
  const callSeconds: number[] = [];
  for (let r = 0; r < 5; r++) {
    scopedSeconds.push(scoped(iterations));
    nativeSeconds.push(lib.dc_bench_add_loop(a.handle, b.handle, BigInt(iterations)));
    callSeconds.push(bareCall(iterations));
  }
  a.dispose();
  b.dispose();
  const opNs = (median(scopedSeconds) - median(nativeSeconds)) / iterations * 1e9;
  return { opNs, callNs: median(callSeconds) / iterations * 1e9 };
}

// ---- the PyTorch eager baseline, served --------------------------------------------------------------------------
// The baseline runs as one long-lived process (train_step_baseline.py --serve): it verifies itself against the
// golden files once, warms up, then times N steps of a variant whenever asked. Our rounds and its rounds alternate,
// so both sides see the same machine load (other processes come and go on a shared 2-core machine).
interface BaselineVerify {
  losses_max_rel: number;
  after_max_abs: number;
  masks_equal: boolean;
  problems: string[];
}

export class Baseline {
  readonly header: { verified?: boolean; verify?: Record<string, BaselineVerify>; openblas_threads?: string };
  readonly pid: number;
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: AsyncIterator<string>;

  private constructor(child: Deno.ChildProcess, lines: AsyncIterator<string>, header: Baseline["header"]) {
    this.#child = child;
    this.pid = child.pid;
    this.#writer = child.stdin.getWriter();
    this.#lines = lines;
    this.header = header;
  }

  /** Starts the baseline; throws with its reason when it cannot run or does not reproduce the golden step. */
  static async start(ref: string, threads: number, warmup: number): Promise<Baseline> {
    const script = new URL("./train_step_baseline.py", import.meta.url).pathname;
    const args = [script, "--ref", ref, "--threads", String(threads), "--warmup", String(warmup), "--serve"];
    const child = new Deno.Command("/usr/bin/python3", { args, stdin: "piped", stdout: "piped", stderr: "inherit" })
      .spawn();
    const lines = readLines(child.stdout);
    const first = await lines.next();
    if (first.done) throw new Error(`the PyTorch baseline exited (${(await child.status).code}) before verifying`);
    const header = JSON.parse(first.value);
    if (!header.verified) {
      await child.status;
      throw new Error("the PyTorch baseline does not reproduce the golden step (see its message above)");
    }
    const ready = await lines.next();
    if (ready.done) throw new Error("the PyTorch baseline exited during its warmup");
    return new Baseline(child, lines, header);
  }

  /** Times `steps` steps of a variant: "full" (official full student patch head) or "removed" (removed only). */
  async time(variant: "full" | "removed", steps: number): Promise<number[]> {
    return (await this.timePhases(variant, steps, false)).times;
  }

  /** As time(), plus each phase's time per step when `phases` (bench/train_step_phases.ts). */
  async timePhases(
    variant: "full" | "removed",
    steps: number,
    phases = true,
  ): Promise<{ times: number[]; phases: Record<string, number[]> }> {
    await this.#writer.write(new TextEncoder().encode(`${variant} ${steps}${phases ? " phases" : ""}\n`));
    const reply = await this.#lines.next();
    if (reply.done) throw new Error("the PyTorch baseline exited while timing");
    const parsed = JSON.parse(reply.value);
    return { times: parsed.ms_all as number[], phases: parsed.phases_ms_all as Record<string, number[]> };
  }

  async close(): Promise<void> {
    await this.#writer.write(new TextEncoder().encode("quit\n")).catch(() => {});
    await this.#writer.close().catch(() => {});
    await this.#child.status;
  }
}

/** The lines of a byte stream (a baseline subprocess's stdout). */
export async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of stream) {
    pending += decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = pending.indexOf("\n")) >= 0) {
      yield pending.slice(0, newline);
      pending = pending.slice(newline + 1);
    }
  }
  if (pending.length > 0) yield pending;
}

// ---- machine load -------------------------------------------------------------------------------------------------
/** CPU time of the whole machine (busy and total, in clock ticks) and of one process (its utime + stime). */
export interface CpuSample {
  busy: number;
  total: number;
  process: number;
}

export function cpuSample(pid: number): CpuSample {
  const fields = Deno.readTextFileSync("/proc/stat").split("\n")[0].trim().split(/\s+/).slice(1, 9).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  const idle = fields[3] + fields[4]; // idle + iowait
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const after = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // fields from 3 (state) on
  return { busy: total - idle, total, process: Number(after[11]) + Number(after[12]) };
}

/** Cores kept busy by other processes between two samples of process `pid` (the timed one). */
export function foreignCores(before: CpuSample, after: CpuSample, cores: number): number {
  const total = after.total - before.total;
  if (total <= 0) return 0;
  const foreign = after.busy - before.busy - (after.process - before.process);
  return Math.max(0, foreign) / total * cores;
}

// ---- main ---------------------------------------------------------------------------------------------------------
async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      ref: { type: "string" },
      steps: { type: "string" },
      threads: { type: "string" },
      warmup: { type: "string" },
      rounds: { type: "string" },
      "full-student-patch": { type: "boolean" },
      "no-baseline": { type: "boolean" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  if (!values.ref) {
    console.error(`bench:step: --ref DIR is required (a golden-style folder)\n${usage}`);
    return 2;
  }
  const ref = values.ref.replace(/\/$/, "");
  const steps = positiveInt("steps", values.steps, 20);
  const threads = positiveInt("threads", values.threads, 1);
  const warmup = positiveInt("warmup", values.warmup, 3, 0);
  const rounds = positiveInt("rounds", values.rounds, 1);
  const fullStudentPatch = values["full-student-patch"] ?? false;
  const meta = MetaSchema.parse(JSON.parse(Deno.readTextFileSync(`${ref}/meta.json`)));
  // OpenBLAS (behind Debian's libblas.so.3) sizes its own pool from the environment when libtorch is loaded, and
  // setNumThreads does not resize it (libtorch is built with BLAS=generic): pin it to --threads unless set.
  if (Deno.env.get("OPENBLAS_NUM_THREADS") === undefined) Deno.env.set("OPENBLAS_NUM_THREADS", String(threads));
  setNumThreads(threads);
  const cores = navigator.hardwareConcurrency;

  const trainer = buildTrainer(ref, meta, fullStudentPatch);
  let baseline: Baseline | null = null;
  const result: Record<string, unknown> = {
    ref,
    path: fullStudentPatch ? "full student patch head" : "production (student patch head at removed patches only)",
    threads,
    openblas_threads: Deno.env.get("OPENBLAS_NUM_THREADS"),
    steps,
    rounds,
    warmup,
  };
  try {
    // Step 0 (untimed) starts from the golden weights, so its loss must be the golden one.
    const first = trainer.step(true)!;
    const relative = Math.abs(first - meta.losses.loss) / Math.abs(meta.losses.loss);
    if (!(relative <= 1e-4)) {
      console.error(
        `bench:step: first-step loss ${first} differs from the golden ${meta.losses.loss} ` +
          `(relative ${relative.toExponential(2)} > 1e-4); not timing a different computation`,
      );
      return 1;
    }
    result.first_step_loss = first;
    result.golden_loss = meta.losses.loss;
    for (let i = 0; i < warmup; i++) trainer.step(false);
    if (!values["no-baseline"]) {
      try {
        baseline = await Baseline.start(ref, threads, warmup);
      } catch (e) {
        result.pytorch_error = e instanceof Error ? e.message : String(e);
      }
    }

    // Interleaved rounds: ours, then the two PyTorch variants, each N timed steps, with the foreign load measured.
    const ours: number[] = [];
    const full: number[] = [];
    const removed: number[] = [];
    const load = { ours: [] as number[], pytorch: [] as number[] };
    const liveBefore = liveTensors();
    const perRound = { ours: [] as number[], full: [] as number[], removed: [] as number[] }; // round medians
    for (let r = 0; r < rounds; r++) {
      const before = cpuSample(Deno.pid);
      const times: number[] = [];
      for (let i = 0; i < steps; i++) {
        const start = performance.now();
        trainer.step(false);
        times.push(performance.now() - start);
      }
      load.ours.push(foreignCores(before, cpuSample(Deno.pid), cores));
      ours.push(...times);
      perRound.ours.push(median(times));
      if (baseline !== null) {
        const pytorchBefore = cpuSample(baseline.pid);
        const fullTimes = await baseline.time("full", steps);
        const removedTimes = await baseline.time("removed", steps);
        load.pytorch.push(foreignCores(pytorchBefore, cpuSample(baseline.pid), cores));
        full.push(...fullTimes);
        removed.push(...removedTimes);
        perRound.full.push(median(fullTimes));
        perRound.removed.push(median(removedTimes));
      }
    }
    const leaked = liveTensors() - liveBefore;
    await baseline?.close();
    baseline = null;
    const oursMs = median(ours);

    const counts = countCalls(trainer, 2);
    const overhead = wrapperOverhead();
    // Every native call charged ffi.ts's per-op wrapper overhead (calls × overhead / step time). An op there is a
    // tensor's whole life (its creating call, the Tensor object, scope registration and its dc_free), so this counts
    // each dc_free twice: an upper estimate. The per-tensor form charges an op per tensor and a bare FFI call for
    // every other call (metadata, in-place ops returning a status, grad-mode switches).
    const outsideNs = counts.calls * overhead.opNs;
    const perTensorNs = counts.frees * overhead.opNs +
      Math.max(0, counts.calls - 2 * counts.frees) * overhead.callNs;
    const directShare = directOutsideShare(trainer, Math.min(steps, 5));

    Object.assign(result, {
      ms_per_step: oursMs,
      ms_min: Math.min(...ours),
      leaked_tensors: leaked,
      native_calls_per_step: counts.calls,
      tensors_per_step: counts.frees,
      top_native_calls: Object.fromEntries(counts.top),
      wrapper_overhead_ns: { per_tensor_op: overhead.opNs, per_bare_call: overhead.callNs },
      outside_libtorch_ms: outsideNs / 1e6,
      outside_libtorch_share: outsideNs / 1e6 / oursMs,
      outside_libtorch_share_per_tensor: perTensorNs / 1e6 / oursMs,
      // All TypeScript time of a step (model code and scopes too), from timing the inside of every native call.
      outside_libtorch_share_direct: directShare,
    });
    if (full.length > 0) {
      Object.assign(result, {
        pytorch_ms_per_step: median(full),
        pytorch_removed_only_ms_per_step: median(removed),
        pytorch_threads: threads,
        pytorch_steps: steps * rounds,
        ratio: median(full) / oursMs,
        ratio_same_work: median(removed) / oursMs,
        // The same ratios from each round's pair of medians (neighbours in time), then the median over rounds:
        // less sensitive to load that changes between rounds.
        ratio_paired: median(perRound.full.map((t, r) => t / perRound.ours[r])),
        ratio_same_work_paired: median(perRound.removed.map((t, r) => t / perRound.ours[r])),
        round_medians_ms: perRound,
      });
    }
    // Cores busy with other processes while each side was timed (median over rounds; 0 = a quiet machine).
    result.foreign_load_cores = {
      ours: median(load.ours),
      pytorch: load.pytorch.length > 0 ? median(load.pytorch) : null,
      cores,
    };
  } finally {
    await baseline?.close();
    trainer.dispose();
  }

  if (values.json) {
    console.log(JSON.stringify(result));
    return 0;
  }
  const f = (v: unknown): string => typeof v === "number" ? v.toFixed(1) : String(v);
  console.log(`training step on ${ref} (${result.path}), ${threads} thread(s), median of ${steps * rounds}:`);
  console.log(`  detailclip:            ${f(result.ms_per_step)} ms/step`);
  if (result.pytorch_error) {
    console.log(`  PyTorch eager: unavailable: ${result.pytorch_error}`);
  } else if (result.pytorch_ms_per_step !== undefined) {
    console.log(
      `  PyTorch eager (official, full patch head): ${f(result.pytorch_ms_per_step)} ms/step; ` +
        `ratio ${(result.ratio as number).toFixed(2)}x`,
    );
    console.log(
      `  PyTorch eager (patch head at removed only): ${f(result.pytorch_removed_only_ms_per_step)} ` +
        `ms/step; ratio ${(result.ratio_same_work as number).toFixed(2)}x`,
    );
  }
  console.log(`  native calls per step: ${result.native_calls_per_step} (${result.tensors_per_step} tensors)`);
  console.log(
    `  outside libtorch: ${(100 * (result.outside_libtorch_share as number)).toFixed(2)}% ` +
      `(per tensor: ${(100 * (result.outside_libtorch_share_per_tensor as number)).toFixed(2)}%, ` +
      `direct: ${(100 * (result.outside_libtorch_share_direct as number)).toFixed(2)}%)`,
  );
  const load = result.foreign_load_cores as { ours: number; pytorch: number | null };
  console.log(`  other processes kept ${f(load.ours)} / ${f(load.pytorch)} cores busy (ours / PyTorch)`);
  return 0;
}

if (import.meta.main) Deno.exit(await main());
