// eval_drivers_test.ts: the evaluation drivers called as a library, not through argv: the catalog loop (file order,
// a dataset that cannot be opened costs its row and is reported, pictures go to the caller's sink), the synthetic and
// file-dataset probes, evaluateCheckpoint against `deno task eval`'s own JSON, the class count over an ImageNet-sized
// label array, and cli/args.ts (the one flag reader of eval, embed, export and viz) with its messages.
import { join } from "node:path";
import { parseFlags } from "../cli/args.ts";
import { runEval } from "../cli/eval.ts";
import { UsageError } from "../cli/usage_error.ts";
import { SHAPES, syntheticSample } from "../src/data/synthetic.ts";
import { runCatalog } from "../src/eval/catalog_run.ts";
import { DatasetError } from "../src/eval/datasets.ts";
import { evaluateCheckpoint } from "../src/eval/evaluation.ts";
import { loadEvalModel } from "../src/eval/model.ts";
import {
  ade20kSegProbe,
  fileLinearProbe,
  probeClasses,
  syntheticLinearProbe,
  syntheticSegProbe,
} from "../src/eval/probe_run.ts";
import { loadClipEncoder } from "../src/eval/clip_encoder.ts";
import { embedImageFiles, embedTexts } from "../src/eval/embeddings.ts";

import { encodePng } from "../src/formats/png.ts";
import { liveTensors } from "../src/torch/mod.ts";
import { saveUntrainedCheckpoint } from "./eval_checkpoint.ts";
import { assert, assertEquals, assertThrows } from "./helpers.ts";

const SIZE = 64; // the test checkpoint's image size
const N = 12; // images in the file fixture

interface Fixture {
  dir: string;
  checkpoint: string;
  labels: string;
  templates: string;
  csv: string;
}

let cached: Fixture | null = null;

/** An untrained checkpoint, an ImageFolder (dir/folder/test/<label>_<shape>/) and a CSV of the same images. */
function fixture(): Fixture {
  if (cached !== null) return cached;
  const dir = Deno.makeTempDirSync({ prefix: "dc_eval_drivers_" });
  globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
  const rows = ["filepath,label"];
  // Two images of each shape, so that the folder has every class labels.json names.
  const perClass = new Array(SHAPES.length).fill(0);
  for (let i = 0; rows.length <= N; i++) {
    const s = syntheticSample("val", i, { size: SIZE, objects: 1 });
    if (perClass[s.label] === N / SHAPES.length) continue;
    perClass[s.label] += 1;
    const rel = `folder/test/${s.label}_${SHAPES[s.label]}/img_${i}.png`;
    Deno.mkdirSync(join(dir, rel, ".."), { recursive: true });
    Deno.writeFileSync(join(dir, rel), encodePng(s.width, s.height, s.pixels, "rgb"));
    rows.push(`${rel},${s.label}`);
  }
  const csv = join(dir, "images.csv");
  Deno.writeTextFileSync(csv, rows.join("\n") + "\n");
  const labels = join(dir, "labels.json"), templates = join(dir, "templates.json");
  Deno.writeTextFileSync(labels, JSON.stringify({ pets: [...SHAPES], food101: [...SHAPES] }));
  Deno.writeTextFileSync(templates, JSON.stringify({ pets: ["a {}."], food101: ["a {}."] }));
  cached = { dir, checkpoint: saveUntrainedCheckpoint(join(dir, "ckpt")), labels, templates, csv };
  return cached;
}

function test(name: string, fn: () => void): void {
  Deno.test(name, () => {
    const before = liveTensors();
    fn();
    assertEquals(liveTensors(), before, "live tensors after the test");
  });
}

test("probeClasses counts classes over 2,000,000 labels (Math.max(...labels) overflows the stack there)", () => {
  const labels = new Int32Array(2_000_000);
  for (let i = 0; i < labels.length; i++) labels[i] = i % 1000;
  assertEquals(probeClasses(0, labels, new Int32Array([3])), 1000);
  assertEquals(probeClasses(1200, labels), 1200, "named classes count when there are more of them");
  assertEquals(probeClasses(0, new Int32Array(0)), 0, "no labels: no classes");
});

test("runCatalog: file order, a missing dataset costs its row and is reported, pictures go to the sink", () => {
  const f = fixture();
  const catalog = join(f.dir, "dataset_catalog.json");
  Deno.writeTextFileSync(
    catalog,
    JSON.stringify({
      food101: { path: join(f.dir, "not-downloaded"), type: "imagefolder", train: "train", test: "test" },
      pets: { path: join(f.dir, "folder"), type: "imagefolder", train: "train", test: "test" },
    }),
  );
  const model = loadEvalModel(f.checkpoint);
  try {
    const reported: string[] = [], pictures: string[] = [];
    const report = runCatalog(model, {
      catalog,
      labels: f.labels,
      templates: f.templates,
      batchSize: 5,
      device: "cpu",
      onDatasetError: (key: string, error: DatasetError) => reported.push(`${key}: ${error.message}`),
      writePlot: (file, png) => {
        assertEquals(Array.from(png().subarray(1, 4)), [0x50, 0x4e, 0x47], `${file} is a PNG`);
        pictures.push(file);
        return `sink/${file}`;
      },
    });
    const datasets = report.results.datasets as Record<string, Record<string, unknown>>;
    assertEquals(Object.keys(datasets), ["food101", "pets"]);
    assertEquals(report.failed, 1, reported.join("\n"));
    assert(reported.length === 1 && reported[0].includes("not-downloaded"), reported.join("\n"));
    assertEquals(datasets.pets.count, N);
    assertEquals([datasets.pets.metric, datasets.pets.value], ["mean_per_class", datasets.pets.meanPerClass]);
    assertEquals(pictures, ["pets-confusion.png"]);
    assertEquals(report.plots, ["sink/pets-confusion.png"]);
    assert(report.table.includes("food101") && report.table.includes("error"), report.table);
    // Only the selected keys run; an unknown one is a data error before anything runs.
    const only = runCatalog(model, {
      catalog,
      labels: f.labels,
      templates: f.templates,
      datasets: ["pets"],
      batchSize: 5,
      device: "cpu",
    });
    assertEquals([Object.keys(only.results.datasets as object), only.failed], [["pets"], 0]);
    const options = { catalog, labels: f.labels, templates: f.templates, datasets: ["imagenet"] };
    assertThrows(() => runCatalog(model, { ...options, batchSize: 5, device: "cpu" }), Error, ["imagenet"]);
  } finally {
    model.dispose();
  }
});

test("the probe drivers: synthetic linear and segmentation probes, the file probe on two file datasets", () => {
  const f = fixture();
  const model = loadEvalModel(f.checkpoint);
  try {
    const options = { split: "val" as const, size: 12, trainSize: 18, batchSize: 6, device: "cpu" as const };
    const linear = syntheticLinearProbe(model, options);
    assertEquals([linear.results.trainSize, linear.results.testSize], [18, 12]);
    assert(linear.table.includes("chosen L2"), linear.table);
    const seg = syntheticSegProbe(model, { ...options, size: 4, trainSize: 6 });
    assertEquals((seg.results.classNames as string[]).length, 1 + SHAPES.length);
    assert(typeof seg.results.mIoU === "number", "mIoU is a number");
    const file = fileLinearProbe(model, `csv:${f.csv}`, `imagefolder:${join(f.dir, "folder", "test")}`, {
      batchSize: 6,
      device: "cpu",
      files: {},
    });
    assertEquals([file.results.trainSize, file.results.testSize], [N, N]);
    assert((file.results.classes as number) >= 2, "at least two classes");
  } finally {
    model.dispose();
  }
});

test("evaluateCheckpoint gives the numbers `deno task eval` writes to --out", () => {
  const f = fixture();
  const request = { task: "zeroshot" as const, checkpoint: f.checkpoint, size: 12, batchSize: 6 };
  const report = evaluateCheckpoint(request);
  assertEquals([report.failed, report.plots], [0, []]);
  const out = join(f.dir, "zeroshot.json");
  const { log } = console;
  console.log = () => {};
  try {
    assertEquals(
      runEval(["zeroshot", "--checkpoint", f.checkpoint, "--size", "12", "--batch-size", "6", "--out", out]),
      0,
    );
  } finally {
    console.log = log;
  }
  const written = JSON.parse(Deno.readTextFileSync(out)).results;
  assertEquals(written, JSON.parse(JSON.stringify(report.results, (_k, v) => (Number.isNaN(v) ? null : v))));
  assertThrows(() => evaluateCheckpoint({ ...request, dataset: "synthetic-nowhere" }), Error, ["synthetic-nowhere"]);
  // Combinations the CLI refuses as usage errors are refused here too, before the model loads.
  assertThrows(() => evaluateCheckpoint({ ...request, dataset: "ade20k:/x" }), DatasetError, ["segprobe only"]);
  const csv = { ...request, task: "segprobe" as const, dataset: `csv:${f.csv}` };
  assertThrows(() => evaluateCheckpoint(csv), DatasetError, ["per-pixel labels"]);
  assertThrows(() => evaluateCheckpoint({ ...request, task: "probe", catalog: "c.json" }), DatasetError, ["zeroshot"]);
});

Deno.test("parseFlags: values, booleans, lists up to the next flag, and the commands' usual messages", () => {
  const spec = { values: ["--out", "--size"], booleans: ["--ema"], lists: ["--image"] };
  const flags = parseFlags(["--image", "a", "b", "--ema", "--size", "-1", "--out=x", "--image", "c"], spec);
  assertEquals(flags.lists.get("--image"), ["a", "b", "c"]);
  const dashes = parseFlags(["--image", "-1", "- a caption", "-xy", "--ema"], spec);
  assertEquals(dashes.lists.get("--image"), ["-1", "- a caption", "-xy"], "a list runs to the next --flag");
  assert(dashes.booleans.has("--ema"), "--ema after a list");
  assertEquals([flags.values.get("--size"), flags.values.get("--out")], ["-1", "x"]);
  assert(flags.booleans.has("--ema"), "--ema set");
  assertEquals(parseFlags(["--out", "a", "--out", "b"], spec).values.get("--out"), "b", "the last one counts");
  const usage = (args: string[], message: string, extra = {}): void => {
    const error = assertThrows(() => parseFlags(args, { ...spec, ...extra }), UsageError);
    assertEquals(error.message, message);
  };
  usage(["--nope"], "unknown option '--nope'");
  usage(["--nope"], "unknown option '--nope'\n\nHELP", { help: "HELP" });
  usage(["--help"], "HELP", { help: "HELP" });
  usage(["stray"], "unknown option 'stray'");
  usage(["-x"], "unknown option '-x'");
  usage(["-xy"], "unknown option '-xy'");
  usage(["--nope=1"], "unknown option '--nope=1'");
  usage(["--"], "unknown option '--'");
  usage(["--out"], "--out needs a value");
  usage(["--out", "--ema"], "--out needs a value");
  usage(["--image", "--ema"], "--image needs at least one value");
  usage(["--ema=1"], "--ema takes no value");
  usage(["--out", "a", "--out", "b"], "--out is given twice", { once: true });
});

test("ade20kSegProbe: fits on the training pairs, scores the validation pairs, 150 classes, skips counted", () => {
  const f = fixture();
  const root = join(f.dir, "ade");
  for (const [split, count] of [["training", 3], ["validation", 2]] as const) {
    Deno.mkdirSync(join(root, "images", split), { recursive: true });
    Deno.mkdirSync(join(root, "annotations", split), { recursive: true });
    for (let i = 0; i < count; i++) {
      const raw = 1 + ((i * 37) % 150); // one ADE20K class per image (raw labels 1..150; 0 is "other")
      const rgb = new Uint8Array(SIZE * SIZE * 3).map((_, k) => (k % 3 === 0 ? raw : 255 - raw));
      Deno.writeFileSync(join(root, "images", split, `${split}_${i}.png`), encodePng(SIZE, SIZE, rgb, "rgb"));
      const labels = new Uint8Array(SIZE * SIZE).fill(raw);
      Deno.writeFileSync(join(root, "annotations", split, `${split}_${i}.png`), encodePng(SIZE, SIZE, labels, "gray"));
    }
  }
  const model = loadEvalModel(f.checkpoint);
  try {
    const report = ade20kSegProbe(model, root, { size: 2, trainSize: 3, batchSize: 2, device: "cpu" });
    assertEquals([report.results.trainSize, report.results.testSize], [3, 2]);
    assertEquals((report.results.classNames as string[]).length, 150);
    assertEquals(report.results.skipped, { training: {}, validation: {} });
    assert(report.table.includes("mIoU (150 classes)"), report.table);
  } finally {
    model.dispose();
  }
});

test("embedImageFiles and embedTexts: unit rows in input order; an unreadable image is a DatasetError", () => {
  const f = fixture();
  const encoder = loadClipEncoder(f.checkpoint);
  try {
    const images: string[] = [];
    for (const entry of Deno.readDirSync(join(f.dir, "folder/test"))) {
      for (const file of Deno.readDirSync(join(f.dir, "folder/test", entry.name))) {
        images.push(join(f.dir, "folder/test", entry.name, file.name));
      }
    }
    const done: number[] = [];
    const run = { batchSize: 5, device: "cpu" as const };
    const imageEmbeds = embedImageFiles(encoder, images, { ...run, onProgress: (n) => done.push(n) });
    const textEmbeds = embedTexts(encoder, ["a red circle", "two squares", "a star"], run);
    try {
      assertEquals(imageEmbeds.shape[0], N);
      assertEquals(done, [5, 10, 12]);
      assertEquals(textEmbeds.shape[0], 3);
      for (const rows of [imageEmbeds, textEmbeds]) {
        using norms = rows.norm(2, -1); // (rows)
        for (const norm of norms.toArray() as number[]) assert(Math.abs(norm - 1) < 1e-5, `row norm ${norm}`);
      }
      // The same image alone gives the same row: batches do not mix.
      const alone = embedImageFiles(encoder, [images[7]], run);
      try {
        const e = alone.shape[1], row = alone.toArray() as number[]; // (1, E), flat
        const all = imageEmbeds.toArray() as number[]; // (N, E), flat
        assert(row.every((v, k) => Math.abs(v - all[7 * e + k]) < 1e-5), "row 7 alone differs");
      } finally {
        alone.dispose();
      }
    } finally {
      imageEmbeds.dispose();
      textEmbeds.dispose();
    }
    Deno.writeTextFileSync(join(f.dir, "bad.png"), "not a png");
    assertThrows(() => embedImageFiles(encoder, [images[0], join(f.dir, "bad.png")], run), DatasetError, [
      "1 of 2 images",
    ]);
  } finally {
    encoder.dispose();
  }
});

Deno.test("no file in cli/ walks argv itself: flags are read by node:util parseArgs or cli/args.ts", () => {
  const dir = new URL("../cli/", import.meta.url);
  for (const entry of Deno.readDirSync(dir)) {
    if (!entry.name.endsWith(".ts") || entry.name === "args.ts") continue;
    const text = Deno.readTextFileSync(new URL(entry.name, dir));
    // The shapes of a hand-rolled reader: a local parseArgs, or a loop reading the value after a flag.
    assert(!/function parseArgs\b/.test(text), `cli/${entry.name} defines its own parseArgs`);
    assert(!/\b(args|rest|argv)\[(i \+ 1|\+\+i)\]/.test(text), `cli/${entry.name} reads a flag's value by index`);
  }
});
