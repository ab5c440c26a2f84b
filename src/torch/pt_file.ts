// pt_file.ts: torch.save files (`.pt`) in both directions, with no Python and no code execution.
//
// Reading: a `.pt` is a zip (src/formats/zip.ts) of `<archive>/data.pkl` (a pickle) and `<archive>/data/<key>`, one raw
// little-endian storage per key. data.pkl goes through the safe unpickler (src/formats/pickle.ts) with an allow-list of
// exactly what torch.save writes for tensors, state dicts and training checkpoints: torch._utils._rebuild_tensor_v2
// (and _rebuild_parameter), the storage classes, collections.OrderedDict, torch.Size, argparse.Namespace (kept as
// its attributes) and libtorch's torch.jit._pickle.restore_type_tag (so files written by savePt read back). Anything else is refused with the global's name before anything is built from it. Tensors stay
// references (storage key, offset, sizes, strides) until asked for, so a caller reads only what it needs (evaluation
// skips the optimizer moments). This is TypeScript rather than libtorch's torch::pickle_load because libtorch cannot
// build the argparse.Namespace every official DetailCLIP checkpoint carries. The trade: the legacy pre-1.6 format,
// quantized/sparse tensors and big-endian files are refused.
//
// Writing: dc_save_pt (native/src/io.cpp), libtorch's own pickler, so Python's torch.load reads what we write.
import {
  PickleCallable,
  PickleError,
  PickleObject,
  PickleTuple,
  type PickleValue,
  readPickle,
} from "../formats/pickle.ts";
import { ZipArchive, ZipError } from "../formats/zip.ts";
import { type Device, type DType, dtypeSize } from "./dtype.ts";
import { lastError, native } from "./lib.ts";
import { handleList, int64List, own, Tensor } from "./tensor.ts";

/** A `.pt` file that cannot be read or written; the message names the file and what is wrong. */
export class PtFileError extends Error {
  constructor(readonly path: string, message: string, options?: ErrorOptions) {
    super(`${path}: ${message}`, options);
    this.name = "PtFileError";
  }
}

/** torch.save's storage classes (the persistent id names one) and the dtype of their elements. */
const STORAGE_DTYPES = new Map<string, DType>([
  ["FloatStorage", "float32"],
  ["DoubleStorage", "float64"],
  ["HalfStorage", "float16"],
  ["BFloat16Storage", "bfloat16"],
  ["LongStorage", "int64"],
  ["IntStorage", "int32"],
  ["ShortStorage", "int16"],
  ["CharStorage", "int8"],
  ["ByteStorage", "uint8"],
  ["BoolStorage", "bool"],
]);

/** `torch.FloatStorage` and friends, as they appear inside a persistent id. */
class StorageClass extends PickleObject {
  constructor(readonly name: string, readonly dtype: DType) {
    super();
  }
}

/** One storage of the archive: `data/<key>`, numel elements of dtype. */
export class PtStorage extends PickleObject {
  constructor(readonly key: string, readonly dtype: DType, readonly numel: number, readonly location: string) {
    super();
  }
}

/** A tensor of the file, not read yet: a strided view of one storage (PtFile.tensor reads it). */
export class PtTensorRef extends PickleObject {
  constructor(
    readonly storage: PtStorage,
    readonly offset: number,
    readonly shape: readonly number[],
    readonly stride: readonly number[],
  ) {
    super();
  }

  get dtype(): DType {
    return this.storage.dtype;
  }

  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** Row-major with no gaps (dims of size 1 may have any stride), i.e. one byte range of the storage. */
  get contiguous(): boolean {
    let expected = 1;
    for (let d = this.shape.length - 1; d >= 0; d--) {
      if (this.shape[d] !== 1 && this.stride[d] !== expected) return false;
      expected *= this.shape[d];
    }
    return true;
  }
}

/** An `argparse.Namespace` (the official checkpoints' `args`): its attributes, nothing callable. */
export class PickledNamespace extends PickleObject {
  readonly attributes = new Map<string, PickleValue>();

  override setState(state: PickleValue): boolean {
    if (!(state instanceof Map)) return false;
    for (const [key, value] of state) {
      if (typeof key !== "string") return false;
      this.attributes.set(key, value);
    }
    return true;
  }

  get(name: string): PickleValue | undefined {
    return this.attributes.get(name);
  }
}

/**
 * A TorchScript module object of a `torch.jit.save` archive's data.pkl (e.g. `__torch__.model.CLIP`): its class name
 * and attributes (parameters, buffers, submodules, plain values). Only the attribute dict the pickler writes is kept;
 * the archive's code/ is never read, so nothing of the module runs.
 */
export class TorchScriptObject extends PickleObject {
  readonly attributes = new Map<string, PickleValue>();

  constructor(readonly className: string) {
    super();
  }

  override setState(state: PickleValue): boolean {
    if (!(state instanceof Map)) return false;
    for (const [key, value] of state) {
      if (typeof key !== "string") return false;
      this.attributes.set(key, value);
    }
    return true;
  }
}

const ACCEPTS = "tensors, state dicts and plain data (the globals torch.save writes for them)";
const ACCEPTS_TORCHSCRIPT = "tensors, state dicts, TorchScript module attributes and plain data";

/** What torch.jit.save's pickler adds to torch.save's globals: module objects (as attribute bags) and typed lists. */
function torchScriptGlobal(module: string, name: string): PickleValue | PickleCallable | undefined {
  const full = `${module}.${name}`;
  if (module === "__torch__" || module.startsWith("__torch__.")) {
    // NEWOBJ with an empty tuple, then BUILD with the attribute dict (torch/csrc/jit/serialization/pickler.cpp).
    return new PickleCallable(full, (args) => {
      if (args.length !== 0) throw new Error(`TorchScript object ${full} built with arguments`);
      return new TorchScriptObject(full);
    });
  }
  switch (full) {
    case "torch.jit._pickle.build_intlist":
    case "torch.jit._pickle.build_doublelist":
    case "torch.jit._pickle.build_boollist":
    case "torch.jit._pickle.build_tensorlist":
      return new PickleCallable(full, (args) => {
        if (args.length !== 1 || !Array.isArray(args[0])) throw new Error("arguments are not (list,)");
        return args[0];
      });
  }
  return torchGlobal(module, name);
}

function isCount(value: PickleValue): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

function countList(value: PickleValue, what: string): number[] {
  const items = value instanceof PickleTuple ? value.items : Array.isArray(value) ? value : null;
  if (items === null || !items.every(isCount)) throw new Error(`${what} is not a tuple of non-negative integers`);
  return items as number[];
}

/** _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]). */
function rebuildTensor(args: readonly PickleValue[]): PtTensorRef {
  const [storage, offset, size, stride] = args;
  if (args.length < 4 || !(storage instanceof PtStorage)) throw new Error("arguments are not (storage, offset, ...)");
  if (!isCount(offset)) throw new Error(`storage offset ${String(offset)} is not a non-negative integer`);
  const shape = countList(size, "size");
  const strides = countList(stride, "stride");
  if (shape.length !== strides.length) throw new Error(`size [${shape}] and stride [${strides}] differ in length`);
  const ref = new PtTensorRef(storage, offset, shape, strides);
  // The largest element index the view touches must lie inside the storage (a hostile file could point outside).
  if (ref.numel > 0) {
    const last = offset + shape.reduce((sum, n, d) => sum + (n - 1) * strides[d], 0);
    if (last >= storage.numel) {
      throw new Error(
        `a view (offset ${offset}, size [${shape}], stride [${strides}]) reaches element ${last} of storage ` +
          `'${storage.key}', which holds ${storage.numel}`,
      );
    }
  }
  return ref;
}

/** The allow-list: every global torch.save writes for tensors, state dicts and training checkpoints. */
function torchGlobal(module: string, name: string): PickleValue | PickleCallable | undefined {
  const full = `${module}.${name}`;
  if (module === "torch" && STORAGE_DTYPES.has(name)) return new StorageClass(name, STORAGE_DTYPES.get(name)!);
  switch (full) {
    case "torch._utils._rebuild_tensor_v2":
      return new PickleCallable(full, rebuildTensor);
    case "torch._utils._rebuild_parameter": // (data, requires_grad, backward_hooks): the data
    case "torch._utils._rebuild_parameter_with_state":
      return new PickleCallable(full, (args) => {
        if (!(args[0] instanceof PtTensorRef)) throw new Error("the parameter's data is not a tensor");
        return args[0];
      });
    case "collections.OrderedDict":
      return new PickleCallable(full, (args) => {
        const map = new Map<PickleValue, PickleValue>();
        const [items] = args;
        if (args.length === 0) return map;
        if (!Array.isArray(items) || args.length !== 1) throw new Error("OrderedDict with arguments other than pairs");
        for (const pair of items) {
          const kv = pair instanceof PickleTuple ? pair.items : pair;
          if (!Array.isArray(kv) && !(pair instanceof PickleTuple)) throw new Error("OrderedDict item is not a pair");
          if ((kv as readonly PickleValue[]).length !== 2) throw new Error("OrderedDict item is not a pair");
          map.set((kv as readonly PickleValue[])[0], (kv as readonly PickleValue[])[1]);
        }
        return map;
      });
    case "torch.jit._pickle.restore_type_tag": // libtorch's pickler tags typed containers: (value, "Dict[str, Tensor]")
      return new PickleCallable(full, (args) => {
        if (args.length !== 2 || typeof args[1] !== "string") throw new Error("arguments are not (value, type)");
        return args[0];
      });
    case "torch.Size":
      return new PickleCallable(full, (args) => new PickleTuple(countList(args[0] ?? null, "torch.Size")));
    case "argparse.Namespace":
      return new PickleCallable(full, (args) => {
        if (args.length !== 0) throw new Error("argparse.Namespace with positional arguments");
        return new PickledNamespace();
      });
  }
  return undefined;
}

const encoder = new TextEncoder();

/**
 * An open `.pt` file: `root` is the unpickled object with every tensor as a PtTensorRef; `tensor()` reads one.
 * Close it (or `using`).
 */
export class PtFile {
  readonly root: PickleValue;
  readonly #archive: ZipArchive;
  /** The archive's folder prefix, e.g. `checkpoint/`. */
  readonly #prefix: string;

  private constructor(readonly path: string, archive: ZipArchive, prefix: string, root: PickleValue) {
    this.#archive = archive;
    this.#prefix = prefix;
    this.root = root;
  }

  /**
   * Opens and unpickles `path`; tensors are read later, one at a time. `torchScript` also accepts the module objects
   * of a `torch.jit.save` archive (as TorchScriptObject attribute bags; the archive's code is never looked at).
   */
  static open(path: string, options: { torchScript?: boolean } = {}): PtFile {
    let archive: ZipArchive;
    try {
      archive = new ZipArchive(path);
    } catch (error) {
      throw new PtFileError(path, describeNonZip(path, error), { cause: error });
    }
    try {
      const pickles = [...archive.entries.keys()].filter((name) => /^[^/]+\/data\.pkl$/.test(name));
      if (pickles.length !== 1) {
        throw new PtFileError(
          path,
          `expected one <archive>/data.pkl member (torch.save's zip format), found ${pickles.length}`,
        );
      }
      const prefix = pickles[0].slice(0, -"data.pkl".length);
      const byteorder = archive.entries.has(`${prefix}byteorder`)
        ? new TextDecoder().decode(archive.read(`${prefix}byteorder`)).trim()
        : "little";
      if (byteorder !== "little") throw new PtFileError(path, `storages are ${byteorder}-endian; only little is read`);
      const storages = new Map<string, PtStorage>();
      const root = readPickle(archive.read(pickles[0]), {
        accepts: options.torchScript ? ACCEPTS_TORCHSCRIPT : ACCEPTS,
        globals: options.torchScript ? torchScriptGlobal : torchGlobal,
        // A state dict is an OrderedDict with a `_metadata` attribute (module versions), set by BUILD; not needed.
        build: (target, state) => target instanceof Map && (state instanceof Map || state instanceof PickleTuple),
        persistentLoad: (pid) => {
          const items = pid instanceof PickleTuple ? pid.items : null;
          if (items === null || items.length !== 5 || items[0] !== "storage") {
            throw new Error("a persistent id other than ('storage', class, key, location, numel)");
          }
          const [, storageClass, key, location, numel] = items;
          if (!(storageClass instanceof StorageClass)) throw new Error("a storage of an unknown class");
          if (typeof key !== "string" || !isCount(numel)) throw new Error("a storage with a bad key or size");
          const known = storages.get(key);
          if (known !== undefined) {
            if (known.dtype !== storageClass.dtype || known.numel !== numel) {
              throw new Error(`storage '${key}' is named with two different classes or sizes`);
            }
            return known;
          }
          const storage = new PtStorage(key, storageClass.dtype, numel, String(location));
          storages.set(key, storage);
          return storage;
        },
      });
      return new PtFile(path, archive, prefix, root);
    } catch (error) {
      archive.close();
      if (error instanceof PtFileError) throw error;
      if (error instanceof PickleError || error instanceof ZipError) {
        throw new PtFileError(path, error.message.replace(`${path}: `, ""), { cause: error });
      }
      throw error;
    }
  }

  /** Reads one tensor (contiguous, on `device`, default cpu); the caller owns it. */
  tensor(ref: PtTensorRef, options: { device?: Device } = {}): Tensor {
    const { storage } = ref;
    const elementSize = dtypeSize[storage.dtype];
    let bytes: Uint8Array;
    try {
      bytes = this.#archive.read(`${this.#prefix}data/${storage.key}`);
    } catch (error) {
      throw new PtFileError(
        this.path,
        `storage '${storage.key}': ${(error as Error).message.replace(`${this.path}: `, "")}`,
        {
          cause: error,
        },
      );
    }
    if (bytes.byteLength !== storage.numel * elementSize) {
      throw new PtFileError(
        this.path,
        `storage '${storage.key}' holds ${bytes.byteLength} bytes, but ${storage.numel} ${storage.dtype} elements ` +
          `need ${storage.numel * elementSize}`,
      );
    }
    if (storage.dtype === "bool") {
      const bad = bytes.findIndex((b) => b > 1);
      if (bad >= 0) throw new PtFileError(this.path, `bool storage '${storage.key}' has byte value ${bytes[bad]}`);
    }
    const device = options.device ?? "cpu";
    if (ref.contiguous) {
      const begin = ref.offset * elementSize;
      return Tensor.fromBytes(bytes.subarray(begin, begin + ref.numel * elementSize), ref.shape, {
        dtype: storage.dtype,
        device,
      });
    }
    // A strided view (e.g. a transposed weight saved as such): the whole storage, viewed, then made contiguous.
    using whole = Tensor.fromBytes(bytes, [storage.numel], { dtype: storage.dtype });
    using view = asStrided(whole, ref.shape, ref.stride, ref.offset);
    const dense = view.contiguous();
    if (device === "cpu") return dense;
    using _host = dense;
    return dense.to({ device });
  }

  close(): void {
    this.#archive.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** A view of t's storage (torch.as_strided); libtorch checks the bounds. */
export function asStrided(t: Tensor, shape: readonly number[], stride: readonly number[], offset: number): Tensor {
  return own(
    native().dc_as_strided(t.handle, int64List(shape), BigInt(shape.length), int64List(stride), BigInt(offset)),
    "as_strided",
    [t],
  );
}

/** True when `path` starts like a zip archive (torch.save's format since PyTorch 1.6). */
export function isZipFile(path: string): boolean {
  try {
    if (!Deno.statSync(path).isFile) return false; // never open a FIFO or a device to sniff it
    using file = Deno.openSync(path, { read: true });
    const head = new Uint8Array(4);
    const n = file.readSync(head);
    return n === 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
  } catch {
    return false;
  }
}

/** Why a file the zip reader rejected is not a readable `.pt`. */
function describeNonZip(path: string, error: unknown): string {
  const reason = (error as Error).message.replace(`${path}: `, "");
  let head = new Uint8Array(0);
  try {
    if (!Deno.statSync(path).isFile) throw new Error("not a regular file");
    using file = Deno.openSync(path, { read: true });
    head = new Uint8Array(2);
    if (file.readSync(head) !== 2) head = new Uint8Array(0);
  } catch { /* the zip reader's reason says it */ }
  if (head[0] === 0x80 && head[1] <= 5) {
    return "a legacy torch.save file (PyTorch < 1.6, not a zip archive), which is not read; load it in Python and " +
      "save it again with a current torch.save";
  }
  if (head[0] === 0x50 && head[1] === 0x4b) return `a damaged or truncated zip archive (${reason})`;
  return `not a torch.save zip archive (${reason})`;
}

/**
 * Writes `tensors` as a dict of name -> tensor in the file format of torch.save (Python's torch.load returns a
 * dict), atomically. Each tensor is written detached, on the CPU, as its own contiguous storage.
 */
export function savePt(path: string, tensors: Map<string, Tensor> | Record<string, Tensor>): void {
  const items = tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  const names = items.map(([name]) => encoder.encode(`${name}\0`));
  const packed = new Uint8Array(names.reduce((n, b) => n + b.byteLength, 0));
  let at = 0;
  for (const name of names) {
    packed.set(name, at);
    at += name.byteLength;
  }
  for (const [name, t] of items) {
    if (!(t instanceof Tensor) || t.disposed) throw new PtFileError(path, `'${name}' is not a live Tensor`);
  }
  const status = native().dc_save_pt(
    encoder.encode(`${path}\0`),
    packed,
    BigInt(packed.byteLength),
    handleList(items.map(([, t]) => t)),
    BigInt(items.length),
  );
  if (status !== 0) throw new PtFileError(path, lastError());
}
