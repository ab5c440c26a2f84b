// synthetic.ts: the built-in captioned-shapes data source. It needs no download; it is the default training data
// and the small-scale test bed for the paper's dense-vs-global claims (zero-shot, retrieval, segmentation probe).
//
// A sample is a square RGB image (64 px by default) with a textured gray background and 1–3 objects, each drawn
// from shape × colour × size × position, a caption that names every object (the main one first), the main object's
// shape as a class label, and a per-pixel class mask. Sample i of split s with seed k is a pure function of
// (k, s, i): one small integer PRNG seeded from the triple drives every random choice, so the bytes are identical on
// every run and machine. What it trades away: realism (flat shapes on a noisy background), and an augmentation
// pipeline that is deliberately simpler than docs/data.md#image-transforms (see augmentView).
//
// Layout: five positions, the four quadrant centres (27% / 73% of the side) plus the image centre; the objects of one
// sample take distinct positions, each jittered by up to ±4% of the side. Sizes: "small" has a radius of 9–11% of the
// side, "large" 17–20%. A large object in the centre can overlap a large one in a corner; the main object is drawn
// last, so it is never occluded and its caption clause always describes what is visible.
//
// Splits, disjoint by construction:
// - "train": index space [0, 2^32). No object anywhere uses one of the six held-out (shape, colour) pairs.
// - "val": the training distribution from a different PRNG stream (another split salt). Every split seeds a PRNG
//   with 128 bits of state from (seed, split salt, index), so two splits never share a stream; an exact pixel
//   collision would need every draw of two streams to agree. Use it for in-training zero-shot and retrieval.
// - "heldout": the main object always uses a held-out pair (e.g. a "green circle"), which "train" never shows, and
//   the other objects use training pairs. It measures compositional generalisation: the shape and the colour were
//   each seen in training, their combination never was.
// SYNTHETIC_EVAL_SIZE (1000) is the conventional number of evaluation samples (indices 0..999).
import { type Device, Tensor } from "../torch/mod.ts";
import { writeFileAtomic } from "../fs/atomic_write.ts";
import { hash32 } from "./hash.ts";

// ---- vocabulary ------------------------------------------------------------------------------------------------

/** Shape names; a shape's index is its class label and (index + 1) its value in the mask. */
export const SHAPES = ["circle", "square", "triangle", "cross", "ring", "star"] as const;
/** Colour names, chosen to stay distinguishable from each other and from the gray background. */
export const COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white"] as const;
export const SIZES = ["small", "large"] as const;
/** Positions as they read in captions ("in the top left", "in the center"). */
export const POSITIONS = ["top left", "top right", "bottom left", "bottom right", "center"] as const;

export type ShapeName = typeof SHAPES[number];
export type ColourName = typeof COLOURS[number];
export type SizeName = typeof SIZES[number];
export type PositionName = typeof POSITIONS[number];
export type SyntheticSplit = "train" | "val" | "heldout";

export const SYNTHETIC_SPLITS: readonly SyntheticSplit[] = ["train", "val", "heldout"];
/** The key under which labels.json / templates.json hold this source (docs/evaluation.md#the-official-zero-shot-suite
 * format). */
export const SYNTHETIC_DATASET_KEY = "synthetic_shapes";
/** Conventional evaluation size for "val" and "heldout" (indices 0..SYNTHETIC_EVAL_SIZE-1). */
export const SYNTHETIC_EVAL_SIZE = 1000;
export const SYNTHETIC_DEFAULT_SIZE = 64;

/** sRGB values of the colours, in COLOURS order. */
export const COLOUR_RGB: readonly (readonly [number, number, number])[] = [
  [215, 40, 40], // red
  [40, 175, 65], // green
  [45, 90, 225], // blue
  [240, 215, 50], // yellow
  [145, 65, 200], // purple
  [245, 135, 30], // orange
  [240, 240, 240], // white
];

/**
 * The held-out colour of each shape, in SHAPES order: green circle, purple square, red triangle, yellow cross,
 * white ring, blue star. One pair per shape and a different colour each, so every shape and every colour still
 * appears in training (6 of the 42 pairs, 14%, are withheld).
 */
export const HELD_OUT_COLOUR: readonly number[] = [1, 4, 0, 3, 6, 2];

/** ImageNet normalisation (docs/data.md#image-transforms). */
export const IMAGENET_MEAN: readonly [number, number, number] = [0.485, 0.456, 0.406];
/** ImageNet's per-channel standard deviations (the default normalisation of our models). */
export const IMAGENET_STD: readonly [number, number, number] = [0.229, 0.224, 0.225];

// ---- PRNG --------------------------------------------------------------------------------------------------------

/**
 * sfc32 (Chris Doty-Humphrey's small fast counting generator): 128 bits of state, 32-bit integer arithmetic only, so
 * every JavaScript engine produces the same stream. The state is wider than mulberry32's 32 bits on purpose: with
 * 32-bit seeds, a million training indices and a thousand validation ones would collide with probability ~0.2.
 */
export class Sfc32 {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(a: number, b: number, c: number, d = 1) {
    this.#a = a | 0;
    this.#b = b | 0;
    this.#c = c | 0;
    this.#d = d | 0;
    // The first outputs of a freshly seeded sfc32 are correlated with the seed words; discard them.
    for (let i = 0; i < 12; i++) this.nextU32();
  }

  /** A uniform 32-bit unsigned integer. */
  nextU32(): number {
    // PractRand's reference: result = a + b + counter++; a = b ^ (b >> 9); b = c + (c << 3); c = rotl(c, 21) + result.
    const result = (((this.#a + this.#b) | 0) + this.#d) | 0;
    this.#d = (this.#d + 1) | 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) | 0;
    this.#c = (((this.#c << 21) | (this.#c >>> 11)) + result) | 0;
    return result >>> 0;
  }

  /** A uniform float in [0, 1) with 32 bits of resolution. */
  next(): number {
    return this.nextU32() / 4294967296;
  }

  /** A uniform integer in [0, n). The bias (n / 2^32) is far below anything the data could show. */
  below(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** A uniform float in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }
}

// One salt per split: the split is a whole word of the PRNG state, so streams of different splits are different
// streams, whatever the indices.
const SPLIT_SALT: Readonly<Record<SyntheticSplit, number>> = {
  train: 0x54524149, // "TRAI"
  val: 0x56414c49, // "VALI"
  heldout: 0x48454c44, // "HELD"
};
// Augmentation streams are separate from the sample stream, so augmenting never changes the sample itself.
const VIEW_SALT = [0x55564557, 0x56564557]; // "UVEW", "VVEW"

function checkSplit(split: string): SyntheticSplit {
  if (!(SYNTHETIC_SPLITS as readonly string[]).includes(split)) {
    throw new RangeError(`synthetic: unknown split "${split}"; expected one of ${SYNTHETIC_SPLITS.join(", ")}`);
  }
  return split as SyntheticSplit;
}

function checkIndex(index: number): number {
  if (!Number.isInteger(index) || index < 0 || index >= 2 ** 32) {
    throw new RangeError(`synthetic: sample index must be an integer in [0, 2^32), got ${index}`);
  }
  return index;
}

function checkSeed(seed: number): number {
  if (!Number.isSafeInteger(seed)) throw new RangeError(`synthetic: seed must be an integer, got ${seed}`);
  return seed;
}

/** The PRNG that generates sample `index` of `split` under `seed`. */
export function sampleRng(seed: number, split: SyntheticSplit, index: number): Sfc32 {
  return new Sfc32(hash32(checkSeed(seed)), SPLIT_SALT[checkSplit(split)], checkIndex(index), 1);
}

/** The PRNG that augments view `view` (0 = u, 1 = v) of sample `index` in epoch `epoch`. */
export function augmentRng(seed: number, split: SyntheticSplit, index: number, view: number, epoch = 0): Sfc32 {
  if (view !== 0 && view !== 1) throw new RangeError(`synthetic: view must be 0 or 1, got ${view}`);
  if (!Number.isSafeInteger(epoch) || epoch < 0) throw new RangeError(`synthetic: epoch must be >= 0, got ${epoch}`);
  const word0 = hash32(checkSeed(seed)) ^ hash32(epoch + 0x9e3779b9);
  return new Sfc32(word0, SPLIT_SALT[checkSplit(split)] ^ VIEW_SALT[view], checkIndex(index), 1);
}

// ---- samples -----------------------------------------------------------------------------------------------------

/** The four attributes of one object, as the caption names them. */
export interface ObjectAttributes {
  shape: ShapeName;
  colour: ColourName;
  size: SizeName;
  position: PositionName;
}

/** Where and how an object was drawn, in pixels (centre and radius in continuous image coordinates). */
export interface DrawnObject {
  centerX: number;
  centerY: number;
  radius: number;
  /** The painted colour: the palette colour times a per-object shade in [0.85, 1]. */
  rgb: [number, number, number];
}

export interface SyntheticSample {
  split: SyntheticSplit;
  index: number;
  width: number;
  height: number;
  /** H·W·3 bytes, row-major RGB. */
  pixels: Uint8Array;
  /** H·W bytes: 0 = background, 1 + shape index where the pixel centre lies inside an object (the topmost one). */
  mask: Uint8Array;
  /** Every object, main first: "a large blue square in the center and a small red circle in the top left". */
  caption: string;
  /** The main object's clause alone: "a large blue square in the center". */
  mainCaption: string;
  /** The main object's shape index (zero-shot class). */
  label: number;
  /** Per object, main first (caption order). */
  attributes: ObjectAttributes[];
  /** Per object, in the same order as attributes. */
  drawn: DrawnObject[];
}

export interface SyntheticOptions {
  /** Dataset seed (default 0). */
  seed?: number;
  /** Image side in pixels (default 64, at least 16). */
  size?: number;
  /**
   * Force the number of objects (1–3) instead of drawing it. The draw still happens, so the rest of the sample's
   * stream is unchanged; zero-shot evaluation uses 1, where the main object is the whole picture.
   */
  objects?: number;
}

function checkSize(size: number): number {
  if (!Number.isInteger(size) || size < 16 || size > 4096) {
    throw new RangeError(`synthetic: image size must be an integer in [16, 4096], got ${size}`);
  }
  return size;
}

// Position centres as fractions of the side, in POSITIONS order.
const POSITION_XY: readonly (readonly [number, number])[] = [
  [0.27, 0.27],
  [0.73, 0.27],
  [0.27, 0.73],
  [0.73, 0.73],
  [0.5, 0.5],
];
const RADIUS_RANGE: readonly (readonly [number, number])[] = [[0.09, 0.11], [0.17, 0.2]]; // small, large
const POSITION_JITTER = 0.04;

// Shapes are signed distance functions in units of the object's radius (negative inside, v pointing down). One
// evaluation per pixel gives both the anti-aliasing (coverage ramps linearly across the one pixel that straddles the
// edge) and the mask (the pixel centre is inside), instead of sixteen inside-tests per pixel for 4×4 supersampling.

// Polygons as flat [x0, y0, x1, y1, ...] lists. The star's vertices are literals rather than Math.cos/sin results so
// the geometry cannot depend on a libm: outer radius 1, inner 0.5, point up, shifted down by 0.095 so its box is
// centred. The triangle's box is centred too, and its base (2) is close to its height (1.75), like an equilateral one.
const TRIANGLE = new Float64Array([0, -0.9, 1, 0.85, -1, 0.85]);
const STAR = new Float64Array([
  0,
  -0.905,
  0.29389263,
  -0.3095085,
  0.95105652,
  -0.21401699,
  0.47552826,
  0.2495085,
  0.58778525,
  0.90401699,
  0,
  0.595,
  -0.58778525,
  0.90401699,
  -0.47552826,
  0.2495085,
  -0.95105652,
  -0.21401699,
  -0.29389263,
  -0.3095085,
]);

/** Signed distance to a polygon (Inigo Quilez's sdPolygon): nearest edge distance, sign from the winding number. */
function polygonDistance(vertices: Float64Array, u: number, v: number): number {
  const n = vertices.length / 2;
  let best = (u - vertices[0]) ** 2 + (v - vertices[1]) ** 2;
  let sign = 1;
  for (let i = 0, j = n - 1; i < n; j = i++) {
    const xi = vertices[2 * i], yi = vertices[2 * i + 1];
    const ex = vertices[2 * j] - xi, ey = vertices[2 * j + 1] - yi;
    const wx = u - xi, wy = v - yi;
    const t = Math.min(1, Math.max(0, (wx * ex + wy * ey) / (ex * ex + ey * ey)));
    const bx = wx - ex * t, by = wy - ey * t;
    best = Math.min(best, bx * bx + by * by);
    const above = v >= yi, belowNext = v < vertices[2 * j + 1], left = ex * wy > ey * wx;
    if ((above && belowNext && left) || (!above && !belowNext && !left)) sign = -sign;
  }
  return sign * Math.sqrt(best);
}

/** Signed distance to an axis-aligned box of half-sizes (hx, hy). */
function boxDistance(u: number, v: number, hx: number, hy: number): number {
  const qx = Math.abs(u) - hx, qy = Math.abs(v) - hy;
  const outside = Math.hypot(Math.max(qx, 0), Math.max(qy, 0));
  return outside + Math.min(Math.max(qx, qy), 0);
}

/**
 * Signed distance from (u, v) to shape `shape` (an index into SHAPES), in units of the object's radius, with (u, v)
 * measured from the object's centre in radii, v down. Negative inside. Exported for tests and figures.
 */
export function shapeDistance(shape: number, u: number, v: number): number {
  switch (shape) {
    case 0: // circle
      return Math.hypot(u, v) - 1;
    case 1: // square, a little smaller than the circle so their areas are closer
      return boxDistance(u, v, 0.82, 0.82);
    case 2:
      return polygonDistance(TRIANGLE, u, v);
    case 3: // cross (a plus sign): the union of two bars
      return Math.min(boxDistance(u, v, 0.3, 1), boxDistance(u, v, 1, 0.3));
    case 4: // ring between radii 0.55 and 1
      return Math.abs(Math.hypot(u, v) - 0.775) - 0.225;
    case 5:
      return polygonDistance(STAR, u, v);
    default:
      throw new RangeError(`synthetic: unknown shape index ${shape}`);
  }
}

function paintObject(pixels: Uint8Array, mask: Uint8Array, side: number, shape: number, obj: DrawnObject): void {
  const { centerX, centerY, radius, rgb } = obj;
  const x0 = Math.max(0, Math.floor(centerX - radius - 1)), x1 = Math.min(side - 1, Math.ceil(centerX + radius + 1));
  const y0 = Math.max(0, Math.floor(centerY - radius - 1)), y1 = Math.min(side - 1, Math.ceil(centerY + radius + 1));
  const inv = 1 / radius;
  const [r, g, b] = rgb;
  for (let py = y0; py <= y1; py++) {
    const v = (py + 0.5 - centerY) * inv;
    for (let px = x0; px <= x1; px++) {
      const distance = shapeDistance(shape, (px + 0.5 - centerX) * inv, v) * radius; // in pixels
      if (distance >= 0.5) continue;
      const p = (py * side + px) * 3;
      if (distance <= -0.5) {
        pixels[p] = r;
        pixels[p + 1] = g;
        pixels[p + 2] = b;
      } else {
        const alpha = 0.5 - distance;
        pixels[p] = Math.round(pixels[p] + (r - pixels[p]) * alpha);
        pixels[p + 1] = Math.round(pixels[p + 1] + (g - pixels[p + 1]) * alpha);
        pixels[p + 2] = Math.round(pixels[p + 2] + (b - pixels[p + 2]) * alpha);
      }
      if (distance <= 0) mask[py * side + px] = shape + 1;
    }
  }
}

function paintBackground(pixels: Uint8Array, side: number, rng: Sfc32): void {
  // A dim gray with a slight tint, a linear gradient and per-pixel luminance noise: enough texture that "background"
  // is not one constant colour, never bright or saturated enough to pass for a palette colour (every channel stays
  // in [0, 110]).
  const gray = 30 + rng.below(51);
  const baseR = gray + rng.below(17) - 8, baseG = gray + rng.below(17) - 8, baseB = gray + rng.below(17) - 8;
  const gradX = rng.uniform(-14, 14), gradY = rng.uniform(-14, 14);
  const invSide = 1 / side;
  for (let y = 0; y < side; y++) {
    const gy = gradY * ((y + 0.5) * invSide - 0.5);
    for (let x = 0; x < side; x++) {
      // The bases are integers, so rounding the shared shade once rounds all three channels.
      const shade = Math.round(gy + gradX * ((x + 0.5) * invSide - 0.5) + ((rng.nextU32() >>> 28) - 8));
      const p = (y * side + x) * 3;
      pixels[p] = Math.max(0, baseR + shade); // a Uint8Array store would wrap negatives, not clamp them
      pixels[p + 1] = Math.max(0, baseG + shade);
      pixels[p + 2] = Math.max(0, baseB + shade);
    }
  }
}

/** A caption clause: "a small red circle in the top left". */
export function describeObject(a: ObjectAttributes): string {
  return `a ${a.size} ${a.colour} ${a.shape} in the ${a.position}`;
}

/** Joins clauses the way English lists do: "A", "A and B", "A, B and C". */
export function joinClauses(clauses: readonly string[]): string {
  if (clauses.length <= 1) return clauses[0] ?? "";
  return `${clauses.slice(0, -1).join(", ")} and ${clauses[clauses.length - 1]}`;
}

/**
 * Sample `index` of `split`. The order of PRNG draws is part of the data's definition: changing it changes every
 * sample, so treat it like a file format (count, positions, objects, then background).
 */
export function syntheticSample(split: SyntheticSplit, index: number, options: SyntheticOptions = {}): SyntheticSample {
  const side = checkSize(options.size ?? SYNTHETIC_DEFAULT_SIZE);
  const rng = sampleRng(options.seed ?? 0, split, index);

  const drawnCount = 1 + rng.below(3);
  const count = options.objects ?? drawnCount;
  if (!Number.isInteger(count) || count < 1 || count > 3) {
    throw new RangeError(`synthetic: objects must be 1, 2 or 3, got ${options.objects}`);
  }
  // Distinct positions: a partial Fisher–Yates shuffle of the five.
  const order = [0, 1, 2, 3, 4];
  for (let k = 0; k < count; k++) {
    const j = k + rng.below(order.length - k);
    [order[k], order[j]] = [order[j], order[k]];
  }

  const attributes: ObjectAttributes[] = [];
  const drawn: DrawnObject[] = [];
  const shapes: number[] = [];
  for (let k = 0; k < count; k++) {
    const shape = rng.below(SHAPES.length);
    let colour: number;
    if (split === "heldout" && k === 0) {
      colour = HELD_OUT_COLOUR[shape];
    } else {
      // One of the six training colours of this shape: skip over the held-out one.
      colour = rng.below(COLOURS.length - 1);
      if (colour >= HELD_OUT_COLOUR[shape]) colour++;
    }
    const size = rng.below(SIZES.length);
    const [rLo, rHi] = RADIUS_RANGE[size];
    const radius = rng.uniform(rLo, rHi) * side;
    const [fx, fy] = POSITION_XY[order[k]];
    const centerX = (fx + rng.uniform(-POSITION_JITTER, POSITION_JITTER)) * side;
    const centerY = (fy + rng.uniform(-POSITION_JITTER, POSITION_JITTER)) * side;
    const shade = rng.uniform(0.85, 1);
    const palette = COLOUR_RGB[colour];
    const rgb: [number, number, number] = [
      Math.round(palette[0] * shade),
      Math.round(palette[1] * shade),
      Math.round(palette[2] * shade),
    ];
    shapes.push(shape);
    attributes.push({
      shape: SHAPES[shape],
      colour: COLOURS[colour],
      size: SIZES[size],
      position: POSITIONS[order[k]],
    });
    drawn.push({ centerX, centerY, radius, rgb });
  }

  const pixels = new Uint8Array(side * side * 3);
  const mask = new Uint8Array(side * side);
  paintBackground(pixels, side, rng);
  // Painter's order is the reverse of caption order: the main object goes on top and is never occluded.
  for (let k = count - 1; k >= 0; k--) paintObject(pixels, mask, side, shapes[k], drawn[k]);

  const clauses = attributes.map(describeObject);
  return {
    split,
    index,
    width: side,
    height: side,
    pixels,
    mask,
    caption: joinClauses(clauses),
    mainCaption: clauses[0],
    label: shapes[0],
    attributes,
    drawn,
  };
}

// ---- augmentation ------------------------------------------------------------------------------------------------

export interface AugmentOptions {
  /** Image width; default: the image is square and its side follows from the byte count. */
  width?: number;
  height?: number;
  /** RandomResizedCrop area fraction (default [0.5, 1]). */
  scale?: readonly [number, number];
  /** RandomResizedCrop aspect ratio (default [3/4, 4/3]). */
  ratio?: readonly [number, number];
  /** Probability of the brightness/contrast jitter (default 0.8, as the official ColorJitter,
   * docs/data.md#image-transforms). */
  jitterProbability?: number;
  /** Brightness and contrast factors are drawn from [1 - s, 1 + s] (default 0.2). */
  jitterStrength?: number;
}

function imageDims(pixels: Uint8Array, options: { width?: number; height?: number }): [number, number] {
  if (options.width !== undefined || options.height !== undefined) {
    const w = options.width ?? options.height!, h = options.height ?? options.width!;
    if (pixels.length !== w * h * 3) {
      throw new RangeError(`synthetic: a ${w}x${h} RGB image needs ${w * h * 3} bytes, got ${pixels.length}`);
    }
    return [w, h];
  }
  const side = Math.round(Math.sqrt(pixels.length / 3));
  if (side * side * 3 !== pixels.length) {
    throw new RangeError(`synthetic: ${pixels.length} bytes is not a square RGB image; pass width and height`);
  }
  return [side, side];
}

/**
 * One training view: a random resized crop (scale (0.5, 1), ratio (3/4, 4/3), torchvision's sampling with ten tries
 * and a centre-crop fallback), resized back to the input size with bilinear interpolation (half-pixel centres, as
 * torch's align_corners=False), then, with probability 0.8, brightness and contrast factors in [0.8, 1.2].
 *
 * Deliberately simpler than docs/data.md#image-transforms, because the captions name colours and positions: no hue or
 * saturation jitter and no grayscale (a red circle must stay red), no flip (left must stay left), and a crop of at
 * least half the area rather than 14% (objects stay roughly where the caption puts them). An object near an edge can
 * still be cut, or leave the view, while the caption keeps naming it: the same caption noise real crops cause. The
 * masks are not transformed. The full native pipeline is another issue's. Deterministic in rng.
 */
export function augmentView(pixels: Uint8Array, rng: Sfc32, options: AugmentOptions = {}): Uint8Array {
  const [width, height] = imageDims(pixels, options);
  const box = randomResizedCropBox(width, height, rng, options.scale ?? [0.5, 1], options.ratio ?? [3 / 4, 4 / 3]);
  const resized = resizeCropBilinear(pixels, width, height, box);
  // Brightness then contrast (torchvision randomises the order; a fixed order is simpler and loses nothing here).
  const strength = options.jitterStrength ?? 0.2;
  let gain = 1, offset = 0;
  if (rng.next() < (options.jitterProbability ?? 0.8)) {
    const brightness = rng.uniform(1 - strength, 1 + strength);
    const contrast = rng.uniform(1 - strength, 1 + strength);
    // Contrast blends with the mean gray level of the brightened image, like torchvision's adjust_contrast.
    const meanGray = meanGrayLevel(resized) * brightness;
    gain = brightness * contrast;
    offset = meanGray * (1 - contrast);
  }
  return affineToBytes(resized, gain, offset);
}

/** A crop rectangle in pixels. */
export interface CropBox {
  top: number;
  left: number;
  width: number;
  height: number;
}

/** torchvision's RandomResizedCrop.get_params: ten tries at a random area and log-uniform ratio, then a centre crop. */
export function randomResizedCropBox(
  width: number,
  height: number,
  rng: Sfc32,
  scale: readonly [number, number],
  ratio: readonly [number, number],
): CropBox {
  const area = width * height;
  const logLo = Math.log(ratio[0]), logHi = Math.log(ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const target = area * rng.uniform(scale[0], scale[1]);
    const aspect = Math.exp(rng.uniform(logLo, logHi));
    const w = Math.round(Math.sqrt(target * aspect)), h = Math.round(Math.sqrt(target / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const top = rng.below(height - h + 1);
      const left = rng.below(width - w + 1);
      return { top, left, width: w, height: h };
    }
  }
  return centreCropBox(width, height, ratio);
}

function centreCropBox(width: number, height: number, ratio: readonly [number, number]): CropBox {
  const inRatio = width / height;
  let w = width, h = height;
  if (inRatio < ratio[0]) h = Math.round(width / ratio[0]);
  else if (inRatio > ratio[1]) w = Math.round(height * ratio[1]);
  return { top: Math.floor((height - h) / 2), left: Math.floor((width - w) / 2), width: w, height: h };
}

/**
 * Bilinear resize of `box` to width × height, half-pixel centres (torch's align_corners=False, no antialias), source
 * coordinates clamped to the crop. Returns unrounded values so the colour jitter rounds only once.
 */
export function resizeCropBilinear(pixels: Uint8Array, width: number, height: number, box: CropBox): Float32Array {
  const x0s = new Int32Array(width), x1s = new Int32Array(width), wxs = new Float64Array(width);
  for (let x = 0; x < width; x++) {
    const sx = Math.max(0, (x + 0.5) * (box.width / width) - 0.5);
    const ix = Math.min(Math.floor(sx), box.width - 1);
    x0s[x] = (box.left + ix) * 3;
    x1s[x] = (box.left + Math.min(ix + 1, box.width - 1)) * 3;
    wxs[x] = sx - ix;
  }
  const out = new Float32Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const sy = Math.max(0, (y + 0.5) * (box.height / height) - 0.5);
    const iy = Math.min(Math.floor(sy), box.height - 1);
    const row0 = (box.top + iy) * width * 3, row1 = (box.top + Math.min(iy + 1, box.height - 1)) * width * 3;
    resizeRow(pixels, out, y * width * 3, row0, row1, sy - iy, x0s, x1s, wxs);
  }
  return out;
}

function resizeRow(
  pixels: Uint8Array,
  out: Float32Array,
  outBase: number,
  row0: number,
  row1: number,
  wy: number,
  x0s: Int32Array,
  x1s: Int32Array,
  wxs: Float64Array,
): void {
  // torch's upsample_bilinear2d arithmetic: (1 - wy)·((1 - wx)·a + wx·b) + wy·((1 - wx)·c + wx·d), channels unrolled.
  const wy0 = 1 - wy;
  for (let x = 0; x < x0s.length; x++) {
    const a = row0 + x0s[x], b = row0 + x1s[x], c = row1 + x0s[x], d = row1 + x1s[x];
    const wx = wxs[x], wx0 = 1 - wx;
    const o = outBase + x * 3;
    out[o] = wy0 * (wx0 * pixels[a] + wx * pixels[b]) + wy * (wx0 * pixels[c] + wx * pixels[d]);
    out[o + 1] = wy0 * (wx0 * pixels[a + 1] + wx * pixels[b + 1]) + wy * (wx0 * pixels[c + 1] + wx * pixels[d + 1]);
    out[o + 2] = wy0 * (wx0 * pixels[a + 2] + wx * pixels[b + 2]) + wy * (wx0 * pixels[c + 2] + wx * pixels[d + 2]);
  }
}

function meanGrayLevel(rgb: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < rgb.length; i += 3) sum += 0.299 * rgb[i] + 0.587 * rgb[i + 1] + 0.114 * rgb[i + 2];
  return sum / (rgb.length / 3);
}

function affineToBytes(values: Float32Array, gain: number, offset: number): Uint8Array {
  // One rounding and one clamp at the end, rather than after each jitter step as PIL does. On the clamped range
  // floor(x + 0.5) via `| 0` equals Math.round(x) and is several times faster in this loop.
  const out = new Uint8Array(values.length);
  const bias = offset + 0.5;
  for (let i = 0; i < values.length; i++) {
    const shifted = values[i] * gain + bias;
    out[i] = shifted <= 0 ? 0 : shifted >= 255 ? 255 : shifted | 0;
  }
  return out;
}

// ---- batching ----------------------------------------------------------------------------------------------------

/** An 8-bit RGB image, row-major H·W·3. */
export interface RgbImage {
  pixels: Uint8Array;
  width: number;
  height: number;
}

export interface NormalizeOptions {
  mean?: readonly [number, number, number];
  std?: readonly [number, number, number];
}

/**
 * Images to one (B, 3, H, W) float32 array, each value (v / 255 − mean[c]) / std[c] (ToTensor + Normalize,
 * docs/data.md#image-transforms; ImageNet mean/std by default). A 256-entry table per channel replaces the arithmetic
 * per pixel.
 */
export function toImageArray(images: readonly RgbImage[], options: NormalizeOptions = {}): Float32Array {
  const mean = options.mean ?? IMAGENET_MEAN, std = options.std ?? IMAGENET_STD;
  if (images.length === 0) throw new RangeError("toImageArray: no images");
  const { width, height } = images[0];
  const plane = width * height;
  const table = new Float32Array(3 * 256);
  for (let c = 0; c < 3; c++) for (let v = 0; v < 256; v++) table[c * 256 + v] = (v / 255 - mean[c]) / std[c];
  const out = new Float32Array(images.length * 3 * plane); // out: (B, 3, H, W)
  for (let b = 0; b < images.length; b++) {
    const image = images[b];
    if (image.width !== width || image.height !== height || image.pixels.length !== plane * 3) {
      throw new RangeError(
        `toImageArray: image ${b} is ${image.width}x${image.height} (${image.pixels.length} bytes), ` +
          `expected ${width}x${height} like image 0 (${plane * 3} bytes)`,
      );
    }
    normalizeInto(out, b * 3 * plane, image.pixels, plane, table);
  }
  return out;
}

// HWC bytes to CHW floats through the per-channel tables; a separate function so the JIT optimises the loop alone.
function normalizeInto(out: Float32Array, base: number, src: Uint8Array, plane: number, table: Float32Array): void {
  for (let i = 0; i < plane; i++) {
    out[base + i] = table[src[i * 3]];
    out[base + plane + i] = table[256 + src[i * 3 + 1]];
    out[base + 2 * plane + i] = table[512 + src[i * 3 + 2]];
  }
}

/** Images to a float32 (B, 3, H, W) tensor, normalised as toImageArray. */
export function toImageTensor(
  images: readonly RgbImage[],
  options: NormalizeOptions & { device?: Device } = {},
): Tensor {
  const { width, height } = images[0] ?? { width: 0, height: 0 };
  return Tensor.fromArray(toImageArray(images, options), [images.length, 3, height, width], {
    dtype: "float32",
    device: options.device,
  });
}

export interface SyntheticBatchOptions extends SyntheticOptions, NormalizeOptions {
  /** 2: two independent augmentations u, v (DetailCLIP); 1: u only (CLIP, evaluation). Default 2. */
  views?: 1 | 2;
  /** Apply augmentView; default: true for "train", false otherwise (evaluation sees the images as generated). */
  augment?: boolean;
  /** Mixed into the augmentation streams, so revisiting an index in a later epoch gives new views. Default 0. */
  epoch?: number;
}

/** A batch on the host: the views as (B, 3, H, W) float32 arrays. */
export interface SyntheticBatchArrays {
  /** (B, 3, H, W) normalised. */
  u: Float32Array;
  /** (B, 3, H, W), present when views = 2. */
  v?: Float32Array;
  /** [B, 3, H, W]. */
  shape: [number, number, number, number];
  captions: string[];
  /** (B,) main object's shape index. */
  labels: Int32Array;
  /** (B, H, W) class masks of the unaugmented images (for the segmentation probe, which does not augment). */
  masks: Uint8Array;
}

/** Generates, augments and normalises the samples `indices` of `split`. Pure TypeScript, no native library. */
export function syntheticBatchArrays(
  split: SyntheticSplit,
  indices: readonly number[],
  options: SyntheticBatchOptions = {},
): SyntheticBatchArrays {
  const views = options.views ?? 2;
  if (views !== 1 && views !== 2) throw new RangeError(`syntheticBatch: views must be 1 or 2, got ${views}`);
  if (indices.length === 0) throw new RangeError("syntheticBatch: no indices");
  const seed = options.seed ?? 0;
  const augment = options.augment ?? split === "train";
  const epoch = options.epoch ?? 0;
  const samples = indices.map((i) => syntheticSample(split, i, options));
  const { width, height } = samples[0];

  const viewImages = (view: number): RgbImage[] =>
    samples.map((s) =>
      augment ? { pixels: augmentView(s.pixels, augmentRng(seed, split, s.index, view, epoch)), width, height } : s
    );
  const masks = new Uint8Array(samples.length * width * height);
  samples.forEach((s, b) => masks.set(s.mask, b * width * height));
  return {
    u: toImageArray(viewImages(0), options),
    v: views === 2 ? toImageArray(viewImages(1), options) : undefined,
    shape: [samples.length, 3, height, width],
    captions: samples.map((s) => s.caption),
    labels: Int32Array.from(samples, (s) => s.label),
    masks,
  };
}

/** A batch with its views as tensors; the caller owns (and disposes) u and v. */
export interface SyntheticBatch {
  /** (B, 3, H, W) float32. */
  u: Tensor;
  /** (B, 3, H, W) float32, present when views = 2. */
  v?: Tensor;
  captions: string[];
  labels: Int32Array;
  /** (B, H, W) class masks. */
  masks: Uint8Array;
}

/** syntheticBatchArrays, with the views moved into tensors on `device`. */
export function syntheticBatch(
  split: SyntheticSplit,
  indices: readonly number[],
  options: SyntheticBatchOptions & { device?: Device } = {},
): SyntheticBatch {
  const arrays = syntheticBatchArrays(split, indices, options);
  const make = (data: Float32Array): Tensor =>
    Tensor.fromArray(data, arrays.shape, { dtype: "float32", device: options.device });
  const u = make(arrays.u);
  let v: Tensor | undefined;
  try {
    v = arrays.v === undefined ? undefined : make(arrays.v);
  } catch (error) {
    u.dispose();
    throw error;
  }
  return { u, v, captions: arrays.captions, labels: arrays.labels, masks: arrays.masks };
}

// ---- zero-shot and retrieval metadata ----------------------------------------------------------------------------

/** Zero-shot class names: the shape names, in label order. */
export function syntheticClassNames(): string[] {
  return [...SHAPES];
}

/** Zero-shot prompt templates ("{}" is the class name); the first matches the captions' own phrasing. */
export function syntheticTemplates(): string[] {
  return ["a {}.", "a photo of a {}.", "a drawing of a {}.", "a {} shape."];
}

/** labels.json content for this source (dataset key → class names, docs/evaluation.md#the-official-zero-shot-suite). */
export function syntheticLabelsJson(): Record<string, string[]> {
  return { [SYNTHETIC_DATASET_KEY]: syntheticClassNames() };
}

/** templates.json content for this source (docs/evaluation.md#the-official-zero-shot-suite: dataset key → templates
 * with "{}"). */
export function syntheticTemplatesJson(): Record<string, string[]> {
  return { [SYNTHETIC_DATASET_KEY]: syntheticTemplates() };
}

async function mergeJsonFile(path: string, entries: Record<string, string[]>): Promise<void> {
  // labels.json and templates.json hold every dataset; keep the other keys when the file exists.
  let existing: Record<string, unknown> = {};
  try {
    const parsed = JSON.parse(await Deno.readTextFile(path));
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new Error(`${path} is not a JSON object`);
    }
    existing = parsed;
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      throw new Error(`synthetic: cannot merge into ${path}: ${(error as Error).message}`, { cause: error });
    }
  }
  writeFileAtomic(path, JSON.stringify({ ...existing, ...entries }, null, 2) + "\n");
}

/** Writes (or merges this source's key into) `dir/labels.json` and `dir/templates.json`; returns their paths. */
export async function writeSyntheticZeroShotFiles(dir: string): Promise<{ labels: string; templates: string }> {
  await Deno.mkdir(dir, { recursive: true });
  const labels = `${dir}/labels.json`, templates = `${dir}/templates.json`;
  await mergeJsonFile(labels, syntheticLabelsJson());
  await mergeJsonFile(templates, syntheticTemplatesJson());
  return { labels, templates };
}
