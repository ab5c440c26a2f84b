// datasets.ts: what the evaluation commands read. An evaluation dataset is a finite, ordered list of images with
// whatever ground truth it has (class labels, captions, per-pixel masks), handed out in batches of (B, 3, H, W)
// tensors. The synthetic shapes implement it here; the image-file datasets (ImageFolder, CSV/TSV, webdataset, npy
// file lists, torchvision's CIFAR/STL10/MNIST files, Karpathy retrieval JSON: file_datasets.ts and its neighbours)
// implement the same interface, so zero-shot, retrieval and the probes never know where the pixels came from. A file
// dataset may leave images out (missing, corrupt): they are absent from the batches and counted in skipped().
import {
  SHAPES,
  SYNTHETIC_EVAL_SIZE,
  syntheticBatch,
  type SyntheticSplit,
  syntheticTemplates,
} from "../data/synthetic.ts";
import type { Device, Tensor } from "../torch/mod.ts";

/** One batch; every array has the batch's length (masks: B·H·W bytes, row-major). */
export interface EvalBatch {
  /** (B, 3, H, W) float32, normalised; owned by the consumer (dispose it). */
  images: Tensor;
  /** (B) class indices, when the dataset has classes. */
  labels?: Int32Array;
  /** One caption per image, when the dataset has captions (the first one when an image has several). */
  captions?: string[];
  /** Every caption of each image (COCO/Flickr30K: about 5), when the dataset groups captions per image. */
  captionLists?: string[][];
  /** (B, H, W) per-pixel class indices (ignoreIndex where unlabelled), when the dataset has masks. */
  masks?: Uint8Array;
}

export interface EvalDataset {
  /** Printed in tables and stored in results. */
  readonly name: string;
  readonly size: number;
  /** Side of the square images it yields. */
  readonly imageSize: number;
  /** Class names in label order; an entry may list synonyms (fer2013-style). */
  readonly classNames?: readonly (string | readonly string[])[];
  /** Default zero-shot templates ("{}" is the class name). */
  readonly templates?: readonly string[];
  /** Number of classes, when the dataset has labels but may not name its classes (labels lie in 0..classes-1). */
  readonly classes?: number;
  /** Number of mask classes (background included), when masks are present. */
  readonly maskClasses?: number;
  /** Batches in order; each usable image appears exactly once. */
  batches(batchSize: number, device: Device): Iterable<EvalBatch>;
  /** Images left out so far (while indexing and in the last pass of batches()), by reason; absent = never any. */
  skipped?(): Record<string, number>;
  /** Releases files and worker threads (file datasets). */
  close?(): void;
}

/** An unknown dataset name, an unusable dataset option or a malformed dataset file; the message names the file. */
export class DatasetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DatasetError";
  }
}

export interface SyntheticEvalOptions {
  split: SyntheticSplit;
  imageSize: number;
  /** Number of images (indices 0..size-1 of the split). */
  size?: number;
  /** Force 1–3 objects per image; single-object images make the main shape the whole picture (classification). */
  objects?: number;
  /** Index offset, so probe training images and test images of one split never overlap. */
  offset?: number;
  seed?: number;
}

/** Synthetic captioned shapes, unaugmented: labels = main shape, captions, masks (0 = background, 1 + shape). */
export function syntheticEvalDataset(options: SyntheticEvalOptions): EvalDataset {
  const { split, imageSize, size = SYNTHETIC_EVAL_SIZE, objects, offset = 0, seed = 0 } = options;
  if (!Number.isInteger(size) || size < 1) throw new DatasetError(`synthetic: size must be a positive integer`);
  const suffix = objects === undefined ? "" : `, ${objects} object${objects === 1 ? "" : "s"}`;
  return {
    name: `synthetic-${split}${suffix}`,
    size,
    imageSize,
    classNames: [...SHAPES],
    templates: syntheticTemplates(),
    maskClasses: 1 + SHAPES.length,
    *batches(batchSize: number, device: Device): Iterable<EvalBatch> {
      for (let start = 0; start < size; start += batchSize) {
        const indices = Array.from({ length: Math.min(batchSize, size - start) }, (_, i) => offset + start + i);
        const batch = syntheticBatch(split, indices, { seed, size: imageSize, views: 1, objects, device });
        yield { images: batch.u, labels: batch.labels, captions: batch.captions, masks: batch.masks };
      }
    },
  };
}

/** The evaluation split a `--dataset` name stands for (the probes' training images come from "train"). */
export function syntheticSplitOf(name: string): SyntheticSplit {
  if (name === "synthetic") return "val";
  if (name === "synthetic-heldout") return "heldout";
  throw new DatasetError(
    `unknown synthetic dataset '${name}' (known: synthetic, synthetic-heldout)`,
  );
}
