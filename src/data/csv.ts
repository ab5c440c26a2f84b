// csv.ts: CSV/TSV manifests of (image path, caption), the format OpenCLIP and img2dataset users already have. A header
// row names the columns; which two are used is configurable (OpenCLIP's defaults: filepath, title). Relative image
// paths resolve against --root. Parsing is RFC 4180 (quoted fields, "" escapes, separators and newlines inside
// quotes) done on bytes, so one invalid UTF-8 caption costs its row, not the whole file; such rows, rows with too few
// fields and empty captions are skipped and counted while indexing.
import { readRegularFileSync } from "../fs/input_file.ts";
import { dirname, isAbsolute, join } from "node:path";
import {
  checkCaption,
  type FileSourceOptions,
  type FileTrainSource,
  fileTrainSource,
  type SampleTable,
  SkipCounter,
} from "./loader.ts";

export interface CsvOptions {
  /** The manifest file. */
  path: string;
  /** Where relative image paths start (default: the manifest's folder). */
  root?: string;
  /** Header name of the image path column (default "filepath"). */
  imageColumn?: string;
  /** Header name of the caption column (default "title"). */
  captionColumn?: string;
  /** Field separator (default: tab for .tsv/.tab files, else comma). */
  separator?: string;
}

/** One parsed row: its fields, with null for a field that is not valid UTF-8. */
export type CsvRow = (string | null)[];

const QUOTE = 0x22, CR = 0x0d, LF = 0x0a;
const strict = new TextDecoder("utf-8", { fatal: true });

function decodeField(bytes: Uint8Array, start: number, end: number, unquote: boolean): string | null {
  let text: string;
  try {
    text = strict.decode(bytes.subarray(start, end));
  } catch {
    return null;
  }
  return unquote ? text.replaceAll('""', '"') : text;
}

/** Rows parseDelimited dropped, by why. */
export interface DelimitedSkips {
  /** A quote opened a field that never closed, or closed on a later line followed by more text: a broken row. */
  unterminatedQuote: number;
}

/**
 * Parses delimited text into rows of fields. A field that starts with a quote runs to the next lone quote (`""` is a
 * literal quote) and may hold separators and newlines; anything between its closing quote and the next separator is
 * kept, as Python's csv module does. Blank lines are dropped; a UTF-8 BOM at the start is ignored.
 *
 * A quoted field that reaches the end of the file unclosed, or that spans lines and whose closing quote is followed
 * by more text (the "closing" quote opened a later row's field), is a broken row: rather than merging the rows after
 * it into one caption, the row is dropped (counted in `skips`) and parsing resumes on the line after its quote.
 */
export function parseDelimited(bytes: Uint8Array, separator = ",", skips?: DelimitedSkips): CsvRow[] {
  const sepBytes = new TextEncoder().encode(separator);
  if (sepBytes.length !== 1 || sepBytes[0] === QUOTE || sepBytes[0] === CR || sepBytes[0] === LF) {
    throw new RangeError(
      `csv: the separator must be one ASCII character other than a quote or newline, got ${JSON.stringify(separator)}`,
    );
  }
  const sep = sepBytes[0];
  const rows: CsvRow[] = [];
  let i = bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0;
  const n = bytes.length;
  let row: CsvRow = [];
  let rowHasContent = false;
  while (i <= n) {
    // One field starting at i.
    let field: string | null;
    if (i < n && bytes[i] === QUOTE) {
      const start = i + 1;
      let j = start;
      for (;;) {
        if (j >= n) break; // unterminated quote: the field runs to the end of the file
        if (bytes[j] === QUOTE) {
          if (j + 1 < n && bytes[j + 1] === QUOTE) {
            j += 2;
            continue;
          }
          break;
        }
        j++;
      }
      // Text after the closing quote, up to the separator or end of line, is appended as is.
      let k = Math.min(j + 1, n);
      while (k < n && bytes[k] !== sep && bytes[k] !== LF && bytes[k] !== CR) k++;
      if (j >= n || (k > j + 1 && spansLines(bytes, start, j))) {
        if (skips) skips.unterminatedQuote++;
        let next = start;
        while (next < n && bytes[next] !== LF && bytes[next] !== CR) next++;
        row = [];
        rowHasContent = false;
        if (next >= n) break;
        i = bytes[next] === CR && next + 1 < n && bytes[next + 1] === LF ? next + 2 : next + 1;
        continue;
      }
      field = decodeField(bytes, start, j, true);
      i = Math.min(j + 1, n);
      if (k > i) {
        const tail = decodeField(bytes, i, k, false);
        field = field === null || tail === null ? null : field + tail;
      }
      i = k;
      rowHasContent = true;
    } else {
      let k = i;
      while (k < n && bytes[k] !== sep && bytes[k] !== LF && bytes[k] !== CR) k++;
      field = decodeField(bytes, i, k, false);
      if (k > i) rowHasContent = true;
      i = k;
    }
    row.push(field);
    if (i < n && bytes[i] === sep) {
      i++;
      rowHasContent = true;
      continue;
    }
    // End of line or of file.
    if (rowHasContent) rows.push(row);
    row = [];
    rowHasContent = false;
    if (i >= n) break;
    if (bytes[i] === CR && i + 1 < n && bytes[i + 1] === LF) i += 2;
    else i += 1;
  }
  return rows;
}

function spansLines(bytes: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (bytes[i] === LF || bytes[i] === CR) return true;
  return false;
}

function defaultSeparator(path: string): string {
  const lower = path.toLowerCase();
  return lower.endsWith(".tsv") || lower.endsWith(".tab") ? "\t" : ",";
}

/** Reads a manifest into a SampleTable. Throws when the file or a named column is missing. */
export function readCsvTable(options: CsvOptions): SampleTable {
  const root = options.root ?? dirname(options.path);
  const imageColumn = options.imageColumn ?? "filepath";
  const captionColumn = options.captionColumn ?? "title";
  const broken: DelimitedSkips = { unterminatedQuote: 0 };
  const separator = options.separator ?? defaultSeparator(options.path);
  const rows = parseDelimited(readRegularFileSync(options.path), separator, broken);
  if (rows.length === 0) throw new Error(`csv: ${options.path} is empty (a header row is required)`);
  const header = rows[0].map((h) => (h ?? "").trim());
  const imageAt = header.indexOf(imageColumn), captionAt = header.indexOf(captionColumn);
  for (const [name, at, flag] of [[imageColumn, imageAt, "image"], [captionColumn, captionAt, "caption"]] as const) {
    if (at < 0) {
      throw new Error(
        `csv: ${options.path} has no column '${name}' (columns: ${
          header.join(", ")
        }); choose one with --csv-${flag}-key`,
      );
    }
  }
  const skips = new SkipCounter();
  skips.add("csv_unterminated_quote", broken.unterminatedQuote);
  const paths: string[] = [];
  const captions: string[] = [];
  for (let r = 1; r < rows.length; r++) {
    const row = rows[r];
    if (row.length <= Math.max(imageAt, captionAt)) {
      skips.add("csv_bad_row");
      continue;
    }
    const path = row[imageAt];
    if (path === null || path.trim() === "") {
      skips.add("csv_bad_row");
      continue;
    }
    const raw = row[captionAt];
    const caption = raw === null ? { skip: "caption_invalid_utf8" } : checkCaption(raw);
    if (typeof caption !== "string") {
      skips.add(caption.skip);
      continue;
    }
    paths.push(path);
    captions.push(caption);
  }
  return {
    name: `csv:${options.path}`,
    size: paths.length,
    image(i: number) {
      const path = paths[i];
      return { path: isAbsolute(path) ? path : join(root, path) };
    },
    caption(i: number): string {
      return captions[i];
    },
    indexSkips: skips,
  };
}

/** A training source over a CSV/TSV manifest. */
export function csvTrainSource(options: CsvOptions & FileSourceOptions): FileTrainSource {
  return fileTrainSource(readCsvTable(options), options);
}
