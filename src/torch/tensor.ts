// tensor.ts: the Tensor class, a thin owner of one native handle. Every method is one FFI call plus, on failure,
// a TorchError naming the op and the argument shapes. Lifetimes are explicit (dispose / `using` / scope.tidy);
// the FinalizationRegistry is only a safety net, because V8 cannot see native or GPU memory.
import {
  type Device,
  deviceCode,
  deviceFromCode,
  type DType,
  dtypeCode,
  dtypeFromCode,
  dtypeSize,
  getDefaultDevice,
} from "./dtype.ts";
import { TorchError } from "./errors.ts";
import { lastError, native } from "./lib.ts";
import { keep, type Scoped, track } from "./scope.ts";
import { codes } from "./symbols.ts";

type Handle = Deno.PointerObject;
/** The typed arrays a tensor copies in from and out to. */
export type TypedArray =
  | Float32Array
  | Float64Array
  | Int32Array
  | BigInt64Array
  | Uint8Array
  | Int8Array
  | Int16Array
  | Uint16Array;

/** dtype, device and requires_grad of a new tensor. */
export interface TensorOptions {
  dtype?: DType;
  device?: Device;
}

const registry = new FinalizationRegistry<Handle>((handle) => native().dc_free(handle));

/** A shape or dimension list as the int64 buffer the ABI takes. */
export function int64List(values: readonly number[]): BigInt64Array {
  const out = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = BigInt(values[i]);
  return out;
}

/** An array of tensor handles as the pointer buffer the ABI takes. */
export function handleList(tensors: readonly Tensor[]): BigUint64Array {
  const out = new BigUint64Array(tensors.length);
  for (let i = 0; i < tensors.length; i++) out[i] = BigInt(Deno.UnsafePointer.value(tensors[i].handle));
  return out;
}

function shapesOf(args: readonly unknown[]): number[][] {
  const shapes: number[][] = [];
  for (const arg of args) {
    if (arg instanceof Tensor) shapes.push(arg.disposed ? [] : arg.shape);
    else if (Array.isArray(arg)) { for (const t of arg) if (t instanceof Tensor && !t.disposed) shapes.push(t.shape); }
  }
  return shapes;
}

/** Throws the TorchError for a failed call of `op` on `args` (tensors or tensor arrays). */
export function fail(op: string, args: readonly unknown[]): never {
  const message = lastError();
  throw new TorchError(op, shapesOf(args), message);
}

/** Wraps a handle returned by `op`, or throws when it is the NULL sentinel. */
export function own(pointer: Deno.PointerValue, op: string, args: readonly unknown[]): Tensor {
  if (pointer === null) fail(op, args);
  return new Tensor(pointer, ownToken);
}

/** Checks an int32 status returned by `op`. */
export function check(status: number, op: string, args: readonly unknown[]): void {
  if (status !== 0) fail(op, args);
}

/** Reads the handles a multi-output op wrote into an out buffer. */
export function ownOut(out: BigUint64Array, count: number, op: string, args: readonly unknown[]): Tensor[] {
  const tensors: Tensor[] = [];
  for (let i = 0; i < count; i++) tensors.push(own(Deno.UnsafePointer.create(out[i]), op, args));
  return tensors;
}

const ownToken = Symbol("own");
const i64 = BigInt;

function toDims(dims: number | readonly number[] | undefined): readonly number[] {
  if (dims === undefined) return [];
  return typeof dims === "number" ? [dims] : dims;
}

/** A libtorch tensor: an owned native handle, freed by dispose() or by the enclosing tidy() scope. */
export class Tensor implements Scoped {
  #handle: Handle | null;
  #shape: number[] | null = null;
  #finalizable = false;
  scopeFrame: Scoped[] | null = null;

  /** Not for direct use: tensors come from factories and ops. */
  constructor(handle: Handle, token: symbol) {
    if (token !== ownToken) throw new TypeError("Tensor: use a factory (Tensor.zeros, Tensor.fromArray, ...)");
    this.#handle = handle;
    // A scope frees what it tracks, so only tensors outside every scope need the finalizer safety net.
    if (!track(this)) this.unscoped();
  }

  /** Called by the scope machinery when this tensor leaves every scope. */
  unscoped(): void {
    if (this.#handle !== null && !this.#finalizable) {
      registry.register(this, this.#handle, this);
      this.#finalizable = true;
    }
  }

  /** The native handle; throws when the tensor was disposed (instead of handing libtorch a dangling pointer). */
  get handle(): Handle {
    if (this.#handle === null) throw new TorchError("handle", [], "tensor used after dispose()");
    return this.#handle;
  }

  get disposed(): boolean {
    return this.#handle === null;
  }

  dispose(): void {
    const handle = this.#handle;
    if (handle === null) return;
    this.#handle = null;
    if (this.#finalizable) registry.unregister(this);
    this.scopeFrame = null;
    native().dc_free(handle);
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /**
   * Takes over `other`'s native handle (other is consumed and becomes disposed) and frees this tensor's old one:
   * moves a parameter to another device or dtype while every holder keeps the same Tensor object.
   */
  replaceWith_(other: Tensor): this {
    if (other === this) return this;
    const incoming = other.handle;
    other.#handle = null;
    if (other.#finalizable) registry.unregister(other);
    other.scopeFrame = null;
    const old = this.handle;
    this.#handle = incoming;
    this.#shape = null;
    if (this.#finalizable) {
      registry.unregister(this);
      registry.register(this, incoming, this);
    }
    native().dc_free(old);
    return this;
  }

  /** Takes this tensor out of every scope; it then lives until disposed by hand. */
  keep(): this {
    return keep(this);
  }

  // ---- metadata ------------------------------------------------------------------------------------------------
  get shape(): number[] {
    if (this.#shape === null) {
      const lib = native();
      const ndim = Number(lib.dc_dim(this.handle));
      if (ndim < 0) fail("shape", []);
      const buffer = new BigInt64Array(ndim);
      check(lib.dc_shape(this.handle, buffer), "shape", []);
      this.#shape = Array.from(buffer, Number);
    }
    return this.#shape.slice();
  }

  get ndim(): number {
    return this.shape.length;
  }

  size(dim: number): number {
    const shape = this.shape;
    const d = dim < 0 ? dim + shape.length : dim;
    if (d < 0 || d >= shape.length) throw new TorchError("size", [shape], `dimension ${dim} out of range`);
    return shape[d];
  }

  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  get dtype(): DType {
    const code = native().dc_dtype(this.handle);
    if (code < 0) fail("dtype", [this]);
    return dtypeFromCode(code);
  }

  get device(): Device {
    const code = native().dc_device(this.handle);
    if (code === -2) fail("device", [this]);
    return deviceFromCode(code);
  }

  get isContiguous(): boolean {
    return native().dc_is_contiguous(this.handle) === 1;
  }

  get requiresGrad(): boolean {
    return native().dc_requires_grad(this.handle) === 1;
  }

  get isLeaf(): boolean {
    return native().dc_is_leaf(this.handle) === 1;
  }

  toString(): string {
    if (this.disposed) return "Tensor(disposed)";
    return `Tensor(shape=[${this.shape.join(", ")}], dtype=${this.dtype}, device=${this.device})`;
  }

  // ---- factories -----------------------------------------------------------------------------------------------
  static empty(shape: readonly number[], options: TensorOptions = {}): Tensor {
    const { dtype = "float32", device = getDefaultDevice() } = options;
    const dims = int64List(shape);
    return own(native().dc_empty(dims, i64(shape.length), dtypeCode(dtype), deviceCode(device)), "empty", []);
  }

  static zeros(shape: readonly number[], options: TensorOptions = {}): Tensor {
    const { dtype = "float32", device = getDefaultDevice() } = options;
    const dims = int64List(shape);
    return own(native().dc_zeros(dims, i64(shape.length), dtypeCode(dtype), deviceCode(device)), "zeros", []);
  }

  static ones(shape: readonly number[], options: TensorOptions = {}): Tensor {
    const { dtype = "float32", device = getDefaultDevice() } = options;
    const dims = int64List(shape);
    return own(native().dc_ones(dims, i64(shape.length), dtypeCode(dtype), deviceCode(device)), "ones", []);
  }

  static full(shape: readonly number[], value: number, options: TensorOptions = {}): Tensor {
    const { dtype = "float32", device = getDefaultDevice() } = options;
    const dims = int64List(shape);
    return own(native().dc_full(dims, i64(shape.length), value, dtypeCode(dtype), deviceCode(device)), "full", []);
  }

  /** A 0-d tensor. */
  static scalar(value: number, options: TensorOptions = {}): Tensor {
    const { dtype = "float32", device = getDefaultDevice() } = options;
    return own(native().dc_scalar_tensor(value, dtypeCode(dtype), deviceCode(device)), "scalar_tensor", []);
  }

  static arange(start: number, end: number, step = 1, options: TensorOptions = {}): Tensor {
    const { dtype = "int64", device = getDefaultDevice() } = options;
    return own(native().dc_arange(start, end, step, dtypeCode(dtype), deviceCode(device)), "arange", []);
  }

  static linspace(start: number, end: number, steps: number, options: TensorOptions = {}): Tensor {
    const { dtype = "float32", device = getDefaultDevice() } = options;
    return own(native().dc_linspace(start, end, i64(steps), dtypeCode(dtype), deviceCode(device)), "linspace", []);
  }

  static eye(n: number, options: TensorOptions = {}): Tensor {
    const { dtype = "float32", device = getDefaultDevice() } = options;
    return own(native().dc_eye(i64(n), dtypeCode(dtype), deviceCode(device)), "eye", []);
  }

  /** U[0, 1) from the global (seeded) generator. */
  static rand(shape: readonly number[], options: TensorOptions = {}): Tensor {
    const { dtype = "float32", device = getDefaultDevice() } = options;
    const dims = int64List(shape);
    return own(native().dc_rand(dims, i64(shape.length), dtypeCode(dtype), deviceCode(device)), "rand", []);
  }

  static randn(shape: readonly number[], options: TensorOptions = {}): Tensor {
    const { dtype = "float32", device = getDefaultDevice() } = options;
    const dims = int64List(shape);
    return own(native().dc_randn(dims, i64(shape.length), dtypeCode(dtype), deviceCode(device)), "randn", []);
  }

  /** Integers in [low, high), int64. */
  static randint(low: number, high: number, shape: readonly number[], device: Device = getDefaultDevice()): Tensor {
    const dims = int64List(shape);
    return own(native().dc_randint(i64(low), i64(high), dims, i64(shape.length), deviceCode(device)), "randint", []);
  }

  static randperm(n: number, device: Device = getDefaultDevice()): Tensor {
    return own(native().dc_randperm(i64(n), deviceCode(device)), "randperm", []);
  }

  /** Copies raw little-endian element bytes (as safetensors stores them) into a new tensor. */
  static fromBytes(bytes: Uint8Array, shape: readonly number[], options: TensorOptions = {}): Tensor {
    const { dtype = "float32", device = getDefaultDevice() } = options;
    const dims = int64List(shape);
    const pointer = native().dc_from_data(
      bytes,
      i64(bytes.byteLength),
      dims,
      i64(shape.length),
      dtypeCode(dtype),
      deviceCode(device),
    );
    return own(pointer, "from_data", []);
  }

  /**
   * Copies numbers or a typed array into a new tensor. The dtype defaults to the typed array's own (float32 for
   * plain arrays); the shape defaults to 1-D. float16/bfloat16 from numbers go through float32.
   */
  static fromArray(
    data: readonly number[] | readonly boolean[] | TypedArray,
    shape?: readonly number[],
    options: TensorOptions = {},
  ): Tensor {
    const dims = shape ?? [data.length];
    const count = dims.reduce((a, b) => a * b, 1);
    if (count !== data.length) {
      throw new TorchError("from_array", [dims], `shape holds ${count} elements but the data has ${data.length}`);
    }
    const device = options.device ?? getDefaultDevice();
    const dtype = options.dtype ?? inferDType(data);
    if (dtype === "float16" || dtype === "bfloat16") {
      const staged = Tensor.fromArray(Array.from(data as ArrayLike<number>, Number), dims, { dtype: "float32" });
      try {
        return staged.to({ dtype, device });
      } finally {
        staged.dispose();
      }
    }
    const typed = toTypedArray(data, dtype);
    const bytes = new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);
    return Tensor.fromBytes(bytes, dims, { dtype, device });
  }

  // ---- data out ------------------------------------------------------------------------------------------------
  /** The raw element bytes, row-major, copied to the host. */
  toBytes(): Uint8Array {
    const out = new Uint8Array(this.numel * dtypeSize[this.dtype]);
    check(native().dc_copy_to_buffer(this.handle, out, i64(out.byteLength)), "copy_to_buffer", [this]);
    return out;
  }

  /** The elements in a typed array of the tensor's dtype (float16/bfloat16 come back as Float32Array). */
  toTypedArray(): TypedArray {
    const dtype = this.dtype;
    if (dtype === "float16" || dtype === "bfloat16") {
      const wide = this.to({ dtype: "float32" });
      try {
        return wide.toTypedArray();
      } finally {
        wide.dispose();
      }
    }
    const bytes = this.toBytes();
    return viewAs(bytes, dtype);
  }

  /** The elements as plain numbers (int64 beyond 2^53 loses precision; use toTypedArray for those). */
  toArray(): number[] {
    const typed = this.toTypedArray();
    return typed instanceof BigInt64Array ? Array.from(typed, Number) : Array.from(typed as ArrayLike<number>);
  }

  /** The value of a one-element tensor (synchronises with the device). */
  item(): number {
    const out = new Float64Array(1);
    check(native().dc_item(this.handle, out), "item", [this]);
    return out[0];
  }

  // ---- conversions ---------------------------------------------------------------------------------------------
  to(target: DType | Device | { dtype?: DType; device?: Device; nonBlocking?: boolean }): Tensor {
    const spec = typeof target === "string"
      ? (isDevice(target) ? { device: target as Device } : { dtype: target as DType })
      : target;
    const dtype = spec.dtype === undefined ? -1 : dtypeCode(spec.dtype);
    const device = spec.device === undefined ? -2 : deviceCode(spec.device);
    const nonBlocking = "nonBlocking" in spec && spec.nonBlocking ? 1 : 0;
    return own(native().dc_to(this.handle, dtype, device, nonBlocking), "to", [this]);
  }

  float(): Tensor {
    return this.to({ dtype: "float32" });
  }

  long(): Tensor {
    return this.to({ dtype: "int64" });
  }

  cpu(): Tensor {
    return this.to({ device: "cpu" });
  }

  contiguous(): Tensor {
    return own(native().dc_contiguous(this.handle), "contiguous", [this]);
  }

  clone(): Tensor {
    return own(native().dc_clone(this.handle), "clone", [this]);
  }

  /** A second handle to the same tensor (same storage and autograd identity), with its own lifetime. */
  alias(): Tensor {
    return own(native().dc_shallow_clone(this.handle), "shallow_clone", [this]);
  }

  detach(): Tensor {
    return own(native().dc_detach(this.handle), "detach", [this]);
  }

  pinMemory(): Tensor {
    return own(native().dc_pin_memory(this.handle), "pin_memory", [this]);
  }

  // ---- views and indexing --------------------------------------------------------------------------------------
  reshape(shape: readonly number[]): Tensor {
    return own(native().dc_reshape(this.handle, int64List(shape), i64(shape.length)), "reshape", [this]);
  }

  view(shape: readonly number[]): Tensor {
    return own(native().dc_view(this.handle, int64List(shape), i64(shape.length)), "view", [this]);
  }

  permute(dims: readonly number[]): Tensor {
    return own(native().dc_permute(this.handle, int64List(dims), i64(dims.length)), "permute", [this]);
  }

  transpose(dim0: number, dim1: number): Tensor {
    return own(native().dc_transpose(this.handle, i64(dim0), i64(dim1)), "transpose", [this]);
  }

  /** Python's t[..., start:end:step, ...] along dim; end defaults to the end. */
  slice(dim: number, start: number, end?: number, step = 1): Tensor {
    const stop = end === undefined ? 0x7fffffffffffffffn : i64(end);
    return own(native().dc_slice(this.handle, i64(dim), i64(start), stop, i64(step)), "slice", [this]);
  }

  select(dim: number, index: number): Tensor {
    return own(native().dc_select(this.handle, i64(dim), i64(index)), "select", [this]);
  }

  narrow(dim: number, start: number, length: number): Tensor {
    return own(native().dc_narrow(this.handle, i64(dim), i64(start), i64(length)), "narrow", [this]);
  }

  squeeze(dim: number): Tensor {
    return own(native().dc_squeeze(this.handle, i64(dim)), "squeeze", [this]);
  }

  unsqueeze(dim: number): Tensor {
    return own(native().dc_unsqueeze(this.handle, i64(dim)), "unsqueeze", [this]);
  }

  flatten(startDim = 0, endDim = -1): Tensor {
    return own(native().dc_flatten(this.handle, i64(startDim), i64(endDim)), "flatten", [this]);
  }

  expand(shape: readonly number[]): Tensor {
    return own(native().dc_expand(this.handle, int64List(shape), i64(shape.length)), "expand", [this]);
  }

  repeat(repeats: readonly number[]): Tensor {
    return own(native().dc_repeat(this.handle, int64List(repeats), i64(repeats.length)), "repeat", [this]);
  }

  flip(dims: readonly number[]): Tensor {
    return own(native().dc_flip(this.handle, int64List(dims), i64(dims.length)), "flip", [this]);
  }

  gather(dim: number, index: Tensor): Tensor {
    return own(native().dc_gather(this.handle, i64(dim), index.handle), "gather", [this, index]);
  }

  scatter(dim: number, index: Tensor, src: Tensor): Tensor {
    return own(native().dc_scatter(this.handle, i64(dim), index.handle, src.handle), "scatter", [this, index, src]);
  }

  scatterAdd(dim: number, index: Tensor, src: Tensor): Tensor {
    const pointer = native().dc_scatter_add(this.handle, i64(dim), index.handle, src.handle);
    return own(pointer, "scatter_add", [this, index, src]);
  }

  indexSelect(dim: number, index: Tensor): Tensor {
    return own(native().dc_index_select(this.handle, i64(dim), index.handle), "index_select", [this, index]);
  }

  maskedFill(mask: Tensor, value: number): Tensor {
    return own(native().dc_masked_fill(this.handle, mask.handle, value), "masked_fill", [this, mask]);
  }

  triu(diagonal = 0): Tensor {
    return own(native().dc_triu(this.handle, i64(diagonal)), "triu", [this]);
  }

  tril(diagonal = 0): Tensor {
    return own(native().dc_tril(this.handle, i64(diagonal)), "tril", [this]);
  }

  chunk(chunks: number, dim = 0): Tensor[] {
    const out = new BigUint64Array(chunks);
    const count = Number(native().dc_chunk(this.handle, i64(chunks), i64(dim), out, i64(chunks)));
    if (count < 0) fail("chunk", [this]);
    return ownOut(out, count, "chunk", [this]);
  }

  split(splitSize: number, dim = 0): Tensor[] {
    const size = this.size(dim);
    const capacity = Math.max(1, Math.ceil(size / splitSize));
    const out = new BigUint64Array(capacity);
    const count = Number(native().dc_split(this.handle, i64(splitSize), i64(dim), out, i64(capacity)));
    if (count < 0) fail("split", [this]);
    return ownOut(out, count, "split", [this]);
  }

  // ---- elementwise ---------------------------------------------------------------------------------------------
  #unary(op: number, name: string): Tensor {
    return own(native().dc_unary(op, this.handle), name, [this]);
  }

  #binary(op: number, name: string, other: Tensor | number): Tensor {
    if (typeof other === "number") return own(native().dc_binary_scalar(op, this.handle, other), name, [this]);
    return own(native().dc_binary(op, this.handle, other.handle), name, [this, other]);
  }

  #binaryInPlace(op: number, name: string, other: Tensor | number): this {
    if (typeof other === "number") check(native().dc_binary_scalar_(op, this.handle, other), name, [this]);
    else check(native().dc_binary_(op, this.handle, other.handle), name, [this, other]);
    return this;
  }

  neg(): Tensor {
    return this.#unary(codes.NEG, "neg");
  }
  exp(): Tensor {
    return this.#unary(codes.EXP, "exp");
  }
  log(): Tensor {
    return this.#unary(codes.LOG, "log");
  }
  sqrt(): Tensor {
    return this.#unary(codes.SQRT, "sqrt");
  }
  rsqrt(): Tensor {
    return this.#unary(codes.RSQRT, "rsqrt");
  }
  abs(): Tensor {
    return this.#unary(codes.ABS, "abs");
  }
  sin(): Tensor {
    return this.#unary(codes.SIN, "sin");
  }
  cos(): Tensor {
    return this.#unary(codes.COS, "cos");
  }
  tanh(): Tensor {
    return this.#unary(codes.TANH, "tanh");
  }
  sigmoid(): Tensor {
    return this.#unary(codes.SIGMOID, "sigmoid");
  }
  relu(): Tensor {
    return this.#unary(codes.RELU, "relu");
  }
  erf(): Tensor {
    return this.#unary(codes.ERF, "erf");
  }
  erfinv(): Tensor {
    return this.#unary(codes.ERFINV, "erfinv");
  }
  reciprocal(): Tensor {
    return this.#unary(codes.RECIPROCAL, "reciprocal");
  }
  sign(): Tensor {
    return this.#unary(codes.SIGN, "sign");
  }
  floor(): Tensor {
    return this.#unary(codes.FLOOR, "floor");
  }
  ceil(): Tensor {
    return this.#unary(codes.CEIL, "ceil");
  }
  round(): Tensor {
    return this.#unary(codes.ROUND, "round");
  }
  trunc(): Tensor {
    return this.#unary(codes.TRUNC, "trunc");
  }
  logicalNot(): Tensor {
    return this.#unary(codes.LOGICAL_NOT, "logical_not");
  }
  isfinite(): Tensor {
    return this.#unary(codes.ISFINITE, "isfinite");
  }
  isnan(): Tensor {
    return this.#unary(codes.ISNAN, "isnan");
  }
  square(): Tensor {
    return this.#unary(codes.SQUARE, "square");
  }
  log1p(): Tensor {
    return this.#unary(codes.LOG1P, "log1p");
  }
  expm1(): Tensor {
    return this.#unary(codes.EXPM1, "expm1");
  }
  silu(): Tensor {
    return this.#unary(codes.SILU, "silu");
  }
  /** GELU: exact erf form by default, tanh approximation on request. */
  gelu(approximate: "none" | "tanh" = "none"): Tensor {
    return own(native().dc_gelu(this.handle, approximate === "tanh" ? 1 : 0), "gelu", [this]);
  }

  add(other: Tensor | number, alpha = 1): Tensor {
    if (alpha !== 1 && other instanceof Tensor) {
      return own(native().dc_add_scaled(this.handle, other.handle, alpha), "add", [this, other]);
    }
    return this.#binary(codes.ADD, "add", typeof other === "number" ? other * alpha : other);
  }
  sub(other: Tensor | number): Tensor {
    return this.#binary(codes.SUB, "sub", other);
  }
  mul(other: Tensor | number): Tensor {
    return this.#binary(codes.MUL, "mul", other);
  }
  div(other: Tensor | number): Tensor {
    return this.#binary(codes.DIV, "div", other);
  }
  pow(other: Tensor | number): Tensor {
    return this.#binary(codes.POW, "pow", other);
  }
  maximum(other: Tensor | number): Tensor {
    return this.#binary(codes.MAXIMUM, "maximum", other);
  }
  minimum(other: Tensor | number): Tensor {
    return this.#binary(codes.MINIMUM, "minimum", other);
  }
  eq(other: Tensor | number): Tensor {
    return this.#binary(codes.EQ, "eq", other);
  }
  ne(other: Tensor | number): Tensor {
    return this.#binary(codes.NE, "ne", other);
  }
  lt(other: Tensor | number): Tensor {
    return this.#binary(codes.LT, "lt", other);
  }
  le(other: Tensor | number): Tensor {
    return this.#binary(codes.LE, "le", other);
  }
  gt(other: Tensor | number): Tensor {
    return this.#binary(codes.GT, "gt", other);
  }
  ge(other: Tensor | number): Tensor {
    return this.#binary(codes.GE, "ge", other);
  }
  logicalAnd(other: Tensor): Tensor {
    return this.#binary(codes.LOGICAL_AND, "logical_and", other);
  }
  logicalOr(other: Tensor): Tensor {
    return this.#binary(codes.LOGICAL_OR, "logical_or", other);
  }
  remainder(other: Tensor | number): Tensor {
    return this.#binary(codes.REMAINDER, "remainder", other);
  }
  floorDivide(other: Tensor | number): Tensor {
    return this.#binary(codes.FLOOR_DIVIDE, "floor_divide", other);
  }
  atan2(other: Tensor): Tensor {
    return this.#binary(codes.ATAN2, "atan2", other);
  }
  /** scalar - this. */
  rsub(scalar: number): Tensor {
    return own(native().dc_scalar_binary(codes.SUB, scalar, this.handle), "rsub", [this]);
  }
  /** scalar / this. */
  rdiv(scalar: number): Tensor {
    return own(native().dc_scalar_binary(codes.DIV, scalar, this.handle), "rdiv", [this]);
  }
  /** scalar ** this. */
  rpow(scalar: number): Tensor {
    return own(native().dc_scalar_binary(codes.POW, scalar, this.handle), "rpow", [this]);
  }

  clamp(min = -Infinity, max = Infinity): Tensor {
    return own(native().dc_clamp(this.handle, min, max), "clamp", [this]);
  }
  lerp(end: Tensor, weight: number): Tensor {
    return own(native().dc_lerp(this.handle, end.handle, weight), "lerp", [this, end]);
  }

  // ---- in place (optimizer and init paths; they bump libtorch's version counter) ------------------------------
  add_(other: Tensor | number, alpha = 1): this {
    if (alpha !== 1 && other instanceof Tensor) {
      check(native().dc_add_scaled_(this.handle, other.handle, alpha), "add_", [this, other]);
      return this;
    }
    return this.#binaryInPlace(codes.ADD, "add_", typeof other === "number" ? other * alpha : other);
  }
  sub_(other: Tensor | number): this {
    return this.#binaryInPlace(codes.SUB, "sub_", other);
  }
  mul_(other: Tensor | number): this {
    return this.#binaryInPlace(codes.MUL, "mul_", other);
  }
  div_(other: Tensor | number): this {
    return this.#binaryInPlace(codes.DIV, "div_", other);
  }
  clamp_(min = -Infinity, max = Infinity): this {
    check(native().dc_clamp_(this.handle, min, max), "clamp_", [this]);
    return this;
  }
  lerp_(end: Tensor, weight: number): this {
    check(native().dc_lerp_(this.handle, end.handle, weight), "lerp_", [this, end]);
    return this;
  }
  addcmul_(a: Tensor, b: Tensor, value = 1): this {
    check(native().dc_addcmul_(this.handle, a.handle, b.handle, value), "addcmul_", [this, a, b]);
    return this;
  }
  addcdiv_(a: Tensor, b: Tensor, value = 1): this {
    check(native().dc_addcdiv_(this.handle, a.handle, b.handle, value), "addcdiv_", [this, a, b]);
    return this;
  }
  fill_(value: number): this {
    check(native().dc_fill_(this.handle, value), "fill_", [this]);
    return this;
  }
  zero_(): this {
    check(native().dc_zero_(this.handle), "zero_", [this]);
    return this;
  }
  copy_(src: Tensor): this {
    check(native().dc_copy_(this.handle, src.handle), "copy_", [this, src]);
    return this;
  }
  /** Applies a unary op in place. */
  apply_(op: "exp" | "neg" | "sqrt" | "erfinv" | "abs" | "reciprocal"): this {
    const opCodes = { exp: codes.EXP, neg: codes.NEG, sqrt: codes.SQRT, erfinv: codes.ERFINV, abs: codes.ABS };
    const code = op === "reciprocal" ? codes.RECIPROCAL : opCodes[op];
    check(native().dc_unary_(code, this.handle), `${op}_`, [this]);
    return this;
  }

  // ---- seeded initialisation (torch.nn.init semantics, no-grad) ------------------------------------------------
  normal_(mean = 0, std = 1): this {
    check(native().dc_normal_(this.handle, mean, std), "normal_", [this]);
    return this;
  }
  uniform_(low = 0, high = 1): this {
    check(native().dc_uniform_(this.handle, low, high), "uniform_", [this]);
    return this;
  }
  /** N(mean, std) truncated to [a, b] in absolute units (timm's trunc_normal_). */
  truncNormal_(mean = 0, std = 1, a = -2, b = 2): this {
    check(native().dc_trunc_normal_(this.handle, mean, std, a, b), "trunc_normal_", [this]);
    return this;
  }
  xavierUniform_(gain = 1): this {
    check(native().dc_xavier_uniform_(this.handle, gain), "xavier_uniform_", [this]);
    return this;
  }
  /** PyTorch's default Linear/Conv init uses a = sqrt(5). */
  kaimingUniform_(a = 0): this {
    check(native().dc_kaiming_uniform_(this.handle, a), "kaiming_uniform_", [this]);
    return this;
  }

  // ---- reductions ----------------------------------------------------------------------------------------------
  /** Sum over dims (all when omitted). */
  sum(dims?: number | readonly number[], keepdim = false): Tensor {
    const d = toDims(dims);
    return own(native().dc_sum(this.handle, int64List(d), i64(d.length), keepdim ? 1 : 0), "sum", [this]);
  }
  mean(dims?: number | readonly number[], keepdim = false): Tensor {
    const d = toDims(dims);
    return own(native().dc_mean(this.handle, int64List(d), i64(d.length), keepdim ? 1 : 0), "mean", [this]);
  }
  /** Variance; correction 1 (the default, as torch) is the unbiased estimate. */
  var(dims?: number | readonly number[], options: { correction?: number; keepdim?: boolean } = {}): Tensor {
    const d = toDims(dims);
    const { correction = 1, keepdim = false } = options;
    const pointer = native().dc_var(this.handle, int64List(d), i64(d.length), i64(correction), keepdim ? 1 : 0);
    return own(pointer, "var", [this]);
  }
  std(dims?: number | readonly number[], options: { correction?: number; keepdim?: boolean } = {}): Tensor {
    const d = toDims(dims);
    const { correction = 1, keepdim = false } = options;
    const pointer = native().dc_std(this.handle, int64List(d), i64(d.length), i64(correction), keepdim ? 1 : 0);
    return own(pointer, "std", [this]);
  }
  norm(p = 2, dims?: number | readonly number[], keepdim = false): Tensor {
    const d = toDims(dims);
    return own(native().dc_norm(this.handle, p, int64List(d), i64(d.length), keepdim ? 1 : 0), "norm", [this]);
  }
  amax(dims?: number | readonly number[], keepdim = false): Tensor {
    const d = toDims(dims);
    return own(native().dc_amax(this.handle, int64List(d), i64(d.length), keepdim ? 1 : 0), "amax", [this]);
  }
  amin(dims?: number | readonly number[], keepdim = false): Tensor {
    const d = toDims(dims);
    return own(native().dc_amin(this.handle, int64List(d), i64(d.length), keepdim ? 1 : 0), "amin", [this]);
  }
  logsumexp(dims: number | readonly number[], keepdim = false): Tensor {
    const d = toDims(dims);
    return own(native().dc_logsumexp(this.handle, int64List(d), i64(d.length), keepdim ? 1 : 0), "logsumexp", [this]);
  }
  prod(dim: number, keepdim = false): Tensor {
    return own(native().dc_prod(this.handle, i64(dim), keepdim ? 1 : 0), "prod", [this]);
  }
  cumsum(dim: number): Tensor {
    return own(native().dc_cumsum(this.handle, i64(dim)), "cumsum", [this]);
  }
  /** Index of the maximum along dim, or over the flattened tensor when dim is omitted. */
  argmax(dim?: number, keepdim = false): Tensor {
    const all = dim === undefined ? 1 : 0;
    return own(native().dc_argmax(this.handle, i64(dim ?? 0), keepdim ? 1 : 0, all), "argmax", [this]);
  }
  argmin(dim?: number, keepdim = false): Tensor {
    const all = dim === undefined ? 1 : 0;
    return own(native().dc_argmin(this.handle, i64(dim ?? 0), keepdim ? 1 : 0, all), "argmin", [this]);
  }
  max(dim: number, keepdim = false): { values: Tensor; indices: Tensor } {
    const out = new BigUint64Array(2);
    const status = native().dc_max_dim(this.handle, i64(dim), keepdim ? 1 : 0, out.subarray(0, 1), out.subarray(1, 2));
    check(status, "max", [this]);
    const [values, indices] = ownOut(out, 2, "max", [this]);
    return { values, indices };
  }
  all(): Tensor {
    return own(native().dc_all(this.handle), "all", [this]);
  }
  any(): Tensor {
    return own(native().dc_any(this.handle), "any", [this]);
  }
  sort(dim = -1, options: { descending?: boolean; stable?: boolean } = {}): { values: Tensor; indices: Tensor } {
    const { descending = false, stable = false } = options;
    const out = new BigUint64Array(2);
    const status = native().dc_sort(
      this.handle,
      i64(dim),
      descending ? 1 : 0,
      stable ? 1 : 0,
      out.subarray(0, 1),
      out.subarray(1, 2),
    );
    check(status, "sort", [this]);
    const [values, indices] = ownOut(out, 2, "sort", [this]);
    return { values, indices };
  }
  argsort(dim = -1, options: { descending?: boolean; stable?: boolean } = {}): Tensor {
    const { descending = false, stable = false } = options;
    const pointer = native().dc_argsort(this.handle, i64(dim), descending ? 1 : 0, stable ? 1 : 0);
    return own(pointer, "argsort", [this]);
  }
  topk(k: number, dim = -1, options: { largest?: boolean; sorted?: boolean } = {}): {
    values: Tensor;
    indices: Tensor;
  } {
    const { largest = true, sorted = true } = options;
    const out = new BigUint64Array(2);
    const status = native().dc_topk(
      this.handle,
      i64(k),
      i64(dim),
      largest ? 1 : 0,
      sorted ? 1 : 0,
      out.subarray(0, 1),
      out.subarray(1, 2),
    );
    check(status, "topk", [this]);
    const [values, indices] = ownOut(out, 2, "topk", [this]);
    return { values, indices };
  }
  allclose(other: Tensor, rtol = 1e-5, atol = 1e-8): boolean {
    const result = native().dc_allclose(this.handle, other.handle, rtol, atol);
    if (result < 0) fail("allclose", [this, other]);
    return result === 1;
  }

  // ---- linear algebra ------------------------------------------------------------------------------------------
  matmul(other: Tensor): Tensor {
    return own(native().dc_matmul(this.handle, other.handle), "matmul", [this, other]);
  }
  bmm(other: Tensor): Tensor {
    return own(native().dc_bmm(this.handle, other.handle), "bmm", [this, other]);
  }

  // ---- autograd ------------------------------------------------------------------------------------------------
  requiresGrad_(requiresGrad = true): this {
    check(native().dc_set_requires_grad(this.handle, requiresGrad ? 1 : 0), "requires_grad_", [this]);
    return this;
  }
  /** Runs libtorch's autograd engine from this (scalar) tensor. */
  backward(grad?: Tensor, retainGraph = false): void {
    const status = native().dc_backward(this.handle, grad?.handle ?? null, retainGraph ? 1 : 0);
    check(status, "backward", grad ? [this, grad] : [this]);
  }
  /** The accumulated gradient (a new handle), or null when there is none. */
  get grad(): Tensor | null {
    const out = new BigUint64Array(1);
    check(native().dc_grad(this.handle, out), "grad", [this]);
    return out[0] === 0n ? null : own(Deno.UnsafePointer.create(out[0]), "grad", [this]);
  }
  setGrad(grad: Tensor | null): void {
    check(native().dc_set_grad(this.handle, grad?.handle ?? null), "set_grad", grad ? [this, grad] : [this]);
  }
  zeroGrad(setToNone = true): void {
    check(native().dc_zero_grad(this.handle, setToNone ? 1 : 0), "zero_grad", [this]);
  }
  detach_(): this {
    check(native().dc_detach_(this.handle), "detach_", [this]);
    return this;
  }
}

function isDevice(value: string): boolean {
  return value === "cpu" || value === "meta" || value.startsWith("cuda");
}

function inferDType(data: readonly number[] | readonly boolean[] | TypedArray): DType {
  if (data instanceof Float64Array) return "float64";
  if (data instanceof Int32Array) return "int32";
  if (data instanceof BigInt64Array) return "int64";
  if (data instanceof Uint8Array) return "uint8";
  if (data instanceof Int8Array) return "int8";
  if (data instanceof Int16Array) return "int16";
  if (Array.isArray(data) && data.length > 0 && typeof data[0] === "boolean") return "bool";
  return "float32";
}

function toTypedArray(data: readonly number[] | readonly boolean[] | TypedArray, dtype: DType): TypedArray {
  const numbers = (): number[] => Array.from(data as ArrayLike<number | boolean | bigint>, Number);
  switch (dtype) {
    case "float32":
      return data instanceof Float32Array ? data : Float32Array.from(numbers());
    case "float64":
      return data instanceof Float64Array ? data : Float64Array.from(numbers());
    case "int64":
      return data instanceof BigInt64Array ? data : BigInt64Array.from(numbers(), (x) => BigInt(Math.trunc(x)));
    case "int32":
      return data instanceof Int32Array ? data : Int32Array.from(numbers());
    case "uint8":
    case "bool":
      return data instanceof Uint8Array
        ? data
        : Uint8Array.from(numbers(), (x) => (dtype === "bool" ? (x ? 1 : 0) : x));
    case "int8":
      return data instanceof Int8Array ? data : Int8Array.from(numbers());
    case "int16":
      return data instanceof Int16Array ? data : Int16Array.from(numbers());
    default:
      throw new TypeError(`fromArray: no typed array for ${dtype}`);
  }
}

function viewAs(bytes: Uint8Array, dtype: DType): TypedArray {
  const buffer = bytes.buffer as ArrayBuffer;
  switch (dtype) {
    case "float32":
      return new Float32Array(buffer);
    case "float64":
      return new Float64Array(buffer);
    case "int64":
      return new BigInt64Array(buffer);
    case "int32":
      return new Int32Array(buffer);
    case "int8":
      return new Int8Array(buffer);
    case "int16":
      return new Int16Array(buffer);
    case "float16":
    case "bfloat16":
      return new Uint16Array(buffer);
    default:
      return bytes;
  }
}

/** Concatenates along an existing dimension. */
export function cat(tensors: readonly Tensor[], dim = 0): Tensor {
  return own(native().dc_cat(handleList(tensors), i64(tensors.length), i64(dim)), "cat", [tensors]);
}

/** Stacks along a new dimension. */
export function stack(tensors: readonly Tensor[], dim = 0): Tensor {
  return own(native().dc_stack(handleList(tensors), i64(tensors.length), i64(dim)), "stack", [tensors]);
}

/** condition ? a : b, elementwise with broadcasting. */
export function where(condition: Tensor, a: Tensor, b: Tensor): Tensor {
  return own(native().dc_where(condition.handle, a.handle, b.handle), "where", [condition, a, b]);
}
