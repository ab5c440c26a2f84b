// synthetic_preview.ts: draws a 4×4 grid of synthetic captioned-shapes samples (each image beside its class mask) to a
// PNG, and their captions to a text file, so a person can check that the shapes are recognisable and the captions
// and masks match the pictures. Captions live in the text file rather than in the picture: no font rendering here.
//
//   deno run --allow-write tools/synthetic_preview.ts [--split train|val|heldout] [--seed N] [--start I]
//     [--size PX] [--scale K] [--augment] [--out output/synthetic_preview]
import { parseArgs } from "node:util";
import { encodePng } from "../src/formats/png.ts";
import {
  augmentRng,
  augmentView,
  SHAPES,
  SYNTHETIC_SPLITS,
  type SyntheticSample,
  syntheticSample,
  type SyntheticSplit,
} from "../src/data/synthetic.ts";

const GRID = 4;
const GAP = 6;
// Mask colours per class (0 = background), unrelated to the object colours so a mask reads as "which shape".
const MASK_RGB: readonly (readonly [number, number, number])[] = [
  [0, 0, 0],
  [230, 25, 75], // circle
  [60, 180, 75], // square
  [0, 130, 200], // triangle
  [255, 225, 25], // cross
  [145, 30, 180], // ring
  [70, 240, 240], // star
];

function fail(message: string): never {
  console.error(`synthetic_preview: ${message}`);
  Deno.exit(2);
}

function blit(
  canvas: Uint8Array,
  canvasWidth: number,
  x0: number,
  y0: number,
  side: number,
  scale: number,
  colourAt: (i: number) => ArrayLike<number>,
): void {
  for (let y = 0; y < side * scale; y++) {
    for (let x = 0; x < side * scale; x++) {
      const rgb = colourAt(Math.floor(y / scale) * side + Math.floor(x / scale));
      canvas.set(rgb, ((y0 + y) * canvasWidth + x0 + x) * 3);
    }
  }
}

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    args: Deno.args,
    options: {
      split: { type: "string", default: "train" },
      seed: { type: "string", default: "0" },
      start: { type: "string", default: "0" },
      size: { type: "string", default: "64" },
      scale: { type: "string", default: "3" },
      out: { type: "string", default: "output/synthetic_preview" },
      augment: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (args.help) {
    console.log(
      "usage: deno run --allow-write tools/synthetic_preview.ts [--split train|val|heldout] [--seed N] [--start I]\n" +
        "         [--size PX] [--scale K] [--augment] [--out PREFIX]  (writes PREFIX.png and PREFIX.txt)",
    );
    return;
  }
  if (!(SYNTHETIC_SPLITS as readonly string[]).includes(args.split)) {
    fail(`--split must be one of ${SYNTHETIC_SPLITS.join(", ")}, got "${args.split}"`);
  }
  const split = args.split as SyntheticSplit;
  const int = (name: string, value: string, min: number): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) fail(`--${name} must be an integer >= ${min}, got "${value}"`);
    return n;
  };
  const seed = int("seed", args.seed, 0), start = int("start", args.start, 0);
  const size = int("size", args.size, 16), scale = int("scale", args.scale, 1);

  const samples: SyntheticSample[] = [];
  for (let k = 0; k < GRID * GRID; k++) samples.push(syntheticSample(split, start + k, { seed, size }));

  // Each cell: the image, a small gap, its mask; cells separated by a gap on a light gray canvas.
  const cellWidth = 2 * size * scale + GAP, cellHeight = size * scale;
  const width = GRID * cellWidth + (GRID + 1) * GAP * 2, height = GRID * cellHeight + (GRID + 1) * GAP * 2;
  const canvas = new Uint8Array(width * height * 3).fill(200);
  const lines = [
    `synthetic captioned shapes: split=${split} seed=${seed} indices ${start}..${start + GRID * GRID - 1} ` +
    `size=${size}${args.augment ? " (augmented view u)" : ""}`,
    "each cell: image (left), class mask (right; black = background, one colour per shape class)",
    "",
  ];
  samples.forEach((s, k) => {
    const row = Math.floor(k / GRID), col = k % GRID;
    const x0 = 2 * GAP + col * (cellWidth + 2 * GAP), y0 = 2 * GAP + row * (cellHeight + 2 * GAP);
    const pixels = args.augment ? augmentView(s.pixels, augmentRng(seed, split, s.index, 0)) : s.pixels;
    blit(canvas, width, x0, y0, size, scale, (i) => pixels.subarray(i * 3, i * 3 + 3));
    blit(canvas, width, x0 + size * scale + GAP, y0, size, scale, (i) => MASK_RGB[s.mask[i]]);
    lines.push(`row ${row} col ${col} (index ${s.index}, label ${s.label} = ${SHAPES[s.label]}): ${s.caption}`);
  });

  const slash = args.out.lastIndexOf("/");
  if (slash > 0) await Deno.mkdir(args.out.slice(0, slash), { recursive: true });
  await Deno.writeFile(`${args.out}.png`, encodePng(width, height, canvas));
  await Deno.writeTextFile(`${args.out}.txt`, lines.join("\n") + "\n");
  console.log(`wrote ${args.out}.png (${width}x${height}) and ${args.out}.txt`);
}

if (import.meta.main) await main();
