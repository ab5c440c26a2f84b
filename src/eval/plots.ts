// plots.ts: the evaluation figures as PNG bytes, for `deno task eval --plots DIR`: a confusion matrix of zero-shot
// classification and recall@k curves of retrieval. The drawing lives in src/viz/ (a dependency-free raster with a
// bitmap font); this file is the stable surface the evaluation commands call. PNG rather than SVG: a heat map of
// 1,000 × 1,000 cells is a million SVG rectangles but a small PNG, and a PNG looks the same in every viewer.
import { drawConfusionMatrix } from "../viz/confusion.ts";
import { drawRecallCurves } from "../viz/recall_curve.ts";

/**
 * `matrix[i][j]` = how many samples of true class i were predicted as class j (rows = true, columns = predicted).
 * A heat map of each row's fractions with a colour scale, class names on both axes (cut to 18 characters; replaced
 * by class-index ticks when there are too many classes for a line of text per cell), and the title on top.
 * Throws a PlotError for a ragged, non-square, negative or non-finite matrix, or a name count that does not match.
 */
export function confusionMatrixPng(matrix: number[][], classNames: readonly string[], title: string): Uint8Array {
  return drawConfusionMatrix(matrix, classNames, title).raster.toPng();
}

/**
 * One line per curve, where `recall[k - 1]` is R@k in percent for k = 1..K; the y axis spans 0–100%, a legend
 * names the curves. Throws a PlotError for no curves, an empty curve or a recall outside [0, 100].
 */
export function recallCurvePng(curves: { label: string; recall: number[] }[], title: string): Uint8Array {
  return drawRecallCurves(curves, title).raster.toPng();
}
