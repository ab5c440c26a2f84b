// png.ts: a minimal PNG encoder for debug pictures and figures (data previews, loss curves, token maps). It writes
// 8-bit RGB or grayscale, non-interlaced, one IDAT chunk, every scanline with filter "Sub". It trades compression ratio
// and features (palette, alpha, 16-bit, interlacing) for a file that reads in one sitting and needs nothing but
// node:zlib, which Deno provides.
import { deflateSync } from "node:zlib";
import { crc32 } from "./crc32.ts";

/** PNG colour types this encoder writes: 0 = gray8, 2 = RGB8. */
export type PngColorType = "gray" | "rgb";

const SIGNATURE = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** One PNG chunk: length (4, big-endian), type (4 ASCII), data, CRC over type + data. */
export function pngChunk(type: string, data: Uint8Array): Uint8Array {
  // A chunk is length (4, big-endian), type (4 ASCII), data, CRC over type + data.
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out, 4, 8 + data.length));
  return out;
}

/**
 * Encodes an 8-bit image as PNG. `pixels` is row-major, H·W·3 bytes (RGB) or H·W bytes (gray); the colour type is
 * taken from its length unless given.
 */
export function encodePng(width: number, height: number, pixels: Uint8Array, colorType?: PngColorType): Uint8Array {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new RangeError(`encodePng: width and height must be positive integers, got ${width}x${height}`);
  }
  const kind = colorType ?? (pixels.length === width * height ? "gray" : "rgb");
  const channels = kind === "rgb" ? 3 : 1;
  if (pixels.length !== width * height * channels) {
    throw new RangeError(
      `encodePng: a ${width}x${height} ${kind} image needs ${width * height * channels} bytes, got ${pixels.length}`,
    );
  }
  const header = new Uint8Array(13);
  const hv = new DataView(header.buffer);
  hv.setUint32(0, width);
  hv.setUint32(4, height);
  header[8] = 8; // bit depth
  header[9] = kind === "rgb" ? 2 : 0; // colour type
  header[10] = 0; // compression: deflate
  header[11] = 0; // filter method 0
  header[12] = 0; // no interlace

  // Filter "Sub" (1) stores each byte minus the one a pixel to its left: flat regions and gradients become runs of
  // small values, which deflate compresses several times better than raw bytes, at the cost of one subtraction.
  const stride = width * channels;
  const raw = new Uint8Array(height * (stride + 1));
  for (let y = 0; y < height; y++) {
    const row = y * stride;
    const dst = y * (stride + 1);
    raw[dst] = 1;
    for (let x = 0; x < stride; x++) {
      const left = x >= channels ? pixels[row + x - channels] : 0;
      raw[dst + 1 + x] = (pixels[row + x] - left) & 0xff;
    }
  }
  const compressed = new Uint8Array(deflateSync(raw));

  const parts = [
    SIGNATURE,
    pngChunk("IHDR", header),
    pngChunk("IDAT", compressed),
    pngChunk("IEND", new Uint8Array(0)),
  ];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}
