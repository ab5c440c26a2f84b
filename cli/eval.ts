// eval.ts: `deno task eval <zeroshot|retrieval|probe|segprobe> --checkpoint P [options]`: downstream evaluation of a
// checkpoint, printed as a table and optionally written as JSON (--out) and pictures (--plots). The model, tokenizer
// and image size come from the checkpoint. Zero-shot runs on one dataset (--dataset) or on the official suite
// (--catalog dataset_catalog.json: one row per dataset with the official metric); retrieval on the synthetic set,
// a Karpathy JSON (COCO, Flickr30K), a CSV or webdataset shards. File datasets report the images they had to leave
// out (missing, corrupt), which the metrics exclude.
import { basename } from "node:path";
import { DatasetError, type EvalDataset, syntheticEvalDataset, syntheticSplitOf } from "../src/eval/datasets.ts";
import { catalogTable, officialMetric, readCatalog } from "../src/eval/catalog.ts";
import { FILE_DATASET_KINDS, openFileDataset, parseDatasetSpec } from "../src/eval/dataset_spec.ts";
import { fileEvalDataset } from "../src/eval/file_datasets.ts";
import { ADE20K_CLASSES, ade20kEvalDataset, ade20kRootOf } from "../src/eval/ade20k.ts";
import { loadEvalModel } from "../src/eval/model.ts";
import { confusionMatrixPng, recallCurvePng } from "../src/eval/plots.ts";
import { extractFeatures, linearProbe, segmentationProbe } from "../src/eval/probe.ts";
import { readZeroShotPrompts, runRetrieval, runZeroShot, type ZeroShotPrompts } from "../src/eval/run.ts";
import { SHAPES, SYNTHETIC_DATASET_KEY } from "../src/data/synthetic.ts";
import { type Device } from "../src/torch/mod.ts";
import { UsageError } from "./usage_error.ts";
import { writeFileAtomic } from "../src/fs/atomic_write.ts";
import { type NamedInput, outputOverInputProblem } from "../src/fs/same_file.ts";
import { EXIT, reportFailure } from "./errors.ts";
import { checkOutputDir, checkOutputFile } from "./output_paths.ts";
import { parseDevice, requireDevice } from "../src/torch/device.ts";
import { MAX_THREADS } from "../src/train/options.ts";

const SUBCOMMANDS = ["zeroshot", "retrieval", "probe", "segprobe"] as const;
type Subcommand = typeof SUBCOMMANDS[number];

const kinds = Object.entries(FILE_DATASET_KINDS)
  .map(([kind, [value, what]]) => `      ${`${kind}:${value}`.padEnd(22)} ${what}`)
  .join("\n");

const HELP = `usage: deno task eval <zeroshot|retrieval|probe|segprobe> --checkpoint P [options]

  zeroshot    zero-shot classification: top-1, top-5, mean per-class accuracy (ROC-AUC for two classes)
  retrieval   image→text and text→image recall@1/5/10 (every caption of an image counts)
  probe       linear probe (logistic regression, L2 chosen on a validation fifth) on frozen CLS features; trains
              on the synthetic train split, or on --train-dataset for a file dataset
  segprobe    linear segmentation probe on frozen patch tokens, mIoU: synthetic (background + 6 shapes) or
              ade20k:ROOT (150 classes; trains on ROOT's "training" pairs, scores its "validation" pairs)

model:
  --checkpoint P         a checkpoint (required)
  --ema                  evaluate DetailCLIP's EMA (teacher) towers, as the official eval_zeroshot.py does
  --bpe F                CLIP BPE merges file, for checkpoints that carry no tokenizer (official .pt files)
  --model NAME           model preset overriding the checkpoint's own (official .pt files)

datasets:
  --dataset X            synthetic (default; the val split) | synthetic-heldout | KIND:VALUE, one of
${kinds}
      ${"ade20k:ROOT".padEnd(22)} segprobe only: ADEChallengeData2016 (images/ + annotations/, 8-bit label PNGs)
  --train-dataset X      probe: the KIND:VALUE set the probe trains on (required with a file --dataset)
  --catalog F            zeroshot over an official dataset_catalog.json (needs --labels and --templates), in file
                         order, one row per dataset with its official metric
  --datasets a,b         only these catalog keys
  --root DIR             where relative catalog paths start (default: the working directory); csv: where image
                         paths start (default: the CSV's folder); karpathy: the image folder (default: the JSON's)
  --split S              filelist, karpathy and cifar/stl10/mnist split (default test)
  --labels F             labels.json (official format: dataset key → class names; a list-valued name is synonyms)
  --templates F          templates.json (dataset key → templates with "{}"); both needed together
  --key K                the key in labels.json / templates.json (default ${SYNTHETIC_DATASET_KEY} for synthetic, the
                         kind for cifar10/cifar100/stl10/mnist; required for other file datasets with --labels)
  --csv-img-key C        CSV column of image paths (filepath)
  --csv-label-key C      CSV column of labels, an index or a class name (label)
  --csv-caption-key C    CSV column of captions (title); retrieval groups rows by image path
  --csv-separator S      CSV separator (tab for .tsv, else comma)
  --wds-json-key K       field of webdataset .json members holding the caption or a list of captions (caption)
  --size N               synthetic (and ade20k validation) evaluation images (default 1000)
  --train-size N         probe training images from the synthetic train split or ade20k training (default 2000)

run and output:
  --batch-size N         images per forward (default 200)
  --threads N            image decode threads (default: up to 4)
  --device X             cpu | cuda | cuda:N (default cpu)
  --out F                also write the results as JSON
  --plots DIR            zeroshot: DIR/<dataset>-confusion.png; retrieval: DIR/<dataset>-recall.png (R@1..50)`;

const VALUE_FLAGS = [
  "--checkpoint",
  "--bpe",
  "--model",
  "--dataset",
  "--train-dataset",
  "--catalog",
  "--datasets",
  "--root",
  "--split",
  "--labels",
  "--templates",
  "--key",
  "--csv-img-key",
  "--csv-label-key",
  "--csv-caption-key",
  "--csv-separator",
  "--wds-json-key",
  "--size",
  "--train-size",
  "--batch-size",
  "--threads",
  "--device",
  "--out",
  "--plots",
] as const;

/** The most images --size and --train-size may ask for. */
const MAX_EVAL_IMAGES = 1_000_000;

interface EvalArgs {
  subcommand: Subcommand;
  checkpoint: string;
  ema: boolean;
  values: Map<string, string>;
  dataset: string;
  size: number;
  trainSize: number;
  batchSize: number;
  threads?: number;
  device: Device;
  out?: string;
  plots?: string;
  /** Every file the command reads, by flag: no output may be one of them. */
  inputs: NamedInput[];
}

function parseArgs(args: string[]): EvalArgs {
  const [subcommand, ...rest] = args;
  if (!(SUBCOMMANDS as readonly string[]).includes(subcommand)) {
    throw new UsageError(`expected a subcommand (${SUBCOMMANDS.join(", ")}), got '${subcommand ?? ""}'\n\n${HELP}`);
  }
  const values = new Map<string, string>();
  let ema = false;
  for (let i = 0; i < rest.length; i++) {
    const flag = rest[i];
    if (flag === "--ema") {
      ema = true;
      continue;
    }
    if (!(VALUE_FLAGS as readonly string[]).includes(flag)) throw new UsageError(`unknown option '${flag}'`);
    const value = rest[i + 1];
    if (value === undefined || value.startsWith("--")) throw new UsageError(`${flag} needs a value`);
    values.set(flag, value);
    i += 1;
  }
  // Upper bounds keep a typo (or a hostile value) from a loop over 2^53 synthetic images (docs/errors.md).
  const integer = (flag: string, fallback: number, max: number): number => {
    const raw = values.get(flag);
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1 || n > max) {
      throw new UsageError(`${flag} must be an integer in [1, ${max.toLocaleString("en")}], got '${raw}'`);
    }
    return n;
  };
  const checkpoint = values.get("--checkpoint");
  if (checkpoint === undefined) throw new UsageError("--checkpoint is required");
  if (values.has("--labels") !== values.has("--templates")) {
    throw new UsageError("--labels and --templates go together");
  }
  if (values.has("--catalog")) {
    if (subcommand !== "zeroshot") throw new UsageError("--catalog is for zeroshot");
    if (values.has("--dataset")) throw new UsageError("--catalog and --dataset exclude each other");
    if (!values.has("--labels")) throw new UsageError("--catalog needs --labels and --templates (the official files)");
  } else if (values.has("--datasets")) {
    throw new UsageError("--datasets selects catalog keys; it needs --catalog");
  }
  const dataset = values.get("--dataset") ?? "synthetic";
  const fileDataset = parseDatasetSpec(dataset) !== null;
  if (ade20kRootOf(dataset) !== null && subcommand !== "segprobe") {
    throw new UsageError("--dataset ade20k:ROOT is for segprobe only");
  }
  if (subcommand === "segprobe" && fileDataset) {
    throw new UsageError("segprobe runs on synthetic, synthetic-heldout or ade20k:ROOT (it needs per-pixel labels)");
  }
  if (values.has("--train-dataset") && subcommand !== "probe") throw new UsageError("--train-dataset is for probe");
  if (subcommand === "probe" && fileDataset !== values.has("--train-dataset")) {
    throw new UsageError(
      fileDataset
        ? "probe on a file dataset needs --train-dataset KIND:VALUE (the images the probe is fitted on)"
        : "--train-dataset goes with a file --dataset (the synthetic probe trains on the synthetic train split)",
    );
  }
  const inputs: NamedInput[] = [];
  for (const flag of ["--checkpoint", "--bpe", "--labels", "--templates", "--catalog"]) {
    if (values.has(flag)) inputs.push({ flag, path: values.get(flag)! });
  }
  for (const flag of ["--dataset", "--train-dataset"]) {
    const file = parseDatasetSpec(values.get(flag) ?? "");
    if (file !== null) inputs.push({ flag, path: file.value });
  }
  const out = values.get("--out");
  const overInput = out === undefined ? null : outputOverInputProblem("--out", out, inputs);
  if (overInput !== null) throw new UsageError(overInput);
  return {
    subcommand: subcommand as Subcommand,
    checkpoint,
    ema,
    values,
    dataset,
    size: integer("--size", 1000, MAX_EVAL_IMAGES),
    trainSize: integer("--train-size", 2000, MAX_EVAL_IMAGES),
    batchSize: integer("--batch-size", 200, 65536),
    threads: values.has("--threads") ? integer("--threads", 1, MAX_THREADS) : undefined,
    device: parseDevice(values.get("--device") ?? "cpu"),
    out,
    plots: values.get("--plots"),
    inputs,
  };
}

/** Rows of [metric, value] as an aligned two-column table. */
export function formatTable(rows: [string, string][]): string {
  const width = Math.max(6, ...rows.map(([k]) => k.length));
  const valueWidth = Math.max(5, ...rows.map(([, v]) => v.length));
  const rule = "-".repeat(width + valueWidth + 3);
  return [rule, ...rows.map(([k, v]) => `${k.padEnd(width)} | ${v.padStart(valueWidth)}`), rule].join("\n");
}

/** A header and rows as aligned columns (the first `textColumns` left-aligned, the numbers right-aligned). */
export function formatColumns(header: string[], rows: string[][], textColumns = 1): string {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (cells: string[]): string =>
    cells.map((cell, c) => (c < textColumns ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join(" | ");
  const rule = "-".repeat(widths.reduce((a, b) => a + b + 3, -3));
  return [rule, line(header), rule, ...rows.map(line), rule].join("\n");
}

const pct = (x: number): string => (Number.isNaN(x) ? "n/a" : x.toFixed(1));

function skippedText(total: number, reasons: Record<string, number>): string {
  if (total === 0) return "0";
  return `${total} (${Object.entries(reasons).map(([r, n]) => `${r} ${n}`).join(", ")})`;
}

/** A file-name-safe name for a dataset's pictures: "kind-<last path part without extension>" for file datasets. */
function plotName(name: string): string {
  const colon = name.indexOf(":");
  const short = colon < 0
    ? name
    : `${name.slice(0, colon)}-${basename(name.slice(colon + 1).replace(/\/+$/, "")).replace(/\.[a-z]+$/i, "")}`;
  return short.toLowerCase().replace(/[^a-z0-9._-]+/g, "-").replace(/^-+|-+$/g, "") || "dataset";
}

function writePlot(args: EvalArgs, file: string, png: () => Uint8Array): string | undefined {
  const dir = args.plots;
  if (dir === undefined) return undefined;
  Deno.mkdirSync(dir, { recursive: true });
  const path = `${dir}/${file}`;
  const overInput = outputOverInputProblem("--plots", path, args.inputs);
  if (overInput !== null) throw new UsageError(overInput);
  writeFileAtomic(path, png());
  return path;
}

function displayNames(names: readonly (string | readonly string[])[]): string[] {
  return names.map((n) => (typeof n === "string" ? n : n[0]));
}

interface Outcome {
  table: string;
  results: Record<string, unknown>;
  plots: string[];
  /** Catalog datasets that could not be evaluated (the exit code is then 1). */
  failed?: number;
}

type LoadedModel = ReturnType<typeof loadEvalModel>;

/** The official suite: every (selected) catalog entry in file order, one row each. */
function evaluateCatalog(args: EvalArgs, model: LoadedModel): Outcome {
  const v = args.values;
  const catalogPath = v.get("--catalog")!;
  const entries = readCatalog(catalogPath);
  const wanted = v.get("--datasets")?.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (wanted !== undefined) {
    const unknown = wanted.filter((w) => !entries.some(([key]) => key === w));
    if (unknown.length > 0) {
      throw new DatasetError(
        `${catalogPath} has no ${unknown.join(", ")} (it has ${entries.map(([k]) => k).join(", ")})`,
      );
    }
  }
  const rows: string[][] = [];
  const results: Record<string, unknown> = {};
  const plots: string[] = [];
  const officialValues: number[] = [];
  let failed = 0;
  const skips: Record<string, string> = {};
  for (const [key, entry] of entries) {
    if (wanted !== undefined && !wanted.includes(key)) continue;
    // A dataset that cannot be opened (not downloaded, wrong layout) costs its row, not the rest of the suite.
    let dataset: EvalDataset, prompts: ZeroShotPrompts;
    try {
      prompts = readZeroShotPrompts(v.get("--labels")!, v.get("--templates")!, key);
      const table = catalogTable(key, entry, { root: v.get("--root"), classNames: prompts.classNames });
      try {
        dataset = fileEvalDataset(table, {
          imageSize: model.imageSize,
          threads: args.threads,
          normalize: model.normalize,
        });
      } catch (error) {
        table.close?.();
        throw error;
      }
    } catch (error) {
      if (!(error instanceof DatasetError)) throw error;
      console.error(`detailclip eval: ${key}: ${error.message}`);
      rows.push([key, "error", "-", "", "", "", "", ""]);
      results[key] = { error: error.message };
      failed += 1;
      continue;
    }
    try {
      const r = runZeroShot(model, dataset, { batchSize: args.batchSize, device: args.device, prompts });
      const official = officialMetric(key, r);
      officialValues.push(official.value);
      rows.push([
        key,
        official.metric,
        pct(official.value),
        pct(r.top1),
        pct(r.top5),
        pct(r.meanPerClass),
        String(r.count),
        String(r.skippedTotal),
      ]);
      if (r.skippedTotal > 0) skips[key] = skippedText(r.skippedTotal, r.skipped);
      const { confusion, ...rest } = r;
      results[key] = { ...rest, metric: official.metric, value: official.value };
      const plot = writePlot(
        args,
        `${plotName(key)}-confusion.png`,
        () => confusionMatrixPng(confusion, displayNames(prompts.classNames), `${key} zero-shot`),
      );
      if (plot) plots.push(plot);
    } finally {
      dataset.close?.();
    }
  }
  // The mean of the official metrics over the datasets evaluated (the paper's "average" column when all 26 ran).
  const mean = officialValues.reduce((a, b) => a + b, 0) / officialValues.length;
  if (officialValues.length > 1) rows.push([`average of ${officialValues.length}`, "", pct(mean), "", "", "", "", ""]);
  const header = ["dataset", "metric", "value", "top-1", "top-5", "mean/class", "images", "skipped"];
  const notes = Object.entries(skips).map(([key, text]) => `${key}: skipped ${text}`);
  return {
    table: [formatColumns(header, rows, 2), ...notes].join("\n"),
    results: { datasets: results },
    plots,
    failed,
  };
}

function zeroShotPrompts(args: EvalArgs, kind: string | undefined): ZeroShotPrompts | undefined {
  const v = args.values;
  if (!v.has("--labels")) return undefined;
  const special = kind !== undefined && ["cifar10", "cifar100", "stl10", "mnist"].includes(kind);
  const key = v.get("--key") ?? (kind === undefined ? SYNTHETIC_DATASET_KEY : special ? kind : undefined);
  if (key === undefined) throw new UsageError(`--dataset ${kind}:... with --labels needs --key (the dataset's key)`);
  return readZeroShotPrompts(v.get("--labels")!, v.get("--templates")!, key);
}

function evaluate(args: EvalArgs): Outcome {
  const v = args.values;
  requireDevice(args.device);
  const spec = parseDatasetSpec(args.dataset);
  const adeRoot = ade20kRootOf(args.dataset);
  if (spec === null && adeRoot === null && v.get("--catalog") === undefined) {
    syntheticSplitOf(args.dataset); // fail before loading
  }
  // Official .pt checkpoints carry no tokenizer (--bpe) and may need a preset other than their args.model (--model).
  const modelOptions: Parameters<typeof loadEvalModel>[1] = {
    ema: args.ema,
    device: args.device,
    ...(v.has("--bpe") ? { bpe: v.get("--bpe") } : {}),
    ...(v.has("--model") ? { model: v.get("--model") } : {}),
  };
  const model = loadEvalModel(args.checkpoint, modelOptions);
  try {
    if (v.has("--catalog")) return evaluateCatalog(args, model);
    const run = { batchSize: args.batchSize, device: args.device };
    const synthetic = (split: "train" | "val" | "heldout", size: number, objects?: number): EvalDataset =>
      syntheticEvalDataset({ split, imageSize: model.imageSize, size, objects });
    if (adeRoot !== null) return { ...ade20kProbe(args, model, adeRoot), plots: [] };
    const testSplit = spec === null ? syntheticSplitOf(args.dataset) : "val";
    const task = args.subcommand === "retrieval" ? "retrieval" : "classification";
    const prompts = args.subcommand === "zeroshot" ? zeroShotPrompts(args, spec?.kind) : undefined;
    // Single-object synthetic images for classification: the main shape is then the whole picture.
    const testSet = (objects?: number): EvalDataset =>
      spec === null ? synthetic(testSplit, args.size, objects) : openFileDataset(args.dataset, {
        ...fileDatasetOptions(args, task, model.imageSize, prompts),
        normalize: model.normalize,
      });
    const name = plotName(args.dataset);
    switch (args.subcommand) {
      case "zeroshot": {
        const dataset = testSet(1);
        try {
          const r = runZeroShot(model, dataset, { ...run, prompts });
          const rows: [string, string][] = [["top-1", pct(r.top1)], ["top-5", pct(r.top5)], [
            "mean per-class",
            pct(r.meanPerClass),
          ]];
          if (r.rocAuc !== undefined) rows.push(["ROC-AUC", pct(r.rocAuc)]);
          rows.push(["images", String(r.count)], ["skipped", skippedText(r.skippedTotal, r.skipped)]);
          rows.push(["classes × templates", `${r.classes} × ${r.templates}`]);
          const { confusion, ...results } = r;
          const classNames = displayNames(prompts?.classNames ?? dataset.classNames ?? []);
          const plot = writePlot(
            args,
            `${name}-confusion.png`,
            () => confusionMatrixPng(confusion, classNames, `${dataset.name} zero-shot`),
          );
          return { table: formatTable(rows), results: { ...results, confusion }, plots: plot ? [plot] : [] };
        } finally {
          dataset.close?.();
        }
      }
      case "retrieval": {
        const dataset = testSet();
        try {
          const r = runRetrieval(model, dataset, { ...run, curveK: 50 });
          const rows: [string, string][] = [];
          for (const k of [1, 5, 10]) rows.push([`I2T R@${k}`, pct(r.imageToText[k])]);
          for (const k of [1, 5, 10]) rows.push([`T2I R@${k}`, pct(r.textToImage[k])]);
          rows.push(["images / texts", `${r.images} / ${r.texts}`]);
          rows.push(["skipped", skippedText(r.skippedTotal, r.skipped)]);
          const plot = writePlot(args, `${name}-recall.png`, () =>
            recallCurvePng([
              { label: "image→text", recall: r.imageToTextCurve },
              { label: "text→image", recall: r.textToImageCurve },
            ], `${dataset.name} retrieval`));
          return { table: formatTable(rows), results: { ...r }, plots: plot ? [plot] : [] };
        } finally {
          dataset.close?.();
        }
      }
      case "probe":
        if (spec !== null) return { ...fileProbe(args, model), plots: [] };
        return { ...probe(args, model, testSplit), plots: [] };
      case "segprobe":
        return { ...probe(args, model, testSplit), plots: [] };
    }
  } finally {
    model.dispose();
  }
}

/** What openFileDataset needs from the command line. */
function fileDatasetOptions(
  args: EvalArgs,
  task: "classification" | "retrieval",
  imageSize: number,
  prompts?: ZeroShotPrompts,
): Parameters<typeof openFileDataset>[1] {
  const v = args.values;
  return {
    task,
    imageSize,
    root: v.get("--root"),
    split: v.get("--split"),
    key: v.get("--key"),
    classNames: prompts?.classNames,
    csvImageKey: v.get("--csv-img-key"),
    csvLabelKey: v.get("--csv-label-key"),
    csvCaptionKey: v.get("--csv-caption-key"),
    csvSeparator: v.get("--csv-separator"),
    jsonField: v.get("--wds-json-key"),
    threads: args.threads,
  };
}

/** The linear probe on file datasets: fitted on --train-dataset, scored on --dataset (both classification sets). */
function fileProbe(args: EvalArgs, model: LoadedModel): { table: string; results: Record<string, unknown> } {
  const run = { batchSize: args.batchSize, device: args.device };
  // Class names (--labels/--key) let label columns hold names; the probe itself needs only indices.
  const prompts = zeroShotPrompts(args, parseDatasetSpec(args.dataset)?.kind);
  const options = {
    ...fileDatasetOptions(args, "classification", model.imageSize, prompts),
    normalize: model.normalize,
  };
  const trainSet = openFileDataset(args.values.get("--train-dataset")!, options);
  let train, test;
  try {
    train = extractFeatures(model.tower, trainSet, run);
  } finally {
    trainSet.close?.();
  }
  const testSet = openFileDataset(args.dataset, options);
  try {
    test = extractFeatures(model.tower, testSet, run);
  } catch (error) {
    train.dispose();
    throw error;
  } finally {
    testSet.close?.();
  }
  try {
    // Classes: the datasets' own class lists when they have them, else every label either side has seen.
    const maxLabel = Math.max(-1, ...train.labels, ...test.labels);
    const named = Math.max(trainSet.classNames?.length ?? 0, testSet.classNames?.length ?? 0);
    const classes = Math.max(named, maxLabel + 1);
    if (classes < 2) throw new DatasetError(`probe: the datasets have ${classes} class(es); a probe needs two`);
    const r = linearProbe(train, test, { classes });
    return {
      table: formatTable([["top-1", pct(r.top1)], ["top-5", pct(r.top5)], ["chosen L2", String(r.l2)], [
        "train / test",
        `${r.trainSize} / ${r.testSize}`,
      ], ["classes", String(classes)]]),
      results: { ...r, classes },
    };
  } finally {
    train.dispose();
    test.dispose();
  }
}

/** segprobe on ADE20K: trains on the first --train-size "training" pairs, scores the first --size "validation" ones. */
function ade20kProbe(
  args: EvalArgs,
  model: LoadedModel,
  root: string,
): { table: string; results: Record<string, unknown> } {
  const run = { batchSize: args.batchSize, device: args.device };
  const size = model.imageSize;
  const trainSet = ade20kEvalDataset({ root, split: "training", imageSize: size, size: args.trainSize });
  const testSet = ade20kEvalDataset({ root, split: "validation", imageSize: size, size: args.size });
  const train = extractFeatures(model.tower, trainSet, { ...run, patches: true });
  let test;
  try {
    test = extractFeatures(model.tower, testSet, { ...run, patches: true });
  } catch (error) {
    train.dispose();
    throw error;
  }
  try {
    // 150 classes at 224 px make B·150·S² logits: a smaller probe batch than the synthetic default of 100.
    const r = segmentationProbe(train, test, { classes: ADE20K_CLASSES.length, imageSize: size, batchSize: 16 });
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

function probe(
  args: EvalArgs,
  model: LoadedModel,
  split: "train" | "val" | "heldout",
): { table: string; results: Record<string, unknown> } {
  const run = { batchSize: args.batchSize, device: args.device };
  const testSet = (objects?: number): EvalDataset =>
    syntheticEvalDataset({ split, imageSize: model.imageSize, size: args.size, objects });
  // Probe training images: the train split (never the evaluation split), unaugmented.
  const trainSet = (objects?: number): EvalDataset =>
    syntheticEvalDataset({ split: "train", imageSize: model.imageSize, size: args.trainSize, objects });
  if (args.subcommand === "probe") {
    const train = extractFeatures(model.tower, trainSet(1), run);
    const test = extractFeatures(model.tower, testSet(1), run);
    try {
      const r = linearProbe(train, test, { classes: SHAPES.length });
      return {
        table: formatTable([["top-1", pct(r.top1)], ["top-5", pct(r.top5)], ["chosen L2", String(r.l2)], [
          "train / test",
          `${r.trainSize} / ${r.testSize}`,
        ]]),
        results: { ...r },
      };
    } finally {
      train.dispose();
      test.dispose();
    }
  }
  const train = extractFeatures(model.tower, trainSet(), { ...run, patches: true });
  const test = extractFeatures(model.tower, testSet(), { ...run, patches: true });
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

/** Runs one evaluation command and returns its exit code (synchronous: every step is). */
export function runEval(args: string[]): number {
  if (args.length === 0 || args.includes("--help") || args.includes("-h")) {
    console.log(HELP);
    return args.length === 0 ? 2 : 0;
  }
  const parsed = parseArgs(args);
  if (parsed.out !== undefined) checkOutputFile(parsed.out, "--out"); // before any work
  if (parsed.plots !== undefined) checkOutputDir(parsed.plots, "--plots");
  let outcome;
  try {
    outcome = evaluate(parsed);
  } catch (error) {
    return reportFailure("eval", error); // one line and the documented status (docs/errors.md)
  }
  const towers = parsed.ema ? "EMA towers" : "student towers";
  const source = parsed.values.get("--catalog") ?? parsed.dataset;
  console.log(`${parsed.subcommand} · ${source} · ${parsed.checkpoint} (${towers})\n${outcome.table}`);
  for (const plot of outcome.plots) console.log(`wrote ${plot}`);
  if (parsed.out !== undefined) {
    const record = {
      command: parsed.subcommand,
      checkpoint: parsed.checkpoint,
      ema: parsed.ema,
      dataset: source,
      results: outcome.results,
    };
    // NaN (a class absent from the test set) is not JSON; write null instead of a string that hides it.
    writeFileAtomic(parsed.out, JSON.stringify(record, (_k, v) => (Number.isNaN(v) ? null : v), 2) + "\n");
    console.log(`wrote ${parsed.out}`);
  }
  return (outcome.failed ?? 0) > 0 ? EXIT.data : 0; // some catalog data set could not be evaluated
}

export function main(args: string[]): Promise<number> {
  return Promise.resolve(runEval(args));
}
