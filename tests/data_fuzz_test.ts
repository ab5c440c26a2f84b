// data_fuzz_test.ts: mutated real image bytes and tar shards through the native decoder and loader. Base images are
// made in the test (PNGs by src/formats/png.ts; JPEG baseline/progressive/grayscale/CMYK, palette/alpha/16-bit PNG and
// lossy/lossless WebP by PIL through /usr/bin/python3 when it is there), then mutated deterministically: bit flips,
// truncations, byte insertions and deletions, overwritten header bytes and dimensions, spliced files. Every case must
// end counted: decoded, or skipped with a reason; a tar shard is indexed (its members then decoded or skipped) or
// refused with an Error. Nothing may crash or hang, and the counts must add up. Zip archives (stored and deflated
// members) are mutated the same way and, in a second set, only inside a deflated member's data; every member the
// native workers read must get the verdict that node:zlib + the CRC-32 + the decoder give the same bytes.
import { deflateRawSync } from "node:zlib";
import { decodeImage, imageSkipReason, NativeLoader } from "../src/data/loader.ts";
import { readWebDatasetTable } from "../src/data/webdataset.ts";
import { crc32 } from "../src/formats/crc32.ts";
import { encodePng } from "../src/formats/png.ts";
import { ZIP_DEFLATED, ZIP_STORED, ZipArchive } from "../src/formats/zip.ts";
import { liveTensors } from "../src/torch/mod.ts";
import { assert, assertEquals, missingTool, nativeMissing, pythonModulesMissing } from "./helpers.ts";

const IMAGE_CASES = 3000;
const TAR_CASES = 300;
const ZIP_CASES = 300;

const noNative = missingTool("the native library", nativeMissing());
// PIL's JPEG, 16-bit PNG and WebP variants are the richer base images; without PIL only the two PNGs are fuzzed.
const noPil = missingTool("python3 with PIL and numpy", pythonModulesMissing(["PIL", "numpy"]));

/** A small deterministic generator (mulberry32). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PIL_SCRIPT = String.raw`
import io, sys, numpy as np
from PIL import Image
out = sys.argv[1]
h, w = 48, 64
yy, xx = np.mgrid[0:h, 0:w]
rgb = np.stack([(xx * 4) % 256, (yy * 5) % 256, ((xx + yy) * 3) % 256], -1).astype(np.uint8)
im = Image.fromarray(rgb, "RGB")
im.save(out + "/base.jpg", quality=85)
im.save(out + "/prog.jpg", quality=85, progressive=True)
im.save(out + "/444.jpg", quality=95, subsampling=0)
im.convert("L").save(out + "/gray.jpg")
im.convert("CMYK").save(out + "/cmyk.jpg")
im.convert("P").save(out + "/palette.png")
Image.fromarray(np.dstack([rgb, (xx * 4 % 256).astype(np.uint8)]), "RGBA").save(out + "/alpha.png")
Image.fromarray((yy * 1000 + xx).astype(np.uint16)).save(out + "/gray16.png")
im.save(out + "/lossy.webp", quality=80)
im.save(out + "/lossless.webp", lossless=True)
`;
import { tarArchive } from "../src/data/tar_stream.ts";

/** The base images: always two PNGs from encodePng; PIL's JPEG/PNG/WebP variants when python3 with PIL is there. */
function baseImages(dir: string): { name: string; bytes: Uint8Array }[] {
  const w = 40, h = 30;
  const rgb = new Uint8Array(w * h * 3).map((_, i) => (i * 37) & 255);
  const gray = new Uint8Array(w * h).map((_, i) => (i * 11) & 255);
  const out = [
    { name: "ts_rgb.png", bytes: encodePng(w, h, rgb, "rgb") },
    { name: "ts_gray.png", bytes: encodePng(w, h, gray, "gray") },
  ];
  if (noPil) return out;
  const result = new Deno.Command("/usr/bin/python3", { args: ["-c", PIL_SCRIPT, dir], stderr: "piped" }).outputSync();
  if (!result.success) throw new Error(`PIL base images failed:\n${new TextDecoder().decode(result.stderr)}`);
  for (const entry of [...Deno.readDirSync(dir)].sort((a, b) => a.name.localeCompare(b.name))) {
    out.push({ name: entry.name, bytes: Deno.readFileSync(`${dir}/${entry.name}`) });
  }
  return out;
}

/** One mutation of `bytes`, chosen and parameterised by `r`; returns the mutated copy and its kind. */
function mutate(bytes: Uint8Array, r: () => number, others: Uint8Array[]): { bytes: Uint8Array; kind: string } {
  const n = bytes.length;
  const at = (limit = n) => Math.floor(r() * Math.max(1, limit));
  const kind = Math.floor(r() * 8);
  switch (kind) {
    case 0: { // bit flips anywhere
      const out = bytes.slice();
      const flips = 1 + at(16);
      for (let k = 0; k < flips; k++) out[at()] ^= 1 << at(8);
      return { bytes: out, kind: "bitflip" };
    }
    case 1: // truncation (including to zero bytes)
      return { bytes: bytes.slice(0, at(n)), kind: "truncate" };
    case 2: { // insertion of random bytes
      const pos = at(n), len = 1 + at(64);
      const ins = new Uint8Array(len).map(() => at(256));
      const out = new Uint8Array(n + len);
      out.set(bytes.subarray(0, pos));
      out.set(ins, pos);
      out.set(bytes.subarray(pos), pos + len);
      return { bytes: out, kind: "insert" };
    }
    case 3: { // deletion of a range
      const pos = at(n), len = 1 + at(Math.min(256, n - pos));
      const out = new Uint8Array(n - Math.min(len, n - pos));
      out.set(bytes.subarray(0, pos));
      out.set(bytes.subarray(pos + len), pos);
      return { bytes: out, kind: "delete" };
    }
    case 4: { // header corruption: random bytes in the first 64
      const out = bytes.slice();
      const count = 1 + at(8);
      for (let k = 0; k < count; k++) out[at(Math.min(64, n))] = at(256);
      return { bytes: out, kind: "header" };
    }
    case 5: { // huge or zero dimensions: overwrite 2-4 bytes after a size field's usual place with 0x00 / 0xff
      const out = bytes.slice();
      const value = r() < 0.5 ? 0xff : 0x00;
      const starts = [16, 17, 18, 19, 20, 21, 22, 23, 26, 163, 164, 165, 166]; // PNG IHDR, WebP VP8X/VP8, JPEG SOF
      const start = starts[at(starts.length)];
      for (let k = 0; k < 2 + at(3); k++) if (start + k < n) out[start + k] = value;
      return { bytes: out, kind: "dimensions" };
    }
    case 6: { // splice: the head of this file and the tail of another
      const other = others[at(others.length)];
      const cut = at(n), from = Math.floor(r() * other.length);
      const out = new Uint8Array(cut + other.length - from);
      out.set(bytes.subarray(0, cut));
      out.set(other.subarray(from), cut);
      return { bytes: out, kind: "splice" };
    }
    default: { // random garbage with a valid-looking magic
      const out = new Uint8Array(8 + at(2048)).map(() => at(256));
      out.set(bytes.subarray(0, Math.min(8, n, out.length)));
      return { bytes: out, kind: "garbage" };
    }
  }
}

/** A zip archive of (name, data) members, each stored or deflated; also where each member's data lies. */
function zip(
  members: { name: string; data: Uint8Array; deflate: boolean }[],
): { bytes: Uint8Array; spans: { header: number; offset: number; length: number; deflated: boolean }[] } {
  const enc = new TextEncoder();
  const locals: Uint8Array[] = [], centrals: Uint8Array[] = [];
  const spans: { header: number; offset: number; length: number; deflated: boolean }[] = [];
  let offset = 0;
  for (const m of members) {
    const name = enc.encode(m.name);
    const data = m.deflate ? new Uint8Array(deflateRawSync(m.data)) : m.data;
    const method = m.deflate ? ZIP_DEFLATED : ZIP_STORED, crc = crc32(m.data);
    const local = new Uint8Array(30 + name.length + data.length);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(4, 20, true);
    lv.setUint16(8, method, true);
    lv.setUint16(12, 0x21, true);
    lv.setUint32(14, crc, true);
    lv.setUint32(18, data.length, true);
    lv.setUint32(22, m.data.length, true);
    lv.setUint16(26, name.length, true);
    local.set(name, 30);
    local.set(data, 30 + name.length);
    const central = new Uint8Array(46 + name.length);
    const cv = new DataView(central.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, 20, true);
    cv.setUint16(6, 20, true);
    cv.setUint16(10, method, true);
    cv.setUint16(14, 0x21, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, data.length, true);
    cv.setUint32(24, m.data.length, true);
    cv.setUint16(28, name.length, true);
    cv.setUint32(42, offset, true);
    central.set(name, 46);
    spans.push({ header: offset, offset: offset + 30 + name.length, length: data.length, deflated: m.deflate });
    locals.push(local);
    centrals.push(central);
    offset += local.length;
  }
  const dirSize = centrals.reduce((sum, c) => sum + c.length, 0);
  const end = new Uint8Array(22);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, members.length, true);
  ev.setUint16(10, members.length, true);
  ev.setUint32(12, dirSize, true);
  ev.setUint32(16, offset, true);
  const bytes = new Uint8Array(offset + dirSize + 22);
  let at = 0;
  for (const part of [...locals, ...centrals, end]) {
    bytes.set(part, at);
    at += part.length;
  }
  return { bytes, spans };
}

Deno.test({
  name: `data fuzz: ${IMAGE_CASES} mutated images through the decoder and the loader, all counted`,
  ignore: noNative,
  fn() {
    const dir = Deno.makeTempDirSync({ prefix: "dc_fuzz_img_" });
    try {
      const bases = baseImages(dir);
      const before = liveTensors();
      const r = rng(1234);
      const decoded = { direct: 0, loader: 0 };
      const skipped: Record<string, number> = {};
      const loaderSkipped: Record<string, number> = {};
      const kinds: Record<string, number> = {};
      const paths: string[] = [];
      for (let i = 0; i < IMAGE_CASES; i++) {
        const base = bases[i % bases.length];
        const { bytes, kind } = mutate(base.bytes, r, bases.map((b) => b.bytes));
        kinds[kind] = (kinds[kind] ?? 0) + 1;
        const result = decodeImage(bytes, { maxPixels: 4_000_000 });
        if ("skip" in result) {
          skipped[result.skip] = (skipped[result.skip] ?? 0) + 1;
        } else {
          assertEquals(result.pixels.length, result.width * result.height * 3, `case ${i}: RGB8 size`);
          decoded.direct++;
        }
        const path = `${dir}/case_${i}.bin`;
        Deno.writeFileSync(path, bytes);
        paths.push(path);
      }
      // The same files through the loader's worker threads (2 views at 32 px, train mode), one candidate per slot.
      using loader = new NativeLoader({ threads: 2, imageSize: 32, views: 2, maxPixels: 4_000_000 });
      const batch = 250;
      for (let at = 0; at < paths.length; at += batch) {
        const chunk = paths.slice(at, at + batch);
        const result = loader.run({
          candidates: chunk.map((path, k) => ({ path, index: at + k })),
          slotBegin: Array.from({ length: chunk.length + 1 }, (_, k) => k),
          seed: 7,
          rank: 0,
          epoch: 0,
        });
        for (const s of result.status) {
          assert(s >= 0, `a candidate was not tried (status ${s})`);
          if (s === 0) decoded.loader++;
          else loaderSkipped[String(s)] = (loaderSkipped[String(s)] ?? 0) + 1;
        }
        result.u.dispose();
        result.v?.dispose();
      }
      const sum = (o: Record<string, number>) => Object.values(o).reduce((a, b) => a + b, 0);
      assertEquals(decoded.direct + sum(skipped), IMAGE_CASES, "direct decode: decoded + skipped");
      assertEquals(decoded.loader + sum(loaderSkipped), IMAGE_CASES, "loader: decoded + skipped");
      assert(decoded.direct > 0 && sum(skipped) > 0, "the mutations should give both outcomes");
      for (const reason of Object.keys(skipped)) assert(reason.startsWith("image_"), `unknown reason ${reason}`);
      assertEquals(liveTensors(), before, "live tensor handles");
      console.log(JSON.stringify({ cases: IMAGE_CASES, bases: bases.length, kinds, decoded, skipped }));
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: `data fuzz: ${TAR_CASES} mutated webdataset shards are indexed or refused, members decoded or skipped`,
  ignore: noNative,
  fn() {
    const dir = Deno.makeTempDirSync({ prefix: "dc_fuzz_tar_" });
    try {
      const bases = baseImages(dir);
      const r = rng(99);
      const enc = new TextEncoder();
      const members: { name: string; data: Uint8Array }[] = [];
      for (let k = 0; k < 6; k++) {
        const base = bases[k % bases.length];
        const ext = base.name.split(".").pop()!;
        members.push({ name: `${String(k).padStart(5, "0")}.${ext}`, data: base.bytes });
        if (k !== 4) members.push({ name: `${String(k).padStart(5, "0")}.txt`, data: enc.encode(`caption ${k}`) });
      }
      const clean = tarArchive(members);
      const outcomes = { indexed: 0, refused: 0 };
      const member = { decoded: 0, skipped: 0 };
      const indexSkips: Record<string, number> = {};
      using loader = new NativeLoader({ threads: 2, imageSize: 32, views: 1, mode: "eval" });
      for (let i = 0; i < TAR_CASES; i++) {
        const { bytes } = mutate(clean, r, [clean]);
        const path = `${dir}/shard_${i}.tar`;
        Deno.writeFileSync(path, bytes);
        let table;
        try {
          table = readWebDatasetTable({ shards: path });
        } catch (error) {
          assert(error instanceof Error, `case ${i}: threw a non-Error ${String(error)}`);
          outcomes.refused++;
          continue;
        }
        outcomes.indexed++;
        for (const [reason, count] of Object.entries(table.indexSkips.snapshot())) {
          indexSkips[reason] = (indexSkips[reason] ?? 0) + count;
        }
        if (table.size > 0) {
          const refs = Array.from({ length: table.size }, (_, k) => ({ ...table.image(k), index: k }));
          const result = loader.run({
            candidates: refs,
            slotBegin: Array.from({ length: refs.length + 1 }, (_, k) => k),
            seed: 1,
            rank: 0,
            epoch: 0,
          });
          for (const s of result.status) {
            assert(s >= 0, `case ${i}: a member was not tried`);
            if (s === 0) member.decoded++;
            else member.skipped++;
          }
          for (let k = 0; k < table.size; k++) table.caption(k, 0); // a caption or a skip, never a throw
          result.u.dispose();
          result.v?.dispose();
        }
        table.close?.();
      }
      assertEquals(outcomes.indexed + outcomes.refused, TAR_CASES, "every shard indexed or refused");
      assert(outcomes.indexed > 0 && member.decoded > 0, "some shards should survive");
      console.log(JSON.stringify({ cases: TAR_CASES, outcomes, member, indexSkips }));
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: `data fuzz: ${ZIP_CASES} mutated zips and ${ZIP_CASES} flipped deflate streams, each member's verdict checked`,
  ignore: noNative,
  fn() {
    const dir = Deno.makeTempDirSync({ prefix: "dc_fuzz_zip_" });
    try {
      const bases = baseImages(dir);
      const members = bases.slice(0, 8).map((b, k) => ({
        name: `data/images/${k}/${b.name}`,
        data: b.bytes,
        deflate: k % 2 === 1,
      }));
      const clean = zip(members);
      const deflatedSpans = clean.spans.filter((span) => span.deflated);
      const r = rng(4242);
      const before = liveTensors();
      const archives = { indexed: 0, refused: 0, refusedOther: 0 };
      const verdicts: Record<string, number> = {};
      const flipped: Record<string, number> = {};
      // Eval mode without DCT scaling decodes at full size, as decodeImage does, so their verdicts are comparable.
      using loader = new NativeLoader({
        threads: 2,
        imageSize: 16,
        views: 1,
        mode: "eval",
        dctScaling: false,
        maxPixels: 4_000_000,
      });
      for (let i = 0; i < 2 * ZIP_CASES; i++) {
        let bytes: Uint8Array, flippedHeader = -1;
        if (i < ZIP_CASES) {
          bytes = mutate(clean.bytes, r, [clean.bytes]).bytes;
        } else {
          // Only the compressed bytes of one deflated member change: the directory still vouches for the original.
          bytes = clean.bytes.slice();
          const span = deflatedSpans[Math.floor(r() * deflatedSpans.length)];
          flippedHeader = span.header;
          for (let k = 1 + Math.floor(r() * 3); k > 0; k--) {
            bytes[span.offset + Math.floor(r() * span.length)] ^= 1 + Math.floor(r() * 255);
          }
        }
        const path = `${dir}/case_${i}.zip`;
        Deno.writeFileSync(path, bytes);
        let archive: ZipArchive;
        try {
          archive = new ZipArchive(path);
        } catch (error) {
          assert(error instanceof Error, `case ${i}: threw a non-Error ${String(error)}`);
          archives.refused++;
          // Not every refusal is a ZipError yet (zip.ts reads an extra field that runs past the directory with a
          // DataView, which throws RangeError); readYfccTable counts any refusal as zip_corrupt.
          if (error.name !== "ZipError") archives.refusedOther++;
          continue;
        }
        archives.indexed++;
        try {
          const entries = [...archive.entries.values()].filter((e) =>
            (e.method === ZIP_STORED || e.method === ZIP_DEFLATED) && e.size <= 0xffffffff
          );
          if (entries.length === 0) continue;
          const result = loader.run({
            candidates: entries.map((e, k) => ({
              path,
              offset: e.localHeaderOffset,
              length: e.compressedSize,
              member: { zipLocalHeader: true, deflated: e.method === ZIP_DEFLATED, size: e.size, crc32: e.crc32 },
              index: k,
            })),
            slotBegin: entries.map((_, k) => k).concat([entries.length]),
            seed: 1,
            rank: 0,
            epoch: 0,
          });
          result.u.dispose();
          entries.forEach((entry, k) => {
            const got = result.status[k] === 0 ? "decoded" : imageSkipReason(result.status[k]);
            assert(result.status[k] >= 0, `case ${i}: member ${k} was not tried`);
            verdicts[got] = (verdicts[got] ?? 0) + 1;
            if (entry.localHeaderOffset === flippedHeader) flipped[got] = (flipped[got] ?? 0) + 1;
            // The reference: the TypeScript reader (node:zlib, size and CRC-32 checks), then the decoder.
            let data: Uint8Array | null = null;
            try {
              data = archive.read(entry);
            } catch {
              // a member the reference refuses must not decode natively
            }
            if (data === null) {
              assert(got !== "decoded", `case ${i}: member '${entry.name}' fails its checks but decoded`);
            } else {
              const direct = decodeImage(data, { maxPixels: 4_000_000 });
              assertEquals(got, "skip" in direct ? direct.skip : "decoded", `case ${i}: member '${entry.name}'`);
            }
          });
        } finally {
          archive.close();
        }
      }
      assertEquals(archives.indexed + archives.refused, 2 * ZIP_CASES, "every archive indexed or refused");
      assert(archives.indexed > ZIP_CASES && (verdicts.decoded ?? 0) > 0, JSON.stringify({ archives, verdicts }));
      assert((flipped.zip_member_corrupt ?? 0) > 0, `flipped deflate data is caught: ${JSON.stringify(flipped)}`);
      assertEquals(liveTensors(), before, "live tensor handles");
      console.log(JSON.stringify({ cases: 2 * ZIP_CASES, archives, verdicts, flipped }));
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
