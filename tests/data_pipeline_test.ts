// data_pipeline_test.ts: the native image pipeline (native/src/data.cpp through src/data/loader.ts) and the file
// sources (CSV, webdataset, COCO). References come from elsewhere: PIL decodes and transforms (tests/data_fixtures.py,
// the library the official torchvision pipeline runs on), the source pixels of hand-written PNGs, and torchvision's
// RandomResizedCrop.get_params re-run in Python. Every fixture is generated into a temporary folder by that script;
// nothing binary is committed. The tests are skipped with a message when the native library or python3 with PIL and
// numpy is missing.
import {
  CAPTION_EXTENSIONS,
  expandBraces,
  listTar,
  readWebDatasetTable,
  splitKey,
  webDatasetTrainSource,
} from "../src/data/webdataset.ts";
import { csvTrainSource, parseDelimited, readCsvTable } from "../src/data/csv.ts";
import { cocoTrainSource, readCocoTable } from "../src/data/coco.ts";
import {
  type AugmentOptions,
  cropParams,
  decodeImage,
  type FileTrainSource,
  imageSkipReason,
  NativeLoader,
  SkipCounter,
} from "../src/data/loader.ts";
import { ClipTokenizer } from "../src/data/tokenizer.ts";
import { trainBpe } from "../src/data/bpe_trainer.ts";
import { liveTensors, type Tensor } from "../src/torch/mod.ts";
import { codes } from "../src/torch/symbols.ts";
import { assert, assertClose, assertEquals, assertThrows, missingTool, nativeOrPilMissing } from "./helpers.ts";

// ---- environment and fixtures ------------------------------------------------------------------------------------

const PYTHON = "/usr/bin/python3";
const SCRIPT = new URL("./data_fixtures.py", import.meta.url).pathname;

const cannotRun = missingTool("the native library and python3 with PIL and numpy", nativeOrPilMissing());

function python(args: string[]): void {
  const result = new Deno.Command(PYTHON, { args: [SCRIPT, ...args], stdout: "piped", stderr: "piped" }).outputSync();
  if (!result.success) {
    throw new Error(`data_fixtures.py ${args[0]} failed:\n${new TextDecoder().decode(result.stderr)}`);
  }
}

let fixtureDir: string | null = null;
/** The fixture folder, made once per test run. */
function fx(...parts: string[]): string {
  if (fixtureDir === null) {
    fixtureDir = Deno.makeTempDirSync({ prefix: "dc_data_test_" });
    python(["make", fixtureDir]);
    globalThis.addEventListener("unload", () => Deno.removeSync(fixtureDir!, { recursive: true }));
  }
  return [fixtureDir, ...parts].join("/");
}

function test(name: string, fn: () => void | Promise<void>): void {
  Deno.test({ name: `data: ${name}`, ignore: cannotRun, fn });
}

/** Checks that fn leaves no tensor handle behind. */
async function noLeaks(fn: () => void | Promise<void>): Promise<void> {
  const before = liveTensors();
  await fn();
  assertEquals(liveTensors(), before, "live tensor handles after the test body");
}

function floats(t: Tensor): Float32Array {
  return t.toTypedArray() as Float32Array;
}

function sameBytes(a: ArrayLike<number>, b: ArrayLike<number>, message: string): void {
  assertEquals(a.length, b.length, `${message}: length`);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) throw new Error(`${message}: element ${i} is ${a[i]}, expected ${b[i]}`);
  }
}

let tokenizerOnce: ClipTokenizer | null = null;
function tokenizer(): ClipTokenizer {
  tokenizerOnce ??= new ClipTokenizer(trainBpe(["a photo of pattern number", "caption good bad"], 540));
  return tokenizerOnce;
}

const NO_AUGMENT: Partial<AugmentOptions> = { jitterP: 0, grayP: 0, blurP: 0, solarizeP: 0 };

// ---- decoding ------------------------------------------------------------------------------------------------------

test("JPEG (4:2:0, 4:4:4, progressive, grayscale, CMYK), WebP and PNG decode exactly as PIL does", () => {
  for (
    const name of [
      "rgb.jpg",
      "rgb444.jpg",
      "prog.jpg",
      "gray.jpg",
      "cmyk.jpg",
      "lossless.webp",
      "lossy.webp",
      "rgb.png",
    ]
  ) {
    const result = decodeImage(Deno.readFileSync(fx(name)));
    assert(!("skip" in result), `${name}: ${"skip" in result ? result.skip : ""}`);
    assertEquals([result.width, result.height], [67, 45], `${name} size`);
    // Same libjpeg-turbo, same IDCT and upsampling defaults: bit-identical, not merely close.
    sameBytes(result.pixels, Deno.readFileSync(fx(name + ".rgb")), name);
  }
});

test("palette, low-bit, 16-bit, gray+alpha and RGBA PNGs become RGB8 (alpha dropped or composited on black)", () => {
  for (const name of ["pal4.png", "gray2.png", "gray16.png", "rgb16.png", "rgba8.png", "la8.png", "rgba16.png"]) {
    const bytes = Deno.readFileSync(fx(name));
    const dropped = decodeImage(bytes);
    assert(!("skip" in dropped), `${name}: ${"skip" in dropped ? dropped.skip : ""}`);
    assertEquals([dropped.width, dropped.height], [13, 7], `${name} size`);
    sameBytes(dropped.pixels, Deno.readFileSync(fx(name + ".rgb")), `${name} (alpha dropped)`);
    let black: string;
    try {
      black = fx(name + ".black.rgb");
      Deno.statSync(black);
    } catch {
      continue; // no alpha: nothing to composite
    }
    const composited = decodeImage(bytes, { alpha: "black" });
    assert(!("skip" in composited), name);
    sameBytes(composited.pixels, Deno.readFileSync(black), `${name} (composited on black)`);
  }
});

const BAD_BYTES: [string, string, number][] = [
  ["empty.jpg", "image_empty", codes.IMG_EMPTY],
  ["trunc.jpg", "image_truncated", codes.IMG_TRUNCATED],
  ["corrupt.jpg", "image_corrupt", codes.IMG_CORRUPT],
  ["trunc.png", "image_truncated", codes.IMG_TRUNCATED],
  ["corrupt.png", "image_corrupt", codes.IMG_CORRUPT],
  ["trunc.webp", "image_truncated", codes.IMG_TRUNCATED],
  ["text.jpg", "image_unsupported", codes.IMG_UNSUPPORTED],
  ["anim.gif", "image_unsupported", codes.IMG_UNSUPPORTED],
  ["bomb.png", "image_too_large", codes.IMG_TOO_LARGE],
  ["bomb.jpg", "image_too_large", codes.IMG_TOO_LARGE],
];

test("every kind of bad bytes is a reason, not a crash; the pixel limit is checked on the header", () => {
  for (const [name, reason] of BAD_BYTES) {
    const result = decodeImage(Deno.readFileSync(fx(name)));
    assertEquals("skip" in result ? result.skip : "decoded", reason, name);
  }
  // A real image over a (small) limit, and the same image under it.
  assertEquals(decodeImage(Deno.readFileSync(fx("rgb.png")), { maxPixels: 67 * 45 - 1 }), { skip: "image_too_large" });
  assert(!("skip" in decodeImage(Deno.readFileSync(fx("rgb.png")), { maxPixels: 67 * 45 })), "at the limit decodes");
});

test("loader: a bad candidate is skipped with its reason and the slot takes the next one", async () => {
  await noLeaks(() => {
    const bad: [string, number][] = [
      ...BAD_BYTES.map(([name, _reason, code]): [string, number] => [name, code]),
      ["dir.jpg", codes.IMG_UNREADABLE],
      ["missing.jpg", codes.IMG_MISSING],
    ];
    for (const threads of [1, 3]) {
      using loader = new NativeLoader({ threads, imageSize: 16, views: 2 });
      const candidates = bad.flatMap(([name], k) => [
        { path: fx(name), index: k },
        { path: fx("images", `img_${String(k % 12).padStart(2, "0")}.${k % 2 === 0 ? "png" : "jpg"}`), index: 100 + k },
      ]);
      const slotBegin = bad.map((_, k) => 2 * k).concat([2 * bad.length]);
      const result = loader.run({ candidates, slotBegin, seed: 1, rank: 0, epoch: 0 });
      try {
        bad.forEach(([name, code], k) => {
          assertEquals(result.status[2 * k], code, `${name} status (${imageSkipReason(result.status[2 * k])})`);
          // With one worker the replacement runs right after the failure: a decoder left broken by it would show here.
          assertEquals(result.status[2 * k + 1], codes.IMG_OK, `${name}: the replacement decodes (${threads} workers)`);
          assertEquals(result.used[k], 2 * k + 1, `${name}: its slot holds the replacement`);
        });
        assertEquals(result.u.shape, [bad.length, 3, 16, 16]);
        assert(floats(result.u).every(Number.isFinite), "finite pixels");
      } finally {
        result.u.dispose();
        result.v?.dispose();
      }
      // A slot whose whole chain fails is reported unfilled and zeroed; an empty chain leaves the slot untouched.
      const again = loader.run({
        candidates: [{ path: fx("trunc.jpg"), index: 0 }, { path: fx("missing.jpg"), index: 1 }],
        slotBegin: [0, 2, 2],
        seed: 1,
        rank: 0,
        epoch: 0,
      });
      try {
        assertEquals(again.used, [-1, -1]);
        assertEquals(again.status, [codes.IMG_TRUNCATED, codes.IMG_MISSING]);
        assert(floats(again.u).subarray(0, 3 * 16 * 16).every((x) => x === 0), "unfilled slot is zeroed");
      } finally {
        again.u.dispose();
        again.v?.dispose();
      }
    }
  });
});

test("loader: ids are checked (a closed loader or an unknown job is an error, not a crash)", () => {
  const loader = new NativeLoader({ threads: 1, imageSize: 8, views: 1 });
  assertThrows(() => loader.collect({ id: 999n, batch: 1, count: 0 }), Error, ["no job 999"]);
  loader.close();
  loader.close(); // idempotent
  assertThrows(() => loader.submit({ candidates: [], slotBegin: [0, 0], seed: 0, rank: 0, epoch: 0 }), Error, [
    "close",
  ]);
  assertThrows(() => new NativeLoader({ threads: 1, imageSize: 8, augment: { jitterP: 2 } }), Error, ["jitter p"]);
});

// ---- transforms against PIL ----------------------------------------------------------------------------------------

interface RefJob {
  path: string;
  size: number;
  kind: "train" | "eval";
  box?: number[];
  ops?: [string, number][];
}

function pilReference(jobs: RefJob[]): Float32Array {
  const dir = Deno.makeTempDirSync({ prefix: "dc_ref_" });
  try {
    Deno.writeTextFileSync(`${dir}/jobs.json`, JSON.stringify(jobs));
    python(["ref", `${dir}/jobs.json`, `${dir}/out.bin`]);
    const bytes = Deno.readFileSync(`${dir}/out.bin`);
    return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

const fixed = (op: Partial<AugmentOptions>): Partial<AugmentOptions> => ({
  ...NO_AUGMENT,
  jitterP: 1,
  brightness: [1, 1],
  contrast: [1, 1],
  saturation: [1, 1],
  hue: [0, 0],
  ...op,
});

test("train transform: each op at fixed parameters equals torchvision on PIL, bit for bit", async () => {
  await noLeaks(() => {
    const size = 32;
    const cases: { name: string; augment: Partial<AugmentOptions>; ops: [string, number][] }[] = [
      { name: "RandomResizedCrop (bicubic)", augment: NO_AUGMENT, ops: [] },
      { name: "brightness 1.3", augment: fixed({ brightness: [1.3, 1.3] }), ops: [["brightness", 1.3]] },
      { name: "brightness 0.7", augment: fixed({ brightness: [0.7, 0.7] }), ops: [["brightness", 0.7]] },
      { name: "contrast 0.65", augment: fixed({ contrast: [0.65, 0.65] }), ops: [["contrast", 0.65]] },
      { name: "contrast 1.35", augment: fixed({ contrast: [1.35, 1.35] }), ops: [["contrast", 1.35]] },
      { name: "saturation 1.2", augment: fixed({ saturation: [1.2, 1.2] }), ops: [["saturation", 1.2]] },
      { name: "hue +0.07", augment: fixed({ hue: [0.07, 0.07] }), ops: [["hue", 0.07]] },
      { name: "hue -0.093", augment: fixed({ hue: [-0.093, -0.093] }), ops: [["hue", -0.093]] },
      { name: "grayscale", augment: { ...NO_AUGMENT, grayP: 1 }, ops: [["gray", 0]] },
      { name: "blur 0.1", augment: { ...NO_AUGMENT, blurP: 1, blurSigma: [0.1, 0.1] }, ops: [["blur", 0.1]] },
      { name: "blur 1.37", augment: { ...NO_AUGMENT, blurP: 1, blurSigma: [1.37, 1.37] }, ops: [["blur", 1.37]] },
      { name: "blur 2", augment: { ...NO_AUGMENT, blurP: 1, blurSigma: [2, 2] }, ops: [["blur", 2]] },
      { name: "solarize 128", augment: { ...NO_AUGMENT, solarizeP: 1 }, ops: [["solarize", 128]] },
    ];
    const images = ["rgb.png", "images/img_04.png", "images/img_10.png"];
    const ours: Float32Array[] = [];
    const jobs: RefJob[] = [];
    for (const c of cases) {
      using loader = new NativeLoader({ threads: 2, imageSize: size, views: 2, augment: c.augment });
      const candidates = images.map((name, k) => ({ path: fx(name), index: k }));
      const result = loader.run({ candidates, slotBegin: [0, 1, 2, 3], seed: 7, rank: 0, epoch: 3 });
      for (const t of [result.u, result.v!]) {
        ours.push(floats(t));
        t.dispose();
      }
      for (const at of [codes.INFO_U_TOP, codes.INFO_V_TOP]) {
        images.forEach((name, b) => {
          const box = Array.from(
            result.info.subarray(b * codes.INFO_STRIDE + at, b * codes.INFO_STRIDE + at + 4),
            Number,
          );
          jobs.push({ path: fx(name), size, kind: "train", box, ops: c.ops });
        });
      }
    }
    const reference = pilReference(jobs);
    const per = images.length * 3 * size * size;
    ours.forEach((mine, k) => {
      const name = cases[Math.floor(k / 2)].name + (k % 2 === 0 ? " (u)" : " (v)");
      assertClose(mine, reference.subarray(k * per, (k + 1) * per), { atol: 0, rtol: 0, message: name });
    });
  });
});

test("eval transform (Resize shorter side bilinear, CenterCrop, Normalize) equals torchvision on PIL", async () => {
  await noLeaks(() => {
    const names = [
      "rgb.png",
      "tall.png",
      ...[0, 2, 4, 6, 8, 10].map((k) => `images/img_${String(k).padStart(2, "0")}.png`),
    ];
    // 30 is img_00's shorter side: no resize at all, only the crop.
    for (const size of [24, 30, 33]) {
      using loader = new NativeLoader({ threads: 2, imageSize: size, views: 1, mode: "eval" });
      const result = loader.run({
        candidates: names.map((name, k) => ({ path: fx(name), index: k })),
        slotBegin: names.map((_, k) => k).concat([names.length]),
        seed: 0,
        rank: 0,
        epoch: 0,
      });
      const mine = floats(result.u);
      result.u.dispose();
      const reference = pilReference(names.map((name) => ({ path: fx(name), size, kind: "eval" })));
      assertClose(mine, reference, { atol: 0, rtol: 0, message: `eval at ${size}` });
    }
  });
});

test("eval of a 1 x 20000 sliver computes only the center crop (not 224 x 4.5M pixels)", async () => {
  await noLeaks(() => {
    using loader = new NativeLoader({ threads: 1, imageSize: 224, views: 1, mode: "eval" });
    const started = performance.now();
    const result = loader.run({
      candidates: [{ path: fx("sliver.png"), index: 0 }],
      slotBegin: [0, 1],
      seed: 0,
      rank: 0,
      epoch: 0,
    });
    const seconds = (performance.now() - started) / 1000;
    result.u.dispose();
    assertEquals(result.used, [0]);
    assertEquals(Number(result.info[codes.INFO_U_HEIGHT]), 224 * 20000, "resized height");
    assert(seconds < 2, `took ${seconds.toFixed(2)} s`);
  });
});

test("JPEG DCT scaling decodes a large image at a reduced size, close to the full-size result", async () => {
  await noLeaks(() => {
    const size = 64;
    const run = (dctScaling: boolean): { pixels: Float32Array; decoded: number[] } => {
      using loader = new NativeLoader({ threads: 1, imageSize: size, views: 1, mode: "eval", dctScaling });
      const result = loader.run({
        candidates: [{ path: fx("big.jpg"), index: 0 }],
        slotBegin: [0, 1],
        seed: 0,
        rank: 0,
        epoch: 0,
      });
      const pixels = floats(result.u);
      result.u.dispose();
      return {
        pixels,
        decoded: [Number(result.info[codes.INFO_DECODED_WIDTH]), Number(result.info[codes.INFO_DECODED_HEIGHT])],
      };
    };
    const scaled = run(true), full = run(false);
    // 1600 x 1200 -> eval resize to 85 x 64: 1/8 (200 x 150) is the smallest DCT scale still >= the output.
    assertEquals(scaled.decoded, [200, 150], "decoded at 1/8");
    assertEquals(full.decoded, [1600, 1200], "full size without DCT scaling");
    const reference = pilReference([{ path: fx("big.jpg"), size, kind: "eval" }]);
    assertClose(full.pixels, reference, { atol: 0, rtol: 0, message: "full-size decode equals PIL" });
    let sum = 0;
    for (let i = 0; i < reference.length; i++) sum += Math.abs(scaled.pixels[i] - reference[i]);
    const meanError = (sum / reference.length) * 0.226 * 255; // back to 8-bit levels (std ~ 0.226)
    assert(meanError < 2, `DCT-scaled eval output within 2 levels of PIL on average, got ${meanError.toFixed(2)}`);
    // For a shorter side of at least 300: 1/8 gives 200 x 150, 2/8 gives 400 x 300.
    const small = decodeImage(Deno.readFileSync(fx("big.jpg")), { minSide: 300 });
    assert(!("skip" in small), "decodes");
    assertEquals([small.width, small.height], [400, 300], "minSide 300 -> 2/8 scale");
  });
});

test("RandomResizedCrop: boxes stay in range and match torchvision's get_params statistics", () => {
  const count = 20000;
  const dir = Deno.makeTempDirSync({ prefix: "dc_crops_" });
  let reference: Record<string, { area: number; log_aspect: number; fallback: number; attempts: number }>;
  try {
    python(["crops", String(count), `${dir}/crops.json`]);
    reference = JSON.parse(Deno.readTextFileSync(`${dir}/crops.json`));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
  for (const [key, ref] of Object.entries(reference)) {
    const [width, height] = key.split("x").map(Number);
    const boxes = cropParams(width, height, count, { seed: 11 });
    let area = 0, logAspect = 0, fallback = 0, attempts = 0;
    for (const b of boxes) {
      assert(b.top >= 0 && b.left >= 0 && b.top + b.height <= height && b.left + b.width <= width, `${key} in bounds`);
      assert(b.width > 0 && b.height > 0, `${key} non-empty`);
      if (b.attempt > 0) {
        // w = round(sqrt(A r)), h = round(sqrt(A / r)) with A/area in [0.14, 1], r in [3/4, 4/3].
        assert((b.width - 0.5) * (b.height - 0.5) <= width * height * 1.0 + 1e-9, `${key} area <= 1`);
        assert((b.width + 0.5) * (b.height + 0.5) >= width * height * 0.14 - 1e-9, `${key} area >= 0.14`);
        assert((b.width + 0.5) / Math.max(b.height - 0.5, 0.5) >= 3 / 4, `${key} ratio >= 3/4`);
        assert((b.width - 0.5) / (b.height + 0.5) <= 4 / 3, `${key} ratio <= 4/3`);
        attempts += b.attempt;
      } else {
        fallback++;
        assertEquals(
          [b.top, b.left],
          [Math.floor((height - b.height) / 2), Math.floor((width - b.width) / 2)],
          "centre",
        );
      }
      area += (b.width * b.height) / (width * height);
      logAspect += Math.log(b.width / b.height);
    }
    const accepted = count - fallback;
    // Means of bounded quantities over 20,000 draws: their standard errors are below 0.003 (area) and 0.0021 (log
    // aspect); 5 sigma on each side, doubled because the reference has its own sampling error.
    assertClose(area / count, ref.area, { atol: 0.02, rtol: 0, message: `${key} mean area fraction` });
    assertClose(logAspect / count, ref.log_aspect, { atol: 0.015, rtol: 0, message: `${key} mean log aspect` });
    assertClose(fallback / count, ref.fallback, { atol: 0.015, rtol: 0, message: `${key} fallback rate` });
    assertClose(accepted ? attempts / accepted : 0, ref.attempts, { atol: 0.05, rtol: 0, message: `${key} attempts` });
  }
  // The loader draws the same boxes as cropParams for (seed, rank 0, epoch 0, index k, view u).
  const boxes = cropParams(67, 45, 4, { seed: 5 });
  using loader = new NativeLoader({ threads: 2, imageSize: 8, views: 1, augment: NO_AUGMENT });
  const result = loader.run({
    candidates: [0, 1, 2, 3].map((k) => ({ path: fx("rgb.png"), index: k })),
    slotBegin: [0, 1, 2, 3, 4],
    seed: 5,
    rank: 0,
    epoch: 0,
  });
  result.u.dispose();
  boxes.forEach((b, k) => {
    const at = k * codes.INFO_STRIDE + codes.INFO_U_TOP;
    assertEquals(Array.from(result.info.subarray(at, at + 4), Number), [b.top, b.left, b.height, b.width], `box ${k}`);
  });
});

test("train augmentation applies each op with its probability (official p: 0.8, 0.2, 0.1, 0.2)", async () => {
  await noLeaks(() => {
    using loader = new NativeLoader({ threads: 3, imageSize: 8, views: 2 });
    const n = 600;
    const result = loader.run({
      candidates: Array.from({ length: n }, (_, k) => ({ path: fx("rgb.png"), index: k })),
      slotBegin: Array.from({ length: n + 1 }, (_, k) => k),
      seed: 3,
      rank: 1,
      epoch: 2,
    });
    result.u.dispose();
    result.v?.dispose();
    const counts = [0, 0, 0, 0];
    for (let b = 0; b < n; b++) {
      const flags = Number(result.info[b * codes.INFO_STRIDE + codes.INFO_FLAGS]);
      for (let bit = 0; bit < 4; bit++) counts[bit] += ((flags >> bit) & 1) + ((flags >> (bit + 4)) & 1);
    }
    const draws = 2 * n;
    [0.8, 0.2, 0.1, 0.2].forEach((p, bit) => {
      const sigma = Math.sqrt((p * (1 - p)) / draws);
      assertClose(counts[bit] / draws, p, { atol: 5 * sigma, rtol: 0, message: `op ${bit} frequency` });
    });
  });
});

// ---- sources -------------------------------------------------------------------------------------------------------

test("csv: quoted fields, CRLF, root-relative and absolute paths; bad rows and captions counted", () => {
  const rows = parseDelimited(new TextEncoder().encode('a,b\n"x, ""y""",2\r\n"multi\nline",3\n\n'));
  assertEquals(rows, [["a", "b"], ['x, "y"', "2"], ["multi\nline", "3"]]);
  const table = readCsvTable({ path: fx("manifest.csv") });
  assertEquals(table.size, 5);
  assertEquals(
    Array.from({ length: table.size }, (_, i) => table.caption(i, 0)),
    ["a caption, with a comma", 'she said "hi"', "line one\nline two", "absolute path", "plain caption"],
  );
  assertEquals(table.image(0).path, fx("images", "img_00.png"));
  assertEquals(table.image(3).path, fx("images", "img_06.png"));
  assertEquals(table.indexSkips.snapshot(), { caption_empty: 1, caption_invalid_utf8: 1, csv_bad_row: 1 });
  const tsv = readCsvTable({
    path: fx("tsvroot", "manifest.tsv"),
    root: fx("images"),
    imageColumn: "image",
    captionColumn: "caption",
  });
  assertEquals(tsv.size, 12);
  assertEquals(tsv.image(5).path, fx("images", "img_05.jpg"));
  assertThrows(() => readCsvTable({ path: fx("manifest.csv"), imageColumn: "image" }), Error, [
    "no column 'image'",
    "filepath",
  ]);
});

function drain(source: FileTrainSource, epoch: number, batchSize: number): number[][] {
  const batches: number[][] = [];
  const perEpoch = Math.floor(source.epochSize / batchSize);
  for (let index = 0; index < perEpoch; index++) {
    const batch = source.batch(epoch, index, batchSize, { rank: 0, world: 1 }, "cpu");
    assertEquals(batch.u.shape, [batchSize, 3, source.imageSize, source.imageSize], "batch is full");
    assertEquals(batch.text.shape, [batchSize, source.contextLength]);
    batches.push(source.lastSamples());
    batch.u.dispose();
    batch.v?.dispose();
    batch.text.dispose();
  }
  return batches;
}

test("sources: bad images and captions are skipped, counted by reason, and batches stay full", async () => {
  await noLeaks(() => {
    const source = csvTrainSource({
      path: fx("mixed.csv"),
      tokenizer: tokenizer(),
      imageSize: 16,
      threads: 2,
      seed: 4,
      contextLength: 16,
    });
    try {
      const table = source.table;
      const bad = new Set<number>();
      for (let i = 0; i < table.size; i++) if ((table.caption(i, 0) as string).startsWith("bad")) bad.add(i);
      assertEquals(bad.size, 12);
      for (let epoch = 0; epoch < 3; epoch++) {
        for (const samples of drain(source, epoch, 6)) {
          for (const s of samples) assert(!bad.has(s), `a bad sample (${s}) reached a batch`);
        }
      }
      const skipped = source.skipped();
      // Each epoch draws every sample once as a primary; replacement draws can add more of the same reasons.
      const expected = [
        "image_empty",
        "image_truncated",
        "image_corrupt",
        "image_unsupported",
        "image_too_large",
        "image_unreadable",
        "image_missing",
      ];
      for (const reason of expected) {
        assert((skipped[reason] ?? 0) >= 3, `${reason} counted: ${JSON.stringify(skipped)}`);
      }
      for (const reason of Object.keys(skipped)) assert(expected.includes(reason), `unexpected reason ${reason}`);
      // 12 bad files drawn as primaries in each of 3 epochs: at least 36 skips.
      assert(source.skips.total >= 36, `total ${source.skips.total}`);
    } finally {
      source.close();
    }
  });
});

test("sources: batches are a pure function of (seed, epoch, index), whatever the workers or prefetching", async () => {
  await noLeaks(async () => {
    const make = (threads: number, prefetch: number): FileTrainSource =>
      csvTrainSource({
        path: fx("all.csv"),
        tokenizer: tokenizer(),
        imageSize: 20,
        threads,
        prefetch,
        seed: 9,
        contextLength: 12,
      });
    const one = make(1, 0), three = make(3, 2);
    const read = async (source: FileTrainSource, epoch: number, index: number, async: boolean) => {
      const shard = { rank: 0, world: 1 };
      const batch = async
        ? await source.batchAsync(epoch, index, 4, shard, "cpu")
        : source.batch(epoch, index, 4, shard, "cpu");
      const out = { u: floats(batch.u), v: floats(batch.v!), text: Array.from(batch.text.toArray()) };
      batch.u.dispose();
      batch.v?.dispose();
      batch.text.dispose();
      return out;
    };
    try {
      // A hint for a batch two ahead (kept although prefetch is 0) must not change what it holds.
      one.prefetch(0, 2, 4, { rank: 0, world: 1 });
      const keys = [[0, 0], [0, 1], [0, 2], [1, 0], [0, 1]];
      const first: { u: Float32Array; v: Float32Array; text: number[] }[] = [];
      for (const [epoch, index] of keys) {
        const a = await read(one, epoch, index, false), b = await read(three, epoch, index, true);
        sameBytes(a.u, b.u, `u of (${epoch}, ${index})`);
        sameBytes(a.v, b.v, `v of (${epoch}, ${index})`);
        assertEquals(a.text, b.text, `text of (${epoch}, ${index})`);
        first.push(a);
      }
      sameBytes(first[4].u, first[1].u, "asking again (after other batches) gives the same batch");
      assert(first[0].u.some((x, i) => x !== first[3].u[i]), "another epoch gives other views");
      assert(first[0].u.some((x, i) => x !== first[0].v[i]), "u and v are independent draws");
      // Rank 1 of 2 sees other samples than rank 0 of 2.
      const samplesOf = (rank: number): number[] => {
        const batch = one.batch(0, 0, 2, { rank, world: 2 }, "cpu");
        for (const t of [batch.u, batch.v!, batch.text]) t.dispose();
        return one.lastSamples();
      };
      const rank0 = samplesOf(0);
      assert(samplesOf(1).every((s) => !rank0.includes(s)), "ranks do not overlap");
    } finally {
      one.close();
      three.close();
    }
  });
});

test("webdataset: brace expansion and tar keys", () => {
  assertEquals(expandBraces("shard-{000..003}.tar"), [
    "shard-000.tar",
    "shard-001.tar",
    "shard-002.tar",
    "shard-003.tar",
  ]);
  assertEquals(expandBraces("a{1..2}b{x,y}"), ["a1bx", "a1by", "a2bx", "a2by"]);
  assertEquals(expandBraces("{9..11}"), ["9", "10", "11"]);
  assertEquals(expandBraces("{3..1}"), ["3", "2", "1"]);
  assertEquals(expandBraces("x{a,{b,c}}"), ["xa", "xb", "xc"]);
  assertEquals(expandBraces("plain{}.tar"), ["plain{}.tar"]);
  assertEquals(splitKey("dir/000001.seg.png"), { key: "dir/000001", ext: "seg.png" });
  assertEquals(splitKey("000001.JPG"), { key: "000001", ext: "jpg" });
  assertEquals(splitKey("README"), null);
  assertEquals(CAPTION_EXTENSIONS, ["txt", "json"]);
});

test("webdataset: members grouped by key; no caption, no image, truncated and missing shards counted", async () => {
  await noLeaks(() => {
    const listing = listTar(fx("shard-002.tar"));
    assertEquals(listing.truncated, true);
    assertEquals(listing.members.map((m) => m.name), [
      "000000010.jpg",
      "000000010.txt",
      "000000011.jpg",
      "000000011.txt",
    ]);
    const table = readWebDatasetTable({ shards: "shard-{000..003}.tar", root: fx() });
    assertEquals(table.size, 10);
    assertEquals(table.indexSkips.snapshot(), {
      shard_missing: 1,
      tar_no_caption: 1,
      tar_no_image: 1,
      tar_truncated: 1,
    });
    const captions = Array.from({ length: table.size }, (_, i) => table.caption(i, 0));
    assertEquals(captions, [
      "caption 0",
      "caption 1",
      "caption 2",
      "caption 3",
      "caption 4",
      { skip: "caption_invalid_utf8" },
      { skip: "caption_empty" },
      "caption 9",
      "caption 10",
      "caption 11",
    ]);
    // A member decodes from its byte range exactly as the same bytes do as a file.
    const keys = [0, 1, 2, 3, 4, 7, 8, 9, 10, 11];
    using loader = new NativeLoader({ threads: 2, imageSize: 24, views: 1, mode: "eval" });
    const fromTar = loader.run({
      candidates: keys.map((_, i) => ({ ...table.image(i), index: i })),
      slotBegin: keys.map((_, i) => i).concat([keys.length]),
      seed: 0,
      rank: 0,
      epoch: 0,
    });
    const fromFiles = loader.run({
      candidates: keys.map((k, i) => ({ path: fx(`wds_${k}.bin`), index: i })),
      slotBegin: keys.map((_, i) => i).concat([keys.length]),
      seed: 0,
      rank: 0,
      epoch: 0,
    });
    assertEquals(fromTar.used, keys.map((_, i) => i), "every member decodes");
    sameBytes(floats(fromTar.u), floats(fromFiles.u), "tar members equal the standalone files");
    fromTar.u.dispose();
    fromFiles.u.dispose();
    table.close?.();

    const source = webDatasetTrainSource({
      shards: fx("shard-{000..003}.tar"),
      tokenizer: tokenizer(),
      imageSize: 16,
      threads: 2,
    });
    try {
      for (let epoch = 0; epoch < 2; epoch++) {
        for (const samples of drain(source, epoch, 5)) {
          for (const s of samples) assert(s !== 5 && s !== 6, "samples with bad captions never reach a batch");
        }
      }
      const skipped = source.skipped();
      assert(skipped.caption_invalid_utf8 >= 2 && skipped.caption_empty >= 2, JSON.stringify(skipped));
      assertEquals(skipped.tar_truncated, 1);
    } finally {
      source.close();
    }
  });
});

test("coco: captions grouped per image, one drawn per draw, bad annotations and missing images counted", async () => {
  await noLeaks(() => {
    const table = readCocoTable({ annotations: fx("coco", "captions.json"), root: fx("coco") });
    assertEquals(table.size, 3);
    assertEquals(table.image(1).path, fx("coco", "train2017", "000000000002.jpg"));
    assertEquals([table.caption(1, 0), table.caption(1, 1)], ["first of two", "second of two"]);
    assertEquals(table.indexSkips.snapshot(), { caption_empty: 1, coco_bad_annotation: 1, coco_no_caption: 1 });
    const source = cocoTrainSource({
      annotations: fx("coco", "captions.json"),
      root: fx("coco"),
      tokenizer: tokenizer(),
      imageSize: 16,
      threads: 1,
    });
    try {
      for (let epoch = 0; epoch < 4; epoch++) {
        for (const samples of drain(source, epoch, 3)) assert(!samples.includes(2), "the missing image never appears");
      }
      assert(source.skipped().image_missing >= 4, JSON.stringify(source.skipped()));
    } finally {
      source.close();
    }
  });
});

// ---- fuzzing -------------------------------------------------------------------------------------------------------

test("fuzz: thousands of mutated images and tar shards are all decoded or counted, none crashes", async () => {
  await noLeaks(() => {
    const random = ((seed: number) => () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed / 4294967296;
    })(2024);
    const pick = (n: number): number => Math.floor(random() * n);
    const mutate = (source: Uint8Array): Uint8Array => {
      const b = source.slice();
      switch (pick(4)) {
        case 0:
          for (let i = 1 + pick(8); i > 0; i--) b[pick(b.length)] = pick(256);
          return b;
        case 1:
          return b.slice(0, pick(b.length));
        case 2:
          b[pick(b.length)] ^= 1 << pick(8);
          return b;
        default: {
          const at = pick(b.length), from = pick(b.length);
          b.copyWithin(at, from, Math.min(b.length, from + 1 + pick(32)));
          return b;
        }
      }
    };
    const known = new Set(["decoded", ...Object.values(imageSkipReasonNames())]);
    const seeds = [
      "rgb.jpg",
      "prog.jpg",
      "cmyk.jpg",
      "gray.jpg",
      "rgb.png",
      "pal4.png",
      "rgba16.png",
      "lossy.webp",
      "lossless.webp",
    ].map((name) => Deno.readFileSync(fx(name)));
    const counts = new SkipCounter();
    for (let k = 0; k < 3000; k++) {
      const result = decodeImage(mutate(seeds[k % seeds.length]), { maxPixels: 4_000_000 });
      const outcome = "skip" in result ? result.skip : "decoded";
      assert(known.has(outcome), `unknown outcome ${outcome}`);
      counts.add(outcome);
    }
    assertEquals(counts.total, 3000, "every case has an outcome");
    assert(
      counts.get("decoded") > 0 && counts.get("image_corrupt") > 0 && counts.get("image_truncated") > 0,
      `${counts}`,
    );

    // The threaded path: 300 mutated files through the loader, one candidate per slot.
    const dir = Deno.makeTempDirSync({ prefix: "dc_fuzz_" });
    try {
      const expected: string[] = [];
      const paths = Array.from({ length: 300 }, (_, k) => {
        const path = `${dir}/m${k}.bin`;
        const bytes = mutate(seeds[k % seeds.length]);
        Deno.writeFileSync(path, bytes);
        const direct = decodeImage(bytes, { maxPixels: 4_000_000 });
        expected.push("skip" in direct ? direct.skip : "decoded");
        return path;
      });
      using loader = new NativeLoader({ threads: 3, imageSize: 16, views: 2, maxPixels: 4_000_000 });
      const result = loader.run({
        candidates: paths.map((path, index) => ({ path, index })),
        slotBegin: paths.map((_, k) => k).concat([paths.length]),
        seed: 1,
        rank: 0,
        epoch: 0,
      });
      result.u.dispose();
      result.v?.dispose();
      // Each file gets the verdict a fresh decoder gives it alone: no state leaks from one image to the next.
      assertEquals(result.status.map((s) => (s === 0 ? "decoded" : imageSkipReason(s))), expected, "loader verdicts");
      result.used.forEach((c, k) => assertEquals(c === k, result.status[k] === 0, `slot ${k} filled iff decoded`));

      // Mutated and truncated tar shards: indexing never throws, and whatever it lists is a valid byte range.
      const shard = Deno.readFileSync(fx("shard-001.tar"));
      for (let k = 0; k < 300; k++) {
        const path = `${dir}/s${k % 4}.tar`;
        Deno.writeFileSync(path, mutate(shard));
        const table = readWebDatasetTable({ shards: path });
        const size = Deno.statSync(path).size;
        for (let i = 0; i < table.size; i++) {
          const ref = table.image(i);
          assert(ref.offset! >= 0 && ref.offset! + ref.length! <= size, "member inside the file");
          table.caption(i, 0);
        }
        table.close?.();
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  });
});

function imageSkipReasonNames(): Record<number, string> {
  const out: Record<number, string> = {};
  for (let code = 1; code <= codes.IMG_FAILED; code++) out[code] = imageSkipReason(code);
  return out;
}
