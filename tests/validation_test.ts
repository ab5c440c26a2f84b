// validation_test.ts: validation while training (src/train/validation.ts) and `--report-to tensorboard`. The CLIP
// validation loss against its closed form, the schedule of what is due when, the best-metric bookkeeping, option
// errors, and the acceptance run: 20 steps of the built-in model with a zero-shot ImageFolder and a held-out CSV of
// generated PNGs, whose event files TensorBoard's own reader lists with every training and validation scalar, and a
// checkpoint-best that is the checkpoint of the best zero-shot step.
import { encodePng } from "../src/formats/png.ts";
import { SHAPES, syntheticSample } from "../src/data/synthetic.ts";
import { BEST_CHECKPOINT, loadCheckpoint } from "../src/checkpoint/checkpoint.ts";
import { OptionError, parseTrainOptions } from "../src/train/options.ts";
import { clipValidationLoss, isWebDatasetSpec, TrainValidation } from "../src/train/validation.ts";
import { Tensor } from "../src/torch/mod.ts";
import { trainBpe } from "../src/data/bpe_trainer.ts";
import { ClipTokenizer } from "../src/data/tokenizer.ts";
import { buildModel } from "../src/models/build.ts";
import { modelPreset, parseModelConfig } from "../src/models/configs.ts";
import { assert, assertClose, assertEquals, assertThrows } from "./helpers.ts";
import { noTensorBoard, readTensorBoard } from "./tensorboard_helpers.ts";

const main = new URL("../cli/main.ts", import.meta.url).pathname;

Deno.test("clipValidationLoss is OpenCLIP's per-batch symmetric cross-entropy, weighted by batch size", () => {
  // Two unit vectors at angle θ: logits s·cos. A batch of 2 then a batch of 1 (whose loss is 0: one class).
  const c = Math.cos(0.3), s = Math.sin(0.3);
  const images = Tensor.fromArray([1, 0, c, s, 0, 1], [3, 2]);
  const texts = Tensor.fromArray([1, 0, 0, 1, 1, 0], [3, 2]);
  const scale = 10;
  // Batch 1: logits (I·Tᵀ) = [[1, 0], [c, s]]·scale; per-row CE = logsumexp − diagonal.
  const ce = (row: number[], target: number): number =>
    Math.log(row.reduce((a, x) => a + Math.exp(scale * x), 0)) - scale * row[target];
  const i2t = (ce([1, 0], 0) + ce([c, s], 1)) / 2;
  const t2i = (ce([1, c], 0) + ce([0, s], 1)) / 2;
  const expected = (2 * (i2t + t2i) / 2 + 1 * 0) / 3;
  assertClose(clipValidationLoss(images, texts, scale, 2), expected, { atol: 1e-5, rtol: 1e-5 });
  images.dispose();
  texts.dispose();
});

Deno.test("webdataset specs are told from CSV manifests", () => {
  for (const spec of ["shards/{000..009}.tar", "a.tar", "a.tar::b.tar", "x/val-{0..3}.tar"]) {
    assert(isWebDatasetSpec(spec), spec);
  }
  for (const spec of ["val.csv", "val.tsv", "tarballs/val.csv"]) assert(!isWebDatasetSpec(spec), spec);
});

Deno.test("validation: what is due when, best-metric directions, option errors", () => {
  const dir = Deno.makeTempDirSync();
  Deno.mkdirSync(`${dir}/zs/circle`, { recursive: true });
  Deno.writeFileSync(`${dir}/zs/circle/a.png`, encodePng(64, 64, syntheticSample("val", 0, { size: 64 }).pixels));
  Deno.writeTextFileSync(`${dir}/val.csv`, "filepath,title\nzs/circle/a.png,a red circle\n");
  const options = (...argv: string[]) => parseTrainOptions(argv);
  // Rank 1 checks options but opens nothing, so the unit checks need no decoder.
  const v = new TrainValidation(options("--zeroshot-data", `${dir}/zs`, "--zeroshot-frequency", "2"), 64, 1);
  assertEquals(v.best, "zeroshot-top1");
  assertEquals(v.due(4, 4, 100), { zeroshot: false, val: false }); // epoch 1 ends: not every 2nd
  assertEquals(v.due(8, 4, 100), { zeroshot: true, val: false });
  assertEquals(v.due(9, 4, 100), { zeroshot: false, val: false });
  assertEquals(v.due(100, 4, 100), { zeroshot: true, val: false }); // the last step always
  assert(v.improves({ "zeroshot/top1": 10 }, 8));
  assert(!v.improves({ "zeroshot/top1": 10 }, 12), "an equal value is not an improvement");
  assert(v.improves({ "zeroshot/top1": 11 }, 16));
  assertEquals(v.bestRecord, { metric: "zeroshot-top1", value: 11, step: 16 });
  const loss = new TrainValidation(options("--val-data", `${dir}/val.csv`, "--val-frequency-steps", "5"), 64, 1);
  assertEquals(loss.best, "val-loss");
  assertEquals(loss.due(5, 100, 1000), { zeroshot: false, val: true });
  assert(loss.improves({ "val/clip_loss": 2 }, 5));
  assert(!loss.improves({ "val/clip_loss": 3 }, 10), "a larger loss is not better");
  assert(loss.improves({ "val/clip_loss": 1 }, 15));
  loss.restoreBest({ metric: "val-loss", value: 0.5, step: 3 });
  assert(!loss.improves({ "val/clip_loss": 0.7 }, 20), "the restored best is the bar");
  const none = new TrainValidation(options(), 64, 0);
  assertEquals(none.enabled, false);
  assertEquals(none.due(8, 4, 8), { zeroshot: false, val: false });
  assertThrows(() => new TrainValidation(options("--best-metric", "val-loss"), 64, 1), OptionError, [
    "needs --val-data",
  ]);
  assertThrows(() => new TrainValidation(options("--zeroshot-frequency", "1"), 64, 1), OptionError, [
    "--zeroshot-data",
  ]);
  assertThrows(
    () => new TrainValidation(options("--zeroshot-data", `${dir}/zs`, "--best-metric", "top1"), 64, 1),
    OptionError,
    ["expected one of"],
  );
  assertThrows(
    () => new TrainValidation(options("--zeroshot-data", `${dir}/zs`, "--zeroshot-templates", "a photo"), 64, 1),
    OptionError,
    ['no "{}"'],
  );
  assertThrows(
    () => new TrainValidation(options("--zeroshot-data", `${dir}/missing`), 64, 0),
    OptionError,
    ["--zeroshot-data"],
  );
  assertThrows(() => options("--report-to", "wandb"), OptionError, ["--report-to"]);
});

/** Single-object synthetic images by shape (an ImageFolder) and a CSV of held-out captioned images. */
function writeValidationData(dir: string): void {
  for (const shape of SHAPES) Deno.mkdirSync(`${dir}/zeroshot/${shape}`, { recursive: true });
  for (let i = 0; i < 24; i++) {
    const sample = syntheticSample("val", i, { size: 64, objects: 1 });
    Deno.writeFileSync(`${dir}/zeroshot/${sample.attributes[0].shape}/${i}.png`, encodePng(64, 64, sample.pixels));
  }
  const rows = ["filepath,title"];
  for (let i = 0; i < 16; i++) {
    const sample = syntheticSample("heldout", i, { size: 64 });
    Deno.writeFileSync(`${dir}/pairs-${i}.png`, encodePng(64, 64, sample.pixels));
    rows.push(`pairs-${i}.png,"${sample.caption}"`);
  }
  Deno.writeTextFileSync(`${dir}/val.csv`, rows.join("\n") + "\n");
}

Deno.test("a 20-step run with --report-to tensorboard, zero-shot and --val-data writes events and checkpoint-best", async (t) => {
  const dir = Deno.makeTempDirSync();
  writeValidationData(dir);
  const run = `${dir}/run`;
  // 8 samples at batch 8: one step per epoch, so --zeroshot-frequency 10 evaluates at steps 10 and 20.
  const result = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      "--unstable-ffi",
      main,
      "train",
      "--synthetic-size",
      "8",
      "--batch-size",
      "8",
      "--epochs",
      "20",
      "--eval-size",
      "40",
      "--eval-freq",
      "10",
      "--print-freq",
      "5",
      "--threads",
      "1",
      "--output-dir",
      run,
      "--report-to",
      "tensorboard",
      "--zeroshot-data",
      `imagefolder:${dir}/zeroshot`,
      "--zeroshot-templates",
      "a {}.|a {} shape.",
      "--zeroshot-frequency",
      "10",
      "--val-data",
      `${dir}/val.csv`,
      "--val-frequency",
      "5",
      "--best-metric",
      "val-r1-mean",
    ],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const out = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
  assertEquals(result.code, 0, out);

  const records = Deno.readTextFileSync(`${run}/metrics.jsonl`).trim().split("\n").map((l) => JSON.parse(l));
  const validations = records.filter((r) => r.type === "validation");
  assertEquals(validations.map((r) => r.step), [5, 10, 15, 20], out);
  assertEquals(validations.map((r) => "zeroshot/top1" in r), [false, true, false, true]);
  for (const r of validations) {
    assertEquals(r["val/images"], 16);
    assert(Number.isFinite(r["val/clip_loss"]) && r["val/clip_loss"] > 0, JSON.stringify(r));
    for (const k of [1, 5, 10]) assert(r[`val/i2t_r${k}`] >= 0 && r[`val/i2t_r${k}`] <= 100, JSON.stringify(r));
  }
  assertEquals(validations[1]["zeroshot/images"], 24);

  // checkpoint-best is the checkpoint of the step with the best val-r1-mean (the first on ties).
  let best = validations[0];
  for (const r of validations) if (r["val/r1_mean"] > best["val/r1_mean"]) best = r;
  const checkpoint = loadCheckpoint(`${run}/${BEST_CHECKPOINT}`);
  try {
    assertEquals(checkpoint.step, best.step);
    assertEquals(checkpoint.meta.best_checkpoint, {
      metric: "val-r1-mean",
      value: best["val/r1_mean"],
      step: best.step,
    });
  } finally {
    for (const tensor of checkpoint.tensors.values()) tensor.dispose();
  }
  const summary = JSON.parse(Deno.readTextFileSync(`${run}/summary.json`));
  assertEquals(summary.steps, 20);
  assert(summary.zeroshot_top1_after !== null, "the synthetic before/after evaluation still runs");

  const files = [...Deno.readDirSync(`${run}/tensorboard`)].map((e) => e.name);
  assertEquals(files.length, 1, files.join(", "));
  assert(files[0].startsWith("events.out.tfevents."), files[0]);

  await t.step({
    name: "TensorBoard's reader lists every loss term, lr, momentum, temperatures, images/s and the eval metrics",
    ignore: noTensorBoard,
    fn() {
      const { tags } = readTensorBoard(`${run}/tensorboard`);
      const expected = [
        "train/loss",
        "train/reconst_loss",
        "train/ibot_patch_loss",
        "train/ibot_cls_loss",
        "train/ibot_loss",
        "train/contra_loss_1",
        "train/contra_loss_2",
        "train/clip_acc",
        "train/lr",
        "train/momentum_ema",
        "train/logit_scale",
        "train/teacher_temp_patch",
        "train/teacher_temp_cls",
        "train/student_temp",
        "train/images_per_s",
        "zeroshot/top1",
        "zeroshot/top5",
        "zeroshot/mean_per_class",
        "val/clip_loss",
        "val/i2t_r1",
        "val/i2t_r5",
        "val/i2t_r10",
        "val/t2i_r1",
        "val/t2i_r5",
        "val/t2i_r10",
        "val/r1_mean",
        "synthetic/zeroshot_colour_top1",
      ];
      const missing = expected.filter((tag) => !(tag in tags));
      assertEquals(missing, [], `TensorBoard lists ${Object.keys(tags).join(", ")}`);
      // One step per epoch: every step ends an epoch, and each epoch's end is a logging interval.
      assertEquals(tags["train/loss"].map(([step]) => step), Array.from({ length: 20 }, (_, i) => i + 1));
      assertEquals(tags["zeroshot/top1"].map(([step]) => step), [10, 20]);
      assertEquals(tags["val/clip_loss"].map(([step]) => step), [5, 10, 15, 20]);
      const jsonLoss = records.filter((r) => r.type === "interval").map((r) => r.loss);
      tags["train/loss"].forEach(([, value], i) =>
        assertClose(value, Math.fround(jsonLoss[i]), { atol: 0, rtol: 1e-7 })
      );
      assertEquals(tags["train/teacher_temp_cls"][0][1], Math.fround(0.04));
      assertEquals(tags["synthetic/zeroshot_colour_top1"].map(([step]) => step), [0, 20]);
    },
  });
});

Deno.test("zero-shot from catalog:FILE with the official labels.json / templates.json equals the inline options", () => {
  const dir = Deno.makeTempDirSync();
  writeValidationData(dir);
  Deno.writeTextFileSync(
    `${dir}/catalog.json`,
    JSON.stringify({ shapes: { path: dir, type: "imagefolder", train: "none", test: "zeroshot" } }),
  );
  // ImageFolder labels follow the sorted folder names; labels.json names them by index, with synonyms for one.
  const sorted = [...SHAPES].sort();
  const labels = sorted.map((name) => (name === "circle" ? ["circle", "disc"] : name));
  const templates = ["a {}.", "a drawing of a {}."];
  Deno.writeTextFileSync(`${dir}/labels.json`, JSON.stringify({ shapes: labels }));
  Deno.writeTextFileSync(`${dir}/templates.json`, JSON.stringify({ shapes: templates }));
  const preset = modelPreset("CLIP_tiny_synthetic");
  const captions = Array.from({ length: 200 }, (_, i) => syntheticSample("train", i, { size: 16 }).caption);
  const tokenizer = new ClipTokenizer(trainBpe([...captions, "disc drawing"], 700));
  const model = buildModel(
    parseModelConfig({ ...preset, text: { ...preset.text, vocab: tokenizer.vocabSize } }, "test"),
  );
  const view = { model, tokenizer, contextLength: preset.text.context, device: "cpu" as const, step: 0 };
  const evaluate = (...argv: string[]) => {
    const validation = new TrainValidation(parseTrainOptions(argv), 64, 0);
    try {
      return validation.run(view, { zeroshot: true, val: false });
    } finally {
      validation.close();
    }
  };
  try {
    const official = evaluate(
      "--zeroshot-data",
      `catalog:${dir}/catalog.json`,
      "--zeroshot-key",
      "shapes",
      "--zeroshot-classes",
      `${dir}/labels.json`,
      "--zeroshot-templates",
      `${dir}/templates.json`,
    );
    assertEquals(official["zeroshot/images"], 24);
    const inline = evaluate(
      "--zeroshot-data",
      `${dir}/zeroshot`,
      "--zeroshot-templates",
      templates.join("|"),
    );
    assertEquals(inline["zeroshot/images"], 24);
    // The synonym changes only the circle class embedding: compare with the synonym-free labels too.
    Deno.writeTextFileSync(`${dir}/labels.json`, JSON.stringify({ shapes: sorted }));
    const plain = evaluate(
      "--zeroshot-data",
      `catalog:${dir}/catalog.json`,
      "--zeroshot-key",
      "shapes",
      "--zeroshot-classes",
      `${dir}/labels.json`,
      "--zeroshot-templates",
      `${dir}/templates.json`,
    );
    assertEquals(plain, inline);
    assert(model.training, "validation left the model in eval mode");
  } finally {
    model.dispose();
  }
});

Deno.test("a resumed run keeps judging against the checkpointed best and TensorBoard shows one timeline", async (t) => {
  const dir = Deno.makeTempDirSync();
  writeValidationData(dir);
  const run = `${dir}/run`;
  const train = (...extra: string[]): string => {
    const result = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        "--unstable-ffi",
        main,
        "train",
        "--synthetic-size",
        "8",
        "--batch-size",
        "8",
        "--epochs",
        "6",
        "--eval-size",
        "0",
        "--threads",
        "1",
        "--output-dir",
        run,
        "--report-to",
        "tensorboard",
        "--val-data",
        `${dir}/val.csv`,
        "--best-metric",
        "val-loss",
        ...extra,
      ],
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
    const out = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
    assertEquals(result.code, 0, out);
    return out;
  };
  train("--max-steps", "3");
  train("--resume", "auto");
  const records = Deno.readTextFileSync(`${run}/metrics.jsonl`).trim().split("\n").map((l) => JSON.parse(l));
  const validations = records.filter((r) => r.type === "validation");
  assertEquals(validations.map((r) => r.step), [1, 2, 3, 4, 5, 6]);
  let best = validations[0];
  for (const r of validations) if (r["val/clip_loss"] < best["val/clip_loss"]) best = r;
  const checkpoint = loadCheckpoint(`${run}/${BEST_CHECKPOINT}`);
  try {
    assertEquals(checkpoint.meta.best_checkpoint, {
      metric: "val-loss",
      value: best["val/clip_loss"],
      step: best.step,
    });
    assertEquals(checkpoint.step, best.step);
  } finally {
    for (const tensor of checkpoint.tensors.values()) tensor.dispose();
  }
  assertEquals([...Deno.readDirSync(`${run}/tensorboard`)].length, 2);
  await t.step({
    name: "TensorBoard reads steps 1..6 once each across the two files",
    ignore: noTensorBoard,
    fn() {
      const { tags } = readTensorBoard(`${run}/tensorboard`);
      assertEquals(tags["train/loss"].map(([step]) => step), [1, 2, 3, 4, 5, 6]);
      assertEquals(tags["val/clip_loss"].map(([step]) => step), [1, 2, 3, 4, 5, 6]);
      tags["val/clip_loss"].forEach(([, value], i) =>
        assertClose(value, Math.fround(validations[i]["val/clip_loss"]), { atol: 0, rtol: 1e-7 })
      );
    },
  });
});
