// ndarray_pickle.ts: reads pickles of plain data that hold numpy arrays, the format of the CIFAR-10/100 "python"
// batches torchvision reads (a dict of 'data' → uint8 ndarray, 'labels' → list of ints). The opcodes are read by the
// safe reader src/formats/pickle.ts; what is numpy-specific lives here: the allow-list (numpy's array and dtype
// reconstructors; pickle.ts itself reads the `_codecs.encode` bytes constructor), whose TypeScript turns their
// arguments and BUILD states into data (shape, dtype, raw bytes), the way the arrays were written. Nothing is imported
// or called; any other global is refused, named, with its byte offset.
//
// It trades generality for safety and size: only what numpy's `__reduce__` writes at protocols 2–4 (Python 2's cPickle
// included) is read, not structured or object arrays, nor protocol 5's buffers (numpy's `_frombuffer` is refused).

import {
  PickleCallable,
  PickleError,
  PickleObject,
  PickleTuple,
  type PickleValue,
  readPickle,
} from "../formats/pickle.ts";

/** A numpy array read from a pickle: C- or Fortran-ordered raw bytes with their dtype string (e.g. "|u1", "<i8"). */
export class PickledArray {
  constructor(
    readonly shape: readonly number[],
    readonly descr: string,
    readonly fortran: boolean,
    readonly data: Uint8Array,
  ) {}
}

/** A value this reader produces; Python 2 `str` is kept as bytes (decode with latin1 as torchvision does). */
export type NdPickleValue =
  | null
  | boolean
  | number
  | string
  | Uint8Array
  | PickledArray
  | NdPickleValue[]
  | { tuple: NdPickleValue[] }
  | Map<string | number, NdPickleValue>;

/**
 * A numpy pickle that is refused or cannot be read; the message starts with the file. `offset` is the byte of the
 * opcode at fault, or the pickle's length for a value read whole that is not data this reader returns (a dict key that
 * is neither str nor int, an ndarray whose state never came).
 */
export class NdPickleError extends PickleError {
  constructor(message: string, offset: number) {
    super(message, offset);
    this.name = "NdPickleError";
  }
}

const ACCEPTS = "plain data and numpy arrays (numpy's _reconstruct and dtype, as numpy writes them at protocols 2-4)";

const latin1 = new TextDecoder("latin1");

/** Python 2 str (bytes) or str → text; bytes are decoded as latin1, as `pickle.load(f, encoding="latin1")` does. */
export function pickleText(value: NdPickleValue | PickleValue): string | null {
  if (typeof value === "string") return value;
  if (value instanceof Uint8Array) return latin1.decode(value);
  return null;
}

// ---- the allow-list: numpy's globals as TypeScript ------------------------------------------------------------------

/** `numpy.ndarray`, the class `_reconstruct` is given: a marker, never called. */
class NdarrayClass extends PickleObject {}
const NDARRAY = new NdarrayClass();

/** A `numpy.dtype(kind)` whose BUILD sets the byte order. */
class NumpyDtype extends PickleObject {
  byteorder = "=";

  constructor(readonly kind: string) {
    super();
  }

  /** "=" is native; every machine numpy runs on here is little-endian. */
  get descr(): string {
    return `${this.byteorder === "=" ? "<" : this.byteorder}${this.kind}`;
  }

  override setState(state: PickleValue): boolean {
    // (version, byteorder, subarray, names, fields, elsize, alignment, flags)
    if (!(state instanceof PickleTuple)) return false;
    const [, byteorder, subarray, names] = state.items;
    const order = pickleText(byteorder ?? null);
    if (order === null || subarray !== null || names !== null) throw new Error("a structured or sub-array numpy dtype");
    this.byteorder = order;
    return true;
  }
}

/** An ndarray between `_reconstruct` (empty) and its BUILD (`__setstate__`), which makes it a PickledArray. */
class ArrayBeingBuilt extends PickleObject {
  array: PickledArray | null = null;

  override setState(state: PickleValue): boolean {
    // (version, shape, dtype, is_fortran, raw bytes)
    if (!(state instanceof PickleTuple) || state.items.length !== 5) return false;
    const [, shape, dtype, fortran, raw] = state.items;
    const dims = shape instanceof PickleTuple ? shape.items : null;
    if (dims === null || !dims.every((d) => typeof d === "number")) {
      throw new Error("an ndarray shape that is not a tuple of ints");
    }
    if (!(dtype instanceof NumpyDtype)) throw new Error("an ndarray without a dtype");
    if (!(raw instanceof Uint8Array)) throw new Error("an ndarray whose data is not raw bytes (an object array?)");
    this.array = new PickledArray(dims as number[], dtype.descr, fortran === true, raw);
    return true;
  }
}

function numpyGlobal(module: string, name: string): PickleValue | PickleCallable | undefined {
  const full = `${module}.${name}`;
  switch (full) {
    case "numpy.core.multiarray._reconstruct":
    case "numpy._core.multiarray._reconstruct":
      return new PickleCallable(full, ([cls]) => {
        if (cls !== NDARRAY) throw new Error("the class to reconstruct is not numpy.ndarray");
        return new ArrayBeingBuilt();
      });
    case "numpy.ndarray":
      return NDARRAY;
    case "numpy.dtype":
      return new PickleCallable(full, ([kind]) => {
        const text = pickleText(kind ?? null);
        if (text === null) throw new Error("no type string (e.g. 'u1') as the first argument");
        return new NumpyDtype(text);
      });
  }
  return undefined;
}

// ---- reading ----------------------------------------------------------------------------------------------------------

/** Reads one pickle; `source` names the file in errors. */
export function readNdPickle(bytes: Uint8Array, source: string): NdPickleValue {
  let value: PickleValue;
  try {
    value = readPickle(bytes, { globals: numpyGlobal, accepts: ACCEPTS });
  } catch (error) {
    if (error instanceof PickleError) throw new NdPickleError(`${source}: ${error.message}`, error.offset);
    throw error;
  }
  return asNdValue(value, (what) => {
    throw new NdPickleError(`${source}: ${what}`, bytes.length);
  });
}

/**
 * The value read, as this module's types: built arrays as PickledArrays, tuples as `{ tuple }`, dict keys as text or
 * numbers. Iterative (a hostile pickle may nest deeply); shared and cyclic containers stay shared and cyclic.
 */
function asNdValue(root: PickleValue, fail: (what: string) => never): NdPickleValue {
  const converted = new Map<object, NdPickleValue>();
  const unfilled: [PickleValue[] | readonly PickleValue[] | Map<PickleValue, PickleValue>, NdPickleValue][] = [];
  const shallow = (v: PickleValue): NdPickleValue => {
    if (v === null || typeof v !== "object" || v instanceof Uint8Array) {
      if (typeof v === "bigint") fail(`the integer ${v}, beyond 2^53`);
      return v as NdPickleValue;
    }
    const known = converted.get(v);
    if (known !== undefined) return known;
    let out: NdPickleValue;
    if (v instanceof ArrayBeingBuilt) {
      if (v.array === null) fail("an ndarray whose state was never set (_reconstruct without BUILD)");
      out = v.array!;
    } else if (v instanceof PickleObject) {
      return fail("a numpy dtype or class used as data");
    } else if (v instanceof PickleTuple) {
      out = { tuple: [] };
      unfilled.push([v.items, out.tuple]);
    } else if (Array.isArray(v)) {
      out = [];
      unfilled.push([v, out]);
    } else {
      out = new Map();
      unfilled.push([v, out]);
    }
    converted.set(v, out);
    return out;
  };
  const key = (k: PickleValue): string | number => {
    if (typeof k === "number") return k;
    const text = pickleText(k);
    return text ?? fail("a dict key that is not a string or an integer");
  };

  const result = shallow(root);
  for (let next = unfilled.pop(); next !== undefined; next = unfilled.pop()) {
    const [from, to] = next;
    if (from instanceof Map) {
      for (const [k, item] of from) (to as Map<string | number, NdPickleValue>).set(key(k), shallow(item));
    } else {
      for (const item of from) (to as NdPickleValue[]).push(shallow(item));
    }
  }
  return result;
}
