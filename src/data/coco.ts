// coco.ts: the COCO captions source of the official code (docs/data.md#coco-captions): `annotations` [{image_id,
// caption}] grouped per image in order of first appearance, the image at root/train2017/{image_id:012d}.jpg, and one
// caption drawn at random per draw (here a hash of (seed, epoch, sample), so the choice is reproducible). Empty or
// non-string captions and malformed annotations are skipped and counted while indexing; an image left without captions
// is dropped.
import { readRegularFileSync } from "../fs/input_file.ts";
import { join } from "node:path";
import {
  checkCaption,
  type FileSourceOptions,
  type FileTrainSource,
  fileTrainSource,
  type SampleTable,
  SkipCounter,
} from "./loader.ts";

export interface CocoOptions {
  /** The captions JSON (e.g. annotations/captions_train2017.json). */
  annotations: string;
  /** The dataset root; images are root/imageDir/{image_id:012d}.jpg. */
  root: string;
  /** Default "train2017", as the official code hard-codes. */
  imageDir?: string;
}

/** Decodes the JSON text; invalid UTF-8 becomes U+FFFD, and captions holding one are then skipped as invalid. */
function readJsonText(path: string): { text: string; lossy: boolean } {
  const bytes = readRegularFileSync(path);
  try {
    return { text: new TextDecoder("utf-8", { fatal: true }).decode(bytes), lossy: false };
  } catch {
    return { text: new TextDecoder("utf-8").decode(bytes), lossy: true };
  }
}

export function readCocoTable(options: CocoOptions): SampleTable {
  const { text, lossy } = readJsonText(options.annotations);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new Error(`coco: ${options.annotations} is not valid JSON`, { cause });
  }
  const annotations = (json as { annotations?: unknown })?.annotations;
  if (!Array.isArray(annotations)) throw new Error(`coco: ${options.annotations} has no 'annotations' list`);
  const skips = new SkipCounter();
  const byImage = new Map<number, string[]>();
  for (const a of annotations) {
    const id = (a as { image_id?: unknown })?.image_id;
    const raw = (a as { caption?: unknown })?.caption;
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0) {
      skips.add("coco_bad_annotation");
      continue;
    }
    let list = byImage.get(id);
    if (list === undefined) {
      list = [];
      byImage.set(id, list);
    }
    if (typeof raw !== "string") {
      skips.add("caption_empty");
      continue;
    }
    if (lossy && raw.includes("\ufffd")) {
      skips.add("caption_invalid_utf8");
      continue;
    }
    const caption = checkCaption(raw);
    if (typeof caption !== "string") skips.add(caption.skip);
    else list.push(caption);
  }
  const ids: number[] = [];
  const captions: string[][] = [];
  for (const [id, list] of byImage) {
    if (list.length === 0) {
      skips.add("coco_no_caption");
      continue;
    }
    ids.push(id);
    captions.push(list);
  }
  const imageDir = join(options.root, options.imageDir ?? "train2017");
  return {
    name: `coco:${options.annotations}`,
    size: ids.length,
    image(i: number) {
      return { path: join(imageDir, `${String(ids[i]).padStart(12, "0")}.jpg`) };
    },
    caption(i: number, choice: number): string {
      const list = captions[i];
      return list[choice % list.length];
    },
    indexSkips: skips,
  };
}

/** A training source over COCO captions. */
export function cocoTrainSource(options: CocoOptions & FileSourceOptions): FileTrainSource {
  return fileTrainSource(readCocoTable(options), options);
}
