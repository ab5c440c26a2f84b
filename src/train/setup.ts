// setup.ts: everything a training run decides before its first step, in the order the loop relies on: device and
// precision, the seed, the output folder (held by rank 0, its verdict shared), the data source, the model with its
// optimizer, the validation sets, the schedule. Every rank runs it; `TrainRun` is what the step loop reads.
import { IBOTLoss } from "../losses/mod.ts";
import { type AnyModel, buildModel } from "../models/build.ts";
import { type ModelConfig, modelPreset, parseModelConfig } from "../models/configs.ts";
import type { TrainSource } from "../data/sources.ts";
import { autocast, cudaDeviceCount, cudaIsAvailable, type Device, manualSeed, setNumThreads } from "../torch/mod.ts";
import type { ProcessGroup } from "../torch/dist.ts";
import { ActivationCheckpoints } from "../nn/checkpoint.ts";
import { autocastUnsupported, GradScaler, type Precision } from "./amp.ts";
import { acquireRunLock, type RunLock } from "./run_lock.ts";
import { claimOutputDir } from "./run_folder.ts";
import { AdamW, officialParamGroups } from "./optimizer.ts";
import { OptionError, type TrainOptions } from "./options.ts";
import { initFromPretrained } from "./pretrained.ts";
import { TrainValidation } from "./validation.ts";
import type { CosineSchedule } from "./schedules.ts";
import { trainSourceFromOptions } from "./sources_from_options.ts";

/** What a run holds beyond its own return: the output-folder lock and closers, released by train() whatever happens. */
export interface Held {
  lock?: RunLock;
  closers: (() => void)[];
}

/** The run's length in optimizer steps and its learning-rate schedule (all functions of the step). */
export interface TrainSchedule {
  stepsPerEpoch: number;
  totalSteps: number;
  /** totalSteps, or --max-steps when smaller. */
  lastStep: number;
  lr: CosineSchedule;
}

/** Everything set up before the first step, read by the step loop and its helpers. */
export interface TrainRun {
  options: TrainOptions;
  pg: ProcessGroup;
  rank: number;
  world: number;
  log: (line: string) => void;
  device: Device;
  precision: Precision;
  /** Runs `fn` under autocast in the run's precision (directly in fp32). */
  inPrecision: <T>(fn: () => T) => T;
  source: TrainSource;
  config: ModelConfig;
  model: AnyModel;
  /** The iBOT loss and its centers (DetailCLIP only). */
  ibot: IBOTLoss | null;
  optimizer: AdamW;
  /** fp16 only. */
  scaler: GradScaler | null;
  validation: TrainValidation;
  /** --grad-checkpointing: block activations are recomputed in backward, in the forward's precision. */
  checkpoints: ActivationCheckpoints | null;
  schedule: TrainSchedule;
}

/** Sets up this rank's run: device, seed, output folder, data, model, optimizer, validation, schedule. */
export async function setUpRun(
  options: TrainOptions,
  pg: ProcessGroup,
  log: (line: string) => void,
  held: Held,
): Promise<TrainRun> {
  const { rank, world } = pg;
  if (options.threads) setNumThreads(options.threads);
  const { device, precision } = deviceAndPrecision(options, pg);
  manualSeed(options.seed + rank);
  await claimOutputFolder(options, pg, log, held);

  const preset = modelPreset(options.model);
  const views = preset.kind === "detailclip" ? 2 : 1;
  const source = trainSourceFromOptions(options, preset, views, { rank, world });
  const config = modelConfigFor(preset, options, source);
  const model = buildModel(config);
  if (options.pretrained !== undefined) log(initFromPretrained(model, options.pretrained));
  model.to(device);
  model.train();
  const ibot = config.kind === "detailclip"
    ? new IBOTLoss({ outDim: config.ibot.outDim, patchOutDim: config.ibot.patchOutDim })
    : null;
  ibot?.to(device);
  const optimizer = new AdamW(officialParamGroups(model.namedParameters(), options.wd), {
    betas: options.betas,
    eps: options.eps,
  });
  const scaler = precision === "fp16" ? new GradScaler() : null;
  // Zero-shot and held-out-pair validation while training (--zeroshot-data, --val-data): options checked on every
  // rank, datasets opened on rank 0, which alone evaluates.
  const validation = new TrainValidation(options, config.vision.imageSize, rank);
  held.closers.push(() => validation.close());
  const inPrecision = <T>(fn: () => T): T =>
    precision === "fp32"
      ? fn()
      : autocast(device === "cpu" ? "cpu" : "cuda", precision === "bf16" ? "bfloat16" : "float16", fn);
  const checkpoints = options.gradCheckpointing ? new ActivationCheckpoints(inPrecision) : null;
  const schedule = trainSchedule(options, source.epochSize, world);

  const run: TrainRun = {
    options,
    pg,
    rank,
    world,
    log,
    device,
    precision,
    inPrecision,
    source,
    config,
    model,
    ibot,
    optimizer,
    scaler,
    validation,
    checkpoints,
    schedule,
  };
  log(describeRun(run));
  return run;
}

/** The device of this rank (cuda:<local rank> under a launcher) and the precision, both checked before any model. */
function deviceAndPrecision(options: TrainOptions, pg: ProcessGroup): { device: Device; precision: Precision } {
  const device = (pg.world > 1 && options.device === "cuda" ? `cuda:${pg.localRank}` : options.device) as Device;
  if (device !== "cpu") checkCudaDevice(device);
  const precision: Precision = options.disableAmp ? "fp32" : options.precision ?? (device === "cpu" ? "fp32" : "bf16");
  const noAutocast = autocastUnsupported(device, precision);
  if (noAutocast !== null) throw new OptionError(`--precision ${precision} on ${device}: ${noAutocast}`);
  return { device, precision };
}

/**
 * Rank 0 holds the folder for the whole run and checks it holds no other run's files; its verdict reaches every
 * rank (whatever went wrong, so no rank waits for a rank 0 that has stopped), and a refusal stops them all.
 */
async function claimOutputFolder(
  options: TrainOptions,
  pg: ProcessGroup,
  log: (line: string) => void,
  held: Held,
): Promise<void> {
  await Deno.mkdir(options.outputDir, { recursive: true });
  let failure: unknown = null;
  let refusal: string | null = null;
  if (pg.rank === 0) {
    try {
      held.lock = acquireRunLock(options.outputDir, log);
      claimOutputDir(options, log);
    } catch (error) {
      failure = error;
      refusal = (error as Error).message;
    }
  }
  refusal = JSON.parse(pg.broadcastText(JSON.stringify(refusal))) as string | null;
  if (failure !== null) throw failure;
  if (refusal !== null) throw new OptionError(refusal);
}

/** The preset with the options' overrides; the text vocabulary is the tokenizer's. */
function modelConfigFor(preset: ModelConfig, options: TrainOptions, source: TrainSource): ModelConfig {
  const text = { ...preset.text, vocab: source.tokenizer.vocabSize };
  const raw = preset.kind === "detailclip"
    ? { ...preset, text, maskRatio: options.maskRatio ?? preset.maskRatio }
    : { ...preset, text };
  return parseModelConfig(raw, `--model ${options.model}`);
}

/** Optimizer steps per epoch (over every rank and micro-batch), the run's last step, and the warmup-cosine lr. */
function trainSchedule(options: TrainOptions, epochSize: number, world: number): TrainSchedule {
  const stepsPerEpoch = Math.floor(epochSize / (options.batchSize * world * options.updateFreq));
  if (stepsPerEpoch < 1) {
    throw new OptionError(
      `--batch-size ${options.batchSize} × --update-freq ${options.updateFreq} exceeds the epoch (${epochSize})`,
    );
  }
  const totalSteps = options.epochs * stepsPerEpoch;
  const lastStep = Math.min(totalSteps, options.maxSteps ?? Infinity);
  const lr = {
    base: options.lr,
    final: options.lrEnd,
    totalSteps,
    warmupSteps: Math.round(options.warmupEpochs * stepsPerEpoch),
    warmupStart: options.lrStart,
  };
  return { stepsPerEpoch, totalSteps, lastStep, lr };
}

/** The run's first log line: model, data, device, precision, size, ranks and length. */
function describeRun(run: TrainRun): string {
  const { config, source, device, precision, model, world, pg, options } = run;
  const { stepsPerEpoch, totalSteps, lastStep } = run.schedule;
  return `detailclip train: ${config.name} (${config.kind}) on ${source.name}, ${device}, ${precision}; ` +
    `${model.numParameters({ trainableOnly: true }).toLocaleString("en")} trainable parameters; ` +
    `${world > 1 ? `${world} ranks (${pg.backend}) × ` : ""}${stepsPerEpoch} steps/epoch × ${options.epochs} epochs${
      lastStep < totalSteps ? `, stopping at ${lastStep}` : ""
    }`;
}

/**
 * A CUDA device that cannot be used is an option error (one line, exit status 2), found before any model is built:
 * a CPU-only libtorch, no GPU or no driver (a CUDA libtorch runs on the CPU without them), or an index past the last.
 */
function checkCudaDevice(device: Device): void {
  if (!cudaIsAvailable()) {
    throw new OptionError(
      `--device ${device}: no CUDA device is usable here (a CPU-only libtorch, no GPU, or no NVIDIA driver); ` +
        "use --device cpu",
    );
  }
  const index = device === "cuda" ? 0 : Number(device.slice("cuda:".length));
  const count = cudaDeviceCount();
  if (index >= count) {
    throw new OptionError(
      `--device ${device}: there ${count === 1 ? "is 1 CUDA device" : `are ${count} CUDA devices`}`,
    );
  }
}

/** Every rank starts from rank 0's weights and centers (after a resume, also its optimizer moments). */
export function startFromRankZero(run: TrainRun, step: number): void {
  if (run.world <= 1) return;
  const { model, ibot, optimizer, pg } = run;
  const state = [...model.stateDict().values(), ...(ibot?.stateDict().values() ?? [])];
  pg.broadcast_(step > 0 ? [...state, ...optimizer.stateTensors().values()] : state, 0);
}
