// token_selection_test.ts: the native token-selection op (dc_select_tokens via src/models/token_selection.ts) against
// hand-computed grids, PyTorch's own bilinear resize (the op must reproduce its rounding bit for bit), a composition
// of libtorch ops (interpolate -> stable argsort -> top cells) on random scores, and the masks the official code
// produced for the golden step. Every test checks that it left no native handle behind.
import { keepCellsForRatio, selectTokens } from "../src/models/token_selection.ts";
import {
  cat,
  cudaIsAvailable,
  F,
  liveTensors,
  SafeTensorsFile,
  Tensor,
  tidy,
  TorchError,
  torchVersion,
} from "../src/torch/mod.ts";
import { assert, assertEquals, assertThrows, GOLDEN_DIR, rng, uniformValues } from "./helpers.ts";

const GOLDEN = GOLDEN_DIR;

function test(name: string, fn: () => void, options: { ignore?: boolean } = {}): void {
  Deno.test({
    name,
    ignore: options.ignore ?? false,
    fn() {
      const before = liveTensors();
      tidy(fn);
      assertEquals(liveTensors(), before, `${name}: live tensor handles after the scope`);
    },
  });
}

interface Expected {
  mask: number[][];
  idsKeep: number[][];
  idsRestore: number[][];
}

/** The three outputs from a mask alone: kept ascending, then removed ascending; restore is the inverse. */
function fromMask(mask: number[][]): Expected {
  const idsKeep: number[][] = [];
  const idsRestore: number[][] = [];
  for (const row of mask) {
    const kept = row.flatMap((m, i) => (m ? [] : [i]));
    const removed = row.flatMap((m, i) => (m ? [i] : []));
    const restore = new Array<number>(row.length);
    [...kept, ...removed].forEach((patch, slot) => (restore[patch] = slot));
    idsKeep.push(kept);
    idsRestore.push(restore);
  }
  return { mask, idsKeep, idsRestore };
}

/** A (gridH*gridW) patch mask from a per-cell removal list (1 = removed), cells in raster order. */
function expandCells(cellRemoved: number[], gridH: number, gridW: number, cell: number): number[] {
  const cellsW = gridW / cell;
  const out: number[] = [];
  for (let p = 0; p < gridH * gridW; p++) {
    const r = Math.floor(Math.floor(p / gridW) / cell), c = Math.floor((p % gridW) / cell);
    out.push(cellRemoved[r * cellsW + c]);
  }
  return out;
}

function rows(t: Tensor): number[][] {
  const [b, n] = t.shape;
  const flat = t.toArray();
  return Array.from({ length: b }, (_, i) => flat.slice(i * n, (i + 1) * n));
}

function checkSelection(got: ReturnType<typeof selectTokens>, expected: Expected, label: string): void {
  const b = expected.mask.length, n = expected.mask[0].length, k = expected.idsKeep[0].length;
  assertEquals(got.mask.dtype, "bool", `${label} mask dtype`);
  assertEquals(got.idsKeep.dtype, "int64", `${label} idsKeep dtype`);
  assertEquals(got.idsRestore.dtype, "int64", `${label} idsRestore dtype`);
  assertEquals(got.mask.shape, [b, n], `${label} mask shape`);
  assertEquals(got.idsKeep.shape, [b, k], `${label} idsKeep shape`);
  assertEquals(got.idsRestore.shape, [b, n], `${label} idsRestore shape`);
  assertEquals(rows(got.mask), expected.mask, `${label} mask`);
  assertEquals(rows(got.idsKeep), expected.idsKeep, `${label} idsKeep`);
  assertEquals(rows(got.idsRestore), expected.idsRestore, `${label} idsRestore`);
}

/**
 * The official 2x2 cell score of one block (a b / c d): libtorch 1.13's bilinear 14x14 -> 7x7 resize of a
 * (B, 1, H, W) tensor weighs each tap by 0.25 and sums in double in raster order, then rounds to float.
 */
function officialCell(a: number, b: number, c: number, d: number): number {
  return Math.fround(a * 0.25 + b * 0.25 + c * 0.25 + d * 0.25);
}

/** Two float orders the op must NOT use: NCHW bilinear (width pass, then height) and a running float mean. */
function widthThenHeightCell(a: number, b: number, c: number, d: number): number {
  const f = Math.fround;
  return f(f(f(f(a * 0.5) + f(b * 0.5)) * 0.5) + f(f(f(c * 0.5) + f(d * 0.5)) * 0.5));
}
function floatMeanCell(a: number, b: number, c: number, d: number): number {
  const f = Math.fround;
  return f(f(f(f(a + b) + c) + d) / 4);
}

// ---- hand-computed grids ----------------------------------------------------------------------------------------

test("4x4 patches, 2x2 cells: ratio 0.5 keeps 3 of 4 cells", () => {
  // Cell scores (means): [0.25, 0.9; 0.5, 0.1] -> ranking 1, 2, 0, 3; floor(4 * 0.5) + 1 = 3 kept, cell 3 removed.
  const scores = Tensor.fromArray(
    [
      [0.2, 0.3, 0.9, 0.9],
      [0.2, 0.3, 0.9, 0.9],
      [0.5, 0.5, 0.1, 0.1],
      [0.5, 0.5, 0.1, 0.1],
    ].flat(),
    [1, 16],
  );
  const mask = [[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1]];
  checkSelection(selectTokens(scores, { gridH: 4, gridW: 4, ratio: 0.5 }), fromMask(mask), "4x4");
  // ratio 0: one cell kept (the best, cell 1).
  const one = [[1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]];
  checkSelection(selectTokens(scores, { gridH: 4, gridW: 4, ratio: 0 }), fromMask(one), "4x4 ratio 0");
});

test("8x8 patches, 2x2 cells, two images with different rankings", () => {
  // Image 0: cell c scores c (ascending), so the top 5 = cells 15..11. Image 1: cell c scores 16 - c, top = 0..4.
  // ratio 0.25: floor(16 * 0.25) + 1 = 5 cells kept, 44 of 64 patches removed in both images.
  const cellScore = [(c: number) => c, (c: number) => 16 - c];
  const data: number[] = [];
  for (const score of cellScore) {
    for (let p = 0; p < 64; p++) data.push(score(Math.floor(p / 16) * 4 + Math.floor((p % 8) / 2)));
  }
  const scores = Tensor.fromArray(data, [2, 64]);
  const removed0 = Array.from({ length: 16 }, (_, c) => (c >= 11 ? 0 : 1));
  const removed1 = Array.from({ length: 16 }, (_, c) => (c <= 4 ? 0 : 1));
  const expected = fromMask([expandCells(removed0, 8, 8, 2), expandCells(removed1, 8, 8, 2)]);
  const got = selectTokens(scores, { gridH: 8, gridW: 8, cell: 2, ratio: 0.25 });
  checkSelection(got, expected, "8x8");
  assertEquals(got.idsKeep.shape, [2, 20], "20 patches kept per image");
});

test("6x6 patches, 3x3 cells use the block mean", () => {
  // Cell 0 holds one large value (mean 10/9 ~ 1.11), cell 1 all 1.0, cell 2 all 0.5, cell 3 all 1.2.
  // Ranking: 3, 0, 1, 2; ratio 0.5 keeps floor(2) + 1 = 3, so cell 2 (bottom left) is removed.
  const data = new Array<number>(36).fill(0);
  const set = (cell: number, fill: number): void => {
    const r0 = Math.floor(cell / 2) * 3, c0 = (cell % 2) * 3;
    for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) data[(r0 + i) * 6 + c0 + j] = fill;
  };
  set(1, 1.0);
  set(2, 0.5);
  set(3, 1.2);
  data[7] = 10; // cell 0, centre
  const got = selectTokens(Tensor.fromArray(data, [1, 36]), { gridH: 6, gridW: 6, cell: 3, ratio: 0.5 });
  checkSelection(got, fromMask([expandCells([0, 0, 1, 0], 6, 6, 3)]), "6x6/3");
  // ratio 0.25: floor(1) + 1 = 2 kept (cells 3 and 0).
  const two = selectTokens(Tensor.fromArray(data, [1, 36]), { gridH: 6, gridW: 6, cell: 3, ratio: 0.25 });
  checkSelection(two, fromMask([expandCells([0, 1, 1, 0], 6, 6, 3)]), "6x6/3 ratio 0.25");
});

test("cell 1 ranks single patches; non-square grid", () => {
  // 2x3 grid, scores [0.3, 0.1, 0.6; 0.2, 0.5, 0.4]: ranking 2, 4, 5, 0, 3, 1. ratio 0.5 keeps floor(3) + 1 = 4.
  const scores = Tensor.fromArray([0.3, 0.1, 0.6, 0.2, 0.5, 0.4], [1, 6]);
  const got = selectTokens(scores, { gridH: 2, gridW: 3, cell: 1, ratio: 0.5 });
  checkSelection(got, fromMask([[0, 1, 0, 1, 0, 0]]), "2x3/1");
});

test("ties keep the lower cell index (stable ranking)", () => {
  // All 16 cells equal: the first keepCells cells in raster order are kept.
  const scores = Tensor.full([1, 64], 0.25);
  const got = selectTokens(scores, { gridH: 8, gridW: 8, ratio: 0.25 });
  const removed = Array.from({ length: 16 }, (_, c) => (c < 5 ? 0 : 1));
  checkSelection(got, fromMask([expandCells(removed, 8, 8, 2)]), "all equal");
  // A tie at the cut: cells 3 and 9 share the second-best score; only one more cell fits, so cell 3 wins.
  const cells = new Array<number>(16).fill(0.1);
  cells[12] = 0.9;
  cells[9] = 0.5;
  cells[3] = 0.5;
  const data = Array.from({ length: 64 }, (_, p) => cells[Math.floor(p / 16) * 4 + Math.floor((p % 8) / 2)]);
  const cut = selectTokens(Tensor.fromArray(data, [1, 64]), { gridH: 8, gridW: 8, ratio: 1 / 16 });
  const removedCut = Array.from({ length: 16 }, (_, c) => (c === 12 || c === 3 ? 0 : 1));
  checkSelection(cut, fromMask([expandCells(removedCut, 8, 8, 2)]), "tie at the cut");
});

test("ratio edge values: 0 keeps one cell, values near 1 keep everything", () => {
  const scores = Tensor.fromArray(uniformValues(2 * 196, 7, 0, 1), [2, 196]);
  for (const [ratio, keep] of [[0, 1], [0.25, 13], [0.5, 25], [0.75, 37], [0.9, 45], [0.97, 48], [0.98, 49], [1, 49]]) {
    assertEquals(keepCellsForRatio(49, ratio), keep, `keepCellsForRatio(49, ${ratio})`);
    const got = selectTokens(scores, { gridH: 14, gridW: 14, ratio });
    assertEquals(got.idsKeep.shape, [2, 4 * keep], `ratio ${ratio} kept patches`);
    assertEquals(got.mask.sum().item(), 2 * (196 - 4 * keep), `ratio ${ratio} removed patches`);
  }
  // Everything kept: idsKeep is the identity and so is idsRestore.
  const all = selectTokens(scores, { gridH: 14, gridW: 14, ratio: 1 });
  const identity = Array.from({ length: 196 }, (_, i) => i);
  checkSelection(all, {
    mask: [new Array(196).fill(0), new Array(196).fill(0)],
    idsKeep: [identity, identity],
    idsRestore: [identity, identity],
  }, "ratio 1");
});

test("bad arguments are clear errors", () => {
  const scores = Tensor.zeros([2, 25]);
  assertThrows(() => selectTokens(scores, { gridH: 5, gridW: 5, ratio: 0.5 }), TorchError, [
    "select_tokens",
    "5x5 patch grid is not divisible into 2x2 cells",
  ]);
  assertThrows(() => selectTokens(scores, { gridH: 4, gridW: 4, ratio: 0.5 }), TorchError, [
    "25 patches per image",
    "has 16",
  ]);
  assertThrows(() => selectTokens(scores, { gridH: 5, gridW: 5, cell: 1, ratio: 1.5 }), TorchError, ["[0, 1]"]);
  assertThrows(() => selectTokens(scores, { gridH: 5, gridW: 5, cell: 1, ratio: NaN }), TorchError, ["[0, 1]"]);
  assertThrows(() => selectTokens(Tensor.zeros([25]), { gridH: 5, gridW: 5, cell: 1, ratio: 0.5 }), TorchError, [
    "must be 2-D",
  ]);
  assertThrows(
    () => selectTokens(Tensor.zeros([1, 4], { dtype: "int64" }), { gridH: 2, gridW: 2, ratio: 0 }),
    TorchError,
    [
      "floating point",
    ],
  );
  assertThrows(() => keepCellsForRatio(49, -0.1), RangeError, ["[0, 1]"]);
});

// ---- bit-exactness against PyTorch's bilinear resize ------------------------------------------------------------

// The golden masks were made by PyTorch 1.13 on the CPU; other libtorch versions may round this resize differently,
// and the op keeps the 1.13 arithmetic regardless (the golden test below holds on every version).
test("the cell formula equals at::upsample_bilinear2d on the official (B, 1, H, W) layout, bit for bit", () => {
  // Scores spanning several binades, so different summation orders actually round differently.
  const next = rng(11);
  for (const [h, w] of [[14, 14], [6, 10]]) {
    const data = Array.from({ length: 8 * h * w }, () => Math.fround(next() * 2 ** Math.floor(next() * 12 - 6)));
    const resized = F.interpolate(Tensor.fromArray(data, [8, 1, h, w]), [h / 2, w / 2], "bilinear", false).toArray();
    let differs = 0;
    for (let b = 0; b < 8; b++) {
      for (let r = 0; r < h / 2; r++) {
        for (let c = 0; c < w / 2; c++) {
          const at = (i: number, j: number): number => data[b * h * w + i * w + j];
          const taps = [
            at(2 * r, 2 * c),
            at(2 * r, 2 * c + 1),
            at(2 * r + 1, 2 * c),
            at(2 * r + 1, 2 * c + 1),
          ] as const;
          const expected = officialCell(...taps);
          const got = resized[b * (h / 2) * (w / 2) + r * (w / 2) + c];
          assert(got === expected, `${h}x${w} image ${b} cell (${r}, ${c}): interpolate ${got}, formula ${expected}`);
          if (widthThenHeightCell(...taps) !== expected || floatMeanCell(...taps) !== expected) differs++;
        }
      }
    }
    assert(differs > 0, `${h}x${w}: no cell where a float order differs, so the comparison proves nothing`);
  }
}, { ignore: !torchVersion().startsWith("1.13") });

test("the op ranks with the official rounding, not a float order", () => {
  // Find 2x2 blocks x whose official value v differs from both float orders, on the same side. Pair each with a
  // block y of four copies of v (pooled to exactly v by any rule): under the official rule x and y tie and the lower
  // index wins; under a float order the larger one would win. Both sides are checked, so no rule passes by luck.
  const next = rng(5);
  const found: { x: [number, number, number, number]; v: number }[] = [];
  while (found.length < 2) {
    const x = [0, 0, 0, 0].map(() => Math.fround(next() * 2 ** Math.floor(next() * 8 - 4))) as [
      number,
      number,
      number,
      number,
    ];
    const v = officialCell(...x);
    const alternatives = [widthThenHeightCell(...x), floatMeanCell(...x)];
    const above = found.length === 0; // first an x that a float rule would rank above y, then one it ranks below
    if (alternatives.every((alt) => (above ? alt > v : alt < v))) found.push({ x, v });
  }
  // Grid 2x4 = cells [left, right]; ratio 0 keeps one cell.
  const layout = (left: number[], right: number[]): number[] => [
    ...[left[0], left[1], right[0], right[1]],
    ...[left[2], left[3], right[2], right[3]],
  ];
  // Case 1: y left, x right, float(x) > v: the official rule keeps y (tie, lower index); a float rule would keep x.
  const { x: x1, v: v1 } = found[0];
  const got1 = selectTokens(Tensor.fromArray(layout([v1, v1, v1, v1], x1), [1, 8]), { gridH: 2, gridW: 4, ratio: 0 });
  assertEquals(rows(got1.mask), [[0, 0, 1, 1, 0, 0, 1, 1]], "y kept on the tie");
  // Case 2: x left, y right, float(x) < v: the official rule keeps x (tie, lower index); a float rule would keep y.
  const { x: x2, v: v2 } = found[1];
  const got2 = selectTokens(Tensor.fromArray(layout(x2, [v2, v2, v2, v2]), [1, 8]), { gridH: 2, gridW: 4, ratio: 0 });
  assertEquals(rows(got2.mask), [[0, 0, 1, 1, 0, 0, 1, 1]], "x kept on the tie");
});

test("random scores match interpolate -> stable descending argsort -> top cells (libtorch composition)", () => {
  const next = rng(23);
  for (const ratio of [0, 0.3, 0.5, 0.75]) {
    const b = 16;
    const data = Array.from({ length: b * 196 }, () => Math.fround(next() / 196));
    const scores = Tensor.fromArray(data, [b, 196]);
    const got = selectTokens(scores, { gridH: 14, gridW: 14, ratio });
    // The official get_att_mask, with a stable sort.
    const pooled = F.interpolate(scores.reshape([b, 1, 14, 14]), [7, 7], "bilinear", false).reshape([b, 49]);
    const order = pooled.argsort(-1, { descending: true, stable: true }).toArray();
    const keep = keepCellsForRatio(49, ratio);
    const cellMasks = Array.from({ length: b }, (_, i) => {
      const removed = new Array<number>(49).fill(1);
      for (let k = 0; k < keep; k++) removed[order[i * 49 + k]] = 0;
      return expandCells(removed, 14, 14, 2);
    });
    checkSelection(got, fromMask(cellMasks), `ratio ${ratio}`);
    // docs/model.md#student-token-removal: ids_restore = argsort(argsort(mask)) with a stable sort.
    const ids = got.mask.long().argsort(-1, { stable: true });
    const restore = ids.argsort(-1, { stable: true });
    assertEquals(rows(got.idsRestore), rows(restore), `ratio ${ratio} idsRestore vs argsort(argsort(mask))`);
    assertEquals(rows(got.idsKeep), rows(ids.slice(1, 0, 4 * keep)), `ratio ${ratio} idsKeep vs argsort(mask)`);
  }
});

test("float64 and non-contiguous scores; no gradient through the selection", () => {
  const data = uniformValues(2 * 64, 3, 0, 1).map(Math.fround); // the same values in both dtypes
  const f32 = selectTokens(Tensor.fromArray(data, [2, 64]), { gridH: 8, gridW: 8, ratio: 0.5 });
  const f64 = selectTokens(Tensor.fromArray(Float64Array.from(data), [2, 64]), { gridH: 8, gridW: 8, ratio: 0.5 });
  // The cell means differ only below float32 precision, which cannot reorder cells of random scores.
  assertEquals(rows(f64.mask), rows(f32.mask), "float64 mask");
  const bf16 = selectTokens(Tensor.fromArray(data, [2, 64], { dtype: "bfloat16" }), { gridH: 8, gridW: 8, ratio: 0.5 });
  assertEquals(bf16.idsKeep.shape, [2, 36], "bfloat16 scores are accepted (widened to float32)");
  const transposed = Tensor.fromArray(data, [64, 2]).transpose(0, 1);
  assert(!transposed.isContiguous, "the input must be a non-contiguous view");
  const strided = selectTokens(transposed, { gridH: 8, gridW: 8, ratio: 0.5 });
  const reference = selectTokens(transposed.contiguous(), { gridH: 8, gridW: 8, ratio: 0.5 });
  assertEquals(rows(strided.idsRestore), rows(reference.idsRestore), "non-contiguous input");
  const leaf = Tensor.fromArray(data, [2, 64]).requiresGrad_();
  const out = selectTokens(leaf, { gridH: 8, gridW: 8, ratio: 0.5 });
  assert(!out.mask.requiresGrad && !out.idsKeep.requiresGrad && !out.idsRestore.requiresGrad, "outputs need no grad");
});

test("CUDA scores give the CPU results on the same device", () => {
  const data = uniformValues(4 * 196, 9, 0, 1);
  const cpu = selectTokens(Tensor.fromArray(data, [4, 196]), { gridH: 14, gridW: 14, ratio: 0.5 });
  const gpu = selectTokens(Tensor.fromArray(data, [4, 196], { device: "cuda:0" }), {
    gridH: 14,
    gridW: 14,
    ratio: 0.5,
  });
  assertEquals(gpu.mask.device, "cuda:0", "mask device");
  assertEquals(gpu.idsRestore.device, "cuda:0", "idsRestore device");
  assertEquals(rows(gpu.mask.cpu()), rows(cpu.mask), "mask");
  assertEquals(rows(gpu.idsKeep.cpu()), rows(cpu.idsKeep), "idsKeep");
  assertEquals(rows(gpu.idsRestore.cpu()), rows(cpu.idsRestore), "idsRestore");
}, { ignore: !cudaIsAvailable() });

// ---- the golden step ---------------------------------------------------------------------------------------------

test("golden: masks from the official teacher attention, bit for bit", () => {
  const meta = JSON.parse(Deno.readTextFileSync(`${GOLDEN}/meta.json`));
  using file = SafeTensorsFile.open(`${GOLDEN}/outputs.safetensors`);
  for (const view of ["u", "v"]) {
    const attn = file.tensor(`attn_${view}`);
    const expectedMask = file.tensor(`mask_${view}`);
    const [b, n] = attn.shape;
    assertEquals([b, n], [meta.hyper.batch, 196], `attn_${view} shape`);
    const got = selectTokens(attn, { gridH: 14, gridW: 14, cell: 2, ratio: meta.mask_ratio });
    assertEquals(rows(got.mask), rows(expectedMask), `mask_${view}`);
    assertEquals(got.mask.sum(1).toArray(), new Array(b).fill(96), `mask_${view}: 96 removed per image`);
    checkSelection(got, fromMask(rows(expectedMask)), `golden ${view}`);
    // idsRestore gathers [kept tokens, removed tokens] back to raster order.
    const patchIds = Tensor.arange(0, n).reshape([1, n]).expand([b, n]).contiguous();
    const removedIds = got.mask.long().argsort(-1, { stable: true }).slice(1, got.idsKeep.size(1));
    const shuffled = cat([patchIds.gather(1, got.idsKeep), patchIds.gather(1, removedIds)], 1);
    assertEquals(rows(shuffled.gather(1, got.idsRestore)), rows(patchIds), `golden ${view}: restore`);
  }
});
