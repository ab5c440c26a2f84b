// teacher_tokens.ts: what the token map shows, computed the way training computes it: the image through the native
// eval transform (Resize + CenterCrop, normalised, exactly what evaluation feeds the model), the EMA teacher's CLS
// attention from MaskVisionTransformer.forwardFeatures and the cells from selectTokens, so the picture cannot drift
// from the training path. It trades batching for simplicity: one image per call.
import { imageSkipReason, NativeLoader, OFFICIAL_AUGMENT } from "../data/loader.ts";
import type { DetailCLIP } from "../models/detailclip.ts";
import { keepCellsForRatio, selectTokens } from "../models/token_selection.ts";
import { type Device, noGrad, type Tensor, tidy } from "../torch/mod.ts";

/** An image the loader could not decode, named with the loader's reason (image_missing, image_corrupt, ...). */
export class VizImageError extends Error {
  readonly path: string;
  readonly reason: string;

  constructor(path: string, reason: string) {
    super(`cannot read image ${path}: ${reason}`);
    this.name = "VizImageError";
    this.path = path;
    this.reason = reason;
  }
}

/** An RGB8 picture, row-major. */
export interface RgbPicture {
  width: number;
  height: number;
  pixels: Uint8Array;
}

/**
 * Reads `path` with the native loader in eval mode (one view) at `imageSize`: (1, 3, S, S) float32 on `device`,
 * normalised with the ImageNet mean/std the loader uses everywhere. Throws VizImageError when it does not decode.
 */
export function readEvalImage(path: string, imageSize: number, device: Device = "cpu"): Tensor {
  let info: Deno.FileInfo | null = null;
  try {
    info = Deno.statSync(path);
  } catch { /* missing: the loader names it (image_missing) */ }
  if (info !== null && !info.isFile) throw new VizImageError(path, "not a regular file"); // a FIFO would block
  using loader = new NativeLoader({ imageSize, mode: "eval", views: 1, threads: 1 });
  const result = loader.run({ candidates: [{ path, index: 0 }], slotBegin: [0, 1], seed: 0, rank: 0, epoch: 0 });
  if (result.used[0] !== 0) {
    result.u.dispose();
    throw new VizImageError(path, imageSkipReason(result.status[0]));
  }
  if (device === "cpu") return result.u;
  try {
    return result.u.to({ device });
  } finally {
    result.u.dispose();
  }
}

/** images: (1, 3, S, S) normalised -> the RGB8 picture it was made from (up to rounding), ToTensor/Normalize undone. */
export function unnormalize(images: Tensor): RgbPicture {
  const [batch, channels, height, width] = images.shape;
  if (batch !== 1 || channels !== 3) throw new Error(`unnormalize: expected (1, 3, H, W), got (${images.shape})`);
  const values = tidy(() => images.cpu().float().contiguous().toTypedArray()) as Float32Array; // planar (3, H, W)
  const { mean, std } = OFFICIAL_AUGMENT;
  const plane = height * width;
  const pixels = new Uint8Array(plane * 3);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < plane; i++) {
      const v = Math.round((values[c * plane + i] * std[c] + mean[c]) * 255);
      pixels[i * 3 + c] = Math.min(255, Math.max(0, v));
    }
  }
  return { width, height, pixels };
}

export interface TeacherSelection {
  /** (L) the teacher's CLS attention to each patch, mean over layers and heads
   * (docs/model.md#attention-guided-token-removal, step 1). */
  attention: number[];
  /** (L) true = removed from the student. */
  removed: boolean[];
  gridSize: number;
  cell: number;
  ratio: number;
  cells: number;
  keptCells: number;
  keptTokens: number;
}

/**
 * The EMA teacher's view of images: (1, 3, S, S): CLS attention and the token selection at `ratio` (the model's
 * configured --mask-ratio when omitted), as DetailCLIP.forwardTrain computes them (teacher un-masked, no gradient).
 */
export function teacherSelection(model: DetailCLIP, images: Tensor, ratio?: number): TeacherSelection {
  const gridSize = model.gridSize;
  const cell = model.config.maskCell;
  const maskRatio = ratio ?? model.config.maskRatio;
  const { attention, removed } = noGrad(() =>
    tidy(() => {
      const { clsAttention } = model.visual_ema.forwardFeatures(images, { collectClsAttention: true }); // (1, L)
      const selection = selectTokens(clsAttention!, { gridH: gridSize, gridW: gridSize, cell, ratio: maskRatio });
      return {
        attention: clsAttention!.select(0, 0).cpu().float().toArray(), // (L)
        removed: selection.mask.select(0, 0).cpu().toArray().map((x) => x !== 0), // (L)
      };
    })
  );
  const cellsPerSide = gridSize / cell;
  const cells = cellsPerSide * cellsPerSide;
  const keptTokens = removed.filter((r) => !r).length;
  // A cell is kept or removed as a whole; count the kept ones from their top-left patches.
  let keptCells = 0;
  for (let r = 0; r < cellsPerSide; r++) {
    for (let c = 0; c < cellsPerSide; c++) if (!removed[r * cell * gridSize + c * cell]) keptCells++;
  }
  const expected = keepCellsForRatio(cells, maskRatio);
  if (keptCells !== expected || keptTokens !== keptCells * cell * cell) {
    throw new Error(
      `teacherSelection: selectTokens kept ${keptCells} of ${cells} cells (${keptTokens} tokens) at ratio ` +
        `${maskRatio}, expected int(${cells}*${maskRatio})+1 = ${expected} cells of ${cell * cell} tokens each`,
    );
  }
  return { attention, removed, gridSize, cell, ratio: maskRatio, cells, keptCells, keptTokens };
}
