// data_yfcc.ts: `data yfcc-to-csv --metadata yfcc15m.pkl --root R --out yfcc.csv` converts the SLIP/DetailCLIP YFCC15M
// metadata pickle (read without executing it) into our CSV manifest (columns filepath, title), with the caption
// title + ' ' + desc and the image at R/images/<hash[:3]>/<hash[3:6]>/<hash>.jpg (the official zips' members,
// extracted). Prints one JSON line with the counts. For the official zips as they are, `train --dataset yfcc15m`
// needs no conversion.
import { readRegularFileSync } from "../src/fs/input_file.ts";
import { parseArgs } from "node:util";
import { resolve } from "node:path";
import { csvField, readYfccMetadata, yfccCaption, yfccImagePath } from "../src/data/yfcc.ts";
import { UsageError } from "./usage_error.ts";
import { writeAll, writeFileAtomic } from "../src/fs/atomic_write.ts";
import { outputOverInputProblem } from "../src/fs/same_file.ts";
import { checkOutputFile } from "./output_paths.ts";

const help = `usage: data yfcc-to-csv --metadata yfcc15m.pkl --root R --out yfcc.csv [--check-images]

Reads the pickle of (index, hash, title, desc) tuples without executing anything (any opcode that imports or calls
code is refused) and writes a CSV manifest: filepath = R/images/<hash[:3]>/<hash[3:6]>/<hash>.jpg (absolute), title =
title + ' ' + desc, for images extracted to R/images. --check-images leaves out rows whose image file does not
exist (counted as image_missing). Train with: deno task train --dataset csv --metadata yfcc.csv --bpe MERGES

The official images are members data/images/... of R/test_zip_3/<hash[:3]>.zip; to train on them without
extracting anything: deno task train --dataset yfcc15m --metadata yfcc15m.pkl --root R --bpe MERGES`;

export function runYfccToCsv(args: string[]): number {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        metadata: { type: "string" },
        root: { type: "string" },
        out: { type: "string" },
        "check-images": { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (error) {
    throw new UsageError(`${(error as Error).message}\n${help}`);
  }
  if (values.help) {
    console.log(help);
    return 0;
  }
  for (const name of ["metadata", "root", "out"] as const) {
    if (values[name] === undefined) throw new UsageError(`--${name} is required\n${help}`);
  }
  const overInput = outputOverInputProblem("--out", values.out!, [{ flag: "--metadata", path: values.metadata! }]);
  if (overInput !== null) throw new UsageError(overInput);
  const root = resolve(values.root!);
  const start = performance.now();
  checkOutputFile(values.out!, "--out"); // before the pickle is read
  const bytes = readRegularFileSync(values.metadata!);
  const encoder = new TextEncoder();
  let chunk: string[] = ["filepath,title\n"];
  let rows = 0, missing = 0;
  let skips!: ReturnType<typeof readYfccMetadata>;
  // Streamed into the temp file of an atomic write: a failed conversion leaves any earlier manifest as it was.
  writeFileAtomic(values.out!, (out) => {
    const flush = () => {
      writeAll(out, encoder.encode(chunk.join("")));
      chunk = [];
    };
    skips = readYfccMetadata(bytes, (r) => {
      const path = `${root}/${yfccImagePath(r.hash)}`;
      if (values["check-images"]) {
        try {
          Deno.statSync(path);
        } catch {
          missing++;
          return;
        }
      }
      chunk.push(`${csvField(path)},${csvField(yfccCaption(r))}\n`);
      rows++;
      if (chunk.length >= 10_000) flush();
    });
    flush();
  });
  if (missing > 0) skips.add("image_missing", missing);
  console.log(JSON.stringify({
    rows,
    skipped: skips.snapshot(),
    out: values.out,
    seconds: Number(((performance.now() - start) / 1000).toFixed(3)),
  }));
  return 0;
}

export function main(args: string[]): Promise<number> {
  return Promise.resolve(runYfccToCsv(args));
}
