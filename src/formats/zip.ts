// zip.ts: random access to the members of a zip archive without reading the whole file: the official YFCC15M image
// zips (docs/data.md#yfcc15m) and torch.save's `.pt` checkpoints (a zip of data.pkl plus one file per storage). It
// reads the end-of-central-directory record and the central directory (zip64 included), and each member on demand:
// stored members as they are, deflated ones through node:zlib, both checked against their CRC-32. It trades writing,
// encryption, multi-disk archives and compression methods other than stored/deflate for a reader that fits on a page.
import { inflateRawSync } from "node:zlib";
import { crc32 } from "./crc32.ts";

/** A malformed, truncated or unsupported archive, or a member that fails its checks. */
export class ZipError extends Error {
  constructor(readonly path: string, message: string) {
    super(`${path}: ${message}`);
    this.name = "ZipError";
  }
}

export const ZIP_STORED = 0;
export const ZIP_DEFLATED = 8;

/** One member as the central directory describes it. */
export interface ZipEntry {
  name: string;
  /** ZIP_STORED or ZIP_DEFLATED (anything else is reported when read). */
  method: number;
  compressedSize: number;
  size: number;
  crc32: number;
  /** Offset of the member's local header; the data follows it (see zipEntryDataOffset). */
  localHeaderOffset: number;
}

const EOCD_SIGNATURE = 0x06054b50;
const ZIP64_EOCD_SIGNATURE = 0x06064b50;
const ZIP64_LOCATOR_SIGNATURE = 0x07064b50;
const CENTRAL_SIGNATURE = 0x02014b50;
const LOCAL_SIGNATURE = 0x04034b50;
const EOCD_SIZE = 22;
/** The most bytes one deflated member may unpack to (docs/errors.md, "Input bounds"), as the native loader's cap. */
export const ZIP_MAX_INFLATED_BYTES = 256 * 1024 * 1024;
const MAX_COMMENT = 0xffff;

function readAt(file: Deno.FsFile, path: string, offset: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  file.seekSync(offset, Deno.SeekMode.Start);
  let at = 0;
  while (at < length) {
    const n = file.readSync(out.subarray(at));
    if (n === null || n === 0) throw new ZipError(path, `truncated: wanted ${length} bytes at offset ${offset}`);
    at += n;
  }
  return out;
}

const utf8 = new TextDecoder("utf-8");
const latin1 = new TextDecoder("latin1");

/** An open archive: its central directory in memory, members read on demand. Close it (or `using`). */
export class ZipArchive {
  readonly entries: Map<string, ZipEntry>;
  readonly #file: Deno.FsFile;
  readonly #size: number;
  #closed = false;

  constructor(readonly path: string) {
    let regular: boolean;
    try {
      regular = Deno.statSync(path).isFile; // stat first: opening a FIFO would block until a writer appears
    } catch (error) {
      throw new ZipError(path, `cannot open: ${(error as Error).message}`);
    }
    if (!regular) throw new ZipError(path, "not a regular file");
    try {
      this.#file = Deno.openSync(path, { read: true });
    } catch (error) {
      throw new ZipError(path, `cannot open: ${(error as Error).message}`);
    }
    try {
      this.#size = this.#file.statSync().size;
      this.entries = this.#readDirectory();
    } catch (error) {
      this.#file.close();
      throw error;
    }
  }

  #readDirectory(): Map<string, ZipEntry> {
    const { path } = this;
    if (this.#size < EOCD_SIZE) throw new ZipError(path, `not a zip archive (${this.#size} bytes)`);
    // The EOCD record is the last 22 bytes plus a comment of up to 64 KiB: scan backwards for its signature.
    const tailLength = Math.min(this.#size, EOCD_SIZE + MAX_COMMENT);
    const tailStart = this.#size - tailLength;
    const tail = readAt(this.#file, path, tailStart, tailLength);
    const tv = new DataView(tail.buffer);
    let eocd = -1;
    for (let i = tailLength - EOCD_SIZE; i >= 0; i--) {
      if (tv.getUint32(i, true) === EOCD_SIGNATURE) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) throw new ZipError(path, "not a zip archive (no end-of-central-directory record)");
    let count = tv.getUint16(eocd + 10, true);
    let dirSize = tv.getUint32(eocd + 12, true);
    let dirOffset = tv.getUint32(eocd + 16, true);
    if (count === 0xffff || dirSize === 0xffffffff || dirOffset === 0xffffffff) {
      // zip64: a locator just before the EOCD points at the zip64 EOCD record with 64-bit fields.
      const locator = eocd - 20;
      if (locator < 0 || tv.getUint32(locator, true) !== ZIP64_LOCATOR_SIGNATURE) {
        throw new ZipError(path, "zip64 fields without a zip64 locator");
      }
      const recordOffset = Number(tv.getBigUint64(locator + 8, true));
      const record = new DataView(readAt(this.#file, path, recordOffset, 56).buffer);
      if (record.getUint32(0, true) !== ZIP64_EOCD_SIGNATURE) throw new ZipError(path, "bad zip64 end record");
      count = Number(record.getBigUint64(32, true));
      dirSize = Number(record.getBigUint64(40, true));
      dirOffset = Number(record.getBigUint64(48, true));
    }
    if (dirOffset + dirSize > this.#size) {
      throw new ZipError(path, `central directory (${dirSize} bytes at ${dirOffset}) runs past the end`);
    }
    const dir = readAt(this.#file, path, dirOffset, dirSize);
    const dv = new DataView(dir.buffer);
    const entries = new Map<string, ZipEntry>();
    let at = 0;
    for (let n = 0; n < count; n++) {
      if (at + 46 > dirSize || dv.getUint32(at, true) !== CENTRAL_SIGNATURE) {
        throw new ZipError(path, `central directory entry ${n} of ${count} is malformed`);
      }
      const flags = dv.getUint16(at + 8, true);
      const method = dv.getUint16(at + 10, true);
      const crc = dv.getUint32(at + 16, true);
      let compressedSize = dv.getUint32(at + 20, true);
      let size = dv.getUint32(at + 24, true);
      const nameLength = dv.getUint16(at + 28, true);
      const extraLength = dv.getUint16(at + 30, true);
      const commentLength = dv.getUint16(at + 32, true);
      let localHeaderOffset = dv.getUint32(at + 42, true);
      if (at + 46 + nameLength + extraLength + commentLength > dirSize) {
        throw new ZipError(path, `central directory entry ${n} of ${count} runs past the directory`);
      }
      const nameBytes = dir.subarray(at + 46, at + 46 + nameLength);
      // Bit 11: the name is UTF-8; otherwise CP437, of which ASCII (all real names here) is a subset.
      const name = (flags & 0x800 ? utf8 : latin1).decode(nameBytes);
      // zip64 extra field (id 1): the 64-bit values, present only for the fields that were saturated, in this order.
      let extra = at + 46 + nameLength;
      const extraEnd = extra + extraLength;
      while (extra + 4 <= extraEnd) {
        const id = dv.getUint16(extra, true);
        const length = dv.getUint16(extra + 2, true);
        if (extra + 4 + length > extraEnd) throw new ZipError(path, `member '${name}' has a malformed extra field`);
        if (id === 1) {
          let field = extra + 4;
          const saturated = [size, compressedSize, localHeaderOffset].filter((v) => v === 0xffffffff).length;
          if (8 * saturated > length) throw new ZipError(path, `member '${name}' has a short zip64 extra field`);
          if (size === 0xffffffff) size = Number(dv.getBigUint64((field += 8) - 8, true));
          if (compressedSize === 0xffffffff) compressedSize = Number(dv.getBigUint64((field += 8) - 8, true));
          if (localHeaderOffset === 0xffffffff) localHeaderOffset = Number(dv.getBigUint64(field, true));
        }
        extra += 4 + length;
      }
      if (flags & 1) throw new ZipError(path, `member '${name}' is encrypted`);
      entries.set(name, { name, method, compressedSize, size, crc32: crc, localHeaderOffset });
      at += 46 + nameLength + extraLength + commentLength;
    }
    return entries;
  }

  #checkOpen(): void {
    if (this.#closed) throw new ZipError(this.path, "archive used after close()");
  }

  /** The member called `name`, or a ZipError naming it. */
  entry(name: string): ZipEntry {
    const entry = this.entries.get(name);
    if (entry === undefined) throw new ZipError(this.path, `no member '${name}'`);
    return entry;
  }

  /** Where the member's (possibly compressed) bytes start: after its local header, whose extra field may differ. */
  dataOffset(entry: ZipEntry): number {
    this.#checkOpen();
    const header = readAt(this.#file, this.path, entry.localHeaderOffset, 30);
    const hv = new DataView(header.buffer);
    if (hv.getUint32(0, true) !== LOCAL_SIGNATURE) {
      throw new ZipError(this.path, `member '${entry.name}': no local header at ${entry.localHeaderOffset}`);
    }
    const offset = entry.localHeaderOffset + 30 + hv.getUint16(26, true) + hv.getUint16(28, true);
    if (offset + entry.compressedSize > this.#size) {
      throw new ZipError(this.path, `member '${entry.name}' runs past the end of the archive (truncated?)`);
    }
    return offset;
  }

  /** The member's uncompressed bytes, CRC-checked. */
  read(nameOrEntry: string | ZipEntry): Uint8Array {
    const entry = typeof nameOrEntry === "string" ? this.entry(nameOrEntry) : nameOrEntry;
    const raw = readAt(this.#file, this.path, this.dataOffset(entry), entry.compressedSize);
    let data: Uint8Array;
    if (entry.method === ZIP_STORED) {
      data = raw;
    } else if (entry.method === ZIP_DEFLATED) {
      // The directory's size bounds the output (a zip bomb stops there); deflate cannot expand more than 1032:1.
      if (entry.size > ZIP_MAX_INFLATED_BYTES || entry.size > entry.compressedSize * 1032 + 1024) {
        throw new ZipError(
          this.path,
          `member '${entry.name}': declares ${entry.size} bytes from ${entry.compressedSize} compressed ` +
            `(the cap is ${ZIP_MAX_INFLATED_BYTES} bytes and deflate expands at most 1032:1)`,
        );
      }
      try {
        data = new Uint8Array(inflateRawSync(raw, { maxOutputLength: Math.max(1, entry.size) }));
      } catch (error) {
        throw new ZipError(this.path, `member '${entry.name}': corrupt deflate data (${(error as Error).message})`);
      }
    } else {
      throw new ZipError(this.path, `member '${entry.name}': compression method ${entry.method} is not supported`);
    }
    if (data.length !== entry.size) {
      throw new ZipError(this.path, `member '${entry.name}': ${data.length} bytes, the directory says ${entry.size}`);
    }
    if (crc32(data) !== entry.crc32) throw new ZipError(this.path, `member '${entry.name}': CRC-32 mismatch`);
    return data;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#file.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
