// embeddings.ts: L2-normalised CLIP embeddings of image files and captions in input order, batch by batch, what
// `deno task embed` writes. An image that does not decode is an error naming the count and reasons rather than a
// silently missing row: a caller lines rows up with its inputs.
import { SkipCounter } from "../data/loader.ts";
import { cat, type Device, F, noGrad, type Tensor, tidy } from "../torch/mod.ts";
import type { ClipEncoder } from "./clip_encoder.ts";
import { DatasetError } from "./datasets.ts";
import { fileEvalDataset } from "./file_datasets.ts";

/** How embedImageFiles and embedTexts run. */
export interface EmbedOptions {
  /** Images or texts per forward. */
  batchSize: number;
  device: Device;
  /** Called after each batch with how many inputs are done. */
  onProgress?: (done: number) => void;
}

/** (N, E) L2-normalised image embeddings in the order of `paths` (the evaluation transform of the encoder). */
export function embedImageFiles(encoder: ClipEncoder, paths: readonly string[], options: EmbedOptions): Tensor {
  const dataset = fileEvalDataset({
    name: "--image",
    items: paths.map((path) => ({ image: { path } })),
    indexSkips: new SkipCounter(),
  }, { imageSize: encoder.imageSize, normalize: encoder.normalize });
  const parts: Tensor[] = [];
  let done = 0;
  try {
    for (const batch of dataset.batches(options.batchSize, options.device)) {
      using images = batch.images; // (B, 3, S, S)
      parts.push(noGrad(() => tidy(() => F.normalize(encoder.encodeImage(images), { dim: -1 })).keep())); // (B, E)
      done += images.size(0);
      options.onProgress?.(done);
    }
    const skipped = dataset.skipped?.() ?? {};
    if (done !== paths.length) {
      throw new DatasetError(
        `${paths.length - done} of ${paths.length} images could not be read (${JSON.stringify(skipped)}); ` +
          "every input must embed so that rows line up with the inputs",
      );
    }
    return tidy(() => cat(parts, 0)).keep(); // (N, E)
  } finally {
    for (const part of parts) part.dispose();
    dataset.close?.();
  }
}

/** (M, E) L2-normalised text embeddings in the order of `texts`. */
export function embedTexts(encoder: ClipEncoder, texts: readonly string[], options: EmbedOptions): Tensor {
  const parts: Tensor[] = [];
  try {
    for (let start = 0; start < texts.length; start += options.batchSize) {
      const chunk = texts.slice(start, start + options.batchSize);
      parts.push(
        noGrad(() => tidy(() => F.normalize(encoder.encodeText(encoder.tokenize(chunk)), { dim: -1 })).keep()), // (b, E)
      );
      options.onProgress?.(start + chunk.length);
    }
    return tidy(() => cat(parts, 0)).keep(); // (M, E)
  } finally {
    for (const part of parts) part.dispose();
  }
}
