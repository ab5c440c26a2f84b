// file_datasets.ts: an evaluation dataset over image files. A source (ImageFolder, CSV, webdataset, npy file list,
// torchvision's on-disk sets, Karpathy JSON) only lists its items: where each image's bytes are and its label and/or
// captions. The native loader then decodes them on worker threads with the official eval transform (Resize(S)
// bilinear on the shorter side, CenterCrop(S), docs/data.md#image-transforms), one candidate per batch slot and no
// replacement draws: an image that is missing or does not decode leaves its slot empty, is dropped from the batch and
// counted by reason, so metrics are computed over the images that were actually seen and the table says how many were
// not.
//
// Trade-off: a batch with a failed image is shorter than the others (the consumer never sees padding), and decoding
// runs one batch ahead of the model, not more.
import { type Device, Tensor } from "../torch/mod.ts";
import { type ImageRef, imageSkipReason, type LoaderJob, NativeLoader, SkipCounter } from "../data/loader.ts";
import { DatasetError, type EvalBatch, type EvalDataset } from "./datasets.ts";

/** One image of a file dataset and its ground truth. */
export interface EvalItem {
  image: Omit<ImageRef, "index">;
  /** Class index, for classification sets. */
  label?: number;
  /** Every caption of the image, for retrieval sets. */
  captions?: string[];
}

/** What a source lists: the items in order, plus what it already had to leave out while indexing. */
export interface EvalTable {
  name: string;
  items: EvalItem[];
  classNames?: readonly (string | readonly string[])[];
  /** Number of classes when known without names (labels must lie below it). */
  classes?: number;
  templates?: readonly string[];
  indexSkips: SkipCounter;
  close?(): void;
}

export interface FileEvalOptions {
  /** Side of the square images fed to the model (the checkpoint's image size). */
  imageSize: number;
  /** Decode threads (default: the native loader's, at most 4). */
  threads?: number;
  maxPixels?: number;
  maxBytes?: number;
  /** Per-channel normalisation (default ImageNet's; OpenAI/OpenCLIP models need OpenAI's, src/models/openclip_configs.ts). */
  normalize?: { mean: readonly [number, number, number]; std: readonly [number, number, number] };
}

/** Checks labels against the class count (when one is known) and wraps the table as an EvalDataset. */
export function fileEvalDataset(table: EvalTable, options: FileEvalOptions): EvalDataset {
  const classes = table.classes ?? table.classNames?.length;
  if (table.classes !== undefined && table.classNames !== undefined && table.classNames.length !== table.classes) {
    throw new DatasetError(
      `${table.name} has ${table.classes} classes but its labels list names ${table.classNames.length}`,
    );
  }
  if (classes !== undefined) {
    table.items.forEach((item, i) => {
      if (item.label !== undefined && !(Number.isInteger(item.label) && item.label >= 0 && item.label < classes)) {
        throw new DatasetError(`${table.name}: item ${i} has label ${item.label}, outside 0..${classes - 1}`);
      }
    });
  }
  let decodeSkips = new SkipCounter();
  const hasLabels = table.items.length > 0 && table.items.every((item) => item.label !== undefined);
  const hasCaptions = table.items.length > 0 && table.items.every((item) => (item.captions?.length ?? 0) > 0);
  return {
    name: table.name,
    size: table.items.length,
    imageSize: options.imageSize,
    classNames: table.classNames,
    classes,
    templates: table.templates,
    *batches(batchSize: number, device: Device): Iterable<EvalBatch> {
      decodeSkips = new SkipCounter();
      const items = table.items;
      const loader = new NativeLoader({
        imageSize: options.imageSize,
        mode: "eval",
        views: 1,
        threads: options.threads,
        maxPixels: options.maxPixels,
        maxBytes: options.maxBytes,
        pin: false,
        augment: options.normalize,
      });
      const submit = (start: number): { job: LoaderJob; start: number } => {
        const count = Math.min(batchSize, items.length - start);
        const candidates = Array.from({ length: count }, (_, b) => ({ ...items[start + b].image, index: start + b }));
        const slotBegin = Array.from({ length: count + 1 }, (_, b) => b);
        return { job: loader.submit({ candidates, slotBegin, seed: 0, rank: 0, epoch: 0 }), start };
      };
      let pending: { job: LoaderJob; start: number } | null = items.length > 0 ? submit(0) : null;
      try {
        while (pending !== null) {
          const current = pending;
          const next = current.start + current.job.batch;
          pending = next < items.length ? submit(next) : null; // decode the next batch while this one is used
          const result = loader.collect(current.job);
          for (const s of result.status) if (s > 0) decodeSkips.add(imageSkipReason(s));
          const kept = result.used.flatMap((c, b) => (c >= 0 ? [b] : []));
          let images: Tensor = result.u; // (B, 3, S, S)
          if (kept.length === 0) {
            images.dispose();
            continue;
          }
          if (kept.length < result.used.length) {
            const index = Tensor.fromArray(kept, [kept.length], { dtype: "int64" });
            images = result.u.indexSelect(0, index); // (B', 3, S, S)
            index.dispose();
            result.u.dispose();
          }
          if (device !== "cpu") {
            const moved = images.to({ device });
            images.dispose();
            images = moved;
          }
          const chosen = kept.map((b) => items[current.start + b]);
          yield {
            images,
            labels: hasLabels ? Int32Array.from(chosen, (item) => item.label!) : undefined,
            captions: hasCaptions ? chosen.map((item) => item.captions![0]) : undefined,
            captionLists: hasCaptions ? chosen.map((item) => item.captions!) : undefined,
          };
        }
      } finally {
        if (pending !== null) {
          const stale = loader.collect(pending.job);
          stale.u.dispose();
          stale.v?.dispose();
        }
        loader.close();
      }
    },
    skipped(): Record<string, number> {
      const all = new SkipCounter();
      all.addAll(table.indexSkips);
      all.addAll(decodeSkips);
      return all.snapshot();
    },
    close(): void {
      table.close?.();
    },
  };
}
