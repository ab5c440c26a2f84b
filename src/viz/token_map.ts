// token_map.ts: the picture of attention-guided token removal (docs/model.md#attention-guided-token-removal) for one
// image: three panels side by side, (1) the input as the model saw it, (2) the teacher's CLS attention to each patch as
// a viridis heat map blended over the image, (3) the selection: removed cells darkened to grey, kept cells untouched,
// the cell grid drawn on top; a title line above says how many cells and tokens were kept. Every panel magnifies the
// model's input by a whole factor with nearest-neighbour pixels, so a patch is an exact block of pixels; that trades
// smoothness for a picture where "which patch" can be read off, and tests can find a cell by arithmetic.
import { GLYPH_HEIGHT, textWidth } from "./font.ts";
import { PlotError } from "./plot_error.ts";
import { blend, luma, Raster, type Rgb, viridis } from "./raster.ts";

const FIGURE = "token map";
const PAD = 12;
const TITLE_SCALE = 2;
/** Panels are magnified to at least this many pixels a side (64 px inputs become 256 px panels). */
const MIN_PANEL_PX = 256;
/** Opacity of the attention colours over the image in panel 2. */
export const ATTENTION_ALPHA = 0.6;
const GRID_RGB: Rgb = [255, 255, 255];

/** A removed pixel: its luma, scaled down and lifted slightly towards blue-grey so black stays visibly "removed". */
export function removedPixel(c: Rgb): Rgb {
  const l = luma(c) * 0.3;
  return [Math.round(l + 16), Math.round(l + 16), Math.round(l + 32)];
}

export interface TokenMapInput {
  /** The model's input image, RGB8, imageSize × imageSize. */
  image: { width: number; height: number; pixels: Uint8Array };
  /** (gridSize²) attention score per patch, raster order. */
  attention: ArrayLike<number>;
  /** (gridSize²) per patch, true (or 1) = removed from the student. */
  removed: ArrayLike<boolean | number>;
  /** Patches per side. */
  gridSize: number;
  /** Side of a cell in patches (the masking unit). */
  cell: number;
  title: string;
}

export interface TokenMapLayout {
  width: number;
  height: number;
  /** Screen pixels per input pixel. */
  scale: number;
  /** Side of each panel in pixels. */
  panelPx: number;
  /** Top-left pixel of panels 0 (input), 1 (attention), 2 (kept/removed). */
  panels: readonly { left: number; top: number }[];
}

/**
 * Where the panels of an imageSize-pixel input go. The title band is sized for 2× glyphs whatever the title (a
 * longer title is drawn at 1×), so the layout depends on the image size alone; only a title too long even at 1×
 * widens the picture (drawTokenMap's layout says so).
 */
export function tokenMapLayout(imageSize: number): TokenMapLayout {
  const scale = Math.max(1, Math.ceil(MIN_PANEL_PX / imageSize));
  const panelPx = imageSize * scale;
  const top = PAD + GLYPH_HEIGHT * TITLE_SCALE + PAD;
  const panels = [0, 1, 2].map((i) => ({ left: PAD + i * (panelPx + PAD), top }));
  return { width: 3 * panelPx + 4 * PAD, height: top + panelPx + 6 + GLYPH_HEIGHT + PAD, scale, panelPx, panels };
}

function checkInput(input: TokenMapInput): void {
  const { image, attention, removed, gridSize, cell } = input;
  if (image.width !== image.height || image.pixels.length !== image.width * image.height * 3) {
    throw new PlotError(
      FIGURE,
      `the image must be square RGB8, got ${image.width}x${image.height} with ${image.pixels.length} bytes`,
    );
  }
  if (!Number.isInteger(gridSize) || gridSize < 1 || image.width % gridSize !== 0) {
    throw new PlotError(FIGURE, `grid size ${gridSize} does not divide the ${image.width} px image`);
  }
  if (!Number.isInteger(cell) || cell < 1 || gridSize % cell !== 0) {
    throw new PlotError(FIGURE, `cell ${cell} does not divide the ${gridSize}x${gridSize} patch grid`);
  }
  const patches = gridSize * gridSize;
  if (attention.length !== patches) {
    throw new PlotError(FIGURE, `${attention.length} attention scores for ${patches} patches`);
  }
  if (removed.length !== patches) throw new PlotError(FIGURE, `${removed.length} mask entries for ${patches} patches`);
  for (let p = 0; p < patches; p++) {
    if (!Number.isFinite(attention[p])) throw new PlotError(FIGURE, `attention of patch ${p} is ${attention[p]}`);
  }
}

/** Draws the three panels; see the file comment. */
export function drawTokenMap(input: TokenMapInput): { raster: Raster; layout: TokenMapLayout } {
  checkInput(input);
  const { image, attention, removed, gridSize, cell, title } = input;
  const size = image.width;
  const patchPx = size / gridSize; // input pixels per patch side
  const base = tokenMapLayout(size);
  const titleScale = textWidth(title, TITLE_SCALE) + 2 * PAD <= base.width ? TITLE_SCALE : 1;
  const layout = { ...base, width: Math.max(base.width, textWidth(title, titleScale) + 2 * PAD) };
  const { scale, panelPx, panels } = layout;
  const raster = new Raster(layout.width, layout.height);
  const ink: Rgb = [20, 20, 20];
  const titleTop = PAD + Math.floor((GLYPH_HEIGHT * (TITLE_SCALE - titleScale)) / 2);
  raster.text(layout.width / 2, titleTop, title, ink, { scale: titleScale, align: "center" });

  let low = Infinity, high = -Infinity;
  for (let p = 0; p < attention.length; p++) {
    low = Math.min(low, attention[p]);
    high = Math.max(high, attention[p]);
  }
  const spread = high - low;
  const heat = (p: number): Rgb => viridis(spread > 0 ? (attention[p] - low) / spread : 0.5);

  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const o = (y * size + x) * 3;
      const rgb: Rgb = [image.pixels[o], image.pixels[o + 1], image.pixels[o + 2]];
      const patch = Math.floor(y / patchPx) * gridSize + Math.floor(x / patchPx);
      const colours = [rgb, blend(rgb, heat(patch), ATTENTION_ALPHA), removed[patch] ? removedPixel(rgb) : rgb];
      colours.forEach((c, i) =>
        raster.fillRect(panels[i].left + x * scale, panels[i].top + y * scale, scale, scale, c)
      );
    }
  }

  // The cell grid over panel 3: lines on the first pixel row/column of every cell, and a frame.
  const cellPx = patchPx * cell * scale;
  const { left, top } = panels[2];
  for (let k = 1; k < gridSize / cell; k++) {
    raster.fillRect(left + k * cellPx, top, 1, panelPx, GRID_RGB);
    raster.fillRect(left, top + k * cellPx, panelPx, 1, GRID_RGB);
  }
  for (const panel of panels) raster.strokeRect(panel.left - 1, panel.top - 1, panelPx + 2, panelPx + 2, ink);

  const captions = [
    "input (eval crop)",
    `teacher CLS attention ${low.toPrecision(3)}-${high.toPrecision(3)}`,
    "kept (as is) / removed (grey)",
  ];
  captions.forEach((caption, i) => {
    raster.text(panels[i].left + panelPx / 2, panels[i].top + panelPx + 6, caption, ink, { align: "center" });
  });
  return { raster, layout };
}
