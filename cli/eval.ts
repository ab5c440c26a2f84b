// eval.ts: `deno task eval <zeroshot|retrieval|probe|segprobe> --checkpoint P [options]`: downstream evaluation of a
// checkpoint, printed as a table and optionally written as JSON (--out) and pictures (--plots). This file reads and
// checks the flags; the evaluation itself is src/eval/evaluation.ts (catalog: catalog_run.ts, probes: probe_run.ts).
import { FILE_DATASET_KINDS, parseDatasetSpec } from "../src/eval/dataset_spec.ts";
import { ade20kRootOf } from "../src/eval/ade20k.ts";
import { EVAL_TASKS, type EvalRequest, type EvalTask, evaluateCheckpoint, promptKey } from "../src/eval/evaluation.ts";
import { SYNTHETIC_DATASET_KEY } from "../src/data/synthetic.ts";
import { UsageError } from "./usage_error.ts";
import { writeFileAtomic } from "../src/fs/atomic_write.ts";
import { type NamedInput, outputOverInputProblem } from "../src/fs/same_file.ts";
import { EXIT, reportFailure } from "./errors.ts";
import { checkOutputDir, checkOutputFile } from "./output_paths.ts";
import { parseDevice, requireDevice } from "../src/torch/device.ts";
import { MAX_THREADS } from "../src/train/options.ts";
import { type Flags, integerFlag, parseFlags } from "./args.ts";

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
];

/** The most images --size and --train-size may ask for. */
const MAX_EVAL_IMAGES = 1_000_000;

/** The cross-flag rules (the flags themselves are read by parseFlags). */
function checkCombinations(task: EvalTask, flags: Flags): void {
  const has = (flag: string): boolean => flags.values.has(flag);
  if (!has("--checkpoint")) throw new UsageError("--checkpoint is required");
  if (has("--labels") !== has("--templates")) throw new UsageError("--labels and --templates go together");
  if (has("--catalog")) {
    if (task !== "zeroshot") throw new UsageError("--catalog is for zeroshot");
    if (has("--dataset")) throw new UsageError("--catalog and --dataset exclude each other");
    if (!has("--labels")) throw new UsageError("--catalog needs --labels and --templates (the official files)");
  } else if (has("--datasets")) {
    throw new UsageError("--datasets selects catalog keys; it needs --catalog");
  }
  const dataset = flags.values.get("--dataset") ?? "synthetic";
  const spec = parseDatasetSpec(dataset);
  if (ade20kRootOf(dataset) !== null && task !== "segprobe") {
    throw new UsageError("--dataset ade20k:ROOT is for segprobe only");
  }
  if (task === "segprobe" && spec !== null) {
    throw new UsageError("segprobe runs on synthetic, synthetic-heldout or ade20k:ROOT (it needs per-pixel labels)");
  }
  if (has("--train-dataset") && task !== "probe") throw new UsageError("--train-dataset is for probe");
  if (task === "probe" && (spec !== null) !== has("--train-dataset")) {
    throw new UsageError(
      spec !== null
        ? "probe on a file dataset needs --train-dataset KIND:VALUE (the images the probe is fitted on)"
        : "--train-dataset goes with a file --dataset (the synthetic probe trains on the synthetic train split)",
    );
  }
  const namesClasses = task === "zeroshot" || (task === "probe" && spec !== null);
  if (
    namesClasses && has("--labels") && !has("--catalog") && promptKey(spec?.kind, flags.values.get("--key")) === null
  ) {
    throw new UsageError(`--dataset ${spec?.kind}:... with --labels needs --key (the dataset's key)`);
  }
}

/** Reads the command line into a request for src/eval, with the files it reads (no output may be one of them). */
function parseEvalArgs(args: string[]): { request: EvalRequest; inputs: NamedInput[]; out?: string; plots?: string } {
  const [task, ...rest] = args;
  if (!(EVAL_TASKS as readonly string[]).includes(task)) {
    throw new UsageError(`expected a subcommand (${EVAL_TASKS.join(", ")}), got '${task ?? ""}'\n\n${HELP}`);
  }
  const flags = parseFlags(rest, { values: VALUE_FLAGS, booleans: ["--ema"] });
  checkCombinations(task as EvalTask, flags);
  const v = flags.values;
  const inputs: NamedInput[] = [];
  for (const flag of ["--checkpoint", "--bpe", "--labels", "--templates", "--catalog"]) {
    if (v.has(flag)) inputs.push({ flag, path: v.get(flag)! });
  }
  for (const flag of ["--dataset", "--train-dataset"]) {
    const file = parseDatasetSpec(v.get(flag) ?? "");
    if (file !== null) inputs.push({ flag, path: file.value });
  }
  const out = v.get("--out");
  const overInput = out === undefined ? null : outputOverInputProblem("--out", out, inputs);
  if (overInput !== null) throw new UsageError(overInput);
  const request: EvalRequest = {
    task: task as EvalTask,
    checkpoint: v.get("--checkpoint")!,
    ema: flags.booleans.has("--ema"),
    bpe: v.get("--bpe"),
    model: v.get("--model"),
    dataset: v.get("--dataset") ?? "synthetic",
    trainDataset: v.get("--train-dataset"),
    catalog: v.get("--catalog"),
    datasets: v.get("--datasets")?.split(",").map((s) => s.trim()).filter((s) => s !== ""),
    labels: v.get("--labels"),
    templates: v.get("--templates"),
    files: {
      root: v.get("--root"),
      split: v.get("--split"),
      key: v.get("--key"),
      csvImageKey: v.get("--csv-img-key"),
      csvLabelKey: v.get("--csv-label-key"),
      csvCaptionKey: v.get("--csv-caption-key"),
      csvSeparator: v.get("--csv-separator"),
      jsonField: v.get("--wds-json-key"),
    },
    size: integerFlag(flags, "--size", 1000, MAX_EVAL_IMAGES),
    trainSize: integerFlag(flags, "--train-size", 2000, MAX_EVAL_IMAGES),
    batchSize: integerFlag(flags, "--batch-size", 200, 65536),
    threads: v.has("--threads") ? integerFlag(flags, "--threads", 1, MAX_THREADS) : undefined,
    device: parseDevice(v.get("--device") ?? "cpu"),
  };
  return { request, inputs, out, plots: v.get("--plots") };
}

/** Runs one evaluation command and returns its exit code (synchronous: every step is). */
export function runEval(args: string[]): number {
  if (args.length === 0 || args.includes("--help") || args.includes("-h")) {
    console.log(HELP);
    return args.length === 0 ? 2 : 0;
  }
  const { request, inputs, out, plots } = parseEvalArgs(args);
  if (out !== undefined) checkOutputFile(out, "--out"); // before any work
  if (plots !== undefined) checkOutputDir(plots, "--plots");
  request.writePlot = plots === undefined ? undefined : (file, png) => {
    Deno.mkdirSync(plots, { recursive: true });
    const path = `${plots}/${file}`;
    const overInput = outputOverInputProblem("--plots", path, inputs);
    if (overInput !== null) throw new UsageError(overInput);
    writeFileAtomic(path, png());
    return path;
  };
  request.onDatasetError = (key, error) => console.error(`detailclip eval: ${key}: ${error.message}`);
  let outcome;
  try {
    requireDevice(request.device!);
    outcome = evaluateCheckpoint(request);
  } catch (error) {
    return reportFailure("eval", error); // one line and the documented status (docs/errors.md)
  }
  const towers = request.ema ? "EMA towers" : "student towers";
  const source = request.catalog ?? request.dataset!;
  console.log(`${request.task} · ${source} · ${request.checkpoint} (${towers})\n${outcome.table}`);
  for (const plot of outcome.plots) console.log(`wrote ${plot}`);
  if (out !== undefined) {
    const record = {
      command: request.task,
      checkpoint: request.checkpoint,
      ema: request.ema,
      dataset: source,
      results: outcome.results,
    };
    // NaN (a class absent from the test set) is not JSON; write null instead of a string that hides it.
    writeFileAtomic(out, JSON.stringify(record, (_k, v) => (Number.isNaN(v) ? null : v), 2) + "\n");
    console.log(`wrote ${out}`);
  }
  return outcome.failed > 0 ? EXIT.data : 0; // some catalog data set could not be evaluated
}

export function main(args: string[]): Promise<number> {
  return Promise.resolve(runEval(args));
}
