// bench/openclip_step.ts: the wall time of one plain CLIP training step (CLIP_VITB16) beside the same step in
// OpenCLIP (bench/openclip_step_baseline.py: open_clip.create_model("ViT-B-16"), open_clip.loss.ClipLoss, AdamW with
// open_clip_train's param groups), both on the same libtorch 1.13, CPU, fp32, in the same invocation.
// Our step is the one `deno task train` runs for a CLIP model (src/train/loop.ts): forward, the CLIP loss, backward,
// AdamW (official groups), logit-scale clamp, zero_grad. Both sides train on the same deterministic inputs.
// The baseline is one long-lived process; R rounds of N timed steps alternate between ours and OpenCLIP's, so both
// see the same load from other processes (reported as foreign_load_cores). ratio = OpenCLIP ms / ours ms.
// The two models have the same widths, depths, heads, context and vocabulary but are not the same network (see
// README, "CLIP step against OpenCLIP"): ours is DetailCLIP's student (timm ViT with a frozen patch conv, QuickGELU
// text tower), OpenCLIP's is its own ViT-B-16 (trained bias-free patch conv, ln_pre, GELU in both towers).
// Usage: deno task bench:openclip [--batch B] [--steps N] [--threads T] [--warmup W] [--rounds R]
//        [--no-baseline] [--json]
import { parseArgs } from "node:util";
import { clipLoss } from "../src/losses/clip.ts";
import { CLIP } from "../src/models/clip.ts";
import { type ClipConfig, modelPreset } from "../src/models/configs.ts";
import { liveTensors, manualSeed, setNumThreads, Tensor, tidy } from "../src/torch/internal.ts";
import { AdamW, officialParamGroups } from "../src/train/optimizer.ts";
import { cpuSample, foreignCores, median, readLines } from "./train_step.ts";

const usage = "usage: deno task bench:openclip [--batch B] [--steps N] [--threads T] [--warmup W] [--rounds R] " +
  "[--no-baseline] [--json]";
const OPENCLIP_MODEL = "ViT-B-16";
const PRESET = "CLIP_VITB16";
const LR = 5e-4;
const WD = 0.5;
const INSTALL = "pip install -q --no-deps --target .tools/openclip open_clip_torch==3.3.0 ftfy==6.3.1 tqdm wcwidth " +
  "huggingface_hub";

function positiveInt(name: string, text: string | undefined, fallback: number, min = 1): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min) {
    console.error(`bench:openclip: --${name} must be an integer >= ${min}, got '${text}'\n${usage}`);
    Deno.exit(2);
  }
  return value;
}

/** The deterministic inputs openclip_step_baseline.py builds too: a linspace image batch and cycling token ids. */
function inputs(config: ClipConfig, batch: number): { images: Tensor; text: Tensor } {
  const side = config.vision.imageSize;
  const { context, vocab } = config.text;
  const images = Tensor.linspace(-2, 2, batch * 3 * side * side).reshape([batch, 3, side, side]);
  const text = Tensor.arange(0, batch * context).mul(7919).add(13).remainder(vocab).reshape([batch, context]);
  return { images: images.keep(), text: text.keep() };
}

interface ClipTrainer {
  step(readLoss: boolean): number | null;
  model: CLIP;
  dispose(): void;
}

function buildTrainer(config: ClipConfig, batch: number): ClipTrainer {
  manualSeed(0);
  const model = new CLIP(config);
  const { images, text } = inputs(config, batch);
  const optimizer = new AdamW(officialParamGroups(model.namedParameters(), WD), { betas: [0.9, 0.98], eps: 1e-8 });
  return {
    model,
    // As src/train/loop.ts runs a CLIP step (one view: the loss is given the same image embedding for u and v).
    step(readLoss: boolean): number | null {
      return tidy(() => {
        const { imageEmbed, textEmbed, logitScale } = model.forward(images, text);
        const { loss } = clipLoss({ imageU: imageEmbed, imageV: imageEmbed, text: textEmbed, logitScale });
        const value = readLoss ? loss.item() : null;
        loss.backward();
        optimizer.step(LR);
        model.clampLogitScale();
        optimizer.zeroGrad();
        return value;
      });
    },
    dispose(): void {
      images.dispose();
      text.dispose();
      optimizer.dispose();
      model.dispose();
    },
  };
}

// ---- OpenCLIP, served ---------------------------------------------------------------------------------------------
interface BaselineHeader {
  torch?: string;
  open_clip?: string;
  params?: number;
  trainable_params?: number;
  first_step_loss?: number;
  openblas_threads?: string;
  error?: string;
}

class OpenClipBaseline {
  readonly header: BaselineHeader;
  readonly pid: number;
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: AsyncIterator<string>;

  private constructor(child: Deno.ChildProcess, lines: AsyncIterator<string>, header: BaselineHeader) {
    this.#child = child;
    this.pid = child.pid;
    this.#writer = child.stdin.getWriter();
    this.#lines = lines;
    this.header = header;
  }

  static async start(batch: number, threads: number, warmup: number): Promise<OpenClipBaseline> {
    const script = new URL("./openclip_step_baseline.py", import.meta.url).pathname;
    const args = [
      script,
      ...["--model", OPENCLIP_MODEL, "--batch", String(batch), "--threads", String(threads)],
      ...["--warmup", String(warmup), "--lr", String(LR), "--wd", String(WD), "--serve"],
    ];
    const child = new Deno.Command("/usr/bin/python3", { args, stdin: "piped", stdout: "piped", stderr: "inherit" })
      .spawn();
    const lines = readLines(child.stdout);
    const first = await lines.next();
    if (first.done) throw new Error(`the OpenCLIP baseline exited (${(await child.status).code}) before starting`);
    const header = JSON.parse(first.value) as BaselineHeader;
    if (header.error) {
      await child.status;
      throw new Error(header.error);
    }
    const ready = await lines.next();
    if (ready.done) throw new Error("the OpenCLIP baseline exited during its warmup");
    return new OpenClipBaseline(child, lines, header);
  }

  async time(steps: number): Promise<number[]> {
    await this.#writer.write(new TextEncoder().encode(`${steps}\n`));
    const reply = await this.#lines.next();
    if (reply.done) throw new Error("the OpenCLIP baseline exited while timing");
    return JSON.parse(reply.value).ms_all as number[];
  }

  async close(): Promise<void> {
    await this.#writer.write(new TextEncoder().encode("quit\n")).catch(() => {});
    await this.#writer.close().catch(() => {});
    await this.#child.status;
  }
}

// ---- main ---------------------------------------------------------------------------------------------------------
async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      batch: { type: "string" },
      steps: { type: "string" },
      threads: { type: "string" },
      warmup: { type: "string" },
      rounds: { type: "string" },
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
  const batch = positiveInt("batch", values.batch, 4);
  const steps = positiveInt("steps", values.steps, 3);
  const threads = positiveInt("threads", values.threads, 1);
  const warmup = positiveInt("warmup", values.warmup, 2, 0);
  const rounds = positiveInt("rounds", values.rounds, 3);
  // OpenBLAS sizes its pool from the environment when libtorch loads; pin it to --threads unless set.
  if (Deno.env.get("OPENBLAS_NUM_THREADS") === undefined) Deno.env.set("OPENBLAS_NUM_THREADS", String(threads));
  setNumThreads(threads);
  const cores = navigator.hardwareConcurrency;
  const config = modelPreset(PRESET) as ClipConfig;

  const trainer = buildTrainer(config, batch);
  let baseline: OpenClipBaseline | null = null;
  const result: Record<string, unknown> = {
    model: PRESET,
    openclip_model: OPENCLIP_MODEL,
    batch,
    threads,
    openblas_threads: Deno.env.get("OPENBLAS_NUM_THREADS"),
    steps,
    rounds,
    warmup,
    params: trainer.model.numParameters(),
    trainable_params: trainer.model.numParameters({ trainableOnly: true }),
  };
  try {
    result.first_step_loss = trainer.step(true);
    for (let i = 0; i < warmup; i++) trainer.step(false);
    if (!values["no-baseline"]) {
      try {
        baseline = await OpenClipBaseline.start(batch, threads, warmup);
        const h = baseline.header;
        Object.assign(result, {
          openclip_version: h.open_clip,
          torch: h.torch,
          openclip_params: h.params,
          openclip_trainable_params: h.trainable_params,
          openclip_first_step_loss: h.first_step_loss,
          openclip_openblas_threads: h.openblas_threads,
        });
      } catch (e) {
        result.openclip_error = e instanceof Error ? e.message : String(e);
      }
    }

    const ours: number[] = [];
    const theirs: number[] = [];
    const load = { ours: [] as number[], openclip: [] as number[] };
    const perRound = { ours: [] as number[], openclip: [] as number[] };
    const liveBefore = liveTensors();
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
        const pyBefore = cpuSample(baseline.pid);
        const pyTimes = await baseline.time(steps);
        load.openclip.push(foreignCores(pyBefore, cpuSample(baseline.pid), cores));
        theirs.push(...pyTimes);
        perRound.openclip.push(median(pyTimes));
      }
    }
    result.leaked_tensors = liveTensors() - liveBefore;
    result.ms_per_step = median(ours);
    result.ms_min = Math.min(...ours);
    if (theirs.length > 0) {
      Object.assign(result, {
        openclip_ms_per_step: median(theirs),
        openclip_ms_min: Math.min(...theirs),
        ratio: median(theirs) / median(ours),
        ratio_paired: median(perRound.openclip.map((t, r) => t / perRound.ours[r])),
        round_medians_ms: perRound,
      });
    }
    result.foreign_load_cores = {
      ours: median(load.ours),
      openclip: load.openclip.length > 0 ? median(load.openclip) : null,
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
  const m = (v: unknown): string => typeof v === "number" ? `${(v / 1e6).toFixed(2)}M` : String(v);
  console.log(
    `CLIP training step, ${PRESET} vs OpenCLIP ${OPENCLIP_MODEL}, batch ${batch}, fp32 CPU, ${threads} thread(s), ` +
      `median of ${steps * rounds} (${rounds} rounds x ${steps}):`,
  );
  console.log(
    `  detailclip: ${f(result.ms_per_step)} ms/step; params ${m(result.params)} ` +
      `(${m(result.trainable_params)} trainable); first loss ${f(result.first_step_loss)}`,
  );
  if (result.openclip_error) {
    console.log(`  OpenCLIP: unavailable: ${result.openclip_error}\n  (install: ${INSTALL})`);
  } else if (result.openclip_ms_per_step !== undefined) {
    console.log(
      `  OpenCLIP ${result.openclip_version}: ${f(result.openclip_ms_per_step)} ms/step; params ` +
        `${m(result.openclip_params)} (${m(result.openclip_trainable_params)} trainable); ` +
        `first loss ${f(result.openclip_first_step_loss)}`,
    );
    console.log(
      `  ratio (OpenCLIP / ours): ${(result.ratio as number).toFixed(2)}x ` +
        `(paired by round: ${(result.ratio_paired as number).toFixed(2)}x)`,
    );
  }
  const load = result.foreign_load_cores as { ours: number; openclip: number | null };
  console.log(`  other processes kept ${f(load.ours)} / ${f(load.openclip)} cores busy (ours / OpenCLIP)`);
  return 0;
}

if (import.meta.main) Deno.exit(await main());
