// probe_run.ts: the probe drivers behind `deno task eval probe|segprobe`: open the train and test sets, extract frozen
// features with the checkpoint's image tower, fit and score the probe, and report a table and a JSON-ready record.
// Four of them: the linear probe on synthetic shapes or on two file datasets, and the segmentation probe on synthetic
// masks or ADE20K. Features are disposed whatever fails; datasets are closed as soon as their features exist.
import { SHAPES, type SyntheticSplit } from "../data/synthetic.ts";
import { ADE20K_CLASSES, ade20kEvalDataset } from "./ade20k.ts";
import { type DatasetSpecOptions, openFileDataset } from "./dataset_spec.ts";
import { DatasetError, type EvalDataset, syntheticEvalDataset } from "./datasets.ts";
import type { EvalModel } from "./model.ts";
import { extractFeatures, type Features, linearProbe, segmentationProbe } from "./probe.ts";
import { formatTable, pct } from "./report_table.ts";
import type { RunOptions } from "./run.ts";

/** What a probe driver returns: the printed table and the record `--out` writes. */
export interface ProbeReport {
  table: string;
  results: Record<string, unknown>;
}

/** Synthetic probes: test images from `split`, training images from the train split (never the evaluation split). */
export interface SyntheticProbeOptions extends RunOptions {
  split: SyntheticSplit;
  /** Test images (the CLI's --size). */
  size: number;
  /** Training images (--train-size). */
  trainSize: number;
}

/** Features of `open()`'s dataset, the dataset closed afterwards (and `alsoDispose` disposed if extraction fails). */
function featuresOf(
  model: EvalModel,
  open: () => EvalDataset,
  run: RunOptions & { patches?: boolean },
  alsoDispose?: Features,
): Features {
  let dataset: EvalDataset | undefined;
  try {
    dataset = open();
    return extractFeatures(model.tower, dataset, run);
  } catch (error) {
    alsoDispose?.dispose();
    throw error;
  } finally {
    dataset?.close?.();
  }
}

/**
 * How many classes a probe over these labels has: the datasets' named classes, or every label either side has seen
 * when that is more. A loop, not Math.max(...labels): spreading an ImageNet-sized array overflows the call stack.
 */
export function probeClasses(named: number, ...labelSets: ArrayLike<number>[]): number {
  let maxLabel = -1;
  for (const labels of labelSets) {
    for (let i = 0; i < labels.length; i++) if (labels[i] > maxLabel) maxLabel = labels[i];
  }
  return Math.max(named, maxLabel + 1);
}

function linearReport(r: ReturnType<typeof linearProbe>, classes?: number): ProbeReport {
  const rows: [string, string][] = [["top-1", pct(r.top1)], ["top-5", pct(r.top5)], ["chosen L2", String(r.l2)], [
    "train / test",
    `${r.trainSize} / ${r.testSize}`,
  ]];
  if (classes === undefined) return { table: formatTable(rows), results: { ...r } };
  rows.push(["classes", String(classes)]);
  return { table: formatTable(rows), results: { ...r, classes } };
}

/** The linear probe on single-object synthetic images: the class is the shape. */
export function syntheticLinearProbe(model: EvalModel, options: SyntheticProbeOptions): ProbeReport {
  const run = { batchSize: options.batchSize, device: options.device };
  const set = (split: SyntheticSplit, size: number) => () =>
    syntheticEvalDataset({ split, imageSize: model.imageSize, size, objects: 1 });
  const train = featuresOf(model, set("train", options.trainSize), run);
  const test = featuresOf(model, set(options.split, options.size), run, train);
  try {
    return linearReport(linearProbe(train, test, { classes: SHAPES.length }));
  } finally {
    train.dispose();
    test.dispose();
  }
}

/** The segmentation probe on synthetic masks: background and the six shapes, per-class IoU. */
export function syntheticSegProbe(model: EvalModel, options: SyntheticProbeOptions): ProbeReport {
  const run = { batchSize: options.batchSize, device: options.device, patches: true };
  const set = (split: SyntheticSplit, size: number) => () =>
    syntheticEvalDataset({ split, imageSize: model.imageSize, size });
  const train = featuresOf(model, set("train", options.trainSize), run);
  const test = featuresOf(model, set(options.split, options.size), run, train);
  try {
    const r = segmentationProbe(train, test, { classes: 1 + SHAPES.length, imageSize: model.imageSize });
    const names = ["background", ...SHAPES];
    return {
      table: formatTable([
        ["mIoU", pct(r.mIoU)],
        ["pixel accuracy", pct(r.pixelAccuracy)],
        ...names.map((name, c): [string, string] => [`IoU ${name}`, pct(r.iou[c])]),
        ["train / test", `${r.trainSize} / ${r.testSize}`],
      ]),
      results: { ...r, classNames: names },
    };
  } finally {
    train.dispose();
    test.dispose();
  }
}

/** The linear probe on file datasets: fitted on `trainSpec`, scored on `testSpec` (both KIND:VALUE classification sets). */
export function fileLinearProbe(
  model: EvalModel,
  trainSpec: string,
  testSpec: string,
  options: RunOptions & { files: Omit<DatasetSpecOptions, "task" | "imageSize" | "normalize"> },
): ProbeReport {
  const run = { batchSize: options.batchSize, device: options.device };
  const fileOptions: DatasetSpecOptions = {
    ...options.files,
    task: "classification",
    imageSize: model.imageSize,
    normalize: model.normalize,
  };
  let named = 0;
  const open = (spec: string) => (): EvalDataset => {
    const dataset = openFileDataset(spec, fileOptions);
    named = Math.max(named, dataset.classNames?.length ?? 0);
    return dataset;
  };
  const train = featuresOf(model, open(trainSpec), run);
  const test = featuresOf(model, open(testSpec), run, train);
  try {
    // Classes: the datasets' own class lists when they have them, else every label either side has seen.
    const classes = probeClasses(named, train.labels, test.labels);
    if (classes < 2) throw new DatasetError(`probe: the datasets have ${classes} class(es); a probe needs two`);
    return linearReport(linearProbe(train, test, { classes }), classes);
  } finally {
    train.dispose();
    test.dispose();
  }
}

/** segprobe on ADE20K: trains on the first `trainSize` "training" pairs, scores the first `size` "validation" ones. */
export function ade20kSegProbe(
  model: EvalModel,
  root: string,
  options: RunOptions & { size: number; trainSize: number },
): ProbeReport {
  const run = { batchSize: options.batchSize, device: options.device, patches: true };
  const imageSize = model.imageSize;
  const trainSet = ade20kEvalDataset({ root, split: "training", imageSize, size: options.trainSize });
  const testSet = ade20kEvalDataset({ root, split: "validation", imageSize, size: options.size });
  const train = featuresOf(model, () => trainSet, run);
  const test = featuresOf(model, () => testSet, run, train);
  try {
    // 150 classes at 224 px make B·150·S² logits: a smaller probe batch than the synthetic default of 100.
    const r = segmentationProbe(train, test, { classes: ADE20K_CLASSES.length, imageSize, batchSize: 16 });
    const skipped = { training: trainSet.skipped(), validation: testSet.skipped() };
    const count = (o: Record<string, number>): number => Object.values(o).reduce((a, b) => a + b, 0);
    return {
      table: formatTable([
        ["mIoU (150 classes)", pct(r.mIoU)],
        ["pixel accuracy", pct(r.pixelAccuracy)],
        ["train / test", `${r.trainSize} / ${r.testSize}`],
        ["skipped train / val", `${count(skipped.training)} / ${count(skipped.validation)}`],
      ]),
      results: {
        ...r,
        classNames: ADE20K_CLASSES,
        skipped,
        imagesWithUnknownLabels: {
          training: trainSet.imagesWithUnknownLabels(),
          validation: testSet.imagesWithUnknownLabels(),
        },
      },
    };
  } finally {
    train.dispose();
    test.dispose();
  }
}
