// ndarray_pickle.ts: reads pickles of plain data that hold numpy arrays, the format of the CIFAR-10/100 "python"
// batches torchvision reads (a dict of 'data' → uint8 ndarray, 'labels' → list of ints). Nothing is imported or
// called: the only globals accepted are numpy's array and dtype reconstructors and the `_codecs.encode` bytes
// constructor, and they are interpreted here as data (shape, dtype, raw bytes), the way the arrays were written.
//
// It trades generality for safety and size: src/data/pickle.ts refuses every global (it reads the YFCC metadata,
// which needs none) and is not changed here; this reader accepts exactly the opcode patterns numpy's `__reduce__`
// writes at protocols 2–4 (Python 2's cPickle included), and refuses anything else with the opcode and its offset.

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

export class NdPickleError extends Error {
  constructor(message: string, readonly offset: number) {
    super(message);
    this.name = "NdPickleError";
  }
}

// Reconstruction state while BUILD has not run yet; never returned to the caller.
class Global {
  constructor(readonly name: string) {}
}
class PendingArray {
  constructor(public array: PickledArray | null = null) {}
}
class PendingDtype {
  constructor(readonly kind: string, public byteorder = "=") {}
}
const MARK = Symbol("mark");
type Slot = NdPickleValue | Global | PendingArray | PendingDtype | typeof MARK;

const GLOBALS = new Set([
  "numpy.core.multiarray _reconstruct",
  "numpy._core.multiarray _reconstruct",
  "numpy ndarray",
  "numpy dtype",
  "_codecs encode",
]);

const utf8 = new TextDecoder("utf-8", { fatal: true });
const latin1 = new TextDecoder("latin1");

/** Python 2 str (bytes) or str → text; bytes are decoded as latin1, as `pickle.load(f, encoding="latin1")` does. */
export function pickleText(value: NdPickleValue): string | null {
  if (typeof value === "string") return value;
  if (value instanceof Uint8Array) return latin1.decode(value);
  return null;
}

/** Reads one pickle; `source` names the file in errors. */
export function readNdPickle(bytes: Uint8Array, source: string): NdPickleValue {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stack: Slot[] = [];
  const marks: number[] = [];
  const memo = new Map<number, Slot>();
  let pos = 0;
  let opAt = 0;
  const fail = (what: string): never => {
    throw new NdPickleError(`${source}: ${what} at byte ${opAt}`, opAt);
  };
  const need = (n: number): number => {
    if (n < 0 || pos + n > bytes.length) fail("truncated pickle");
    const at = pos;
    pos += n;
    return at;
  };
  const pop = (): Slot => {
    if (stack.length === 0 || (marks.length > 0 && stack.length <= marks[marks.length - 1])) fail("stack underflow");
    return stack.pop()!;
  };
  const top = (): Slot => {
    if (stack.length === 0 || stack[stack.length - 1] === MARK) fail("stack underflow");
    return stack[stack.length - 1];
  };
  const popMark = (): Slot[] => {
    const at = marks.pop();
    if (at === undefined) fail("MARK expected");
    const items = stack.splice(at!);
    stack.pop();
    return items;
  };
  const data = (slot: Slot): NdPickleValue => {
    if (slot instanceof PendingArray) {
      if (slot.array === null) fail("an ndarray used before its state was set");
      return slot.array!;
    }
    if (slot instanceof Global || slot instanceof PendingDtype || slot === MARK) fail("a numpy global used as data");
    if (typeof slot === "object" && slot !== null && "tuple" in slot) {
      return { tuple: (slot.tuple as Slot[]).map(data) };
    }
    return slot as NdPickleValue;
  };
  const key = (slot: Slot): string | number => {
    const v = data(slot);
    if (typeof v === "number") return v;
    const text = pickleText(v);
    if (text === null) fail("a dict key that is not a string or an integer");
    return text!;
  };
  const text = (at: number, n: number): string => {
    try {
      return utf8.decode(bytes.subarray(at, at + n));
    } catch {
      return fail("invalid UTF-8 in a str");
    }
  };
  const counted = (width: 1 | 4 | 8): number => {
    const at = need(width);
    const n = width === 1 ? bytes[at] : width === 4 ? view.getUint32(at, true) : Number(view.getBigUint64(at, true));
    return n;
  };
  const setItems = (items: Slot[]): void => {
    const map = top();
    if (!(map instanceof Map)) fail("SETITEM(S) on a non-dict");
    for (let k = 0; k + 1 < items.length; k += 2) {
      (map as Map<string | number, NdPickleValue>).set(key(items[k]), data(items[k + 1]));
    }
  };

  for (;;) {
    opAt = pos;
    if (pos >= bytes.length) fail("truncated pickle (no STOP)");
    const op = bytes[pos++];
    switch (op) {
      case 0x80: // PROTO
        if (bytes[need(1)] > 4) fail(`pickle protocol ${bytes[pos - 1]} (numpy writes out-of-band buffers from 5)`);
        break;
      case 0x95: // FRAME
        need(8);
        break;
      case 0x2e: { // STOP
        const result = data(pop());
        if (stack.length !== 0) fail("STOP with more than one value on the stack");
        return result;
      }
      case 0x28: // MARK
        stack.push(MARK);
        marks.push(stack.length);
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x64: { // DICT
        const items = popMark();
        stack.push(new Map());
        setItems(items);
        break;
      }
      case 0x73: { // SETITEM
        const value = pop(), k = pop();
        setItems([k, value]);
        break;
      }
      case 0x75: // SETITEMS
        setItems(popMark());
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x6c: // LIST
        stack.push(popMark().map(data));
        break;
      case 0x61: { // APPEND
        const item = data(pop());
        const list = top();
        if (!Array.isArray(list)) fail("APPEND on a non-list");
        (list as NdPickleValue[]).push(item);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark().map(data);
        const list = top();
        if (!Array.isArray(list)) fail("APPENDS on a non-list");
        for (const item of items) (list as NdPickleValue[]).push(item);
        break;
      }
      case 0x29: // EMPTY_TUPLE
        stack.push({ tuple: [] });
        break;
      case 0x74: // TUPLE (items may be numpy globals: kept as slots until REDUCE/BUILD reads them)
        stack.push({ tuple: popMark() as NdPickleValue[] });
        break;
      case 0x85:
        stack.push({ tuple: [pop() as NdPickleValue] });
        break;
      case 0x86: {
        const b = pop(), a = pop();
        stack.push({ tuple: [a, b] as NdPickleValue[] });
        break;
      }
      case 0x87: {
        const c = pop(), b = pop(), a = pop();
        stack.push({ tuple: [a, b, c] as NdPickleValue[] });
        break;
      }
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x49: { // INT (protocol 0 text; "I00"/"I01" are Python 2 bools)
        const end = bytes.indexOf(0x0a, pos);
        if (end < 0) fail("truncated INT");
        const raw = latin1.decode(bytes.subarray(pos, end));
        pos = end + 1;
        if (raw === "00" || raw === "01") stack.push(raw === "01");
        else if (/^-?\d+$/.test(raw) && Number.isSafeInteger(Number(raw))) stack.push(Number(raw));
        else fail(`INT '${raw}'`);
        break;
      }
      case 0x4a: // BININT
        stack.push(view.getInt32(need(4), true));
        break;
      case 0x4b: // BININT1
        stack.push(bytes[need(1)]);
        break;
      case 0x4d: // BININT2
        stack.push(view.getUint16(need(2), true));
        break;
      case 0x8a: { // LONG1
        const n = bytes[need(1)];
        const at = need(n);
        let v = 0n;
        for (let k = n - 1; k >= 0; k--) v = (v << 8n) | BigInt(bytes[at + k]);
        if (n > 0 && bytes[at + n - 1] & 0x80) v -= 1n << BigInt(8 * n);
        if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) fail("an integer beyond 2^53");
        stack.push(Number(v));
        break;
      }
      case 0x47: // BINFLOAT
        stack.push(view.getFloat64(need(8), false));
        break;
      case 0x55: { // SHORT_BINSTRING (Python 2 str → bytes)
        const n = counted(1);
        stack.push(bytes.slice(need(n), pos));
        break;
      }
      case 0x54: { // BINSTRING
        const n = view.getInt32(need(4), true);
        stack.push(bytes.slice(need(n), pos));
        break;
      }
      case 0x43:
      case 0x42:
      case 0x8e: { // SHORT_BINBYTES, BINBYTES, BINBYTES8
        const n = counted(op === 0x43 ? 1 : op === 0x42 ? 4 : 8);
        stack.push(bytes.slice(need(n), pos));
        break;
      }
      case 0x8c:
      case 0x58:
      case 0x8d: { // SHORT_BINUNICODE, BINUNICODE, BINUNICODE8
        const n = counted(op === 0x8c ? 1 : op === 0x58 ? 4 : 8);
        stack.push(text(need(n), n));
        break;
      }
      case 0x71: // BINPUT
        memo.set(bytes[need(1)], top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(view.getUint32(need(4), true), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68:
      case 0x6a: { // BINGET, LONG_BINGET
        const index = op === 0x68 ? bytes[need(1)] : view.getUint32(need(4), true);
        if (!memo.has(index)) fail(`memo slot ${index} was never stored`);
        stack.push(memo.get(index)!);
        break;
      }
      case 0x30: // POP
        if (stack[stack.length - 1] === MARK) popMark();
        else pop();
        break;
      case 0x63: { // GLOBAL "module\nname\n"
        const end1 = bytes.indexOf(0x0a, pos), end2 = end1 < 0 ? -1 : bytes.indexOf(0x0a, end1 + 1);
        if (end2 < 0) fail("truncated GLOBAL");
        const name = `${latin1.decode(bytes.subarray(pos, end1))} ${latin1.decode(bytes.subarray(end1 + 1, end2))}`;
        pos = end2 + 1;
        stack.push(global(name, fail));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = data(pop()), module = data(pop());
        stack.push(global(`${pickleText(module)} ${pickleText(name)}`, fail));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop(), callee = pop();
        if (!(callee instanceof Global) || typeof args !== "object" || args === null || !("tuple" in args)) {
          fail("REDUCE of something other than a numpy or bytes constructor");
        }
        stack.push(reduce((callee as Global).name, (args as { tuple: Slot[] }).tuple, fail));
        break;
      }
      case 0x62: { // BUILD
        const state = pop();
        build(top(), state, fail);
        break;
      }
      default:
        fail(
          `unsupported pickle opcode 0x${op.toString(16).padStart(2, "0")} (only plain data and numpy arrays are read)`,
        );
    }
  }
}

function global(name: string, fail: (what: string) => never): Global {
  if (!GLOBALS.has(name)) {
    fail(`refusing global ${name.replace(" ", ".")}: only numpy arrays are read, nothing is called`);
  }
  return new Global(name);
}

function reduce(name: string, args: Slot[], fail: (what: string) => never): Slot {
  if (name === "_codecs encode") {
    // Python 3 at protocol 2 writes bytes as _codecs.encode(<latin-1 text>, "latin1").
    const [str, encoding] = args;
    if (typeof str !== "string" || (encoding !== "latin1" && encoding !== "latin-1")) fail("_codecs.encode arguments");
    const s = str as string;
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c > 0xff) fail("_codecs.encode of a character outside latin-1");
      out[i] = c;
    }
    return out;
  }
  if (name.endsWith(" _reconstruct")) {
    if (!(args[0] instanceof Global) || args[0].name !== "numpy ndarray") fail("_reconstruct of a non-ndarray class");
    return new PendingArray();
  }
  if (name === "numpy dtype") {
    const kind = pickleText(args[0] as NdPickleValue);
    if (kind === null) fail("numpy.dtype without a type string");
    return new PendingDtype(kind!);
  }
  return fail(`REDUCE of ${name}`);
}

function build(target: Slot, state: Slot, fail: (what: string) => never): void {
  const items = typeof state === "object" && state !== null && "tuple" in state ? state.tuple as Slot[] : null;
  if (target instanceof PendingDtype && items !== null) {
    // (version, byteorder, subarray, names, fields, elsize, alignment, flags)
    const order = pickleText(items[1] as NdPickleValue);
    if (order === null || items[2] !== null || items[3] !== null) fail("a structured or sub-array numpy dtype");
    target.byteorder = order!;
    return;
  }
  if (target instanceof PendingArray && items !== null && items.length === 5) {
    // (version, shape, dtype, is_fortran, raw bytes)
    const [, shape, dtype, fortran, raw] = items;
    const dims = typeof shape === "object" && shape !== null && "tuple" in shape ? shape.tuple : null;
    if (dims === null || !dims.every((d) => typeof d === "number")) {
      fail("an ndarray shape that is not a tuple of ints");
    }
    if (!(dtype instanceof PendingDtype)) fail("an ndarray without a dtype");
    if (!(raw instanceof Uint8Array)) fail("an ndarray whose data is not raw bytes (an object array?)");
    const d = dtype as PendingDtype;
    const byteorder = d.byteorder === "=" ? "<" : d.byteorder; // "=": native; every machine numpy runs on here is LE
    target.array = new PickledArray(dims as number[], `${byteorder}${d.kind}`, fortran === true, raw as Uint8Array);
    return;
  }
  fail("BUILD of something other than a numpy array or dtype");
}
