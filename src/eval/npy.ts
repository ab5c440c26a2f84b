// npy.ts: a safe reader of 1-D NumPy .npy files, for the "filelist" evaluation sets of the official catalog
// (`<split>_images.npy` of path strings, `<split>_labels.npy` of ints or label strings,
// docs/evaluation.md#the-official-zero-shot-suite). It reads the fixed-width string dtypes (`<U n` UTF-32, `|S n`
// bytes) and the integer dtypes of either byte order, and refuses object arrays (`|O`: pickled Python objects, which
// `np.load(allow_pickle=True)` would execute) with a message that says how to re-save them. Multi-dimensional arrays
// other than (N,) and (N, 1) are out of scope.
import { readRegularFileSync } from "../fs/input_file.ts";
import { DatasetError } from "./datasets.ts";

export type NpyArray = { kind: "string"; values: string[] } | { kind: "int"; values: number[] };

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

/** The header dict of a .npy file: {'descr': ..., 'fortran_order': ..., 'shape': (...)}. */
export interface NpyHeader {
  descr: string;
  fortranOrder: boolean;
  shape: number[];
  /** Where the data starts. */
  dataOffset: number;
}

/** Parses the magic, version and header dict (a Python literal read with patterns, never evaluated). */
export function readNpyHeader(bytes: Uint8Array, path: string): NpyHeader {
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new DatasetError(`${path}: not a .npy file (no \\x93NUMPY magic)`);
  }
  const major = bytes[6];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerLength: number, headerStart: number;
  if (major === 1) {
    headerLength = view.getUint16(8, true);
    headerStart = 10;
  } else if (major === 2 || major === 3) {
    if (bytes.length < 12) throw new DatasetError(`${path}: truncated .npy header`);
    headerLength = view.getUint32(8, true);
    headerStart = 12;
  } else {
    throw new DatasetError(`${path}: .npy format version ${major} is not supported (1, 2 and 3 are)`);
  }
  if (headerStart + headerLength > bytes.length) throw new DatasetError(`${path}: truncated .npy header`);
  const header = new TextDecoder(major === 3 ? "utf-8" : "latin1").decode(
    bytes.subarray(headerStart, headerStart + headerLength),
  );
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header);
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header);
  const shape = /'shape'\s*:\s*\(([^)]*)\)/.exec(header);
  if (descr === null) {
    if (/'descr'\s*:\s*\[/.test(header)) {
      throw new DatasetError(`${path}: a structured (record) dtype; a 1-D array of strings or integers is expected`);
    }
    throw new DatasetError(`${path}: the .npy header has no 'descr': ${header.trim()}`);
  }
  if (fortran === null || shape === null) throw new DatasetError(`${path}: malformed .npy header: ${header.trim()}`);
  const dims = shape[1].split(",").map((s) => s.trim()).filter((s) => s !== "").map(Number);
  if (!dims.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new DatasetError(`${path}: bad shape (${shape[1]}) in the .npy header`);
  }
  return { descr: descr[1], fortranOrder: fortran[1] === "True", shape: dims, dataOffset: headerStart + headerLength };
}

/** Reads a 1-D (or (N, 1)) array of fixed-width strings or integers. */
export function readNpy(path: string): NpyArray {
  let bytes: Uint8Array;
  try {
    bytes = readRegularFileSync(path);
  } catch (cause) {
    throw new DatasetError(`${path}: cannot read (${(cause as Error).message})`);
  }
  const header = readNpyHeader(bytes, path);
  const { descr, shape } = header;
  if (!(shape.length === 1 || (shape.length === 2 && shape[1] === 1))) {
    throw new DatasetError(`${path}: shape (${shape.join(", ")}) is not one-dimensional`);
  }
  const count = shape[0];
  const match = /^([<>|=])([a-zA-Z])(\d+)$/.exec(descr);
  if (descr.includes("O")) {
    throw new DatasetError(
      `${path}: dtype '${descr}' is an object array (pickled Python objects), which is never unpickled here; ` +
        `re-save it with np.save(path, np.asarray(array, dtype=str)) (or dtype=np.int64 for labels)`,
    );
  }
  if (match === null) throw new DatasetError(`${path}: dtype '${descr}' is not supported (strings or integers)`);
  const [, order, kind, sizeText] = match;
  const size = Number(sizeText);
  const little = order !== ">";
  const data = bytes.subarray(header.dataOffset);
  const itemBytes = kind === "U" ? 4 * size : size;
  if (data.length < count * itemBytes) {
    throw new DatasetError(`${path}: truncated data (${data.length} bytes for ${count} items of ${itemBytes})`);
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (kind === "U") {
    // UTF-32 code points, NUL-padded to the width.
    const values: string[] = [];
    for (let i = 0; i < count; i++) {
      let s = "";
      for (let k = 0; k < size; k++) {
        const cp = view.getUint32((i * size + k) * 4, little);
        if (cp === 0) break;
        if (cp > 0x10ffff) throw new DatasetError(`${path}: item ${i} holds an invalid code point ${cp}`);
        s += String.fromCodePoint(cp);
      }
      values.push(s);
    }
    return { kind: "string", values };
  }
  if (kind === "S") {
    const decoder = new TextDecoder("utf-8", { fatal: true });
    const values: string[] = [];
    for (let i = 0; i < count; i++) {
      let end = i * size + size;
      while (end > i * size && data[end - 1] === 0) end--;
      try {
        values.push(decoder.decode(data.subarray(i * size, end)));
      } catch {
        throw new DatasetError(`${path}: item ${i} of the bytes array is not valid UTF-8`);
      }
    }
    return { kind: "string", values };
  }
  if ((kind === "i" || kind === "u") && [1, 2, 4, 8].includes(size)) {
    const values: number[] = [];
    for (let i = 0; i < count; i++) {
      const at = i * size;
      let v: number;
      if (size === 1) v = kind === "i" ? view.getInt8(at) : view.getUint8(at);
      else if (size === 2) v = kind === "i" ? view.getInt16(at, little) : view.getUint16(at, little);
      else if (size === 4) v = kind === "i" ? view.getInt32(at, little) : view.getUint32(at, little);
      else {
        const big = kind === "i" ? view.getBigInt64(at, little) : view.getBigUint64(at, little);
        if (big > BigInt(Number.MAX_SAFE_INTEGER) || big < BigInt(Number.MIN_SAFE_INTEGER)) {
          throw new DatasetError(`${path}: item ${i} (${big}) does not fit a label index`);
        }
        v = Number(big);
      }
      values.push(v);
    }
    return { kind: "int", values };
  }
  throw new DatasetError(`${path}: dtype '${descr}' is not supported (strings '<U'/'|S' or integers '<i'/'<u')`);
}
