// ade20k.ts: ADE20K (the ADEChallengeData2016 layout, SceneParsing's 150 classes) as an evaluation dataset for the
// linear segmentation probe, the paper's "ADE20K (Linear)". Images go through the native loader's eval transform
// (Resize shorter side to S bilinear, CenterCrop S: the same pixels as every other eval path), label maps through the
// same geometry with nearest-neighbour sampling done here (Pillow's NEAREST resize, then the same centre crop), and
// labels follow mmseg's reduce_zero_label: 0 ("other") becomes the ignore index 255, k becomes k − 1.
//
// What it trades away: mmseg's ADE20K protocol trains on 512-px crops and scores predictions at each image's full
// resolution; this probe scores the S×S centre crop the backbone sees, so its mIoU compares checkpoints evaluated
// here, not published mmseg numbers. JPEGs are decoded at full size (no DCT scaling),
// so that image pixels and label pixels share one exact geometry; that costs decode time on large images.
import { readRegularFileSync } from "../fs/input_file.ts";
import { type Device, Tensor } from "../torch/mod.ts";
import { codes } from "../torch/symbols.ts";
import {
  decodeImage,
  imageSkipReason,
  type LoaderJob,
  type LoaderResult,
  NativeLoader,
  SkipCounter,
} from "../data/loader.ts";
import { DatasetError, type EvalBatch, type EvalDataset } from "./datasets.ts";
import { IGNORE_INDEX } from "./probe.ts";

/** The 150 class names in label order (after reduce_zero_label), as mmseg's ADE20KDataset.CLASSES spells them. */
// deno-fmt-ignore
export const ADE20K_CLASSES: readonly string[] = [
  "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed ", "windowpane", "grass", "cabinet", "sidewalk",
  "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water", "painting", "sofa",
  "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp",
  "bathtub", "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
  "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow",
  "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill",
  "bench", "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine",
  "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
  "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman",
  "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
  "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food",
  "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket",
  "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
  "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
];

export const ADE20K_SPLITS = ["training", "validation"] as const;
export type Ade20kSplit = typeof ADE20K_SPLITS[number];

/** The `--dataset` prefix: `ade20k:ROOT` names the folder holding images/ and annotations/. */
export const ADE20K_DATASET_PREFIX = "ade20k:";

/** ROOT of an `ade20k:ROOT` dataset name, or null when the name is not one. */
export function ade20kRootOf(dataset: string): string | null {
  if (!dataset.startsWith(ADE20K_DATASET_PREFIX)) return null;
  const root = dataset.slice(ADE20K_DATASET_PREFIX.length);
  if (root === "") {
    throw new DatasetError(`'${dataset}': expected ade20k:ROOT, the folder with images/ and annotations/`);
  }
  return root;
}

// ---- geometry (the native eval transform's, native/src/data.cpp eval_geometry) -----------------------------------

/** Resize(S) then CenterCrop(S): the resized size and the crop's offsets inside it. */
export interface EvalGeometry {
  newWidth: number;
  newHeight: number;
  top: number;
  left: number;
}

// C's nearbyint in the default rounding mode and Python 3's round(): halves go to the even neighbour.
function roundHalfEven(x: number): number {
  const floor = Math.floor(x);
  const fraction = x - floor;
  if (fraction < 0.5) return floor;
  if (fraction > 0.5) return floor + 1;
  return floor % 2 === 0 ? floor : floor + 1;
}

/**
 * torchvision's Resize(S) on the shorter side (the other side int(S · long / short), truncated) and CenterCrop(S)
 * (offsets int(round((resized − S) / 2))), exactly as native/src/data.cpp computes them for the eval transform.
 */
export function evalGeometry(width: number, height: number, side: number): EvalGeometry {
  if (!(width >= 1 && height >= 1 && side >= 1)) {
    throw new RangeError(`evalGeometry: sizes must be positive, got ${width}x${height} -> ${side}`);
  }
  // The products are exact in a double (far below 2^53), so the division rounds as the C code's does.
  const newWidth = width <= height ? side : Math.trunc((side * width) / height);
  const newHeight = width <= height ? Math.trunc((side * height) / width) : side;
  return {
    newWidth,
    newHeight,
    top: roundHalfEven((newHeight - side) / 2),
    left: roundHalfEven((newWidth - side) / 2),
  };
}

// Source indices of output pixels [start, start + count) of a NEAREST resize from inSize to outSize, as Pillow's
// ImagingScaleAffine computes them: position a·0.5 for pixel 0, advanced by a = in/out per pixel (accumulated, not
// multiplied, so the rare exact ties fall the way Pillow's do), truncated. Output pixel x samples the source pixel
// under its centre, (x + 0.5)·a: the same centre the bilinear image resize weighs around.
function nearestSources(inSize: number, outSize: number, start: number, count: number): Int32Array {
  const step = inSize / outSize;
  const out = new Int32Array(count);
  let position = step * 0.5;
  for (let x = 0; x < start + count; x++) {
    if (x >= start) out[x - start] = Math.min(inSize - 1, Math.trunc(position));
    position += step;
  }
  return out;
}

/**
 * A (height, width) label map through the eval geometry with nearest sampling: Resize(S, NEAREST) then CenterCrop(S),
 * returned as (S, S) row-major bytes. Labels are never interpolated.
 */
export function resizeLabelsNearest(labels: Uint8Array, width: number, height: number, side: number): Uint8Array {
  if (labels.length !== width * height) {
    throw new RangeError(
      `resizeLabelsNearest: a ${width}x${height} map needs ${width * height} bytes, got ${labels.length}`,
    );
  }
  const g = evalGeometry(width, height, side);
  const columns = nearestSources(width, g.newWidth, g.left, side); // (S)
  const rows = nearestSources(height, g.newHeight, g.top, side); // (S)
  const out = new Uint8Array(side * side); // (S, S)
  for (let y = 0; y < side; y++) {
    const source = rows[y] * width;
    for (let x = 0; x < side; x++) out[y * side + x] = labels[source + columns[x]];
  }
  return out;
}

// mmseg's reduce_zero_label (label 0 -> 255, k -> k - 1, and the 254 that 255 becomes -> 255), with every value past
// the 150 classes also mapped to the ignore index: a cross-entropy target must be a class or the ignore index.
const REDUCE_ZERO_LABEL: Uint8Array = Uint8Array.from(
  { length: 256 },
  (_, raw) => raw >= 1 && raw <= ADE20K_CLASSES.length ? raw - 1 : IGNORE_INDEX,
);

/** Raw ADE20K labels (0 = other, 1..150) to probe targets (0..149, 255 = ignore), in place; returns the array. */
export function reduceZeroLabel(labels: Uint8Array): Uint8Array {
  for (let i = 0; i < labels.length; i++) labels[i] = REDUCE_ZERO_LABEL[labels[i]];
  return labels;
}

// ---- label PNGs ----------------------------------------------------------------------------------------------------

/** A raw label map: one byte per pixel, row-major; `aboveClasses` counts pixels in 151..254 (not ADE20K labels). */
export interface LabelMap {
  width: number;
  height: number;
  labels: Uint8Array;
  aboveClasses: number;
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

function chunkType(bytes: Uint8Array, at: number): string {
  return String.fromCharCode(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]);
}

// The header checks the native RGB decoder cannot make for us: it expands 1/2/4-bit gray to 0..255 and keeps the high
// byte of 16-bit samples (both would turn label k into another number) and looks palette indices up (a label map
// stored as palette indices is only safe to read through its colours when the palette is the identity grey ramp).
function checkLabelPngHeader(bytes: Uint8Array, path: string): void {
  if (bytes.length < 33 || PNG_SIGNATURE.some((b, i) => bytes[i] !== b)) return; // not a PNG: the decoder says why
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const bitDepth = bytes[24], colorType = bytes[25];
  if (bitDepth === 16 || ((colorType === 0 || colorType === 4) && bitDepth !== 8)) {
    throw new DatasetError(
      `ade20k: ${path} is a ${bitDepth}-bit PNG (colour type ${colorType}); label maps must be 8-bit grayscale ` +
        `(ADEChallengeData2016's annotations are), since other depths would change the label values`,
    );
  }
  if (colorType !== 3) return;
  for (let at = 8; at + 8 <= bytes.length;) {
    const length = view.getUint32(at);
    const type = chunkType(bytes, at + 4);
    if (type === "PLTE") {
      const entries = Math.floor(length / 3);
      for (let i = 0; i < entries; i++) {
        const p = at + 8 + 3 * i;
        if (p + 2 >= bytes.length) break;
        if (bytes[p] !== i || bytes[p + 1] !== i || bytes[p + 2] !== i) {
          throw new DatasetError(
            `ade20k: ${path} is a palette PNG whose entry ${i} is (${bytes[p]}, ${bytes[p + 1]}, ${bytes[p + 2]}), ` +
              `not (${i}, ${i}, ${i}): its pixels are palette indices this loader cannot read as labels; ` +
              `save the indices as 8-bit grayscale (PIL: Image.fromarray(numpy.array(Image.open(p)), "L"))`,
          );
        }
      }
      return;
    }
    if (type === "IDAT" || type === "IEND") return;
    at += 12 + length;
  }
}

/**
 * Decodes an ADE20K label PNG: 8-bit grayscale (or an RGB / grey-palette PNG whose channels are equal everywhere).
 * An undecodable file is a `{ skip }` reason; a map that is not single-channel is a DatasetError (a wrong dataset,
 * e.g. the full ADE20K's colour-coded *_seg.png, not a bad sample).
 */
export function decodeLabelMap(bytes: Uint8Array, path: string): LabelMap | { skip: string } {
  checkLabelPngHeader(bytes, path);
  const decoded = decodeImage(bytes);
  if ("skip" in decoded) return { skip: decoded.skip.replace(/^image_/, "annotation_") };
  const { width, height, pixels } = decoded; // pixels: (H, W, 3)
  const labels = new Uint8Array(width * height); // (H, W)
  let aboveClasses = 0;
  for (let i = 0; i < labels.length; i++) {
    const r = pixels[3 * i], g = pixels[3 * i + 1], b = pixels[3 * i + 2];
    if (r !== g || r !== b) {
      throw new DatasetError(
        `ade20k: ${path} is not a single-channel label map: pixel (x ${i % width}, y ${Math.floor(i / width)}) has ` +
          `RGB (${r}, ${g}, ${b}); expected ADEChallengeData2016's 8-bit grayscale annotations (value = class 0..150)`,
      );
    }
    labels[i] = r;
    if (r > ADE20K_CLASSES.length && r !== 255) aboveClasses += 1;
  }
  return { width, height, labels, aboveClasses };
}

// ---- the dataset ---------------------------------------------------------------------------------------------------

const IMAGE_EXTENSIONS = [".jpg", ".jpeg", ".png"];

/** One indexed sample: an image and its label map, by path. */
export interface Ade20kEntry {
  image: string;
  annotation: string;
}

export interface Ade20kOptions {
  /** The folder that holds images/<split>/ and annotations/<split>/ (ADEChallengeData2016). */
  root: string;
  split: Ade20kSplit;
  imageSize: number;
  /** Samples (image + annotation pairs, in file-name order) from `offset`; default: all; clamped to what exists. */
  size?: number;
  offset?: number;
  /** Decode threads (default: the native loader's). */
  threads?: number;
}

export interface Ade20kEvalDataset extends EvalDataset {
  readonly root: string;
  readonly split: Ade20kSplit;
  /** The samples this dataset yields from, in order (images that fail to decode drop out of the batches). */
  readonly entries: readonly Ade20kEntry[];
  readonly maskClasses: number;
  /**
   * Images left out, by reason: while indexing (annotation_missing, over the whole split folder) and while decoding
   * (image_*, annotation_*), each sample counted once however often the batches are iterated.
   */
  skipped(): Record<string, number>;
  /** Images seen so far whose label map has values in 151..254 (set to the ignore index). */
  imagesWithUnknownLabels(): number;
}

function listFiles(folder: string, what: string): string[] {
  try {
    return [...Deno.readDirSync(folder)].filter((e) => e.isFile || e.isSymlink).map((e) => e.name);
  } catch (error) {
    throw new DatasetError(`ade20k: cannot list the ${what} folder ${folder}: ${(error as Error).message}`);
  }
}

function stemOf(name: string): string {
  const dot = name.lastIndexOf(".");
  return dot <= 0 ? name : name.slice(0, dot);
}

// Code-unit order: the same on every machine and locale (ADE_train_00000001.jpg, ADE_train_00000002.jpg, ...).
const byName = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** Pairs root/images/<split>/<stem>.{jpg,jpeg,png} with root/annotations/<split>/<stem>.png, sorted by file name. */
export function indexAde20k(root: string, split: Ade20kSplit): { entries: Ade20kEntry[]; skips: SkipCounter } {
  if (!(ADE20K_SPLITS as readonly string[]).includes(split)) {
    throw new DatasetError(`ade20k: unknown split '${split}' (known: ${ADE20K_SPLITS.join(", ")})`);
  }
  const imageDir = `${root}/images/${split}`, annotationDir = `${root}/annotations/${split}`;
  const images = listFiles(imageDir, "images").filter((name) =>
    IMAGE_EXTENSIONS.some((ext) => name.toLowerCase().endsWith(ext))
  ).sort(byName);
  const annotations = new Set(listFiles(annotationDir, "annotations").filter((name) => name.endsWith(".png")));
  const skips = new SkipCounter();
  const entries: Ade20kEntry[] = [];
  for (const name of images) {
    const label = `${stemOf(name)}.png`;
    if (!annotations.has(label)) {
      skips.add("annotation_missing");
      continue;
    }
    entries.push({ image: `${imageDir}/${name}`, annotation: `${annotationDir}/${label}` });
  }
  return { entries, skips };
}

/**
 * ADE20K's layout as an EvalDataset for the segmentation probe: normalised (B, 3, S, S) images and (B, S, S) masks
 * with 150 classes (ignore index 255). Samples are the image/annotation pairs in file-name order, [offset,
 * offset + size); an image without annotation is skipped while indexing, an unreadable image or annotation while
 * decoding, all counted in skipped(), never fatal.
 */
export function ade20kEvalDataset(options: Ade20kOptions): Ade20kEvalDataset {
  const { root, split, imageSize, offset = 0 } = options;
  if (!Number.isInteger(imageSize) || imageSize < 1) {
    throw new DatasetError(`ade20k: imageSize must be a positive integer, got ${imageSize}`);
  }
  if (!Number.isInteger(offset) || offset < 0) throw new DatasetError(`ade20k: offset must be >= 0, got ${offset}`);
  if (options.size !== undefined && (!Number.isInteger(options.size) || options.size < 1)) {
    throw new DatasetError(`ade20k: size must be a positive integer, got ${options.size}`);
  }
  const index = indexAde20k(root, split);
  if (offset >= index.entries.length) {
    throw new DatasetError(
      `ade20k: ${root} split '${split}' has ${index.entries.length} image/annotation pairs, none from offset ${offset}` +
        ` (skipped while indexing: ${index.skips})`,
    );
  }
  const entries = index.entries.slice(offset, offset + (options.size ?? index.entries.length));
  const decodeSkips = new Map<number, string>(); // entry index -> reason, so a second pass does not count twice
  const unknownLabels = new Set<number>();

  // Entry i's (S, S) reduced mask and the label map's size, or a skip reason.
  const maskOf = (i: number): { mask: Uint8Array; width: number; height: number } | { skip: string } => {
    const path = entries[i].annotation;
    let bytes: Uint8Array;
    try {
      bytes = readRegularFileSync(path);
    } catch (error) {
      return { skip: error instanceof Deno.errors.NotFound ? "annotation_missing" : "annotation_unreadable" };
    }
    const map = decodeLabelMap(bytes, path);
    if ("skip" in map) return map;
    if (map.aboveClasses > 0) unknownLabels.add(i);
    const mask = reduceZeroLabel(resizeLabelsNearest(map.labels, map.width, map.height, imageSize)); // (S, S)
    return { mask, width: map.width, height: map.height };
  };

  // The masks of one collected batch: kept slots in order, or a skip per slot; throws only on a wrong dataset.
  const maskBatch = (start: number, result: LoaderResult): { kept: number[]; masks: Uint8Array } => {
    const count = result.used.length, pixels = imageSize * imageSize;
    const kept: number[] = [];
    const masks = new Uint8Array(count * pixels); // (B, S, S), kept slots first
    for (let k = 0; k < count; k++) {
      const i = start + k;
      if (result.used[k] < 0) {
        decodeSkips.set(i, imageSkipReason(result.status[k]));
        continue;
      }
      const label = maskOf(i);
      if ("skip" in label) {
        decodeSkips.set(i, label.skip);
        continue;
      }
      const info = result.info.subarray(k * codes.INFO_STRIDE, (k + 1) * codes.INFO_STRIDE);
      const width = Number(info[codes.INFO_WIDTH]), height = Number(info[codes.INFO_HEIGHT]);
      if (width !== label.width || height !== label.height) {
        decodeSkips.set(i, "annotation_size_mismatch");
        continue;
      }
      const g = evalGeometry(width, height, imageSize);
      const ours = [g.newWidth, g.newHeight, g.top, g.left];
      const native = [codes.INFO_U_WIDTH, codes.INFO_U_HEIGHT, codes.INFO_U_TOP, codes.INFO_U_LEFT].map((at) =>
        Number(info[at])
      );
      if (ours.join() !== native.join()) {
        throw new Error(
          `ade20k: label geometry [${ours}] differs from the native eval resize [${native}] (new width, new height, ` +
            `top, left) for ${entries[i].image} (${width}x${height} -> ${imageSize}): a bug, not bad data`,
        );
      }
      decodeSkips.delete(i);
      masks.set(label.mask, kept.length * pixels);
      kept.push(k);
    }
    return { kept, masks: kept.length === count ? masks : masks.slice(0, kept.length * pixels) };
  };

  function* batches(batchSize: number, device: Device): Iterable<EvalBatch> {
    if (!Number.isInteger(batchSize) || batchSize < 1) {
      throw new DatasetError(`ade20k: batch size must be a positive integer, got ${batchSize}`);
    }
    using loader = new NativeLoader({
      threads: options.threads,
      imageSize,
      mode: "eval",
      views: 1,
      dctScaling: false,
      pin: false,
    });
    const submit = (start: number): { job: LoaderJob; start: number } => {
      const count = Math.min(batchSize, entries.length - start);
      return {
        start,
        job: loader.submit({
          candidates: Array.from({ length: count }, (_, k) => ({ path: entries[start + k].image, index: start + k })),
          slotBegin: Array.from({ length: count + 1 }, (_, k) => k),
          seed: 0,
          rank: 0,
          epoch: 0,
        }),
      };
    };
    let pending: { job: LoaderJob; start: number } | null = entries.length > 0 ? submit(0) : null;
    try {
      while (pending !== null) {
        const current = pending;
        const next = current.start + current.job.batch;
        pending = next < entries.length ? submit(next) : null; // the workers decode the next batch meanwhile
        const result = loader.collect(current.job);
        let images = result.u; // (count, 3, S, S)
        let kept: number[], masks: Uint8Array;
        try {
          ({ kept, masks } = maskBatch(current.start, result));
        } catch (error) {
          images.dispose();
          throw error;
        }
        if (kept.length === 0) {
          images.dispose();
          continue;
        }
        if (kept.length < result.used.length) {
          const keep = Tensor.fromArray(kept, [kept.length], { dtype: "int64" });
          images = result.u.indexSelect(0, keep); // (B, 3, S, S)
          keep.dispose();
          result.u.dispose();
        }
        if (device !== "cpu") {
          const moved = images.to({ device });
          images.dispose();
          images = moved;
        }
        yield { images, masks };
      }
    } finally {
      if (pending !== null) loader.collect(pending.job).u.dispose();
    }
  }

  return {
    name: `ade20k-${split}`,
    root,
    split,
    size: entries.length,
    imageSize,
    classNames: ADE20K_CLASSES,
    maskClasses: ADE20K_CLASSES.length,
    entries,
    batches,
    skipped(): Record<string, number> {
      const counter = new SkipCounter();
      counter.addAll(index.skips);
      for (const reason of decodeSkips.values()) counter.add(reason);
      return counter.snapshot();
    },
    imagesWithUnknownLabels(): number {
      return unknownLabels.size;
    },
  };
}
