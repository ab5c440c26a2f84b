// karpathy.ts: the Karpathy splits of COCO and Flickr30K (`dataset_coco.json`, `dataset_flickr30k.json`), the
// standard image↔text retrieval benchmark the DetailCLIP README reports (docs/evaluation.md#retrieval notes the
// official code has no retrieval). Each entry {filepath?, filename, split, sentences: [{raw}]} is one image with all
// its captions (5 for nearly every image; a few COCO images have 6 or 7, and every one is kept). Images resolve to
// root/filepath/filename (COCO: root/val2014/...) or root/filename (Flickr30K). Empty sentences are counted and left
// out.
import { readRegularTextSync } from "../fs/input_file.ts";
import { join } from "node:path";
import { checkCaption, SkipCounter } from "../data/loader.ts";
import { DatasetError } from "./datasets.ts";
import type { EvalItem, EvalTable } from "./file_datasets.ts";

export interface KarpathyOptions {
  /** dataset_coco.json or dataset_flickr30k.json. */
  path: string;
  /** Folder the images are under. */
  root: string;
  /** "test" (default), "val", "train" or "restval". */
  split?: string;
}

/** Lists one split of a Karpathy JSON as retrieval items. */
export function karpathyTable(options: KarpathyOptions): EvalTable {
  const split = options.split ?? "test";
  let json: unknown;
  try {
    json = JSON.parse(readRegularTextSync(options.path));
  } catch (cause) {
    throw new DatasetError(`karpathy: cannot read ${options.path} as JSON (${(cause as Error).message})`);
  }
  const images = (json as { images?: unknown })?.images;
  if (!Array.isArray(images)) throw new DatasetError(`karpathy: ${options.path} has no 'images' list`);
  const skips = new SkipCounter();
  const items: EvalItem[] = [];
  const splits = new Set<string>();
  images.forEach((entry, i) => {
    const e = entry as { filepath?: unknown; filename?: unknown; split?: unknown; sentences?: unknown };
    if (typeof e?.split === "string") splits.add(e.split);
    if (e?.split !== split) return;
    if (typeof e.filename !== "string" || !Array.isArray(e.sentences)) {
      throw new DatasetError(`karpathy: ${options.path} images[${i}] lacks a 'filename' string or a 'sentences' list`);
    }
    const captions: string[] = [];
    for (const s of e.sentences) {
      const raw = (s as { raw?: unknown })?.raw;
      const caption = typeof raw === "string" ? checkCaption(raw) : { skip: "caption_empty" };
      if (typeof caption === "string") captions.push(caption.trim());
      else skips.add(caption.skip);
    }
    if (captions.length === 0) {
      skips.add("image_without_captions");
      return;
    }
    const folder = typeof e.filepath === "string" ? join(options.root, e.filepath) : options.root;
    items.push({ image: { path: join(folder, e.filename) }, captions });
  });
  if (items.length === 0) {
    throw new DatasetError(
      `karpathy: ${options.path} has no images in split '${split}' (splits present: ${[...splits].sort().join(", ")})`,
    );
  }
  const base = options.path.split("/").pop()!.replace(/\.json$/, "").replace(/^dataset_/, "");
  return { name: `${base}-${split}`, items, indexSkips: skips };
}
