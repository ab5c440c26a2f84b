// recall_curve.ts: recall@k curves (k = 1..K on x, 0–100% on y), one coloured line with square markers per curve
// and a legend beside the axes, e.g. image→text and text→image retrieval of one checkpoint, or the same direction
// for two checkpoints. The y axis is always the full 0–100% so that pictures of different runs compare by eye; that
// trades resolution when every curve sits within a few points.
import { GLYPH_HEIGHT, textWidth, truncateText } from "./font.ts";
import { PlotError } from "./plot_error.ts";
import { DARK_GREY, LIGHT_GREY, PALETTE, Raster, type Rgb } from "./raster.ts";
import { niceStep, ticksBetween } from "./ticks.ts";

const FIGURE = "recall curve";
const TITLE_SCALE = 2;
const PAD = 10;
const PLOT_W = 520;
const PLOT_H = 320;
const LINE_PX = 2;
const MARKER_PX = 5;
const LEGEND_SWATCH = 20;
const MAX_LEGEND_CHARS = 32;
const LEGEND_ROW = GLYPH_HEIGHT + 8;
/** Curves with more points than this are drawn without markers (they would merge into a band). */
const MAX_MARKED_POINTS = 40;

export interface RecallCurve {
  label: string;
  /** recall[k - 1] = R@k in percent. */
  recall: number[];
}

export interface RecallLayout {
  width: number;
  height: number;
  /** The plot area: x = k from 1 to kMax left to right, y = 100% at plotTop, 0% at plotTop + plotH. */
  plotLeft: number;
  plotTop: number;
  plotW: number;
  plotH: number;
  kMax: number;
  /** Pixel column of k and pixel row of a recall in percent (both rounded). */
  xOf(k: number): number;
  yOf(recall: number): number;
  /** The colour of curve i. */
  colour(i: number): Rgb;
}

function checkCurves(curves: readonly RecallCurve[]): number {
  if (curves.length === 0) throw new PlotError(FIGURE, "no curves to draw");
  let kMax = 0;
  curves.forEach((curve, i) => {
    if (curve.recall.length === 0) throw new PlotError(FIGURE, `curve ${i} ("${curve.label}") has no points`);
    curve.recall.forEach((r, k) => {
      if (!(Number.isFinite(r) && r >= 0 && r <= 100)) {
        throw new PlotError(FIGURE, `curve "${curve.label}" has R@${k + 1} = ${r}; recall is a percentage in [0, 100]`);
      }
    });
    kMax = Math.max(kMax, curve.recall.length);
  });
  return kMax;
}

export function recallLayout(curves: readonly RecallCurve[], title: string): RecallLayout {
  const kMax = curves.reduce((m, c) => Math.max(m, c.recall.length), 1);
  const plotLeft = PAD + GLYPH_HEIGHT + PAD + textWidth("100%") + 8;
  const plotTop = PAD + GLYPH_HEIGHT * TITLE_SCALE + 2 * PAD;
  const legendW = LEGEND_SWATCH + 6 +
    Math.max(...curves.map((c) => textWidth(truncateText(c.label, MAX_LEGEND_CHARS))));
  const width = Math.max(plotLeft + PLOT_W + 2 * PAD + legendW + PAD, textWidth(title, TITLE_SCALE) + 2 * PAD);
  const axesBottom = plotTop + PLOT_H + 8 + GLYPH_HEIGHT + PAD + GLYPH_HEIGHT + PAD;
  const height = Math.max(axesBottom, plotTop + curves.length * LEGEND_ROW + PAD);
  // One point spans the whole axis badly; with K = 1 the axis still runs from 1 to 2.
  const span = Math.max(kMax, 2) - 1;
  return {
    width,
    height,
    plotLeft,
    plotTop,
    plotW: PLOT_W,
    plotH: PLOT_H,
    kMax,
    xOf: (k: number): number => plotLeft + Math.round(((k - 1) / span) * (PLOT_W - 1)),
    yOf: (recall: number): number => plotTop + Math.round((1 - recall / 100) * (PLOT_H - 1)),
    colour: (i: number): Rgb => PALETTE[i % PALETTE.length],
  };
}

/** Draws the figure; see the file comment. */
export function drawRecallCurves(
  curves: readonly RecallCurve[],
  title: string,
): { raster: Raster; layout: RecallLayout } {
  checkCurves(curves);
  const layout = recallLayout(curves, title);
  const { plotLeft, plotTop, plotW, plotH, kMax, xOf, yOf } = layout;
  const raster = new Raster(layout.width, layout.height);
  const ink: Rgb = [20, 20, 20];
  raster.text(layout.width / 2, PAD, title, ink, { scale: TITLE_SCALE, align: "center" });

  // Grid and ticks: every 20% on y; every k while there are few, else a nice step.
  for (const r of [0, 20, 40, 60, 80, 100]) {
    raster.fillRect(plotLeft, yOf(r), plotW, 1, LIGHT_GREY);
    raster.fillRect(plotLeft - 4, yOf(r), 4, 1, DARK_GREY);
    raster.text(plotLeft - 7, yOf(r) - 3, `${r}%`, DARK_GREY, { align: "right" });
  }
  const kTop = Math.max(kMax, 2);
  const kStep = Math.max(1, niceStep((kTop - 1) / 12));
  const kTicks = ticksBetween(0, kTop, kStep).filter((k) => k >= 1);
  if (kTicks[0] !== 1) kTicks.unshift(1);
  for (const k of kTicks) {
    raster.fillRect(xOf(k), plotTop, 1, plotH, LIGHT_GREY);
    raster.fillRect(xOf(k), plotTop + plotH, 1, 4, DARK_GREY);
    raster.text(xOf(k), plotTop + plotH + 7, String(k), DARK_GREY, { align: "center" });
  }
  raster.fillRect(plotLeft - 1, plotTop, 1, plotH, DARK_GREY);
  raster.fillRect(plotLeft - 1, plotTop + plotH, plotW + 1, 1, DARK_GREY);
  raster.text(plotLeft + plotW / 2, plotTop + plotH + 8 + GLYPH_HEIGHT + PAD - 2, "k", ink, { align: "center" });
  raster.textUp(PAD, plotTop + plotH / 2, "recall@k", ink, { align: "center" });

  // Curves, later ones on top; then the legend to the right of the axes.
  curves.forEach((curve, i) => {
    const colour = layout.colour(i);
    const points = curve.recall.map((r, k) => [xOf(k + 1), yOf(r)] as const);
    for (let p = 1; p < points.length; p++) {
      raster.line(points[p - 1][0], points[p - 1][1], points[p][0], points[p][1], colour, LINE_PX);
    }
    if (points.length <= MAX_MARKED_POINTS) {
      const half = Math.floor(MARKER_PX / 2);
      for (const [x, y] of points) raster.fillRect(x - half, y - half, MARKER_PX, MARKER_PX, colour);
    }
  });
  const legendLeft = plotLeft + plotW + 2 * PAD;
  curves.forEach((curve, i) => {
    const y = plotTop + i * LEGEND_ROW;
    raster.fillRect(legendLeft, y + 2, LEGEND_SWATCH, 3, layout.colour(i));
    raster.text(legendLeft + LEGEND_SWATCH + 6, y, truncateText(curve.label, MAX_LEGEND_CHARS), ink);
  });
  return { raster, layout };
}
