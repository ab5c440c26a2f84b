// yfcc.ts: the SLIP/DetailCLIP YFCC15M data (docs/data.md#yfcc15m): a metadata pickle of a list of 4-tuples (index,
// hash, title, desc), read without executing anything (src/formats/pickle.ts), with the caption title + ' ' + desc (no
// random choice). The official images live in zips, `root/test_zip_3/<hash[:3]>.zip`, member
// `data/images/<hash[:3]>/<hash[3:6]>/<hash>.jpg`; `readYfccTable` reads them there, as the official loader does: each
// referenced zip's central directory is read once at start-up (src/formats/zip.ts), and each image is then read by the
// native workers straight from its zip (stored members as they are, deflated ones inflated there; both checked against
// the directory's size and CRC-32). Nothing is extracted.
//
// Memory is what 15 M samples force: per sample, the member's place in typed arrays (29 bytes) and the caption as
// UTF-8 plus 12 bytes (src/data/text_store.ts); member names and hashes are dropped after indexing. The trade: start-up reads
// every referenced zip's central directory (about 100 bytes per member), and a dataset whose zips change on disk
// needs a restart. `yfccImagePath` is the extracted layout the CSV converter (cli/data_yfcc.ts) writes.
import { readRegularFileSync } from "../fs/input_file.ts";
import { join } from "node:path";
import { PickleError, PickleTuple, type PickleValue, readPickle } from "../formats/pickle.ts";
import {
  checkCaption,
  type FileSourceOptions,
  type FileTrainSource,
  fileTrainSource,
  type SampleTable,
  SkipCounter,
} from "./loader.ts";
import { TextStore } from "./text_store.ts";
import { ZIP_DEFLATED, ZIP_STORED, ZipArchive } from "../formats/zip.ts";

export interface YfccRecord {
  index: number | bigint;
  hash: string;
  title: string;
  desc: string;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

function asText(v: PickleValue): string | null {
  if (typeof v === "string") return v;
  if (v instanceof Uint8Array) {
    try {
      return strictUtf8.decode(v);
    } catch {
      return null;
    }
  }
  return null;
}

/** One list item as a record, or the reason it is skipped. */
export function yfccRecord(item: PickleValue): YfccRecord | { skip: string } {
  if (!(item instanceof PickleTuple) && !Array.isArray(item)) return { skip: "yfcc_not_a_tuple" };
  const fields = item instanceof PickleTuple ? item.items : item;
  if (fields.length !== 4) return { skip: "yfcc_not_a_4_tuple" };
  const [index, hash, title, desc] = fields;
  if (typeof index !== "number" && typeof index !== "bigint") return { skip: "yfcc_bad_index" };
  const h = asText(hash), t = asText(title ?? ""), d = asText(desc ?? "");
  if (h === null || !/^[0-9a-f]{6,}$/i.test(h)) return { skip: "yfcc_bad_hash" };
  if (t === null || d === null) return { skip: "caption_invalid_utf8" };
  return { index, hash: h, title: t, desc: d };
}

/** The official caption: title + ' ' + desc. */
export function yfccCaption(r: YfccRecord): string {
  return r.title + " " + r.desc;
}

/** Where the converter expects an extracted image, relative to the root. */
export function yfccImagePath(hash: string): string {
  return `images/${hash.slice(0, 3)}/${hash.slice(3, 6)}/${hash}.jpg`;
}

/** Where the official code finds it: the zip (relative to the root) and the member inside it. */
export function yfccZipLocation(hash: string): { zip: string; member: string } {
  return {
    zip: `test_zip_3/${hash.slice(0, 3)}.zip`,
    member: `data/images/${hash.slice(0, 3)}/${hash.slice(3, 6)}/${hash}.jpg`,
  };
}

/** Streams the records of a metadata pickle to `onRecord`; bad items are counted in the returned SkipCounter. */
export function readYfccMetadata(bytes: Uint8Array, onRecord: (record: YfccRecord) => void): SkipCounter {
  const skips = new SkipCounter();
  const handle = (item: PickleValue): void => {
    const r = yfccRecord(item);
    if ("skip" in r) skips.add(r.skip);
    else onRecord(r);
  };
  const value = readPickle(bytes, { onTopItem: handle });
  if (!Array.isArray(value)) {
    throw new PickleError("YFCC metadata: the pickle does not hold a list of (index, hash, title, desc) tuples", 0);
  }
  for (const item of value) handle(item); // a list built with LIST rather than appends
  return skips;
}

/** A CSV field, quoted when needed (RFC 4180). */
export function csvField(text: string): string {
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

// ---- the official zip layout as a SampleTable ------------------------------------------------------------------------

export interface YfccOptions {
  /** The metadata pickle of (index, hash, title, desc) tuples. */
  metadata: string;
  /** The dataset root: images are members of root/test_zip_3/<hash[:3]>.zip. */
  root: string;
}

/** Why a zip cannot be opened at all (its records are then all skipped for that reason), or null. */
function archiveFailure(path: string): string | null {
  let file: Deno.FsFile;
  try {
    if (!Deno.statSync(path).isFile) return "zip_unreadable"; // never open a FIFO: it would block
    file = Deno.openSync(path, { read: true });
  } catch (error) {
    return error instanceof Deno.errors.NotFound ? "zip_missing" : "zip_unreadable";
  }
  try {
    return file.statSync().isFile ? null : "zip_unreadable";
  } finally {
    file.close();
  }
}

/**
 * Indexes the metadata against the official zips. Samples whose zip is missing (`zip_missing`), unreadable
 * (`zip_unreadable`) or not a valid archive (`zip_corrupt`), whose member is absent (`zip_member_missing`) or uses
 * another compression than stored/deflate (`zip_member_unsupported`), and bad metadata items are counted per sample
 * and left out; a member whose bytes fail their checks is found when it is drawn (`zip_member_corrupt`).
 */
export function readYfccTable(options: YfccOptions): SampleTable {
  const bytes = readRegularFileSync(options.metadata);
  const captions = new TextStore();
  const hashes = new TextStore(); // needed only until each record is matched with its member
  const zipOfRecord: number[] = [];
  const zipNames: string[] = [];
  const zipIds = new Map<string, number>();
  const skips = new SkipCounter();
  skips.addAll(readYfccMetadata(bytes, (r) => {
    const caption = checkCaption(yfccCaption(r));
    if (typeof caption !== "string") {
      skips.add(caption.skip);
      return;
    }
    const prefix = r.hash.slice(0, 3);
    let id = zipIds.get(prefix);
    if (id === undefined) {
      id = zipNames.push(yfccZipLocation(r.hash).zip) - 1;
      zipIds.set(prefix, id);
    }
    zipOfRecord.push(id);
    hashes.push(r.hash);
    captions.push(caption);
  }));
  const n = zipOfRecord.length;
  const zipOf = Int32Array.from(zipOfRecord);
  zipOfRecord.length = 0;

  // Records grouped by zip (a counting sort), so that each archive is opened and its directory read once.
  const starts = new Int32Array(zipNames.length + 1);
  for (let r = 0; r < n; r++) starts[zipOf[r] + 1]++;
  for (let z = 0; z < zipNames.length; z++) starts[z + 1] += starts[z];
  const byZip = new Int32Array(n);
  const fill = starts.slice(0, zipNames.length);
  for (let r = 0; r < n; r++) byZip[fill[zipOf[r]]++] = r;

  // Where each record's member is: its local header, compressed and uncompressed sizes, CRC-32, method.
  const headerOffset = new Float64Array(n);
  const compressedSize = new Uint32Array(n);
  const size = new Uint32Array(n);
  const crc = new Uint32Array(n);
  const deflated = new Uint8Array(n);
  const found = new Uint8Array(n);
  const paths = zipNames.map((zip) => join(options.root, zip));
  for (let z = 0; z < zipNames.length; z++) {
    const count = starts[z + 1] - starts[z];
    const failure = archiveFailure(paths[z]);
    if (failure !== null) {
      skips.add(failure, count);
      continue;
    }
    let archive: ZipArchive;
    try {
      archive = new ZipArchive(paths[z]);
    } catch {
      skips.add("zip_corrupt", count); // no end record, a directory past the end, an encrypted member, ...
      continue;
    }
    try {
      for (let k = starts[z]; k < starts[z + 1]; k++) {
        const r = byZip[k];
        const entry = archive.entries.get(yfccZipLocation(hashes.get(r)).member);
        if (entry === undefined) skips.add("zip_member_missing");
        else if (entry.method !== ZIP_STORED && entry.method !== ZIP_DEFLATED) skips.add("zip_member_unsupported");
        else if (entry.compressedSize > 0xffffffff || entry.size > 0xffffffff) skips.add("image_too_large");
        else {
          headerOffset[r] = entry.localHeaderOffset;
          compressedSize[r] = entry.compressedSize;
          size[r] = entry.size;
          crc[r] = entry.crc32;
          deflated[r] = entry.method === ZIP_DEFLATED ? 1 : 0;
          found[r] = 1;
        }
      }
    } finally {
      archive.close();
    }
  }
  // The samples, in metadata order.
  let kept = 0;
  for (let r = 0; r < n; r++) kept += found[r];
  const rows = new Int32Array(kept);
  for (let r = 0, i = 0; r < n; r++) if (found[r]) rows[i++] = r;
  captions.trim();

  return {
    name: `yfcc15m:${options.metadata}`,
    size: kept,
    image(i: number) {
      const r = rows[i];
      return {
        path: paths[zipOf[r]],
        offset: headerOffset[r],
        length: compressedSize[r],
        member: { zipLocalHeader: true, deflated: deflated[r] === 1, size: size[r], crc32: crc[r] },
      };
    },
    caption(i: number): string {
      return captions.get(rows[i]);
    },
    indexSkips: skips,
  };
}

/** A training source over YFCC15M in the official layout (metadata pickle + image zips). */
export function yfccTrainSource(options: YfccOptions & FileSourceOptions): FileTrainSource {
  return fileTrainSource(readYfccTable(options), options);
}
