// yfcc_test.ts: the safe pickle reader (src/formats/pickle.ts) and the YFCC15M metadata converter against pickles written
// by /usr/bin/python3's own pickle module (protocols 2, 4 and 5), including shared objects (memo reads), big ints,
// bytes, non-ASCII text and more than 1,000 items (batched APPENDS, LONG_BINPUT); a pickle that would call os.system
// (GLOBAL/STACK_GLOBAL + REDUCE) must be refused without running anything. Then `--dataset yfcc15m` on the official
// zip layout written by Python's zipfile: batches bit-equal to the extracted files read through the CSV source, and
// every kind of bad record, zip and member counted.
import { PickleError, PickleTuple, readPickle } from "../src/formats/pickle.ts";
import {
  readYfccMetadata,
  readYfccTable,
  yfccCaption,
  yfccImagePath,
  type YfccRecord,
  yfccTrainSource,
} from "../src/data/yfcc.ts";
import { csvTrainSource, readCsvTable } from "../src/data/csv.ts";
import { type ImageRef, imageSkipReason, NativeLoader } from "../src/data/loader.ts";
import { ClipTokenizer } from "../src/data/tokenizer.ts";
import { trainBpe, writeMerges } from "../src/data/bpe_trainer.ts";
import { ZIP_DEFLATED, ZipArchive } from "../src/formats/zip.ts";
import { liveTensors, type Tensor } from "../src/torch/mod.ts";
import { main as yfccToCsv } from "../cli/data_yfcc.ts";
import { assert, assertEquals, assertThrows, missingTool, nativeOrPilMissing } from "./helpers.ts";

const PYTHON = "/usr/bin/python3";
const SCRIPT = String.raw`
import os, pickle, sys
out = sys.argv[1]
shared = "shared title"
rows = []
for i in range(1500):
    h = "%032x" % (i * 2654435761 % (1 << 128))
    title = shared if i % 3 == 0 else "t%d caf\u00e9 \u6771\u4eac, \"quoted\"" % i
    desc = "" if i % 2 else "desc %d\nline two" % i
    rows.append((i if i != 7 else 1 << 40, h if i != 5 else h.encode(), title, desc))
rows.append("not a tuple")
rows.append((1, "abc", "too short"))
for proto in (2, 4, 5):
    with open(os.path.join(out, "p%d.pkl" % proto), "wb") as f:
        pickle.dump(rows, f, protocol=proto)
with open(os.path.join(out, "plain.pkl"), "wb") as f:
    pickle.dump({"a": [1, -2, 3.5, None, True, b"xy", (1,), (1, 2), (1, 2, 3), ()], "n": -(1 << 70)}, f, protocol=4)

class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.path.join(out, "PWNED"),))
for proto in (2, 4):
    with open(os.path.join(out, "evil%d.pkl" % proto), "wb") as f:
        pickle.dump([(0, "abcdef", "t", "d"), Evil()], f, protocol=proto)
`;

const pythonMissing = (() => {
  try {
    return Deno.statSync(PYTHON).isFile ? null : `${PYTHON} is not a file`;
  } catch {
    return `${PYTHON} not found`;
  }
})();
const noPython = missingTool("/usr/bin/python3", pythonMissing);

let dir: string | null = null;
function fixtures(): string {
  if (dir === null) {
    dir = Deno.makeTempDirSync({ prefix: "dc_yfcc_test_" });
    const out = new Deno.Command(PYTHON, { args: ["-c", SCRIPT, dir], stderr: "piped" }).outputSync();
    if (!out.success) throw new Error(`pickle fixtures failed:\n${new TextDecoder().decode(out.stderr)}`);
    globalThis.addEventListener("unload", () => Deno.removeSync(dir!, { recursive: true }));
  }
  return dir;
}

function test(name: string, fn: () => void | Promise<void>): void {
  Deno.test({ name: `yfcc: ${name}`, ignore: noPython, fn });
}

function expected(i: number): { index: number | bigint; title: string; desc: string } {
  return {
    index: i === 7 ? 1n << 40n : i,
    title: i % 3 === 0 ? "shared title" : `t${i} café 東京, "quoted"`,
    desc: i % 2 ? "" : `desc ${i}\nline two`,
  };
}

for (const proto of [2, 4, 5]) {
  test(`protocol ${proto}: 1,500 records streamed in order, bad items counted`, () => {
    const records: YfccRecord[] = [];
    const skips = readYfccMetadata(Deno.readFileSync(`${fixtures()}/p${proto}.pkl`), (r) => records.push(r));
    assertEquals(records.length, 1500);
    assertEquals(skips.snapshot(), { yfcc_not_a_4_tuple: 1, yfcc_not_a_tuple: 1 });
    for (const i of [0, 1, 5, 7, 999, 1000, 1499]) {
      const r = records[i], e = expected(i);
      assertEquals(r.index, e.index === 1n << 40n ? 2 ** 40 : e.index, `index ${i}`);
      assertEquals(r.title, e.title, `title ${i}`);
      assertEquals(r.desc, e.desc, `desc ${i}`);
      assertEquals(yfccCaption(r), `${e.title} ${e.desc}`);
    }
    assertEquals(records[5].hash, records[5].hash.toLowerCase(), "a bytes hash decodes to text");
    assertEquals(yfccImagePath("abcdef0123"), "images/abc/def/abcdef0123.jpg");
  });
}

test("plain values: dicts, negative and big ints, floats, None, bools, bytes, tuples of every size", () => {
  const value = readPickle(Deno.readFileSync(`${fixtures()}/plain.pkl`));
  assert(value instanceof Map);
  const a = value.get("a");
  assert(Array.isArray(a));
  assertEquals(a.slice(0, 5), [1, -2, 3.5, null, true]);
  assertEquals([...(a[5] as Uint8Array)], [0x78, 0x79]);
  assertEquals(a.slice(6).map((t) => (t as PickleTuple).items.length), [1, 2, 3, 0]);
  assertEquals(value.get("n"), -(1n << 70n));
  // Protocol 1 writes bools (Python 2 also its ints) as protocol 0's INT text; a memo slot read back after one.
  const ints = readPickle(new TextEncoder().encode("(I01\nq\x00h\x00I00\nI-7\nI123456789012345678901\nl."));
  assertEquals(ints, [true, true, false, -7, 123456789012345678901n]);
});

for (const proto of [2, 4]) {
  test(`protocol ${proto}: a pickle that calls os.system is refused, nothing runs`, () => {
    const bytes = Deno.readFileSync(`${fixtures()}/evil${proto}.pkl`);
    const error = assertThrows(() => readYfccMetadata(bytes, () => {}), PickleError);
    assert(/refusing pickle opcode (GLOBAL|STACK_GLOBAL) at byte \d+/.test(error.message), error.message);
    let exists = true;
    try {
      Deno.statSync(`${fixtures()}/PWNED`);
    } catch {
      exists = false;
    }
    assert(!exists, "the payload ran");
  });
}

test("truncated and garbage pickles end with a PickleError naming the offset", () => {
  const bytes = Deno.readFileSync(`${fixtures()}/p4.pkl`);
  for (const cut of [1, 2, 11, 100, bytes.length - 1]) {
    assertThrows(() => readPickle(bytes.subarray(0, cut)), PickleError);
  }
  const error = assertThrows(() => readPickle(new Uint8Array([0x80, 0x02, 0x46, 0x31, 0x0a, 0x2e])), PickleError);
  assert(error.message.includes("unsupported pickle opcode 0x46 'F' at byte 2"), error.message);
});

test("data yfcc-to-csv writes a manifest the CSV source reads back (captions with quotes, commas, newlines)", async () => {
  const csv = `${fixtures()}/yfcc.csv`;
  const log = console.log;
  console.log = () => {};
  try {
    assertEquals(await yfccToCsv(["--metadata", `${fixtures()}/p5.pkl`, "--root", "/data/yfcc", "--out", csv]), 0);
  } finally {
    console.log = log;
  }
  const table = readCsvTable({ path: csv });
  assertEquals(table.size, 1500);
  assertEquals(table.caption(2, 0), `t2 café 東京, "quoted" desc 2\nline two`);
  assertEquals(table.caption(3, 0), "shared title ");
  const first = Deno.readTextFileSync(csv).split("\n")[1];
  assert(first.startsWith("/data/yfcc/images/"), first);
});

// ---- YFCC15M in the official layout: images read straight from test_zip_3/<hash[:3]>.zip --------------------------
//
// Python writes the layout: JPEGs by PIL as stored, deflated and zip64 members of several zips, the same bytes
// extracted to plain files with a CSV manifest of the same captions, and a second pickle with every kind of bad
// record (a member missing from its zip, a missing zip, a truncated zip, a directory where a zip should be, a
// deflated and a stored member with a flipped byte, an empty caption, an item that is not a tuple).

const ZIP_SCRIPT = String.raw`
import csv, hashlib, io, os, pickle, sys, zipfile
import numpy as np
from PIL import Image
out = sys.argv[1]
root = os.path.join(out, "yfcc")
os.makedirs(os.path.join(root, "test_zip_3"))
os.makedirs(os.path.join(out, "extracted"))

def jpeg(k):
    h, w = 30 + 3 * k, 40 + 5 * (k % 4)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([(x * 7 + k * 13) % 256, (y * 5 + k * 29) % 256, ((x + y) * 3 + k * 41) % 256], -1)
    b = io.BytesIO()
    Image.fromarray(a.astype(np.uint8), "RGB").save(b, "JPEG", quality=90)
    return b.getvalue()

def hash_of(prefix, k):
    return prefix + hashlib.md5(str(k).encode()).hexdigest()[3:]

def member(h):
    return "data/images/%s/%s/%s.jpg" % (h[:3], h[3:6], h)

zips = {}  # prefix -> [(name, data, method, zip64)]
def add(prefix, h, data, method, zip64=False):
    zips.setdefault(prefix, []).append((member(h), data, method, zip64))

clean, csv_rows = [], []
plan = [("abc", zipfile.ZIP_STORED, False)] * 4 + [("d0e", zipfile.ZIP_DEFLATED, False)] * 4 + \
       [("f12", zipfile.ZIP_STORED, True), ("f12", zipfile.ZIP_DEFLATED, False)] * 2
for k, (prefix, method, zip64) in enumerate(plan):
    h = hash_of(prefix, k)
    data = jpeg(k)
    add(prefix, h, data, method, zip64)
    title = "photo %d caf\u00e9" % k
    desc = "" if k % 3 == 0 else "a description, with a comma %d" % k
    clean.append((k, h, title, desc))
    path = os.path.join(out, "extracted", "%d.jpg" % k)
    with open(path, "wb") as f:
        f.write(data)
    csv_rows.append((path, title + " " + desc))

bad = []
h = hash_of("abc", 100); bad.append((100, h, "member missing", "from its zip"))            # not added to abc.zip
h = hash_of("aaa", 101); bad.append((101, h, "zip", "missing"))                             # no aaa.zip
h = hash_of("aaa", 102); bad.append((102, h, "zip", "missing too"))
h = hash_of("bbb", 103); add("bbb", h, jpeg(3), zipfile.ZIP_STORED); bad.append((103, h, "zip", "truncated"))
h = hash_of("c0c", 104); add("c0c", h, jpeg(4), zipfile.ZIP_DEFLATED); bad.append((104, h, "corrupt", "deflated member"))
h = hash_of("c0c", 105); add("c0c", h, jpeg(5), zipfile.ZIP_STORED); bad.append((105, h, "corrupt", "stored member"))
h = hash_of("abc", 106); add("abc", h, jpeg(6), zipfile.ZIP_STORED); bad.append((106, h, "", ""))  # caption " "
h = hash_of("ddd", 107); bad.append((107, h, "zip is", "a directory"))
os.makedirs(os.path.join(root, "test_zip_3", "ddd.zip"))
bad.append("not a tuple")

for prefix, members in zips.items():
    path = os.path.join(root, "test_zip_3", prefix + ".zip")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data/README.txt", b"not an image")
        for name, data, method, zip64 in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            with z.open(info, "w", force_zip64=zip64) as f:
                f.write(data)

def flip(prefix, h):
    path = os.path.join(root, "test_zip_3", prefix + ".zip")
    info = zipfile.ZipFile(path).getinfo(member(h))
    blob = bytearray(open(path, "rb").read())
    o = info.header_offset
    start = o + 30 + int.from_bytes(blob[o + 26:o + 28], "little") + int.from_bytes(blob[o + 28:o + 30], "little")
    blob[start + info.compress_size // 2] ^= 0x55
    open(path, "wb").write(bytes(blob))
flip("c0c", hash_of("c0c", 104))
flip("c0c", hash_of("c0c", 105))
bbb = os.path.join(root, "test_zip_3", "bbb.zip")
blob = open(bbb, "rb").read()
open(bbb, "wb").write(blob[: len(blob) - 40])

with open(os.path.join(out, "clean.pkl"), "wb") as f:
    pickle.dump(clean, f, protocol=4)
dirty = []
for k, row in enumerate(clean):
    dirty.append(row)
    if k < len(bad):
        dirty.append(bad[k])
with open(os.path.join(out, "dirty.pkl"), "wb") as f:
    pickle.dump(dirty, f, protocol=4)
with open(os.path.join(out, "clean.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["filepath", "title"])
    w.writerows(csv_rows)
`;

const noZipTools = noPython || missingTool("the native library and python3 with PIL and numpy", nativeOrPilMissing());

let zipDir: string | null = null;
function zipFixtures(): string {
  if (zipDir === null) {
    zipDir = Deno.makeTempDirSync({ prefix: "dc_yfcc_zip_test_" });
    const out = new Deno.Command(PYTHON, { args: ["-c", ZIP_SCRIPT, zipDir], stderr: "piped" }).outputSync();
    if (!out.success) throw new Error(`zip fixtures failed:\n${new TextDecoder().decode(out.stderr)}`);
    globalThis.addEventListener("unload", () => Deno.removeSync(zipDir!, { recursive: true }));
  }
  return zipDir;
}

function zipTest(name: string, fn: () => void | Promise<void>): void {
  Deno.test({ name: `yfcc zips: ${name}`, ignore: noZipTools, fn });
}

const CLEAN_CAPTIONS = Array.from(
  { length: 12 },
  (_, k) => `photo ${k} café ` + (k % 3 === 0 ? "" : `a description, with a comma ${k}`),
);

let zipTokenizer: ClipTokenizer | null = null;
function tokenizer(): ClipTokenizer {
  zipTokenizer ??= new ClipTokenizer(trainBpe([...CLEAN_CAPTIONS, "member missing zip corrupt"], 560));
  return zipTokenizer;
}

function floats(t: Tensor): Float32Array {
  return t.toTypedArray() as Float32Array;
}

function sameFloats(a: Float32Array, b: Float32Array, what: string): void {
  assertEquals(a.length, b.length, `${what}: length`);
  const i = a.findIndex((x, k) => x !== b[k]);
  assert(i < 0, `${what}: element ${i} is ${a[i]}, expected ${b[i]}`);
}

zipTest("the clean layout indexes in metadata order with title + ' ' + desc captions", () => {
  const dir = zipFixtures();
  const table = readYfccTable({ metadata: `${dir}/clean.pkl`, root: `${dir}/yfcc` });
  assertEquals(table.size, 12);
  assertEquals(table.indexSkips.snapshot(), {});
  assertEquals(Array.from({ length: 12 }, (_, i) => table.caption(i, 0)), CLEAN_CAPTIONS);
  const kinds = Array.from({ length: 12 }, (_, i) => table.image(i).member!.deflated ? "deflated" : "stored");
  assertEquals(kinds.filter((k) => k === "deflated").length, 6, kinds.join(","));
  assert(table.image(0).path.endsWith("/yfcc/test_zip_3/abc.zip"), table.image(0).path);
});

zipTest(
  "stored, deflated and zip64 members give the same batches as the extracted files through --dataset csv",
  async () => {
    const dir = zipFixtures();
    const before = liveTensors();
    const common = { tokenizer: tokenizer(), imageSize: 24, views: 2 as const, seed: 3, threads: 2, contextLength: 20 };
    const fromZips = yfccTrainSource({ ...common, metadata: `${dir}/clean.pkl`, root: `${dir}/yfcc` });
    const fromFiles = csvTrainSource({ ...common, path: `${dir}/clean.csv` });
    try {
      for (const [epoch, index] of [[0, 0], [0, 1], [0, 2], [1, 0]]) {
        const a = await fromZips.batchAsync(epoch, index, 4, { rank: 0, world: 1 }, "cpu");
        const b = fromFiles.batch(epoch, index, 4, { rank: 0, world: 1 }, "cpu");
        sameFloats(floats(a.u), floats(b.u), `u of (${epoch}, ${index})`);
        sameFloats(floats(a.v!), floats(b.v!), `v of (${epoch}, ${index})`);
        assertEquals(Array.from(a.text.toArray()), Array.from(b.text.toArray()), `text of (${epoch}, ${index})`);
        assertEquals(fromZips.lastSamples(), fromFiles.lastSamples());
        for (const t of [a.u, a.v!, a.text, b.u, b.v!, b.text]) t.dispose();
      }
      assertEquals(fromZips.skipped(), {}, "a clean layout skips nothing");
    } finally {
      fromZips.close();
      fromFiles.close();
    }
    assertEquals(liveTensors(), before, "live tensor handles");
  },
);

zipTest("missing member, missing or unreadable zip, truncated zip and bad records are counted per sample", () => {
  const dir = zipFixtures();
  const table = readYfccTable({ metadata: `${dir}/dirty.pkl`, root: `${dir}/yfcc` });
  assertEquals(table.indexSkips.snapshot(), {
    caption_empty: 1,
    yfcc_not_a_tuple: 1,
    zip_corrupt: 1,
    zip_member_missing: 1,
    zip_missing: 2,
    zip_unreadable: 1,
  });
  // The 12 clean samples and the two corrupt members (found only when read).
  assertEquals(table.size, 14);
});

zipTest("a deflated and a stored member with a flipped byte are zip_member_corrupt; batches stay full", () => {
  const dir = zipFixtures();
  const table = readYfccTable({ metadata: `${dir}/dirty.pkl`, root: `${dir}/yfcc` });
  const corrupt = Array.from({ length: table.size }, (_, i) => i).filter((i) =>
    (table.caption(i, 0) as string).startsWith("corrupt")
  );
  assertEquals(corrupt.length, 2);
  const before = liveTensors();
  {
    using loader = new NativeLoader({ threads: 2, imageSize: 16, views: 1, mode: "eval" });
    const result = loader.run({
      candidates: Array.from({ length: table.size }, (_, i) => ({ ...table.image(i), index: i })),
      slotBegin: Array.from({ length: table.size + 1 }, (_, i) => i),
      seed: 0,
      rank: 0,
      epoch: 0,
    });
    result.u.dispose();
    const expected = Array.from({ length: table.size }, (_, i) => corrupt.includes(i) ? "zip_member_corrupt" : "ok");
    assertEquals(result.status.map((s) => s === 0 ? "ok" : imageSkipReason(s)), expected);
  }
  const source = yfccTrainSource({
    metadata: `${dir}/dirty.pkl`,
    root: `${dir}/yfcc`,
    tokenizer: tokenizer(),
    imageSize: 16,
    threads: 2,
    contextLength: 16,
  });
  try {
    for (let epoch = 0; epoch < 2; epoch++) {
      for (let index = 0; index < Math.floor(source.epochSize / 7); index++) {
        const batch = source.batch(epoch, index, 7, { rank: 0, world: 1 }, "cpu");
        assertEquals(batch.u.shape, [7, 3, 16, 16], "the batch is full");
        for (const s of source.lastSamples()) assert(!corrupt.includes(s), `corrupt member ${s} reached a batch`);
        for (const t of [batch.u, batch.v!, batch.text]) t.dispose();
      }
    }
    const skipped = source.skipped();
    // Each epoch draws both corrupt members as primaries; the index-time skips are counted once.
    assert(skipped.zip_member_corrupt >= 4, JSON.stringify(skipped));
    assertEquals(skipped.zip_missing, 2);
  } finally {
    source.close();
  }
  assertEquals(liveTensors(), before, "live tensor handles");
});

zipTest("native member checks: an unknown size inflates, a wrong size or CRC-32 is corrupt, a bad header too", () => {
  const dir = zipFixtures();
  const path = `${dir}/yfcc/test_zip_3/d0e.zip`;
  using archive = new ZipArchive(path);
  const entry = [...archive.entries.values()].find((e) => e.method === ZIP_DEFLATED)!;
  const data = archive.dataOffset(entry);
  const jpeg = archive.read(entry);
  Deno.writeFileSync(`${dir}/member.jpg`, jpeg);
  const base = { path, index: 0 };
  const member = { zipLocalHeader: true, deflated: true, size: entry.size, crc32: entry.crc32 };
  const cases: [string, ImageRef, string][] = [
    ["local header", { ...base, offset: entry.localHeaderOffset, length: entry.compressedSize, member }, "ok"],
    [
      "data offset, size and CRC unknown",
      {
        ...base,
        offset: data,
        length: entry.compressedSize,
        member: { ...member, zipLocalHeader: false, size: -1, crc32: -1 },
      },
      "ok",
    ],
    ["size + 1", {
      ...base,
      offset: entry.localHeaderOffset,
      length: entry.compressedSize,
      member: { ...member, size: entry.size + 1 },
    }, "zip_member_corrupt"],
    ["size - 1", {
      ...base,
      offset: entry.localHeaderOffset,
      length: entry.compressedSize,
      member: { ...member, size: entry.size - 1 },
    }, "zip_member_corrupt"],
    ["wrong CRC-32", {
      ...base,
      offset: entry.localHeaderOffset,
      length: entry.compressedSize,
      member: { ...member, crc32: (entry.crc32 ^ 1) >>> 0 },
    }, "zip_member_corrupt"],
    [
      "stream cut short",
      { ...base, offset: entry.localHeaderOffset, length: entry.compressedSize - 20, member },
      "zip_member_corrupt",
    ],
    ["not a local header", { ...base, offset: data, length: entry.compressedSize, member }, "zip_member_corrupt"],
    ["size over the byte limit", {
      ...base,
      offset: entry.localHeaderOffset,
      length: entry.compressedSize,
      member: { ...member, size: 1 << 30 },
    }, "image_too_large"],
    ["past the end", { ...base, offset: Deno.statSync(path).size - 10, length: 100, member }, "image_truncated"],
    ["the extracted file", { path: `${dir}/member.jpg`, index: 0 }, "ok"],
  ];
  const before = liveTensors();
  {
    using loader = new NativeLoader({ threads: 1, imageSize: 16, views: 1, mode: "eval", maxBytes: 1 << 20 });
    const result = loader.run({
      candidates: cases.map(([, ref]) => ref),
      slotBegin: cases.map((_, i) => i).concat([cases.length]),
      seed: 0,
      rank: 0,
      epoch: 0,
    });
    const outcome = result.status.map((s) => s === 0 ? "ok" : imageSkipReason(s));
    cases.forEach(([what, , expected], i) => assertEquals(outcome[i], expected, what));
    const u = floats(result.u);
    const plane = 3 * 16 * 16;
    sameFloats(u.subarray(0, plane), u.subarray(9 * plane, 10 * plane), "member pixels = extracted file pixels");
    sameFloats(u.subarray(plane, 2 * plane), u.subarray(9 * plane, 10 * plane), "unknown size inflates the same");
    result.u.dispose();
    // A method or flag the ABI does not know is a programming error, refused at submit.
    assertThrows(
      () =>
        loader.submit({
          candidates: [{ ...base, member: { ...member, crc32: 2 ** 32 } }],
          slotBegin: [0, 1],
          seed: 0,
          rank: 0,
          epoch: 0,
        }),
      Error,
      ["crc32"],
    );
  }
  assertEquals(liveTensors(), before, "live tensor handles");
});

zipTest("deno task train --dataset yfcc15m reads the official layout and counts the skips", () => {
  const dir = zipFixtures();
  writeMerges(`${dir}/bpe.txt`, trainBpe(CLEAN_CAPTIONS, 600));
  const main = new URL("../cli/main.ts", import.meta.url).pathname;
  const args = ["run", "--allow-all", "--unstable-ffi", main, "train", "--dataset", "yfcc15m", "--metadata"];
  args.push(`${dir}/dirty.pkl`, "--root", `${dir}/yfcc`, "--bpe", `${dir}/bpe.txt`, "--batch-size", "4");
  args.push("--max-steps", "2", "--print-freq", "1", "--threads", "1", "--output-dir", `${dir}/run`);
  const result = new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped" }).outputSync();
  const out = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
  assertEquals(result.code, 0, out);
  const skipped = /skipped samples: (.*)/.exec(out)?.[1] ?? "";
  for (
    const reason of ["zip_missing 2", "zip_member_missing 1", "zip_corrupt 1", "zip_unreadable 1", "caption_empty 1"]
  ) {
    assert(skipped.includes(reason), `'${reason}' not in the skip line:\n${out}`);
  }
  const summary = JSON.parse(Deno.readTextFileSync(`${dir}/run/summary.json`));
  assertEquals(summary.steps, 2);
  assert(Number.isFinite(summary.loss_last), JSON.stringify(summary));
});
