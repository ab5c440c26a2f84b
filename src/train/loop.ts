// loop.ts: the training loop (docs/training.md#per-iteration-order, with docs/parity.md's deviations), readable top to
// bottom like nanoGPT's train.py: set-up (setup.ts), resume (resume.ts), evaluation before, the steps, evaluation after,
// summary (summary.ts). Every schedule is a function of the optimizer step; every batch is a function of (seed, epoch,
// index); so a killed run resumed from its last checkpoint ends bit for bit where an uninterrupted one does. Loss values
// stay on the device between log intervals (step_report.ts); checkpoints are checked for NaN/Inf before they are
// written (run_checkpoints.ts).
import { type Tensor, tidy } from "../torch/mod.ts";
import { ProcessGroup } from "../torch/dist.ts";
import { withCheckpoints } from "../nn/checkpoint.ts";
import type { TrainBatch } from "../data/sources.ts";
import { stopIfLauncherGone } from "./launcher_link.ts";
import { evaluateSynthetic, type SyntheticEval } from "./evaluate.ts";
import { flagOf, type TrainOptions } from "./options.ts";
import { cosineValue, emaMomentum } from "./schedules.ts";
import { forwardLoss } from "./forward.ts";
import { type Held, setUpRun, startFromRankZero, type TrainRun } from "./setup.ts";
import { resumeRun } from "./resume.ts";
import { RunCheckpoints } from "./run_checkpoints.ts";
import { openWriters, type RunWriters, StepReport } from "./step_report.ts";
import { NanInjection } from "./test_hooks.ts";
import {
  describeDone,
  describeEval,
  type StepRecord,
  summarize,
  syntheticScalars,
  type TrainSummary,
  writeSummaryFiles,
} from "./summary.ts";

// cli/errors.ts and src/train/mod.ts take these from here.
export { NonFiniteLossError, NonFiniteStateError } from "./nonfinite.ts";
export type { TrainSummary } from "./summary.ts";

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
  const held: Held = { closers: [] };
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
  held: Held,
): Promise<TrainSummary> {
  const started = performance.now();

  // ---- set-up: device, output folder, data, model, optimizer, validation sets, schedule ----------------------------
  const run = await setUpRun(options, pg, log, held);

  // ---- resume, then every rank from rank 0's state -----------------------------------------------------------------
  const start = resumeRun(run);
  startFromRankZero(run, start.step);
  const writers = openWriters(run, start.step, held);

  // ---- evaluation before training ----------------------------------------------------------------------------------
  let evalBefore = start.evalBefore;
  if (start.step === 0 && evalBefore === null) {
    evalBefore = syntheticEval(run);
    if (evalBefore) log(`eval before: ${describeEval(evalBefore)}`);
    if (evalBefore) writers.tensorboard.scalars(0, syntheticScalars(evalBefore));
  }

  // ---- the steps ---------------------------------------------------------------------------------------------------
  const checkpoints = new RunCheckpoints(run, start.history, evalBefore, start.latest);
  const { step, stepsStarted } = trainSteps(run, start.step, writers, start.history, checkpoints);

  // ---- evaluation after training and the summary ------------------------------------------------------------------
  run.model.eval();
  const evalAfter = syntheticEval(run);
  if (evalAfter) log(`eval after: ${describeEval(evalAfter)}`);
  if (evalAfter) writers.tensorboard.scalars(step, syntheticScalars(evalAfter));
  const seconds = (performance.now() - started) / 1000;
  const summary = summarize(
    { model: run.config.name, dataset: run.source.name, steps: step, seconds, outputDir: options.outputDir },
    start.history,
    evalBefore,
    evalAfter,
  );
  stopIfLauncherGone();
  if (run.rank === 0) {
    writeSummaryFiles(options.outputDir, summary, start.history);
    writers.jsonl.write({ type: "summary", ...summary });
    log(describeDone(summary, (step - start.step) / Math.max((performance.now() - stepsStarted) / 1000, 1e-9)));
  }
  closeRun(run, writers);
  return summary;
}

/**
 * The optimizer steps from `firstStep` to the last: micro-batches forward and backward, the update, then logging,
 * validation and checkpoints as they fall due. Returns the step reached and when the steps started.
 */
function trainSteps(
  run: TrainRun,
  firstStep: number,
  writers: RunWriters,
  history: StepRecord[],
  checkpoints: RunCheckpoints,
): { step: number; stepsStarted: number } {
  const { options, pg, model, optimizer, scaler, validation } = run;
  const { stepsPerEpoch, totalSteps, lastStep } = run.schedule;
  const nan = NanInjection.fromOptions(options); // tests only
  const trainable = model.namedTrainableParameters().map(([, p]) => p);
  const reducer = options.disableGradOverlap ? null : pg.gradientReducer(trainable); // null on one process
  const report = new StepReport(run, writers, history, checkpoints, firstStep);
  const stepsStarted = performance.now();
  const collectiveStarted = pg.collectiveSeconds;
  let step = firstStep;
  try {
    while (step < lastStep) {
      const epoch = Math.floor(step / stepsPerEpoch);
      const lr = cosineValue(run.schedule.lr, step);
      const momentum = emaMomentum(options.momentumEma, step, totalSteps);

      // forward and backward, one micro-batch at a time (gradients accumulate over --update-freq)
      for (let micro = 0; micro < options.updateFreq; micro++) {
        using _segments = { [Symbol.dispose]: () => run.checkpoints?.clear() }; // a failed micro-step's, too
        if (micro === options.updateFreq - 1) reducer?.prepare();
        tidy(() => {
          const batch = microBatch(run, step, micro);
          // The teacher moves once per optimizer step, before its first micro-batch
          // (docs/parity.md#momentum-schedule-by-optimizer-step).
          const { loss, terms } = forward(run, batch, epoch, micro === 0 ? momentum : null);
          nan?.poisonLoss(step, micro, terms);
          report.record(step, terms);
          backward(run, loss.div(options.updateFreq));
        });
      }

      // the update: DDP's mean over ranks once per optimizer step (started during the last backward bucket by
      // bucket, or all at once after it with --disable-grad-overlap), the fp16 unscale, AdamW
      if (reducer) reducer.finish();
      else pg.averageGradients(trainable);
      const stepOk = scaler ? scaler.unscaleAndUpdate(trainable) : true;
      if (stepOk) optimizer.step(lr);
      nan?.poisonParameters(step, trainable);
      model.clampLogitScale();
      optimizer.zeroGrad();
      step += 1;

      // log, validate, checkpoint: each reads the pending losses first, so it never follows a non-finite loss
      const endOfEpoch = step % stepsPerEpoch === 0;
      if (step % options.printFreq === 0 || step === lastStep || endOfEpoch) report.flush(step);
      const due = validation.due(step, stepsPerEpoch, lastStep);
      const validateNow = due.zeroshot || due.val;
      let best = false;
      if (validateNow) {
        report.flush(step);
        best = report.validate(step, due);
      }
      const saveNow = (options.saveFreq !== undefined && step % options.saveFreq === 0) ||
        (endOfEpoch && (step / stepsPerEpoch) % options.evalFreq === 0) || step === lastStep ||
        (validateNow && validation.best !== null);
      if (saveNow) {
        report.flush(step);
        checkpoints.save(step, (line) => report.progress.println(line), best);
      }
    }
    report.flush(step);
  } finally {
    report.progress.finish();
    report.dispose();
    reducer?.dispose();
  }
  logCommunication(run, (performance.now() - stepsStarted) / 1000, pg.collectiveSeconds - collectiveStarted);
  return { step, stepsStarted };
}

/** This rank's micro-batch `micro` of optimizer step `step`, on the device. */
function microBatch(run: TrainRun, step: number, micro: number): TrainBatch {
  const { source, options, rank, world, device } = run;
  const indexInEpoch = step % run.schedule.stepsPerEpoch;
  const index = indexInEpoch * options.updateFreq + micro;
  return source.batch(Math.floor(step / run.schedule.stepsPerEpoch), index, options.batchSize, { rank, world }, device);
}

/** The forward and the loss terms, in the run's precision, block activations kept for recomputation when asked. */
function forward(
  run: TrainRun,
  batch: TrainBatch,
  epoch: number,
  momentum: number | null,
): { loss: Tensor; terms: Record<string, Tensor> } {
  const { model, ibot, options, pg, world, rank } = run;
  const weights = {
    clip: options.clipLossWeight,
    reconst: options.reconstLossWeight,
    ibotPatch: options.ibotPatchLossWeight,
    ibotCls: options.ibotClsLossWeight,
  };
  const dist = world > 1
    ? { gather: (t: Tensor) => pg.gatherWithGrad(t), allReduceMean: (t: Tensor) => pg.allReduceMean(t), rank }
    : undefined;
  const lossOf = () =>
    forwardLoss(model, ibot, batch, { momentum, epoch, weights, normPix: !options.disableNormPixLoss, dist });
  return withCheckpoints(run.checkpoints, () => run.inPrecision(lossOf));
}

/** Backward of a micro-batch's share of the loss (times the fp16 scale), through the recomputed blocks when asked. */
function backward(run: TrainRun, loss: Tensor): void {
  const scaled = run.scaler ? loss.mul(run.scaler.scale) : loss;
  if (run.checkpoints) run.checkpoints.backward(scaled);
  else scaled.backward();
}

/** The synthetic zero-shot and retrieval evaluation (rank 0, synthetic data, --eval-size > 0), else null. */
function syntheticEval(run: TrainRun): SyntheticEval | null {
  const { options, rank, source, model, device } = run;
  return options.evalSize > 0 && rank === 0 && source.name === "synthetic"
    ? evaluateSynthetic(model, source, { size: options.evalSize, seed: options.seed, device })
    : null;
}

/** Distributed runs: how much of the steps' time went to collectives. */
function logCommunication(run: TrainRun, loopSeconds: number, comm: number): void {
  if (run.world <= 1) return;
  run.log(
    `communication: ${comm.toFixed(2)} s of ${loopSeconds.toFixed(2)} s of steps ` +
      `(${(100 * comm / Math.max(loopSeconds, 1e-9)).toFixed(1)}% on rank 0, waiting for slower ranks included)`,
  );
}

/** Closes the writers and the data, frees the model and optimizer, and reports skipped samples. */
function closeRun(run: TrainRun, writers: RunWriters): void {
  writers.jsonl.close();
  writers.tensorboard.close();
  run.validation.close();
  run.optimizer.dispose();
  run.ibot?.dispose();
  run.scaler?.dispose();
  run.model.dispose();
  const skipped = run.source.skipped?.() ?? {};
  if (Object.keys(skipped).length > 0) {
    run.log(`skipped samples: ${Object.entries(skipped).map(([reason, n]) => `${reason} ${n}`).join(", ")}`);
  }
  run.source.close?.();
}
