// confusion.ts: a confusion-matrix heat map (rows = true class, columns = predicted class), each row normalised to
// the fraction of its true class so that rare and common classes read on the same scale; the raw count is printed
// inside a cell when it fits. Class names label the axes while a name's line fits its cell; beyond that (hundreds of
// classes) the labels give way to class-index ticks, and beyond MAX_GRID_PX classes one pixel averages a block of
// classes so the picture stays under about 2,000 px. It trades exact counts for many classes (read those from the
// JSON) for a picture that shows where the mass is.
import { GLYPH_HEIGHT, textWidth, truncateText } from "./font.ts";
import { PlotError } from "./plot_error.ts";
import { DARK_GREY, inkOn, Raster, type Rgb, viridis } from "./raster.ts";
import { niceStep, ticksBetween } from "./ticks.ts";

const FIGURE = "confusion matrix";
/** The heat map's side never exceeds this many pixels (plus the margins). */
export const MAX_GRID_PX = 1600;
/** Largest cell side: a 7-class matrix still fits on a screen with its counts. */
export const MAX_CELL_PX = 40;
/** Class names longer than this are cut and end in "..". */
export const MAX_LABEL_CHARS = 18;
/** Rows without a single sample: not a fraction, so not a colour of the scale. */
export const EMPTY_ROW_RGB: Rgb = [235, 235, 235];
const TITLE_SCALE = 2;
const PAD = 10;
const BAR_WIDTH = 16;

/** Where everything is, so tests and callers can find a cell without re-deriving the arithmetic. */
export interface ConfusionLayout {
  width: number;
  height: number;
  /** Top-left pixel of the heat map. */
  gridLeft: number;
  gridTop: number;
  /** Side of one drawn cell in pixels. */
  cellPx: number;
  /** Classes averaged into one drawn cell along each axis (1 unless there are more than MAX_GRID_PX classes). */
  classesPerCell: number;
  /** Drawn cells per side: ceil(classes / classesPerCell). */
  cells: number;
  /** Whether the class names are written on the axes. */
  labels: boolean;
  /** The colour bar: its top-left pixel and size (value 1 at the top). */
  barLeft: number;
  barTop: number;
  barHeight: number;
}

/** Checks `matrix` is a square, finite, non-negative count matrix matching `classNames`; returns its size. */
function checkMatrix(matrix: readonly (readonly number[])[], classNames: readonly string[]): number {
  const n = matrix.length;
  if (n === 0) throw new PlotError(FIGURE, "the matrix has no rows");
  if (classNames.length !== n) {
    throw new PlotError(FIGURE, `${n} rows but ${classNames.length} class names (one name per class is needed)`);
  }
  matrix.forEach((row, i) => {
    if (row.length !== n) throw new PlotError(FIGURE, `row ${i} has ${row.length} entries, expected ${n} (square)`);
    row.forEach((value, j) => {
      if (!(Number.isFinite(value) && value >= 0)) {
        throw new PlotError(FIGURE, `entry [${i}][${j}] is ${value}; counts must be finite and >= 0`);
      }
    });
  });
  return n;
}

/** The layout for `n` classes with these names and title. */
export function confusionLayout(n: number, classNames: readonly string[], title: string): ConfusionLayout {
  const classesPerCell = Math.max(1, Math.ceil(n / MAX_GRID_PX));
  const cells = Math.ceil(n / classesPerCell);
  const cellPx = Math.min(MAX_CELL_PX, Math.max(1, Math.floor(MAX_GRID_PX / cells)));
  const gridPx = cells * cellPx;
  const labels = classesPerCell === 1 && cellPx >= GLYPH_HEIGHT + 2;
  const labelPx = labels
    ? Math.max(...classNames.map((name) => textWidth(truncateText(name, MAX_LABEL_CHARS))))
    : textWidth(String(n - 1));
  const gridLeft = PAD + GLYPH_HEIGHT + PAD + labelPx + 6; // axis title, labels, tick gap
  const gridTop = PAD + GLYPH_HEIGHT * TITLE_SCALE + PAD;
  const barLeft = gridLeft + gridPx + 2 * PAD;
  const barHeight = Math.max(gridPx, 100);
  const rightEdge = barLeft + BAR_WIDTH + 6 + textWidth("100%") + PAD + GLYPH_HEIGHT + PAD;
  const bottomEdge = gridTop + Math.max(gridPx, barHeight) + 6 + labelPx + PAD + GLYPH_HEIGHT + PAD;
  const width = Math.max(rightEdge, textWidth(title, TITLE_SCALE) + 2 * PAD);
  return {
    width,
    height: bottomEdge,
    gridLeft,
    gridTop,
    cellPx,
    classesPerCell,
    cells,
    labels,
    barLeft,
    barTop: gridTop,
    barHeight,
  };
}

/**
 * Per drawn cell (row-major, cells × cells): the share of a true class's samples predicted into the cell's column
 * classes, averaged over the cell's true classes that have samples (with one class per cell, simply the row
 * fraction); NaN where none of its true classes has a sample.
 */
function cellFractions(matrix: readonly (readonly number[])[], layout: ConfusionLayout): Float64Array {
  const n = matrix.length;
  const { cells, classesPerCell: k } = layout;
  const sums = new Float64Array(cells * cells);
  const rowsWithSamples = new Float64Array(cells);
  for (let i = 0; i < n; i++) {
    const total = matrix[i].reduce((a, b) => a + b, 0);
    if (total === 0) continue;
    const r = Math.floor(i / k);
    rowsWithSamples[r] += 1;
    for (let j = 0; j < n; j++) sums[r * cells + Math.floor(j / k)] += matrix[i][j] / total;
  }
  const out = new Float64Array(cells * cells);
  for (let c = 0; c < out.length; c++) {
    const rows = rowsWithSamples[Math.floor(c / cells)];
    out[c] = rows === 0 ? NaN : sums[c] / rows;
  }
  return out;
}

/** Draws the figure; see the file comment. */
export function drawConfusionMatrix(
  matrix: readonly (readonly number[])[],
  classNames: readonly string[],
  title: string,
): { raster: Raster; layout: ConfusionLayout } {
  const n = checkMatrix(matrix, classNames);
  const layout = confusionLayout(n, classNames, title);
  const { gridLeft, gridTop, cellPx, cells, labels } = layout;
  const gridPx = cells * cellPx;
  const raster = new Raster(layout.width, layout.height);
  raster.text(layout.width / 2, PAD, title, [20, 20, 20], { scale: TITLE_SCALE, align: "center" });

  // Cells, then the counts that fit inside them.
  const fractions = cellFractions(matrix, layout);
  for (let r = 0; r < cells; r++) {
    for (let c = 0; c < cells; c++) {
      const f = fractions[r * cells + c];
      const colour = Number.isNaN(f) ? EMPTY_ROW_RGB : viridis(f);
      raster.fillRect(gridLeft + c * cellPx, gridTop + r * cellPx, cellPx, cellPx, colour);
      if (layout.classesPerCell !== 1 || cellPx < GLYPH_HEIGHT + 4) continue;
      const count = matrix[r][c];
      const text = Number.isInteger(count) ? String(count) : count.toPrecision(3);
      if (count === 0 || textWidth(text) + 4 > cellPx) continue;
      const cx = gridLeft + c * cellPx + cellPx / 2;
      const cy = gridTop + r * cellPx + Math.floor((cellPx - GLYPH_HEIGHT) / 2);
      raster.text(cx, cy, text, inkOn(colour), { align: "center" });
    }
  }
  raster.strokeRect(gridLeft - 1, gridTop - 1, gridPx + 2, gridPx + 2, DARK_GREY);

  // Axis labels: class names (rows on the left, columns below reading upwards) or class-index ticks.
  const below = gridTop + gridPx + 6;
  if (labels) {
    for (let i = 0; i < n; i++) {
      const name = truncateText(classNames[i], MAX_LABEL_CHARS);
      const mid = Math.floor((cellPx - GLYPH_HEIGHT) / 2);
      raster.text(gridLeft - 6, gridTop + i * cellPx + mid, name, DARK_GREY, { align: "right" });
      raster.textUp(gridLeft + i * cellPx + mid, below, name, DARK_GREY, { align: "right" });
    }
  } else {
    const step = Math.max(1, niceStep((n * 40) / gridPx)); // a tick label every >= 40 px
    for (const index of ticksBetween(0, n - 1, step)) {
      const at = Math.floor(index / layout.classesPerCell) * cellPx + Math.floor(cellPx / 2);
      raster.fillRect(gridLeft - 4, gridTop + at, 3, 1, DARK_GREY);
      raster.text(gridLeft - 6, gridTop + at - 3, String(index), DARK_GREY, { align: "right" });
      raster.fillRect(gridLeft + at, gridTop + gridPx + 1, 1, 3, DARK_GREY);
      raster.textUp(gridLeft + at - 3, below, String(index), DARK_GREY, { align: "right" });
    }
  }
  const labelPx = gridLeft - 6 - (PAD + GLYPH_HEIGHT + PAD);
  const axisNote = layout.classesPerCell > 1 ? ` (${layout.classesPerCell} classes per pixel)` : "";
  raster.textUp(PAD, gridTop + gridPx / 2, "true class", [20, 20, 20], { align: "center" });
  raster.text(gridLeft + gridPx / 2, below + labelPx + PAD, `predicted class${axisNote}`, [20, 20, 20], {
    align: "center",
  });

  // Colour bar: the fraction of the true class's samples, 100% at the top.
  const { barLeft, barTop, barHeight } = layout;
  for (let y = 0; y < barHeight; y++) {
    raster.fillRect(barLeft, barTop + y, BAR_WIDTH, 1, viridis(1 - y / (barHeight - 1)));
  }
  raster.strokeRect(barLeft - 1, barTop - 1, BAR_WIDTH + 2, barHeight + 2, DARK_GREY);
  for (const value of [0, 0.25, 0.5, 0.75, 1]) {
    const y = barTop + Math.round((1 - value) * (barHeight - 1));
    raster.fillRect(barLeft + BAR_WIDTH + 1, y, 3, 1, DARK_GREY);
    raster.text(barLeft + BAR_WIDTH + 6, y - 3, `${value * 100}%`, DARK_GREY);
  }
  const barTitleX = barLeft + BAR_WIDTH + 6 + textWidth("100%") + PAD;
  raster.textUp(barTitleX, barTop + barHeight / 2, "share of the row", [20, 20, 20], { align: "center" });
  return { raster, layout };
}
