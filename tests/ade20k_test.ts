// ade20k_test.ts: the ADE20K segmentation-probe source (src/eval/ade20k.ts) on tiny ADEChallengeData2016-layout
// folders built here, whose label maps are derived from the images: colour blocks whose colour encodes their label.
// It checks mmseg's reduce_zero_label, that the nearest-resized labels sit exactly under the pixels of the eval-
// transformed image (a one-pixel or half-pixel shift fails it), the label resize against torchvision's
// Resize(NEAREST) + CenterCrop on PIL, that bad samples are counted and dropped (never fatal), that non-label PNGs are
// refused with a clear error, and an end-to-end segmentation probe with 150 classes on a small checkpoint's features.
import { deflateSync } from "node:zlib";
import { runEval } from "../cli/eval.ts";
import { NativeLoader } from "../src/data/loader.ts";
import { encodePng, pngChunk } from "../src/formats/png.ts";
import { IMAGENET_MEAN, IMAGENET_STD } from "../src/data/synthetic.ts";
import {
  ADE20K_CLASSES,
  type Ade20kEvalDataset,
  ade20kEvalDataset,
  ade20kRootOf,
  evalGeometry,
  reduceZeroLabel,
  resizeLabelsNearest,
} from "../src/eval/ade20k.ts";
import { DatasetError } from "../src/eval/datasets.ts";
import { loadEvalModel } from "../src/eval/model.ts";
import { extractFeatures, IGNORE_INDEX, segmentationProbe } from "../src/eval/probe.ts";
import { buildPreset } from "../src/models/build.ts";
import { liveTensors, type Tensor } from "../src/torch/mod.ts";
import { saveCheckpoint } from "../src/checkpoint/checkpoint.ts";
import { assert, assertEquals, assertThrows, missingTool, pythonModulesMissing, quietly } from "./helpers.ts";

function test(name: string, fn: () => void, options: { ignore?: boolean } = {}): void {
  Deno.test({ name, ignore: options.ignore ?? false }, () => {
    const before = liveTensors();
    fn();
    assertEquals(liveTensors(), before, "live tensors after the test");
  });
}

// The two references written by Python: torchvision's label resize, and a JPEG written by PIL.
const noTorchvision = missingTool("python3 with PIL and torchvision", pythonModulesMissing(["PIL", "torchvision"]));
const noPil = missingTool("python3 with PIL", pythonModulesMissing(["PIL"]));

// ---- fixtures -------------------------------------------------------------------------------------------------

// Raw label values and their colours: the eight corners of the RGB cube, so any two differ by 255 in some channel and
// a blend across a block edge can never pass for a block colour. The reduction is one-to-one on these (0 is the only
// one that becomes the ignore index), so equal mask values mean equal colours.
const RAW_LABELS = [0, 1, 2, 37, 99, 120, 149, 150];
const COLOURS: readonly (readonly [number, number, number])[] = [
  [0, 0, 0],
  [255, 0, 0],
  [0, 255, 0],
  [0, 0, 255],
  [255, 255, 0],
  [255, 0, 255],
  [0, 255, 255],
  [255, 255, 255],
];

/**
 * Block edges along one side: widths from a fixed sequence of 5..12 pixels, so edges fall at irregular places. Every
 * block is wider than the largest resize step used here (3.75 source pixels per output pixel), so nearest sampling
 * cannot jump over a block: a 3x3 of equal mask values then means the bilinear support holds one label only.
 */
function edges(length: number, seed: number): number[] {
  const out = [0];
  for (let k = 0; out[out.length - 1] < length; k++) out.push(out[out.length - 1] + 5 + ((seed * 7 + k * 5) % 8));
  if (length - out[out.length - 2] < 5) out.splice(out.length - 2, 1); // no sliver at the far edge
  out[out.length - 1] = length;
  return out;
}

/** A width x height image of colour blocks and its raw label map (label = the block colour's RAW_LABELS entry). */
function blockImage(width: number, height: number, seed: number): { rgb: Uint8Array; labels: Uint8Array } {
  const xs = edges(width, seed), ys = edges(height, seed + 3);
  const rgb = new Uint8Array(width * height * 3), labels = new Uint8Array(width * height);
  for (let r = 0; r + 1 < ys.length; r++) {
    for (let c = 0; c + 1 < xs.length; c++) {
      const k = (r * 3 + c * 5 + r * c + seed) % RAW_LABELS.length;
      for (let y = ys[r]; y < ys[r + 1]; y++) {
        for (let x = xs[c]; x < xs[c + 1]; x++) {
          labels[y * width + x] = RAW_LABELS[k];
          rgb.set(COLOURS[k], (y * width + x) * 3);
        }
      }
    }
  }
  return { rgb, labels };
}

/** An image of one colour and a label map of one value. */
function flatImage(width: number, height: number, raw: number): { rgb: Uint8Array; labels: Uint8Array } {
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) rgb.set([raw, 255 - raw, (raw * 7) % 256], i * 3);
  return { rgb, labels: new Uint8Array(width * height).fill(raw) };
}

/** root/images/<split>/ and root/annotations/<split>/ under a fresh temp dir. */
function layout(): { root: string; write(split: string, stem: string, image?: Uint8Array, label?: Uint8Array): void } {
  const root = Deno.makeTempDirSync({ prefix: "dc_ade20k_test_" });
  for (const split of ["training", "validation"]) {
    Deno.mkdirSync(`${root}/images/${split}`, { recursive: true });
    Deno.mkdirSync(`${root}/annotations/${split}`, { recursive: true });
  }
  return {
    root,
    write(split, stem, image, label): void {
      if (image) Deno.writeFileSync(`${root}/images/${split}/${stem}.${image[0] === 0xff ? "jpg" : "png"}`, image);
      if (label) Deno.writeFileSync(`${root}/annotations/${split}/${stem}.png`, label);
    },
  };
}

function writePair(
  l: ReturnType<typeof layout>,
  split: string,
  stem: string,
  pair: { rgb: Uint8Array; labels: Uint8Array },
  width: number,
  height: number,
): void {
  l.write(split, stem, encodePng(width, height, pair.rgb, "rgb"), encodePng(width, height, pair.labels, "gray"));
}

/** A PNG with any bit depth / colour type (encodePng writes 8-bit only): rows are unfiltered sample bytes. */
function rawPng(
  width: number,
  height: number,
  depth: number,
  colorType: number,
  rows: Uint8Array[],
  plte?: number[],
): Uint8Array {
  const header = new Uint8Array(13);
  new DataView(header.buffer).setUint32(0, width);
  new DataView(header.buffer).setUint32(4, height);
  header[8] = depth;
  header[9] = colorType;
  const raw = new Uint8Array(rows.reduce((n, r) => n + r.length + 1, 0));
  let at = 0;
  for (const row of rows) {
    raw.set(row, at + 1); // filter byte 0 (None)
    at += row.length + 1;
  }
  const parts = [
    new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk("IHDR", header),
    ...(plte ? [pngChunk("PLTE", Uint8Array.from(plte))] : []),
    pngChunk("IDAT", new Uint8Array(deflateSync(raw))),
    pngChunk("IEND", new Uint8Array(0)),
  ];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** All batches of a dataset, images back to 8-bit RGB (denormalised, (B, S, S, 3)) and the masks concatenated. */
function collect(dataset: Ade20kEvalDataset, batchSize: number): { rgb: Uint8Array[]; masks: Uint8Array } {
  const rgb: Uint8Array[] = [];
  const masks: Uint8Array[] = [];
  const side = dataset.imageSize, pixels = side * side;
  for (const batch of dataset.batches(batchSize, "cpu")) {
    const values = batch.images.toArray(); // (B, 3, S, S)
    const count = batch.images.size(0);
    batch.images.dispose();
    assertEquals(batch.masks!.length, count * pixels, "mask bytes per batch");
    masks.push(batch.masks!);
    for (let b = 0; b < count; b++) {
      const out = new Uint8Array(pixels * 3);
      for (let c = 0; c < 3; c++) {
        for (let p = 0; p < pixels; p++) {
          const v = values[(b * 3 + c) * pixels + p] * IMAGENET_STD[c] + IMAGENET_MEAN[c];
          out[p * 3 + c] = Math.round(v * 255);
        }
      }
      rgb.push(out);
    }
  }
  const all = new Uint8Array(masks.reduce((n, m) => n + m.length, 0));
  let at = 0;
  for (const m of masks) {
    all.set(m, at);
    at += m.length;
  }
  return { rgb, masks: all };
}

function python(script: string, args: string[]): { ok: boolean; text: string } | null {
  try {
    const result = new Deno.Command("/usr/bin/python3", { args: ["-c", script, ...args] }).outputSync();
    const text = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
    return { ok: result.success, text };
  } catch {
    return null; // no python3
  }
}

// ---- label convention --------------------------------------------------------------------------------------------

test("reduce_zero_label: 0 -> 255, k -> k - 1 (mmseg's formula), and values past the 150 classes -> ignore", () => {
  const raw = Uint8Array.from({ length: 256 }, (_, v) => v);
  const got = reduceZeroLabel(raw.slice());
  for (let v = 0; v < 256; v++) {
    // mmseg LoadAnnotations(reduce_zero_label=True): gt[gt == 0] = 255; gt = gt - 1; gt[gt == 254] = 255.
    let mmseg = v === 0 ? 255 : v;
    mmseg = (mmseg - 1) & 0xff;
    if (mmseg === 254) mmseg = 255;
    // mmseg leaves 151..254 as 150..253, targets no 150-class head can take; here they are ignored.
    const expected = mmseg >= 150 && mmseg !== 255 ? IGNORE_INDEX : mmseg;
    assertEquals(got[v], expected, `raw ${v}`);
  }
  assertEquals(ADE20K_CLASSES.length, 150);
  assertEquals([ADE20K_CLASSES[0], ADE20K_CLASSES[2], ADE20K_CLASSES[149]], ["wall", "sky", "flag"]);
  assertEquals(new Set(ADE20K_CLASSES).size, 150, "distinct names");
  assertEquals(ade20kRootOf("ade20k:/data/ADEChallengeData2016"), "/data/ADEChallengeData2016");
  assertEquals(ade20kRootOf("synthetic"), null);
  assertThrows(() => ade20kRootOf("ade20k:"), DatasetError, ["ade20k:ROOT"]);
});

// ---- geometry ---------------------------------------------------------------------------------------------------

// (width, height, side): downscales, upscales, no resize, and centre-crop offsets that are exact halves (x.5 goes to
// the even neighbour: 10.5 -> 10, 8.5 -> 8, 9.5 -> 10, 7.5 -> 8), plus ADE20K's typical 683 x 512 at 224.
const GEOMETRY_CASES: [number, number, number][] = [
  [105, 61, 24],
  [61, 115, 24],
  [101, 61, 24],
  [61, 110, 24],
  [683, 512, 224],
  [512, 683, 224],
  [17, 13, 24],
  [13, 29, 32],
  [24, 40, 24],
  [40, 24, 24],
  [300, 7, 16],
  [97, 97, 50],
];

test("eval geometry: torchvision's int(S * long / short) and round-half-even centre-crop offsets", () => {
  assertEquals(evalGeometry(105, 61, 24), { newWidth: 41, newHeight: 24, top: 0, left: 8 }, "17 / 2 = 8.5 -> 8");
  assertEquals(evalGeometry(61, 115, 24), { newWidth: 24, newHeight: 45, top: 10, left: 0 }, "21 / 2 = 10.5 -> 10");
  assertEquals(evalGeometry(61, 110, 24), { newWidth: 24, newHeight: 43, top: 10, left: 0 }, "19 / 2 = 9.5 -> 10");
  assertEquals(evalGeometry(683, 512, 224), { newWidth: 298, newHeight: 224, top: 0, left: 37 });
  assertEquals(evalGeometry(17, 13, 24), { newWidth: 31, newHeight: 24, top: 0, left: 4 }, "upscale, 3.5 -> 4");
});

test("label resize equals torchvision Resize(S, NEAREST) + CenterCrop(S) on a PIL 'L' image", () => {
  const dir = Deno.makeTempDirSync({ prefix: "dc_ade20k_ref_" });
  try {
    const ours: number[] = [];
    GEOMETRY_CASES.forEach(([w, h, side], k) => {
      // Every pixel distinct along both axes (mod 256), so any wrong source row or column shows.
      const labels = Uint8Array.from({ length: w * h }, (_, i) => ((i % w) * 7 + Math.floor(i / w) * 13 + k) & 0xff);
      Deno.writeFileSync(`${dir}/${k}.png`, encodePng(w, h, labels, "gray"));
      ours.push(...resizeLabelsNearest(labels, w, h, side));
    });
    const script = `
import sys, json
from PIL import Image
import torchvision.transforms as T
d, cases = sys.argv[1], json.loads(sys.argv[2])
out = bytearray()
for k, (w, h, s) in enumerate(cases):
    im = Image.open(f"{d}/{k}.png")
    assert im.mode == "L" and im.size == (w, h)
    t = T.Compose([T.Resize(s, interpolation=T.InterpolationMode.NEAREST), T.CenterCrop(s)])
    out += t(im).tobytes()
open(f"{d}/ref.bin", "wb").write(out)
print("ok")
`;
    const run = python(script, [dir, JSON.stringify(GEOMETRY_CASES)]);
    assert(
      run !== null && run.ok && run.text.trim() === "ok",
      `reference script failed:\n${run?.text ?? "no python3"}`,
    );
    const reference = Deno.readFileSync(`${dir}/ref.bin`);
    assertEquals(reference.length, ours.length, "reference length");
    let at = 0;
    for (const [w, h, side] of GEOMETRY_CASES) {
      for (let p = 0; p < side * side; p++, at++) {
        if (ours[at] !== reference[at]) {
          throw new Error(
            `${w}x${h} -> ${side}: pixel (x ${p % side}, y ${Math.floor(p / side)}) is ${ours[at]}, ` +
              `torchvision gives ${reference[at]}`,
          );
        }
      }
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}, { ignore: noTorchvision });

test("alignment: wherever a mask's 3x3 neighbourhood is one label, the eval image there has that label's colour", () => {
  const l = layout();
  try {
    const sizes: [number, number][] = [[105, 61], [61, 115], [101, 61], [61, 110], [157, 90]];
    sizes.forEach(([w, h], k) => writePair(l, "validation", `ADE_val_${k}`, blockImage(w, h, k), w, h));
    const side = 24;
    const dataset = ade20kEvalDataset({ root: l.root, split: "validation", imageSize: side });
    const { rgb, masks } = collect(dataset, 2);
    assertEquals(rgb.length, sizes.length, "images");
    assertEquals(dataset.skipped(), {}, "nothing skipped");
    const expectedMask = (colour: ArrayLike<number>): number => {
      const k = COLOURS.findIndex((c) => c.every((v, i) => Math.abs(v - colour[i]) <= 1));
      return k < 0 ? -1 : reduceZeroLabel(Uint8Array.of(RAW_LABELS[k]))[0];
    };
    let compared = 0, interior = 0;
    rgb.forEach((image, n) => {
      const mask = masks.subarray(n * side * side, (n + 1) * side * side);
      for (let y = 1; y < side - 1; y++) {
        for (let x = 1; x < side - 1; x++) {
          interior += 1;
          const m = mask[y * side + x];
          let uniform = true;
          for (let dy = -1; dy <= 1; dy++) {
            for (let dx = -1; dx <= 1; dx++) uniform &&= mask[(y + dy) * side + x + dx] === m;
          }
          if (!uniform) continue;
          compared += 1;
          const colour = image.subarray((y * side + x) * 3, (y * side + x) * 3 + 3);
          const want = expectedMask(colour);
          if (want !== m) {
            throw new Error(
              `image ${n} (${sizes[n][0]}x${
                sizes[n][1]
              }) pixel (x ${x}, y ${y}): mask ${m} over a uniform 3x3, but the ` +
                `image there is RGB (${colour.join(", ")}) -> ${want < 0 ? "a blend of blocks" : `label ${want}`}`,
            );
          }
        }
      }
    });
    // Blocks are 5..12 source pixels at 2.5-3.75 source pixels per output pixel: much of the crop is block interior.
    assert(compared > interior * 0.1, `only ${compared} of ${interior} interior pixels had a uniform 3x3 mask`);
    const values = new Set(masks);
    for (const v of values) assert(v < 150 || v === IGNORE_INDEX, `mask value ${v}`);
    assert(values.has(IGNORE_INDEX) && values.has(0) && values.has(149), `mask values ${[...values].sort()}`);
    assertEquals(dataset.imagesWithUnknownLabels(), 0);
  } finally {
    Deno.removeSync(l.root, { recursive: true });
  }
});

test("images equal the native eval transform decoded at full size (a JPEG is not DCT-scaled)", () => {
  const l = layout();
  try {
    const { rgb, labels } = blockImage(400, 300, 1);
    const png = `${l.root}/src.png`;
    Deno.writeFileSync(png, encodePng(400, 300, rgb, "rgb"));
    const run = python(
      `import sys
from PIL import Image
Image.open(sys.argv[1]).save(sys.argv[2], quality=90)
print("ok")`,
      [png, `${l.root}/images/validation/ADE_val_0.jpg`],
    );
    assert(
      run !== null && run.ok && run.text.trim() === "ok",
      `PIL failed to write the JPEG:\n${run?.text ?? "no python3"}`,
    );
    l.write("validation", "ADE_val_0", undefined, encodePng(400, 300, labels, "gray"));
    const side = 32; // 400 x 300 -> 42 x 32: the loader's default would decode this JPEG at 1/8 (50 x 38)
    const dataset = ade20kEvalDataset({ root: l.root, split: "validation", imageSize: side });
    const [batch] = [...dataset.batches(4, "cpu")];
    const ours = batch.images.toArray();
    batch.images.dispose();
    const loaderPixels = (dctScaling: boolean): number[] => {
      using loader = new NativeLoader({ threads: 1, imageSize: side, views: 1, mode: "eval", dctScaling });
      const result = loader.run({
        candidates: [{ path: `${l.root}/images/validation/ADE_val_0.jpg`, index: 0 }],
        slotBegin: [0, 1],
        seed: 0,
        rank: 0,
        epoch: 0,
      });
      const values = result.u.toArray();
      result.u.dispose();
      return values;
    };
    assertEquals(ours, loaderPixels(false), "pixels equal the full-size eval transform");
    const scaled = loaderPixels(true);
    assert(ours.some((v, i) => v !== scaled[i]), "the DCT-scaled decode differs (else this test proves nothing)");
  } finally {
    Deno.removeSync(l.root, { recursive: true });
  }
}, { ignore: noPil });

// ---- bad samples ------------------------------------------------------------------------------------------------

test("missing annotations, corrupt files and size mismatches are counted and dropped, in file-name order", () => {
  const l = layout();
  try {
    const good = (stem: string, raw: number): void => writePair(l, "training", stem, flatImage(40, 30, raw), 40, 30);
    good("a_good", 5);
    l.write("training", "b_no_annotation", encodePng(40, 30, flatImage(40, 30, 9).rgb, "rgb"));
    good("c_good", 10);
    l.write(
      "training",
      "d_corrupt_image",
      Uint8Array.of(0xff, 0xd8, 0xff, 1, 2, 3),
      encodePng(40, 30, new Uint8Array(1200)),
    );
    const truncated = encodePng(40, 30, flatImage(40, 30, 3).labels, "gray");
    l.write(
      "training",
      "e_corrupt_annotation",
      encodePng(40, 30, flatImage(40, 30, 3).rgb, "rgb"),
      truncated.subarray(0, 40),
    );
    l.write(
      "training",
      "f_size_mismatch",
      encodePng(40, 30, flatImage(40, 30, 4).rgb, "rgb"),
      encodePng(30, 40, new Uint8Array(1200)),
    );
    good("g_good", 20);
    Deno.writeTextFileSync(`${l.root}/images/training/notes.txt`, "not an image");
    const side = 16;
    const dataset = ade20kEvalDataset({ root: l.root, split: "training", imageSize: side });
    assertEquals(dataset.size, 6, "pairs (the image without annotation is not one)");
    assertEquals(dataset.entries.map((e) => e.image.split("/").pop()), [
      "a_good.png",
      "c_good.png",
      "d_corrupt_image.jpg",
      "e_corrupt_annotation.png",
      "f_size_mismatch.png",
      "g_good.png",
    ]);
    assertEquals(dataset.skipped(), { annotation_missing: 1 }, "before decoding");
    for (let pass = 0; pass < 2; pass++) {
      const { rgb, masks } = collect(dataset, 2);
      assertEquals(rgb.length, 3, "good images");
      // Each good image is one label (raw 5, 10, 20 -> 4, 9, 19), in file-name order.
      [4, 9, 19].forEach((label, n) => {
        const mask = masks.subarray(n * side * side, (n + 1) * side * side);
        assert(mask.every((v) => v === label), `image ${n}: mask should be all ${label}`);
      });
      const skipped = dataset.skipped();
      assertEquals(
        Object.values(skipped).reduce((a, b) => a + b, 0),
        4,
        `skips after pass ${pass}: ${JSON.stringify(skipped)}`,
      );
      assertEquals(skipped.annotation_missing, 1);
      assertEquals(skipped.annotation_size_mismatch, 1);
      assert(Object.keys(skipped).some((k) => k.startsWith("image_")), `an image_* reason: ${JSON.stringify(skipped)}`);
      assert(
        Object.keys(skipped).some((k) =>
          k.startsWith("annotation_") && k !== "annotation_missing" && k !== "annotation_size_mismatch"
        ),
        `an annotation decode reason: ${JSON.stringify(skipped)}`,
      );
    }
    // A window of the pairs: offset and size count pairs, not files.
    const window = ade20kEvalDataset({ root: l.root, split: "training", imageSize: side, offset: 1, size: 2 });
    assertEquals(window.entries.map((e) => e.image.split("/").pop()), ["c_good.png", "d_corrupt_image.jpg"]);
    assertThrows(
      () => ade20kEvalDataset({ root: l.root, split: "training", imageSize: side, offset: 6 }),
      DatasetError,
      ["6 image/annotation pairs", "offset 6"],
    );
    assertThrows(
      () => ade20kEvalDataset({ root: `${l.root}/nope`, split: "training", imageSize: side }),
      DatasetError,
      [
        "images folder",
      ],
    );
  } finally {
    Deno.removeSync(l.root, { recursive: true });
  }
});

test("label PNGs that are not 8-bit single-channel maps are refused with a clear error", () => {
  const cases: [string, Uint8Array, string[]][] = [
    ["colour", encodePng(2, 2, Uint8Array.of(1, 1, 1, 2, 2, 2, 3, 4, 3, 5, 5, 5), "rgb"), [
      "not a single-channel",
      "x 0, y 1",
    ]],
    ["16-bit", rawPng(2, 1, 16, 0, [Uint8Array.of(0, 3, 0, 4)]), ["16-bit PNG"]],
    ["4-bit", rawPng(2, 1, 4, 0, [Uint8Array.of(0x12)]), ["4-bit PNG", "8-bit grayscale"]],
    ["palette", rawPng(2, 1, 8, 3, [Uint8Array.of(0, 1)], [0, 0, 0, 9, 9, 9]), ["palette PNG", "entry 1"]],
  ];
  for (const [, label, fragments] of cases) {
    const l = layout();
    try {
      l.write("validation", "x", encodePng(2, 2, new Uint8Array(12), "rgb"), label);
      const dataset = ade20kEvalDataset({ root: l.root, split: "validation", imageSize: 4 });
      assertThrows(() => [...dataset.batches(1, "cpu")].forEach((b) => b.images.dispose()), DatasetError, [
        "annotations/validation/x.png",
        ...fragments,
      ]);
    } finally {
      Deno.removeSync(l.root, { recursive: true });
    }
  }
  // RGB with equal channels and an identity grey palette are label maps like any other.
  for (
    const label of [
      encodePng(2, 1, Uint8Array.of(7, 7, 7, 151, 151, 151), "rgb"),
      rawPng(2, 1, 8, 3, [Uint8Array.of(7, 151)], Array.from({ length: 256 * 3 }, (_, i) => Math.floor(i / 3))),
    ]
  ) {
    const l = layout();
    try {
      l.write("validation", "x", encodePng(2, 1, new Uint8Array(6), "rgb"), label);
      const dataset = ade20kEvalDataset({ root: l.root, split: "validation", imageSize: 2 });
      const { masks } = collect(dataset, 1);
      // 2 x 1 -> Resize(2): 4 x 2, crop columns 1..2: source columns 0 and 1 on both rows.
      assertEquals([...masks], [6, IGNORE_INDEX, 6, IGNORE_INDEX]);
      assertEquals(dataset.imagesWithUnknownLabels(), 1);
    } finally {
      Deno.removeSync(l.root, { recursive: true });
    }
  }
});

// ---- end to end -------------------------------------------------------------------------------------------------

test("segmentation probe on a small checkpoint's patch tokens over an ADE20K-layout folder: 150-class IoUs", () => {
  const l = layout();
  const model = buildPreset("CLIP_tiny_synthetic");
  const tensors = new Map<string, Tensor>();
  for (const [key, value] of model.stateDict()) tensors.set(`model.${key}`, value);
  const path = saveCheckpoint(l.root, { tensors, meta: { step: 0, model_config: model.config, tokenizer_merges: [] } });
  model.dispose();
  const evalModel = loadEvalModel(path);
  try {
    for (let k = 0; k < 6; k++) {
      writePair(l, "training", `ADE_train_${k}`, blockImage(90 + 3 * k, 70, k), 90 + 3 * k, 70);
    }
    for (let k = 0; k < 3; k++) writePair(l, "validation", `ADE_val_${k}`, blockImage(70, 85 + k, k + 2), 70, 85 + k);
    const side = evalModel.imageSize;
    const train = ade20kEvalDataset({ root: l.root, split: "training", imageSize: side, size: 5 });
    const val = ade20kEvalDataset({ root: l.root, split: "validation", imageSize: side });
    const run = { batchSize: 4, device: "cpu" as const, patches: true };
    const trainFeatures = extractFeatures(evalModel.tower, train, run);
    const valFeatures = extractFeatures(evalModel.tower, val, run);
    try {
      const r = segmentationProbe(trainFeatures, valFeatures, {
        classes: val.maskClasses,
        imageSize: side,
        epochs: 2,
        batchSize: 4,
      });
      assertEquals([r.trainSize, r.testSize], [5, 3]);
      assertEquals(r.iou.length, 150);
      const present = new Set([...valFeatures.masks!].filter((v) => v !== IGNORE_INDEX));
      const possible = new Set(RAW_LABELS.filter((v) => v > 0).map((v) => v - 1));
      assert([...present].every((c) => possible.has(c)) && present.size >= 4, `validation classes ${[...present]}`);
      r.iou.forEach((iou, c) => {
        if (present.has(c)) assert(iou >= 0 && iou <= 100, `class ${c} IoU ${iou}`);
        else assert(Number.isNaN(iou) || iou === 0, `class ${c} is absent from the truth: IoU ${iou}`);
      });
      const scored = r.iou.filter((v) => !Number.isNaN(v));
      assert(Math.abs(r.mIoU - scored.reduce((a, b) => a + b, 0) / scored.length) < 1e-9, `mIoU ${r.mIoU}`);
      assert(r.pixelAccuracy >= 0 && r.pixelAccuracy <= 100, `pixel accuracy ${r.pixelAccuracy}`);
      // The command: `eval segprobe --dataset ade20k:ROOT` fits on "training" (--train-size) and scores "validation"
      // with the probe settings it documents (10 epochs, batches of 16), so the same call here gives its numbers.
      const expected = segmentationProbe(trainFeatures, valFeatures, { classes: 150, imageSize: side, batchSize: 16 });
      const out = `${l.root}/segprobe.json`;
      const code = quietly(() =>
        runEval([
          "segprobe",
          "--checkpoint",
          path,
          "--dataset",
          `ade20k:${l.root}`,
          "--train-size",
          "5",
          "--batch-size",
          "4",
          "--out",
          out,
        ])
      );
      assertEquals(code, 0);
      const got = JSON.parse(Deno.readTextFileSync(out)).results;
      assertEquals([got.mIoU, got.pixelAccuracy, got.trainSize, got.testSize], [
        expected.mIoU,
        expected.pixelAccuracy,
        5,
        3,
      ]);
      assertEquals(got.classNames.length, 150);
    } finally {
      trainFeatures.dispose();
      valFeatures.dispose();
    }
  } finally {
    evalModel.dispose();
    Deno.removeSync(l.root, { recursive: true });
  }
});
