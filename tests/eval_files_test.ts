// eval_files_test.ts: the file-based evaluation sets of `deno task eval` against references someone else produced and
// against the in-memory synthetic path. Fixtures are tiny and written in a temporary folder: synthetic images as PNGs
// laid out as an ImageFolder, a CSV, webdataset tars (Python's tarfile), npy file lists (numpy's np.save), a Karpathy
// JSON and an official-style catalog; CIFAR/STL-10/MNIST files whose expected pixels come from torchvision's own
// readers. A corrupt and a missing image must be counted and left out: the metrics then equal those of the synthetic
// set without them. Hand-computed metric cases cover ROC-AUC with ties, the official per-dataset metrics and
// multi-caption retrieval under the index-order tie rule.
import { join } from "node:path";
import { runEval } from "../cli/eval.ts";
import { encodePng } from "../src/formats/png.ts";
import { SHAPES, syntheticSample, syntheticTemplates } from "../src/data/synthetic.ts";
import { officialMetric, readCatalog } from "../src/eval/catalog.ts";
import { DatasetError, syntheticEvalDataset } from "../src/eval/datasets.ts";
import { openFileDataset } from "../src/eval/dataset_spec.ts";
import { fileEvalDataset } from "../src/eval/file_datasets.ts";
import { loadEvalModel } from "../src/eval/model.ts";
import { NdPickleError, PickledArray, readNdPickle } from "../src/eval/ndarray_pickle.ts";
import { readNpy } from "../src/eval/npy.ts";
import { extractFeatures, linearProbe } from "../src/eval/probe.ts";
import { retrievalRecall } from "../src/eval/retrieval.ts";
import { embedDataset } from "../src/eval/run.ts";
import { specialTable } from "../src/eval/torchvision_sets.ts";
import { rocAuc, zeroShotMetrics } from "../src/eval/zeroshot.ts";
import { IMAGENET_MEAN, IMAGENET_STD } from "../src/data/synthetic.ts";
import { liveTensors, noGrad, Tensor, tidy } from "../src/torch/mod.ts";
import { UsageError } from "../cli/usage_error.ts";
import { saveUntrainedCheckpoint } from "./eval_checkpoint.ts";
import { assert, assertClose, assertEquals, assertThrows } from "./helpers.ts";

function test(name: string, fn: () => void): void {
  Deno.test(name, () => {
    const before = liveTensors();
    fn();
    assertEquals(liveTensors(), before, "live tensors after the test");
  });
}

/** Runs the command with its table silenced; returns the exit code and what it printed to stderr. */
function evalCommand(args: string[]): { code: number; errors: string } {
  const { log, error } = console;
  let errors = "";
  console.log = () => {};
  console.error = (...parts: unknown[]) => (errors += parts.join(" ") + "\n");
  try {
    return { code: runEval(args), errors };
  } finally {
    console.log = log;
    console.error = error;
  }
}

function readJson(path: string): Record<string, unknown> {
  return JSON.parse(Deno.readTextFileSync(path));
}

// ---- fixtures ----------------------------------------------------------------------------------------------------

const N = 18; // classification images (3 per shape on average; single-object synthetic val images)
const R = 10; // retrieval images (ordinary 1–3 object images)
const SIZE = 64; // the checkpoint's image size

interface Fixtures {
  dir: string;
  checkpoint: string;
  labels: string;
  templates: string;
  /** ImageFolder of the N classification images plus one corrupt file (class folders "0_circle", ...). */
  folder: string;
  special: string;
}

let cached: Fixtures | null = null;

function writePng(path: string, sample: { width: number; height: number; pixels: Uint8Array }): void {
  Deno.mkdirSync(join(path, ".."), { recursive: true });
  Deno.writeFileSync(path, encodePng(sample.width, sample.height, sample.pixels, "rgb"));
}

/** A PNG cut short in its image data: the decoder must report it, not crash. */
function corruptPng(): Uint8Array {
  const s = syntheticSample("val", 999, { size: SIZE });
  return encodePng(s.width, s.height, s.pixels, "rgb").slice(0, 120);
}

function fixtures(): Fixtures {
  if (cached !== null) return cached;
  const dir = Deno.makeTempDirSync({ prefix: "dc_eval_files_" });
  globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
  const checkpoint = saveUntrainedCheckpoint(join(dir, "ckpt"));
  const classNames = [...SHAPES];
  const folderOf = (label: number): string => `${label}_${SHAPES[label]}`;
  // Classification images: the synthetic val images 0..N-1 with one object, as the synthetic zeroshot path uses.
  const folder = join(dir, "folder", "test");
  const csvRows = ["filepath,label"];
  const listPaths: string[] = [];
  const listLabels: string[] = [];
  const tarMembers: [string, string][] = [];
  for (let i = 0; i < N; i++) {
    const s = syntheticSample("val", i, { size: SIZE, objects: 1 });
    const rel = `${folderOf(s.label)}/img_${String(i).padStart(3, "0")}.png`;
    writePng(join(folder, rel), s);
    // The CSV names the class for even rows and gives its index for odd rows.
    csvRows.push(`folder/test/${rel},${i % 2 === 0 ? SHAPES[s.label] : s.label}`);
    listPaths.push(`../folder/test/${rel}`);
    listLabels.push(SHAPES[s.label]);
    const cls = join(dir, "tar_src", `${i}.cls`);
    Deno.mkdirSync(join(dir, "tar_src"), { recursive: true });
    Deno.writeTextFileSync(cls, String(s.label));
    tarMembers.push([`s${String(i).padStart(3, "0")}.png`, join(folder, rel)], [
      `s${String(i).padStart(3, "0")}.cls`,
      cls,
    ]);
  }
  // One corrupt image in the folder and the CSV, one missing image in the CSV.
  Deno.writeFileSync(join(folder, folderOf(0), "zz_corrupt.png"), corruptPng());
  Deno.writeTextFileSync(join(folder, folderOf(0), "notes.txt"), "not an image: ignored like torchvision does\n");
  csvRows.push(`folder/test/${folderOf(0)}/zz_corrupt.png,0`, "folder/test/missing.png,circle");
  Deno.writeTextFileSync(join(dir, "classes.csv"), csvRows.join("\n") + "\n");

  // Retrieval images: every image has two captions (the whole caption and its main object's clause).
  const karpathy: unknown[] = [];
  const retrievalRows = ["filepath,title"];
  for (let i = 0; i < R; i++) {
    const s = syntheticSample("val", i, { size: SIZE });
    writePng(join(dir, "ret", "imgs", `r${i}.png`), s);
    karpathy.push({
      filepath: "imgs",
      filename: `r${i}.png`,
      split: "test",
      sentences: [{ raw: s.caption }, {
        raw: s.mainCaption,
      }],
    });
    retrievalRows.push(`imgs/r${i}.png,"${s.caption}"`, `imgs/r${i}.png,"${s.mainCaption}"`);
  }
  karpathy.push({ filepath: "imgs", filename: "gone.png", split: "test", sentences: [{ raw: "a missing image" }] });
  karpathy.push({ filepath: "imgs", filename: "r0.png", split: "train", sentences: [{ raw: "train only" }] });
  Deno.writeTextFileSync(join(dir, "ret", "dataset_coco.json"), JSON.stringify({ images: karpathy }));
  Deno.writeTextFileSync(join(dir, "ret", "captions.csv"), retrievalRows.join("\n") + "\n");

  // Official-format labels and templates; clevr_counts' labels in its own index order.
  const clevr = ["10", "3", "4", "5", "6", "7", "8", "9"];
  const labels = {
    synthetic_shapes: classNames,
    pets: classNames,
    kinetics700_frames: classNames,
    cifar10: ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    clevr_counts: clevr,
    hateful_memes: ["not hateful", "hateful"],
    food101: ["apple pie"],
  };
  const templates = Object.fromEntries(Object.keys(labels).map((k) => [k, syntheticTemplates()]));
  Deno.writeTextFileSync(join(dir, "labels.json"), JSON.stringify(labels));
  Deno.writeTextFileSync(join(dir, "templates.json"), JSON.stringify(templates));
  // hateful_memes as a two-class ImageFolder: circles are "hateful".
  for (let i = 0; i < N; i++) {
    const s = syntheticSample("val", i, { size: SIZE, objects: 1 });
    writePng(join(dir, "memes", "dev", s.label === 0 ? "1" : "0", `m${i}.png`), s);
  }

  const spec = {
    out: dir,
    filelists: [
      { dir: join(dir, "list"), split: "test", images: listPaths, labels: listLabels },
      {
        dir: join(dir, "clevr"),
        split: "val",
        images: listPaths.slice(0, 8),
        labels: listPaths.slice(0, 8).map((_, i) => `count_${clevr[i % 8]}`),
      },
    ],
    tars: [
      { path: join(dir, "shard-000.tar"), members: tarMembers.slice(0, 20) },
      { path: join(dir, "shard-001.tar"), members: tarMembers.slice(20) },
    ],
  };
  Deno.writeTextFileSync(join(dir, "spec.json"), JSON.stringify(spec));
  const result = new Deno.Command("/usr/bin/python3", {
    args: ["tests/eval_files_fixtures.py", join(dir, "spec.json")],
  }).outputSync();
  const text = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
  assert(result.success && text.startsWith("ok"), `eval_files_fixtures.py failed:\n${text}`);
  cached = {
    dir,
    checkpoint,
    labels: join(dir, "labels.json"),
    templates: join(dir, "templates.json"),
    folder,
    special: join(dir, "special"),
  };
  return cached;
}

// ---- readers: npy and numpy pickles against numpy's own files --------------------------------------------------------

test("npy: strings and integers as numpy wrote them; object, 2-D and float arrays refused with a reason", () => {
  const dir = join(fixtures().dir, "npy");
  assertEquals(readNpy(join(dir, "unicode.npy")), {
    kind: "string",
    values: ["a.png", "h\u00e9llo/\u65e5\u672c.jpg", ""],
  });
  assertEquals(readNpy(join(dir, "bytes.npy")), { kind: "string", values: ["x", "yz"] });
  assertEquals(readNpy(join(dir, "int8.npy")), { kind: "int", values: [-1, 2, 127] });
  assertEquals(readNpy(join(dir, "uint16_be.npy")), { kind: "int", values: [1, 513] });
  assertEquals(readNpy(join(dir, "int64.npy")), { kind: "int", values: [0, 2 ** 40, -3] });
  assertEquals(readNpy(join(dir, "column.npy")), { kind: "int", values: [4, 5] });
  assertThrows(() => readNpy(join(dir, "object.npy")), DatasetError, ["object array", "never unpickled"]);
  assertThrows(() => readNpy(join(dir, "matrix.npy")), DatasetError, ["(2, 2)", "not one-dimensional"]);
  assertThrows(() => readNpy(join(dir, "float.npy")), DatasetError, ["<f4", "not supported"]);
  assertThrows(() => readNpy(join(dir, "absent.npy")), DatasetError, ["absent.npy", "cannot read"]);
});

test("numpy pickles: protocol 4 arrays read as data; a pickle that calls os.system is refused", () => {
  const dir = join(fixtures().special);
  const value = readNdPickle(Deno.readFileSync(join(dir, "protocol4.pkl")), "protocol4.pkl");
  assert(value instanceof Map, "a dict");
  const data = value.get("data");
  assert(data instanceof PickledArray, "data is an ndarray");
  assertEquals([data.shape, data.descr, data.fortran], [[3, 4], "<i8", false]);
  const view = new DataView(data.data.buffer, data.data.byteOffset, data.data.byteLength);
  assertEquals(Array.from({ length: 12 }, (_, i) => Number(view.getBigInt64(i * 8, true))), [...Array(12).keys()]);
  assertEquals(value.get("labels"), [1, 2, 3]);
  assertThrows(() => readNdPickle(Deno.readFileSync(join(dir, "evil.pkl")), "evil.pkl"), NdPickleError, [
    "evil.pkl",
    "refusing pickle opcode GLOBAL",
    "system",
  ]);
});

// ---- torchvision's on-disk sets: pixels equal to torchvision's own readers ------------------------------------------

test("cifar10 (Python 2 pickle), cifar100 (Python 3 pickle), stl10, mnist (.gz): labels and pixels as torchvision", () => {
  const root = fixtures().special;
  const cases = [
    { name: "cifar10", side: 32, channels: 3, classNames: 10 },
    { name: "cifar100", side: 32, channels: 3, classNames: 100 },
    { name: "stl10", side: 96, channels: 3, classNames: undefined },
    { name: "mnist", side: 28, channels: 1, classNames: 10 },
  ] as const;
  for (const c of cases) {
    const expected = Deno.readFileSync(join(root, `${c.name}.expected`)); // (N, H, W, channels) uint8
    const labels = JSON.parse(Deno.readTextFileSync(join(root, `${c.name}.labels.json`)));
    const table = specialTable({ name: c.name, root: join(root, c.name) });
    // At the native size, Resize + CenterCrop is the identity: the batch is exactly the normalised pixels.
    const dataset = fileEvalDataset(table, { imageSize: c.side });
    try {
      assertEquals(table.items.map((item) => item.label), labels, `${c.name} labels`);
      if (c.classNames !== undefined) assertEquals(table.classNames?.length, c.classNames, `${c.name} class names`);
      const plane = c.side * c.side;
      let n = 0;
      for (const batch of dataset.batches(2, "cpu")) {
        const got = batch.images.toArray(); // (B, 3, S, S)
        batch.images.dispose();
        const want: number[] = [];
        for (let b = 0; b < got.length / (3 * plane); b++, n++) {
          for (let ch = 0; ch < 3; ch++) {
            for (let p = 0; p < plane; p++) {
              const v = expected[(n * plane + p) * c.channels + (c.channels === 1 ? 0 : ch)];
              want.push((v / 255 - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch]);
            }
          }
        }
        assertClose(got, want, { atol: 1e-5, rtol: 0, message: `${c.name} pixels` });
      }
      assertEquals(n, labels.length, `${c.name} images`);
      assertEquals(dataset.skipped!(), {}, `${c.name} skips`);
    } finally {
      dataset.close!();
    }
    assertThrows(() => Deno.statSync(table.items[0].image.path), Deno.errors.NotFound); // close() removed the blob
  }
  assertThrows(() => specialTable({ name: "cifar10", root: join(root, "nowhere") }), DatasetError, [
    "nowhere/cifar-10-batches-py/test_batch is missing",
    "Nothing is downloaded",
  ]);
  assertThrows(() => specialTable({ name: "stl10", root: join(root, "nowhere") }), DatasetError, [
    "stl10_binary/test_X.bin",
    "stl10_binary/test_y.bin",
  ]);
});

// ---- file datasets against the in-memory synthetic path ----------------------------------------------------------

test("imagefolder: the same embeddings as the in-memory synthetic set; a corrupt file is counted and left out", () => {
  const f = fixtures();
  const model = loadEvalModel(f.checkpoint);
  const synthetic = syntheticEvalDataset({ split: "val", imageSize: SIZE, size: N, objects: 1 });
  const folder = openFileDataset(`imagefolder:${f.folder}`, { task: "classification", imageSize: SIZE });
  try {
    assertEquals(folder.size, N + 1, "listed: the images and the corrupt file, not notes.txt");
    const a = embedDataset(model, synthetic, { batchSize: 7, device: "cpu" });
    const b = embedDataset(model, folder, { batchSize: 7, device: "cpu" });
    try {
      assertEquals(b.images.shape, [N, a.images.size(1)], "embedded images");
      // ImageFolder order is class folder by class folder; put the synthetic embeddings in that order.
      const order = [...Array(N).keys()].sort((x, y) => a.labels[x] - a.labels[y] || x - y);
      assertEquals(b.labels, order.map((i) => a.labels[i]), "labels from the class folders");
      const reordered = tidy(() => a.images.indexSelect(0, Tensor.fromArray(order, [N], { dtype: "int64" })));
      assertClose(b.images.toArray(), reordered.toArray(), { atol: 1e-5, rtol: 0, message: "embeddings" });
      reordered.dispose();
    } finally {
      a.images.dispose();
      b.images.dispose();
    }
    const skipped = folder.skipped!();
    assertEquals(
      Object.values(skipped).reduce((x, y) => x + y, 0),
      1,
      `one image left out: ${JSON.stringify(skipped)}`,
    );
    assert(Object.keys(skipped)[0].startsWith("image_"), `a decode reason: ${JSON.stringify(skipped)}`);
  } finally {
    folder.close?.();
    model.dispose();
  }
});

test("deno task eval zeroshot: imagefolder, csv, webdataset and filelist give the synthetic set's metrics", () => {
  const f = fixtures();
  const prompts = ["--labels", f.labels, "--templates", f.templates, "--key", "synthetic_shapes"];
  const run = (dataset: string, extra: string[] = []): Record<string, unknown> => {
    const out = join(f.dir, `zs-${dataset.replace(/[^a-z0-9]/gi, "_").slice(-40)}.json`);
    const { code, errors } = evalCommand([
      "zeroshot",
      "--checkpoint",
      f.checkpoint,
      "--dataset",
      dataset,
      ...prompts,
      "--batch-size",
      "5",
      "--out",
      out,
      ...extra,
    ]);
    assertEquals(code, 0, `exit code for ${dataset}: ${errors}`);
    return (readJson(out) as { results: Record<string, unknown> }).results;
  };
  const reference = run("synthetic", ["--size", String(N)]);
  assertEquals(reference.count, N);
  assertEquals(reference.skippedTotal, 0);
  const same = (r: Record<string, unknown>, what: string, skipped: number): void => {
    for (const k of ["top1", "top5", "meanPerClass", "count", "confusion"]) {
      assertEquals(r[k], reference[k], `${what}: ${k}`);
    }
    assertEquals(r.skippedTotal, skipped, `${what}: skipped`);
  };
  same(run(`imagefolder:${f.folder}`), "imagefolder", 1);
  const csv = run(`csv:${join(f.dir, "classes.csv")}`);
  same(csv, "csv", 2);
  assertEquals((csv.skipped as Record<string, number>).image_missing, 1, "csv: the missing image");
  same(run(`webdataset:${join(f.dir, "shard-{000..001}.tar")}`), "webdataset", 0);
  same(run(`filelist:${join(f.dir, "list")}`), "filelist", 0);
});

// ---- retrieval ---------------------------------------------------------------------------------------------------

test("deno task eval retrieval: Karpathy JSON and a grouped CSV score every caption; a missing image is left out", () => {
  const f = fixtures();
  // Expected: the synthetic images' embeddings, their captions as separate texts, each pointing at its image.
  const model = loadEvalModel(f.checkpoint);
  let expected;
  try {
    const images = embedDataset(model, syntheticEvalDataset({ split: "val", imageSize: SIZE, size: R }), {
      batchSize: 4,
      device: "cpu",
    });
    const captions = Array.from({ length: R }, (_, i) => {
      const s = syntheticSample("val", i, { size: SIZE });
      return [s.caption, s.mainCaption];
    });
    const texts = noGrad(() => tidy(() => model.encodeText(model.tokenize(captions.flat()))));
    try {
      expected = retrievalRecall(images.images, texts, captions.flatMap((_, i) => [[i], [i]]), [1, 5, 10]);
    } finally {
      texts.dispose();
      images.images.dispose();
    }
  } finally {
    model.dispose();
  }
  const plots = join(f.dir, "plots-retrieval");
  for (
    const dataset of [
      `karpathy:${join(f.dir, "ret", "dataset_coco.json")}`,
      `csv:${join(f.dir, "ret", "captions.csv")}`,
    ]
  ) {
    const out = join(f.dir, "retrieval.json");
    const { code, errors } = evalCommand([
      "retrieval",
      "--checkpoint",
      f.checkpoint,
      "--dataset",
      dataset,
      "--batch-size",
      "4",
      "--out",
      out,
      "--plots",
      plots,
    ]);
    assertEquals(code, 0, `exit code: ${errors}`);
    const r = (readJson(out) as { results: Record<string, unknown> }).results;
    assertEquals([r.images, r.texts], [R, 2 * R], `${dataset}: images / texts`);
    for (const k of ["imageToText", "textToImage", "imageToTextCurve", "textToImageCurve"] as const) {
      assertEquals(r[k], JSON.parse(JSON.stringify(expected[k])), `${dataset}: ${k}`);
    }
    const missing = dataset.startsWith("karpathy") ? 1 : 0;
    assertEquals(r.skippedTotal, missing, `${dataset}: skipped`);
  }
  for (const name of ["karpathy-dataset_coco-recall.png", "csv-captions-recall.png"]) {
    const png = Deno.readFileSync(join(plots, name));
    assertEquals(Array.from(png.subarray(1, 4)), [0x50, 0x4e, 0x47], `${name} is a PNG`);
  }
});

// ---- the official catalog ----------------------------------------------------------------------------------------

test("deno task eval zeroshot --catalog: catalog order, the official metric per key, a missing set costs its row", () => {
  const f = fixtures();
  const catalog = join(f.dir, "dataset_catalog.json");
  Deno.writeTextFileSync(
    catalog,
    JSON.stringify({
      pets: { path: join(f.dir, "folder"), type: "imagefolder", train: "train", test: "test" },
      cifar10: { path: "special/cifar10", type: "special" },
      food101: { path: join(f.dir, "not-downloaded"), type: "imagefolder", train: "train", test: "test" },
      clevr_counts: { path: join(f.dir, "clevr"), type: "filelist", train: "train", test: "val" },
      hateful_memes: { path: join(f.dir, "memes"), type: "imagefolder", train: "train", test: "dev" },
      kinetics700_frames: { path: join(f.dir, "folder"), type: "imagefolder", train: "train", test: "test" },
    }),
  );
  assertEquals(readCatalog(catalog).map(([key]) => key), [
    "pets",
    "cifar10",
    "food101",
    "clevr_counts",
    "hateful_memes",
    "kinetics700_frames",
  ]);
  const out = join(f.dir, "catalog.json");
  const plots = join(f.dir, "plots-catalog");
  const args = ["zeroshot", "--checkpoint", f.checkpoint, "--catalog", catalog, "--labels", f.labels, "--templates"];
  const { code, errors } = evalCommand([...args, f.templates, "--root", f.dir, "--out", out, "--plots", plots]);
  assertEquals(code, 5, "a dataset that is not there makes the exit code 5 (data, docs/errors.md)");
  assert(errors.includes("food101") && errors.includes("not-downloaded"), `the error names the set: ${errors}`);
  const results = (readJson(out) as { results: { datasets: Record<string, Record<string, unknown>> } }).results
    .datasets;
  assertEquals(Object.keys(results), [
    "pets",
    "cifar10",
    "food101",
    "clevr_counts",
    "hateful_memes",
    "kinetics700_frames",
  ]);
  const metric = (key: string): [unknown, unknown] => [results[key].metric, results[key].value];
  assertEquals(metric("pets"), ["mean_per_class", results.pets.meanPerClass]);
  assertEquals(metric("cifar10"), ["top1", results.cifar10.top1]);
  assertEquals(metric("clevr_counts"), ["top1", results.clevr_counts.top1]);
  assertEquals(metric("hateful_memes"), ["roc_auc", results.hateful_memes.rocAuc]);
  const k = results.kinetics700_frames;
  assertEquals(metric("kinetics700_frames"), ["top1_top5_mean", ((k.top1 as number) + (k.top5 as number)) / 2]);
  assert(typeof results.food101.error === "string", "food101 records its error");
  assertEquals([results.pets.count, results.pets.skippedTotal], [N, 1], "pets: the corrupt image left out");
  assertEquals([results.cifar10.count, results.clevr_counts.count, results.hateful_memes.count], [5, 8, N]);
  for (const key of ["pets", "cifar10", "clevr_counts", "hateful_memes", "kinetics700_frames"]) {
    const png = Deno.readFileSync(join(plots, `${key}-confusion.png`));
    assertEquals(Array.from(png.subarray(1, 4)), [0x50, 0x4e, 0x47], `${key} confusion PNG`);
  }
  // --datasets keeps catalog order, whatever order it is given in.
  const only = evalCommand([...args, f.templates, "--root", f.dir, "--datasets", "cifar10,pets", "--out", out]);
  assertEquals(only.code, 0, only.errors);
  const selected = (readJson(out) as { results: { datasets: Record<string, unknown> } }).results.datasets;
  assertEquals(Object.keys(selected), ["pets", "cifar10"]);
  assertEquals(selected.pets, results.pets, "the same numbers when run alone");
  assertEquals(evalCommand([...args, f.templates, "--datasets", "imagenet"]).code, 5, "an unknown key");
});

// ---- metrics by hand ----------------------------------------------------------------------------------------------

test("ROC-AUC by hand: ties count one half, an absent class gives NaN", () => {
  // sklearn's documented example: 0.75.
  assertClose(rocAuc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]), 0.75, { rtol: 1e-12 });
  // Positives score {1, 2}, negatives {1, 0}: pairs (1,1) tie ½, (1,0) 1, (2,1) 1, (2,0) 1 → 3.5 / 4.
  assertClose(rocAuc([1, 1, 2, 0], [1, 0, 1, 0]), 0.875, { rtol: 1e-12 });
  // Every score tied: 0.5 whatever the labels.
  assertClose(rocAuc([3, 3, 3, 3, 3], [1, 0, 0, 1, 0]), 0.5, { rtol: 1e-12 });
  assert(Number.isNaN(rocAuc([1, 2], [1, 1])), "one class only");
});

test("zero-shot metrics: binary ROC-AUC from logit[1] − logit[0], confusion rows, the official metric per key", () => {
  const before = liveTensors();
  tidy(() => {
    // Scores logit1 − logit0: [0.5, -1, 0.5, 2] for labels [0, 0, 1, 1]: pairs (0.5 vs 0.5) ½, (0.5 vs -1) 1,
    // (2 vs 0.5) 1, (2 vs -1) 1 → 0.875.
    const logits = Tensor.fromArray([0, 0.5, 1, 0, 0, 0.5, -1, 1], [4, 2]);
    const r = zeroShotMetrics(logits, Tensor.fromArray([0, 0, 1, 1], [4], { dtype: "int64" }));
    assertClose(r.rocAuc!, 87.5, { rtol: 1e-12 });
    // Argmax (ties to class 0): [1, 0, 1, 1] → row 0: one right, one predicted 1; row 1: both right.
    assertEquals(r.confusion, [[1, 1], [0, 2]]);
    assertClose([r.top1, r.meanPerClass], [75, 75], { rtol: 1e-12 });
    const three = zeroShotMetrics(
      Tensor.fromArray([1, 0, 0, 0, 1, 0], [2, 3]),
      Tensor.fromArray([0, 2], [2], {
        dtype: "int64",
      }),
    );
    assertEquals(three.rocAuc, undefined, "ROC-AUC only for two classes");
    assertEquals(three.confusion, [[1, 0, 0], [0, 0, 0], [0, 1, 0]]);
  });
  assertEquals(liveTensors(), before);
  const result = { top1: 40, top5: 90, meanPerClass: 35, count: 10, rocAuc: 61, confusion: [] };
  assertEquals(officialMetric("kinetics700_frames", result), { metric: "top1_top5_mean", value: 65 });
  for (const key of ["aircraft", "pets", "caltech101", "flowers"]) {
    assertEquals(officialMetric(key, result), { metric: "mean_per_class", value: 35 });
  }
  assertEquals(officialMetric("hateful_memes", result), { metric: "roc_auc", value: 61 });
  assertEquals(officialMetric("cifar10", result), { metric: "top1", value: 40 });
});

// Scores in quarters (exact in float32): texts are basis vectors, image i holds its scores in the first six dims and
// pads the rest with 0.25s to unit norm. Image i owns captions 2i and 2i + 1.
const SCORES = [
  [2, 0, 2, 0, 0, 0],
  [2, 0, 1, 2, 0, 0],
  [3, 0, 0, 0, 1, 1],
];

function scoreEmbeddings(): { images: Tensor; texts: Tensor } {
  const dims = 22;
  const images = SCORES.flatMap((row) => {
    const out = new Array<number>(dims).fill(0);
    row.forEach((level, t) => (out[t] = level / 4));
    const pads = 16 - row.reduce((sum, level) => sum + level * level, 0);
    for (let p = 0; p < pads; p++) out[6 + p] = 0.25;
    return out;
  });
  const texts = Array.from({ length: 6 }, (_, t) => Array.from({ length: dims }, (_, d) => (d === t ? 1 : 0)));
  return { images: Tensor.fromArray(images, [3, dims]), texts: Tensor.fromArray(texts.flat(), [6, dims]) };
}

test("retrieval by hand: several captions per image, ties settled by index order, recall curve to K", () => {
  const before = liveTensors();
  tidy(() => {
    const { images, texts } = scoreEmbeddings();
    const r = retrievalRecall(images, texts, [[0], [0], [1], [1], [2], [2]], [1, 2, 3], 5);
    // I2T: image 0's best positive is caption 0 (2); caption 2 ties but has a higher index → rank 0.
    //      image 1's best positive is caption 3 (2); caption 0 ties with a lower index → rank 1.
    //      image 2's best positive is caption 4 (1); caption 0 scores 3 → rank 1.
    assertClose([r.imageToText[1], r.imageToText[2], r.imageToText[3]], [100 / 3, 100, 100], { rtol: 1e-12 });
    // T2I: caption 0 [2, 2, 3] → image 2 higher, image 1 ties later → rank 1; caption 1 [0, 0, 0] → image 0 first
    //      → rank 0; caption 2 [2, 1, 0] → rank 1; captions 3, 4, 5 → rank 0.
    assertClose([r.textToImage[1], r.textToImage[2]], [400 / 6, 100], { rtol: 1e-12 });
    assertClose(r.imageToTextCurve, [100 / 3, 100, 100, 100, 100], { rtol: 1e-12 });
    assertClose(r.textToImageCurve, [400 / 6, 100, 100, 100, 100], { rtol: 1e-12 });
    assertEquals([r.imageQueries, r.textQueries], [3, 6]);
    // A collapsed model (every score equal) gets chance-level recall under the index rule, not 100%: image i's
    // caption i sits at rank i, so R@k = k / 4.
    const same = Tensor.ones([4, 3]);
    const collapsed = retrievalRecall(same, same, [[0], [1], [2], [3]], [1, 2, 4]);
    assertClose([collapsed.imageToText[1], collapsed.imageToText[2], collapsed.imageToText[4]], [25, 50, 100], {
      rtol: 1e-12,
    });
  });
  assertEquals(liveTensors(), before);
});

test("deno task eval probe on file datasets: fitted on --train-dataset, the same numbers as the in-memory features", () => {
  const f = fixtures();
  const out = join(f.dir, "probe-csv.json");
  const csv = `csv:${join(f.dir, "classes.csv")}`;
  const args = ["probe", "--checkpoint", f.checkpoint, "--dataset", csv, "--train-dataset", csv, "--out", out];
  const prompts = ["--labels", f.labels, "--templates", f.templates, "--key", "synthetic_shapes"];
  const { code, errors } = evalCommand([...args, ...prompts, "--csv-label-key", "label", "--batch-size", "5"]);
  assertEquals(code, 0, errors);
  const r = (readJson(out) as { results: Record<string, number> }).results;
  // The CSV holds the synthetic val images 0..N-1 in order (its corrupt and missing rows are skipped), so the probe
  // sees exactly the features of the in-memory set, fitted and scored on the same images.
  const model = loadEvalModel(f.checkpoint);
  try {
    const dataset = syntheticEvalDataset({ split: "val", imageSize: SIZE, size: N, objects: 1 });
    const features = extractFeatures(model.tower, dataset, { batchSize: 5, device: "cpu" });
    try {
      const expected = linearProbe(features, features, { classes: SHAPES.length });
      assertEquals([r.top1, r.top5, r.l2, r.trainSize, r.testSize], [
        expected.top1,
        expected.top5,
        expected.l2,
        N,
        N,
      ]);
      assertEquals(r.classes, SHAPES.length);
    } finally {
      features.dispose();
    }
  } finally {
    model.dispose();
  }
  // A file --dataset without --train-dataset, and --train-dataset elsewhere, are usage errors.
  assertThrows(() => evalCommand(["probe", "--checkpoint", f.checkpoint, "--dataset", csv]), UsageError);
  assertThrows(
    () => evalCommand(["zeroshot", "--checkpoint", f.checkpoint, "--dataset", csv, "--train-dataset", csv]),
    UsageError,
  );
  assertThrows(() => evalCommand(["segprobe", "--checkpoint", f.checkpoint, "--dataset", csv]), UsageError);
  assertThrows(() => evalCommand(["zeroshot", "--checkpoint", f.checkpoint, "--dataset", "ade20k:/x"]), UsageError);
});

test("retrieval on a CSV with one caption per image deduplicates equal captions (MNIST's class captions)", () => {
  const f = fixtures();
  const rows = ["filepath,title", ...Array.from({ length: R }, (_, i) => `imgs/r${i}.png,${i % 2 ? "odd" : "even"}`)];
  const csv = join(f.dir, "ret", "classes.csv");
  Deno.writeTextFileSync(csv, rows.join("\n") + "\n");
  const out = join(f.dir, "ret-classes.json");
  const { code, errors } = evalCommand([
    "retrieval",
    "--checkpoint",
    f.checkpoint,
    "--dataset",
    `csv:${csv}`,
    "--out",
    out,
  ]);
  assertEquals(code, 0, errors);
  const r = (readJson(out) as { results: Record<string, number> }).results;
  // Two texts, each the caption of R/2 images: with two candidates every image query finds its caption by R@2.
  assertEquals([r.images, r.texts, r.imageQueries, r.textQueries], [R, 2, R, 2]);
  assertEquals((r.imageToText as unknown as Record<string, number>)["5"], 100);
});
