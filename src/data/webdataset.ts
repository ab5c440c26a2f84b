// webdataset.ts: webdataset tar shards as img2dataset writes them (key.jpg + key.txt/key.json, consecutive members
// sharing a key form one sample). Shards are named with brace patterns (`shard-{000..009}.tar`), indexed once at
// start-up by walking the tar headers (no image bytes are read), and each image is then decoded straight out of its
// shard by the native loader as a byte range. Captions are read lazily, per draw.
//
// A shard that cannot be opened, a truncated or corrupt tar (the members before the damage are kept), a member group
// without a caption or without an image: counted skips, never an exception. Tar support covers what writers produce:
// ustar (name + prefix), GNU long names ('L'), pax extended headers ('x': path, size), base-256 sizes.
import { isAbsolute, join } from "node:path";
import { DataError } from "./data_error.ts";
import {
  type CaptionSkip,
  decodeCaption,
  type FileSourceOptions,
  type FileTrainSource,
  fileTrainSource,
  type SampleTable,
  SkipCounter,
} from "./loader.ts";

/** The most names a brace pattern may expand to (docs/errors.md, "Input bounds"); counted before any is built. */
export const MAX_BRACE_NAMES = 1_000_000;

/**
 * Bash-style brace expansion: `{000..009}` (zero-padded numeric ranges, also descending), `{a,b,c}` alternatives,
 * several groups (cartesian product, left to right) and nesting. Text without braces is returned as is. A pattern of
 * more than MAX_BRACE_NAMES names (`s-{0..999999999}.tar`) is refused before anything is expanded.
 */
export function expandBraces(pattern: string): string[] {
  const count = countBraces(pattern, MAX_BRACE_NAMES + 1);
  if (count > MAX_BRACE_NAMES) {
    throw new DataError(
      `brace pattern ${JSON.stringify(pattern.length > 80 ? pattern.slice(0, 80) + "…" : pattern)} expands to more ` +
        `than ${MAX_BRACE_NAMES.toLocaleString("en")} names`,
    );
  }
  return expandBracesUnchecked(pattern);
}

/** How many names expandBraces makes of `pattern`, saturating at `cap` (the same parse, without the strings). */
export function countBraces(pattern: string, cap: number): number {
  let depth = 0, open = -1;
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i];
    if (ch === "{") {
      if (depth === 0) open = i;
      depth++;
    } else if (ch === "}" && depth > 0) {
      depth--;
      if (depth === 0) {
        const body = pattern.slice(open + 1, i), suffix = pattern.slice(i + 1);
        const range = /^(-?\d+)\.\.(-?\d+)$/.exec(body);
        const rest = countBraces(suffix, cap);
        if (range) return Math.min(cap, (Math.abs(Number(range[2]) - Number(range[1])) + 1) * rest);
        const parts = braceParts(body);
        if (parts === null) return rest;
        // Parts without braces each give `rest` names; only nested ones need their own count.
        let total = 0;
        for (const part of parts) {
          total += part.includes("{") ? countBraces(part + suffix, cap) : rest;
          if (total >= cap) return cap;
        }
        return total;
      }
    }
  }
  return 1;
}

function expandBracesUnchecked(pattern: string): string[] {
  // The first top-level {...} that contains a range or a comma.
  let depth = 0, open = -1;
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i];
    if (ch === "{") {
      if (depth === 0) open = i;
      depth++;
    } else if (ch === "}" && depth > 0) {
      depth--;
      if (depth === 0) {
        const body = pattern.slice(open + 1, i);
        const prefix = pattern.slice(0, open), suffix = pattern.slice(i + 1);
        const options = braceOptions(body);
        if (options === null) {
          // Not an expansion ("{}" or "{x}"): keep it literally, expand what follows.
          return expandBracesUnchecked(suffix).map((rest) => prefix + "{" + body + "}" + rest);
        }
        const out: string[] = [];
        for (const option of options) {
          for (const expanded of expandBracesUnchecked(prefix + option + suffix)) out.push(expanded);
        }
        return out;
      }
    }
  }
  return [pattern];
}

function braceOptions(body: string): string[] | null {
  const range = /^(-?\d+)\.\.(-?\d+)$/.exec(body);
  if (range) {
    const [a, b] = [range[1], range[2]];
    const from = Number(a), to = Number(b);
    const padded = /^-?0\d/.test(a) || /^-?0\d/.test(b);
    const width = padded ? Math.max(a.replace("-", "").length, b.replace("-", "").length) : 0;
    const step = from <= to ? 1 : -1;
    const out: string[] = [];
    for (let v = from; step > 0 ? v <= to : v >= to; v += step) {
      const digits = String(Math.abs(v)).padStart(width, "0");
      out.push(v < 0 ? "-" + digits : digits);
    }
    return out;
  }
  return braceParts(body);
}

/** The alternatives of a brace body split on its top-level commas; null when it has none (`{x}` is literal). */
function braceParts(body: string): string[] | null {
  const parts: string[] = [];
  let depth = 0, start = 0;
  for (let i = 0; i < body.length; i++) {
    if (body[i] === "{") depth++;
    else if (body[i] === "}") depth--;
    else if (body[i] === "," && depth === 0) {
      parts.push(body.slice(start, i));
      start = i + 1;
    }
  }
  if (parts.length === 0) return null;
  parts.push(body.slice(start));
  return parts;
}

/** One regular file inside a tar: where its data starts and how long it is. */
export interface TarMember {
  name: string;
  offset: number;
  size: number;
}

export interface TarListing {
  members: TarMember[];
  /** The archive ended inside a header or inside a member's data. */
  truncated: boolean;
  /** A header failed its checksum or could not be parsed (the listing stops there). */
  corrupt: boolean;
}

const BLOCK = 512;
const ascii = new TextDecoder("utf-8");

export function cString(block: Uint8Array, start: number, length: number): string {
  let end = start;
  while (end < start + length && block[end] !== 0) end++;
  return ascii.decode(block.subarray(start, end));
}

// Octal, NUL/space padded; or base-256 (GNU) when the top bit of the first byte is set. NaN when malformed.
export function numeric(block: Uint8Array, start: number, length: number): number {
  if (block[start] & 0x80) {
    let value = block[start] & 0x7f;
    for (let i = start + 1; i < start + length; i++) value = value * 256 + block[i];
    return value;
  }
  const text = cString(block, start, length).trim();
  if (text === "") return 0;
  return /^[0-7]+$/.test(text) ? parseInt(text, 8) : NaN;
}

export function checksumOk(block: Uint8Array): boolean {
  const stored = numeric(block, 148, 8);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i];
  return stored === sum;
}

function readAt(file: Deno.FsFile, offset: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  file.seekSync(offset, Deno.SeekMode.Start);
  let done = 0;
  while (done < length) {
    const got = file.readSync(out.subarray(done));
    if (got === null || got === 0) break;
    done += got;
  }
  return done === length ? out : out.subarray(0, done);
}

// pax records: "<len> <key>=<value>\n", len counting the whole record in bytes (values are UTF-8, so the record is cut
// out of the bytes before decoding).
export function paxRecords(data: Uint8Array): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  while (i < data.length) {
    const space = data.indexOf(0x20, i);
    if (space < 0) break;
    const length = Number(ascii.decode(data.subarray(i, space)));
    if (!Number.isInteger(length) || length <= space - i + 1 || i + length > data.length) break;
    const record = ascii.decode(data.subarray(space + 1, i + length - 1));
    const eq = record.indexOf("=");
    if (eq > 0) out.set(record.slice(0, eq), record.slice(eq + 1));
    i += length;
  }
  return out;
}

/** Lists the regular files of a tar by walking its headers (reads 512 bytes per member, never the data). */
export function listTar(path: string): TarListing {
  // stat first: a FIFO named as a shard would block open() until a writer appears
  if (!Deno.statSync(path).isFile) throw new DataError(`tar ${path}: not a regular file`);
  const file = Deno.openSync(path, { read: true });
  try {
    const fileSize = file.statSync().size;
    const members: TarMember[] = [];
    let offset = 0;
    let longName: string | null = null;
    let pax: Map<string, string> | null = null;
    for (;;) {
      if (offset + BLOCK > fileSize) {
        // Ending exactly on a member boundary without the two zero blocks is accepted (Python's tarfile does too).
        return { members, truncated: offset < fileSize, corrupt: false };
      }
      const block = readAt(file, offset, BLOCK);
      if (block.length < BLOCK) return { members, truncated: true, corrupt: false };
      if (block.every((b) => b === 0)) return { members, truncated: false, corrupt: false };
      if (!checksumOk(block)) return { members, truncated: false, corrupt: true };
      const size = pax?.has("size") ? Number(pax.get("size")) : numeric(block, 124, 12);
      if (!Number.isFinite(size) || size < 0) return { members, truncated: false, corrupt: true };
      const type = String.fromCharCode(block[156]);
      const dataOffset = offset + BLOCK;
      if (dataOffset + size > fileSize) return { members, truncated: true, corrupt: false };
      const next = dataOffset + Math.ceil(size / BLOCK) * BLOCK;
      if (type === "L") {
        longName = cString(readAt(file, dataOffset, size), 0, size);
      } else if (type === "x") {
        pax = paxRecords(readAt(file, dataOffset, size));
      } else if (type === "g") {
        // global pax header: nothing a sample needs
      } else {
        let name = cString(block, 0, 100);
        if (cString(block, 257, 5) === "ustar") {
          const prefix = cString(block, 345, 155);
          if (prefix !== "") name = prefix + "/" + name;
        }
        if (longName !== null) name = longName;
        if (pax?.has("path")) name = pax.get("path")!;
        if (type === "0" || type === "\0" || type === "7") members.push({ name, offset: dataOffset, size });
        longName = null;
        pax = null;
      }
      offset = next;
    }
  } finally {
    file.close();
  }
}

/** webdataset's key/extension split: the key is everything up to the first dot of the file name. */
export function splitKey(name: string): { key: string; ext: string } | null {
  const match = /^((?:.*\/|)[^./]+)\.([^/]*)$/.exec(name);
  return match ? { key: match[1], ext: match[2].toLowerCase() } : null;
}

export const IMAGE_EXTENSIONS = ["jpg", "jpeg", "png", "webp"] as const;
export const CAPTION_EXTENSIONS = ["txt", "json"] as const;

export interface WebDatasetOptions {
  /** Shard paths or brace patterns; several may be joined with "::" (webdataset's convention). */
  shards: string | readonly string[];
  /** Where relative shard paths start (default: the working directory). */
  root?: string;
  /** The caption field of a .json member when there is no .txt (default "caption", img2dataset's). */
  jsonField?: string;
}

interface Sample {
  shard: number;
  imageOffset: number;
  imageSize: number;
  captionOffset: number;
  captionSize: number;
  json: boolean;
}

/** Indexes shards into a SampleTable. */
export function readWebDatasetTable(options: WebDatasetOptions): SampleTable {
  const patterns = (typeof options.shards === "string" ? [options.shards] : options.shards)
    .flatMap((s) => s.split("::"))
    .filter((s) => s !== "");
  const shardPaths = patterns.flatMap(expandBraces).map((p) =>
    options.root === undefined || isAbsolute(p) ? p : join(options.root, p)
  );
  if (shardPaths.length === 0) throw new Error("webdataset: no shards given");
  const jsonField = options.jsonField ?? "caption";
  const skips = new SkipCounter();
  const samples: Sample[] = [];
  shardPaths.forEach((path, shard) => {
    let listing: TarListing;
    try {
      listing = listTar(path);
    } catch {
      skips.add("shard_missing");
      return;
    }
    // Consecutive members with the same key form a sample; a new key (or a repeated extension) closes it.
    let key: string | null = null;
    let group = new Map<string, TarMember>();
    const flush = (): void => {
      if (key === null) return;
      const image = IMAGE_EXTENSIONS.map((e) => group.get(e)).find((m) => m !== undefined);
      const text = group.get("txt");
      const json = group.get("json");
      if (image === undefined) skips.add("tar_no_image");
      else if (text === undefined && json === undefined) skips.add("tar_no_caption");
      else {
        const caption = text ?? json!;
        samples.push({
          shard,
          imageOffset: image.offset,
          imageSize: image.size,
          captionOffset: caption.offset,
          captionSize: caption.size,
          json: text === undefined,
        });
      }
      key = null;
      group = new Map();
    };
    for (const member of listing.members) {
      const split = splitKey(member.name);
      if (split === null) continue; // no extension: not part of any sample (e.g. a README)
      if (split.key !== key || group.has(split.ext)) flush();
      key = split.key;
      group.set(split.ext, member);
    }
    flush();
    // The listing stops before the damaged member: its sample (and whatever followed) is lost, counted once.
    if (listing.truncated) skips.add("tar_truncated");
    if (listing.corrupt) skips.add("tar_corrupt");
  });

  const open = new Map<number, Deno.FsFile>();
  const fileFor = (shard: number): Deno.FsFile => {
    let file = open.get(shard);
    if (file === undefined) {
      // A few shards stay open (draws are random, so an LRU of 16 is plenty and bounds the descriptors).
      if (open.size >= 16) {
        const [oldest, handle] = open.entries().next().value!;
        handle.close();
        open.delete(oldest);
      }
      file = Deno.openSync(shardPaths[shard], { read: true });
      open.set(shard, file);
    }
    return file;
  };

  return {
    name: `webdataset:${patterns.join("::")}`,
    size: samples.length,
    image(i: number) {
      const s = samples[i];
      return { path: shardPaths[s.shard], offset: s.imageOffset, length: s.imageSize };
    },
    caption(i: number): string | CaptionSkip {
      const s = samples[i];
      let bytes: Uint8Array;
      try {
        bytes = readAt(fileFor(s.shard), s.captionOffset, s.captionSize);
      } catch {
        return { skip: "caption_unreadable" };
      }
      if (bytes.length < s.captionSize) return { skip: "caption_unreadable" };
      const text = decodeCaption(bytes);
      if (!s.json || typeof text !== "string") return text;
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch {
        return { skip: "caption_bad_json" };
      }
      const field = typeof value === "object" && value !== null ? (value as Record<string, unknown>)[jsonField] : null;
      return typeof field === "string" && field.trim() !== "" ? field : { skip: "caption_empty" };
    },
    indexSkips: skips,
    close(): void {
      for (const file of open.values()) file.close();
      open.clear();
    },
  };
}

/** A training source over webdataset shards. */
export function webDatasetTrainSource(options: WebDatasetOptions & FileSourceOptions): FileTrainSource {
  return fileTrainSource(readWebDatasetTable(options), options);
}
