// data_bpe.ts: `data bpe --input FILE --vocab-size N --out FILE` learns CLIP-style BPE merges from a caption file (one
// caption per line, plain or gzipped) and writes them in OpenAI's merges format (gzipped when FILE ends in .gz), so the
// tokenizer needs no download. Prints one JSON line with what was learned.
import { parseArgs } from "node:util";
import { gunzipSync } from "node:zlib";
import { NON_MERGE_TOKENS, PAIR_BASE, trainBpe, writeMerges } from "../src/data/bpe_trainer.ts";
import { INPUT_CAPS, InputFileError, readInputFile } from "../src/fs/input_file.ts";
import { UsageError } from "./usage_error.ts";
import { outputOverInputProblem } from "../src/fs/same_file.ts";
import { checkOutputFile } from "./output_paths.ts";

const help = `usage: data bpe --input FILE --vocab-size N --out FILE

Learns N - ${NON_MERGE_TOKENS} merges (N counts 512 byte tokens, the merges and 2 specials; OpenAI's is 49408)
from FILE, one caption per line (gzip allowed), and writes them to --out (gzipped if it ends in .gz).
Prints {"captions", "merges", "vocab_size", "seconds"} as one JSON line.`;

export function main(args: string[]): Promise<number> {
  const values = parseOptions(args);
  if (values.help) {
    console.log(help);
    return Promise.resolve(0);
  }
  for (const name of ["input", "vocab-size", "out"] as const) {
    if (values[name] === undefined) throw new UsageError(`--${name} is required\n${help}`);
  }
  const raw = values["vocab-size"]!;
  const vocabSize = /^\d+$/.test(raw) ? Number(raw) : NaN;
  const maxVocab = NON_MERGE_TOKENS + PAIR_BASE - 1;
  if (!Number.isSafeInteger(vocabSize) || vocabSize < NON_MERGE_TOKENS || vocabSize > maxVocab) {
    throw new UsageError(
      `--vocab-size must be an integer in [${NON_MERGE_TOKENS}, ${maxVocab}] (512 byte tokens + merges + 2 ` +
        `specials), got '${raw}'`,
    );
  }
  checkOutputFile(values.out!, "--out"); // before the corpus is read and learned from
  const overInput = outputOverInputProblem("--out", values.out!, [{ flag: "--input", path: values.input! }]);
  if (overInput !== null) throw new UsageError(overInput);
  const captions = readCaptions(values.input!);

  const start = performance.now();
  const merges = trainBpe(captions, vocabSize);
  writeMerges(values.out!, merges);
  const seconds = (performance.now() - start) / 1000;
  if (merges.length < vocabSize - NON_MERGE_TOKENS) {
    console.error(
      `data bpe: the corpus ran out of pairs after ${merges.length} merges; the vocabulary has ` +
        `${merges.length + NON_MERGE_TOKENS} ids, not ${vocabSize}`,
    );
  }
  console.log(JSON.stringify({
    captions: captions.length,
    merges: merges.length,
    vocab_size: merges.length + NON_MERGE_TOKENS,
    seconds: Number(seconds.toFixed(3)),
    out: values.out,
  }));
  return Promise.resolve(0);
}

function parseOptions(args: string[]) {
  try {
    return parseArgs({
      args,
      options: {
        input: { type: "string" },
        "vocab-size": { type: "string" },
        out: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
    }).values;
  } catch (error) {
    if (String((error as { code?: unknown }).code).startsWith("ERR_PARSE_ARGS")) {
      throw new UsageError(`${(error as Error).message} (options: --input FILE, --vocab-size N, --out FILE)`);
    }
    throw error;
  }
}

function readCaptions(path: string): string[] {
  // A FIFO or a device is refused unread; the corpus (after gunzip, too) is capped below V8's string limit.
  let bytes: Uint8Array;
  try {
    bytes = readInputFile(path, `--input ${path}`, INPUT_CAPS.corpus);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      bytes = gunzipSync(bytes, { maxOutputLength: INPUT_CAPS.corpus });
    } catch (error) {
      throw new InputFileError(
        path,
        `--input ${path}: not valid gzip or over ${INPUT_CAPS.corpus} bytes unpacked: ` +
          (error as Error).message,
      );
    }
  }
  return new TextDecoder().decode(bytes).split(/\r?\n/).filter((line) => line.trim() !== "");
}
