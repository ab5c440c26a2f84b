// manifests.ts: evaluation sets described by a manifest rather than a folder layout: CSV/TSV files (one row per image,
// or per caption for retrieval, where rows sharing an image path are grouped in order of first appearance) and
// webdataset tar shards (`key.jpg` with `key.cls` for the label and `key.txt`/`key.json` for captions). Parsing reuses
// the training readers (parseDelimited, listTar, expandBraces); what differs for evaluation is that labels are read and
// every caption of an image is kept, so retrieval can score several captions per image.
//
// Malformed rows and incomplete tar samples are counted and left out, like in training; a label that names no class
// is an error, because it means the labels file and the manifest disagree and every number would be wrong.
import { readRegularFileSync } from "../fs/input_file.ts";
import { dirname, isAbsolute, join } from "node:path";
import { parseDelimited } from "../data/csv.ts";
import { checkCaption, decodeCaption, SkipCounter } from "../data/loader.ts";
import {
  expandBraces,
  IMAGE_EXTENSIONS,
  listTar,
  splitKey,
  type TarListing,
  type TarMember,
} from "../data/webdataset.ts";
import { DatasetError } from "./datasets.ts";
import type { EvalItem, EvalTable } from "./file_datasets.ts";

/** What the set is for: classification needs a label per image, retrieval captions per image. */
export type EvalTask = "classification" | "retrieval";

/** Resolves a label field: an integer index, or a class name (any synonym). Throws naming the place on a miss. */
function labelIndex(
  value: string,
  classNames: readonly (string | readonly string[])[] | undefined,
  where: string,
): number {
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text);
  if (classNames === undefined) {
    throw new DatasetError(`${where}: label '${text}' is a name, but no class names were given (--labels/--key)`);
  }
  const index = classNames.findIndex((n) => (typeof n === "string" ? n === text : n.includes(text)));
  if (index < 0) throw new DatasetError(`${where}: label '${text}' is not a class name of the labels list`);
  return index;
}

export interface CsvEvalOptions {
  path: string;
  /** Where relative image paths start (default: the manifest's folder). */
  root?: string;
  task: EvalTask;
  /** Column of image paths (default "filepath"). */
  imageColumn?: string;
  /** Column of labels, an index or a class name (default "label"). */
  labelColumn?: string;
  /** Column of captions (default "title"). */
  captionColumn?: string;
  /** Default: tab for .tsv/.tab, else comma. */
  separator?: string;
  classNames?: readonly (string | readonly string[])[];
}

/** Lists a CSV/TSV evaluation manifest. */
export function csvEvalTable(options: CsvEvalOptions): EvalTable {
  const root = options.root ?? dirname(options.path);
  const lower = options.path.toLowerCase();
  const separator = options.separator ?? (lower.endsWith(".tsv") || lower.endsWith(".tab") ? "\t" : ",");
  let bytes: Uint8Array;
  try {
    bytes = readRegularFileSync(options.path);
  } catch (cause) {
    throw new DatasetError(`csv: cannot read ${options.path} (${(cause as Error).message})`);
  }
  const rows = parseDelimited(bytes, separator);
  if (rows.length === 0) throw new DatasetError(`csv: ${options.path} is empty (a header row is required)`);
  const header = rows[0].map((h) => (h ?? "").trim());
  const column = (name: string, flag: string): number => {
    const at = header.indexOf(name);
    if (at < 0) {
      throw new DatasetError(
        `csv: ${options.path} has no column '${name}' (columns: ${header.join(", ")}); choose one with ${flag}`,
      );
    }
    return at;
  };
  const imageAt = column(options.imageColumn ?? "filepath", "--csv-img-key");
  const valueAt = options.task === "classification"
    ? column(options.labelColumn ?? "label", "--csv-label-key")
    : column(options.captionColumn ?? "title", "--csv-caption-key");
  const skips = new SkipCounter();
  const items: EvalItem[] = [];
  const byPath = new Map<string, EvalItem>();
  for (let r = 1; r < rows.length; r++) {
    const row = rows[r];
    const path = row[imageAt]?.trim();
    if (row.length <= Math.max(imageAt, valueAt) || path === undefined || path === "") {
      skips.add("csv_bad_row");
      continue;
    }
    const raw = row[valueAt];
    const resolved = isAbsolute(path) ? path : join(root, path);
    if (options.task === "classification") {
      if (raw === null || raw.trim() === "") {
        skips.add("label_missing");
        continue;
      }
      const label = labelIndex(raw, options.classNames, `${options.path} row ${r + 1}`);
      items.push({ image: { path: resolved }, label });
      continue;
    }
    const caption = raw === null ? { skip: "caption_invalid_utf8" } : checkCaption(raw);
    if (typeof caption !== "string") {
      skips.add(caption.skip);
      continue;
    }
    let item = byPath.get(resolved);
    if (item === undefined) {
      item = { image: { path: resolved }, captions: [] };
      byPath.set(resolved, item);
      items.push(item);
    }
    item.captions!.push(caption);
  }
  return { name: `csv:${options.path}`, items, classNames: options.classNames, indexSkips: skips };
}

export interface WebDatasetEvalOptions {
  /** Shard paths or brace patterns, several joined with "::". */
  shards: string;
  root?: string;
  task: EvalTask;
  /** The caption field of a .json member (default "caption"; a list of strings gives several captions). */
  jsonField?: string;
  classNames?: readonly (string | readonly string[])[];
}

function readMember(file: Deno.FsFile, member: TarMember): Uint8Array | null {
  const out = new Uint8Array(member.size);
  file.seekSync(member.offset, Deno.SeekMode.Start);
  let done = 0;
  while (done < member.size) {
    const got = file.readSync(out.subarray(done));
    if (got === null || got === 0) return null;
    done += got;
  }
  return out;
}

/** Lists webdataset shards (classification: `cls`; retrieval: `txt` or `json` captions). */
export function webDatasetEvalTable(options: WebDatasetEvalOptions): EvalTable {
  const patterns = options.shards.split("::").filter((s) => s !== "");
  const paths = patterns.flatMap(expandBraces).map((
    p,
  ) => (options.root === undefined || isAbsolute(p) ? p : join(options.root, p)));
  if (paths.length === 0) throw new DatasetError("webdataset: no shards given");
  const jsonField = options.jsonField ?? "caption";
  const skips = new SkipCounter();
  const items: EvalItem[] = [];
  for (const path of paths) {
    let listing: TarListing;
    let file: Deno.FsFile;
    try {
      listing = listTar(path);
      file = Deno.openSync(path, { read: true });
    } catch {
      skips.add("shard_missing");
      continue;
    }
    try {
      const groups: Map<string, TarMember>[] = [];
      let key: string | null = null;
      for (const member of listing.members) {
        const split = splitKey(member.name);
        if (split === null) continue;
        if (split.key !== key || groups[groups.length - 1].has(split.ext)) groups.push(new Map());
        key = split.key;
        groups[groups.length - 1].set(split.ext, member);
      }
      for (const group of groups) {
        const image = IMAGE_EXTENSIONS.map((e) => group.get(e)).find((m) => m !== undefined);
        if (image === undefined) {
          skips.add("tar_no_image");
          continue;
        }
        const item: EvalItem = { image: { path, offset: image.offset, length: image.size } };
        const text = (member: TarMember | undefined): string | { skip: string } | undefined => {
          if (member === undefined) return undefined;
          const bytes = readMember(file, member);
          return bytes === null ? { skip: "tar_truncated" } : decodeCaption(bytes);
        };
        if (options.task === "classification") {
          const cls = text(group.get("cls"));
          if (cls === undefined || typeof cls !== "string") {
            skips.add(cls === undefined ? "tar_no_label" : cls.skip);
            continue;
          }
          item.label = labelIndex(cls, options.classNames, `${path} member ${group.get("cls")!.name}`);
        } else {
          const captions = tarCaptions(text(group.get("txt")), text(group.get("json")), jsonField);
          if (typeof captions === "string") {
            skips.add(captions);
            continue;
          }
          item.captions = captions;
        }
        items.push(item);
      }
    } finally {
      file.close();
    }
    if (listing.truncated) skips.add("tar_truncated");
    if (listing.corrupt) skips.add("tar_corrupt");
  }
  return { name: `webdataset:${options.shards}`, items, classNames: options.classNames, indexSkips: skips };
}

// The captions of one sample, or the reason it has none: .txt wins (one caption), else the .json field (a string or
// a list of strings).
function tarCaptions(
  txt: string | { skip: string } | undefined,
  json: string | { skip: string } | undefined,
  field: string,
): string[] | string {
  if (txt !== undefined) return typeof txt === "string" ? [txt.trim()] : txt.skip;
  if (json === undefined) return "tar_no_caption";
  if (typeof json !== "string") return json.skip;
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return "caption_bad_json";
  }
  const raw = typeof value === "object" && value !== null ? (value as Record<string, unknown>)[field] : undefined;
  const list = typeof raw === "string" ? [raw] : Array.isArray(raw) ? raw : [];
  const captions = list.filter((c): c is string => typeof c === "string" && c.trim() !== "");
  return captions.length > 0 ? captions : "caption_empty";
}
