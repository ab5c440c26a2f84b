// pickle.ts: a minimal, safe reader of Python pickles holding plain data: lists, tuples, dicts, ints, floats,
// str, bytes, None and bools (protocols 0-5 as Python writes them for such values; of protocol 0's text opcodes only
// INT, which protocol 1 still uses for bools). Nothing is ever executed: any opcode that would import or call something
// (GLOBAL, STACK_GLOBAL, REDUCE, BUILD, INST, OBJ, NEWOBJ, PERSID, EXT*, ...) or that is not in the table below ends
// reading with a PickleError naming the opcode and its byte offset.
//
// For large files (the YFCC15M metadata: ~15 M tuples) the items of the outermost list can be streamed to a callback
// instead of being kept, and a first pass over the opcodes finds which memo slots are ever read back (BINGET), so only
// those values stay in memory.
//
// A caller that needs more (torch.save's checkpoints, src/torch/pt_file.ts; numpy arrays, src/eval/ndarray_pickle.ts)
// passes an allow-list: `globals` maps the names it accepts to its own TypeScript values or functions, and
// `persistentLoad` turns persistent ids into values. REDUCE, NEWOBJ and BUILD then run only those functions; a name the
// caller does not list is refused, named, before anything is built from it. All opcode interpretation lives here; the
// callers hold only what their globals mean.

/** A value a plain-data pickle can hold. */
export type PickleValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PickleValue[]
  | PickleTuple
  | Map<PickleValue, PickleValue>
  | PickleObject;

/** A Python tuple (frozen array, told apart from a list by this wrapper). */
export class PickleTuple {
  constructor(readonly items: readonly PickleValue[]) {}
}

/**
 * A value built by a function of the caller's allow-list (ReadPickleOptions.globals), e.g. a tensor reference. BUILD
 * (Python's __setstate__) on it calls setState, which returns false to refuse the state.
 */
export abstract class PickleObject {
  setState(_state: PickleValue): boolean {
    return false;
  }
}

/**
 * A callable global of the caller's allow-list. REDUCE (`f(*args)`) and NEWOBJ (`cls.__new__(cls, *args)`) run `call`
 * with the pickled arguments: the caller's TypeScript, never anything the pickle names.
 */
export class PickleCallable {
  constructor(readonly name: string, readonly call: (args: readonly PickleValue[]) => PickleValue) {}
}

export class PickleError extends Error {
  constructor(message: string, readonly offset: number) {
    super(message);
    this.name = "PickleError";
  }
}

// Opcodes whose presence means the pickle wants to import or call code. Without an allow-list, GLOBAL/STACK_GLOBAL +
// REDUCE are accepted only for the two constructors Python 3 writes for bytes at protocol 2 (`_codecs.encode(str,
// "latin1")` and `bytes()`), and then interpreted here, never looked up or called.
const CODE_OPCODES: Record<number, string> = {
  0x63: "GLOBAL",
  0x93: "STACK_GLOBAL",
  0x52: "REDUCE",
  0x62: "BUILD",
  0x69: "INST",
  0x6f: "OBJ",
  0x81: "NEWOBJ",
  0x92: "NEWOBJ_EX",
  0x50: "PERSID",
  0x51: "BINPERSID",
  0x82: "EXT1",
  0x83: "EXT2",
  0x84: "EXT4",
};

const utf8 = new TextDecoder("utf-8", { fatal: true });
const MARK = Symbol("mark");
const BYTES_CONSTRUCTORS = new Set(["_codecs encode", "__builtin__ bytes", "builtins bytes"]);
type Slot = PickleValue | typeof MARK | PickleCallable;

export interface ReadPickleOptions {
  /** Called with each item of the outermost list, which then stays empty (streaming). */
  onTopItem?: (item: PickleValue, index: number) => void;
  /**
   * The allow-list of globals beyond the bytes constructors: a value, a PickleCallable, or undefined to refuse the
   * name (the error names it). Without it every other global is refused.
   */
  globals?: (module: string, name: string) => PickleValue | PickleCallable | undefined;
  /**
   * BUILD on a value that is not a PickleObject (e.g. the attributes of an OrderedDict): true accepts the state.
   * Without it such a BUILD is refused.
   */
  build?: (target: PickleValue, state: PickleValue) => boolean;
  /** BINPERSID/PERSID: the value a persistent id stands for. Without it both opcodes are refused. */
  persistentLoad?: (pid: PickleValue) => PickleValue;
  /** What refusal messages say is read (default: "plain data (lists, tuples, dicts, numbers, str, bytes)"). */
  accepts?: string;
}

const PLAIN_DATA = "plain data (lists, tuples, dicts, numbers, str, bytes)";

function opcodeName(op: number): string {
  const ch = op >= 0x20 && op < 0x7f ? ` '${String.fromCharCode(op)}'` : "";
  return CODE_OPCODES[op] ?? `0x${op.toString(16).padStart(2, "0")}${ch}`;
}

/** Reads one pickle from `bytes` and returns the value it holds. */
export function readPickle(bytes: Uint8Array, options: ReadPickleOptions = {}): PickleValue {
  const used = memoReads(bytes);
  return run(bytes, options, used);
}

// ---- the interpreter ---------------------------------------------------------------------------------------------

function run(bytes: Uint8Array, options: ReadPickleOptions, used: Set<number>): PickleValue {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stack: Slot[] = [];
  const marks: number[] = [];
  const memo = new Map<number, PickleValue | PickleCallable>();
  const accepts = options.accepts ?? PLAIN_DATA;
  const refusal = (name: string): PickleError =>
    new PickleError(
      `refusing pickle opcode ${name} at byte ${opAt}: it imports or calls code, and only ${accepts} is read`,
      opAt,
    );
  /** Runs a caller-supplied function; its errors come back as PickleErrors at this opcode. */
  const guarded = <T>(what: string, fn: () => T): T => {
    try {
      return fn();
    } catch (error) {
      if (error instanceof PickleError) throw error;
      throw new PickleError(`${what} at byte ${opAt}: ${(error as Error).message}`, opAt);
    }
  };
  let memoCount = 0;
  let top: PickleValue[] | null = null; // the outermost list, when streaming
  let topCount = 0;
  let pos = 0;
  let opAt = 0;

  const need = (n: number): number => {
    if (pos + n > bytes.length) {
      throw new PickleError(`truncated pickle: ${opcodeName(bytes[opAt])} needs ${n} bytes`, opAt);
    }
    const at = pos;
    pos += n;
    return at;
  };
  const popSlot = (): PickleValue | PickleCallable => {
    if (stack.length === 0 || (marks.length > 0 && stack.length <= marks[marks.length - 1])) {
      throw new PickleError(`stack underflow at ${opcodeName(bytes[opAt])}`, opAt);
    }
    return stack.pop() as PickleValue | PickleCallable;
  };
  const notCallee = <T>(v: T): T => {
    if (v instanceof PickleCallable) {
      throw new PickleError(`a global used as a value at ${opcodeName(bytes[opAt])}`, opAt);
    }
    return v;
  };
  const pop = (): PickleValue => notCallee(popSlot()) as PickleValue;
  const peekSlot = (): PickleValue | PickleCallable => {
    const v = stack[stack.length - 1];
    if (stack.length === 0 || v === MARK) throw new PickleError(`stack underflow at ${opcodeName(bytes[opAt])}`, opAt);
    return v as PickleValue | PickleCallable;
  };
  const peek = (): PickleValue => notCallee(peekSlot()) as PickleValue;
  const popMark = (): PickleValue[] => {
    const at = marks.pop();
    if (at === undefined) throw new PickleError(`${opcodeName(bytes[opAt])} without MARK`, opAt);
    const items = stack.splice(at) as PickleValue[];
    stack.pop(); // the MARK itself
    items.forEach(notCallee);
    return items;
  };
  const text = (at: number, n: number): string => {
    try {
      return utf8.decode(bytes.subarray(at, at + n));
    } catch {
      throw new PickleError("invalid UTF-8 in a str", opAt);
    }
  };
  const memoize = (index: number, value: PickleValue | PickleCallable): void => {
    if (used.has(index)) memo.set(index, value);
  };
  const recall = (index: number): PickleValue | PickleCallable => {
    const v = memo.get(index);
    if (v === undefined) throw new PickleError(`memo slot ${index} was never stored`, opAt);
    return v;
  };
  const append = (list: PickleValue, items: PickleValue[]): void => {
    if (!Array.isArray(list)) throw new PickleError(`${opcodeName(bytes[opAt])} on a non-list`, opAt);
    if (list === top && options.onTopItem) {
      for (const item of items) options.onTopItem(item, topCount++);
    } else {
      for (const item of items) list.push(item);
    }
  };
  const long = (at: number, n: number): number | bigint => {
    if (n === 0) return 0;
    let v = 0n;
    for (let k = n - 1; k >= 0; k--) v = (v << 8n) | BigInt(bytes[at + k]);
    if (bytes[at + n - 1] & 0x80) v -= 1n << BigInt(8 * n);
    return integer(v);
  };

  const resolveGlobal = (module: string, name: string, opcode: string): PickleValue | PickleCallable => {
    const key = `${module} ${name}`;
    if (BYTES_CONSTRUCTORS.has(key)) {
      return new PickleCallable(`${module}.${name}`, (args) => constructBytes(key, args, opAt));
    }
    const resolved = options.globals?.(module, name);
    if (resolved === undefined) {
      throw new PickleError(
        `refusing pickle opcode ${opcode} at byte ${opAt} (${module}.${name}): it imports or calls code, and only ` +
          `${accepts} is read`,
        opAt,
      );
    }
    return resolved;
  };

  for (;;) {
    opAt = pos;
    if (pos >= bytes.length) throw new PickleError("truncated pickle: no STOP", pos);
    const op = bytes[pos++];
    switch (op) {
      case 0x80: // PROTO
        if (bytes[need(1)] > 5) throw new PickleError(`unsupported pickle protocol ${bytes[pos - 1]}`, opAt);
        break;
      case 0x95: // FRAME: a length prefix only
        need(8);
        break;
      case 0x2e: { // STOP
        const result = pop();
        if (stack.length !== 0) throw new PickleError("STOP with more than one value on the stack", opAt);
        return result;
      }
      case 0x28: // MARK
        marks.push(stack.length);
        stack.push(MARK);
        marks[marks.length - 1] = stack.length;
        break;
      case 0x5d: { // EMPTY_LIST
        const list: PickleValue[] = [];
        if (top === null && options.onTopItem && stack.length === 0) top = list;
        stack.push(list);
        break;
      }
      case 0x6c: { // LIST
        const items = popMark();
        stack.push(items);
        break;
      }
      case 0x29: // EMPTY_TUPLE
        stack.push(new PickleTuple([]));
        break;
      case 0x74: // TUPLE
        stack.push(new PickleTuple(popMark()));
        break;
      case 0x85: // TUPLE1
        stack.push(new PickleTuple([pop()]));
        break;
      case 0x86: { // TUPLE2
        const b = pop(), a = pop();
        stack.push(new PickleTuple([a, b]));
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop(), b = pop(), a = pop();
        stack.push(new PickleTuple([a, b, c]));
        break;
      }
      case 0x61: { // APPEND
        const item = pop();
        append(peek(), [item]);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        append(peek(), items);
        break;
      }
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x64: { // DICT
        const items = popMark();
        const map = new Map<PickleValue, PickleValue>();
        for (let k = 0; k + 1 < items.length; k += 2) map.set(items[k], items[k + 1]);
        stack.push(map);
        break;
      }
      case 0x73: { // SETITEM
        const value = pop(), key = pop();
        const map = peek();
        if (!(map instanceof Map)) throw new PickleError("SETITEM on a non-dict", opAt);
        map.set(key, value);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        const map = peek();
        if (!(map instanceof Map)) throw new PickleError("SETITEMS on a non-dict", opAt);
        for (let k = 0; k + 1 < items.length; k += 2) map.set(items[k], items[k + 1]);
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
      case 0x49: { // INT "digits\n": protocol 0/1 text; "00" and "01" are Python 2's bools
        const end = bytes.indexOf(0x0a, pos);
        if (end < 0) throw new PickleError("truncated pickle: INT without its newline", opAt);
        const digits = text(pos, end - pos);
        pos = end + 1;
        if (digits === "00" || digits === "01") stack.push(digits === "01");
        else if (/^[+-]?\d+$/.test(digits)) stack.push(integer(BigInt(digits)));
        else throw new PickleError(`INT '${digits}' at byte ${opAt} is not a decimal integer`, opAt);
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
        stack.push(long(need(n), n));
        break;
      }
      case 0x8b: { // LONG4
        const n = view.getInt32(need(4), true);
        if (n < 0 || n > 1 << 20) throw new PickleError(`LONG4 of ${n} bytes`, opAt);
        stack.push(long(need(n), n));
        break;
      }
      case 0x47: // BINFLOAT
        stack.push(view.getFloat64(need(8), false));
        break;
      case 0x8c: { // SHORT_BINUNICODE
        const n = bytes[need(1)];
        stack.push(text(need(n), n));
        break;
      }
      case 0x58: { // BINUNICODE
        const n = view.getUint32(need(4), true);
        stack.push(text(need(n), n));
        break;
      }
      case 0x8d: { // BINUNICODE8
        const n = Number(view.getBigUint64(need(8), true));
        stack.push(text(need(n), n));
        break;
      }
      case 0x43: { // SHORT_BINBYTES
        const n = bytes[need(1)];
        stack.push(bytes.slice(need(n), pos));
        break;
      }
      case 0x42: { // BINBYTES
        const n = view.getUint32(need(4), true);
        stack.push(bytes.slice(need(n), pos));
        break;
      }
      case 0x8e: { // BINBYTES8
        const n = Number(view.getBigUint64(need(8), true));
        stack.push(bytes.slice(need(n), pos));
        break;
      }
      case 0x55: { // SHORT_BINSTRING (a Python 2 str): kept as bytes
        const n = bytes[need(1)];
        stack.push(bytes.slice(need(n), pos));
        break;
      }
      case 0x54: { // BINSTRING
        const n = view.getInt32(need(4), true);
        if (n < 0) throw new PickleError("BINSTRING with a negative length", opAt);
        stack.push(bytes.slice(need(n), pos));
        break;
      }
      case 0x94: // MEMOIZE
        memoize(memoCount++, peekSlot());
        break;
      case 0x71: // BINPUT
        memoize(bytes[need(1)], peekSlot());
        break;
      case 0x72: // LONG_BINPUT
        memoize(view.getUint32(need(4), true), peekSlot());
        break;
      case 0x68: // BINGET
        stack.push(recall(bytes[need(1)]));
        break;
      case 0x6a: // LONG_BINGET
        stack.push(recall(view.getUint32(need(4), true)));
        break;
      case 0x30: // POP
        if (stack[stack.length - 1] === MARK) popMark();
        else pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(peek());
        break;
      case 0x63: { // GLOBAL "module\nname\n"
        const end1 = bytes.indexOf(0x0a, pos), end2 = end1 < 0 ? -1 : bytes.indexOf(0x0a, end1 + 1);
        if (end2 < 0) throw new PickleError("truncated pickle: GLOBAL without its names", opAt);
        const module = text(pos, end1 - pos), name = text(end1 + 1, end2 - end1 - 1);
        pos = end2 + 1;
        stack.push(resolveGlobal(module, name, "GLOBAL"));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop(), module = pop();
        stack.push(resolveGlobal(String(module), String(name), "STACK_GLOBAL"));
        break;
      }
      case 0x52: { // REDUCE: only the bytes constructors and the caller's allow-list
        const args = pop(), callee = popSlot();
        if (!(callee instanceof PickleCallable) || !(args instanceof PickleTuple)) {
          throw new PickleError(
            `refusing pickle opcode REDUCE at byte ${opAt}: only bytes constructors${
              options.globals ? " and allowed globals" : ""
            } are called`,
            opAt,
          );
        }
        stack.push(guarded(callee.name, () => callee.call(args.items)));
        break;
      }
      case 0x81: { // NEWOBJ: cls.__new__(cls, *args), for allowed classes only
        if (!options.globals) throw refusal("NEWOBJ");
        const args = pop(), callee = popSlot();
        if (!(callee instanceof PickleCallable) || !(args instanceof PickleTuple)) {
          throw new PickleError(`refusing pickle opcode NEWOBJ at byte ${opAt}: not an allowed class`, opAt);
        }
        stack.push(guarded(callee.name, () => callee.call(args.items)));
        break;
      }
      case 0x62: { // BUILD: obj.__setstate__(state), for objects the allow-list built
        if (!options.globals) throw refusal("BUILD");
        const state = pop();
        const target = peek();
        const build = options.build;
        const accepted = target instanceof PickleObject
          ? guarded("BUILD", () => target.setState(state))
          : build !== undefined && guarded("BUILD", () => build(target, state));
        if (!accepted) {
          throw new PickleError(`refusing pickle opcode BUILD at byte ${opAt}: the object takes no such state`, opAt);
        }
        break;
      }
      case 0x51: { // BINPERSID
        const load = options.persistentLoad;
        if (load === undefined) throw refusal("BINPERSID");
        const pid = pop();
        stack.push(guarded("persistent id", () => load(pid)));
        break;
      }
      case 0x50: { // PERSID "id\n"
        const load = options.persistentLoad;
        if (load === undefined) throw refusal("PERSID");
        const end = bytes.indexOf(0x0a, pos);
        if (end < 0) throw new PickleError("truncated pickle: PERSID without its id", opAt);
        const pid = text(pos, end - pos);
        pos = end + 1;
        stack.push(guarded("persistent id", () => load(pid)));
        break;
      }
      default:
        if (CODE_OPCODES[op] !== undefined) throw refusal(CODE_OPCODES[op]);
        throw new PickleError(`unsupported pickle opcode ${opcodeName(op)} at byte ${opAt}`, opAt);
    }
  }
}

/** A number where it is exact, else the bigint. */
function integer(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

function constructBytes(name: string, args: readonly PickleValue[], at: number): Uint8Array {
  if (name === "_codecs encode") {
    const [str, encoding] = args;
    if (args.length !== 2 || typeof str !== "string" || (encoding !== "latin1" && encoding !== "latin-1")) {
      throw new PickleError("_codecs.encode with arguments other than (str, 'latin1')", at);
    }
    const out = new Uint8Array(str.length);
    for (let i = 0; i < str.length; i++) {
      const c = str.charCodeAt(i);
      if (c > 0xff) throw new PickleError("_codecs.encode: a character outside latin-1", at);
      out[i] = c;
    }
    return out;
  }
  if (args.length === 0) return new Uint8Array(0);
  throw new PickleError(`${name.replace(" ", ".")} with arguments is not read`, at);
}

// ---- pass 1: which memo slots are read back ---------------------------------------------------------------------------

// Argument sizes of the supported opcodes: a fixed byte count, or [length-field bytes] for counted data.
const FIXED: Record<number, number> = {
  0x80: 1,
  0x95: 8,
  0x2e: 0,
  0x28: 0,
  0x5d: 0,
  0x6c: 0,
  0x29: 0,
  0x74: 0,
  0x85: 0,
  0x86: 0,
  0x87: 0,
  0x61: 0,
  0x65: 0,
  0x7d: 0,
  0x64: 0,
  0x73: 0,
  0x75: 0,
  0x4e: 0,
  0x88: 0,
  0x89: 0,
  0x4a: 4,
  0x4b: 1,
  0x4d: 2,
  0x47: 8,
  0x94: 0,
  0x71: 1,
  0x72: 4,
  0x68: 1,
  0x6a: 4,
  0x30: 0,
  0x31: 0,
  0x32: 0,
  0x81: 0, // NEWOBJ, BUILD and BINPERSID take their arguments from the stack
  0x62: 0,
  0x51: 0,
};
const COUNTED: Record<number, 1 | 4 | 8> = {
  0x8a: 1,
  0x8b: 4,
  0x8c: 1,
  0x58: 4,
  0x8d: 8,
  0x43: 1,
  0x42: 4,
  0x8e: 8,
  0x55: 1,
  0x54: 4,
};

/** The memo slots some BINGET/LONG_BINGET reads. Stops quietly at anything odd: pass 2 reports it properly. */
function memoReads(bytes: Uint8Array): Set<number> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const used = new Set<number>();
  let pos = 0;
  while (pos < bytes.length) {
    const op = bytes[pos++];
    if (op === 0x2e) break;
    const fixed = FIXED[op];
    if (fixed !== undefined) {
      if (pos + fixed > bytes.length) break;
      if (op === 0x68) used.add(bytes[pos]);
      else if (op === 0x6a) used.add(view.getUint32(pos, true));
      pos += fixed;
      continue;
    }
    if (op === 0x63 || op === 0x93 || op === 0x52) { // GLOBAL (two lines), STACK_GLOBAL, REDUCE
      if (op === 0x63) {
        const end1 = bytes.indexOf(0x0a, pos);
        const end2 = end1 < 0 ? -1 : bytes.indexOf(0x0a, end1 + 1);
        if (end2 < 0) break;
        pos = end2 + 1;
      }
      continue;
    }
    if (op === 0x50 || op === 0x49) { // PERSID, INT: one line
      const end = bytes.indexOf(0x0a, pos);
      if (end < 0) break;
      pos = end + 1;
      continue;
    }
    const width = COUNTED[op];
    if (width === undefined || pos + width > bytes.length) break;
    const n = width === 1 ? bytes[pos] : width === 4 ? view.getUint32(pos, true) : Number(view.getBigUint64(pos, true));
    pos += width + n;
  }
  return used;
}
