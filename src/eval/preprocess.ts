// preprocess.ts: image files into a model's input with the official eval transform (Resize(S) bilinear on the
// shorter side, CenterCrop(S), per-channel normalisation; docs/data.md#image-transforms), decoded by the native loader
// as `deno task eval` does. For a handful of images from library code; data sets go through src/eval/file_datasets.ts,
// which drops an undecodable image and counts it, where this refuses the whole call.
import { SkipCounter } from "../data/loader.ts";
import { cat, type Device, type Tensor } from "../torch/mod.ts";
import { DatasetError } from "./datasets.ts";
import { type EvalTable, fileEvalDataset } from "./file_datasets.ts";

export interface EvalImagesOptions {
  /** Side of the square images fed to the model (e.g. an EvalModel's `imageSize`). */
  imageSize: number;
  /** Per-channel normalisation (e.g. an EvalModel's `normalize`); default ImageNet's. */
  normalize?: { mean: readonly [number, number, number]; std: readonly [number, number, number] };
  /** Where the tensor lands (default cpu). */
  device?: Device;
  /** Decode threads (default: the native loader's). */
  threads?: number;
}

/**
 * Reads, decodes and eval-transforms image files (JPEG, PNG, ...) into one (N, 3, S, S) float32 tensor in `paths`
 * order, owned by the caller. Throws DatasetError naming a missing file, or saying how many images did not decode and
 * why (corrupt, too large, unsupported).
 */
export function loadEvalImages(paths: readonly string[], options: EvalImagesOptions): Tensor {
  if (paths.length === 0) throw new DatasetError("loadEvalImages: no image paths given");
  for (const path of paths) {
    try {
      if (!Deno.statSync(path).isFile) throw new DatasetError(`loadEvalImages: ${path} is not a file`);
    } catch (error) {
      if (error instanceof DatasetError) throw error;
      throw new DatasetError(`loadEvalImages: cannot read ${path}: ${(error as Error).message}`);
    }
  }
  const table: EvalTable = {
    name: "images",
    items: paths.map((path) => ({ image: { path } })),
    indexSkips: new SkipCounter(),
  };
  const dataset = fileEvalDataset(table, {
    imageSize: options.imageSize,
    normalize: options.normalize,
    threads: options.threads,
  });
  const batches: Tensor[] = [];
  try {
    for (const batch of dataset.batches(paths.length, options.device ?? "cpu")) batches.push(batch.images);
    const rows = batches.reduce((n, t) => n + t.shape[0], 0);
    if (rows !== paths.length) {
      const reasons = Object.entries(dataset.skipped?.() ?? {}).map(([reason, n]) => `${n} ${reason}`).join(", ");
      throw new DatasetError(
        `loadEvalImages: ${paths.length - rows} of ${paths.length} images did not decode (${reasons})`,
      );
    }
    return batches.length === 1 ? batches.pop()! : cat(batches, 0); // (N, 3, S, S)
  } finally {
    for (const t of batches) t.dispose();
    dataset.close?.();
  }
}
