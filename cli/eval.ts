// eval.ts: `deno task eval <zeroshot|retrieval|probe|segprobe> --checkpoint P [options]`: downstream evaluation of a
// checkpoint written by `deno task train`, printed as a table and optionally written as JSON (--out). The model,
// tokenizer and image size all come from the checkpoint, so the command needs nothing from the training run.
import { DatasetError, type EvalDataset, syntheticEvalDataset, syntheticSplitOf } from "../src/eval/datasets.ts";
import { EvalModelError, loadEvalModel } from "../src/eval/model.ts";
import { extractFeatures, linearProbe, segmentationProbe } from "../src/eval/probe.ts";
import { readZeroShotPrompts, runRetrieval, runZeroShot } from "../src/eval/run.ts";
import { SHAPES, SYNTHETIC_DATASET_KEY } from "../src/data/synthetic.ts";
import { CheckpointError } from "../src/train/checkpoint.ts";
import { type Device, TorchError } from "../src/torch/mod.ts";
import { UsageError } from "./usage_error.ts";

const SUBCOMMANDS = ["zeroshot", "retrieval", "probe", "segprobe"] as const;
type Subcommand = typeof SUBCOMMANDS[number];

const HELP = `usage: deno task eval <zeroshot|retrieval|probe|segprobe> --checkpoint P [options]

  zeroshot    zero-shot classification: top-1, top-5, mean per-class accuracy (single-object images, main shape)
  retrieval   image→text and text→image recall@1/5/10 (captions deduplicated)
  probe       linear probe (logistic regression, L2 chosen on a validation fifth) on frozen CLS features
  segprobe    linear segmentation probe on frozen patch tokens (background + 6 shapes), mIoU

options:
  --checkpoint P       a checkpoint written by deno task train (required)
  --ema                evaluate DetailCLIP's EMA (teacher) towers, as the official eval_zeroshot.py does
  --dataset X          synthetic (the val split) | synthetic-heldout (held-out shape/colour pairs); default synthetic
  --labels F           labels.json (official format: dataset key → class names; a list-valued name is synonyms)
  --templates F        templates.json (dataset key → templates with "{}"); both needed together
  --key K              the key in labels.json / templates.json (default ${SYNTHETIC_DATASET_KEY})
  --size N             evaluation images (default 1000)
  --train-size N       probe training images, from the train split (default 2000)
  --batch-size N       images per forward (default 200)
  --device X           cpu | cuda | cuda:N (default cpu)
  --out F              also write the results as JSON`;

interface EvalArgs {
  subcommand: Subcommand;
  checkpoint: string;
  ema: boolean;
  dataset: string;
  labels?: string;
  templates?: string;
  key: string;
  size: number;
  trainSize: number;
  batchSize: number;
  device: Device;
  out?: string;
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
    const known = ["--checkpoint", "--dataset", "--labels", "--templates", "--key", "--size", "--train-size"];
    if (![...known, "--batch-size", "--device", "--out"].includes(flag)) {
      throw new UsageError(`unknown option '${flag}'`);
    }
    const value = rest[i + 1];
    if (value === undefined || value.startsWith("--")) throw new UsageError(`${flag} needs a value`);
    values.set(flag, value);
    i += 1;
  }
  const integer = (flag: string, fallback: number): number => {
    const raw = values.get(flag);
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1) throw new UsageError(`${flag} must be a positive integer, got '${raw}'`);
    return n;
  };
  const checkpoint = values.get("--checkpoint");
  if (checkpoint === undefined) throw new UsageError("--checkpoint is required");
  if (values.has("--labels") !== values.has("--templates")) {
    throw new UsageError("--labels and --templates go together");
  }
  return {
    subcommand: subcommand as Subcommand,
    checkpoint,
    ema,
    dataset: values.get("--dataset") ?? "synthetic",
    labels: values.get("--labels"),
    templates: values.get("--templates"),
    key: values.get("--key") ?? SYNTHETIC_DATASET_KEY,
    size: integer("--size", 1000),
    trainSize: integer("--train-size", 2000),
    batchSize: integer("--batch-size", 200),
    device: (values.get("--device") ?? "cpu") as Device,
    out: values.get("--out"),
  };
}

/** Rows of [metric, value] as an aligned two-column table. */
export function formatTable(title: string, rows: [string, string][]): string {
  const width = Math.max(6, ...rows.map(([k]) => k.length));
  const valueWidth = Math.max(5, ...rows.map(([, v]) => v.length));
  const rule = "-".repeat(width + valueWidth + 3);
  return [title, rule, ...rows.map(([k, v]) => `${k.padEnd(width)} | ${v.padStart(valueWidth)}`), rule].join("\n");
}

const pct = (x: number): string => x.toFixed(1);

function evaluate(args: EvalArgs): { rows: [string, string][]; results: Record<string, unknown> } {
  const split = syntheticSplitOf(args.dataset);
  const model = loadEvalModel(args.checkpoint, { ema: args.ema, device: args.device });
  try {
    const run = { batchSize: args.batchSize, device: args.device };
    const testSet = (objects?: number): EvalDataset =>
      syntheticEvalDataset({ split, imageSize: model.imageSize, size: args.size, objects });
    // Probe training images: the train split (never the evaluation split), unaugmented.
    const trainSet = (objects?: number): EvalDataset =>
      syntheticEvalDataset({ split: "train", imageSize: model.imageSize, size: args.trainSize, objects });
    switch (args.subcommand) {
      case "zeroshot": {
        const prompts = args.labels && args.templates
          ? readZeroShotPrompts(args.labels, args.templates, args.key)
          : undefined;
        // Single-object images: with one object the main shape is the whole picture, so the label is unambiguous.
        const r = runZeroShot(model, testSet(1), { ...run, prompts });
        return {
          rows: [["top-1", pct(r.top1)], ["top-5", pct(r.top5)], ["mean per-class", pct(r.meanPerClass)], [
            "images",
            String(r.count),
          ], ["classes × templates", `${r.classes} × ${r.templates}`]],
          results: { ...r },
        };
      }
      case "retrieval": {
        const r = runRetrieval(model, testSet(), run);
        const rows: [string, string][] = [];
        for (const k of [1, 5, 10]) rows.push([`I2T R@${k}`, pct(r.imageToText[k])]);
        for (const k of [1, 5, 10]) rows.push([`T2I R@${k}`, pct(r.textToImage[k])]);
        rows.push(["images / texts", `${r.images} / ${r.texts}`]);
        return { rows, results: { ...r } };
      }
      case "probe": {
        const train = extractFeatures(model.tower, trainSet(1), run);
        const test = extractFeatures(model.tower, testSet(1), run);
        try {
          const r = linearProbe(train, test, { classes: SHAPES.length });
          return {
            rows: [["top-1", pct(r.top1)], ["top-5", pct(r.top5)], ["chosen L2", String(r.l2)], [
              "train / test",
              `${r.trainSize} / ${r.testSize}`,
            ]],
            results: { ...r },
          };
        } finally {
          train.dispose();
          test.dispose();
        }
      }
      case "segprobe": {
        const train = extractFeatures(model.tower, trainSet(), { ...run, patches: true });
        const test = extractFeatures(model.tower, testSet(), { ...run, patches: true });
        try {
          const r = segmentationProbe(train, test, { classes: 1 + SHAPES.length, imageSize: model.imageSize });
          const names = ["background", ...SHAPES];
          return {
            rows: [
              ["mIoU", pct(r.mIoU)],
              ["pixel accuracy", pct(r.pixelAccuracy)],
              ...names.map((name, c): [string, string] => [`IoU ${name}`, pct(r.iou[c])]),
              ["train / test", `${r.trainSize} / ${r.testSize}`],
            ],
            results: { ...r, classNames: names },
          };
        } finally {
          train.dispose();
          test.dispose();
        }
      }
    }
  } finally {
    model.dispose();
  }
}

/** Runs one evaluation command and returns its exit code (synchronous: every step is). */
export function runEval(args: string[]): number {
  if (args.length === 0 || args.includes("--help") || args.includes("-h")) {
    console.log(HELP);
    return args.length === 0 ? 2 : 0;
  }
  const parsed = parseArgs(args);
  let outcome;
  try {
    outcome = evaluate(parsed);
  } catch (error) {
    if (error instanceof DatasetError || error instanceof EvalModelError || error instanceof CheckpointError) {
      console.error(`detailclip eval: ${error.message}`);
      return 1;
    }
    if (error instanceof TorchError) {
      console.error(`detailclip eval: ${error.message}`);
      return 1;
    }
    throw error;
  }
  const towers = parsed.ema ? "EMA towers" : "student towers";
  console.log(formatTable(`${parsed.subcommand} · ${parsed.dataset} · ${parsed.checkpoint} (${towers})`, outcome.rows));
  if (parsed.out !== undefined) {
    const record = {
      command: parsed.subcommand,
      checkpoint: parsed.checkpoint,
      ema: parsed.ema,
      dataset: parsed.dataset,
      results: outcome.results,
    };
    // NaN (a class absent from the test set) is not JSON; write null instead of a string that hides it.
    Deno.writeTextFileSync(parsed.out, JSON.stringify(record, (_k, v) => (Number.isNaN(v) ? null : v), 2) + "\n");
    console.log(`wrote ${parsed.out}`);
  }
  return 0;
}

export function main(args: string[]): Promise<number> {
  return Promise.resolve(runEval(args));
}
