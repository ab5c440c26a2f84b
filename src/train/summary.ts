// summary.ts: what a finished run reports: summary.json (first and last loss, the synthetic zero-shot and retrieval
// before and after), the loss curve, and the lines that describe the synthetic evaluation. The first and last loss
// are means over a window of logged steps, so one noisy step does not decide them.
import type { SyntheticEval } from "./evaluate.ts";
import { lossCurveSvg } from "../viz/loss_curve.ts";
import { writeFileAtomic } from "../fs/atomic_write.ts";

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
export interface StepRecord {
  step: number;
  values: Record<string, number>;
}

/** The summary of a run from its loss history and its synthetic evaluations (null on other data). */
export function summarize(
  run: { model: string; dataset: string; steps: number; seconds: number; outputDir: string },
  history: StepRecord[],
  evalBefore: SyntheticEval | null,
  evalAfter: SyntheticEval | null,
): TrainSummary {
  const losses = history.map((h) => h.values.loss);
  const window = Math.max(1, Math.min(10, Math.floor(losses.length / 4)));
  const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(xs.length, 1);
  return {
    model: run.model,
    dataset: run.dataset,
    steps: run.steps,
    seconds: run.seconds,
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
    output_dir: run.outputDir,
  };
}

/** Writes summary.json and loss_curve.svg into the output folder (rank 0), each atomically. */
export function writeSummaryFiles(outputDir: string, summary: TrainSummary, history: StepRecord[]): void {
  writeFileAtomic(`${outputDir}/summary.json`, JSON.stringify(summary, null, 2) + "\n");
  writeFileAtomic(`${outputDir}/loss_curve.svg`, lossCurve(history));
}

/** The run's last log line: steps, time, rate, loss first -> last, where the summary went. */
export function describeDone(summary: TrainSummary, stepsPerSecond: number): string {
  return `done: ${summary.steps} steps in ${summary.seconds.toFixed(0)} s (${stepsPerSecond.toFixed(2)} steps/s); ` +
    `loss ${summary.loss_first.toFixed(3)} -> ${summary.loss_last.toFixed(3)}; ` +
    `summary ${summary.output_dir}/summary.json, curve ${summary.output_dir}/loss_curve.svg`;
}

export function describeEval(e: SyntheticEval): string {
  return `zero-shot colour top-1 ${e.zeroShotTop1.toFixed(1)}% (chance ${e.chance.toFixed(1)}%), ` +
    `shape ${e.zeroShotShapeTop1.toFixed(1)}% (chance ${e.shapeChance.toFixed(1)}%), ` +
    `image→text R@1 ${e.retrievalR1.toFixed(1)}%, text→image R@1 ${e.retrievalT2IR1.toFixed(1)}%`;
}

/** The synthetic before/after evaluation as TensorBoard scalars. */
export function syntheticScalars(e: SyntheticEval): Record<string, number> {
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
