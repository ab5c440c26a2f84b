// loss_curve.ts: loss curves as a standalone SVG string, so a run's summary has a picture without a plotting library,
// a browser or a font file. Axes with "nice" ticks (1, 2, 5 × 10^k, or decades on a log axis), one coloured line
// per series, an EMA-smoothed line over the faint raw one when the data are noisy, and a legend with each series'
// last value. It trades typography for zero dependencies: text widths are estimated, not measured.
import { niceStep, ticksBetween } from "./ticks.ts";

// A loss axis spans a small range (e.g. 2.0 to 4.5): 2.5 × 10^k gives it a few more ticks than 1, 2, 5 alone.
const LOSS_CURVE_MANTISSAS: readonly number[] = [1, 2, 2.5, 5];

export interface Series {
  name: string;
  /** [x, y] pairs; non-finite y (and y <= 0 on a log axis) leave a gap. */
  points: [number, number][];
}

export interface LossCurveOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  /** Logarithmic y axis (losses that fall by orders of magnitude). */
  logY?: boolean;
  /** Width and height in pixels; default 800 × 450. */
  width?: number;
  height?: number;
  /**
   * EMA weight in [0, 1) of the drawn line (TensorBoard's smoothing, debiased); the raw points stay visible, faint.
   * Default: 0 up to 60 points per series, else 0.9 for 600+ points and 0.8 in between.
   */
  smoothing?: number;
}

/** Tableau 10: distinguishable, and still readable for the common colour-vision deficiencies. */
const PALETTE = [
  "#4e79a7",
  "#f28e2b",
  "#e15759",
  "#76b7b2",
  "#59a14f",
  "#b07aa1",
  "#edc948",
  "#ff9da7",
  "#9c755f",
  "#bab0ac",
];
const FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"';
/** Average glyph width of a 12 px sans-serif font, relative to its size; enough to size the legend box. */
const GLYPH_WIDTH = 0.6;

interface Axis {
  min: number;
  max: number;
  ticks: number[];
  log: boolean;
  /** Tick label formatter. */
  label: (value: number) => string;
}

/** Renders the series as an SVG document (a string starting with `<svg`). */
export function lossCurveSvg(series: Series[], options: LossCurveOptions): string {
  const { title, xLabel, yLabel, logY = false, width = 800, height = 450 } = options;
  const margin = { top: 44, right: 24, bottom: 56, left: 76 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;

  const usable = (x: number, y: number): boolean => Number.isFinite(x) && Number.isFinite(y) && (!logY || y > 0);
  const maxPoints = series.reduce((m, s) => Math.max(m, s.points.length), 0);
  const smoothing = options.smoothing ?? (maxPoints <= 60 ? 0 : maxPoints >= 600 ? 0.9 : 0.8);
  if (!(smoothing >= 0 && smoothing < 1)) {
    throw new RangeError(`lossCurveSvg: smoothing must be in [0, 1), got ${smoothing}`);
  }
  const drawn = series.map((s) => ({
    name: s.name,
    raw: s.points,
    smooth: smoothing > 0 ? emaSmooth(s.points, smoothing, usable) : s.points,
  }));

  const xs: number[] = [];
  const ys: number[] = [];
  for (const s of drawn) {
    for (const [x, y] of s.raw) {
      if (usable(x, y)) {
        xs.push(x);
        ys.push(y);
      }
    }
  }

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      `${FONT} font-size="12">`,
  );
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(
    `<text x="${width / 2}" y="26" text-anchor="middle" font-size="16" font-weight="bold" fill="#222">` +
      `${escapeXml(title)}</text>`,
  );
  const axisTitleY = margin.top + plotH / 2;
  out.push(
    `<text x="${margin.left + plotW / 2}" y="${height - 12}" text-anchor="middle" font-size="13" fill="#333">` +
      `${escapeXml(xLabel)}</text>`,
  );
  out.push(
    `<text x="18" y="${axisTitleY}" text-anchor="middle" font-size="13" fill="#333" ` +
      `transform="rotate(-90 18 ${axisTitleY})">${escapeXml(yLabel)}</text>`,
  );

  if (xs.length === 0) {
    out.push(frame(margin.left, margin.top, plotW, plotH));
    out.push(
      `<text x="${margin.left + plotW / 2}" y="${margin.top + plotH / 2}" text-anchor="middle" fill="#888">` +
        `no finite data to plot</text>`,
    );
    out.push(`</svg>`);
    return out.join("\n");
  }

  const [xLo, xHi] = extent(xs);
  const [yLo, yHi] = extent(ys);
  const yTicks = Math.max(2, Math.floor(plotH / 60));
  const xAxis = linearAxis(xLo, xHi, Math.max(2, Math.floor(plotW / 90)));
  const toX = (x: number): number => margin.left + plotW * fraction(x, xAxis);
  const legend = legendLayout(drawn, usable);
  const corners = (): [number, number][] => [
    [margin.left + plotW - legend.width - 10, margin.top + 10],
    [margin.left + plotW - legend.width - 10, margin.top + plotH - legend.height - 10],
    [margin.left + 10, margin.top + 10],
    [margin.left + 10, margin.top + plotH - legend.height - 10],
  ];
  /** The corner whose legend box covers the fewest drawn points, and how many it covers. */
  const place = (axis: Axis): { at: [number, number]; covered: number } => {
    const toYAxis = (y: number): number => margin.top + plotH * (1 - fraction(y, axis));
    let best = { at: corners()[0], covered: Infinity };
    for (const [bx, by] of corners()) {
      let covered = 0;
      for (const series of drawn) {
        for (const [x, y] of series.smooth) {
          if (!usable(x, y)) continue;
          const px = toX(x), py = toYAxis(y);
          if (px >= bx && px <= bx + legend.width && py >= by && py <= by + legend.height) covered++;
        }
      }
      if (covered < best.covered) best = { at: [bx, by], covered };
    }
    return best;
  };
  let yAxis = logY ? logAxis(yLo, yHi) : linearAxis(yLo, yHi, yTicks);
  let placement = place(yAxis);
  if (placement.covered > 0) {
    // Every corner hides data: raise the top of the axis so the curves stay below a legend-high band.
    const share = Math.min(0.6, (legend.height + 24) / plotH);
    yAxis = logY
      ? logAxis(yLo, 10 ** (Math.log10(yLo) + (Math.log10(yHi) - Math.log10(yLo) + 0.05) / (1 - share)))
      : linearAxis(yLo, yLo + (yHi - yLo || Math.abs(yLo) || 1) / (1 - share), yTicks);
    placement = place(yAxis);
  }
  const finalY = yAxis;
  const toY = (y: number): number => margin.top + plotH * (1 - fraction(y, finalY));

  // Grid and tick labels.
  out.push(`<g stroke="#e6e6e6" stroke-width="1">`);
  for (const t of xAxis.ticks) {
    out.push(`<line x1="${r(toX(t))}" y1="${margin.top}" x2="${r(toX(t))}" y2="${margin.top + plotH}"/>`);
  }
  for (const t of yAxis.ticks) {
    out.push(`<line x1="${margin.left}" y1="${r(toY(t))}" x2="${margin.left + plotW}" y2="${r(toY(t))}"/>`);
  }
  out.push(`</g>`);
  out.push(`<g fill="#444">`);
  for (const t of xAxis.ticks) {
    out.push(`<text x="${r(toX(t))}" y="${margin.top + plotH + 18}" text-anchor="middle">${xAxis.label(t)}</text>`);
  }
  for (const t of yAxis.ticks) {
    out.push(`<text x="${margin.left - 8}" y="${r(toY(t) + 4)}" text-anchor="end">${yAxis.label(t)}</text>`);
  }
  out.push(`</g>`);

  // Lines, clipped to the plot area; raw data faint underneath when smoothed.
  out.push(
    `<defs><clipPath id="detailclip-plot-area"><rect x="${margin.left}" y="${margin.top}" width="${plotW}" ` +
      `height="${plotH}"/></clipPath></defs>`,
  );
  out.push(`<g clip-path="url(#detailclip-plot-area)" fill="none" stroke-linejoin="round" stroke-linecap="round">`);
  drawn.forEach((s, i) => {
    const colour = PALETTE[i % PALETTE.length];
    if (smoothing > 0) {
      const d = pathData(s.raw, usable, toX, toY);
      if (d !== "") out.push(`<path class="raw" d="${d}" stroke="${colour}" stroke-opacity="0.25" stroke-width="1"/>`);
    }
    const d = pathData(s.smooth, usable, toX, toY);
    out.push(
      `<path class="series" data-series="${escapeXml(s.name)}" d="${d}" stroke="${colour}" stroke-width="2"/>`,
    );
  });
  out.push(`</g>`);
  out.push(frame(margin.left, margin.top, plotW, plotH));

  // Legend, in the corner chosen above.
  const [boxX, boxY] = placement.at;
  out.push(`<g class="legend">`);
  out.push(
    `<rect x="${r(boxX)}" y="${r(boxY)}" width="${r(legend.width)}" height="${legend.height}" rx="4" fill="#ffffff" ` +
      `fill-opacity="0.9" stroke="#cccccc"/>`,
  );
  legend.entries.forEach((e, i) => {
    const y = boxY + 5 + LEGEND_LINE_HEIGHT * (i + 0.5);
    out.push(
      `<line x1="${r(boxX + 8)}" y1="${r(y)}" x2="${r(boxX + 28)}" y2="${
        r(y)
      }" stroke="${e.colour}" stroke-width="3"/>`,
    );
    out.push(`<text x="${r(boxX + 34)}" y="${r(y + 4)}" fill="#222">${escapeXml(e.name)}</text>`);
    if (e.value !== "") {
      out.push(
        `<text x="${r(boxX + legend.width - 8)}" y="${r(y + 4)}" text-anchor="end" fill="#555">${e.value}</text>`,
      );
    }
  });
  out.push(`</g>`);
  if (smoothing > 0) {
    out.push(
      `<text x="${margin.left + plotW}" y="${margin.top - 6}" text-anchor="end" font-size="11" fill="#888">` +
        `EMA smoothing ${smoothing}, raw values faint; legend: last value</text>`,
    );
  }
  out.push(`</svg>`);
  return out.join("\n");
}

const LEGEND_LINE_HEIGHT = 18;

interface LegendLayout {
  entries: { name: string; value: string; colour: string }[];
  width: number;
  height: number;
}

/** Legend rows (name, last drawn value) and the box size they need. */
function legendLayout(
  drawn: { name: string; smooth: [number, number][] }[],
  usable: (x: number, y: number) => boolean,
): LegendLayout {
  const entries = drawn.map((s, i) => {
    let value = "";
    for (let j = s.smooth.length - 1; j >= 0; j--) {
      const [x, y] = s.smooth[j];
      if (usable(x, y)) {
        value = legendNumber(y);
        break;
      }
    }
    return { name: s.name, value, colour: PALETTE[i % PALETTE.length] };
  });
  const charW = 12 * GLYPH_WIDTH;
  const nameW = Math.max(0, ...entries.map((e) => e.name.length)) * charW;
  const valueW = Math.max(0, ...entries.map((e) => e.value.length)) * charW;
  return {
    entries,
    width: 34 + nameW + (valueW > 0 ? 14 + valueW : 0) + 8,
    height: 10 + entries.length * LEGEND_LINE_HEIGHT,
  };
}

/** [min, max] by a loop: spreading a long array into Math.min overflows the call stack. */
function extent(values: number[]): [number, number] {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

/** Debiased EMA over the usable points; unusable ones pass through as gaps. */
function emaSmooth(
  points: [number, number][],
  weight: number,
  usable: (x: number, y: number) => boolean,
): [number, number][] {
  let ema = 0;
  let n = 0;
  return points.map(([x, y]) => {
    if (!usable(x, y)) return [x, y];
    ema = weight * ema + (1 - weight) * y;
    n += 1;
    return [x, ema / (1 - weight ** n)];
  });
}

function pathData(
  points: [number, number][],
  usable: (x: number, y: number) => boolean,
  toX: (x: number) => number,
  toY: (y: number) => number,
): string {
  const parts: string[] = [];
  let pen = false;
  for (const [x, y] of points) {
    if (!usable(x, y)) {
      pen = false;
      continue;
    }
    parts.push(`${pen ? "L" : "M"}${r(toX(x))} ${r(toY(y))}`);
    pen = true;
  }
  return parts.join("");
}

function frame(x: number, y: number, w: number, h: number): string {
  return `<rect x="${x}" y="${y}" width="${w}" height="${h}" fill="none" stroke="#555" stroke-width="1"/>`;
}

function fraction(value: number, axis: Axis): number {
  if (axis.log) return (Math.log10(value) - Math.log10(axis.min)) / (Math.log10(axis.max) - Math.log10(axis.min));
  return (value - axis.min) / (axis.max - axis.min);
}

/** Ticks at 1, 2, 2.5 or 5 × 10^k, about `count` of them, with the domain widened to the outer ticks. */
function linearAxis(lo: number, hi: number, count: number): Axis {
  if (lo === hi) {
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const step = niceStep((hi - lo) / count, LOSS_CURVE_MANTISSAS);
  const min = Math.floor(lo / step + 1e-9) * step;
  const max = Math.ceil(hi / step - 1e-9) * step;
  const ticks = ticksBetween(min, max, step);
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9) + (isHalfDecade(step) ? 1 : 0));
  const label = (v: number): string =>
    Math.abs(v) >= 1e4 && v % 1000 === 0 ? `${clean(v / 1000)}k` : v.toFixed(decimals);
  return { min, max, ticks, log: false, label };
}

/** Decades, filled in with 2 and 5 (or every integer multiple) when the data span few of them. */
function logAxis(lo: number, hi: number): Axis {
  const span = Math.log10(hi) - Math.log10(lo);
  const pad = Math.max(span * 0.05, 0.02);
  const min = 10 ** (Math.log10(lo) - pad);
  const max = 10 ** (Math.log10(hi) + pad);
  const between = (v: number): boolean => v >= min * (1 - 1e-12) && v <= max * (1 + 1e-12);
  const candidates = (multiples: number[]): number[] => {
    const ticks: number[] = [];
    for (let k = Math.floor(Math.log10(min)); k <= Math.ceil(Math.log10(max)); k++) {
      for (const m of multiples) {
        const v = clean(m * 10 ** k);
        if (between(v)) ticks.push(v);
      }
    }
    return ticks;
  };
  let ticks = candidates([1]);
  if (ticks.length < 3) ticks = candidates([1, 2, 5]);
  if (ticks.length < 3) ticks = candidates([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  if (ticks.length < 2) ticks = [clean(lo), clean(hi)];
  return { min, max, ticks, log: true, label: shortNumber };
}

/** 2.5 × 10^k needs one more decimal than its power of ten suggests. */
function isHalfDecade(step: number): boolean {
  const scaled = step / 10 ** Math.floor(Math.log10(step) + 1e-9);
  return Math.abs(scaled - 2.5) < 1e-9;
}

/** Removes binary noise such as 0.30000000000000004. */
function clean(v: number): number {
  return Number(v.toPrecision(12));
}

/** Compact label: up to 4 significant digits, exponent form for very large or small magnitudes. */
function shortNumber(v: number): string {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(1).replace("e+", "e");
  return String(Number(v.toPrecision(4)));
}

/** Legend values: 4 significant digits, so a column of them lines up (3.000, not 3). */
function legendNumber(v: number): string {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2).replace("e+", "e");
  return a >= 1e4 ? v.toFixed(0) : v.toPrecision(4);
}

function r(v: number): number {
  return Math.round(v * 10) / 10;
}

function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")
    .replace(/'/g, "&apos;");
}
