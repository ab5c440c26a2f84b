// bounds_test.ts: the input bounds of docs/errors.md. Files a user names are stat'ed before they are opened (a FIFO
// never blocks, a device is never read), whole-file reads stop at their cap, a brace pattern is counted before it is
// expanded, a giant word is cut before BPE runs on it (row ids of normal text unchanged), a CSV row with an
// unterminated quote is a counted skip, and a zip member cannot unpack past what its directory declares.
import { deflateRawSync, gzipSync } from "node:zlib";
import { preflightTrain } from "../cli/train_preflight.ts";
import { UsageError } from "../cli/usage_error.ts";
import { trainBpe, writeMerges } from "../src/data/bpe_trainer.ts";
import { DataError } from "../src/data/data_error.ts";
import { parseDelimited, readCsvTable } from "../src/data/csv.ts";
import { BpeFileError, ClipTokenizer, MAX_PRE_TOKEN_CHARS, readMerges } from "../src/data/tokenizer.ts";
import { countBraces, expandBraces, MAX_BRACE_NAMES } from "../src/data/webdataset.ts";
import { ZipArchive, ZipError } from "../src/formats/zip.ts";
import { DatasetError } from "../src/eval/datasets.ts";
import { readZeroShotPrompts } from "../src/eval/run.ts";
import { INPUT_CAPS, InputFileError, readInputFile, requireRegularFile } from "../src/fs/input_file.ts";
import { DEVICE_PATTERN, DeviceError, parseDevice } from "../src/torch/device.ts";
import { isZipFile, SafeTensorsError, SafeTensorsFile } from "../src/torch/mod.ts";
import { CheckpointError } from "../src/checkpoint/checkpoint.ts";
import { MAX_THREADS, OptionError, parseTrainOptions } from "../src/train/options.ts";
import { assert, assertEquals, assertThrows } from "./helpers.ts";

function withDir(fn: (dir: string) => void): () => void {
  return () => {
    const dir = Deno.makeTempDirSync({ prefix: "dc-bounds-" });
    try {
      fn(dir);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  };
}

function mkfifo(path: string): void {
  const made = new Deno.Command("mkfifo", { args: [path] }).outputSync();
  assert(made.success, `mkfifo ${path}`);
}

Deno.test(
  "a FIFO, a device or a directory is refused before it is opened; a file over its cap before it is read",
  withDir((dir) => {
    const fifo = `${dir}/fifo`;
    mkfifo(fifo);
    // Each of these would block forever on open() if the path were opened: the test finishing is the check.
    assertThrows(() => requireRegularFile(fifo, "--config x"), InputFileError, ["--config x", "FIFO"]);
    assertThrows(() => readInputFile("/dev/zero", "--bpe /dev/zero", 10), InputFileError, ["character device"]);
    assertThrows(() => readInputFile(dir, "--labels d", 10), InputFileError, ["directory"]);
    assertThrows(() => SafeTensorsFile.open(fifo), SafeTensorsError, ["not a regular file"]);
    assertEquals(isZipFile(fifo), false);
    assertThrows(() => new ZipArchive(fifo), ZipError, ["not a regular file"]);
    assertThrows(() => readMerges(fifo), BpeFileError, ["FIFO"]);
    assertThrows(() => readMerges("/dev/zero"), BpeFileError, ["character device"]);
    assertThrows(() => readZeroShotPrompts(fifo, fifo, "k"), DatasetError, ["FIFO"]);
    assertThrows(() => parseTrainOptions(["--config", fifo]), OptionError, ["--config", "FIFO"]);
    assertThrows(() => parseTrainOptions(["--config", "/dev/zero"]), OptionError, ["character device"]);
    // a regular file over its cap
    const big = `${dir}/big.json`;
    Deno.writeFileSync(big, new Uint8Array(INPUT_CAPS.config + 1).fill(0x20));
    assertThrows(() => parseTrainOptions(["--config", big]), OptionError, [`${INPUT_CAPS.config + 1} bytes`, "cap"]);
    assertEquals(readInputFile(big, "x", INPUT_CAPS.config + 1).length, INPUT_CAPS.config + 1, "at the cap: read");
    // a merges file that unpacks past its cap (a gzip bomb: 65 MB of zeros is 64 KB packed)
    const bomb = `${dir}/bomb.txt.gz`;
    Deno.writeFileSync(bomb, gzipSync(new Uint8Array(INPUT_CAPS.merges + 1024)));
    assertThrows(() => readMerges(bomb), BpeFileError, ["unpacks to more than"]);
  }),
);

Deno.test("train's preflight refuses a FIFO as --resume without opening it, and warns above the cores", () => {
  const dir = Deno.makeTempDirSync({ prefix: "dc-bounds-" });
  try {
    mkfifo(`${dir}/fifo`);
    const options = parseTrainOptions(["--output-dir", `${dir}/run`, "--resume", `${dir}/fifo`]);
    assertThrows(() => preflightTrain(options), CheckpointError, ["fifo", "FIFO"]);
    const warnings: string[] = [];
    const cores = navigator.hardwareConcurrency;
    preflightTrain(parseTrainOptions(["--output-dir", `${dir}/run`, "--threads", String(cores + 1)]), (line) => {
      warnings.push(line);
    });
    assertEquals(warnings.length, 1, warnings.join("\n"));
    assert(warnings[0].includes(`--threads ${cores + 1}`) && warnings[0].includes(`${cores} cores`), warnings[0]);
    assertThrows(() => parseTrainOptions(["--threads", "100000"]), OptionError, ["--threads", String(MAX_THREADS)]);
    assertThrows(() => parseTrainOptions(["--workers", "100000"]), OptionError, ["--workers"]);
    // fp16 on the CPU and a file in place of the output folder: refused before any work
    const fp16 = parseTrainOptions(["--output-dir", `${dir}/run`, "--precision", "fp16"]);
    assertThrows(() => preflightTrain(fp16), UsageError, ["--precision fp16", "CUDA"]);
    Deno.writeTextFileSync(`${dir}/file`, "");
    assertThrows(() => preflightTrain(parseTrainOptions(["--output-dir", `${dir}/file`])), UsageError, [
      "not a folder",
    ]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("the --device spelling lives in one place and is checked the same way everywhere", () => {
  for (const ok of ["cpu", "cuda", "cuda:0", "cuda:12"]) assertEquals(parseDevice(ok), ok);
  for (const bad of ["tpu", "cuda:", "cuda:x", "CPU", " cpu", "cuda:1:2"]) {
    assert(!DEVICE_PATTERN.test(bad), bad);
    assertThrows(() => parseDevice(bad), DeviceError, ["--device", "cpu, cuda or cuda:N"]);
  }
  assertThrows(() => parseTrainOptions(["--device", "cuda:x"]), OptionError, ["--device", "cuda:N"]);
  // the four former copies of the pattern now import it
  for (const file of ["../cli/golden.ts", "../cli/viz.ts", "../cli/eval.ts", "../src/train/options.ts"]) {
    const text = Deno.readTextFileSync(new URL(file, import.meta.url));
    assert(!text.includes("(cpu|cuda|cuda:\\d+)"), `${file} has its own copy of the device pattern`);
  }
});

Deno.test("a brace pattern is counted before it is expanded: above 1,000,000 names it is refused", () => {
  assertEquals(expandBraces("shard-{000..003}.tar"), [
    "shard-000.tar",
    "shard-001.tar",
    "shard-002.tar",
    "shard-003.tar",
  ]);
  assertEquals(expandBraces("{a,b{1..2}}-{x,y}"), ["a-x", "a-y", "b1-x", "b1-y", "b2-x", "b2-y"]);
  assertEquals(countBraces("{a,b{1..2}}-{x,y}", Infinity), 6);
  assertEquals(countBraces("s-{0..999999999}.tar", Infinity), 1e9);
  assertEquals(countBraces("{a,b}".repeat(40), 1e7), 1e7, "2^40 names, counted in linear time and saturated");
  assertEquals(expandBraces(`s-{1..${MAX_BRACE_NAMES}}`).length, MAX_BRACE_NAMES, "the cap itself is allowed");
  assertThrows(() => expandBraces("s-{0..999999999}.tar"), DataError, ["more than 1,000,000 names"]);
  assertThrows(() => expandBraces("{a,b}".repeat(40)), DataError, ["1,000,000"]);
  assertThrows(() => expandBraces("{0..99999999999999999999999}"), DataError, ["names"]);
});

Deno.test("BPE on a giant pre-token is cut for rows; rows of normal text and encode() stay exact", () => {
  const merges = trainBpe(["ab ab abab ababab", "a photo of a cat", "the quick brown fox", "zzzz"], 600);
  const dir = Deno.makeTempDirSync({ prefix: "dc-bounds-" });
  let tok: ClipTokenizer;
  try {
    writeMerges(`${dir}/merges.txt`, merges);
    tok = ClipTokenizer.fromFile(`${dir}/merges.txt`);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
  // One 1 MB word (77 s before the cut): its row equals the row of its first MAX_PRE_TOKEN_CHARS characters.
  const word = "ab".repeat(500_000);
  const rows = tok.tokenizeRows([word, word.slice(0, MAX_PRE_TOKEN_CHARS), "a photo of a cat"], 77).ids;
  assertEquals(rows[0], rows[1]);
  // normal text: the row is SOT + encode() + EOT, padded
  const ids = tok.encode("a photo of a cat");
  assertEquals(rows[2].slice(0, ids.length + 2), [
    tok.encode("<|startoftext|>")[0],
    ...ids,
    tok.encode("<|endoftext|>")[0],
  ]);
  // a word just under the cut is not cut: its row is the start of its full encoding
  const under = "ab".repeat(MAX_PRE_TOKEN_CHARS / 2 - 10);
  const full = tok.encode(under);
  assertEquals(tok.tokenizeRows([under], 77).ids[0].slice(1, 76), full.slice(0, 75));
  // a word of emoji (surrogate pairs) past the cut: the same row as its first MAX_PRE_TOKEN_CHARS characters
  const emoji = "a" + "🙂".repeat(MAX_PRE_TOKEN_CHARS);
  const emojiRows = tok.tokenizeRows([emoji, emoji.slice(0, MAX_PRE_TOKEN_CHARS - 1)], 77).ids;
  assertEquals(emojiRows[0], emojiRows[1]);
});

Deno.test(
  "a CSV row with an unterminated quote is a counted skip, not rows merged into one caption",
  withDir((dir) => {
    const enc = (text: string): Uint8Array => new TextEncoder().encode(text);
    const skips = { unterminatedQuote: 0 };
    const rows = parseDelimited(enc('filepath,title\nx.jpg,"a cat\ny.jpg,a dog\nz.jpg,"a ""red"" fox"\n'), ",", skips);
    assertEquals(rows, [["filepath", "title"], ["y.jpg", "a dog"], ["z.jpg", 'a "red" fox']]);
    assertEquals(skips.unterminatedQuote, 1);
    const atEnd = { unterminatedQuote: 0 };
    assertEquals(parseDelimited(enc('a,b\n1,2\n3,"never closed\n4,5\n'), ",", atEnd), [["a", "b"], ["1", "2"], [
      "4",
      "5",
    ]]);
    assertEquals(atEnd.unterminatedQuote, 1);
    // a legitimate multi-line quoted field is kept
    const kept = { unterminatedQuote: 0 };
    assertEquals(parseDelimited(enc('a,b\n"two\nlines",2\n'), ",", kept), [["a", "b"], ["two\nlines", "2"]]);
    assertEquals(kept.unterminatedQuote, 0);
    // the table counts the skip where the training log and metrics show skips
    Deno.writeTextFileSync(`${dir}/m.csv`, 'filepath,title\nx.jpg,"a cat\ny.jpg,a dog\nz.jpg,a fox\n');
    const table = readCsvTable({ path: `${dir}/m.csv` });
    assertEquals(table.size, 2);
    assertEquals(table.indexSkips.get("csv_unterminated_quote"), 1);
    assertEquals([table.caption(0, 0), table.caption(1, 0)], ["a dog", "a fox"]);
  }),
);

/** A one-member zip whose directory declares `declared` uncompressed bytes for `data` deflated. */
function zipWith(data: Uint8Array, declared: number): Uint8Array {
  const packed = new Uint8Array(deflateRawSync(data));
  const name = new TextEncoder().encode("m.bin");
  const local = new Uint8Array(30 + name.length);
  const lv = new DataView(local.buffer);
  lv.setUint32(0, 0x04034b50, true);
  lv.setUint16(8, 8, true);
  lv.setUint32(18, packed.length, true);
  lv.setUint32(22, declared, true);
  lv.setUint16(26, name.length, true);
  local.set(name, 30);
  const central = new Uint8Array(46 + name.length);
  const cv = new DataView(central.buffer);
  cv.setUint32(0, 0x02014b50, true);
  cv.setUint16(10, 8, true);
  cv.setUint32(20, packed.length, true);
  cv.setUint32(24, declared, true);
  cv.setUint16(28, name.length, true);
  central.set(name, 46);
  const end = new Uint8Array(22);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, 1, true);
  ev.setUint16(10, 1, true);
  ev.setUint32(12, central.length, true);
  ev.setUint32(16, local.length + packed.length, true);
  const out = new Uint8Array(local.length + packed.length + central.length + end.length);
  out.set(local, 0);
  out.set(packed, local.length);
  out.set(central, local.length + packed.length);
  out.set(end, local.length + packed.length + central.length);
  return out;
}

Deno.test(
  "a zip member cannot unpack past its declared size, nor declare more than deflate or the cap allow",
  withDir((dir) => {
    const zeros = new Uint8Array(4 << 20); // 4 MB of zeros deflate to about 4 KB
    Deno.writeFileSync(`${dir}/lies.zip`, zipWith(zeros, 1000)); // declares 1,000 bytes
    const lies = new ZipArchive(`${dir}/lies.zip`);
    try {
      assertThrows(() => lies.read("m.bin"), ZipError, ["m.bin", "corrupt deflate data"]);
    } finally {
      lies.close();
    }
    Deno.writeFileSync(`${dir}/huge.zip`, zipWith(new Uint8Array(10), 0xfffffff0)); // declares 4 GB from 10 bytes
    const huge = new ZipArchive(`${dir}/huge.zip`);
    try {
      assertThrows(() => huge.read("m.bin"), ZipError, ["declares 4294967280 bytes", "1032:1"]);
    } finally {
      huge.close();
    }
  }),
);
