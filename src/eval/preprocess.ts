// preprocess.ts: image files into a model's input with the official eval transform (Resize(S) bilinear on the
// shorter side, CenterCrop(S), per-channel normalisation; docs/data.md#image-transforms), decoded by the native loader
// as `deno task eval` does. For a handful of images from library code; data sets go through src/eval/file_datasets.ts,
// which drops an undecodable image and counts it, where this refuses the whole call naming the file.
import { imageSkipReason, NativeLoader } from "../data/loader.ts";
import type { Device, Tensor } from "../torch/mod.ts";
import { DatasetError } from "./datasets.ts";

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
 * order, owned by the caller. Throws DatasetError naming the first file that is missing or does not decode, and why.
 */
export function loadEvalImages(paths: readonly string[], options: EvalImagesOptions): Tensor {
  if (paths.length === 0) throw new DatasetError("loadEvalImages: no image paths given");
  using loader = new NativeLoader({
    imageSize: options.imageSize,
    mode: "eval",
    views: 1,
    threads: options.threads,
    pin: false,
    augment: options.normalize,
  });
  // One candidate per slot and no replacement draws: slot b holds paths[b] or stays empty.
  const result = loader.run({
    candidates: paths.map((path, index) => ({ path, index })),
    slotBegin: Array.from({ length: paths.length + 1 }, (_, b) => b),
    seed: 0,
    rank: 0,
    epoch: 0,
  });
  const failed = result.used.findIndex((candidate, b) => candidate !== b);
  if (failed >= 0) {
    result.u.dispose();
    result.v?.dispose();
    throw new DatasetError(`loadEvalImages: ${paths[failed]}: ${imageSkipReason(result.status[failed])}`);
  }
  const device = options.device ?? "cpu";
  if (device === "cpu") return result.u; // (N, 3, S, S)
  try {
    return result.u.to({ device });
  } finally {
    result.u.dispose();
  }
}
