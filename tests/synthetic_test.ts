// synthetic_test.ts: the built-in captioned-shapes source (src/data/synthetic.ts) and the PNG encoder (src/formats/png.ts).
// Determinism is pinned by checksums of a few samples (a change to the generator must change them on purpose);
// captions are parsed back and checked against the attributes and against the pixels (mask area, centroid, colour);
// PNG output is decoded by Python's zlib (and PIL when importable), not by our own code. Only the tensor test needs
// the native library; it is ignored, with the reason, when the library is missing.
import { groupEqualCaptions } from "../src/eval/retrieval.ts";
import { crc32 } from "../src/formats/crc32.ts";
import { encodePng } from "../src/formats/png.ts";
import {
  augmentRng,
  augmentView,
  COLOUR_RGB,
  COLOURS,
  describeObject,
  HELD_OUT_COLOUR,
  IMAGENET_MEAN,
  IMAGENET_STD,
  joinClauses,
  POSITIONS,
  randomResizedCropBox,
  resizeCropBilinear,
  sampleRng,
  Sfc32,
  shapeDistance,
  SHAPES,
  SIZES,
  syntheticBatch,
  syntheticBatchArrays,
  syntheticClassNames,
  syntheticLabelsJson,
  type SyntheticSample,
  syntheticSample,
  type SyntheticSplit,
  syntheticTemplates,
  syntheticTemplatesJson,
  toImageArray,
  writeSyntheticZeroShotFiles,
} from "../src/data/synthetic.ts";
import { liveTensors } from "../src/torch/mod.ts";
import {
  assert,
  assertClose,
  assertEquals,
  assertThrows,
  missingTool,
  nativeMissing,
  pythonModulesMissing,
} from "./helpers.ts";

const hex = (n: number): string => n.toString(16).padStart(8, "0");
const samples = (split: SyntheticSplit, count: number, start = 0): SyntheticSample[] =>
  Array.from({ length: count }, (_, i) => syntheticSample(split, start + i));

// ---- determinism -------------------------------------------------------------------------------------------------

// crc32 of pixels and mask, and the caption, of a few samples. These pin the data across runs, machines and code
// changes: if a change to the generator is intended, update them and say so (old runs' data changes with them).
const PINNED: { split: SyntheticSplit; index: number; seed: number; size: number; pixels: string; mask: string }[] = [
  { split: "train", index: 0, seed: 0, size: 64, pixels: "5c1f2e18", mask: "257560ee" },
  { split: "val", index: 7, seed: 0, size: 64, pixels: "cfc51065", mask: "f90c15e7" },
  { split: "heldout", index: 3, seed: 0, size: 64, pixels: "cbf367db", mask: "f46ae9f8" },
  { split: "train", index: 4_000_000_000, seed: 42, size: 96, pixels: "4207b581", mask: "55d52996" },
];

Deno.test("synthetic: a sample is a pure function of (seed, split, index, size), pinned by checksums", () => {
  for (const p of PINNED) {
    const a = syntheticSample(p.split, p.index, { seed: p.seed, size: p.size });
    const b = syntheticSample(p.split, p.index, { seed: p.seed, size: p.size });
    assertEquals(Array.from(a.pixels), Array.from(b.pixels), `${p.split}/${p.index} pixels on regeneration`);
    assertEquals(Array.from(a.mask), Array.from(b.mask), `${p.split}/${p.index} mask on regeneration`);
    assertEquals(a.caption, b.caption, `${p.split}/${p.index} caption on regeneration`);
    assertEquals(a.pixels.length, p.size * p.size * 3, "pixel bytes");
    assertEquals(a.mask.length, p.size * p.size, "mask bytes");
    const got = { pixels: hex(crc32(a.pixels)), mask: hex(crc32(a.mask)) };
    assertEquals(got, { pixels: p.pixels, mask: p.mask }, `${p.split}/${p.index} seed ${p.seed} checksums`);
  }
});

Deno.test("synthetic: different indices, seeds and splits give different samples", () => {
  const base = syntheticSample("train", 10);
  for (
    const [what, other] of [
      ["index 11", syntheticSample("train", 11)],
      ["seed 1", syntheticSample("train", 10, { seed: 1 })],
      ["split val", syntheticSample("val", 10)],
      ["split heldout", syntheticSample("heldout", 10)],
    ] as const
  ) {
    assert(crc32(base.pixels) !== crc32(other.pixels), `train/10 and ${what} have identical pixels`);
  }
  // 500 consecutive indices: all pixel buffers distinct.
  const seen = new Set(samples("train", 500).map((s) => crc32(s.pixels)));
  assertEquals(seen.size, 500, "distinct pixel checksums among train 0..499");
});

Deno.test("synthetic: the PRNG streams are seeded from the whole (seed, split, index) triple", () => {
  const first = (seed: number, split: SyntheticSplit, index: number): number => sampleRng(seed, split, index).nextU32();
  assertEquals(first(3, "train", 5), first(3, "train", 5), "same triple");
  const values = new Set([first(3, "train", 5), first(4, "train", 5), first(3, "val", 5), first(3, "train", 6)]);
  assertEquals(values.size, 4, "distinct first draws for neighbouring triples");
  // The generator's output for a fixed state (a regression check on sfc32 itself: 32-bit arithmetic only).
  const rng = new Sfc32(1, 2, 3, 4);
  assertEquals([rng.nextU32(), rng.nextU32(), rng.nextU32()], SFC32_REFERENCE, "sfc32(1, 2, 3, 4) after 12 discards");
});

// sfc32(1, 2, 3, 4) after 12 discards, from PractRand's formulation computed with Python integers (not this code).
const SFC32_REFERENCE: number[] = [417285410, 1196253302, 123583739];

// ---- splits ------------------------------------------------------------------------------------------------------

const isHeldOut = (shape: string, colour: string): boolean =>
  HELD_OUT_COLOUR[SHAPES.indexOf(shape as typeof SHAPES[number])] === COLOURS.indexOf(colour as typeof COLOURS[number]);

Deno.test("synthetic: splits are disjoint (pixels) and held-out pairs appear only as the heldout split's main object", () => {
  const train = samples("train", 3000);
  const val = samples("val", 1000);
  const heldout = samples("heldout", 1000);
  const trainPixels = new Map(train.map((s) => [crc32(s.pixels), s]));
  for (const s of [...val, ...heldout]) {
    const twin = trainPixels.get(crc32(s.pixels));
    assert(
      twin === undefined || twin.pixels.some((v, i) => v !== s.pixels[i]),
      `${s.split}/${s.index} has the same pixels as train/${twin?.index}`,
    );
  }
  for (const s of [...train, ...val]) {
    for (const a of s.attributes) {
      assert(!isHeldOut(a.shape, a.colour), `${s.split}/${s.index} shows the held-out pair "${a.colour} ${a.shape}"`);
    }
  }
  for (const s of heldout) {
    const [main, ...others] = s.attributes;
    assert(isHeldOut(main.shape, main.colour), `heldout/${s.index} main object "${s.mainCaption}" is a training pair`);
    for (const a of others) assert(!isHeldOut(a.shape, a.colour), `heldout/${s.index} second held-out pair`);
  }
});

// ---- captions ----------------------------------------------------------------------------------------------------

const CLAUSE = new RegExp(
  `^a (${SIZES.join("|")}) (${COLOURS.join("|")}) (${SHAPES.join("|")}) in the (${POSITIONS.join("|")})$`,
);

/** Reads a caption back into attributes: "A", "A and B", "A, B and C". */
function parseCaption(caption: string): { size: string; colour: string; shape: string; position: string }[] {
  const lastAnd = caption.lastIndexOf(" and ");
  const clauses = lastAnd < 0
    ? [caption]
    : [...caption.slice(0, lastAnd).split(", "), caption.slice(lastAnd + " and ".length)];
  return clauses.map((clause) => {
    const m = CLAUSE.exec(clause);
    if (m === null) {
      throw new Error(`caption clause ${JSON.stringify(clause)} (of ${JSON.stringify(caption)}) unparsable`);
    }
    return { size: m[1], colour: m[2], shape: m[3], position: m[4] };
  });
}

Deno.test("synthetic: captions parse back to the attributes; label is the main shape", () => {
  const counts = [0, 0, 0];
  for (const split of ["train", "val", "heldout"] as const) {
    for (const s of samples(split, 400)) {
      const parsed = parseCaption(s.caption);
      assertEquals(parsed, s.attributes.map((a) => ({ ...a })), `${split}/${s.index} caption "${s.caption}"`);
      assertEquals(s.mainCaption, describeObject(s.attributes[0]), "main caption");
      assertEquals(s.caption, joinClauses(s.attributes.map(describeObject)), "caption joins the clauses");
      assertEquals(s.label, SHAPES.indexOf(s.attributes[0].shape), `${split}/${s.index} label`);
      assertEquals(new Set(s.attributes.map((a) => a.position)).size, s.attributes.length, "distinct positions");
      assertEquals(s.drawn.length, s.attributes.length, "one drawn record per object");
      counts[s.attributes.length - 1]++;
    }
  }
  assert(counts.every((c) => c > 300), `object counts 1/2/3 should be roughly uniform over 1200 samples: ${counts}`);
  assertEquals(joinClauses(["x"]), "x");
  assertEquals(joinClauses(["x", "y"]), "x and y");
  assertEquals(joinClauses(["x", "y", "z"]), "x, y and z");
});

// ---- pixels vs captions and masks --------------------------------------------------------------------------------

// Area of each shape for radius 1, in SHAPES order (circle, square 1.64², triangle ½·2·1.75, cross 2·(0.6·2)−0.6²,
// ring π(1−0.55²), star 5·(1·0.5·sin 36°)).
const UNIT_AREA = [Math.PI, 1.64 * 1.64, 1.75, 2.04, Math.PI * (1 - 0.55 * 0.55), 5 * 0.5 * Math.sin(Math.PI / 5)];

Deno.test("synthetic: the main object's mask has its shape's area, sits where the caption says, in its colour", () => {
  let checked = 0;
  for (const s of samples("train", 400)) {
    const side = s.width;
    const main = s.attributes[0], drawn = s.drawn[0];
    const palette = COLOUR_RGB[COLOURS.indexOf(main.colour)];
    for (let c = 0; c < 3; c++) {
      const ratio = drawn.rgb[c] / Math.max(1, palette[c]);
      assert(palette[c] < 50 || (ratio >= 0.84 && ratio <= 1.01), `${s.index}: painted ${drawn.rgb} vs ${palette}`);
    }
    assert(main.size === "small" ? drawn.radius < 0.12 * side : drawn.radius > 0.16 * side, `${s.index}: size`);
    // With the main shape unique in the picture, its mask pixels are exactly those of the class label + 1.
    if (s.attributes.slice(1).some((a) => a.shape === main.shape)) continue;
    checked++;
    const uniqueColour = !s.attributes.slice(1).some((a) => a.colour === main.colour);
    const cls = s.label + 1;
    const inMask = (x: number, y: number): boolean =>
      x >= 0 && y >= 0 && x < side && y < side && s.mask[y * side + x] === cls;
    let count = 0, sumX = 0, sumY = 0, exact = 0;
    for (let y = 0; y < side; y++) {
      for (let x = 0; x < side; x++) {
        const i = y * side + x;
        const isExact = [0, 1, 2].every((c) => s.pixels[i * 3 + c] === drawn.rgb[c]);
        if (!inMask(x, y)) {
          // The object's own colour appears nowhere outside its mask.
          assert(!(isExact && uniqueColour), `${s.index}: pixel (${x}, ${y}) has colour ${drawn.rgb} outside the mask`);
          continue;
        }
        count++;
        sumX += x + 0.5;
        sumY += y + 0.5;
        if (isExact) {
          exact++;
          continue;
        }
        // A blended (anti-aliased) mask pixel lies on the mask's border.
        let border = false;
        for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) border ||= !inMask(x + dx, y + dy);
        assert(border, `${s.index} "${s.mainCaption}": blended mask pixel (${x}, ${y}) inside the object`);
      }
    }
    const expectedArea = UNIT_AREA[s.label] * drawn.radius * drawn.radius;
    assert(
      Math.abs(count / expectedArea - 1) < 0.2,
      `${s.index} "${s.mainCaption}": mask area ${count}, expected ${expectedArea.toFixed(1)}`,
    );
    // Interior pixels carry the exact colour; the thinnest shape (a small cross) keeps about half of its pixels.
    assert(exact >= 0.4 * count, `${s.index} "${s.mainCaption}": only ${exact}/${count} mask pixels are ${drawn.rgb}`);
    const cx = sumX / count / side, cy = sumY / count / side;
    const where = `${s.index} "${s.mainCaption}": mask centroid (${cx.toFixed(2)}, ${cy.toFixed(2)})`;
    if (main.position === "center") assert(Math.abs(cx - 0.5) < 0.1 && Math.abs(cy - 0.5) < 0.1, where);
    else {
      assert(main.position.endsWith("left") ? cx < 0.45 : cx > 0.55, where);
      assert(main.position.startsWith("top") ? cy < 0.45 : cy > 0.55, where);
    }
  }
  assert(checked > 250, `too few samples with a unique main shape: ${checked}`);
});

Deno.test("synthetic: the main object is drawn on top: never occluded, its interior in its exact colour", () => {
  let overlapping = 0;
  for (const s of samples("train", 1500)) {
    const side = s.width, m = s.drawn[0];
    const overlaps = s.drawn.slice(1).some((d) =>
      Math.hypot(d.centerX - m.centerX, d.centerY - m.centerY) < 0.8 * (d.radius + m.radius)
    );
    if (overlaps) overlapping++;
    for (let y = 0; y < side; y++) {
      for (let x = 0; x < side; x++) {
        const distance = shapeDistance(s.label, (x + 0.5 - m.centerX) / m.radius, (y + 0.5 - m.centerY) / m.radius);
        if (distance > 0) continue;
        const i = y * side + x;
        const where = `train/${s.index} "${s.caption}" pixel (${x}, ${y})`;
        assert(s.mask[i] === s.label + 1, `${where}: inside the main object but mask ${s.mask[i]}`);
        if (distance * m.radius <= -0.5) {
          const got = [s.pixels[i * 3], s.pixels[i * 3 + 1], s.pixels[i * 3 + 2]];
          assertEquals(got, m.rgb, `${where}: interior colour`);
        }
      }
    }
  }
  assert(overlapping >= 10, `only ${overlapping} samples where the main object overlaps another`);
});

Deno.test("synthetic: background is dim and unsaturated; every drawn class appears in the mask", () => {
  for (const s of samples("val", 200)) {
    for (let i = 0; i < s.mask.length; i++) {
      if (s.mask[i] !== 0) continue;
      // Background pixels away from every object keep the background's range.
      const x = (i % s.width) + 0.5, y = Math.floor(i / s.width) + 0.5;
      const near = s.drawn.some((d) => Math.hypot(x - d.centerX, y - d.centerY) < d.radius * 1.5 + 1);
      if (near) continue;
      for (let c = 0; c < 3; c++) {
        assert(
          s.pixels[i * 3 + c] <= 110,
          `val/${s.index} background pixel ${i} channel ${c} = ${s.pixels[i * 3 + c]}`,
        );
      }
    }
    const present = new Set(s.mask);
    assert(present.has(s.label + 1), `val/${s.index}: main class ${s.label + 1} missing from the mask`);
    for (const v of present) assert(v <= SHAPES.length, `val/${s.index}: mask value ${v} out of range`);
  }
});

// ---- balance -----------------------------------------------------------------------------------------------------

Deno.test("synthetic: labels are roughly uniform over 1000 samples of each split", () => {
  for (const split of ["train", "val", "heldout"] as const) {
    const counts = new Array(SHAPES.length).fill(0);
    for (const s of samples(split, 1000)) counts[s.label]++;
    // Expected 166.7 each, standard deviation 11.8: ±50 is over four deviations.
    const expected = 1000 / SHAPES.length;
    assert(counts.every((c) => Math.abs(c - expected) < 50), `${split} label counts ${counts}`);
  }
  const colours = new Array(COLOURS.length).fill(0), positions = new Array(POSITIONS.length).fill(0);
  for (const s of samples("train", 1000)) {
    colours[COLOURS.indexOf(s.attributes[0].colour)]++;
    positions[POSITIONS.indexOf(s.attributes[0].position)]++;
  }
  assert(colours.every((c) => c > 100), `train main colour counts ${colours}`);
  assert(positions.every((c) => c > 140), `train main position counts ${positions}`);
});

// ---- tensors -----------------------------------------------------------------------------------------------------

Deno.test("synthetic: toImageArray lays out (B, 3, H, W) with (v / 255 − mean) / std", () => {
  const width = 3, height = 2;
  const make = (offset: number): Uint8Array =>
    Uint8Array.from({ length: width * height * 3 }, (_, i) => offset + i * 7);
  const images = [{ pixels: make(0), width, height }, { pixels: make(100), width, height }];
  const out = toImageArray(images);
  assertEquals(out.length, 2 * 3 * height * width, "element count");
  const expected: number[] = [];
  for (let b = 0; b < 2; b++) {
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++) {
          const v = images[b].pixels[(y * width + x) * 3 + c];
          expected.push((v / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]);
        }
      }
    }
  }
  assertClose(out, expected, { atol: 1e-6, rtol: 1e-6, message: "normalised values" });
  // A known pixel: 255 in the red channel is (1 − 0.485) / 0.229 = 2.2489...
  const white = toImageArray([{ pixels: new Uint8Array(3).fill(255), width: 1, height: 1 }]);
  assertClose(white[0], (1 - 0.485) / 0.229, { atol: 1e-6, message: "red 255" });
  const custom = toImageArray([{ pixels: new Uint8Array([0, 51, 255]), width: 1, height: 1 }], {
    mean: [0, 0, 0],
    std: [1, 1, 1],
  });
  assertClose(custom, [0, 0.2, 1], { atol: 1e-7, message: "identity normalisation" });
  assertThrows(
    () => toImageArray([images[0], { pixels: new Uint8Array(12), width: 2, height: 2 }]),
    RangeError,
    ["image 1 is 2x2", "expected 3x2"],
  );
});

Deno.test("synthetic: syntheticBatchArrays shapes, labels, masks; evaluation batches are the raw images", () => {
  const indices = [5, 9, 2, 40];
  const batch = syntheticBatchArrays("train", indices, { views: 2 });
  const plane = 64 * 64;
  assertEquals(batch.shape, [4, 3, 64, 64], "shape");
  assertEquals(batch.u.length, 4 * 3 * plane, "u length");
  assertEquals(batch.v?.length, 4 * 3 * plane, "v length");
  const raw = indices.map((i) => syntheticSample("train", i));
  assertEquals(batch.captions, raw.map((s) => s.caption), "captions");
  assertEquals(Array.from(batch.labels), raw.map((s) => s.label), "labels");
  assert(batch.labels instanceof Int32Array, "labels are Int32Array");
  assertEquals(Array.from(batch.masks.subarray(2 * plane, 3 * plane)), Array.from(raw[2].mask), "mask of item 2");
  assert(batch.u.some((x, i) => x !== batch.v![i]), "the two training views differ");

  const evalBatch = syntheticBatchArrays("val", indices, { views: 1 });
  assertEquals(evalBatch.v, undefined, "one view");
  const valRaw = indices.map((i) => syntheticSample("val", i));
  assertEquals(Array.from(evalBatch.u), Array.from(toImageArray(valRaw)), "val is not augmented by default");
  const again = syntheticBatchArrays("train", indices, { views: 2 });
  assertEquals(Array.from(again.v!), Array.from(batch.v!), "batches are deterministic");
  const nextEpoch = syntheticBatchArrays("train", indices, { views: 2, epoch: 1 });
  assert(nextEpoch.u.some((x, i) => x !== batch.u[i]), "a new epoch gives new views");
});

Deno.test({
  name: "synthetic: syntheticBatch returns float32 (B, 3, H, W) tensors holding the arrays' values",
  ignore: missingTool("the native library", nativeMissing()),
  fn() {
    const before = liveTensors();
    const arrays = syntheticBatchArrays("train", [1, 2, 3], { size: 32 });
    const batch = syntheticBatch("train", [1, 2, 3], { size: 32 });
    try {
      assertEquals(batch.u.shape, [3, 3, 32, 32], "u shape");
      assertEquals(batch.u.dtype, "float32", "u dtype");
      assertEquals(batch.v?.shape, [3, 3, 32, 32], "v shape");
      assertClose(batch.u.toArray(), arrays.u, { atol: 0, rtol: 0, message: "u values" });
      assertClose(batch.v!.toArray(), arrays.v!, { atol: 0, rtol: 0, message: "v values" });
    } finally {
      batch.u.dispose();
      batch.v?.dispose();
    }
    assertEquals(liveTensors(), before, "tensor handles left behind");
  },
});

// ---- augmentation ------------------------------------------------------------------------------------------------

Deno.test("synthetic: augmentView is deterministic in its PRNG and differs across views and epochs", () => {
  const s = syntheticSample("train", 17);
  const view = (v: number, epoch = 0): Uint8Array => augmentView(s.pixels, augmentRng(0, "train", 17, v, epoch));
  assertEquals(Array.from(view(0)), Array.from(view(0)), "same stream, same view");
  assert(crc32(view(0)) !== crc32(view(1)), "u and v differ");
  assert(crc32(view(0)) !== crc32(view(0, 1)), "epochs differ");
  assertEquals(hex(crc32(view(0))), AUGMENT_PINNED, "pinned checksum of train/17 view u");
  assertEquals(Array.from(s.pixels), Array.from(syntheticSample("train", 17).pixels), "input left untouched");
});

const AUGMENT_PINNED = "a10bfb48";

Deno.test("synthetic: augmentView with a full crop and no jitter is the identity; constants stay constant", () => {
  const s = syntheticSample("train", 3);
  const rng = new Sfc32(9, 9, 9);
  const identity = augmentView(s.pixels, rng, { scale: [1, 1], ratio: [1, 1], jitterProbability: 0 });
  assertEquals(Array.from(identity), Array.from(s.pixels), "full crop, no jitter");
  const flat = new Uint8Array(32 * 32 * 3).fill(77);
  for (let k = 0; k < 20; k++) {
    const out = augmentView(flat, new Sfc32(k, 1, 2), { jitterProbability: 0 });
    assert(out.every((v) => v === 77), `constant image changed under crop ${k}`);
  }
});

Deno.test("synthetic: random crops respect scale and ratio; bilinear resize matches torch's half-pixel formula", () => {
  const rng = new Sfc32(5, 6, 7);
  for (let k = 0; k < 1000; k++) {
    const box = randomResizedCropBox(64, 64, rng, [0.5, 1], [3 / 4, 4 / 3]);
    const area = (box.width * box.height) / (64 * 64), aspect = box.width / box.height;
    assert(area > 0.47 && area <= 1, `crop ${k}: area fraction ${area}`);
    assert(aspect > 0.72 && aspect < 1.39, `crop ${k}: aspect ${aspect}`);
    assert(box.left >= 0 && box.top >= 0 && box.left + box.width <= 64 && box.top + box.height <= 64, `crop ${k}`);
  }
  // A horizontal ramp v(x) = 4x: inside the crop, bilinear interpolation reproduces the ramp at the source
  // coordinate sx = left + (x + 0.5)·w/W − 0.5 (clamped to the crop), which is what torch computes.
  const side = 16;
  const ramp = new Uint8Array(side * side * 3);
  for (let i = 0; i < side * side; i++) ramp.fill(4 * (i % side), i * 3, i * 3 + 3);
  const box = { top: 2, left: 3, width: 10, height: 7 };
  const out = resizeCropBilinear(ramp, side, side, box);
  const expected: number[] = [];
  for (let y = 0; y < side; y++) {
    for (let x = 0; x < side; x++) {
      const sx = Math.min(Math.max(0, (x + 0.5) * (box.width / side) - 0.5), box.width - 1);
      expected.push(4 * (box.left + sx), 4 * (box.left + sx), 4 * (box.left + sx));
    }
  }
  assertClose(out, expected, { atol: 1e-4, message: "resized ramp" });
});

// ---- zero-shot and retrieval metadata ----------------------------------------------------------------------------

Deno.test("synthetic: class names, templates and the labels.json / templates.json writers", async () => {
  assertEquals(syntheticClassNames(), [...SHAPES], "class names");
  assert(syntheticTemplates().length >= 3 && syntheticTemplates().every((t) => t.includes("{}")), "templates");
  assertEquals(Object.keys(syntheticLabelsJson()), ["synthetic_shapes"], "labels key");
  assertEquals(syntheticTemplatesJson().synthetic_shapes, syntheticTemplates(), "templates content");
  const dir = await Deno.makeTempDir({ prefix: "synthetic_test_" });
  try {
    await Deno.writeTextFile(`${dir}/labels.json`, JSON.stringify({ cifar10: ["airplane", "automobile"] }));
    const paths = await writeSyntheticZeroShotFiles(dir);
    const labels = JSON.parse(await Deno.readTextFile(paths.labels));
    const templates = JSON.parse(await Deno.readTextFile(paths.templates));
    assertEquals(labels, { cifar10: ["airplane", "automobile"], synthetic_shapes: [...SHAPES] }, "merged labels.json");
    assertEquals(templates, { synthetic_shapes: syntheticTemplates() }, "new templates.json");
    await Deno.writeTextFile(`${dir}/labels.json`, "[1, 2]");
    let failed = false;
    try {
      await writeSyntheticZeroShotFiles(dir);
    } catch (error) {
      failed = (error as Error).message.includes("not a JSON object");
    }
    assert(failed, "a labels.json that is not an object is reported, not overwritten");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("groupEqualCaptions: the synthetic retrieval set deduplicates captions and keeps every image's correct text", () => {
  const set = groupEqualCaptions(["a", "b", "a", "c", "b"]);
  assertEquals(set.texts, ["a", "b", "c"]);
  assertEquals(Array.from(set.imageToText), [0, 1, 0, 2, 1]);
  assertEquals(set.textToImages, [[0, 2], [1, 4], [3]]);
  const captions = samples("val", 1000).map((s) => s.caption);
  const real = groupEqualCaptions(captions);
  captions.forEach((c, i) => assertEquals(real.texts[real.imageToText[i]], c, `image ${i}`));
  assert(real.texts.length > 900, `val captions should be mostly distinct: ${real.texts.length}/1000`);
});

// ---- input validation --------------------------------------------------------------------------------------------

Deno.test("synthetic: bad splits, indices, seeds and sizes are reported with the value", () => {
  assertThrows(() => syntheticSample("test" as SyntheticSplit, 0), RangeError, ['unknown split "test"', "train, val"]);
  assertThrows(() => syntheticSample("train", -1), RangeError, ["index", "-1"]);
  assertThrows(() => syntheticSample("train", 2 ** 32), RangeError, ["[0, 2^32)"]);
  assertThrows(() => syntheticSample("train", 0, { seed: 0.5 }), RangeError, ["seed", "0.5"]);
  assertThrows(() => syntheticSample("train", 0, { size: 8 }), RangeError, ["size", "8"]);
  assertThrows(() => augmentView(new Uint8Array(10), new Sfc32(1, 2, 3)), RangeError, ["10 bytes"]);
  assertThrows(() => syntheticBatchArrays("train", []), RangeError, ["no indices"]);
});

// ---- PNG ---------------------------------------------------------------------------------------------------------

// Decodes with Python's zlib + struct (checking every chunk's CRC and undoing all five filter types), and with PIL
// when it imports; prints JSON with the decoded bytes in hex.
const PNG_DECODER = `
import json, struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\\x89PNG\\r\\n\\x1a\\n", "signature"
pos, idat, chunks = 8, b"", []
while pos < len(data):
    n, = struct.unpack(">I", data[pos:pos + 4]); kind = data[pos + 4:pos + 8]; body = data[pos + 8:pos + 8 + n]
    crc, = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
    assert zlib.crc32(kind + body) == crc, "crc of " + kind.decode()
    chunks.append(kind.decode())
    if kind == b"IHDR": w, h, depth, ctype, comp, filt, lace = struct.unpack(">IIBBBBB", body)
    if kind == b"IDAT": idat += body
    pos += 12 + n
bpp = {0: 1, 2: 3}[ctype]; stride = w * bpp; raw = zlib.decompress(idat); out = bytearray(); prev = bytearray(stride)
for y in range(h):
    f = raw[y * (stride + 1)]; line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for x in range(stride):
        a = line[x - bpp] if x >= bpp else 0; b = prev[x]; c = prev[x - bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    out += line; prev = line
try:
    from PIL import Image
    pil = Image.open(sys.argv[1]).tobytes().hex()
except ImportError:
    pil = None
print(json.dumps({"w": w, "h": h, "depth": depth, "ctype": ctype, "chunks": chunks, "pixels": out.hex(), "pil": pil}))
`;

const noPython = missingTool("/usr/bin/python3", pythonModulesMissing(["zlib", "struct"]));
const noPil = missingTool("python3 with PIL", pythonModulesMissing(["PIL"]));

Deno.test({
  name: "png: encodePng output decodes (Python zlib + struct, and PIL when present) to the same bytes",
  ignore: noPython,
}, async () => {
  const exe = "/usr/bin/python3";
  const rgb = syntheticSample("train", 1).pixels;
  const gray = Uint8Array.from({ length: 13 * 7 }, (_, i) => (i * 37) & 255); // odd sizes, every byte value class
  const dir = await Deno.makeTempDir({ prefix: "png_test_" });
  try {
    for (const [name, width, height, pixels, ctype] of [["rgb", 64, 64, rgb, 2], ["gray", 13, 7, gray, 0]] as const) {
      const path = `${dir}/${name}.png`;
      await Deno.writeFile(path, encodePng(width, height, pixels));
      const result = await new Deno.Command(exe, { args: ["-c", PNG_DECODER, path] }).output();
      const stderr = new TextDecoder().decode(result.stderr);
      assert(result.success, `python decoder failed on ${name}: ${stderr}`);
      const decoded = JSON.parse(new TextDecoder().decode(result.stdout));
      const want = Array.from(pixels, (b) => b.toString(16).padStart(2, "0")).join("");
      assertEquals([decoded.w, decoded.h, decoded.depth, decoded.ctype], [width, height, 8, ctype], `${name} header`);
      assertEquals(decoded.chunks, ["IHDR", "IDAT", "IEND"], `${name} chunks`);
      assert(decoded.pixels === want, `${name}: zlib/struct decoding differs from the input`);
      assertEquals(decoded.pil === null, noPil, `${name}: PIL used exactly when importable`);
      if (decoded.pil !== null) assert(decoded.pil === want, `${name}: PIL decoding differs from the input`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assertEquals(crc32(new TextEncoder().encode("123456789")), 0xcbf43926, "CRC-32 check value");
  assertThrows(() => encodePng(4, 4, new Uint8Array(20)), RangeError, ["4x4 rgb", "48 bytes", "got 20"]);
});
