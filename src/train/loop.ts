// loop.ts: the training loop (docs/training.md#per-iteration-order, with docs/parity.md's deviations), readable top to
// bottom like nanoGPT's train.py: set-up, resume, evaluation before, the steps, evaluation after, summary. Every
// schedule is a function of the optimizer step; every batch is a function of (seed, epoch, index); so a killed run
// resumed from its last checkpoint ends bit for bit where an uninterrupted one does. Loss values stay on the device
// between log intervals: one host read per interval checks them for NaN/inf and feeds the exact averages.
import { detailClipLoss, type DetailClipLossResult, IBOTLoss } from "../losses/mod.ts";
import { clipLoss } from "../losses/clip.ts";
import { type AnyModel, buildModel } from "../models/build.ts";
import { CLIP } from "../models/clip.ts";
import { type ModelConfig, modelPreset, parseModelConfig } from "../models/configs.ts";
import { DetailCLIP } from "../models/detailclip.ts";
import { syntheticTrainSource, type TrainSource } from "../data/sources.ts";
import { cocoTrainSource } from "../data/coco.ts";
import { csvTrainSource } from "../data/csv.ts";
import { webDatasetTrainSource } from "../data/webdataset.ts";
import { streamingWebDatasetSource } from "../data/webdataset_stream.ts";
import { yfccTrainSource } from "../data/yfcc.ts";
import { redcapsTrainSource } from "../data/redcaps.ts";
import { ClipTokenizer } from "../data/tokenizer.ts";
import { DataError } from "../data/data_error.ts";
import {
  autocast,
  cudaDeviceCount,
  cudaIsAvailable,
  type Device,
  manualSeed,
  noGrad,
  setNumThreads,
  stack,
  type Tensor,
  tidy,
} from "../torch/mod.ts";
import { ProcessGroup } from "../torch/dist.ts";
import { ActivationCheckpoints, withCheckpoints } from "../nn/checkpoint.ts";
import { autocastUnsupported, GradScaler, type Precision } from "./amp.ts";
import {
  checkpointPath,
  findResumeCheckpoint,
  listCheckpoints,
  loadCheckpoint,
  saveCheckpoint,
} from "../checkpoint/checkpoint.ts";
import { describeNonFinite, nonFiniteTensors } from "../checkpoint/finite.ts";
import { acquireRunLock, type RunLock } from "./run_lock.ts";
import { claimOutputDir } from "./run_folder.ts";
import { stopIfLauncherGone } from "./launcher_link.ts";
import { captureRngStates, restoreRngStates, RNG_CPU_KEY, RNG_CUDA_KEY } from "./rng_state.ts";
import {
  isTorchCheckpoint,
  OfficialCheckpointError,
  openOfficialCheckpoint,
} from "../checkpoint/official_checkpoint.ts";
import { describeOfficialResume, type OfficialResume, restoreOfficialTraining } from "./official_resume.ts";
import { PtFileError } from "../torch/pt_file.ts";
import { evaluateSynthetic, type SyntheticEval } from "./evaluate.ts";
import { JsonlWriter, ProgressBar } from "./logging.ts";
import { MetricMeter } from "./metrics.ts";
import { AdamW, officialParamGroups } from "./optimizer.ts";
import { flagOf, OptionError, type TrainOptions } from "./options.ts";
import { initFromPretrained } from "./pretrained.ts";
import { describeValidation, TrainValidation } from "./validation.ts";
import { TENSORBOARD_DIR, TensorBoardWriter } from "./tensorboard.ts";
import { lossCurveSvg } from "../viz/loss_curve.ts";
import { cosineValue, emaMomentum } from "./schedules.ts";
import { writeFileAtomic } from "../fs/atomic_write.ts";
import { gatherDataState, restoreDataState } from "./data_state.ts";

/** The newest finite checkpoint of this run, as the NaN stops name it. */
export interface LatestCheckpoint {
  path: string;
  step: number;
  /** Written by this run (not the one it resumed from). */
  written: boolean;
}

/** The suffix a checkpoint is renamed with when its parameters gave a non-finite loss: --resume auto passes it by. */
export const NONFINITE_LOSS_SUFFIX = ".nonfinite-loss";

function describeLatest(latest: LatestCheckpoint | null): string {
  return latest === null
    ? "no checkpoint was written"
    : `the latest checkpoint is ${latest.path} (step ${latest.step}, finite)`;
}

/** A non-finite loss: names the first optimizer step whose loss was non-finite, the term, and the latest checkpoint. */
export class NonFiniteLossError extends Error {
  constructor(
    readonly step: number,
    readonly term: string,
    readonly value: number,
    readonly latest: LatestCheckpoint | null = null,
    readonly setAside: string | null = null,
  ) {
    const aside = setAside === null
      ? ""
      : `; the checkpoint of step ${step}, whose parameters gave it, is now ${setAside}`;
    super(`non-finite loss at step ${step}: ${term} = ${value}; stopping${aside}; ${describeLatest(latest)}`);
    this.name = "NonFiniteLossError";
  }
}

/**
 * Parameters or optimizer state that went non-finite although every loss so far was finite (an update overflowed,
 * e.g. `--lr 1e308`): found by the check before a save, which then writes nothing.
 */
export class NonFiniteStateError extends Error {
  constructor(
    readonly step: number,
    readonly tensors: string[],
    total: number,
    readonly latest: LatestCheckpoint | null,
  ) {
    super(
      `non-finite parameters or optimizer state after step ${step}: ${describeNonFinite(tensors, total)}, while ` +
        `the losses before it were finite (an update overflowed: is the learning rate too large?); ` +
        `not saved; stopping; ${describeLatest(latest)}`,
    );
    this.name = "NonFiniteStateError";
  }
}

/** What a training run did: model, data set, steps, time, first and last loss, zero-shot and retrieval before/after. */
export interface TrainSummary {
  model: string;
  dataset: string;
  steps: number;
  seconds: number;
  loss_first: number;
  loss_last: number;
  zeroshot_top1_before: number | null;
  zeroshot_top1_after: number | null;
  zeroshot_chance: number | null;
  /** Colour is the headline zero-shot task of the synthetic run; shape is reported beside it. */
  zeroshot_task: string | null;
  zeroshot_shape_top1_before: number | null;
  zeroshot_shape_top1_after: number | null;
  zeroshot_shape_chance: number | null;
  retrieval_r1_before: number | null;
  retrieval_r1_after: number | null;
  output_dir: string;
}

/** What one logged step recorded: the optimizer step and each loss term's value. */
interface StepRecord {
  step: number;
  values: Record<string, number>;
}

/**
 * Set by tests to check the NaN paths: DETAILCLIP_INJECT_NAN=<step>:<term> poisons that loss term at that step;
 * <step>:parameters poisons the first trainable parameter right after that step's update (a loss still finite).
 */
function injectedNaN(): { step: number; term: string } | null {
  const spec = Deno.env.get("DETAILCLIP_INJECT_NAN");
  if (!spec) return null;
  const [step, term] = spec.split(":");
  return { step: Number(step), term: term ?? "loss" };
}

/** Trains a model as `deno task train` does (one process, or one rank under a launcher) and returns a summary. */
export async function train(options: TrainOptions, log: (line: string) => void = console.log): Promise<TrainSummary> {
  // One process unless started by `deno task launch`, torchrun or srun: then every rank runs this same function and
  // only rank 0 prints, evaluates and writes (src/torch/dist.ts reads the launcher's variables).
  const pg = ProcessGroup.fromEnv({
    url: options.distUrl,
    timeoutMs: options.distTimeout * 1000,
    backend: options.distBackend,
    device: options.device,
  });
  const held: { lock?: RunLock; closers: (() => void)[] } = { closers: [] };
  try {
    if (pg.distributed) pg.checkConfig(options, flagOf);
    const summary = await trainRank(options, pg, pg.rank === 0 ? log : () => {}, held);
    pg.barrier(); // no rank leaves (taking its sockets with it) before every rank has finished
    return summary;
  } finally {
    for (const close of held.closers) close();
    held.lock?.release();
    pg.destroy();
  }
}

async function trainRank(
  options: TrainOptions,
  pg: ProcessGroup,
  log: (line: string) => void,
  held: { lock?: RunLock; closers: (() => void)[] },
): Promise<TrainSummary> {
  const started = performance.now();
  const { rank, world } = pg;

  // ---- set-up ----------------------------------------------------------------------------------------------------
  if (options.threads) setNumThreads(options.threads);
  const device = (world > 1 && options.device === "cuda" ? `cuda:${pg.localRank}` : options.device) as Device;
  if (device !== "cpu") checkCudaDevice(device);
  const precision: Precision = options.disableAmp ? "fp32" : options.precision ?? (device === "cpu" ? "fp32" : "bf16");
  const noAutocast = autocastUnsupported(device, precision);
  if (noAutocast !== null) throw new OptionError(`--precision ${precision} on ${device}: ${noAutocast}`);
  manualSeed(options.seed + rank);
  await Deno.mkdir(options.outputDir, { recursive: true });
  // Rank 0 holds the folder for the whole run and checks it holds no other run's files; its verdict reaches every
  // rank (whatever went wrong, so no rank waits for a rank 0 that has stopped), and a refusal stops them all.
  let failure: unknown = null;
  let refusal: string | null = null;
  if (rank === 0) {
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

  const preset = modelPreset(options.model);
  const views = preset.kind === "detailclip" ? 2 : 1;
  const source = trainSourceFor(options, preset, views, { rank, world });
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
  // --grad-checkpointing: block activations are recomputed in backward, in the forward's precision.
  const checkpoints = options.gradCheckpointing ? new ActivationCheckpoints(inPrecision) : null;

  const stepsPerEpoch = Math.floor(source.epochSize / (options.batchSize * world * options.updateFreq));
  if (stepsPerEpoch < 1) {
    throw new OptionError(
      `--batch-size ${options.batchSize} × --update-freq ${options.updateFreq} exceeds the epoch (${source.epochSize})`,
    );
  }
  const totalSteps = options.epochs * stepsPerEpoch;
  const lastStep = Math.min(totalSteps, options.maxSteps ?? Infinity);
  const lrSchedule = {
    base: options.lr,
    final: options.lrEnd,
    totalSteps,
    warmupSteps: Math.round(options.warmupEpochs * stepsPerEpoch),
    warmupStart: options.lrStart,
  };
  log(
    `detailclip train: ${config.name} (${config.kind}) on ${source.name}, ${device}, ${precision}; ` +
      `${model.numParameters({ trainableOnly: true }).toLocaleString("en")} trainable parameters; ` +
      `${world > 1 ? `${world} ranks (${pg.backend}) × ` : ""}${stepsPerEpoch} steps/epoch × ${options.epochs} epochs${
        lastStep < totalSteps ? `, stopping at ${lastStep}` : ""
      }`,
  );

  // ---- resume ------------------------------------------------------------------------------------------------------
  let step = 0;
  let latest: LatestCheckpoint | null = null; // this run's newest finite checkpoint, named by the NaN stops
  let history: StepRecord[] = [];
  let evalBefore: SyntheticEval | null = null;
  if (options.resume) {
    const found = options.resume === "auto" && rank === 0 ? findResumeCheckpoint(options.outputDir) : null;
    for (const skipped of found?.skipped ?? []) log(`resume: skipping ${skipped.path}: ${skipped.reason}`);
    const chosen = options.resume === "auto" ? found?.path ?? null : options.resume;
    const path = JSON.parse(pg.broadcastText(JSON.stringify(chosen))) as string | null; // rank 0's choice
    if (path === null) {
      log(`resume: no checkpoint in ${options.outputDir}; starting from scratch`);
    } else if (isTorchCheckpoint(path)) {
      // An official DetailCLIP checkpoint: weights, AdamW moments when they map, the epoch; no centers, no RNG.
      const resumed = resumeOfficial(path, { model, modelName: config.name, optimizer, scaler, device }, stepsPerEpoch);
      step = resumed.step;
      log(describeOfficialResume(path, resumed));
    } else {
      const restored = restore(path, { model, optimizer, ibot, scaler, device });
      step = restored.step;
      const inexact = restoreDataState(source, restored.dataState, rank, world);
      if (inexact !== null) log(inexact);
      history = restored.history;
      evalBefore = restored.evalBefore;
      validation.restoreBest(restored.best);
      latest = { path, step, written: false };
      log(`resume: ${path} at step ${step}`);
    }
  }

  if (world > 1) {
    // Every rank starts from rank 0's weights and centers (after a resume, also its optimizer moments).
    const state = [...model.stateDict().values(), ...(ibot?.stateDict().values() ?? [])];
    pg.broadcast_(step > 0 ? [...state, ...optimizer.stateTensors().values()] : state, 0);
  }
  const jsonl = new JsonlWriter(`${options.outputDir}/metrics.jsonl`, rank, { resumeStep: step });
  const tensorboard = new TensorBoardWriter(`${options.outputDir}/${TENSORBOARD_DIR}`, {
    enabled: rank === 0 && options.reportTo === "tensorboard",
    resumeStep: step,
  });
  held.closers.push(() => tensorboard.close());

  // ---- evaluation before training ----------------------------------------------------------------------------------
  const evaluate = (): SyntheticEval | null =>
    options.evalSize > 0 && rank === 0 && source.name === "synthetic"
      ? evaluateSynthetic(model, source, { size: options.evalSize, seed: options.seed, device })
      : null;
  if (step === 0 && evalBefore === null) {
    evalBefore = evaluate();
    if (evalBefore) log(`eval before: ${describeEval(evalBefore)}`);
    if (evalBefore) tensorboard.scalars(0, syntheticScalars(evalBefore));
  }

  const checkpointState = (
    dataState: unknown[] | null,
  ): { tensors: Map<string, Tensor>; meta: Record<string, unknown> } => {
    const tensors = new Map<string, Tensor>();
    for (const [key, value] of model.stateDict()) tensors.set(`model.${key}`, value);
    for (const [key, value] of optimizer.stateTensors()) tensors.set(`optimizer.${key}`, value);
    if (ibot) { for (const [key, value] of ibot.stateDict()) tensors.set(`ibot.${key}`, value); }
    for (const [key, value] of captureRngStates(device)) tensors.set(key, value);
    return {
      tensors,
      meta: {
        step,
        epoch: Math.floor(step / stepsPerEpoch),
        optimizer_steps: optimizer.stepCount,
        scaler: scaler?.state() ?? null,
        options,
        model_config: config,
        tokenizer_merges: source.tokenizer.merges,
        history,
        eval_before: evalBefore,
        best_checkpoint: validation.bestRecord,
        ...(dataState === null ? {} : { data_state: dataState }),
      },
    };
  };
  /**
   * Checks the state for NaN/Inf on every rank (one device reduction; the ranks hold the same weights, so they stop
   * together), then rank 0 writes it. A non-finite state is never written: the run stops naming the step.
   */
  const save = (say: (line: string) => void, best = false): void => {
    stopIfLauncherGone();
    const prefixed = (prefix: string, tensors: Iterable<[string, Tensor]>): [string, Tensor][] =>
      [...tensors].map(([key, value]) => [`${prefix}${key}`, value]);
    const checked = [
      ...prefixed("model.", model.stateDict()),
      ...prefixed("optimizer.", optimizer.stateTensors()),
      ...prefixed("ibot.", ibot?.stateDict() ?? []),
    ];
    const bad = nonFiniteTensors(checked);
    if (bad.length > 0) throw new NonFiniteStateError(step, bad, checked.length, latest);
    const dataState = gatherDataState(pg, source, step); // every rank's stream position (streaming sources)
    if (rank !== 0) {
      latest = { path: checkpointPath(options.outputDir, step), step, written: true }; // what rank 0 writes now
      return;
    }
    const state = checkpointState(dataState);
    try {
      const path = saveCheckpoint(options.outputDir, state, {
        keepLast: options.keepLast,
        best,
        log: say,
        finiteChecked: true,
      });
      latest = { path, step, written: true };
      say(`checkpoint: ${path}`);
    } finally {
      state.tensors.get(RNG_CPU_KEY)?.dispose();
      state.tensors.get(RNG_CUDA_KEY)?.dispose();
    }
  };

  // ---- the steps ---------------------------------------------------------------------------------------------------
  const poison = injectedNaN();
  const weights = {
    clip: options.clipLossWeight,
    reconst: options.reconstLossWeight,
    ibotPatch: options.ibotPatchLossWeight,
    ibotCls: options.ibotClsLossWeight,
  };
  const trainable = model.namedTrainableParameters().map(([, p]) => p);
  const reducer = options.disableGradOverlap ? null : pg.gradientReducer(trainable); // null on one process
  const meter = new MetricMeter();
  const imagesPerStep = options.batchSize * world * options.updateFreq;
  const progress = new ProgressBar({ total: lastStep, rank, log, startStep: step, imagesPerStep });
  let pending: { step: number; terms: Tensor }[] = []; // device-side loss terms since the last host read
  let termNames: string[] = [];
  const stepStarted = performance.now();
  const collectiveStarted = pg.collectiveSeconds;
  const firstStep = step;

  /**
   * The loss of step k is computed from the parameters after k updates, which the checkpoint of step k holds: when
   * that loss is non-finite, the checkpoint (if this run wrote it) is renamed so --resume auto falls back to an older
   * one, from which a run with, say, a lower learning rate can recover. Returns the new name, or null.
   */
  const setAsideCheckpointOf = (k: number): string | null => {
    if (rank !== 0 || latest === null || latest.step !== k || !latest.written) return null;
    const aside = `${latest.path}${NONFINITE_LOSS_SUFFIX}`;
    Deno.renameSync(latest.path, aside);
    const older = listCheckpoints(options.outputDir).find((c) => c.step < k);
    latest = older === undefined ? null : { ...older, written: true };
    return aside;
  };

  /** One host read for everything pending: NaN check, history, averages, progress, JSONL. */
  const flush = (): void => {
    if (pending.length === 0) return;
    // The mean over ranks (one all-reduce per interval): every rank logs, checks and stops on the same numbers.
    const values = tidy(() =>
      pg.allReduce_(stack(pending.map((p) => p.terms), 0).to({ dtype: "float64" }), "avg").toArray()
    );
    const width = termNames.length;
    pending.forEach((entry, row) => {
      const record: Record<string, number> = {};
      termNames.forEach((name, j) => (record[name] = values[row * width + j]));
      for (const name of termNames) {
        if (name !== "clip_acc" && !Number.isFinite(record[name])) {
          const aside = setAsideCheckpointOf(entry.step);
          throw new NonFiniteLossError(entry.step, name, record[name], latest, aside);
        }
      }
      history.push({ step: entry.step, values: record });
      meter.update(record, options.batchSize * world);
    });
    for (const entry of pending) entry.terms.dispose();
    pending = [];
    const averages = meter.averages();
    const current = step;
    progress.update(current, averages);
    stopIfLauncherGone();
    jsonl.write({
      type: "interval",
      step: current,
      epoch: Math.floor((current - 1) / stepsPerEpoch),
      lr: cosineValue(lrSchedule, current - 1),
      logit_scale: noGrad(() => tidy(() => model.logit_scale.exp().item())),
      ...averages,
      ...(source.skipped ? { skipped: source.skipped() } : {}),
    });
    meter.reset();
    const epochNow = Math.floor((current - 1) / stepsPerEpoch);
    const rate = progress.rate();
    tensorboard.scalars(current, {
      ...Object.fromEntries(Object.entries(averages).map(([name, value]) => [`train/${name}`, value])),
      "train/lr": cosineValue(lrSchedule, current - 1),
      "train/momentum_ema": emaMomentum(options.momentumEma, current - 1, totalSteps),
      "train/logit_scale": noGrad(() => tidy(() => model.logit_scale.exp().item())),
      ...(ibot
        ? {
          "train/teacher_temp_patch": ibot.teacherTempPatch(epochNow),
          "train/teacher_temp_cls": ibot.teacherTempCls(epochNow),
          "train/student_temp": ibot.studentTemp,
        }
        : {}),
      ...(rate === null ? {} : { "train/images_per_s": rate * imagesPerStep }),
    });
  };

  /** Rank 0 evaluates what is due, logs it everywhere; true when --best-metric improved (rank 0 only). */
  const validate = (due: { zeroshot: boolean; val: boolean }): boolean => {
    if (rank !== 0) return false;
    const metrics = validation.run({
      model,
      tokenizer: source.tokenizer,
      contextLength: source.contextLength,
      device,
      step,
    }, due);
    progress.println(describeValidation(step, metrics));
    jsonl.write({ type: "validation", step, epoch: Math.floor((step - 1) / stepsPerEpoch), ...metrics });
    tensorboard.scalars(step, metrics);
    const improved = validation.improves(metrics, step);
    if (improved) progress.println(`best ${validation.best} so far: ${validation.bestRecord!.value.toFixed(3)}`);
    return improved;
  };

  try {
    while (step < lastStep) {
      const epoch = Math.floor(step / stepsPerEpoch);
      const indexInEpoch = step % stepsPerEpoch;
      const lr = cosineValue(lrSchedule, step);
      const momentum = emaMomentum(options.momentumEma, step, totalSteps);

      for (let micro = 0; micro < options.updateFreq; micro++) {
        using _segments = { [Symbol.dispose]: () => checkpoints?.clear() }; // a failed micro-step's, too
        if (micro === options.updateFreq - 1) reducer?.prepare();
        tidy(() => {
          const batch = source.batch(epoch, indexInEpoch * options.updateFreq + micro, options.batchSize, {
            rank,
            world,
          }, device);
          const run = (): { loss: Tensor; terms: Record<string, Tensor> } =>
            forwardLoss(model, ibot, batch, {
              // The teacher moves once per optimizer step, before its first micro-batch
              // (docs/parity.md#momentum-schedule-by-optimizer-step).
              momentum: micro === 0 ? momentum : null,
              epoch,
              weights,
              normPix: !options.disableNormPixLoss,
              dist: world > 1
                ? { gather: (t) => pg.gatherWithGrad(t), allReduceMean: (t) => pg.allReduceMean(t), rank }
                : undefined,
            });
          const { loss, terms } = withCheckpoints(checkpoints, () => inPrecision(run));
          if (poison && poison.step === step && micro === 0 && poison.term !== "parameters") {
            const target = terms[poison.term] ?? terms.loss;
            target.mul_(Number.NaN);
          }
          termNames = Object.keys(terms);
          pending.push({ step, terms: stack(termNames.map((n) => terms[n].detach().float()), 0).keep() });
          const scaled = loss.div(options.updateFreq);
          const scaledLoss = scaler ? scaled.mul(scaler.scale) : scaled;
          if (checkpoints) checkpoints.backward(scaledLoss);
          else scaledLoss.backward();
        });
      }

      // DDP's mean over ranks, once per optimizer step (none on micro-steps): started during the last backward
      // bucket by bucket, or all at once after it with --disable-grad-overlap.
      if (reducer) reducer.finish();
      else pg.averageGradients(trainable);
      const stepOk = scaler ? scaler.unscaleAndUpdate(trainable) : true;
      if (stepOk) optimizer.step(lr);
      if (poison?.term === "parameters" && poison.step === step) noGrad(() => trainable[0].mul_(Number.NaN));
      model.clampLogitScale();
      optimizer.zeroGrad();
      step += 1;

      const endOfEpoch = step % stepsPerEpoch === 0;
      const logNow = step % options.printFreq === 0 || step === lastStep || endOfEpoch;
      if (logNow) flush();
      const due = validation.due(step, stepsPerEpoch, lastStep);
      const validateNow = due.zeroshot || due.val;
      let best = false;
      if (validateNow) {
        flush(); // never judge parameters that follow a non-finite loss
        best = validate(due);
      }
      const saveNow = (options.saveFreq !== undefined && step % options.saveFreq === 0) ||
        (endOfEpoch && (step / stepsPerEpoch) % options.evalFreq === 0) || step === lastStep ||
        (validateNow && validation.best !== null);
      if (saveNow) {
        flush(); // never checkpoint parameters that follow a non-finite loss
        save((line) => progress.println(line), best);
      }
    }
    flush();
  } finally {
    progress.finish();
    for (const entry of pending) entry.terms.dispose();
    reducer?.dispose();
  }

  if (world > 1) {
    const loopSeconds = (performance.now() - stepStarted) / 1000;
    const comm = pg.collectiveSeconds - collectiveStarted;
    log(
      `communication: ${comm.toFixed(2)} s of ${loopSeconds.toFixed(2)} s of steps ` +
        `(${(100 * comm / Math.max(loopSeconds, 1e-9)).toFixed(1)}% on rank 0, waiting for slower ranks included)`,
    );
  }

  // ---- evaluation after training and the summary ------------------------------------------------------------------
  model.eval();
  const evalAfter = evaluate();
  if (evalAfter) log(`eval after: ${describeEval(evalAfter)}`);
  if (evalAfter) tensorboard.scalars(step, syntheticScalars(evalAfter));
  const seconds = (performance.now() - started) / 1000;
  const trainedSteps = step - firstStep;
  const losses = history.map((h) => h.values.loss);
  const window = Math.max(1, Math.min(10, Math.floor(losses.length / 4)));
  const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(xs.length, 1);
  const summary: TrainSummary = {
    model: config.name,
    dataset: source.name,
    steps: step,
    seconds,
    loss_first: mean(losses.slice(0, window)),
    loss_last: mean(losses.slice(-window)),
    zeroshot_top1_before: evalBefore?.zeroShotTop1 ?? null,
    zeroshot_top1_after: evalAfter?.zeroShotTop1 ?? null,
    zeroshot_chance: evalBefore?.chance ?? null,
    zeroshot_task: evalBefore ? "synthetic colour (single-object val images)" : null,
    zeroshot_shape_top1_before: evalBefore?.zeroShotShapeTop1 ?? null,
    zeroshot_shape_top1_after: evalAfter?.zeroShotShapeTop1 ?? null,
    zeroshot_shape_chance: evalBefore?.shapeChance ?? null,
    retrieval_r1_before: evalBefore?.retrievalR1 ?? null,
    retrieval_r1_after: evalAfter?.retrievalR1 ?? null,
    output_dir: options.outputDir,
  };
  stopIfLauncherGone();
  if (rank === 0) {
    writeFileAtomic(`${options.outputDir}/summary.json`, JSON.stringify(summary, null, 2) + "\n");
    writeFileAtomic(`${options.outputDir}/loss_curve.svg`, lossCurve(history));
    jsonl.write({ type: "summary", ...summary });
    const rate = trainedSteps / Math.max((performance.now() - stepStarted) / 1000, 1e-9);
    log(
      `done: ${step} steps in ${seconds.toFixed(0)} s (${rate.toFixed(2)} steps/s); loss ` +
        `${summary.loss_first.toFixed(3)} -> ${summary.loss_last.toFixed(3)}; ` +
        `summary ${options.outputDir}/summary.json, curve ${options.outputDir}/loss_curve.svg`,
    );
  }
  jsonl.close();
  tensorboard.close();
  validation.close();
  optimizer.dispose();
  ibot?.dispose();
  scaler?.dispose();
  model.dispose();
  const skipped = source.skipped?.() ?? {};
  if (Object.keys(skipped).length > 0) {
    log(`skipped samples: ${Object.entries(skipped).map(([reason, n]) => `${reason} ${n}`).join(", ")}`);
  }
  source.close?.();
  return summary;
}

/** The preset with the options' overrides; on synthetic data the vocabulary is the learned BPE's. */
/**
 * The training data: the built-in synthetic shapes, or a file-based source decoded by the native workers with the
 * CLIP BPE of --bpe (OpenAI's bpe_simple_vocab_16e6.txt.gz, or one learned with `deno task data bpe`).
 */
function trainSourceFor(
  options: TrainOptions,
  preset: ModelConfig,
  views: 1 | 2,
  shard: { rank: number; world: number },
): TrainSource {
  const imageSize = preset.vision.imageSize;
  const contextLength = preset.text.context;
  if (options.dataset === "synthetic") {
    return syntheticTrainSource({
      seed: options.seed,
      epochSize: options.syntheticSize,
      imageSize,
      contextLength,
      views,
      objects: options.syntheticObjects,
    });
  }
  if (!options.metadata) throw new OptionError(`--dataset ${options.dataset} needs --metadata (${METADATA_HELP})`);
  if (!options.bpe) throw new OptionError(`--dataset ${options.dataset} needs --bpe (a CLIP BPE merges file)`);
  let tokenizer: ClipTokenizer;
  try {
    tokenizer = ClipTokenizer.fromFile(options.bpe);
  } catch (error) {
    throw new DataError(`--bpe ${options.bpe}: ${(error as Error).message}`, { cause: error });
  }
  const common = { tokenizer, contextLength, imageSize, views, seed: options.seed, threads: options.workers || 1 };
  const root = options.root === "" ? undefined : options.root;
  try {
    if (options.dataset === "csv") {
      return csvTrainSource({
        ...common,
        path: options.metadata,
        root,
        imageColumn: options.csvImgKey,
        captionColumn: options.csvCaptionKey,
        separator: options.csvSeparator,
      });
    }
    if (options.dataset === "webdataset" && (options.trainNumSamples !== undefined || options.datasetResampled)) {
      if (options.trainNumSamples === undefined) {
        throw new OptionError("--dataset-resampled needs --train-num-samples (the epoch length of a stream)");
      }
      return streamingWebDatasetSource({
        ...common,
        ...shard,
        shards: options.metadata,
        root,
        epochSize: options.trainNumSamples,
        resampled: options.datasetResampled,
        workers: Math.max(1, options.workers),
        bufferSize: options.shuffleBuffer,
      });
    }
    if (options.dataset === "webdataset") return webDatasetTrainSource({ ...common, shards: options.metadata, root });
    if (options.dataset === "yfcc15m" || options.dataset === "redcaps") {
      if (root === undefined) {
        throw new OptionError(`--dataset ${options.dataset} needs --root (${ROOT_HELP[options.dataset]})`);
      }
      if (options.dataset === "yfcc15m") return yfccTrainSource({ ...common, metadata: options.metadata, root });
      return redcapsTrainSource({ ...common, annotations: options.metadata, root });
    }
    return cocoTrainSource({ ...common, annotations: options.metadata, root: options.root });
  } catch (error) {
    if (error instanceof OptionError) throw error;
    throw new DataError(`--dataset ${options.dataset} --metadata ${options.metadata}: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

const METADATA_HELP = "csv: the manifest; webdataset: shard paths or a brace pattern; coco: the captions JSON; " +
  "yfcc15m: the (index, hash, title, desc) pickle; redcaps: annotation JSON files, a comma list or a brace pattern";
const ROOT_HELP = {
  yfcc15m: "the folder holding test_zip_3/<hash[:3]>.zip",
  redcaps: "the folder holding <subreddit>/<image_id>.jpg",
};

/** The preset with the options' overrides; the text vocabulary is the tokenizer's. */
function modelConfigFor(preset: ModelConfig, options: TrainOptions, source: TrainSource): ModelConfig {
  const text = { ...preset.text, vocab: source.tokenizer.vocabSize };
  const raw = preset.kind === "detailclip"
    ? { ...preset, text, maskRatio: options.maskRatio ?? preset.maskRatio }
    : { ...preset, text };
  return parseModelConfig(raw, `--model ${options.model}`);
}

interface ForwardOptions {
  momentum: number | null;
  epoch: number;
  weights: { clip: number; reconst: number; ibotPatch: number; ibotCls: number };
  normPix: boolean;
  /** Distributed hooks (absent on one process): gather with gradient, mean over ranks, this rank. */
  dist?: { gather: (t: Tensor) => Tensor; allReduceMean: (t: Tensor) => Tensor; rank: number };
}

/** One micro-batch: the model's training forward and its loss terms (official names), all on the device. */
function forwardLoss(
  model: AnyModel,
  ibot: IBOTLoss | null,
  batch: { u: Tensor; v: Tensor | null; text: Tensor },
  options: ForwardOptions,
): { loss: Tensor; terms: Record<string, Tensor> } {
  if (model instanceof DetailCLIP) {
    if (batch.v === null || ibot === null) throw new Error("DetailCLIP training needs two views and the iBOT loss");
    const out = model.forwardTrain(batch.u, batch.v, batch.text, options.momentum);
    const terms: DetailClipLossResult = detailClipLoss(out, { u: batch.u, v: batch.v }, ibot, options.epoch, {
      patchSize: model.config.vision.patchSize,
      normPix: options.normPix,
      weights: options.weights,
      ...options.dist,
    });
    return { loss: terms.loss, terms: { ...terms } };
  }
  if (!(model instanceof CLIP)) throw new Error("unknown model type");
  const { imageEmbed, textEmbed, logitScale } = model.forward(batch.u, batch.text);
  const clip = clipLoss({ imageU: imageEmbed, imageV: imageEmbed, text: textEmbed, logitScale }, options.dist);
  return { loss: clip.loss, terms: { loss: clip.loss, clip_acc: clip.accuracy } };
}

function restore(
  path: string,
  parts: { model: AnyModel; optimizer: AdamW; ibot: IBOTLoss | null; scaler: GradScaler | null; device: Device },
): { step: number; history: StepRecord[]; evalBefore: SyntheticEval | null; best: unknown; dataState: unknown } {
  const { tensors, meta } = loadCheckpoint(path);
  try {
    const section = (prefix: string): Map<string, Tensor> => {
      const out = new Map<string, Tensor>();
      for (const [key, value] of tensors) if (key.startsWith(prefix)) out.set(key.slice(prefix.length), value);
      return out;
    };
    parts.model.loadStateDict(section("model."), { where: path });
    parts.optimizer.loadStateTensors(section("optimizer."), Number(meta.optimizer_steps ?? meta.step));
    if (parts.ibot) parts.ibot.loadStateDict(section("ibot."), { where: path });
    restoreRngStates(tensors, parts.device);
    if (parts.scaler && meta.scaler) parts.scaler.load(meta.scaler as { scale: number; growthTracker: number });
    return {
      step: Number(meta.step),
      history: (meta.history as StepRecord[] | undefined) ?? [],
      evalBefore: (meta.eval_before as SyntheticEval | null | undefined) ?? null,
      best: meta.best_checkpoint,
      dataState: meta.data_state,
    };
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
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

/** restoreOfficialTraining, with an unreadable or mismatched file reported as a --resume option error. */
function resumeOfficial(
  path: string,
  parts: Parameters<typeof restoreOfficialTraining>[1],
  stepsPerEpoch: number,
): OfficialResume {
  try {
    using official = openOfficialCheckpoint(path);
    return restoreOfficialTraining(official, parts, stepsPerEpoch);
  } catch (error) {
    if (error instanceof PtFileError || error instanceof OfficialCheckpointError) {
      throw new OptionError(`--resume ${error.message}`);
    }
    throw error;
  }
}

function describeEval(e: SyntheticEval): string {
  return `zero-shot colour top-1 ${e.zeroShotTop1.toFixed(1)}% (chance ${e.chance.toFixed(1)}%), ` +
    `shape ${e.zeroShotShapeTop1.toFixed(1)}% (chance ${e.shapeChance.toFixed(1)}%), ` +
    `image→text R@1 ${e.retrievalR1.toFixed(1)}%, text→image R@1 ${e.retrievalT2IR1.toFixed(1)}%`;
}

/** The synthetic before/after evaluation as TensorBoard scalars. */
function syntheticScalars(e: SyntheticEval): Record<string, number> {
  return {
    "synthetic/zeroshot_colour_top1": e.zeroShotTop1,
    "synthetic/zeroshot_shape_top1": e.zeroShotShapeTop1,
    "synthetic/i2t_r1": e.retrievalR1,
    "synthetic/t2i_r1": e.retrievalT2IR1,
  };
}

function lossCurve(history: StepRecord[]): string {
  const names = history.length ? Object.keys(history[0].values).filter((n) => n !== "clip_acc") : ["loss"];
  return lossCurveSvg(
    names.map((name) => ({ name, points: history.map((h) => [h.step, h.values[name]] as [number, number]) })),
    { title: "training loss", xLabel: "optimizer step", yLabel: "loss", logY: true },
  );
}
