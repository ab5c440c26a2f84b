// viz_test.ts: the pictures, read back through the native PNG decoder and checked pixel by pixel where the answer is
// known: the bitmap font and colour map, a confusion matrix whose row fractions give the cell colours, a 1,000-class
// matrix that stays small and unlabelled, recall curves at 100% and 0% drawn on the top and bottom edges, a token map
// with a hand-set mask (removed cells darker, kept cells untouched), and `deno task viz tokens` on a checkpoint from
// a two-step training run: the stated kept cells are int(cells·ratio)+1 (docs/model.md#attention-guided-token-removal)
// and exactly that many cells of the third panel are undarkened.
import { runViz } from "../cli/viz.ts";
import { UsageError } from "../cli/usage_error.ts";
import { decodeImage } from "../src/data/loader.ts";
import { encodePng } from "../src/formats/png.ts";
import { syntheticSample } from "../src/data/synthetic.ts";
import { confusionMatrixPng, recallCurvePng } from "../src/eval/plots.ts";
import { buildPreset } from "../src/models/build.ts";
import { liveTensors, type Tensor } from "../src/torch/mod.ts";
import { saveCheckpoint } from "../src/checkpoint/checkpoint.ts";
import { confusionLayout, EMPTY_ROW_RGB } from "../src/viz/confusion.ts";
import { textWidth, truncateText } from "../src/viz/font.ts";
import { PlotError } from "../src/viz/plot_error.ts";
import { luma, PALETTE, Raster, type Rgb, viridis } from "../src/viz/raster.ts";
import { recallLayout } from "../src/viz/recall_curve.ts";
import { drawTokenMap, removedPixel, tokenMapLayout } from "../src/viz/token_map.ts";
import { assert, assertEquals, assertThrows } from "./helpers.ts";

/** Decodes PNG bytes with the loader's decoder (libpng), failing the test if it does not decode. */
function decodePng(bytes: Uint8Array): { width: number; height: number; pixel(x: number, y: number): Rgb } {
  const image = decodeImage(bytes);
  if ("skip" in image) throw new Error(`the PNG does not decode: ${image.skip}`);
  const { width, height, pixels } = image;
  return {
    width,
    height,
    pixel: (x: number, y: number): Rgb => {
      const o = (y * width + x) * 3;
      return [pixels[o], pixels[o + 1], pixels[o + 2]];
    },
  };
}

/** Runs fn with console.log / console.error captured; returns the result and the printed lines. */
function capture<T>(fn: () => T): { result: T; out: string } {
  const { log, error } = console;
  const lines: string[] = [];
  console.log = (...args: unknown[]) => lines.push(args.join(" "));
  console.error = (...args: unknown[]) => lines.push(args.join(" "));
  try {
    return { result: fn(), out: lines.join("\n") };
  } finally {
    console.log = log;
    console.error = error;
  }
}

// ---- raster and font --------------------------------------------------------------------------------------------

Deno.test("raster: glyphs land where the font says, rotated text runs upwards, viridis has matplotlib's ends", () => {
  const r = new Raster(20, 20);
  r.text(2, 3, "I", [0, 0, 0]);
  // 'I' is a vertical bar in glyph column 2 with serifs at rows 0 and 6 (columns 1..3).
  for (let row = 0; row < 7; row++) assertEquals(r.get(4, 3 + row), [0, 0, 0], `stem row ${row}`);
  assertEquals(r.get(3, 3), [0, 0, 0], "top serif");
  assertEquals(r.get(3, 6), [255, 255, 255], "no ink beside the stem");
  assertEquals(r.get(2, 3), [255, 255, 255], "glyph column 0 of 'I' is blank");
  // '-' (row 3, columns 0..4) read bottom to top becomes a vertical stroke at x = left + 3.
  const up = new Raster(20, 20);
  up.textUp(5, 15, "-", [0, 0, 0]);
  for (let k = 0; k < 5; k++) assertEquals(up.get(8, 15 - 1 - k), [0, 0, 0], `rotated stroke pixel ${k}`);
  assertEquals(up.get(8, 15), [255, 255, 255], "nothing below the baseline end");
  assertEquals(textWidth("ab", 2), 22);
  assertEquals(truncateText("a very long class name", 8), "a very..");
  assertEquals(viridis(0), [68, 1, 84]);
  assertEquals(viridis(1), [253, 231, 37]);
  assertEquals(viridis(0.5), [33, 145, 140]);
});

// ---- confusion matrix -------------------------------------------------------------------------------------------

Deno.test("confusion matrix: cell colours are viridis of the row fractions, empty rows grey, size as laid out", () => {
  const names = ["circle", "square", "a class name far longer than eighteen characters", "ring"];
  const matrix = [
    [10, 0, 0, 0], // all correct: 1, 0, 0, 0
    [0, 5, 15, 0], // 0.25 / 0.75
    [2, 0, 8, 0], // 0.2 / 0.8
    [0, 0, 0, 0], // no samples
  ];
  const png = decodePng(confusionMatrixPng(matrix, names, "zero-shot shape"));
  const layout = confusionLayout(4, names, "zero-shot shape");
  assertEquals([png.width, png.height], [layout.width, layout.height], "picture size");
  assert(layout.labels && layout.classesPerCell === 1 && layout.cellPx === 40, JSON.stringify(layout));
  const expected: (Rgb | null)[][] = [
    [viridis(1), viridis(0), viridis(0), viridis(0)],
    [viridis(0), viridis(0.25), viridis(0.75), viridis(0)],
    [viridis(0.2), viridis(0), viridis(0.8), viridis(0)],
    [EMPTY_ROW_RGB, EMPTY_ROW_RGB, EMPTY_ROW_RGB, EMPTY_ROW_RGB],
  ];
  for (let i = 0; i < 4; i++) {
    for (let j = 0; j < 4; j++) {
      // 3 px inside the cell's corner: clear of the count printed at its centre.
      const x = layout.gridLeft + j * layout.cellPx + 3, y = layout.gridTop + i * layout.cellPx + 3;
      assertEquals(png.pixel(x, y), expected[i][j], `cell [${i}][${j}]`);
    }
  }
  // The count 10 is printed in cell [0][0] in black on yellow: some pixel of the cell is black.
  let ink = 0;
  for (let y = 0; y < layout.cellPx; y++) {
    for (let x = 0; x < layout.cellPx; x++) {
      const p = png.pixel(layout.gridLeft + x, layout.gridTop + y);
      if (p[0] === 0 && p[1] === 0 && p[2] === 0) ink++;
    }
  }
  assert(ink > 5, `the count in cell [0][0] should be drawn in black, found ${ink} black pixels`);
  // The colour bar runs from viridis(1) at its top to viridis(0) at its bottom.
  assertEquals(png.pixel(layout.barLeft + 5, layout.barTop), viridis(1), "colour bar top");
  assertEquals(png.pixel(layout.barLeft + 5, layout.barTop + layout.barHeight - 1), viridis(0), "colour bar bottom");
});

Deno.test("confusion matrix: 1,000 classes give one pixel per class, no name labels, at most 2,000 px", () => {
  const n = 1000;
  const matrix = Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => (i === j ? 3 : 0)));
  matrix[7][9] = 3; // class 7: half right, half predicted as 9
  const names = Array.from({ length: n }, (_, i) => `class number ${i}`);
  const png = decodePng(confusionMatrixPng(matrix, names, "ImageNet zero-shot"));
  const layout = confusionLayout(n, names, "ImageNet zero-shot");
  assertEquals([png.width, png.height], [layout.width, layout.height], "picture size");
  assert(png.width <= 2000 && png.height <= 2000, `${png.width}x${png.height} is larger than 2000 px`);
  assert(!layout.labels && layout.cellPx === 1, JSON.stringify(layout));
  const at = (i: number, j: number): Rgb => png.pixel(layout.gridLeft + j, layout.gridTop + i);
  assertEquals(at(500, 500), viridis(1), "diagonal");
  assertEquals(at(500, 501), viridis(0), "off the diagonal");
  assertEquals(at(7, 7), viridis(0.5), "class 7 right half the time");
  assertEquals(at(7, 9), viridis(0.5), "class 7 predicted as 9 half the time");
});

Deno.test("confusion matrix: beyond 1,600 classes a pixel averages a block of classes, the last one partial", () => {
  // 1,601 classes: 2 classes per pixel, 801 pixels, the last holding class 1600 alone. Class 0 is always predicted
  // as class 1 (the same block); class 2 has no samples, class 3 is right: block row 1 is class 3 alone.
  const n = 1601;
  const matrix = Array.from({ length: n }, (_, i) => {
    const row = new Array<number>(n).fill(0);
    row[i] = 4;
    return row;
  });
  matrix[0][0] = 0;
  matrix[0][1] = 4;
  matrix[2][2] = 0;
  matrix[1][1000] = 4; // class 1: half right, half predicted as 1000 (block 500)
  const names = Array.from({ length: n }, (_, i) => `c${i}`);
  const png = decodePng(confusionMatrixPng(matrix, names, "many classes"));
  const layout = confusionLayout(n, names, "many classes");
  assertEquals([layout.classesPerCell, layout.cells, layout.cellPx], [2, 801, 1]);
  assertEquals([png.width, png.height], [layout.width, layout.height], "picture size");
  assert(png.width <= 2000 && png.height <= 2000, `${png.width}x${png.height} is larger than 2000 px`);
  const at = (r: number, c: number): Rgb => png.pixel(layout.gridLeft + c, layout.gridTop + r);
  // Block row 0 = classes 0 and 1: class 0 puts all, class 1 half of its samples into block 0: mean 0.75.
  assertEquals(at(0, 0), viridis(0.75), "block (0, 0)");
  assertEquals(at(0, 500), viridis(0.25), "block (0, 500)");
  assertEquals(at(1, 1), viridis(1), "block (1, 1): class 3 alone, class 2 has no samples");
  assertEquals(at(800, 800), viridis(1), "the last, partial block");
  assertEquals(at(800, 0), viridis(0), "off the diagonal");
});

Deno.test("figures refuse input they cannot draw, naming the place", () => {
  assertThrows(() => confusionMatrixPng([[1, 2], [3]], ["a", "b"], "t"), PlotError, ["row 1", "1 entries"]);
  assertThrows(() => confusionMatrixPng([[1, -2], [3, 4]], ["a", "b"], "t"), PlotError, ["[0][1]", "-2"]);
  assertThrows(() => confusionMatrixPng([[1]], ["a", "b"], "t"), PlotError, ["1 rows but 2 class names"]);
  assertThrows(() => recallCurvePng([{ label: "I2T", recall: [10, 20, 120] }], "t"), PlotError, ["I2T", "R@3", "120"]);
  assertThrows(() => recallCurvePng([], "t"), PlotError, ["no curves"]);
  assertThrows(() => recallCurvePng([{ label: "T2I", recall: [] }], "t"), PlotError, ["T2I", "no points"]);
});

// ---- recall curves ----------------------------------------------------------------------------------------------

Deno.test("recall curves: 100% draws on the top edge, 0% on the bottom one, each in its legend colour", () => {
  const curves = [
    { label: "perfect", recall: Array(10).fill(100) },
    { label: "hopeless", recall: Array(10).fill(0) },
    { label: "rising", recall: [10, 20, 30, 40, 50, 60, 70, 80, 90, 100] },
  ];
  const png = decodePng(recallCurvePng(curves, "retrieval"));
  const layout = recallLayout(curves, "retrieval");
  assertEquals([png.width, png.height], [layout.width, layout.height], "picture size");
  assertEquals(layout.yOf(100), layout.plotTop, "100% is the top row of the plot");
  for (let k = 1; k <= 10; k++) {
    // The later "rising" curve passes through (10, 100%) and is drawn on top there.
    assertEquals(png.pixel(layout.xOf(k), layout.yOf(100)), PALETTE[k < 10 ? 0 : 2], `100% at k=${k}`);
    assertEquals(png.pixel(layout.xOf(k), layout.yOf(10 * k)), PALETTE[2], `rising at k=${k}`);
  }
  // The bottom curve is drawn over the 0% grid line, halfway between two markers.
  const mid = Math.round((layout.xOf(4) + layout.xOf(5)) / 2);
  assertEquals(png.pixel(mid, layout.yOf(0)), PALETTE[1], "hopeless between k=4 and k=5");
  // Nothing is drawn at 50% between k = 1 and 2, where no curve passes.
  const empty = png.pixel(Math.round((layout.xOf(1) + layout.xOf(2)) / 2) + 1, layout.yOf(55));
  assertEquals(empty, [255, 255, 255], "background where no curve passes");
});

// ---- token map --------------------------------------------------------------------------------------------------

Deno.test("token map: removed cells are darker, kept cells untouched, the attention peak is the brightest", () => {
  // A 16 px bright gradient image, 4×4 patches of 4 px, 2×2-patch cells; cells 0 and 3 (top left, bottom right)
  // are removed by hand. Attention rises with the patch index, so the last patch is the peak.
  const size = 16, grid = 4, cell = 2;
  const pixels = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) pixels.set([120 + 8 * x, 200 - 4 * y, 160], (y * size + x) * 3);
  }
  const removedCells = new Set([0, 3]);
  const removed = Array.from({ length: grid * grid }, (_, p) => {
    const cellIndex = Math.floor(Math.floor(p / grid) / cell) * (grid / cell) + Math.floor((p % grid) / cell);
    return removedCells.has(cellIndex);
  });
  const attention = Array.from({ length: grid * grid }, (_, p) => 0.01 + p * 0.001);
  const title = "hand-set mask";
  const { raster, layout } = drawTokenMap({
    image: { width: size, height: size, pixels },
    attention,
    removed,
    gridSize: grid,
    cell,
    title,
  });
  const png = decodePng(raster.toPng());
  assertEquals([png.width, png.height], [layout.width, layout.height]);
  assertEquals(layout, { ...tokenMapLayout(size), width: layout.width }, "the layout of tokenMapLayout");
  const { scale, panels } = layout;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const source: Rgb = [pixels[(y * size + x) * 3], pixels[(y * size + x) * 3 + 1], 160];
      // Sample the centre of the magnified source pixel (clear of the grid lines on cell edges).
      const at = (i: number): Rgb => png.pixel(panels[i].left + x * scale + 1, panels[i].top + y * scale + 1);
      assertEquals(at(0), source, `input panel at (${x}, ${y})`);
      const cellIndex = Math.floor(y / 8) * 2 + Math.floor(x / 8);
      if (removedCells.has(cellIndex)) {
        assertEquals(at(2), removedPixel(source), `removed pixel (${x}, ${y})`);
        assert(luma(at(2)) < luma(source) - 50, `removed pixel (${x}, ${y}) is not darker: ${at(2)} vs ${source}`);
      } else {
        assertEquals(at(2), source, `kept pixel (${x}, ${y})`);
      }
    }
  }
  // Attention panel: the peak patch (last) is tinted towards viridis' yellow, the lowest (first) towards its purple.
  const peak = png.pixel(panels[1].left + 14 * scale, panels[1].top + 14 * scale);
  const low = png.pixel(panels[1].left + 1 * scale, panels[1].top + 1 * scale);
  assert(peak[1] > low[1] + 60 && low[2] > low[1], `peak ${peak} should be yellower than ${low}`);
});

// ---- deno task viz tokens ---------------------------------------------------------------------------------------

const main = new URL("../cli/main.ts", import.meta.url).pathname;

Deno.test("deno task viz tokens: a trained checkpoint's kept cells are int(cells*ratio)+1, drawn undarkened", () => {
  const dir = Deno.makeTempDirSync({ prefix: "dc_viz_test_" });
  try {
    // Two optimizer steps of tiny_synthetic (64 px, 8×8 patches, 2×2 cells: 16 cells), mask ratio 0.5.
    const train = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", "--unstable-ffi", main, "train", "--synthetic-size", "64", "--batch-size", "8"]
        .concat(["--epochs", "1", "--max-steps", "2", "--save-freq", "2", "--eval-size", "0", "--threads", "1"])
        .concat(["--output-dir", dir]),
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
    const log = new TextDecoder().decode(train.stdout) + new TextDecoder().decode(train.stderr);
    assertEquals(train.code, 0, `training failed:\n${log}`);
    const checkpoint = `${dir}/checkpoint-00000002.safetensors`;

    // A 64 px image needs no resize: the input panel must show its pixels exactly.
    const sample = syntheticSample("val", 3, { size: 64 });
    Deno.writeFileSync(`${dir}/in.png`, encodePng(64, 64, sample.pixels, "rgb"));
    // A 96×80 image goes through Resize(64) + CenterCrop(64).
    const wide = syntheticSample("val", 5, { size: 96 });
    Deno.writeFileSync(`${dir}/wide.png`, encodePng(96, 80, wide.pixels.subarray(0, 96 * 80 * 3), "rgb"));

    const before = liveTensors();
    const cases: [string, string[], number, number][] = [
      ["in.png", [], 0.5, Math.floor(16 * 0.5) + 1], // the checkpoint's ratio: 9 cells
      ["in.png", ["--mask-ratio", "0.25"], 0.25, Math.floor(16 * 0.25) + 1], // 5 cells
      ["wide.png", ["--mask-ratio", "0"], 0, 1],
      ["wide.png", ["--mask-ratio", "1"], 1, 16],
    ];
    for (const [image, extra, ratio, expectedCells] of cases) {
      const out = `${dir}/tokens-${image}-${ratio}.png`;
      const args = ["tokens", "--checkpoint", checkpoint, "--image", `${dir}/${image}`, "--out", out, ...extra];
      const { result: code, out: printed } = capture(() => runViz(args));
      assertEquals(code, 0, `viz tokens ${extra.join(" ")}: ${printed}`);
      const stated = printed.match(/kept (\d+) of (\d+) cells \((\d+) of (\d+) tokens\), mask ratio ([\d.]+)/);
      assert(stated !== null, `no summary line in: ${printed}`);
      const [keptCells, cells, keptTokens, tokens, statedRatio] = stated.slice(1).map(Number);
      assertEquals([cells, tokens, statedRatio], [16, 64, ratio], "cells, tokens, ratio");
      assertEquals(keptCells, expectedCells, `kept cells at ratio ${ratio} (int(16*${ratio})+1)`);
      assertEquals(keptTokens, 4 * expectedCells, "kept tokens = 4 per cell");

      const png = decodePng(Deno.readFileSync(out));
      const layout = tokenMapLayout(64);
      assertEquals([png.width, png.height], [layout.width, layout.height], "picture size");
      const { scale, panels } = layout;
      if (image === "in.png") {
        for (const [x, y] of [[0, 0], [31, 40], [63, 63], [20, 5]]) {
          const o = (y * 64 + x) * 3;
          const source = [sample.pixels[o], sample.pixels[o + 1], sample.pixels[o + 2]];
          assertEquals(png.pixel(panels[0].left + x * scale, panels[0].top + y * scale), source, `input (${x},${y})`);
        }
      }
      // Each cell is 16×16 input pixels; compare its interior in panel 3 with panel 1 (the grid lines sit on the
      // first row and column of each cell).
      let undarkened = 0, darker = 0;
      for (let cy = 0; cy < 4; cy++) {
        for (let cx = 0; cx < 4; cx++) {
          let same = true, lumaInput = 0, lumaShown = 0;
          for (let y = 1; y < 16 * scale; y++) {
            for (let x = 1; x < 16 * scale; x++) {
              const px = cx * 16 * scale + x, py = cy * 16 * scale + y;
              const input = png.pixel(panels[0].left + px, panels[0].top + py);
              const shown = png.pixel(panels[2].left + px, panels[2].top + py);
              if (input[0] !== shown[0] || input[1] !== shown[1] || input[2] !== shown[2]) same = false;
              lumaInput += luma(input);
              lumaShown += luma(shown);
            }
          }
          if (same) undarkened++;
          else if (lumaShown < lumaInput) darker++;
        }
      }
      assertEquals(undarkened, keptCells, `undarkened cells at ratio ${ratio}`);
      assertEquals(darker, 16 - keptCells, `darkened cells at ratio ${ratio}`);
    }
    assertEquals(liveTensors(), before, "live tensors after the viz runs");

    // A plain CLIP checkpoint has no teacher: exit 6 (checkpoint, docs/errors.md) and a message that says so.
    const clip = buildPreset("CLIP_tiny_synthetic");
    const tensors = new Map<string, Tensor>();
    for (const [key, value] of clip.stateDict()) tensors.set(`model.${key}`, value);
    const clipDir = `${dir}/clip`;
    const clipPath = saveCheckpoint(clipDir, {
      tensors,
      meta: { step: 0, model_config: clip.config, tokenizer_merges: [] },
    });
    clip.dispose();
    const refused = capture(() =>
      runViz(["tokens", "--checkpoint", clipPath, "--image", `${dir}/in.png`, "--out", `${dir}/x.png`])
    );
    assertEquals(refused.result, 6, refused.out);
    assert(refused.out.includes("no EMA teacher"), refused.out);
    const missing = capture(() =>
      runViz(["tokens", "--checkpoint", checkpoint, "--image", `${dir}/none.png`, "--out", `${dir}/x.png`])
    );
    assertEquals(missing.result, 5, missing.out); // a missing image: the data status
    assert(missing.out.includes("none.png") && missing.out.includes("image_missing"), missing.out);
    assertThrows(
      () => runViz(["tokens", "--checkpoint", checkpoint, "--image", "a.png", "--out", "b.png", "--mask-ratio", "1.5"]),
      UsageError,
      ["--mask-ratio", "1.5"],
    );
    assertThrows(() => runViz(["tokens", "--image", "a.png"]), UsageError, ["--checkpoint", "--out"]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
