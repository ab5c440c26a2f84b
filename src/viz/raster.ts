// raster.ts: an RGB8 canvas with the few drawing primitives figures need (filled and outlined rectangles, thick
// lines, bitmap text horizontal or rotated, image blits) plus colour maps, ending in PNG bytes. It trades quality
// for having no dependency: nothing is anti-aliased, lines are Bresenham with a square pen, and every primitive
// clips silently at the canvas edge (figures draw near their borders on purpose).
import { encodePng } from "../formats/png.ts";
import { GLYPH_ADVANCE, GLYPH_HEIGHT, GLYPH_WIDTH, glyphInk, textWidth } from "./font.ts";

/** An sRGB colour, 0–255 per channel. */
export type Rgb = readonly [number, number, number];

export const WHITE: Rgb = [255, 255, 255];
export const BLACK: Rgb = [0, 0, 0];
export const DARK_GREY: Rgb = [60, 60, 60];
export const LIGHT_GREY: Rgb = [210, 210, 210];

/** Tableau 10 (the loss-curve palette of src/viz/loss_curve.ts): distinct, and readable with common colour blindness. */
export const PALETTE: readonly Rgb[] = [
  [78, 121, 167],
  [242, 142, 43],
  [225, 87, 89],
  [118, 183, 178],
  [89, 161, 79],
  [176, 122, 161],
  [237, 201, 72],
  [255, 157, 167],
  [156, 117, 95],
  [186, 176, 172],
];

// matplotlib's viridis sampled at 0, 0.1, ..., 1 (perceptually uniform, monotone in lightness, prints in grey).
const VIRIDIS_STOPS: readonly Rgb[] = [
  [68, 1, 84],
  [72, 36, 117],
  [65, 68, 135],
  [53, 95, 141],
  [42, 120, 142],
  [33, 145, 140],
  [34, 168, 132],
  [68, 191, 112],
  [122, 209, 81],
  [189, 223, 38],
  [253, 231, 37],
];

/** viridis(t) for t in [0, 1] (clamped; NaN gives the low end), linear between the 11 stops. */
export function viridis(t: number): Rgb {
  const x = Number.isNaN(t) ? 0 : Math.min(1, Math.max(0, t)) * (VIRIDIS_STOPS.length - 1);
  const i = Math.min(Math.floor(x), VIRIDIS_STOPS.length - 2);
  const f = x - i;
  const a = VIRIDIS_STOPS[i], b = VIRIDIS_STOPS[i + 1];
  return [
    Math.round(a[0] + (b[0] - a[0]) * f),
    Math.round(a[1] + (b[1] - a[1]) * f),
    Math.round(a[2] + (b[2] - a[2]) * f),
  ];
}

/** (1 - alpha)·under + alpha·over, per channel, rounded. */
export function blend(under: Rgb, over: Rgb, alpha: number): Rgb {
  return [
    Math.round(under[0] + (over[0] - under[0]) * alpha),
    Math.round(under[1] + (over[1] - under[1]) * alpha),
    Math.round(under[2] + (over[2] - under[2]) * alpha),
  ];
}

/** Rec. 601 luma in [0, 255]: what "darker" means in the token map and its tests. */
export function luma(c: Rgb): number {
  return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
}

/** Black or white, whichever reads better on `background`. */
export function inkOn(background: Rgb): Rgb {
  return luma(background) > 140 ? BLACK : WHITE;
}

export interface TextOptions {
  /** Whole-pixel magnification of the 5×7 glyphs (default 1). */
  scale?: number;
  /** Where x is: the left edge (default), the centre or the right edge of the text. */
  align?: "left" | "center" | "right";
}

export class Raster {
  readonly width: number;
  readonly height: number;
  /** H·W·3 bytes, row-major RGB. */
  readonly pixels: Uint8Array;

  constructor(width: number, height: number, background: Rgb = WHITE) {
    if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
      throw new RangeError(`Raster: width and height must be positive integers, got ${width}x${height}`);
    }
    this.width = width;
    this.height = height;
    this.pixels = new Uint8Array(width * height * 3);
    this.fillRect(0, 0, width, height, background);
  }

  /** The colour at (x, y); throws outside the canvas (reads, unlike draws, are never meant to miss). */
  get(x: number, y: number): Rgb {
    if (!this.#inside(x, y)) throw new RangeError(`Raster.get: (${x}, ${y}) is outside ${this.width}x${this.height}`);
    const o = (y * this.width + x) * 3;
    return [this.pixels[o], this.pixels[o + 1], this.pixels[o + 2]];
  }

  /** Sets one pixel; ignored outside the canvas. */
  set(x: number, y: number, c: Rgb): void {
    if (!this.#inside(x, y)) return;
    const o = (y * this.width + x) * 3;
    this.pixels[o] = c[0];
    this.pixels[o + 1] = c[1];
    this.pixels[o + 2] = c[2];
  }

  #inside(x: number, y: number): boolean {
    return Number.isInteger(x) && Number.isInteger(y) && x >= 0 && y >= 0 && x < this.width && y < this.height;
  }

  /** Fills the w×h rectangle whose top-left pixel is (x, y) (integer coordinates; clipped). */
  fillRect(x: number, y: number, w: number, h: number, c: Rgb): void {
    const x0 = Math.max(0, Math.round(x)), y0 = Math.max(0, Math.round(y));
    const x1 = Math.min(this.width, Math.round(x + w)), y1 = Math.min(this.height, Math.round(y + h));
    for (let yy = y0; yy < y1; yy++) {
      for (let xx = x0; xx < x1; xx++) {
        const o = (yy * this.width + xx) * 3;
        this.pixels[o] = c[0];
        this.pixels[o + 1] = c[1];
        this.pixels[o + 2] = c[2];
      }
    }
  }

  /** A w×h outline, `thickness` pixels inwards from the rectangle's edge. */
  strokeRect(x: number, y: number, w: number, h: number, c: Rgb, thickness = 1): void {
    this.fillRect(x, y, w, thickness, c);
    this.fillRect(x, y + h - thickness, w, thickness, c);
    this.fillRect(x, y, thickness, h, c);
    this.fillRect(x + w - thickness, y, thickness, h, c);
  }

  /** A line from (x0, y0) to (x1, y1) (rounded to pixels), drawn with a square pen `thickness` pixels wide. */
  line(x0: number, y0: number, x1: number, y1: number, c: Rgb, thickness = 1): void {
    let x = Math.round(x0), y = Math.round(y0);
    const xe = Math.round(x1), ye = Math.round(y1);
    const dx = Math.abs(xe - x), dy = -Math.abs(ye - y);
    const sx = x < xe ? 1 : -1, sy = y < ye ? 1 : -1;
    const half = Math.floor((thickness - 1) / 2);
    let err = dx + dy;
    for (;;) {
      this.fillRect(x - half, y - half, thickness, thickness, c);
      if (x === xe && y === ye) return;
      const e2 = 2 * err;
      if (e2 >= dy) {
        err += dy;
        x += sx;
      }
      if (e2 <= dx) {
        err += dx;
        y += sy;
      }
    }
  }

  /** Draws `text` with its top at y; x is its left edge, centre or right edge (options.align). Returns its width. */
  text(x: number, y: number, text: string, c: Rgb, options: TextOptions = {}): number {
    const { scale = 1, align = "left" } = options;
    const width = textWidth(text, scale);
    let left = Math.round(align === "left" ? x : align === "center" ? x - width / 2 : x - width);
    const top = Math.round(y);
    for (let i = 0; i < text.length; i++) {
      const code = text.charCodeAt(i);
      for (let col = 0; col < GLYPH_WIDTH; col++) {
        for (let row = 0; row < GLYPH_HEIGHT; row++) {
          if (glyphInk(code, col, row)) this.fillRect(left + col * scale, top + row * scale, scale, scale, c);
        }
      }
      left += GLYPH_ADVANCE * scale;
    }
    return width;
  }

  /**
   * Draws `text` rotated a quarter turn anticlockwise (reading bottom to top, as a y-axis title); x is its left
   * edge (the glyph tops), y its bottom end, its centre or its top end (options.align: left, center, right).
   */
  textUp(x: number, y: number, text: string, c: Rgb, options: TextOptions = {}): number {
    const { scale = 1, align = "left" } = options;
    const length = textWidth(text, scale);
    let bottom = Math.round(align === "left" ? y : align === "center" ? y + length / 2 : y + length);
    const left = Math.round(x);
    for (let i = 0; i < text.length; i++) {
      const code = text.charCodeAt(i);
      for (let col = 0; col < GLYPH_WIDTH; col++) {
        for (let row = 0; row < GLYPH_HEIGHT; row++) {
          // Glyph column col goes upwards from the baseline end; glyph row row goes rightwards.
          if (glyphInk(code, col, row)) this.fillRect(left + row * scale, bottom - (col + 1) * scale, scale, scale, c);
        }
      }
      bottom -= GLYPH_ADVANCE * scale;
    }
    return length;
  }

  /**
   * Copies an RGB8 image (h·w·3 bytes) with its top-left at (x, y), each source pixel as a scale×scale block
   * (nearest neighbour: pixels stay pixels, which is what an inspection figure wants).
   */
  blit(x: number, y: number, image: { width: number; height: number; pixels: Uint8Array }, scale = 1): void {
    const { width, height, pixels } = image;
    if (pixels.length !== width * height * 3) {
      throw new RangeError(
        `Raster.blit: a ${width}x${height} RGB image needs ${width * height * 3} bytes, got ${pixels.length}`,
      );
    }
    for (let sy = 0; sy < height; sy++) {
      for (let sx = 0; sx < width; sx++) {
        const o = (sy * width + sx) * 3;
        this.fillRect(x + sx * scale, y + sy * scale, scale, scale, [pixels[o], pixels[o + 1], pixels[o + 2]]);
      }
    }
  }

  toPng(): Uint8Array {
    return encodePng(this.width, this.height, this.pixels, "rgb");
  }
}
