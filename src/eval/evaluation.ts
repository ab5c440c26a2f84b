// evaluation.ts: one evaluation of a checkpoint, what `deno task eval` runs after reading its flags: load the model
// (tokenizer and image size come from the checkpoint), open the dataset the request names, run zero-shot, retrieval,
// a probe or the official catalog, and return the printed table with a JSON-ready record. Pictures go to the caller's
// PlotSink; the model is disposed whatever fails.
import { SYNTHETIC_DATASET_KEY, type SyntheticSplit } from "../data/synthetic.ts";
import type { Device } from "../torch/mod.ts";
import { ade20kRootOf } from "./ade20k.ts";
import { plotFileName, type PlotSink, runCatalog } from "./catalog_run.ts";
import { type DatasetSpecOptions, openFileDataset, parseDatasetSpec } from "./dataset_spec.ts";
import { DatasetError, type EvalDataset, syntheticEvalDataset, syntheticSplitOf } from "./datasets.ts";
import { type EvalModel, loadEvalModel, type LoadEvalModelOptions } from "./model.ts";
import { confusionMatrixPng, recallCurvePng } from "./plots.ts";
import { ade20kSegProbe, fileLinearProbe, syntheticLinearProbe, syntheticSegProbe } from "./probe_run.ts";
import { displayNames, formatTable, pct, skippedText } from "./report_table.ts";
import { readZeroShotPrompts, runRetrieval, runZeroShot, type ZeroShotPrompts } from "./run.ts";

/** The evaluations `deno task eval` runs, by subcommand name. */
export const EVAL_TASKS = ["zeroshot", "retrieval", "probe", "segprobe"] as const;
/** One of EVAL_TASKS. */
export type EvalTask = typeof EVAL_TASKS[number];

/** File datasets' reading options (the CLI's --root, --split, --csv-*, --wds-json-key, --key). */
export type FileDatasetFlags = Omit<DatasetSpecOptions, "task" | "imageSize" | "normalize" | "classNames" | "threads">;

/** What to evaluate and how (the CLI's flags, checked: see `deno task eval --help`). */
export interface EvalRequest {
  task: EvalTask;
  checkpoint: string;
  /** DetailCLIP's EMA (teacher) towers. */
  ema?: boolean;
  /** A CLIP BPE merges file, for checkpoints without a tokenizer; a preset overriding the checkpoint's. */
  bpe?: string;
  model?: string;
  /** synthetic (default), synthetic-heldout, KIND:VALUE or ade20k:ROOT. */
  dataset?: string;
  /** probe on a file dataset: the KIND:VALUE set it is fitted on. */
  trainDataset?: string;
  /** zeroshot over an official dataset_catalog.json (needs labels and templates), optionally only some keys. */
  catalog?: string;
  datasets?: readonly string[];
  /** labels.json and templates.json; `files.key` picks the entry (default: the synthetic key or the special kind). */
  labels?: string;
  templates?: string;
  files?: FileDatasetFlags;
  /** Synthetic (and ADE20K validation) images; probe training images (defaults 1000, 2000). */
  size?: number;
  trainSize?: number;
  batchSize?: number;
  threads?: number;
  device?: Device;
  writePlot?: PlotSink;
  /** Told of each catalog dataset that could not be opened. */
  onDatasetError?: (key: string, error: DatasetError) => void;
}

/** The printed table, the JSON record, pictures written, catalog datasets that failed (the exit status is then 5). */
export interface EvalReport {
  table: string;
  results: Record<string, unknown>;
  plots: string[];
  failed: number;
}

/** Kinds whose labels.json key is the kind itself. */
const SPECIAL_KINDS = ["cifar10", "cifar100", "stl10", "mnist"];

/** The labels.json key of a dataset: the given one, else the synthetic key or a special kind's name; null if none. */
export function promptKey(kind: string | undefined, key: string | undefined): string | null {
  return key ?? (kind === undefined ? SYNTHETIC_DATASET_KEY : SPECIAL_KINDS.includes(kind) ? kind : null);
}

function zeroShotPrompts(request: EvalRequest, kind: string | undefined): ZeroShotPrompts | undefined {
  if (request.labels === undefined || request.templates === undefined) return undefined;
  const key = promptKey(kind, request.files?.key);
  if (key === null) throw new DatasetError(`--dataset ${kind}:... with --labels needs --key (the dataset's key)`);
  return readZeroShotPrompts(request.labels, request.templates, key);
}

/** Runs one evaluation; throws the library's typed errors (DatasetError, EvalModelError, CheckpointError, ...). */
export function evaluateCheckpoint(request: EvalRequest): EvalReport {
  const dataset = request.dataset ?? "synthetic";
  const spec = parseDatasetSpec(dataset);
  const adeRoot = ade20kRootOf(dataset);
  if (spec === null && adeRoot === null && request.catalog === undefined) syntheticSplitOf(dataset); // before loading
  // The CLI refuses these combinations as usage errors; a library caller learns of them before the model loads.
  if (request.catalog !== undefined && request.task !== "zeroshot") throw new DatasetError("a catalog is for zeroshot");
  if (adeRoot !== null && request.task !== "segprobe") throw new DatasetError(`${dataset} is for segprobe only`);
  if (request.catalog !== undefined && (request.labels === undefined || request.templates === undefined)) {
    throw new DatasetError("a catalog needs labels.json and templates.json");
  }
  if (spec !== null && request.task === "probe" && request.trainDataset === undefined) {
    throw new DatasetError(`a probe on ${dataset} needs a train dataset (trainDataset)`);
  }
  if (spec !== null && request.task === "segprobe") {
    throw new DatasetError(`segprobe needs per-pixel labels (synthetic or ade20k:ROOT), not ${dataset}`);
  }
  // Official .pt checkpoints carry no tokenizer (bpe) and may need a preset other than their args.model (model).
  const modelOptions: LoadEvalModelOptions = {
    ema: request.ema ?? false,
    device: request.device ?? "cpu",
    ...(request.bpe !== undefined ? { bpe: request.bpe } : {}),
    ...(request.model !== undefined ? { model: request.model } : {}),
  };
  const model = loadEvalModel(request.checkpoint, modelOptions);
  try {
    return evaluateModel(model, { ...request, dataset }, spec, adeRoot);
  } finally {
    model.dispose();
  }
}

function evaluateModel(
  model: EvalModel,
  request: EvalRequest & { dataset: string },
  spec: { kind: string } | null,
  adeRoot: string | null,
): EvalReport {
  const run = { batchSize: request.batchSize ?? 200, device: request.device ?? "cpu" };
  const size = request.size ?? 1000, trainSize = request.trainSize ?? 2000;
  const probe = (report: { table: string; results: Record<string, unknown> }): EvalReport => ({
    ...report,
    plots: [],
    failed: 0,
  });
  if (request.catalog !== undefined) {
    return runCatalog(model, {
      ...run,
      catalog: request.catalog,
      labels: request.labels!,
      templates: request.templates!,
      datasets: request.datasets,
      root: request.files?.root,
      threads: request.threads,
      writePlot: request.writePlot,
      onDatasetError: request.onDatasetError,
    });
  }
  if (adeRoot !== null) return probe(ade20kSegProbe(model, adeRoot, { ...run, size, trainSize }));
  const split: SyntheticSplit = spec === null ? syntheticSplitOf(request.dataset) : "val";
  const files = { ...request.files, threads: request.threads };
  if (request.task === "probe") {
    if (spec === null) return probe(syntheticLinearProbe(model, { ...run, split, size, trainSize }));
    // Class names (labels/key) let label columns hold names; the probe itself needs only indices.
    const classNames = zeroShotPrompts(request, spec.kind)?.classNames;
    return probe(
      fileLinearProbe(model, request.trainDataset!, request.dataset, { ...run, files: { ...files, classNames } }),
    );
  }
  if (request.task === "segprobe") return probe(syntheticSegProbe(model, { ...run, split, size, trainSize }));
  const task = request.task === "retrieval" ? "retrieval" : "classification";
  const prompts = request.task === "zeroshot" ? zeroShotPrompts(request, spec?.kind) : undefined;
  // Single-object synthetic images for classification: the main shape is then the whole picture.
  const testSet: EvalDataset = spec === null
    ? syntheticEvalDataset({ split, imageSize: model.imageSize, size, objects: task === "retrieval" ? undefined : 1 })
    : openFileDataset(request.dataset, {
      ...files,
      task,
      imageSize: model.imageSize,
      classNames: prompts?.classNames,
      normalize: model.normalize,
    });
  try {
    const name = plotFileName(request.dataset);
    const plots = (path: string | undefined): string[] => (path ? [path] : []);
    if (request.task === "zeroshot") {
      const r = runZeroShot(model, testSet, { ...run, prompts });
      const rows: [string, string][] = [
        ["top-1", pct(r.top1)],
        ["top-5", pct(r.top5)],
        ["mean per-class", pct(r.meanPerClass)],
      ];
      if (r.rocAuc !== undefined) rows.push(["ROC-AUC", pct(r.rocAuc)]);
      rows.push(["images", String(r.count)], ["skipped", skippedText(r.skippedTotal, r.skipped)]);
      rows.push(["classes × templates", `${r.classes} × ${r.templates}`]);
      const classNames = displayNames(prompts?.classNames ?? testSet.classNames ?? []);
      const plot = request.writePlot?.(
        `${name}-confusion.png`,
        () => confusionMatrixPng(r.confusion, classNames, `${testSet.name} zero-shot`),
      );
      const { confusion, ...rest } = r; // the record keeps the matrix last, after the metrics
      return { table: formatTable(rows), results: { ...rest, confusion }, plots: plots(plot), failed: 0 };
    }
    const r = runRetrieval(model, testSet, { ...run, curveK: 50 });
    const rows: [string, string][] = [];
    for (const k of [1, 5, 10]) rows.push([`I2T R@${k}`, pct(r.imageToText[k])]);
    for (const k of [1, 5, 10]) rows.push([`T2I R@${k}`, pct(r.textToImage[k])]);
    rows.push(["images / texts", `${r.images} / ${r.texts}`]);
    rows.push(["skipped", skippedText(r.skippedTotal, r.skipped)]);
    const plot = request.writePlot?.(`${name}-recall.png`, () =>
      recallCurvePng([
        { label: "image→text", recall: r.imageToTextCurve },
        { label: "text→image", recall: r.textToImageCurve },
      ], `${testSet.name} retrieval`));
    return { table: formatTable(rows), results: { ...r }, plots: plots(plot), failed: 0 };
  } finally {
    testSet.close?.();
  }
}
