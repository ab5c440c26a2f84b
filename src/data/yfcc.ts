// yfcc.ts: the SLIP/DetailCLIP YFCC15M metadata (SPEC §6.1): a pickle of a list of 4-tuples (index, hash, title, desc),
// read without executing anything (src/data/pickle.ts). The caption is title + ' ' + desc (no random choice). The
// official images live in zips, `root/test_zip_3/<hash[:3]>.zip`, member `data/images/<hash[:3]>/<hash[3:6]>/<hash>.jpg`;
// our loader reads plain files, so the converter expects them extracted to `<root>/images/<hash[:3]>/<hash[3:6]>/
// <hash>.jpg` (e.g. `for z in root/test_zip_3/*.zip; do unzip -q "$z" 'data/images/*' -d root/x; done; mv
// root/x/data/images root/images`).
import { PickleError, PickleTuple, type PickleValue, readPickle } from "./pickle.ts";
import { SkipCounter } from "./loader.ts";

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
