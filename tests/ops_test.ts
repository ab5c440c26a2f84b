// ops_test.ts: every op family of the Tensor layer against hand-computed values or closed forms computed in JS.
// Each test runs inside tidy() and checks that it left no native handle behind.
import {
  autocast,
  cat,
  cudaDeviceCount,
  cudaIsAvailable,
  emaUpdate_,
  enableGrad,
  F,
  foreachAdd_,
  foreachCopy_,
  foreachLerp_,
  foreachMul_,
  foreachZero_,
  gradNorm,
  inferenceMode,
  isGradEnabled,
  liveTensors,
  manualSeed,
  noGrad,
  numThreads,
  rngState,
  setNumThreads,
  setRngState,
  stack,
  Tensor,
  tidy,
  torchVersion,
  where,
} from "../src/torch/mod.ts";
import { adamwStep_, ampUnscale_ } from "../src/torch/optim.ts";
import {
  assert,
  assertClose,
  assertEquals,
  assertTensor,
  assertThrows,
  assertTorchError,
  erf,
  missingTool,
  pythonModulesMissing,
  uniformValues,
} from "./helpers.ts";

/** A test body run inside a scope; it must free every handle it made. */
function test(name: string, fn: () => void): void {
  Deno.test(name, () => {
    const before = liveTensors();
    tidy(fn);
    assertEquals(liveTensors(), before, `${name}: live tensor handles after the scope`);
  });
}

const f32 = (data: readonly number[], shape?: readonly number[]) => Tensor.fromArray(data, shape, { dtype: "float32" });
const f64 = (data: readonly number[], shape?: readonly number[]) => Tensor.fromArray(data, shape, { dtype: "float64" });
const i64 = (data: readonly number[], shape?: readonly number[]) => Tensor.fromArray(data, shape, { dtype: "int64" });
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

// ---- creation -----------------------------------------------------------------------------------------------------

test("creation: zeros, ones, full, scalar for several dtypes", () => {
  assertTensor(Tensor.zeros([2, 3]), [2, 3], [0, 0, 0, 0, 0, 0], { dtype: "float32" });
  assertTensor(Tensor.zeros([2], { dtype: "int64" }), [2], [0, 0], { dtype: "int64" });
  assertTensor(Tensor.ones([3], { dtype: "float64" }), [3], [1, 1, 1], { dtype: "float64" });
  assertTensor(Tensor.ones([2], { dtype: "bool" }), [2], [1, 1], { dtype: "bool" });
  assertTensor(Tensor.full([2, 2], 2.5), [2, 2], [2.5, 2.5, 2.5, 2.5], { dtype: "float32" });
  assertTensor(Tensor.full([1], 7, { dtype: "int32" }), [1], [7], { dtype: "int32" });
  assertTensor(Tensor.full([2], 1 / 3, { dtype: "bfloat16" }), [2], [0.333984375, 0.333984375], { dtype: "bfloat16" });
  const s = Tensor.scalar(3.5, { dtype: "float64" });
  assertEquals(s.shape, []);
  assertEquals(s.ndim, 0);
  assertEquals(s.numel, 1);
  assertEquals(s.item(), 3.5);
  assertEquals(Tensor.empty([4, 0]).numel, 0);
});

test("creation: arange, linspace, eye", () => {
  assertTensor(Tensor.arange(0, 5), [5], [0, 1, 2, 3, 4], { dtype: "int64" });
  assertTensor(Tensor.arange(5, 0, -2), [3], [5, 3, 1], { dtype: "int64" });
  assertTensor(Tensor.arange(1, 2, 0.25, { dtype: "float32" }), [4], [1, 1.25, 1.5, 1.75], { dtype: "float32" });
  assertTensor(Tensor.linspace(0, 1, 5), [5], [0, 0.25, 0.5, 0.75, 1], { dtype: "float32" });
  assertTensor(Tensor.linspace(-1, 1, 3, { dtype: "float64" }), [3], [-1, 0, 1], { dtype: "float64" });
  assertTensor(Tensor.eye(3), [3, 3], [1, 0, 0, 0, 1, 0, 0, 0, 1], { dtype: "float32" });
  assertTensor(Tensor.eye(2, { dtype: "int64" }), [2, 2], [1, 0, 0, 1], { dtype: "int64" });
});

test("creation: fromArray and toArray round-trip every dtype", () => {
  assertTensor(f32([1.5, -2.25, 3], [3]), [3], [1.5, -2.25, 3], { dtype: "float32" });
  // 0.1 is not a float32: the round trip returns the float32 nearest to it.
  assertEquals(f32([0.1]).toArray()[0], Math.fround(0.1));
  assertTensor(Tensor.fromArray(new Float64Array([0.1, 1e300])), [2], [0.1, 1e300], { dtype: "float64" });
  // float16: 0.1 rounds to 0.0999755859375, 65504 is the largest finite value.
  assertTensor(Tensor.fromArray([0.5, -2, 65504, 0.1], [2, 2], { dtype: "float16" }), [2, 2], [
    0.5,
    -2,
    65504,
    0.0999755859375,
  ], { dtype: "float16" });
  // bfloat16 keeps float32's range with 8 bits of mantissa: 65504 rounds up to 65536, 1/3 to 0.333984375.
  assertTensor(Tensor.fromArray([65504, 1 / 3, -1], [3], { dtype: "bfloat16" }), [3], [65536, 0.333984375, -1], {
    dtype: "bfloat16",
  });
  // Raw bits: 1.0 is 0x3C00 in float16 and 0x3F80 in bfloat16 (little-endian bytes).
  assertEquals(Array.from(Tensor.fromArray([1], [1], { dtype: "float16" }).toBytes()), [0x00, 0x3c]);
  assertEquals(Array.from(Tensor.fromArray([1], [1], { dtype: "bfloat16" }).toBytes()), [0x80, 0x3f]);
  // int64 beyond 2^53 survives through the typed array path.
  const big = Tensor.fromArray(new BigInt64Array([2n ** 53n + 1n, -5n, 2n ** 62n]));
  assertEquals(big.dtype, "int64");
  const back = big.toTypedArray() as BigInt64Array;
  assertEquals(Array.from(back, String), [String(2n ** 53n + 1n), "-5", String(2n ** 62n)]);
  assertTensor(i64([3, -7, 0]), [3], [3, -7, 0], { dtype: "int64" });
  assertTensor(Tensor.fromArray(new Int32Array([-2147483648, 2147483647])), [2], [-2147483648, 2147483647], {
    dtype: "int32",
  });
  assertTensor(Tensor.fromArray(new Uint8Array([0, 255])), [2], [0, 255], { dtype: "uint8" });
  assertTensor(Tensor.fromArray(new Int8Array([-128, 127])), [2], [-128, 127], { dtype: "int8" });
  assertTensor(Tensor.fromArray(new Int16Array([-32768, 32767])), [2], [-32768, 32767], { dtype: "int16" });
  assertTensor(Tensor.fromArray([true, false, true]), [3], [1, 0, 1], { dtype: "bool" });
  assertTensor(Tensor.fromArray([1, 0, 2], [3], { dtype: "bool" }), [3], [1, 0, 1], { dtype: "bool" });
  assertEquals(Tensor.fromArray([true]).item(), 1);
  assertEquals(i64([-9]).item(), -9);
  assertTorchError(() => f32([1, 2, 3], [2, 2]), ["from_array", "4 elements", "3"]);
  assertTorchError(() => f32([1, 2]).item(), ["item"]);
});

test("creation: dtype conversion with to()", () => {
  const x = f32([1.7, -1.7, 2.5]);
  assertTensor(x.to("int64"), [3], [1, -1, 2], { dtype: "int64" }); // truncation toward zero
  assertTensor(x.to({ dtype: "float64" }), [3], [Math.fround(1.7), Math.fround(-1.7), 2.5], { dtype: "float64" });
  assertTensor(x.to("bool"), [3], [1, 1, 1], { dtype: "bool" });
  assertEquals(x.to("cpu").device, "cpu");
  assertEquals(x.long().dtype, "int64");
  assertEquals(i64([1]).float().dtype, "float32");
});

// ---- views -------------------------------------------------------------------------------------------------------

/** x[i][j][k] = i*12 + j*4 + k with shape [2, 3, 4]. */
const grid = () => Tensor.arange(0, 24).reshape([2, 3, 4]);

test("views: reshape, view, permute, transpose, contiguity", () => {
  const x = grid();
  assertTensor(x.reshape([4, -1]), [4, 6], range(24));
  assertTensor(x.view([6, 4]), [6, 4], range(24));
  const p = x.permute([2, 0, 1]);
  const expected: number[] = [];
  for (let k = 0; k < 4; k++) for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) expected.push(i * 12 + j * 4 + k);
  assertTensor(p, [4, 2, 3], expected);
  assertEquals(p.isContiguous, false);
  assertEquals(p.contiguous().isContiguous, true);
  assertTensor(p.contiguous(), [4, 2, 3], expected);
  const t = x.transpose(0, 2);
  const expectedT: number[] = [];
  for (let k = 0; k < 4; k++) {
    for (let j = 0; j < 3; j++) for (let i = 0; i < 2; i++) expectedT.push(i * 12 + j * 4 + k);
  }
  assertTensor(t, [4, 3, 2], expectedT);
  assertTorchError(() => t.view([24]), ["view"]); // non-contiguous view is an error, reshape copies
  assertTensor(t.reshape([24]), [24], expectedT);
});

test("views: slice with step and negative indices, select, narrow", () => {
  const x = grid();
  // x[:, :, 1::2]
  assertTensor(x.slice(2, 1, undefined, 2), [2, 3, 2], [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23]);
  // x[0, -2:] and x[0, :, -3:-1]
  const x0 = x.select(0, 0);
  assertTensor(x0.slice(0, -2), [2, 4], [4, 5, 6, 7, 8, 9, 10, 11]);
  assertTensor(x0.slice(1, -3, -1), [3, 2], [1, 2, 5, 6, 9, 10]);
  // an end past the size is clamped, as in Python
  assertTensor(x0.slice(0, 1, 100), [2, 4], [4, 5, 6, 7, 8, 9, 10, 11]);
  assertTensor(x0.slice(1, 0, 4, 3), [3, 2], [0, 3, 4, 7, 8, 11]);
  // x[:, -1, :]
  assertTensor(x.select(1, -1), [2, 4], [8, 9, 10, 11, 20, 21, 22, 23]);
  assertTensor(x.select(2, 3), [2, 3], [3, 7, 11, 15, 19, 23]);
  assertTensor(x.narrow(2, 1, 2), [2, 3, 2], [1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22]);
  assertTorchError(() => x.select(0, 2), ["select"]);
  assertTorchError(() => x.slice(0, 0, 2, 0), ["slice"]);
});

test("views: a slice shares storage with its base", () => {
  const base = f32([1, 2, 3, 4]);
  base.slice(0, 1, 3).mul_(10);
  assertTensor(base, [4], [1, 20, 30, 4]);
  base.select(0, 0).fill_(-1);
  assertTensor(base, [4], [-1, 20, 30, 4]);
  const copy = base.clone();
  copy.zero_();
  assertTensor(base, [4], [-1, 20, 30, 4]);
});

test("views: squeeze, unsqueeze, flatten", () => {
  const x = f32([1, 2, 3], [1, 3, 1]);
  assertEquals(x.squeeze(0).shape, [3, 1]);
  assertEquals(x.squeeze(-1).shape, [1, 3]);
  assertEquals(x.squeeze(1).shape, [1, 3, 1]); // size 3: unchanged, as torch
  assertEquals(x.unsqueeze(0).shape, [1, 1, 3, 1]);
  assertEquals(x.unsqueeze(-1).shape, [1, 3, 1, 1]);
  assertTensor(x.unsqueeze(2).squeeze(0), [3, 1, 1], [1, 2, 3]);
  const g = grid();
  assertTensor(g.flatten(), [24], range(24));
  assertTensor(g.flatten(1), [2, 12], range(24));
  assertTensor(g.flatten(0, 1), [6, 4], range(24));
});

test("views: expand, repeat, flip", () => {
  const col = f32([1, 2, 3], [3, 1]);
  assertTensor(col.expand([3, 4]), [3, 4], [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]);
  assertTensor(col.expand([2, -1, 2]), [2, 3, 2], [1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3]);
  assertTorchError(() => col.expand([4, 1]), ["expand"]);
  const row = f32([1, 2], [1, 2]);
  assertTensor(row.repeat([2, 2]), [2, 4], [1, 2, 1, 2, 1, 2, 1, 2]);
  assertTensor(f32([1, 2]).repeat([3]), [6], [1, 2, 1, 2, 1, 2]);
  const m = f32([1, 2, 3, 4, 5, 6], [2, 3]);
  assertTensor(m.flip([0]), [2, 3], [4, 5, 6, 1, 2, 3]);
  assertTensor(m.flip([1]), [2, 3], [3, 2, 1, 6, 5, 4]);
  assertTensor(m.flip([0, 1]), [2, 3], [6, 5, 4, 3, 2, 1]);
});

test("views: chunk, split, cat, stack", () => {
  const x = Tensor.arange(0, 7);
  const chunks = x.chunk(3);
  assertEquals(chunks.map((c) => c.toArray()), [[0, 1, 2], [3, 4, 5], [6]]);
  // more chunks than elements: torch returns fewer
  assertEquals(Tensor.arange(0, 2).chunk(4).map((c) => c.toArray()), [[0], [1]]);
  assertEquals(x.split(3).map((c) => c.toArray()), [[0, 1, 2], [3, 4, 5], [6]]);
  assertEquals(x.split(7).map((c) => c.toArray()), [[0, 1, 2, 3, 4, 5, 6]]);
  const m = Tensor.arange(0, 6).reshape([2, 3]);
  const cols = m.chunk(3, 1);
  assertEquals(cols.length, 3);
  assertTensor(cols[1], [2, 1], [1, 4]);
  const a = f32([1, 2], [1, 2]), b = f32([3, 4, 5, 6], [2, 2]);
  assertTensor(cat([a, b]), [3, 2], [1, 2, 3, 4, 5, 6]);
  assertTensor(cat([b, b], 1), [2, 4], [3, 4, 3, 4, 5, 6, 5, 6]);
  assertTensor(cat([a, b], -2), [3, 2], [1, 2, 3, 4, 5, 6]);
  const u = f32([1, 2]), v = f32([3, 4]);
  assertTensor(stack([u, v]), [2, 2], [1, 2, 3, 4]);
  assertTensor(stack([u, v], 1), [2, 2], [1, 3, 2, 4]);
  assertTorchError(() => cat([a, f32([1, 2, 3], [1, 3])]), ["cat", "[1, 2]", "[1, 3]"]);
});

// ---- indexing ----------------------------------------------------------------------------------------------------

test("indexing: gather, scatter, scatterAdd, indexSelect", () => {
  const x = f32([1, 2, 3, 4], [2, 2]);
  assertTensor(x.gather(1, i64([0, 0, 1, 0], [2, 2])), [2, 2], [1, 1, 4, 3]);
  assertTensor(x.gather(0, i64([1, 0], [1, 2])), [1, 2], [3, 2]);
  const z = Tensor.zeros([2, 4]);
  assertTensor(z.scatter(1, i64([0, 2, 1, 3], [2, 2]), f32([1, 2, 3, 4], [2, 2])), [2, 4], [1, 0, 2, 0, 0, 3, 0, 4]);
  assertTensor(z, [2, 4], [0, 0, 0, 0, 0, 0, 0, 0]); // out of place
  assertTensor(Tensor.zeros([5]).scatterAdd(0, i64([0, 1, 0, 4]), f32([1, 2, 3, 4])), [5], [4, 2, 0, 0, 4]);
  const m = f32([1, 2, 3, 4, 5, 6], [3, 2]);
  assertTensor(m.indexSelect(0, i64([2, 0, 2])), [3, 2], [5, 6, 1, 2, 5, 6]);
  assertTensor(m.indexSelect(1, i64([1])), [3, 1], [2, 4, 6]);
  assertTorchError(() => m.indexSelect(0, i64([3])), ["index_select"]);
});

test("indexing: maskedFill, where, triu, tril", () => {
  const x = f32([1, 2, 3, 4], [2, 2]);
  const mask = Tensor.fromArray([true, false, false, true], [2, 2]);
  assertTensor(x.maskedFill(mask, -Infinity), [2, 2], [-Infinity, 2, 3, -Infinity]);
  // a broadcast mask over rows
  assertTensor(x.maskedFill(Tensor.fromArray([false, true], [1, 2]), 0), [2, 2], [1, 0, 3, 0]);
  assertTensor(where(mask, x, f32([-1])), [2, 2], [1, -1, -1, 4]);
  assertTensor(where(x.gt(2), x, x.neg()), [2, 2], [-1, -2, 3, 4]);
  const ones = Tensor.ones([3, 3]);
  assertTensor(ones.triu(), [3, 3], [1, 1, 1, 0, 1, 1, 0, 0, 1]);
  assertTensor(ones.triu(1), [3, 3], [0, 1, 1, 0, 0, 1, 0, 0, 0]);
  assertTensor(ones.tril(), [3, 3], [1, 0, 0, 1, 1, 0, 1, 1, 1]);
  assertTensor(ones.tril(-1), [3, 3], [0, 0, 0, 1, 0, 0, 1, 1, 0]);
});

// ---- elementwise -------------------------------------------------------------------------------------------------

test("elementwise: unary ops against Math", () => {
  const values = [-2.5, -0.5, 0.25, 1, 2.5];
  const x = f64(values);
  const cases: [string, Tensor, (v: number) => number][] = [
    ["neg", x.neg(), (v) => -v],
    ["exp", x.exp(), Math.exp],
    ["abs", x.abs(), Math.abs],
    ["sin", x.sin(), Math.sin],
    ["cos", x.cos(), Math.cos],
    ["tanh", x.tanh(), Math.tanh],
    ["sigmoid", x.sigmoid(), (v) => 1 / (1 + Math.exp(-v))],
    ["relu", x.relu(), (v) => Math.max(v, 0)],
    ["erf", x.erf(), erf],
    ["reciprocal", x.reciprocal(), (v) => 1 / v],
    ["sign", x.sign(), Math.sign],
    ["floor", x.floor(), Math.floor],
    ["ceil", x.ceil(), Math.ceil],
    ["trunc", x.trunc(), Math.trunc],
    ["square", x.square(), (v) => v * v],
    ["expm1", x.expm1(), Math.expm1],
    ["silu", x.silu(), (v) => v / (1 + Math.exp(-v))],
  ];
  for (const [name, t, fn] of cases) {
    assertEquals(t.dtype, "float64", name);
    assertClose(t.toArray(), values.map(fn), { atol: 1e-14, rtol: 1e-13, message: name });
  }
  const p = f64([0.25, 1, 4]);
  assertClose(p.log().toArray(), [Math.log(0.25), 0, Math.log(4)], { atol: 1e-15, message: "log" });
  assertClose(p.sqrt().toArray(), [0.5, 1, 2], { atol: 0, message: "sqrt" });
  assertClose(p.rsqrt().toArray(), [2, 1, 0.5], { atol: 1e-15, message: "rsqrt" });
  assertClose(p.log1p().toArray(), [Math.log1p(0.25), Math.log1p(1), Math.log1p(4)], { atol: 1e-15, message: "log1p" });
  // erfinv(0.5) and round-half-to-even, as torch.
  assertClose(f64([0.5, -0.5, 0]).erfinv().toArray(), [0.4769362762044699, -0.4769362762044699, 0], { atol: 1e-15 });
  assertTensor(f64([0.5, 1.5, 2.5, -0.5, -1.7]).round(), [5], [0, 2, 2, -0, -2]);
  assertTensor(f32([NaN, Infinity, 1]).isnan(), [3], [1, 0, 0], { dtype: "bool" });
  assertTensor(f32([NaN, Infinity, 1]).isfinite(), [3], [0, 0, 1], { dtype: "bool" });
  assertTensor(Tensor.fromArray([true, false]).logicalNot(), [2], [0, 1], { dtype: "bool" });
  assertClose(f64([0.5, 1]).log().toArray(), [Math.log(0.5), 0], { atol: 1e-15 });
  assertTensor(f64([-1]).sqrt().isnan(), [1], [1]);
});

test("elementwise: binary tensor ops with broadcasting", () => {
  const a = f64([1, 2, 3, 4, 5, 6], [2, 3]);
  const row = f64([10, 20, 30]);
  const col = f64([2, -1], [2, 1]);
  assertTensor(a.add(row), [2, 3], [11, 22, 33, 14, 25, 36]);
  assertTensor(a.sub(col), [2, 3], [-1, 0, 1, 5, 6, 7]);
  assertTensor(a.mul(col), [2, 3], [2, 4, 6, -4, -5, -6]);
  assertTensor(a.div(col), [2, 3], [0.5, 1, 1.5, -4, -5, -6]);
  assertTensor(col.pow(a), [2, 3], [2, 4, 8, 1, -1, 1]);
  assertTensor(row.add(col), [2, 3], [12, 22, 32, 9, 19, 29]); // [3] + [2,1] -> [2,3]
  assertTensor(a.add(row, 0.5), [2, 3], [6, 12, 18, 9, 15, 21]); // alpha
  assertTensor(a.maximum(f64([3])), [2, 3], [3, 3, 3, 4, 5, 6]);
  assertTensor(a.minimum(f64([3])), [2, 3], [1, 2, 3, 3, 3, 3]);
  // remainder follows the divisor's sign and floorDivide rounds down, as Python
  assertTensor(f64([-7, 7, -7]).remainder(f64([2, -2, -2])), [3], [1, -1, -1]);
  assertTensor(f64([-7, 7, -7]).floorDivide(f64([2, -2, -2])), [3], [-4, -4, 3]);
  assertClose(f64([1, -1]).atan2(f64([-1, -1])).toArray(), [Math.atan2(1, -1), Math.atan2(-1, -1)], { atol: 1e-15 });
  assertTorchError(() => a.add(f64([1, 2])), ["add", "[2, 3]", "[2]"]);
});

test("elementwise: comparisons and logical ops give bool", () => {
  const a = f32([1, 2, 3]), b = f32([3, 2, 1]);
  assertTensor(a.eq(b), [3], [0, 1, 0], { dtype: "bool" });
  assertTensor(a.ne(b), [3], [1, 0, 1], { dtype: "bool" });
  assertTensor(a.lt(b), [3], [1, 0, 0], { dtype: "bool" });
  assertTensor(a.le(b), [3], [1, 1, 0], { dtype: "bool" });
  assertTensor(a.gt(b), [3], [0, 0, 1], { dtype: "bool" });
  assertTensor(a.ge(b), [3], [0, 1, 1], { dtype: "bool" });
  assertTensor(a.gt(1.5), [3], [0, 1, 1], { dtype: "bool" });
  assertTensor(a.eq(2), [3], [0, 1, 0], { dtype: "bool" });
  assertTensor(a.le(f32([2], [1, 1])), [1, 3], [1, 1, 0], { dtype: "bool" });
  const p = Tensor.fromArray([true, true, false, false]), q = Tensor.fromArray([true, false, true, false]);
  assertTensor(p.logicalAnd(q), [4], [1, 0, 0, 0], { dtype: "bool" });
  assertTensor(p.logicalOr(q), [4], [1, 1, 1, 0], { dtype: "bool" });
});

test("elementwise: scalar and reversed-scalar forms keep dtypes as Python does", () => {
  const x = f32([1, 2, 4]);
  assertTensor(x.add(2), [3], [3, 4, 6], { dtype: "float32" });
  assertTensor(x.sub(1), [3], [0, 1, 3]);
  assertTensor(x.mul(3), [3], [3, 6, 12]);
  assertTensor(x.div(2), [3], [0.5, 1, 2]);
  assertTensor(x.pow(2), [3], [1, 4, 16]);
  assertTensor(x.pow(0.5), [3], [1, Math.fround(Math.SQRT2), 2]);
  assertTensor(x.rsub(1), [3], [0, -1, -3], { dtype: "float32" });
  assertTensor(x.rdiv(2), [3], [2, 1, 0.5], { dtype: "float32" });
  assertTensor(x.rpow(2), [3], [2, 4, 16], { dtype: "float32" });
  assertTensor(x.maximum(2), [3], [2, 2, 4], { dtype: "float32" });
  assertTensor(x.remainder(3), [3], [1, 2, 1]);
  // integer tensors: an integral scalar keeps int64, a fractional one promotes to the default float dtype
  const n = i64([1, 2, 7]);
  assertTensor(n.add(1), [3], [2, 3, 8], { dtype: "int64" });
  assertTensor(n.mul(2), [3], [2, 4, 14], { dtype: "int64" });
  assertTensor(n.add(0.5), [3], [1.5, 2.5, 7.5], { dtype: "float32" });
  assertTensor(n.floorDivide(2), [3], [0, 1, 3], { dtype: "int64" });
  assertTensor(n.div(2), [3], [0.5, 1, 3.5], { dtype: "float32" }); // true division
  assertTensor(n.rsub(10), [3], [9, 8, 3], { dtype: "int64" });
  // a float32 tensor with a float64 scalar stays float32 (scalars do not promote)
  assertEquals(x.mul(1e-3).dtype, "float32");
  assertEquals(Tensor.ones([1], { dtype: "bfloat16" }).mul(0.1).dtype, "bfloat16");
});

test("elementwise: clamp, lerp, gelu exact vs tanh", () => {
  const x = f32([-2, -0.5, 0.5, 2]);
  assertTensor(x.clamp(-1, 1), [4], [-1, -0.5, 0.5, 1]);
  assertTensor(x.clamp(0), [4], [0, 0, 0.5, 2]);
  assertTensor(x.clamp(undefined, 0), [4], [-2, -0.5, 0, 0]);
  assertTensor(x.clamp(), [4], [-2, -0.5, 0.5, 2]);
  assertTensor(i64([-3, 5]).clamp(0, 4), [2], [0, 4], { dtype: "int64" });
  assertTensor(x.lerp(f32([2, 2, 2, 2]), 0.25), [4], [-1, 0.125, 0.875, 2]);
  const values = Array.from({ length: 13 }, (_, i) => -3 + i * 0.5);
  const v = f64(values);
  const exact = values.map((u) => 0.5 * u * (1 + erf(u / Math.SQRT2)));
  const approx = values.map((u) => 0.5 * u * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (u + 0.044715 * u ** 3))));
  assertClose(v.gelu().toArray(), exact, { atol: 1e-14, message: "gelu exact" });
  assertClose(v.gelu("tanh").toArray(), approx, { atol: 1e-14, message: "gelu tanh" });
  // The two forms differ by more than the tolerance somewhere, so the checks above can tell them apart.
  assert(Math.max(...exact.map((e, i) => Math.abs(e - approx[i]))) > 1e-4, "gelu forms should differ");
});

test("in place: add_ with alpha, sub_, mul_, div_, lerp_, addcmul_, addcdiv_, clamp_, fill_, copy_", () => {
  const t = f64([1, 2, 3]);
  const same = t.add_(f64([10, 20, 30]), 0.5);
  assert(same === t, "in-place ops return this");
  assertTensor(t, [3], [6, 12, 18]);
  t.add_(1);
  assertTensor(t, [3], [7, 13, 19]);
  t.add_(2, 3); // scalar with alpha: 2 * 3
  assertTensor(t, [3], [13, 19, 25]);
  t.sub_(3).mul_(f64([1, 0.5, 2])).div_(2);
  assertTensor(t, [3], [5, 4, 22]);
  t.lerp_(f64([9, 8, 2]), 0.25); // t + 0.25 * (end - t)
  assertTensor(t, [3], [6, 5, 17]);
  t.addcmul_(f64([1, 2, 3]), f64([2, 2, 2]), 2); // t + 2 * a * b
  assertTensor(t, [3], [10, 13, 29]);
  t.addcdiv_(f64([1, 4, 9]), f64([2, 2, 3]), 0.5); // t + 0.5 * a / b
  assertTensor(t, [3], [10.25, 14, 30.5]);
  t.clamp_(11, 30);
  assertTensor(t, [3], [11, 14, 30]);
  t.apply_("neg");
  assertTensor(t, [3], [-11, -14, -30]);
  t.apply_("abs").apply_("reciprocal");
  assertClose(t.toArray(), [1 / 11, 1 / 14, 1 / 30], { atol: 1e-16 });
  t.fill_(4).apply_("sqrt");
  assertTensor(t, [3], [2, 2, 2]);
  t.copy_(f64([7])); // broadcasting copy
  assertTensor(t, [3], [7, 7, 7]);
  t.zero_();
  assertTensor(t, [3], [0, 0, 0]);
  // an in-place op cannot change the dtype or shape of its target
  assertTorchError(() => f64([1, 2]).add_(f64([1, 2, 3])), ["add_"]);
  assertTorchError(() => i64([1]).mul_(f32([0.5])), ["mul_"]);
});

// ---- reductions --------------------------------------------------------------------------------------------------

test("reductions: sum and mean over dims with keepdim", () => {
  const x = f64([1, 2, 3, 4, 5, 6], [2, 3]);
  assertTensor(x.sum(), [], [21]);
  assertTensor(x.sum(0), [3], [5, 7, 9]);
  assertTensor(x.sum(1, true), [2, 1], [6, 15]);
  assertTensor(x.sum([0, 1]), [], [21]);
  assertTensor(x.sum(-1), [2], [6, 15]);
  assertTensor(x.mean(), [], [3.5]);
  assertTensor(x.mean(1), [2], [2, 5]);
  assertTensor(x.mean(0, true), [1, 3], [2.5, 3.5, 4.5]);
  assertTensor(x.sum(undefined, true), [1, 1], [21]);
  assertTensor(i64([1, 2, 3]).sum(), [], [6], { dtype: "int64" });
});

test("reductions: var and std, unbiased (correction 1) vs population (correction 0)", () => {
  const x = f64([1, 2, 3, 4, 5, 6], [2, 3]);
  // Each row has mean m and squared deviations 1 + 0 + 1 = 2.
  assertTensor(x.var(1), [2], [1, 1]);
  assertClose(x.var(1, { correction: 0 }).toArray(), [2 / 3, 2 / 3], { atol: 1e-15 });
  assertEquals(x.var(1, { keepdim: true }).shape, [2, 1]);
  // over everything: mean 3.5, sum of squared deviations 17.5
  assertClose(x.var().item(), 17.5 / 5, { atol: 1e-15, message: "unbiased" });
  assertClose(x.var(undefined, { correction: 0 }).item(), 17.5 / 6, { atol: 1e-15, message: "population" });
  assertClose(x.std().item(), Math.sqrt(3.5), { atol: 1e-15 });
  assertClose(x.std(0, { correction: 0 }).toArray(), [1.5, 1.5, 1.5], { atol: 1e-15 });
  assertClose(x.std(0).toArray(), [Math.SQRT2 * 1.5, Math.SQRT2 * 1.5, Math.SQRT2 * 1.5], { atol: 1e-14 });
  assertClose(x.var([0, 1], { keepdim: true }).toArray(), [3.5], { atol: 1e-15 });
  assertEquals(x.var([0, 1], { keepdim: true }).shape, [1, 1]);
});

test("reductions: norm, amax, amin, logsumexp, prod, cumsum", () => {
  const x = f64([1, -2, 3, -4, 5, 6], [2, 3]);
  assertClose(x.norm().item(), Math.sqrt(91), { atol: 1e-14 });
  assertTensor(x.norm(1, 1), [2], [6, 15]);
  assertClose(x.norm(2, 1, true).toArray(), [Math.sqrt(14), Math.sqrt(77)], { atol: 1e-14 });
  assertEquals(x.norm(2, 1, true).shape, [2, 1]);
  assertTensor(x.norm(Infinity), [], [6]);
  assertTensor(x.amax(1), [2], [3, 6]);
  assertTensor(x.amin(0), [3], [-4, -2, 3]);
  assertTensor(x.amax(), [], [6]);
  assertTensor(x.amin([0, 1], true), [1, 1], [-4]);
  const lse = (v: number[]) => Math.log(v.reduce((s, u) => s + Math.exp(u), 0));
  assertClose(x.logsumexp(1).toArray(), [lse([1, -2, 3]), lse([-4, 5, 6])], { atol: 1e-14 });
  assertClose(x.logsumexp([0, 1]).item(), lse([1, -2, 3, -4, 5, 6]), { atol: 1e-14 });
  // stable for large inputs
  assertClose(f64([1000, 1000]).logsumexp(0).item(), 1000 + Math.LN2, { atol: 1e-12 });
  assertTensor(x.prod(1), [2], [-6, -120]);
  assertTensor(x.prod(0, true), [1, 3], [-4, -10, 18]);
  assertTensor(x.cumsum(1), [2, 3], [1, -1, 2, -4, 1, 7]);
  assertTensor(x.cumsum(0), [2, 3], [1, -2, 3, -3, 3, 9]);
});

test("reductions: argmax, argmin, max with indices, all, any", () => {
  const x = f32([1, 9, 3, 4, 5, 6], [2, 3]);
  assertTensor(x.argmax(1), [2], [1, 2], { dtype: "int64" });
  assertTensor(x.argmax(0, true), [1, 3], [1, 0, 1]);
  assertTensor(x.argmax(), [], [1]);
  assertTensor(x.argmin(), [], [0]);
  assertTensor(x.argmin(1), [2], [0, 0]);
  const { values, indices } = x.max(1);
  assertTensor(values, [2], [9, 6], { dtype: "float32" });
  assertTensor(indices, [2], [1, 2], { dtype: "int64" });
  const kept = x.max(0, true);
  assertTensor(kept.values, [1, 3], [4, 9, 6]);
  assertTensor(kept.indices, [1, 3], [1, 0, 1]);
  assertTensor(Tensor.fromArray([true, true]).all(), [], [1], { dtype: "bool" });
  assertTensor(Tensor.fromArray([true, false]).all(), [], [0]);
  assertTensor(Tensor.fromArray([false, false]).any(), [], [0]);
  assertTensor(Tensor.fromArray([false, true]).any(), [], [1]);
  assertTensor(x.gt(8).any(), [], [1]);
});

test("reductions: sort descending and stable, argsort, topk", () => {
  const x = f32([3, 1, 2, 1]);
  const desc = x.sort(-1, { descending: true });
  assertTensor(desc.values, [4], [3, 2, 1, 1]);
  assertEquals(desc.indices.toArray().slice(0, 2), [0, 2]);
  // ties keep their input order with stable=true, in both directions
  const ties = f32([2, 1, 2, 1, 2]);
  assertTensor(ties.sort(0, { stable: true }).indices, [5], [1, 3, 0, 2, 4]);
  assertTensor(ties.sort(0, { stable: true, descending: true }).indices, [5], [0, 2, 4, 1, 3]);
  assertTensor(ties.argsort(0, { stable: true }), [5], [1, 3, 0, 2, 4], { dtype: "int64" });
  assertTensor(ties.argsort(0, { stable: true, descending: true }), [5], [0, 2, 4, 1, 3]);
  const m = f32([3, 1, 2, 0, 5, 4], [2, 3]);
  assertTensor(m.sort(1).values, [2, 3], [1, 2, 3, 0, 4, 5]);
  assertTensor(m.sort(0).indices, [2, 3], [1, 0, 0, 0, 1, 1]);
  const top = f32([1, 5, 3, 4]).topk(2);
  assertTensor(top.values, [2], [5, 4]);
  assertTensor(top.indices, [2], [1, 3]);
  const bottom = f32([1, 5, 3, 4]).topk(2, -1, { largest: false });
  assertTensor(bottom.values, [2], [1, 3]);
  assertTensor(bottom.indices, [2], [0, 2]);
  const rows = m.topk(1, 1);
  assertTensor(rows.values, [2, 1], [3, 5]);
  assertTensor(rows.indices, [2, 1], [0, 1]);
  assertTorchError(() => f32([1, 2]).topk(3), ["topk"]);
});

test("reductions: allclose", () => {
  const a = f32([1, 2, 3]);
  assertEquals(a.allclose(f32([1, 2, 3.000001])), true);
  assertEquals(a.allclose(f32([1, 2, 3.1])), false);
  assertEquals(a.allclose(f32([1, 2, 3.1]), 0, 0.2), true);
  assertTorchError(() => a.allclose(f32([1, 2])), ["allclose", "[3]", "[2]"]);
});

// ---- linear algebra and nn functions -----------------------------------------------------------------------------

test("linalg: matmul (2-D, batched broadcast, vector), bmm, linear", () => {
  const a = f64([1, 2, 3, 4, 5, 6], [2, 3]);
  const b = f64([7, 8, 9, 10, 11, 12], [3, 2]);
  assertTensor(a.matmul(b), [2, 2], [58, 64, 139, 154]);
  assertTensor(f64([1, 0, -1]).matmul(b), [2], [-4, -4]);
  const batch = stack([a, a.neg()]); // [2, 2, 3]
  assertTensor(batch.matmul(b), [2, 2, 2], [58, 64, 139, 154, -58, -64, -139, -154]);
  assertTensor(batch.bmm(stack([b, b])), [2, 2, 2], [58, 64, 139, 154, -58, -64, -139, -154]);
  assertTorchError(() => a.bmm(b), ["bmm"]);
  const w = f64([1, 0, 0, 1, 1, 1], [3, 2]);
  const bias = f64([0.5, 0, -1]);
  assertTensor(F.linear(f64([1, 2], [1, 2]), w, bias), [1, 3], [1.5, 2, 2]);
  assertTensor(F.linear(f64([1, 2, 3, 4], [2, 1, 2]), w), [2, 1, 3], [1, 2, 3, 3, 4, 7]);
});

/** Direct convolution: x [N,C,H,W], w [O,C/g,kh,kw]. */
function conv2dRef(
  x: number[],
  xs: number[],
  w: number[],
  ws: number[],
  bias: number[] | null,
  stride: number,
  pad: number,
  groups: number,
): { values: number[]; shape: number[] } {
  const [n, c, h, wd] = xs, [o, cg, kh, kw] = ws;
  const oh = Math.floor((h + 2 * pad - kh) / stride) + 1, ow = Math.floor((wd + 2 * pad - kw) / stride) + 1;
  const values: number[] = [];
  const og = o / groups;
  for (let b = 0; b < n; b++) {
    for (let oc = 0; oc < o; oc++) {
      const g = Math.floor(oc / og);
      for (let i = 0; i < oh; i++) {
        for (let j = 0; j < ow; j++) {
          let s = bias ? bias[oc] : 0;
          for (let ci = 0; ci < cg; ci++) {
            for (let u = 0; u < kh; u++) {
              for (let v = 0; v < kw; v++) {
                const y = i * stride - pad + u, z = j * stride - pad + v;
                if (y < 0 || y >= h || z < 0 || z >= wd) continue;
                s += x[((b * c + g * cg + ci) * h + y) * wd + z] * w[((oc * cg + ci) * kh + u) * kw + v];
              }
            }
          }
          values.push(s);
        }
      }
    }
  }
  return { values, shape: [n, o, oh, ow] };
}

test("nn: conv2d by hand and against a direct loop (stride, padding, groups, bias)", () => {
  // 3x3 input 1..9 with the kernel [[1,2],[3,4]]: out[0][0] = 1*1 + 2*2 + 3*4 + 4*5 = 37, and so on.
  const x = f64(range(9).map((i) => i + 1), [1, 1, 3, 3]);
  const w = f64([1, 2, 3, 4], [1, 1, 2, 2]);
  assertTensor(F.conv2d(x, w), [1, 1, 2, 2], [37, 47, 67, 77]);
  assertTensor(F.conv2d(x, w, f64([-7])), [1, 1, 2, 2], [30, 40, 60, 70]);
  // padding 1, stride 2: out[0][0] = 4*1, out[0][1] = 3*2 + 4*3, out[1][0] = 2*4 + 4*7, out[1][1] = 5 + 12 + 24 + 36
  assertTensor(F.conv2d(x, w, null, { stride: 2, padding: 1 }), [1, 1, 2, 2], [4, 18, 36, 77]);
  const xs = [2, 4, 5, 6], wsh = [6, 2, 3, 2];
  const xv = uniformValues(2 * 4 * 5 * 6, 1), wv = uniformValues(6 * 2 * 3 * 2, 2), bv = uniformValues(6, 3);
  const ref = conv2dRef(xv, xs, wv, wsh, bv, 2, 1, 2);
  const out = F.conv2d(f64(xv, xs), f64(wv, wsh), f64(bv), { stride: 2, padding: 1, groups: 2 });
  assertTensor(out, ref.shape, ref.values, { atol: 1e-13 });
  // the patch embedding form: kernel == stride, no padding
  const pe = conv2dRef(xv, xs, uniformValues(3 * 4 * 2 * 2, 4), [3, 4, 2, 2], null, 2, 0, 1);
  const peOut = F.conv2d(f64(xv, xs), f64(uniformValues(3 * 4 * 2 * 2, 4), [3, 4, 2, 2]), null, { stride: 2 });
  assertTensor(peOut, pe.shape, pe.values, { atol: 1e-13 });
  assertTorchError(() => F.conv2d(f64([1, 2, 3, 4], [1, 1, 2, 2]), f64(range(9), [1, 1, 3, 3])), ["conv2d"]);
});

test("nn: embedding", () => {
  const w = f32([0, 1, 2, 3, 4, 5, 6, 7], [4, 2]);
  assertTensor(F.embedding(w, i64([3, 0, 1, 1], [2, 2])), [2, 2, 2], [6, 7, 0, 1, 2, 3, 2, 3]);
  assertTensor(F.embedding(w, i64([2])), [1, 2], [4, 5]);
  assertTorchError(() => F.embedding(w, i64([4])), ["embedding"]);
});

test("nn: softmax and logSoftmax, with the dtype argument", () => {
  const rows = [[1, 2, 3], [-1, 0, 5]];
  const x = f64(rows.flat(), [2, 3]);
  const soft = (r: number[]) => {
    const m = Math.max(...r), e = r.map((v) => Math.exp(v - m)), s = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / s);
  };
  assertClose(F.softmax(x, -1).toArray(), rows.flatMap(soft), { atol: 1e-15 });
  assertClose(F.logSoftmax(x, 1).toArray(), rows.flatMap((r) => soft(r).map(Math.log)), { atol: 1e-14 });
  const cols = [[1, -1], [2, 0], [3, 5]].map(soft); // softmax over dim 0
  assertClose(F.softmax(x, 0).toArray(), [0, 1].flatMap((i) => cols.map((c) => c[i])), { atol: 1e-15 });
  // large logits stay finite
  assertClose(F.softmax(f32([1000, 1001]), 0).toArray(), [1 / (1 + Math.E), Math.E / (1 + Math.E)], { atol: 1e-6 });
  const asDouble = F.softmax(f32([1, 2, 3]), 0, "float64");
  assertEquals(asDouble.dtype, "float64");
  assertClose(asDouble.toArray(), soft([1, 2, 3]), { atol: 1e-15 });
  assertEquals(F.logSoftmax(Tensor.fromArray([1, 2], [2], { dtype: "bfloat16" }), 0, "float32").dtype, "float32");
  assertEquals(F.softmax(f32([1, 2]), 0).dtype, "float32");
});

test("nn: layerNorm with weight, bias and eps", () => {
  const x = f64([1, 2, 3, 4, -1, 0, 0, 5], [2, 4]);
  const w = f64([1, 2, 3, 4]), b = f64([0, 0, 0, 1]);
  const ref = (eps: number, weight: number[], bias: number[]) =>
    [[1, 2, 3, 4], [-1, 0, 0, 5]].flatMap((r) => {
      const m = r.reduce((s, v) => s + v, 0) / 4;
      const v = r.reduce((s, u) => s + (u - m) ** 2, 0) / 4; // population variance
      return r.map((u, i) => ((u - m) / Math.sqrt(v + eps)) * weight[i] + bias[i]);
    });
  assertClose(F.layerNorm(x, [4], w, b, 1e-5).toArray(), ref(1e-5, [1, 2, 3, 4], [0, 0, 0, 1]), { atol: 1e-14 });
  // a large eps shows that eps sits inside the square root: row 0 has variance 1.25, so the scale is 1/sqrt(2)
  const big = F.layerNorm(x, [4], null, null, 0.75);
  assertClose(big.toArray(), ref(0.75, [1, 1, 1, 1], [0, 0, 0, 0]), { atol: 1e-14 });
  assertClose(big.toArray().slice(0, 4), [-1.5, -0.5, 0.5, 1.5].map((v) => v / Math.SQRT2), { atol: 1e-14 });
  // over the last two dims
  const flat = F.layerNorm(x.reshape([1, 2, 4]), [2, 4], null, null, 0);
  const all = [1, 2, 3, 4, -1, 0, 0, 5], mean = 14 / 8;
  const sd = Math.sqrt(all.reduce((s, v) => s + (v - mean) ** 2, 0) / 8);
  assertClose(flat.toArray(), all.map((v) => (v - mean) / sd), { atol: 1e-14 });
});

test("nn: normalize", () => {
  assertClose(F.normalize(f64([3, 4, 0, 0, 5, 12], [3, 2])).toArray(), [0.6, 0.8, 0, 0, 5 / 13, 12 / 13], {
    atol: 1e-15,
  });
  assertClose(F.normalize(f64([3, 4], [2, 1]), { dim: 0 }).toArray(), [0.6, 0.8], { atol: 1e-15 });
  assertClose(F.normalize(f64([1, -3]), { p: 1 }).toArray(), [0.25, -0.75], { atol: 1e-15 });
  // the eps clamp: a tiny vector is divided by eps, not by its norm
  assertClose(F.normalize(f64([3e-4, 4e-4]), { eps: 1e-2 }).toArray(), [3e-2, 4e-2], { atol: 1e-15 });
});

test("nn: crossEntropy with ignoreIndex, weights, label smoothing and every reduction", () => {
  const rows = [[1, 2, 3], [1, 1, 1], [0, 0, 5], [2, -1, 0.5]];
  const logits = f64(rows.flat(), [4, 3]);
  const lse = (r: number[]) => Math.log(r.reduce((s, v) => s + Math.exp(v), 0));
  const nll = (i: number, t: number) => lse(rows[i]) - rows[i][t];
  const target = i64([2, 0, -100, 1]);
  const none = [nll(0, 2), nll(1, 0), 0, nll(3, 1)];
  assertClose(F.crossEntropy(logits, target, { reduction: "none" }).toArray(), none, { atol: 1e-14 });
  assertClose(F.crossEntropy(logits, target, { reduction: "sum" }).item(), none[0] + none[1] + none[3], {
    atol: 1e-14,
  });
  // mean divides by the number of targets that are not ignored (3, not 4)
  assertClose(F.crossEntropy(logits, target).item(), (none[0] + none[1] + none[3]) / 3, { atol: 1e-14 });
  const custom = F.crossEntropy(logits, i64([2, 0, 1, 1]), { ignoreIndex: 1 });
  assertClose(custom.item(), (nll(0, 2) + nll(1, 0)) / 2, { atol: 1e-14 });
  // class weights: the mean is weighted by the targets' weights
  const wt = [1, 2, 3], t = [2, 0, 2, 1];
  const weighted = F.crossEntropy(logits, i64(t), { weight: f64(wt) });
  const num = t.reduce((s, c, i) => s + wt[c] * nll(i, c), 0), den = t.reduce((s, c) => s + wt[c], 0);
  assertClose(weighted.item(), num / den, { atol: 1e-14 });
  // label smoothing eps: (1 - eps) * nll + eps * mean over classes of -log p
  const eps = 0.2;
  const smooth = t.map((c, i) => (1 - eps) * nll(i, c) + (eps / 3) * [0, 1, 2].reduce((s, k) => s + nll(i, k), 0));
  assertClose(F.crossEntropy(logits, i64(t), { labelSmoothing: eps, reduction: "none" }).toArray(), smooth, {
    atol: 1e-14,
  });
  // smoothing together with an ignored target: the ignored row is 0 and the mean is over the other three
  const withIgnore = F.crossEntropy(logits, i64([2, 0, -100, 1]), { labelSmoothing: eps, reduction: "none" });
  const expectedIgnore = [0, 1, 3].map((i) =>
    (1 - eps) * nll(i, [2, 0, 0, 1][i]) + (eps / 3) * (nll(i, 0) + nll(i, 1) + nll(i, 2))
  );
  assertClose(withIgnore.toArray(), [expectedIgnore[0], expectedIgnore[1], 0, expectedIgnore[2]], { atol: 1e-14 });
  assertClose(
    F.crossEntropy(logits, i64([2, 0, -100, 1]), { labelSmoothing: eps }).item(),
    expectedIgnore.reduce((a, b) => a + b, 0) / 3,
    { atol: 1e-14 },
  );
  assertTorchError(() => F.crossEntropy(logits, i64([0, 1, 3, 0])), ["cross_entropy"]);
});

test("nn: mseLoss with every reduction", () => {
  const a = f64([1, 2, 3]), b = f64([1, 0, 6]);
  assertTensor(F.mseLoss(a, b, "none"), [3], [0, 4, 9]);
  assertTensor(F.mseLoss(a, b, "sum"), [], [13]);
  assertClose(F.mseLoss(a, b).item(), 13 / 3, { atol: 1e-15 });
});

/** PyTorch's upsample_bilinear2d / upsample_bicubic2d on one channel (no antialias). */
function resizeRef(
  src: number[],
  h: number,
  w: number,
  oh: number,
  ow: number,
  mode: "bilinear" | "bicubic",
  alignCorners: boolean,
): number[] {
  const scale = (i: number, o: number) => (alignCorners ? (o > 1 ? (i - 1) / (o - 1) : 0) : i / o);
  const sourceIndex = (s: number, d: number) => {
    if (alignCorners) return s * d;
    const v = s * (d + 0.5) - 0.5;
    return mode === "bilinear" && v < 0 ? 0 : v;
  };
  const at = (y: number, x: number) => src[Math.min(Math.max(y, 0), h - 1) * w + Math.min(Math.max(x, 0), w - 1)];
  const A = -0.75;
  const cc1 = (x: number) => ((A + 2) * x - (A + 3)) * x * x + 1;
  const cc2 = (x: number) => ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  const cubic = (t: number) => [cc2(t + 1), cc1(t), cc1(1 - t), cc2(2 - t)];
  const sh = scale(h, oh), sw = scale(w, ow);
  const out: number[] = [];
  for (let oy = 0; oy < oh; oy++) {
    for (let ox = 0; ox < ow; ox++) {
      const ry = sourceIndex(sh, oy), rx = sourceIndex(sw, ox);
      const y0 = Math.floor(ry), x0 = Math.floor(rx), ty = ry - y0, tx = rx - x0;
      if (mode === "bilinear") {
        const y1 = Math.min(y0 + 1, h - 1), x1 = Math.min(x0 + 1, w - 1);
        out.push(
          (1 - ty) * ((1 - tx) * at(y0, x0) + tx * at(y0, x1)) + ty * ((1 - tx) * at(y1, x0) + tx * at(y1, x1)),
        );
      } else {
        const cy = cubic(ty), cx = cubic(tx);
        let s = 0;
        for (let i = 0; i < 4; i++) {
          let row = 0;
          for (let j = 0; j < 4; j++) row += cx[j] * at(y0 - 1 + i, x0 - 1 + j);
          s += cy[i] * row;
        }
        out.push(s);
      }
    }
  }
  return out;
}

test("nn: interpolate bilinear, by hand and 14x14 -> 7x7 equal to a 2x2 average pool", () => {
  const x = f64([1, 2, 3, 4], [1, 1, 2, 2]);
  assertTensor(F.interpolate(x, [4, 4]), [1, 1, 4, 4], [
    1,
    1.25,
    1.75,
    2,
    1.5,
    1.75,
    2.25,
    2.5,
    2.5,
    2.75,
    3.25,
    3.5,
    3,
    3.25,
    3.75,
    4,
  ]);
  assertTensor(F.interpolate(x, [3, 3], "bilinear", true), [1, 1, 3, 3], [1, 1.5, 2, 2, 2.5, 3, 3, 3.5, 4]);
  assertTensor(F.interpolate(x, [4, 4], "nearest"), [1, 1, 4, 4], [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);
  // The model resizes 14x14 patch grids to 7x7 with bilinear, align_corners=false, and relies on it being a 2x2 mean.
  const values = uniformValues(2 * 3 * 14 * 14, 11);
  const grid14 = f64(values, [2, 3, 14, 14]);
  const down = F.interpolate(grid14, [7, 7]);
  assertEquals(down.shape, [2, 3, 7, 7]);
  assertClose(down.toArray(), F.avgPool2d(grid14, 2).toArray(), { atol: 1e-15 });
  assertClose(F.interpolate(grid14.float(), [7, 7]).toArray(), F.avgPool2d(grid14.float(), 2).toArray(), {
    atol: 1e-6,
  });
  // and a non-integer ratio in both directions against the reference formula
  const odd = uniformValues(5 * 7, 12);
  for (const align of [false, true]) {
    const got = F.interpolate(f64(odd, [1, 1, 5, 7]), [8, 3], "bilinear", align).toArray();
    assertClose(got, resizeRef(odd, 5, 7, 8, 3, "bilinear", align), { atol: 1e-14, message: `align ${align}` });
  }
});

test("nn: interpolate bicubic against the a=-0.75 kernel and torch 1.13", () => {
  const values = uniformValues(6 * 5, 13);
  const input = f64(values, [1, 1, 6, 5]);
  const up = F.interpolate(input, [9, 7], "bicubic").toArray();
  assertClose(up, resizeRef(values, 6, 5, 9, 7, "bicubic", false), { atol: 1e-13, message: "upsample" });
  const alignUp = F.interpolate(input, [9, 7], "bicubic", true).toArray();
  assertClose(alignUp, resizeRef(values, 6, 5, 9, 7, "bicubic", true), { atol: 1e-13, message: "align_corners" });
  const g = uniformValues(14 * 14, 14);
  const down = F.interpolate(f64(g, [1, 1, 14, 14]), [7, 7], "bicubic").toArray();
  assertClose(down, resizeRef(g, 14, 14, 7, 7, "bicubic", false), { atol: 1e-13, message: "downsample" });
  // A cross-check with PyTorch itself where Debian's python3-torch is installed (required in CI).
  if (noTorch) return;
  const python = torchPython(
    "import json,sys,torch\n" +
      "d=json.loads(sys.argv[1])\n" +
      "x=torch.tensor(d,dtype=torch.float64).reshape(1,1,6,5)\n" +
      "y=torch.nn.functional.interpolate(x,size=(9,7),mode='bicubic',align_corners=False)\n" +
      "print(json.dumps(y.flatten().tolist()))",
    JSON.stringify(values),
  );
  assertClose(up, JSON.parse(python), { atol: 1e-13, message: "torch 1.13" });
});

/** Runs a Python snippet (input in sys.argv[1]) with /usr/bin/python3 and torch; returns its stdout. */
function torchPython(code: string, input: string): string {
  const result = new Deno.Command("/usr/bin/python3", { args: ["-c", code, input], stdout: "piped", stderr: "piped" })
    .outputSync();
  if (!result.success) throw new Error(`python3 failed: ${new TextDecoder().decode(result.stderr)}`);
  return new TextDecoder().decode(result.stdout);
}
const noTorch = missingTool("python3 with torch", pythonModulesMissing(["torch"]));

test("nn: avgPool2d and oneHot", () => {
  const x = f32(range(16), [1, 1, 4, 4]);
  assertTensor(F.avgPool2d(x, 2), [1, 1, 2, 2], [2.5, 4.5, 10.5, 12.5]);
  const y = f32(range(9).map((i) => i + 1), [1, 1, 3, 3]);
  assertTensor(F.avgPool2d(y, 2, 1), [1, 1, 2, 2], [3, 4, 6, 7]);
  assertTensor(F.avgPool2d(f32(range(12), [1, 1, 3, 4]), [3, 2]), [1, 1, 1, 2], [4.5, 6.5]);
  assertTensor(F.oneHot(i64([0, 2, 1]), 3), [3, 3], [1, 0, 0, 0, 0, 1, 0, 1, 0], { dtype: "int64" });
  assertTensor(F.oneHot(i64([1, 0], [2, 1]), 2), [2, 1, 2], [0, 1, 1, 0]);
  assertTorchError(() => F.oneHot(i64([3]), 3), ["one_hot"]);
});

test("nn: scaledDotProductAttention equals softmax(q k^T * scale + mask) v", () => {
  const [b, h, n, m, d] = [2, 2, 3, 4, 5];
  const qv = uniformValues(b * h * n * d, 21),
    kv = uniformValues(b * h * m * d, 22),
    vv = uniformValues(b * h * m * d, 23);
  // additive mask, broadcast over batch and heads: -inf hides a key, a finite value biases it
  const maskValues = [0, -Infinity, 0, 0.5, 0, 0, -Infinity, -Infinity, -1, 0, 0, 0];
  const reference = (scale: number, mask: number[] | null) => {
    const out: number[] = [];
    for (let bh = 0; bh < b * h; bh++) {
      for (let i = 0; i < n; i++) {
        const scores: number[] = [];
        for (let j = 0; j < m; j++) {
          let s = 0;
          for (let k = 0; k < d; k++) s += qv[(bh * n + i) * d + k] * kv[(bh * m + j) * d + k];
          scores.push(s * scale + (mask ? mask[i * m + j] : 0));
        }
        const mx = Math.max(...scores), e = scores.map((s) => Math.exp(s - mx)), z = e.reduce((x, y) => x + y, 0);
        for (let k = 0; k < d; k++) {
          let s = 0;
          for (let j = 0; j < m; j++) s += (e[j] / z) * vv[(bh * m + j) * d + k];
          out.push(s);
        }
      }
    }
    return out;
  };
  const q = f64(qv, [b, h, n, d]), k = f64(kv, [b, h, m, d]), v = f64(vv, [b, h, m, d]);
  const plain = F.scaledDotProductAttention(q, k, v);
  assertEquals(plain.shape, [b, h, n, d]);
  assertClose(plain.toArray(), reference(1 / Math.sqrt(d), null), { atol: 1e-14, message: "default scale" });
  const masked = F.scaledDotProductAttention(q, k, v, f64(maskValues, [n, m]), 0.3);
  assertClose(masked.toArray(), reference(0.3, maskValues), { atol: 1e-14, message: "mask and scale" });
  // a bool mask means "may attend": the same as the additive mask with -inf where it is false
  const allowed = Tensor.fromArray(maskValues.map((v) => v !== -Infinity), [n, m]);
  const hard = maskValues.map((v) => (v === -Infinity ? -Infinity : 0));
  assertClose(F.scaledDotProductAttention(q, k, v, allowed, 0.3).toArray(), reference(0.3, hard), {
    atol: 1e-14,
    message: "bool mask",
  });
  // the same composition through the ops
  const scores = q.matmul(k.transpose(-2, -1)).mul(0.3).add(f64(maskValues, [n, m]));
  assertClose(masked.toArray(), F.softmax(scores, -1).matmul(v).toArray(), { atol: 1e-14, message: "explicit" });
});

// ---- seeded initialisation ---------------------------------------------------------------------------------------

function stats(t: Tensor): { mean: number; std: number; min: number; max: number } {
  const x = t.toArray();
  const mean = x.reduce((s, v) => s + v, 0) / x.length;
  const std = Math.sqrt(x.reduce((s, v) => s + (v - mean) ** 2, 0) / (x.length - 1));
  let min = Infinity, max = -Infinity;
  for (const v of x) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { mean, std, min, max };
}

test("init: normal_, uniform_, randn and rand statistics", () => {
  manualSeed(1234);
  const n = 200_000;
  const normal = stats(Tensor.zeros([n]).normal_(2, 3));
  assertClose(normal.mean, 2, { atol: 0.03, message: "normal mean" });
  assertClose(normal.std, 3, { atol: 0.03, message: "normal std" });
  const uniform = stats(Tensor.zeros([n]).uniform_(-1, 3));
  assert(uniform.min >= -1 && uniform.max < 3, `uniform_ range [${uniform.min}, ${uniform.max}]`);
  assertClose(uniform.mean, 1, { atol: 0.02, message: "uniform mean" });
  assertClose(uniform.std, 4 / Math.sqrt(12), { atol: 0.02, message: "uniform std" });
  const randn = stats(Tensor.randn([n]));
  assertClose(randn.mean, 0, { atol: 0.01 });
  assertClose(randn.std, 1, { atol: 0.01 });
  const rand = stats(Tensor.rand([n], { dtype: "float64" }));
  assert(rand.min >= 0 && rand.max < 1);
  assertClose(rand.mean, 0.5, { atol: 0.01 });
  const ints = Tensor.randint(3, 7, [1000]).toArray();
  assert(ints.every((v) => v >= 3 && v < 7 && Number.isInteger(v)), "randint range");
  assertEquals(new Set(ints).size, 4);
  assertEquals(Tensor.randperm(50).toArray().sort((a, c) => a - c), range(50));
});

test("init: truncNormal_ respects its bounds and has the truncated normal's std", () => {
  manualSeed(7);
  const n = 200_000;
  // N(0, 1) on [-2, 2]: variance 1 - 2 * 2 * phi(2) / (Phi(2) - Phi(-2))
  const phi2 = Math.exp(-2) / Math.sqrt(2 * Math.PI), mass = erf(2 / Math.SQRT2);
  const s = stats(Tensor.zeros([n]).truncNormal_(0, 1, -2, 2));
  assert(s.min >= -2 && s.max <= 2, `bounds [${s.min}, ${s.max}]`);
  assert(s.min < -1.95 && s.max > 1.95, "the samples reach close to the bounds");
  assertClose(s.mean, 0, { atol: 0.01 });
  assertClose(s.std, Math.sqrt(1 - (4 * phi2) / mass), { atol: 0.01, message: "truncated std" });
  // bounds in absolute units, asymmetric around the mean
  const t = stats(Tensor.zeros([n]).truncNormal_(1, 0.5, 0.5, 2));
  assert(t.min >= 0.5 && t.max <= 2, `bounds [${t.min}, ${t.max}]`);
  // timm's ViT init: std 0.02 with the default bounds [-2, 2] is effectively untruncated
  const vit = stats(Tensor.zeros([n]).truncNormal_(0, 0.02));
  assertClose(vit.std, 0.02, { atol: 0.0005 });
});

test("init: xavierUniform_ and kaimingUniform_(sqrt(5)) bounds", () => {
  manualSeed(3);
  // weight [out=64, in=32]: xavier bound gain * sqrt(6 / (fan_in + fan_out)) = 0.25
  const xav = stats(Tensor.empty([64, 32]).xavierUniform_());
  assert(xav.max <= 0.25 && xav.min >= -0.25, `xavier range [${xav.min}, ${xav.max}]`);
  assert(xav.max > 0.24 && xav.min < -0.24, "xavier fills its bound");
  assertClose(xav.std, 0.25 / Math.sqrt(3), { atol: 0.006 });
  const xav2 = stats(Tensor.empty([64, 32]).xavierUniform_(2));
  assert(xav2.max <= 0.5 && xav2.max > 0.48, `xavier gain 2 max ${xav2.max}`);
  // nn.Linear's default: kaiming_uniform_(a = sqrt(5)) has bound 1 / sqrt(fan_in) = 0.1 for fan_in 100
  const kai = stats(Tensor.empty([200, 100]).kaimingUniform_(Math.sqrt(5)));
  assert(kai.max <= 0.1 && kai.min >= -0.1, `kaiming range [${kai.min}, ${kai.max}]`);
  assert(kai.max > 0.099 && kai.min < -0.099, "kaiming fills its bound");
  // a = 0 (relu gain): bound sqrt(6 / fan_in)
  const relu = stats(Tensor.empty([200, 100]).kaimingUniform_());
  assert(relu.max <= Math.sqrt(0.06) && relu.max > 0.99 * Math.sqrt(0.06), `kaiming a=0 max ${relu.max}`);
  // parameters are initialised after requires_grad is set: the init runs under no-grad and keeps them leaves
  const param = Tensor.empty([8, 10]).requiresGrad_();
  param.kaimingUniform_(Math.sqrt(5)).normal_().truncNormal_(0, 0.02).xavierUniform_().uniform_();
  assertEquals(param.requiresGrad, true);
  assertEquals(param.isLeaf, true);
  assert(stats(param).max < 1 && stats(param).min >= 0, "uniform_ on a parameter");
  // a conv weight [out, in, kh, kw] counts fan_in = in * kh * kw = 4 * 5 * 5 = 100
  const conv = stats(Tensor.empty([16, 4, 5, 5]).kaimingUniform_(Math.sqrt(5)));
  assert(conv.max <= 0.1 && conv.max > 0.098, `conv kaiming max ${conv.max}`);
});

test("init: the same seed gives the same values; rngState/setRngState restores a sequence", () => {
  manualSeed(42);
  const a = Tensor.randn([64]).toArray();
  const a2 = Tensor.zeros([16]).normal_().toArray();
  manualSeed(42);
  const b = Tensor.randn([64]).toArray();
  const b2 = Tensor.zeros([16]).normal_().toArray();
  assertEquals(b, a);
  assertEquals(b2, a2);
  manualSeed(43);
  const c = Tensor.randn([64]).toArray();
  assert(c.some((v, i) => v !== a[i]), "another seed gives other values");
  const state = rngState();
  assertEquals(state.dtype, "uint8");
  const first = [Tensor.rand([8]).toArray(), Tensor.randn([8]).toArray(), Tensor.randperm(10).toArray()];
  setRngState(state);
  const again = [Tensor.rand([8]).toArray(), Tensor.randn([8]).toArray(), Tensor.randperm(10).toArray()];
  assertEquals(again, first);
  assertTorchError(() => setRngState(f32([1, 2])), ["rng_set_state"]);
});

// ---- optimizer primitives ----------------------------------------------------------------------------------------

test("optim: adamwStep_ matches torch.optim.AdamW arithmetic over 3 steps", () => {
  const hyper = { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-2, weightDecay: 0.2 };
  const init = [[0.5, -1, 2], [1, 2, 3, 4]];
  const shapes = [[3], [2, 2]];
  const grads = [
    [[0.1, -0.2, 0.3], [0.01, 0.02, -0.5, 1]],
    [[-0.3, 0.1, 0.0], [0.2, -0.02, 0.5, 2]],
    [[0.05, 0.05, -1], [0, 0.1, 0.1, -3]],
  ];
  const params = init.map((v, i) => f64(v, shapes[i]).requiresGrad_());
  const m = init.map((_, i) => Tensor.zeros(shapes[i], { dtype: "float64" }));
  const vsq = init.map((_, i) => Tensor.zeros(shapes[i], { dtype: "float64" }));
  // a third parameter without a gradient must be left alone, moments included
  const frozen = f64([9, 9]);
  const frozenM = f64([1, 1]), frozenV = f64([2, 2]);
  // the JS reference: decoupled decay, bias-corrected moments, eps added after the square root
  const p = init.map((v) => v.slice()), mj = init.map((v) => v.map(() => 0)), vj = init.map((v) => v.map(() => 0));
  for (let step = 1; step <= 3; step++) {
    params.forEach((t, i) => t.setGrad(f64(grads[step - 1][i], shapes[i])));
    adamwStep_([...params, frozen], [...m, frozenM], [...vsq, frozenV], hyper, step);
    const bc1 = 1 - hyper.beta1 ** step, bc2 = 1 - hyper.beta2 ** step;
    for (let i = 0; i < p.length; i++) {
      for (let j = 0; j < p[i].length; j++) {
        const g = grads[step - 1][i][j];
        p[i][j] *= 1 - hyper.lr * hyper.weightDecay;
        mj[i][j] = hyper.beta1 * mj[i][j] + (1 - hyper.beta1) * g;
        vj[i][j] = hyper.beta2 * vj[i][j] + (1 - hyper.beta2) * g * g;
        const denom = Math.sqrt(vj[i][j]) / Math.sqrt(bc2) + hyper.eps;
        p[i][j] -= (hyper.lr / bc1) * mj[i][j] / denom;
      }
    }
    for (let i = 0; i < p.length; i++) {
      assertClose(params[i].toArray(), p[i], { atol: 1e-14, rtol: 1e-12, message: `step ${step} param ${i}` });
      assertClose(m[i].toArray(), mj[i], { atol: 1e-15, rtol: 1e-12, message: `step ${step} exp_avg ${i}` });
      assertClose(vsq[i].toArray(), vj[i], { atol: 1e-15, rtol: 1e-12, message: `step ${step} exp_avg_sq ${i}` });
    }
  }
  assertTensor(frozen, [2], [9, 9]);
  assertTensor(frozenM, [2], [1, 1]);
  assertTensor(frozenV, [2], [2, 2]);
  assertEquals(params[0].requiresGrad, true);
  assertTorchError(() => adamwStep_(params, m, vsq, hyper, 0), ["adamw_step_", "step"]);
  assertThrows(() => adamwStep_(params, m.slice(1), vsq, hyper, 1), RangeError, ["adamw_step_"]);
});

test("optim: emaUpdate_ and the foreach ops", () => {
  const teacher = [f64([1, 2]), f64([10])];
  const student = [f64([3, 4]), f64([0])];
  emaUpdate_(teacher, student, 0.9);
  assertClose(teacher[0].toArray(), [1.2, 2.2], { atol: 1e-15 });
  assertClose(teacher[1].toArray(), [9], { atol: 1e-15 });
  assertTensor(student[0], [2], [3, 4]);
  emaUpdate_(teacher, student, 1); // momentum 1 keeps the teacher
  assertClose(teacher[0].toArray(), [1.2, 2.2], { atol: 1e-15 });
  emaUpdate_(teacher, student, 0); // momentum 0 copies the student
  assertTensor(teacher[0], [2], [3, 4]);
  const a = f64([1, 2]), b = f64([3]);
  foreachMul_([a, b], 2);
  assertTensor(a, [2], [2, 4]);
  assertTensor(b, [1], [6]);
  foreachAdd_([a, b], [f64([1, 1]), f64([4])], 0.5);
  assertTensor(a, [2], [2.5, 4.5]);
  assertTensor(b, [1], [8]);
  foreachLerp_([a], [f64([4.5, 0.5])], 0.5);
  assertTensor(a, [2], [3.5, 2.5]);
  foreachCopy_([a, b], [f64([7, 8]), f64([9])]);
  assertTensor(a, [2], [7, 8]);
  assertTensor(b, [1], [9]);
  foreachZero_([a, b]);
  assertTensor(a, [2], [0, 0]);
  assertTensor(b, [1], [0]);
  foreachMul_([], 3); // an empty group is legal
  assertThrows(() => foreachAdd_([a], []), RangeError, ["foreach_add_"]);
  assertThrows(() => emaUpdate_([a], [a, b], 0.5), RangeError, ["ema_update_"]);
  // works on parameters that require grad (they are updated under no-grad)
  const param = f64([1]).requiresGrad_();
  emaUpdate_([param], [f64([3])], 0.5);
  assertTensor(param, [1], [2]);
});

test("optim: ampUnscale_ scales finite gradients and raises foundInf on inf or nan", () => {
  const found = Tensor.zeros([1]);
  const g1 = f32([2, 4]), g2 = f32([8]);
  ampUnscale_([g1, g2], found, 0.5);
  assertTensor(g1, [2], [1, 2]);
  assertTensor(g2, [1], [4]);
  assertTensor(found, [1], [0]);
  const bad = f32([1, Infinity]);
  ampUnscale_([g1, bad], found, 0.5);
  assertTensor(found, [1], [1]);
  // the flag is only ever raised: a later finite batch does not clear it
  ampUnscale_([g1], found, 1);
  assertTensor(found, [1], [1]);
  const found2 = Tensor.zeros([1]);
  ampUnscale_([f32([NaN, 1])], found2, 2);
  assertTensor(found2, [1], [1]);
  const found3 = Tensor.zeros([1]);
  ampUnscale_([f32([-Infinity])], found3, 2);
  assertTensor(found3, [1], [1]);
  assertTorchError(() => ampUnscale_([g1], Tensor.zeros([1], { dtype: "float64" }), 1), ["amp_unscale_", "found_inf"]);
});

test("optim: gradNorm is the total L2 norm of the gradients that exist", () => {
  const a = f64([0, 0]).requiresGrad_(), b = f64([0]).requiresGrad_(), c = f64([1]).requiresGrad_();
  a.setGrad(f64([3, 0]));
  b.setGrad(f64([4]));
  const norm = gradNorm([a, b, c]);
  assertEquals(norm.shape, []);
  assertEquals(norm.dtype, "float32");
  assertClose(norm.item(), 5, { atol: 1e-6 });
  assertTensor(gradNorm([c]), [], [0]);
  assertTensor(gradNorm([]), [], [0]);
  // gradients from backward are counted too
  const x = f64([1, 2]).requiresGrad_();
  x.mul(x).sum().backward(); // grad 2x = [2, 4]
  assertClose(gradNorm([x]).item(), Math.sqrt(20), { atol: 1e-6 });
});

// ---- runtime -----------------------------------------------------------------------------------------------------

test("runtime: threads, version, CUDA availability", () => {
  const original = numThreads();
  assert(original >= 1, `numThreads ${original}`);
  setNumThreads(2);
  assertEquals(numThreads(), 2);
  setNumThreads(1);
  assertEquals(numThreads(), 1);
  setNumThreads(original);
  assertEquals(numThreads(), original);
  assertTorchError(() => setNumThreads(0), ["set_num_threads"]);
  assert(/^\d+\.\d+/.test(torchVersion()), `torchVersion ${torchVersion()}`);
  // CPU machines (CI) have no CUDA; a GPU run sets DETAILCLIP_EXPECT_CUDA=1.
  const expectCuda = Deno.env.get("DETAILCLIP_EXPECT_CUDA") === "1";
  assertEquals(cudaIsAvailable(), expectCuda);
  assertEquals(cudaDeviceCount() > 0, expectCuda);
  if (!expectCuda) assertTorchError(() => f32([1]).to("cuda"), ["to"]);
});

test("runtime: autocast on the CPU with bfloat16 casts matmul and is restored afterwards", () => {
  const a = f32([1, 2, 3, 4], [2, 2]);
  const inside = autocast("cpu", "bfloat16", () => a.matmul(a));
  assertEquals(inside.dtype, "bfloat16");
  assertTensor(inside, [2, 2], [7, 10, 15, 22]);
  assertEquals(autocast("cpu", "bfloat16", () => F.linear(a, a)).dtype, "bfloat16");
  assertEquals(a.matmul(a).dtype, "float32");
  // nested: the inner scope restores the outer one's state
  autocast("cpu", "bfloat16", () => {
    autocast("cpu", "bfloat16", () => {});
    assertEquals(a.matmul(a).dtype, "bfloat16");
  });
  assertEquals(a.matmul(a).dtype, "float32");
  // restored after a throw too
  assertThrows(() => autocast("cpu", "bfloat16", () => a.matmul(f32([1, 2, 3]))), Error);
  assertEquals(a.matmul(a).dtype, "float32");
  assertThrows(() => autocast("cpu", "float32", () => 0), Error, ["autocast"]);
  assertEquals(a.matmul(a).dtype, "float32");
});

test("runtime: noGrad, enableGrad and inferenceMode", () => {
  assertEquals(isGradEnabled(), true);
  const w = f32([1, 2]).requiresGrad_();
  assertEquals(w.mul(2).requiresGrad, true);
  const y = noGrad(() => {
    assertEquals(isGradEnabled(), false);
    const inner = enableGrad(() => {
      assertEquals(isGradEnabled(), true);
      return w.mul(3);
    });
    assertEquals(isGradEnabled(), false);
    assertEquals(inner.requiresGrad, true);
    return w.mul(2);
  });
  assertEquals(y.requiresGrad, false);
  assertEquals(isGradEnabled(), true);
  // restored after a throw
  assertThrows(() =>
    noGrad(() => {
      throw new RangeError("inside");
    }), RangeError);
  assertEquals(isGradEnabled(), true);
  const z = inferenceMode(() => {
    assertEquals(isGradEnabled(), false);
    return w.mul(2);
  });
  assertEquals(z.requiresGrad, false);
  assertTensor(z, [2], [2, 4]);
  assertEquals(isGradEnabled(), true);
  assertThrows(() =>
    inferenceMode(() => {
      throw new RangeError("inside");
    }), RangeError);
  assertEquals(isGradEnabled(), true);
  assertEquals(w.mul(2).requiresGrad, true);
});

test("autograd basics: backward, grad accumulation, zeroGrad, detach", () => {
  const x = f64([1, 2, 3]).requiresGrad_();
  assertEquals(x.isLeaf, true);
  const y = x.mul(x).sum(); // dy/dx = 2x
  assertEquals(y.isLeaf, false);
  y.backward();
  assertTensor(x.grad!, [3], [2, 4, 6]);
  x.mul(3).sum().backward(); // accumulates
  assertTensor(x.grad!, [3], [5, 7, 9]);
  x.zeroGrad(false);
  assertTensor(x.grad!, [3], [0, 0, 0]);
  x.zeroGrad();
  assertEquals(x.grad, null);
  assertEquals(x.detach().requiresGrad, false);
  // a non-scalar output needs an explicit gradient
  assertTorchError(() => x.mul(2).backward(), ["backward"]);
  x.mul(2).backward(f64([1, 0, -1]));
  assertTensor(x.grad!, [3], [2, 0, -2]);
  assertTorchError(() => x.setGrad(f32([1, 2, 3])), ["set_grad", "dtype"]);
});
