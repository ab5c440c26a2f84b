// token_selection.ts: which patches the student sees. The teacher's CLS->patch attention is pooled over blocks of
// cell x cell patches, the highest-scoring cells are kept and the rest are removed
// (docs/model.md#attention-guided-token-removal). The work is one native op (dc_select_tokens) because the official
// masks depend on the exact float arithmetic of a bilinear resize and on the tie order of the ranking; composing it
// from interpolate/argsort/scatter here would spread that contract over five calls and a host round trip per step.
import { F, type Tensor } from "../torch/mod.ts";

export interface TokenSelectionOptions {
  /** Patch rows (official: 14). */
  gridH: number;
  /** Patch columns (official: 14). */
  gridW: number;
  /** Side of the square block of patches that is kept or removed together (official: 2). */
  cell?: number;
  /** The official `--mask-ratio` (see selectTokens): it sets how many cells are KEPT, not removed. */
  ratio: number;
}

export interface TokenSelection {
  /** mask: (B, N) bool, true = removed. N = gridH * gridW. */
  mask: Tensor;
  /** idsKeep: (B, K) int64, the kept patches in ascending raster order; K is the same for every image. */
  idsKeep: Tensor;
  /** idsRestore: (B, N) int64, the slot of each patch in [kept..., removed...]; gathers a sequence back to raster order. */
  idsRestore: Tensor;
}

/**
 * The number of cells kept for the official `--mask-ratio`: floor(cells * ratio) + 1, at most `cells`.
 * With the official 7x7 = 49 cells: ratio 0 keeps 1, 0.5 keeps 25, 0.75 keeps 37, 1 keeps all 49.
 */
export function keepCellsForRatio(cells: number, ratio: number): number {
  if (!Number.isInteger(cells) || cells < 1) {
    throw new RangeError(`keepCellsForRatio: cells must be >= 1, got ${cells}`);
  }
  if (!(ratio >= 0 && ratio <= 1)) throw new RangeError(`keepCellsForRatio: ratio must lie in [0, 1], got ${ratio}`);
  return Math.min(Math.floor(cells * ratio) + 1, cells);
}

/**
 * Attention-guided token selection, per image.
 *
 * 1. The scores (B, gridH*gridW), e.g. the teacher's CLS->patch attention averaged over layers and heads, are pooled
 *    over each cell x cell block into C = (gridH/cell)*(gridW/cell) cell scores. For cell 2 this reproduces the
 *    official bilinear 14x14 -> 7x7 resize bit for bit (a 2x2 average with PyTorch's rounding order); other cell
 *    sizes use the block mean.
 * 2. The cells are ranked by score, descending; equal scores keep their raster order.
 * 3. The top keepCellsForRatio(C, ratio) cells are kept; every patch of the other cells is removed.
 *
 * The meaning of `ratio` follows the official code (`--mask-ratio`), which is NOT a removal fraction: int(C*ratio)+1
 * cells are kept. With the default 0.5 on a 14x14 grid with 2x2 cells, 25 of 49 cells (100 patches) are kept and 96
 * patches are removed; 0.75 removes only 48 patches. Low-attention regions are the ones removed. A model that wants
 * "no removal" (docs/parity.md#mask-ratio-0, and evaluation) should skip this call: ratio 0 here keeps a single cell.
 *
 * No gradient flows through the selection. CUDA scores go to one launch of the token-selection kernel
 * (kernels/token_select.cu) when the library was built with the kernels; otherwise the CPU reference computes and the
 * results move back to the scores' device.
 */
export function selectTokens(scores: Tensor, options: TokenSelectionOptions): TokenSelection {
  const { gridH, gridW, cell = 2, ratio } = options;
  return F.selectTokens(scores, gridH, gridW, cell, ratio);
}
