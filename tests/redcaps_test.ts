// redcaps_test.ts: `--dataset redcaps` on annotation files written by Python's json module: the official loader's
// list of {image_id, subreddit, caption} and RedCaps' released {"info", "annotations"} files, several at once through
// a comma list and a brace pattern; images at root/<subreddit>/<image_id>.jpg written by PIL. Batches must be
// bit-equal to the same images and captions read through the CSV source (a manifest Python writes from the records
// it considers good), and every kind of bad record (missing fields, non-string caption, empty caption, invalid UTF-8
// bytes, a lone surrogate, a path-escaping subreddit) must be counted.
import { readRedCapsTable, RedCapsError, redcapsFiles, redcapsTrainSource } from "../src/data/redcaps.ts";
import { csvTrainSource } from "../src/data/csv.ts";
import { ClipTokenizer } from "../src/data/tokenizer.ts";
import { trainBpe, writeMerges } from "../src/data/bpe_trainer.ts";
import { liveTensors, type Tensor } from "../src/torch/mod.ts";
import { assert, assertEquals, assertThrows, missingTool, nativeOrPilMissing } from "./helpers.ts";

const PYTHON = "/usr/bin/python3";

const SCRIPT = String.raw`
import csv, io, json, os, sys
import numpy as np
from PIL import Image
out = sys.argv[1]

def jpeg(path, k):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    h, w = 28 + 4 * k, 36 + 3 * (k % 5)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([(x * 9 + k * 17) % 256, (y * 4 + k * 31) % 256, ((x + 2 * y) * 5 + k * 7) % 256], -1)
    Image.fromarray(a.astype(np.uint8), "RGB").save(path, "JPEG", quality=90)

good = []  # (subreddit, image_id, caption) in the order the table must hold them
def released(subreddit, year, records):
    return {"info": {"subreddit": subreddit, "year": year, "url": "https://redcaps.xyz"}, "annotations": records}

def annotation(image_id, subreddit, caption):
    return {"image_id": image_id, "author": "someone", "url": "https://i.redd.it/%s.jpg" % image_id,
            "raw_caption": caption.upper(), "caption": caption, "subreddit": subreddit, "score": 3,
            "created_utc": 1600000000.0, "permalink": "/r/x", "crosspost_parents": None}

k = 0
def image(subreddit, image_id, caption, write=True):
    global k
    if write:
        jpeg(os.path.join(out, "images", subreddit, "%s.jpg" % image_id), k)
    k += 1
    good.append((subreddit, str(image_id), caption))

official = []
for i in range(3):
    official.append({"image_id": "o%d" % i, "subreddit": "itookapicture", "caption": "my photo number %d" % i})
    image("itookapicture", "o%d" % i, "my photo number %d" % i)
with open(os.path.join(out, "list.json"), "w") as f:
    json.dump(official, f)

os.makedirs(os.path.join(out, "ann"))
pics = []
for i in range(4):
    pics.append(annotation("p%d" % i, "pics", "a picture of a red barn %d" % i))
    image("pics", "p%d" % i, "a picture of a red barn %d" % i)
with open(os.path.join(out, "ann", "pics_2020.json"), "w") as f:
    json.dump(released("pics", 2020, pics), f)

aww = [annotation(123, "aww", "a numeric image id"), annotation("gone", "aww", "its image file is missing")]
image("aww", 123, "a numeric image id")
image("aww", "gone", "its image file is missing", write=False)
aww.append(annotation("a1", "aww", "caf\u00e9 \u6771\u4eac kitten"))
image("aww", "a1", "caf\u00e9 \u6771\u4eac kitten")
with open(os.path.join(out, "ann", "aww_2021.json"), "w") as f:
    json.dump(released("aww", 2021, aww), f)

# Bad records, as raw JSON text so that one caption can hold bytes that are not UTF-8.
bad = b'{"info": {}, "annotations": [' + b", ".join([
    b'{"image_id": "b1", "subreddit": "pics"}',
    b'{"subreddit": "pics", "caption": "no id"}',
    b'{"image_id": "b3", "subreddit": null, "caption": "x"}',
    b'{"image_id": "b4", "subreddit": "pics", "caption": 5}',
    b'{"image_id": "b5", "subreddit": "pics", "caption": "   "}',
    b'{"image_id": "b6", "subreddit": "pics", "caption": "bad \xff bytes"}',
    b'{"image_id": "b7", "subreddit": "pics", "caption": "lone \\udc80 surrogate"}',
    b'{"image_id": "b8", "subreddit": "../etc", "caption": "escapes the root"}',
    b'{"image_id": "..", "subreddit": "pics", "caption": "a dot-dot id"}',
    b'"not an object"',
    b'{"image_id": "g1", "subreddit": "pics", "caption": "a good record among bad ones"}',
]) + b"]}"
image("pics", "g1", "a good record among bad ones")
with open(os.path.join(out, "ann", "bad_2022.json"), "wb") as f:
    f.write(bad)

with open(os.path.join(out, "good.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["filepath", "title"])
    for subreddit, image_id, caption in good:
        w.writerow([os.path.join(out, "images", subreddit, image_id + ".jpg"), caption])
with open(os.path.join(out, "good.json"), "w") as f:
    json.dump(good, f)
with open(os.path.join(out, "broken.json"), "w") as f:
    f.write('{"annotations": [')
with open(os.path.join(out, "info_only.json"), "w") as f:
    json.dump({"info": {"subreddit": "pics"}}, f)
`;

const cannotRun = missingTool("the native library and python3 with PIL and numpy", nativeOrPilMissing());

let dir: string | null = null;
function fixtures(): string {
  if (dir === null) {
    dir = Deno.makeTempDirSync({ prefix: "dc_redcaps_test_" });
    const out = new Deno.Command(PYTHON, { args: ["-c", SCRIPT, dir], stderr: "piped" }).outputSync();
    if (!out.success) throw new Error(`redcaps fixtures failed:\n${new TextDecoder().decode(out.stderr)}`);
    globalThis.addEventListener("unload", () => Deno.removeSync(dir!, { recursive: true }));
  }
  return dir;
}

function test(name: string, fn: () => void | Promise<void>): void {
  Deno.test({ name: `redcaps: ${name}`, ignore: cannotRun, fn });
}

/** Every annotation file of the fixtures: a comma list whose second part is a brace pattern. */
const spec = (d: string): string => `${d}/list.json,${d}/ann/{pics_2020,aww_2021,bad_2022}.json`;

function good(): [string, string, string][] {
  return JSON.parse(Deno.readTextFileSync(`${fixtures()}/good.json`));
}

let tokenizerOnce: ClipTokenizer | null = null;
function tokenizer(): ClipTokenizer {
  tokenizerOnce ??= new ClipTokenizer(trainBpe(good().map(([, , caption]) => caption), 560));
  return tokenizerOnce;
}

test("file lists: commas outside braces separate files, braces expand", () => {
  assertEquals(redcapsFiles("a.json"), ["a.json"]);
  assertEquals(redcapsFiles("a.json, b.json"), ["a.json", "b.json"]);
  assertEquals(redcapsFiles("ann/{x,y}_{2019..2020}.json,z.json"), [
    "ann/x_2019.json",
    "ann/x_2020.json",
    "ann/y_2019.json",
    "ann/y_2020.json",
    "z.json",
  ]);
  assertEquals(redcapsFiles(["a.json", "b{1,2}.json"]), ["a.json", "b1.json", "b2.json"]);
});

test("both formats index in file order; bad records are counted by reason", () => {
  const d = fixtures();
  const table = readRedCapsTable({ annotations: spec(d), root: `${d}/images` });
  const expected = good();
  assertEquals(table.size, expected.length);
  expected.forEach(([subreddit, id, caption], i) => {
    assertEquals(table.caption(i, 0), caption, `caption ${i}`);
    assertEquals(table.image(i).path, `${d}/images/${subreddit}/${id}.jpg`, `image ${i}`);
  });
  assertEquals(table.indexSkips.snapshot(), {
    caption_empty: 1,
    caption_invalid_utf8: 2,
    redcaps_bad_record: 7,
  });
  // The official list format alone.
  const official = readRedCapsTable({ annotations: `${d}/list.json`, root: `${d}/images` });
  assertEquals(official.size, 3);
  assertEquals(official.caption(2, 0), "my photo number 2");
});

test("a missing or malformed annotation file is an error naming it", () => {
  const d = fixtures();
  const root = `${d}/images`;
  assertThrows(() => readRedCapsTable({ annotations: `${d}/nope.json`, root }), RedCapsError, ["nope.json"]);
  assertThrows(() => readRedCapsTable({ annotations: `${d}/broken.json`, root }), RedCapsError, [
    "broken.json",
    "not valid JSON",
  ]);
  assertThrows(() => readRedCapsTable({ annotations: `${d}/info_only.json`, root }), RedCapsError, [
    "neither a JSON list of records nor an 'annotations' list",
  ]);
  assertThrows(() => readRedCapsTable({ annotations: " , ", root }), RedCapsError, ["no annotation files"]);
});

function floats(t: Tensor): Float32Array {
  return t.toTypedArray() as Float32Array;
}

test("batches equal the same images and captions through the CSV source; the missing image is skipped", async () => {
  const d = fixtures();
  const before = liveTensors();
  const common = { tokenizer: tokenizer(), imageSize: 20, views: 2 as const, seed: 11, threads: 2, contextLength: 16 };
  const redcaps = redcapsTrainSource({ ...common, annotations: spec(d), root: `${d}/images` });
  const csv = csvTrainSource({ ...common, path: `${d}/good.csv` });
  const gone = good().findIndex(([, id]) => id === "gone");
  try {
    for (const [epoch, index] of [[0, 0], [0, 1], [0, 2], [1, 0], [1, 2]]) {
      const a = await redcaps.batchAsync(epoch, index, 4, { rank: 0, world: 1 }, "cpu");
      const b = csv.batch(epoch, index, 4, { rank: 0, world: 1 }, "cpu");
      for (const [x, y, what] of [[a.u, b.u, "u"], [a.v!, b.v!, "v"]] as const) {
        const fx = floats(x), fy = floats(y);
        const at = fx.findIndex((value, i) => value !== fy[i]);
        assert(at < 0, `${what} of (${epoch}, ${index}): element ${at} is ${fx[at]}, expected ${fy[at]}`);
      }
      assertEquals(Array.from(a.text.toArray()), Array.from(b.text.toArray()), `text of (${epoch}, ${index})`);
      assert(!redcaps.lastSamples().includes(gone), "the sample without an image file never reaches a batch");
      for (const t of [a.u, a.v!, a.text, b.u, b.v!, b.text]) t.dispose();
    }
    const skipped = redcaps.skipped();
    assertEquals(skipped.redcaps_bad_record, 7);
    assertEquals(skipped.caption_invalid_utf8, 2);
    assert(skipped.image_missing >= 1, JSON.stringify(skipped));
    assertEquals(skipped.image_missing, csv.skipped().image_missing, "the same draws fail on both sides");
  } finally {
    redcaps.close();
    csv.close();
  }
  assertEquals(liveTensors(), before, "live tensor handles");
});

test("deno task train --dataset redcaps trains on a brace pattern of annotation files", () => {
  const d = fixtures();
  writeMerges(`${d}/bpe.txt`, trainBpe(good().map(([, , caption]) => caption), 600));
  const main = new URL("../cli/main.ts", import.meta.url).pathname;
  const args = ["run", "--allow-all", "--unstable-ffi", main, "train", "--dataset", "redcaps", "--metadata"];
  args.push(`${d}/ann/{pics_2020,aww_2021,bad_2022}.json`, "--root", `${d}/images`, "--bpe", `${d}/bpe.txt`);
  args.push("--batch-size", "4", "--max-steps", "2", "--print-freq", "1", "--threads", "1", "--output-dir", `${d}/run`);
  const result = new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped" }).outputSync();
  const out = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
  assertEquals(result.code, 0, out);
  const skipped = /skipped samples: (.*)/.exec(out)?.[1] ?? "";
  assert(skipped.includes("redcaps_bad_record 7") && skipped.includes("caption_invalid_utf8 2"), out);
  const summary = JSON.parse(Deno.readTextFileSync(`${d}/run/summary.json`));
  assertEquals(summary.steps, 2);
  assert(Number.isFinite(summary.loss_last), JSON.stringify(summary));
  // Without --root the run stops at once with a message naming the option.
  const noRoot = new Deno.Command(Deno.execPath(), {
    args: [...args.slice(0, 9), "--bpe", `${d}/bpe.txt`, "--output-dir", `${d}/run2`],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const message = new TextDecoder().decode(noRoot.stderr) + new TextDecoder().decode(noRoot.stdout);
  assert(noRoot.code !== 0 && message.includes("--dataset redcaps needs --root"), message);
});
