// redcaps.ts: RedCaps (docs/data.md#redcaps). The official loader reads a JSON list of {image_id, subreddit, caption}
// and the image at root/<subreddit>/<image_id>.jpg; RedCaps' released annotation files (one per subreddit and year:
// {"info": ..., "annotations": [{image_id, subreddit, caption, author, url, ...}]}) hold the same fields, and the
// RedCaps downloader saves images in that same layout. Both forms are read, several files at once (a comma list or
// brace patterns). Records without a usable image_id or subreddit, with a non-string caption, or with a caption that is
// empty or not valid UTF-8 are counted and left out while indexing.
//
// Trade-offs: each file is parsed whole with JSON.parse (the released files are per subreddit-year, tens of MB); a
// missing or unparseable annotation file is an error naming it, not a skip, since it is metadata the user pointed at.
// Captions and image ids are kept as UTF-8 (src/data/text_store.ts), subreddits once each.
import { readRegularFileSync } from "../fs/input_file.ts";
import { isAbsolute, join } from "node:path";
import {
  checkCaption,
  type FileSourceOptions,
  type FileTrainSource,
  fileTrainSource,
  type SampleTable,
  SkipCounter,
} from "./loader.ts";
import { TextStore } from "./text_store.ts";
import { expandBraces } from "./webdataset.ts";

export interface RedCapsOptions {
  /** Annotation files: paths, each a comma-separated list or a brace pattern (`ann/{pics,aww}_2020.json`). */
  annotations: string | readonly string[];
  /** The image root: images are root/<subreddit>/<image_id>.jpg. */
  root: string;
  /** Where relative annotation paths start (default: the working directory). */
  annotationRoot?: string;
}

/** A missing, unreadable or malformed annotation file. */
export class RedCapsError extends Error {
  constructor(readonly path: string, message: string, options?: ErrorOptions) {
    super(`redcaps: ${path}: ${message}`, options);
    this.name = "RedCapsError";
  }
}

/** Splits on commas outside braces, then expands the braces of each part: "a.json,b{1..2}.json" → 3 paths. */
export function redcapsFiles(spec: string | readonly string[]): string[] {
  const out: string[] = [];
  for (const text of typeof spec === "string" ? [spec] : spec) {
    let depth = 0, start = 0;
    const parts: string[] = [];
    for (let i = 0; i < text.length; i++) {
      if (text[i] === "{") depth++;
      else if (text[i] === "}" && depth > 0) depth--;
      else if (text[i] === "," && depth === 0) {
        parts.push(text.slice(start, i));
        start = i + 1;
      }
    }
    parts.push(text.slice(start));
    for (const part of parts) if (part.trim() !== "") out.push(...expandBraces(part.trim()));
  }
  return out;
}

/** The JSON text of a file; `lossy` when it was not valid UTF-8 (bad bytes became U+FFFD). */
function readJsonText(path: string): { text: string; lossy: boolean } {
  let bytes: Uint8Array;
  try {
    bytes = readRegularFileSync(path);
  } catch (cause) {
    throw new RedCapsError(path, `cannot read the annotation file (${(cause as Error).message})`, { cause });
  }
  try {
    return { text: new TextDecoder("utf-8", { fatal: true }).decode(bytes), lossy: false };
  } catch {
    return { text: new TextDecoder("utf-8").decode(bytes), lossy: true };
  }
}

/** The records of one file: a plain list (the official format) or the `annotations` of a released file. */
function recordsOf(path: string): { records: unknown[]; lossy: boolean } {
  const { text, lossy } = readJsonText(path);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new RedCapsError(path, `not valid JSON (${(cause as Error).message})`, { cause });
  }
  if (Array.isArray(json)) return { records: json, lossy };
  const annotations = (json as { annotations?: unknown } | null)?.annotations;
  if (Array.isArray(annotations)) return { records: annotations, lossy };
  throw new RedCapsError(path, "holds neither a JSON list of records nor an 'annotations' list");
}

// A path component taken from the metadata: not empty, no separators, no NUL, not "." or "..", no U+FFFD from
// invalid bytes, well-formed UTF-16.
function safeComponent(text: string, lossy: boolean): boolean {
  return text !== "" && text !== "." && text !== ".." && !/[/\\\0]/.test(text) && text.isWellFormed() &&
    !(lossy && text.includes("\ufffd"));
}

/** Indexes the annotation files into a SampleTable (records in file order, files in the order given). */
export function readRedCapsTable(options: RedCapsOptions): SampleTable {
  const files = redcapsFiles(options.annotations).map((p) =>
    options.annotationRoot === undefined || isAbsolute(p) ? p : join(options.annotationRoot, p)
  );
  if (files.length === 0) throw new RedCapsError("(none)", "no annotation files given");
  const skips = new SkipCounter();
  const ids = new TextStore();
  const captions = new TextStore();
  const subredditOf: number[] = [];
  const subreddits: string[] = [];
  const subredditIds = new Map<string, number>();
  for (const path of files) {
    const { records, lossy } = recordsOf(path);
    for (const record of records) {
      if (typeof record !== "object" || record === null || Array.isArray(record)) {
        skips.add("redcaps_bad_record");
        continue;
      }
      const { image_id: rawId, subreddit, caption: raw } = record as Record<string, unknown>;
      // The official loader formats the id with an f-string, so an integer id is accepted as its decimal text.
      const id = typeof rawId === "number" && Number.isSafeInteger(rawId) && rawId >= 0 ? String(rawId) : rawId;
      if (
        typeof id !== "string" || !safeComponent(id, lossy) || typeof subreddit !== "string" ||
        !safeComponent(subreddit, lossy) || typeof raw !== "string"
      ) {
        skips.add("redcaps_bad_record");
        continue;
      }
      if (!raw.isWellFormed() || (lossy && raw.includes("\ufffd"))) {
        skips.add("caption_invalid_utf8");
        continue;
      }
      const caption = checkCaption(raw);
      if (typeof caption !== "string") {
        skips.add(caption.skip);
        continue;
      }
      let s = subredditIds.get(subreddit);
      if (s === undefined) {
        s = subreddits.push(subreddit) - 1;
        subredditIds.set(subreddit, s);
      }
      subredditOf.push(s);
      ids.push(id);
      captions.push(caption);
    }
  }
  const subredditIndex = Int32Array.from(subredditOf);
  ids.trim();
  captions.trim();
  const folders = subreddits.map((s) => join(options.root, s));
  return {
    name: `redcaps:${files.length === 1 ? files[0] : `${files.length} files`}`,
    size: subredditIndex.length,
    image(i: number) {
      return { path: join(folders[subredditIndex[i]], `${ids.get(i)}.jpg`) };
    },
    caption(i: number): string {
      return captions.get(i);
    },
    indexSkips: skips,
  };
}

/** A training source over RedCaps annotations. */
export function redcapsTrainSource(options: RedCapsOptions & FileSourceOptions): FileTrainSource {
  return fileTrainSource(readRedCapsTable(options), options);
}
