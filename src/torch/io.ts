// io.ts: safetensors reading and writing. Weights and golden references move as safetensors because loading them
// runs no code. The reader parses only the header on open and reads each tensor's bytes on demand, so a large
// checkpoint can be inspected or loaded piecemeal; the writer is atomic (temp file, fsync, rename).
import { createHash } from "node:crypto";
import type { Device, DType } from "./dtype.ts";
import { dtypeSize } from "./dtype.ts";
import { Tensor } from "./tensor.ts";
import { OutputWriteError, TEMP_SUFFIX, writeAll, writeFileAtomic } from "../fs/atomic_write.ts";

/** A malformed or unsupported safetensors file; the message names the file and, where relevant, the tensor. */
export class SafeTensorsError extends Error {
  readonly path: string;
  readonly tensorName: string | undefined;

  constructor(path: string, message: string, tensorName?: string) {
    const where = tensorName === undefined ? path : `${path}, tensor '${tensorName}'`;
    super(`safetensors ${where}: ${message}`);
    this.name = "SafeTensorsError";
    this.path = path;
    this.tensorName = tensorName;
  }
}

/** What the header says about one tensor. */
export interface TensorInfo {
  dtype: DType;
  shape: number[];
  byteLength: number;
}

/** The safetensors dtype strings we can hold, and back. A Map, so a dtype like "constructor" is not found. */
const fromStored = new Map<string, DType>([
  ["F32", "float32"],
  ["F64", "float64"],
  ["F16", "float16"],
  ["BF16", "bfloat16"],
  ["I64", "int64"],
  ["I32", "int32"],
  ["U8", "uint8"],
  ["BOOL", "bool"],
  ["I8", "int8"],
  ["I16", "int16"],
]);
const toStored = Object.fromEntries([...fromStored].map(([k, v]) => [v, k])) as Record<DType, string>;

/** Stands in for a hex SHA-256 in the header until the data has been hashed; the same width as the digest. */
const DIGEST_PLACEHOLDER = "0".repeat(64);

/** The reference implementation's cap (MAX_HEADER_SIZE); a larger length means a corrupt or hostile file. */
const MAX_HEADER_BYTES = 100_000_000;
const METADATA_KEY = "__metadata__";

interface Entry {
  storedDtype: string;
  shape: number[];
  begin: number;
  end: number;
}

/** An open safetensors file: header, metadata and tensors read one at a time. */
export class SafeTensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string>;
  #file: Deno.FsFile | null;
  #entries: Map<string, Entry>;
  /** Absolute file offset of the data section (8 + header length). */
  #dataStart: number;

  private constructor(
    path: string,
    file: Deno.FsFile,
    entries: Map<string, Entry>,
    metadata: Record<string, string>,
    dataStart: number,
  ) {
    this.path = path;
    this.#file = file;
    this.#entries = entries;
    this.metadata = metadata;
    this.#dataStart = dataStart;
  }

  /** Opens a file and validates its header; tensor data is read later, by name. */
  static open(path: string): SafeTensorsFile {
    let file: Deno.FsFile;
    try {
      // stat first: opening a FIFO would block until a writer appears
      if (!Deno.statSync(path).isFile) throw new SafeTensorsError(path, "not a regular file");
      file = Deno.openSync(path, { read: true });
    } catch (error) {
      if (error instanceof SafeTensorsError) throw error;
      throw new SafeTensorsError(path, `cannot open: ${(error as Error).message}`);
    }
    try {
      const stat = file.statSync();
      if (!stat.isFile) throw new SafeTensorsError(path, "not a regular file");
      const fileSize = stat.size;
      if (fileSize < 8) {
        throw new SafeTensorsError(path, `file is ${fileSize} bytes, shorter than the 8-byte header length`);
      }
      const prefix = new Uint8Array(8);
      readExactly(file, 0, prefix, path, undefined);
      const headerLength = new DataView(prefix.buffer).getBigUint64(0, true);
      if (headerLength > BigInt(MAX_HEADER_BYTES)) {
        throw new SafeTensorsError(path, `header length ${headerLength} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
      }
      if (headerLength > BigInt(fileSize - 8)) {
        throw new SafeTensorsError(path, `header length ${headerLength} exceeds the ${fileSize - 8} bytes after it`);
      }
      const headerBytes = new Uint8Array(Number(headerLength));
      readExactly(file, 8, headerBytes, path, undefined);
      const dataStart = 8 + headerBytes.byteLength;
      const { entries, metadata } = parseHeader(headerBytes, fileSize - dataStart, path);
      return new SafeTensorsFile(path, file, entries, metadata, dataStart);
    } catch (error) {
      file.close();
      throw error;
    }
  }

  /** Tensor names in the order the header lists them. */
  names(): string[] {
    return [...this.#entries.keys()];
  }

  has(name: string): boolean {
    return this.#entries.has(name);
  }

  /** The header's dtype string (e.g. "F8_E4M3"), which exists even for dtypes we cannot load. */
  storedDtype(name: string): string {
    return this.#entry(name).storedDtype;
  }

  /** dtype, shape and byte length of one tensor; throws for a dtype we cannot hold. */
  info(name: string): TensorInfo {
    const entry = this.#entry(name);
    return { dtype: this.#dtype(name, entry), shape: entry.shape.slice(), byteLength: entry.end - entry.begin };
  }

  /** Absolute file offset of the data section (8 + header length); what follows it is hashed by checksums. */
  get dataOffset(): number {
    return this.#dataStart;
  }

  /** [begin, end) of a tensor's bytes, relative to the data section, as the header states them. */
  dataRange(name: string): [number, number] {
    const entry = this.#entry(name);
    return [entry.begin, entry.end];
  }

  /** Exactly this tensor's bytes, read from disk now. */
  readBytes(name: string): Uint8Array {
    const entry = this.#entry(name);
    const dtype = this.#dtype(name, entry);
    const file = this.#open();
    const bytes = new Uint8Array(entry.end - entry.begin);
    readExactly(file, this.#dataStart + entry.begin, bytes, this.path, name);
    if (dtype === "bool") {
      // libtorch assumes bool bytes are 0 or 1; anything else gives undefined results downstream.
      const bad = bytes.findIndex((b) => b > 1);
      if (bad >= 0) throw new SafeTensorsError(this.path, `bool element ${bad} has byte value ${bytes[bad]}`, name);
    }
    return bytes;
  }

  /** One tensor, dtype-exact (float16/bfloat16 bytes are copied unchanged), on `device` (default cpu). */
  tensor(name: string, options: { device?: Device } = {}): Tensor {
    const entry = this.#entry(name);
    const bytes = this.readBytes(name);
    return Tensor.fromBytes(bytes, entry.shape, { dtype: this.#dtype(name, entry), device: options.device });
  }

  /** Every tensor, in header order; on failure the ones already made are disposed. */
  tensors(options: { device?: Device } = {}): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    try {
      for (const name of this.#entries.keys()) out.set(name, this.tensor(name, options));
    } catch (error) {
      for (const t of out.values()) t.dispose();
      throw error;
    }
    return out;
  }

  /** Releases the file; idempotent. */
  close(): void {
    const file = this.#file;
    this.#file = null;
    file?.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #entry(name: string): Entry {
    const entry = this.#entries.get(name);
    if (entry === undefined) throw new SafeTensorsError(this.path, "no such tensor in the file", name);
    return entry;
  }

  /** Maps the stored dtype, failing here (at read time) rather than at open, so other tensors stay loadable. */
  #dtype(name: string, entry: Entry): DType {
    const dtype = fromStored.get(entry.storedDtype);
    if (dtype === undefined) {
      const known = [...fromStored.keys()].join(", ");
      throw new SafeTensorsError(this.path, `unsupported dtype '${entry.storedDtype}' (supported: ${known})`, name);
    }
    return dtype;
  }

  #open(): Deno.FsFile {
    if (this.#file === null) throw new SafeTensorsError(this.path, "file was closed");
    return this.#file;
  }
}

/** Reads every tensor of a file into memory (cpu) and closes it. */
export function loadSafeTensors(path: string, options: { device?: Device } = {}): Map<string, Tensor> {
  using file = SafeTensorsFile.open(path);
  return file.tensors(options);
}

/** Options of writeSafeTensors. */
export interface WriteSafeTensorsOptions {
  /**
   * A metadata key that receives the hex SHA-256 of the data section. The digest is computed while the tensors
   * stream out and patched into a fixed-width placeholder in the header, so the data is copied to the host once.
   */
  sha256Key?: string;
}

/** Suffix of the temp file a write goes through: `<path>.tmp-<pid>`; a crash can leave one behind. */
export const SAFETENSORS_TEMP_SUFFIX = TEMP_SUFFIX;

/**
 * Writes tensors (in the given key order) and optional string metadata as safetensors. The file appears
 * atomically (src/fs/atomic_write.ts): data goes to `path.tmp-<pid>`, is fsynced, then renamed over `path`, so a
 * crash never leaves a half-written file under the final name.
 */
export function writeSafeTensors(
  path: string,
  tensors: Record<string, Tensor> | Map<string, Tensor>,
  metadata?: Record<string, string>,
  options: WriteSafeTensorsOptions = {},
): void {
  const items = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const { sha256Key } = options;
  if (sha256Key !== undefined) metadata = { ...metadata, [sha256Key]: DIGEST_PLACEHOLDER };
  // Built as text by hand: JSON.stringify of an object would move integer-like keys ("0", "1") to the front.
  const parts: string[] = [];
  if (metadata !== undefined) {
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== "string") {
        throw new SafeTensorsError(path, `metadata value of '${key}' is a ${typeof value}, not a string`);
      }
    }
    parts.push(`${JSON.stringify(METADATA_KEY)}:${JSON.stringify(metadata)}`);
  }
  const plan: { name: string; tensor: Tensor; byteLength: number }[] = [];
  const seen = new Set<string>();
  let offset = 0;
  for (const [name, tensor] of items) {
    if (name === METADATA_KEY || name === "") throw new SafeTensorsError(path, "reserved or empty tensor name", name);
    if (seen.has(name)) throw new SafeTensorsError(path, "duplicate tensor name", name);
    seen.add(name);
    if (!(tensor instanceof Tensor)) throw new SafeTensorsError(path, "value is not a Tensor", name);
    if (tensor.disposed) throw new SafeTensorsError(path, "tensor was disposed", name);
    const dtype = tensor.dtype;
    const shape = tensor.shape;
    const byteLength = shape.reduce((a, b) => a * b, 1) * dtypeSize[dtype];
    const entry = { dtype: toStored[dtype], shape, data_offsets: [offset, offset + byteLength] };
    parts.push(`${JSON.stringify(name)}:${JSON.stringify(entry)}`);
    plan.push({ name, tensor, byteLength });
    offset += byteLength;
  }
  const text = `{${parts.join(",")}}`;
  const json = new TextEncoder().encode(text);
  // Byte offset (within the file) of the digest placeholder; its JSON spelling is unique, since a quote inside a
  // metadata string is escaped and metadata values cannot be objects.
  let digestAt = -1;
  if (sha256Key !== undefined) {
    const needle = `${JSON.stringify(sha256Key)}:${JSON.stringify(DIGEST_PLACEHOLDER)}`;
    const at = text.indexOf(needle);
    if (at < 0 || text.indexOf(needle, at + 1) >= 0) {
      throw new SafeTensorsError(path, `cannot locate the placeholder of metadata key '${sha256Key}'`);
    }
    digestAt = 8 + new TextEncoder().encode(text.slice(0, at + needle.length - DIGEST_PLACEHOLDER.length - 1))
      .byteLength;
  }
  // Spaces pad the header to a multiple of 8, as the reference writer does, so the data section stays aligned.
  const headerLength = Math.ceil(json.byteLength / 8) * 8;
  const head = new Uint8Array(8 + headerLength).fill(0x20);
  new DataView(head.buffer).setBigUint64(0, BigInt(headerLength), true);
  head.set(json, 8);

  try {
    writeFileAtomic(path, (file) => {
      writeAll(file, head);
      const hash = digestAt >= 0 ? createHash("sha256") : null;
      for (const { name, tensor, byteLength } of plan) {
        const bytes = tensor.toBytes();
        if (bytes.byteLength !== byteLength) {
          throw new SafeTensorsError(path, `tensor gave ${bytes.byteLength} bytes, expected ${byteLength}`, name);
        }
        hash?.update(bytes);
        writeAll(file, bytes);
      }
      if (hash !== null) {
        file.seekSync(digestAt, Deno.SeekMode.Start);
        writeAll(file, new TextEncoder().encode(hash.digest("hex")));
      }
    });
  } catch (error) {
    if (error instanceof SafeTensorsError) throw error;
    const reason = error instanceof OutputWriteError ? error.cause : error;
    throw new SafeTensorsError(path, `write failed: ${(reason as Error).message}`);
  }
}

// ---- helpers ---------------------------------------------------------------------------------------------------

/** Validates the header and returns its tensor entries in header order. */
function parseHeader(
  bytes: Uint8Array,
  dataLength: number,
  path: string,
): { entries: Map<string, Entry>; metadata: Record<string, string> } {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new SafeTensorsError(path, "header is not valid UTF-8");
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (error) {
    throw new SafeTensorsError(path, `header is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw new SafeTensorsError(path, "header is not a JSON object");
  }
  const record = header as Record<string, unknown>;
  const keys = topLevelKeys(text, path);

  let metadata: Record<string, string> = {};
  const rawMetadata = record[METADATA_KEY];
  if (rawMetadata !== undefined) {
    if (typeof rawMetadata !== "object" || rawMetadata === null || Array.isArray(rawMetadata)) {
      throw new SafeTensorsError(path, `${METADATA_KEY} is not an object`);
    }
    for (const [key, value] of Object.entries(rawMetadata)) {
      if (typeof value !== "string") throw new SafeTensorsError(path, `${METADATA_KEY}['${key}'] is not a string`);
    }
    // fromEntries defines keys as data, so even a "__proto__" key survives.
    metadata = Object.fromEntries(Object.entries(rawMetadata));
  }

  const entries = new Map<string, Entry>();
  for (const name of keys) {
    if (name === METADATA_KEY) continue;
    entries.set(name, parseEntry(record[name], name, dataLength, path));
  }
  return { entries, metadata };
}

function parseEntry(raw: unknown, name: string, dataLength: number, path: string): Entry {
  function fail(message: string): never {
    throw new SafeTensorsError(path, message, name);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) fail("entry is not a JSON object");
  const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
  if (typeof dtype !== "string") fail("missing or non-string 'dtype'");
  if (!Array.isArray(shape)) fail("missing or non-array 'shape'");
  if (!Array.isArray(offsets) || offsets.length !== 2) fail("missing 'data_offsets' or not a [begin, end] pair");
  const dims = shape as unknown[];
  const pair = offsets as unknown[];
  if (!dims.every(isCount)) fail(`shape [${dims.join(", ")}] has an entry that is not a non-negative integer`);
  if (!pair.every(isCount)) fail(`data_offsets [${pair.join(", ")}] are not non-negative integers`);
  const [begin, end] = pair as number[];
  if (begin > end) fail(`data_offsets [${begin}, ${end}] end before they begin`);
  if (end > dataLength) fail(`data_offsets [${begin}, ${end}] run past the ${dataLength}-byte data section`);
  const stored = dtype as string;
  const known = fromStored.get(stored);
  if (known !== undefined) {
    // Unknown dtypes skip this check: their element size is unknown, and they fail when read instead.
    const expected = (dims as number[]).reduce((a, b) => a * b, 1) * dtypeSize[known];
    if (expected !== end - begin) {
      fail(
        `data_offsets [${begin}, ${end}] hold ${end - begin} bytes but ${stored}[${dims.join(", ")}] needs ${expected}`,
      );
    }
  }
  return { storedDtype: stored, shape: dims as number[], begin, end };
}

function isCount(value: unknown): boolean {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/**
 * The top-level keys of a JSON object in source order. JSON.parse does not keep that order for integer-like keys,
 * and it silently keeps the last of duplicate keys, which we reject. `text` is known to be valid JSON here.
 */
function topLevelKeys(text: string, path: string): string[] {
  const keys: string[] = [];
  const seen = new Set<string>();
  let i = 0;
  const skipSpace = (): void => {
    while (i < text.length && " \t\n\r".includes(text[i])) i++;
  };
  const readString = (): string => {
    const start = i++;
    while (text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
    i++;
    return JSON.parse(text.slice(start, i));
  };
  const skipValue = (): void => {
    if (text[i] === '"') {
      readString();
    } else if (text[i] === "{" || text[i] === "[") {
      let depth = 0;
      do {
        const c = text[i];
        if (c === '"') {
          readString();
          continue;
        }
        if (c === "{" || c === "[") depth++;
        else if (c === "}" || c === "]") depth--;
        i++;
      } while (depth > 0);
    } else {
      while (i < text.length && !",}] \t\n\r".includes(text[i])) i++; // number, true, false, null
    }
  };
  skipSpace();
  i++; // '{'
  skipSpace();
  if (text[i] === "}") return keys;
  for (;;) {
    skipSpace();
    const key = readString();
    if (seen.has(key)) throw new SafeTensorsError(path, "header lists this key twice", key);
    seen.add(key);
    keys.push(key);
    skipSpace();
    i++; // ':'
    skipSpace();
    skipValue();
    skipSpace();
    if (text[i++] === "}") return keys;
  }
}

/** Reads exactly `out.byteLength` bytes at `position`; readSync may return fewer than asked. */
function readExactly(file: Deno.FsFile, position: number, out: Uint8Array, path: string, name?: string): void {
  file.seekSync(position, Deno.SeekMode.Start);
  let filled = 0;
  while (filled < out.byteLength) {
    const n = file.readSync(out.subarray(filled));
    if (n === null || n === 0) {
      throw new SafeTensorsError(path, `unexpected end of file at byte ${position + filled}`, name);
    }
    filled += n;
  }
}
