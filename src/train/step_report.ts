// step_report.ts: what the step loop reports as it goes. Loss terms stay on the device between log intervals; one host
// read per interval (a mean over ranks, so every rank logs, checks and stops on the same numbers) checks them for
// NaN/Inf and feeds the history, the exact averages, the progress line, metrics.jsonl and TensorBoard. Validation
// results go the same ways.
import { noGrad, stack, type Tensor, tidy } from "../torch/mod.ts";
import { stopIfLauncherGone } from "./launcher_link.ts";
import { JsonlWriter, ProgressBar } from "./logging.ts";
import { MetricMeter } from "./metrics.ts";
import { cosineValue, emaMomentum } from "./schedules.ts";
import { TENSORBOARD_DIR, TensorBoardWriter } from "./tensorboard.ts";
import { describeValidation } from "./validation.ts";
import { NonFiniteLossError } from "./nonfinite.ts";
import type { RunCheckpoints } from "./run_checkpoints.ts";
import type { StepRecord } from "./summary.ts";
import type { Held, TrainRun } from "./setup.ts";

/** metrics.jsonl (every rank's records, rank 0 writes) and TensorBoard (rank 0, --report-to tensorboard). */
export interface RunWriters {
  jsonl: JsonlWriter;
  tensorboard: TensorBoardWriter;
}

/** Opens the run's writers; a resumed run drops their records past `step` (a killed run's last interval). */
export function openWriters(run: TrainRun, step: number, held: Held): RunWriters {
  const { options, rank } = run;
  const jsonl = new JsonlWriter(`${options.outputDir}/metrics.jsonl`, rank, { resumeStep: step });
  const tensorboard = new TensorBoardWriter(`${options.outputDir}/${TENSORBOARD_DIR}`, {
    enabled: rank === 0 && options.reportTo === "tensorboard",
    resumeStep: step,
  });
  held.closers.push(() => tensorboard.close());
  return { jsonl, tensorboard };
}

export class StepReport {
  readonly progress: ProgressBar;
  readonly #meter = new MetricMeter();
  readonly #imagesPerStep: number;
  /** Device-side loss terms since the last host read, one row per optimizer step. */
  #pending: { step: number; terms: Tensor }[] = [];
  #termNames: string[] = [];

  constructor(
    private readonly run: TrainRun,
    private readonly writers: RunWriters,
    /** The run's loss history: each flushed step is appended. */
    private readonly history: StepRecord[],
    private readonly checkpoints: RunCheckpoints,
    startStep: number,
  ) {
    const { options, world, rank, log } = run;
    this.#imagesPerStep = options.batchSize * world * options.updateFreq;
    this.progress = new ProgressBar({
      total: run.schedule.lastStep,
      rank,
      log,
      startStep,
      imagesPerStep: this.#imagesPerStep,
    });
  }

  /** Keeps a micro-batch's loss terms (the last micro-batch's names and values stand for the step). */
  record(step: number, terms: Record<string, Tensor>): void {
    this.#termNames = Object.keys(terms);
    this.#pending.push({ step, terms: stack(this.#termNames.map((n) => terms[n].detach().float()), 0).keep() });
  }

  /** One host read for everything pending (`step`: the current optimizer step): NaN check, history, averages, logs. */
  flush(step: number): void {
    if (this.#pending.length === 0) return;
    const { pg, options, world, model, ibot, source } = this.run;
    const { stepsPerEpoch, totalSteps, lr } = this.run.schedule;
    const { jsonl, tensorboard } = this.writers;
    // The mean over ranks (one all-reduce per interval): every rank logs, checks and stops on the same numbers.
    const pending = this.#pending;
    const values = tidy(() =>
      pg.allReduce_(stack(pending.map((p) => p.terms), 0).to({ dtype: "float64" }), "avg").toArray()
    );
    const names = this.#termNames;
    pending.forEach((entry, row) => {
      const record: Record<string, number> = {};
      names.forEach((name, j) => (record[name] = values[row * names.length + j]));
      for (const name of names) {
        if (name !== "clip_acc" && !Number.isFinite(record[name])) {
          const aside = this.checkpoints.setAsideCheckpointOf(entry.step);
          throw new NonFiniteLossError(entry.step, name, record[name], this.checkpoints.latest, aside);
        }
      }
      this.history.push({ step: entry.step, values: record });
      this.#meter.update(record, options.batchSize * world);
    });
    this.dispose();
    const averages = this.#meter.averages();
    this.progress.update(step, averages);
    stopIfLauncherGone();
    const logitScale = (): number => noGrad(() => tidy(() => model.logit_scale.exp().item()));
    jsonl.write({
      type: "interval",
      step,
      epoch: Math.floor((step - 1) / stepsPerEpoch),
      lr: cosineValue(lr, step - 1),
      logit_scale: logitScale(),
      ...averages,
      ...(source.skipped ? { skipped: source.skipped() } : {}),
    });
    this.#meter.reset();
    const epochNow = Math.floor((step - 1) / stepsPerEpoch);
    const rate = this.progress.rate();
    tensorboard.scalars(step, {
      ...Object.fromEntries(Object.entries(averages).map(([name, value]) => [`train/${name}`, value])),
      "train/lr": cosineValue(lr, step - 1),
      "train/momentum_ema": emaMomentum(options.momentumEma, step - 1, totalSteps),
      "train/logit_scale": logitScale(),
      ...(ibot
        ? {
          "train/teacher_temp_patch": ibot.teacherTempPatch(epochNow),
          "train/teacher_temp_cls": ibot.teacherTempCls(epochNow),
          "train/student_temp": ibot.studentTemp,
        }
        : {}),
      ...(rate === null ? {} : { "train/images_per_s": rate * this.#imagesPerStep }),
    });
  }

  /** Rank 0 evaluates what is due, logs it everywhere; true when --best-metric improved (rank 0 only). */
  validate(step: number, due: { zeroshot: boolean; val: boolean }): boolean {
    const { rank, validation, model, source, device } = this.run;
    if (rank !== 0) return false;
    const metrics = validation.run({
      model,
      tokenizer: source.tokenizer,
      contextLength: source.contextLength,
      device,
      step,
    }, due);
    this.progress.println(describeValidation(step, metrics));
    this.writers.jsonl.write({
      type: "validation",
      step,
      epoch: Math.floor((step - 1) / this.run.schedule.stepsPerEpoch),
      ...metrics,
    });
    this.writers.tensorboard.scalars(step, metrics);
    const improved = validation.improves(metrics, step);
    if (improved) {
      this.progress.println(`best ${validation.best} so far: ${validation.bestRecord!.value.toFixed(3)}`);
    }
    return improved;
  }

  /** Frees the loss terms not read yet (after a failed step, too). */
  dispose(): void {
    for (const entry of this.#pending) entry.terms.dispose();
    this.#pending = [];
  }
}
