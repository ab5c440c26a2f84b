// torchvision_sets.ts: the "special" entries of the official zero-shot catalog
// (docs/evaluation.md#the-official-zero-shot-suite): CIFAR-10, CIFAR-100, STL-10 and MNIST, read from the files
// torchvision keeps on disk (the official code downloads them with download=True; this one never downloads and names
// the files it expected). CIFAR's python batches are pickles with numpy arrays (read by ndarray_pickle.ts, nothing
// executed), STL-10 is raw column-major uint8, MNIST is idx.
//
// The pixels are in memory, but the eval transform lives in the native loader, which reads encoded images: each image
// is written once as a lossless PNG into one temporary file and handed over as a byte range, so these sets go through
// exactly the Resize(S) + CenterCrop(S) the folder sets get. That costs a PNG encode per image (well under a second
// for CIFAR's 10,000 test images) and a temporary file that close() removes.
import { readRegularFileSync } from "../fs/input_file.ts";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { encodePng } from "../formats/png.ts";
import { SkipCounter } from "../data/loader.ts";
import { DatasetError } from "./datasets.ts";
import type { EvalItem, EvalTable } from "./file_datasets.ts";
import { NdPickleError, type NdPickleValue, PickledArray, pickleText, readNdPickle } from "./ndarray_pickle.ts";

export const SPECIAL_DATASETS = ["cifar10", "cifar100", "stl10", "mnist"] as const;
export type SpecialDataset = typeof SPECIAL_DATASETS[number];

const CLASS_COUNTS: Record<SpecialDataset, number> = { cifar10: 10, cifar100: 100, stl10: 10, mnist: 10 };

/** Decoded images of one split: N images of width × height × channels bytes (HWC), with labels. */
interface RawImages {
  width: number;
  height: number;
  channels: 1 | 3;
  count: number;
  /** Writes image n as HWC bytes into `out`. */
  image(n: number, out: Uint8Array): void;
  labels: number[];
  classNames?: string[];
}

/** The files a special set's split needs, relative to its root (what the "missing" message lists). */
export function specialFiles(name: SpecialDataset, split: "train" | "test"): string[] {
  switch (name) {
    case "cifar10":
      return split === "test"
        ? ["cifar-10-batches-py/test_batch"]
        : [1, 2, 3, 4, 5].map((k) => `cifar-10-batches-py/data_batch_${k}`);
    case "cifar100":
      return [`cifar-100-python/${split}`];
    case "stl10":
      return [`stl10_binary/${split}_X.bin`, `stl10_binary/${split}_y.bin`];
    case "mnist": {
      const prefix = split === "test" ? "t10k" : "train";
      return [`MNIST/raw/${prefix}-images-idx3-ubyte`, `MNIST/raw/${prefix}-labels-idx1-ubyte`];
    }
  }
}

const SOURCES: Record<SpecialDataset, string> = {
  cifar10: "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, extracted into the root",
  cifar100: "cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, extracted into the root",
  stl10: "stl10_binary.tar.gz from https://cs.stanford.edu/~acoates/stl10/, extracted into the root",
  mnist: "the four idx files (.gz or not) as torchvision.datasets.MNIST(root, download=True) leaves them",
};

/** The most bytes a .gz file of these sets may unpack to (docs/errors.md, "Input bounds"). */
const GUNZIP_CAP_BYTES = 512 * 1024 * 1024;

function readFile(root: string, rel: string, name: SpecialDataset, split: "train" | "test"): Uint8Array {
  const path = join(root, rel);
  for (const candidate of [path, `${path}.gz`]) {
    let bytes: Uint8Array;
    try {
      bytes = readRegularFileSync(candidate); // a FIFO is refused, not opened
    } catch {
      continue;
    }
    if (!candidate.endsWith(".gz") || path.endsWith(".gz")) return bytes;
    try {
      // MNIST's largest file is 47 MB unpacked: a gzip bomb stops at the cap
      return new Uint8Array(gunzipSync(bytes, { maxOutputLength: GUNZIP_CAP_BYTES }));
    } catch (error) {
      throw new DatasetError(
        `${name}: ${candidate}: not valid gzip or over ${GUNZIP_CAP_BYTES} bytes unpacked: ` +
          (error as Error).message,
      );
    }
  }
  const expected = specialFiles(name, split).map((f) => join(root, f)).join(", ");
  throw new DatasetError(
    `${name}: ${path} is missing; the ${split} split needs ${expected} (torchvision's layout: ${SOURCES[name]}). ` +
      "Nothing is downloaded.",
  );
}

function cifar(root: string, name: "cifar10" | "cifar100", split: "train" | "test"): RawImages {
  const labelKey = name === "cifar10" ? "labels" : "fine_labels";
  const chunks: Uint8Array[] = [];
  const labels: number[] = [];
  for (const rel of specialFiles(name, split)) {
    const path = join(root, rel);
    let value: NdPickleValue;
    try {
      value = readNdPickle(readFile(root, rel, name, split), path);
    } catch (error) {
      if (error instanceof NdPickleError) throw new DatasetError(error.message);
      throw error;
    }
    if (!(value instanceof Map)) throw new DatasetError(`${path}: expected a pickled dict`);
    const data = value.get("data"), list = value.get(labelKey);
    if (!(data instanceof PickledArray) || data.descr !== "|u1" || data.shape.length !== 2 || data.shape[1] !== 3072) {
      throw new DatasetError(`${path}: 'data' is not a (N, 3072) uint8 array`);
    }
    if (!Array.isArray(list) || list.length !== data.shape[0] || !list.every((l) => typeof l === "number")) {
      throw new DatasetError(`${path}: '${labelKey}' is not a list of ${data.shape[0]} ints`);
    }
    chunks.push(data.data);
    labels.push(...(list as number[]));
  }
  const pixels = chunks.length === 1 ? chunks[0] : concat(chunks);
  let classNames: string[] | undefined;
  try {
    const metaRel = name === "cifar10" ? "cifar-10-batches-py/batches.meta" : "cifar-100-python/meta";
    const meta = readNdPickle(Deno.readFileSync(join(root, metaRel)), join(root, metaRel));
    const names = meta instanceof Map ? meta.get(name === "cifar10" ? "label_names" : "fine_label_names") : null;
    if (Array.isArray(names)) classNames = names.map((n) => pickleText(n) ?? "");
  } catch {
    // The class names are a convenience (labels.json is what zero-shot uses); a missing meta file costs nothing.
  }
  return {
    width: 32,
    height: 32,
    channels: 3,
    count: labels.length,
    labels,
    classNames,
    image(n, out): void {
      // data row n: (3, 32, 32) planes → (32, 32, 3)
      const base = n * 3072;
      for (let p = 0; p < 1024; p++) {
        out[p * 3] = pixels[base + p];
        out[p * 3 + 1] = pixels[base + 1024 + p];
        out[p * 3 + 2] = pixels[base + 2048 + p];
      }
    },
  };
}

function stl10(root: string, split: "train" | "test"): RawImages {
  const [xRel, yRel] = specialFiles("stl10", split);
  const x = readFile(root, xRel, "stl10", split), y = readFile(root, yRel, "stl10", split);
  const size = 3 * 96 * 96;
  if (x.length !== y.length * size) {
    throw new DatasetError(`stl10: ${join(root, xRel)} holds ${x.length} bytes, expected ${y.length} × ${size}`);
  }
  let classNames: string[] | undefined;
  try {
    classNames = Deno.readTextFileSync(join(root, "stl10_binary/class_names.txt")).split("\n").filter((s) => s !== "");
  } catch {
    // optional, as for CIFAR
  }
  return {
    width: 96,
    height: 96,
    channels: 3,
    count: y.length,
    labels: Array.from(y, (v) => v - 1), // stored 1..10, as torchvision subtracts 1
    classNames,
    image(n, out): void {
      // Column-major planes: value (c, x, y) → pixel (y, x, c), torchvision's transpose (0, 1, 3, 2).
      const base = n * size;
      for (let c = 0; c < 3; c++) {
        for (let px = 0; px < 96; px++) {
          for (let py = 0; py < 96; py++) out[(py * 96 + px) * 3 + c] = x[base + c * 9216 + px * 96 + py];
        }
      }
    },
  };
}

function mnist(root: string, split: "train" | "test"): RawImages {
  const [imagesRel, labelsRel] = specialFiles("mnist", split);
  const images = readFile(root, imagesRel, "mnist", split), labels = readFile(root, labelsRel, "mnist", split);
  const iv = new DataView(images.buffer, images.byteOffset, images.byteLength);
  const lv = new DataView(labels.buffer, labels.byteOffset, labels.byteLength);
  if (images.length < 16 || iv.getUint32(0) !== 0x803) {
    throw new DatasetError(`mnist: ${join(root, imagesRel)} is not an idx3 image file (magic 0x00000803)`);
  }
  if (labels.length < 8 || lv.getUint32(0) !== 0x801) {
    throw new DatasetError(`mnist: ${join(root, labelsRel)} is not an idx1 label file (magic 0x00000801)`);
  }
  const count = iv.getUint32(4), height = iv.getUint32(8), width = iv.getUint32(12);
  if (lv.getUint32(4) !== count || images.length < 16 + count * height * width || labels.length < 8 + count) {
    throw new DatasetError(`mnist: ${join(root, imagesRel)} and ${labelsRel} disagree on the count or are truncated`);
  }
  return {
    width,
    height,
    channels: 1,
    count,
    labels: Array.from(labels.subarray(8, 8 + count)),
    classNames: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
    image(n, out): void {
      out.set(images.subarray(16 + n * width * height, 16 + (n + 1) * width * height));
    },
  };
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

export interface SpecialOptions {
  name: SpecialDataset;
  /** The folder torchvision was given as root. */
  root: string;
  split?: "train" | "test";
  classNames?: readonly (string | readonly string[])[];
}

/** Reads a special set and lists its images as byte ranges of one temporary PNG file (removed by close()). */
export function specialTable(options: SpecialOptions): EvalTable {
  const split = options.split ?? "test";
  const raw = options.name === "cifar10" || options.name === "cifar100"
    ? cifar(options.root, options.name, split)
    : options.name === "stl10"
    ? stl10(options.root, split)
    : mnist(options.root, split);
  const blob = Deno.makeTempFileSync({ prefix: `dc_eval_${options.name}_`, suffix: ".png-blob" });
  const items: EvalItem[] = [];
  try {
    const file = Deno.openSync(blob, { write: true });
    try {
      const pixels = new Uint8Array(raw.width * raw.height * raw.channels);
      let offset = 0;
      for (let n = 0; n < raw.count; n++) {
        raw.image(n, pixels);
        const png = encodePng(raw.width, raw.height, pixels, raw.channels === 1 ? "gray" : "rgb");
        for (let done = 0; done < png.length;) done += file.writeSync(png.subarray(done));
        items.push({ image: { path: blob, offset, length: png.length }, label: raw.labels[n] });
        offset += png.length;
      }
    } finally {
      file.close();
    }
  } catch (error) {
    Deno.removeSync(blob);
    throw error;
  }
  return {
    name: options.name,
    items,
    classNames: options.classNames ?? raw.classNames,
    classes: CLASS_COUNTS[options.name],
    indexSkips: new SkipCounter(),
    close(): void {
      try {
        Deno.removeSync(blob);
      } catch {
        // already gone
      }
    },
  };
}
