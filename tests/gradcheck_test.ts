// gradcheck_test.ts: libtorch's analytic gradients, reached through the FFI, against central finite differences in
// float64 for every differentiable op family the model uses.
import { cat, F, liveTensors, noGrad, stack, Tensor, tidy } from "../src/torch/mod.ts";
import { assert, assertEquals, AssertionError, assertThrows, uniformValues } from "./helpers.ts";

interface Input {
  values: number[];
  shape: number[];
}

/** A float64 input of the given shape, uniform in [low, high) from a seeded PRNG. */
function input(shape: number[], seed: number, low = -1, high = 1): Input {
  const n = shape.reduce((a, b) => a * b, 1);
  return { values: uniformValues(n, seed, low, high), shape };
}

const f64 = (values: readonly number[], shape: readonly number[]) =>
  Tensor.fromArray(values, shape, { dtype: "float64" });
const i64 = (values: readonly number[], shape?: readonly number[]) =>
  Tensor.fromArray(values, shape, { dtype: "int64" });

/**
 * Checks d(loss)/d(input) for every input, where loss = sum(fn(...inputs) * w) with fixed pseudo-random weights w (so
 * every output element takes part with its own weight). Analytic: libtorch's backward(); numeric: central differences
 * with step eps. Fails with the worst element of every input whose gradient is off by more than atol + rtol * |numeric|.
 */
function gradcheck(
  name: string,
  fn: (...xs: Tensor[]) => Tensor,
  inputs: Input[],
  options: { eps?: number; atol?: number; rtol?: number } = {},
): void {
  const { eps = 1e-6, atol = 1e-7, rtol = 1e-6 } = options;
  let weights: number[] | null = null;
  let outShape: number[] = [];
  const loss = (out: Tensor): Tensor => {
    if (weights === null) {
      outShape = out.shape;
      weights = uniformValues(out.numel, 97, 0.5, 1.5).map((v, i) => (i % 2 === 0 ? v : -v));
    }
    return out.mul(f64(weights, outShape)).sum();
  };
  const analytic = tidy(() => {
    const leaves = inputs.map((x) => f64(x.values, x.shape).requiresGrad_());
    const out = fn(...leaves);
    assertEquals(out.dtype, "float64", `${name}: output dtype`);
    loss(out).backward();
    return leaves.map((leaf, i) => leaf.grad?.toArray() ?? new Array(inputs[i].values.length).fill(0));
  });
  const evaluate = (values: number[][]): number =>
    tidy(() => noGrad(() => loss(fn(...values.map((v, i) => f64(v, inputs[i].shape)))).item()));
  const failures: string[] = [];
  inputs.forEach((x, i) => {
    const values = inputs.map((y) => y.values.slice());
    let worst = { index: -1, excess: -Infinity, analytic: 0, numeric: 0 };
    let largest = 0;
    for (let j = 0; j < x.values.length; j++) {
      values[i][j] = x.values[j] + eps;
      const plus = evaluate(values);
      values[i][j] = x.values[j] - eps;
      const minus = evaluate(values);
      values[i][j] = x.values[j];
      const numeric = (plus - minus) / (2 * eps);
      largest = Math.max(largest, Math.abs(numeric));
      const excess = Math.abs(analytic[i][j] - numeric) - (atol + rtol * Math.abs(numeric));
      if (!(excess <= worst.excess)) worst = { index: j, excess, analytic: analytic[i][j], numeric };
    }
    if (!(worst.excess <= 0)) {
      failures.push(
        `input ${i} [${x.shape}] element ${worst.index}: analytic ${worst.analytic}, numeric ${worst.numeric}, ` +
          `worst difference ${Math.abs(worst.analytic - worst.numeric)}`,
      );
    }
    // a gradient that is zero everywhere would make the comparison vacuous
    if (largest === 0) failures.push(`input ${i} [${x.shape}]: the loss does not depend on it (gradient all zero)`);
  });
  if (failures.length > 0) {
    throw new AssertionError(`gradcheck ${name} (atol ${atol}, rtol ${rtol}):\n  ${failures.join("\n  ")}`);
  }
}

/** A gradient-check test body; it must free every handle it made. */
function test(name: string, fn: () => void): void {
  Deno.test(name, () => {
    const before = liveTensors();
    tidy(fn);
    assertEquals(liveTensors(), before, `${name}: live tensor handles`);
  });
}

test("gradcheck: the helper catches a wrong gradient and reports the worst difference", () => {
  // x * detach(x) has the true derivative 2x but autograd sees only x.
  const error = assertThrows(
    () => gradcheck("x*detach(x)", (x) => x.mul(x.detach()), [input([4], 1)]),
    AssertionError,
    [
      "worst difference",
      "analytic",
      "numeric",
    ],
  );
  assert(error.message.includes("x*detach(x)"));
  assertThrows(() => gradcheck("constant", (x) => x.mul(0).add(1), [input([3], 2)]), AssertionError, [
    "does not depend",
  ]);
  gradcheck("x*x", (x) => x.mul(x), [input([4], 1)]);
});

test("gradcheck: elementwise unary ops", () => {
  const x = input([2, 3], 10, -2, 2);
  const positive = input([2, 3], 11, 0.5, 2);
  gradcheck("exp", (t) => t.exp(), [x]);
  gradcheck("log", (t) => t.log(), [positive]);
  gradcheck("sqrt", (t) => t.sqrt(), [positive]);
  gradcheck("rsqrt", (t) => t.rsqrt(), [positive]);
  gradcheck("tanh", (t) => t.tanh(), [x]);
  gradcheck("sigmoid", (t) => t.sigmoid(), [x]);
  gradcheck("erf", (t) => t.erf(), [x]);
  gradcheck("gelu exact", (t) => t.gelu(), [x]);
  gradcheck("gelu tanh", (t) => t.gelu("tanh"), [x]);
  gradcheck("silu", (t) => t.silu(), [x]);
  gradcheck("neg, square, reciprocal", (t) => t.neg().square().add(t.reciprocal()), [positive]);
  gradcheck("clamp (away from the bounds)", (t) => t.clamp(-5, 5).mul(t), [x]);
});

test("gradcheck: binary ops with broadcasting and scalar forms", () => {
  const a = input([2, 3], 20);
  const row = input([3], 21, 0.5, 2);
  const col = input([2, 1], 22, 0.5, 2);
  const base = input([2, 3], 23, 0.5, 2);
  gradcheck("add [2,3]+[3]", (x, y) => x.add(y), [a, row]);
  gradcheck("add with alpha", (x, y) => x.add(y, -2.5), [a, row]);
  gradcheck("sub [2,3]-[2,1]", (x, y) => x.sub(y), [a, col]);
  gradcheck("mul [2,1]*[3]", (x, y) => x.mul(y), [col, row]);
  gradcheck("div [2,3]/[2,1]", (x, y) => x.div(y), [a, col]);
  gradcheck("pow tensor^tensor", (x, y) => x.pow(y), [base, row]);
  gradcheck("pow tensor^scalar", (x) => x.pow(3), [a]);
  gradcheck("pow tensor^1.5", (x) => x.pow(1.5), [base]);
  gradcheck("scalar forms", (x) => x.mul(3).add(1).sub(0.5).div(4).rsub(2), [a]);
  gradcheck("rdiv", (x) => x.rdiv(2), [base]);
  gradcheck("rpow", (x) => x.rpow(1.7), [a]);
  gradcheck("maximum (distinct values)", (x, y) => x.maximum(y), [a, input([2, 3], 24)]);
  gradcheck("lerp", (x, y) => x.lerp(y, 0.3), [a, input([2, 3], 25)]);
});

test("gradcheck: reductions", () => {
  const x = input([3, 4], 30, -2, 2);
  gradcheck("sum all", (t) => t.sum(), [x]);
  gradcheck("sum dim keepdim", (t) => t.sum(1, true), [x]);
  gradcheck("mean dim", (t) => t.mean(0), [x]);
  gradcheck("mean all", (t) => t.mean(), [x]);
  gradcheck("var unbiased dim", (t) => t.var(1), [x]);
  gradcheck("var unbiased all", (t) => t.var(), [x]);
  gradcheck("var population keepdim", (t) => t.var(-1, { correction: 0, keepdim: true }), [x]);
  gradcheck("std", (t) => t.std(0), [x]);
  gradcheck("norm all", (t) => t.norm(), [x]);
  gradcheck("norm dim", (t) => t.norm(2, 1, true), [x]);
  gradcheck("logsumexp", (t) => t.logsumexp(1), [x]);
  gradcheck("logsumexp all", (t) => t.logsumexp([0, 1]), [x]);
  gradcheck("amax (distinct values)", (t) => t.amax(1), [x]);
  gradcheck("amin (distinct values)", (t) => t.amin(0), [x]);
  gradcheck("cumsum", (t) => t.cumsum(1), [x]);
  gradcheck("prod", (t) => t.prod(1), [x]);
});

test("gradcheck: views and indexing", () => {
  const x = input([2, 3, 4], 40);
  const index = i64([2, 0, 1, 1, 3, 0], [2, 3, 1]);
  gradcheck("reshape", (t) => t.reshape([6, 4]).mul(t.reshape([6, 4])), [x]);
  gradcheck("permute", (t) => t.permute([2, 0, 1]).matmul(f64(uniformValues(3, 41), [3, 1])), [x]);
  gradcheck("transpose", (t) => t.transpose(0, 2).contiguous().sin(), [x]);
  gradcheck("slice with step", (t) => t.slice(2, 1, undefined, 2).exp(), [x]);
  gradcheck("slice negative", (t) => t.slice(1, -2).square(), [x]);
  gradcheck("select", (t) => t.select(1, -1).tanh(), [x]);
  gradcheck("narrow", (t) => t.narrow(2, 1, 2).square(), [x]);
  gradcheck("gather", (t) => t.gather(2, index), [x]);
  // repeated indices: the gradient must accumulate
  gradcheck("indexSelect", (t) => t.indexSelect(2, i64([3, 0, 3, 1])), [x]);
  const y = input([2, 2, 4], 42);
  gradcheck("cat", (a, b) => cat([a, b], 1).square(), [x, y]);
  gradcheck("stack", (a, b) => stack([a, b.mul(2)], 0).tanh(), [x, x]);
  gradcheck("expand", (t) => t.expand([2, 3, 4]).square(), [input([2, 1, 4], 43)]);
  gradcheck("chunk", (t) => {
    const [a, b] = t.chunk(2, 2);
    return a.mul(b);
  }, [x]);
  gradcheck("split", (t) => {
    const parts = t.split(1, 1);
    return parts[0].add(parts[2].mul(3));
  }, [x]);
  gradcheck("flip and repeat", (t) => t.flip([2]).repeat([1, 2, 1]).square(), [x]);
  gradcheck("maskedFill", (t) => t.maskedFill(Tensor.fromArray([true, false, false, true], [4]), 0).square(), [x]);
  gradcheck("squeeze/unsqueeze/flatten", (t) => t.unsqueeze(1).squeeze(1).flatten(1).square(), [x]);
});

test("gradcheck: matmul, bmm, linear, conv2d, embedding", () => {
  gradcheck("matmul batched broadcast", (a, b) => a.matmul(b), [input([2, 3, 4], 50), input([4, 5], 51)]);
  gradcheck("matmul vector", (a, b) => a.matmul(b), [input([3, 4], 52), input([4], 53)]);
  gradcheck("bmm", (a, b) => a.bmm(b), [input([2, 3, 4], 54), input([2, 4, 2], 55)]);
  gradcheck("linear with bias", (x, w, b) => F.linear(x, w, b), [
    input([2, 3, 4], 56),
    input([5, 4], 57),
    input([5], 58),
  ]);
  gradcheck("linear without bias", (x, w) => F.linear(x, w), [input([3, 4], 59), input([2, 4], 60)]);
  gradcheck(
    "conv2d stride 2 padding 1 groups 2 bias",
    (x, w, b) => F.conv2d(x, w, b, { stride: 2, padding: 1, groups: 2 }),
    [input([2, 4, 5, 5], 61), input([4, 2, 3, 3], 62), input([4], 63)],
  );
  gradcheck("conv2d patch embed", (x, w) => F.conv2d(x, w, null, { stride: 2 }), [
    input([1, 3, 4, 4], 64),
    input([2, 3, 2, 2], 65),
  ]);
  // repeated ids: the embedding gradient accumulates rows
  gradcheck("embedding", (w) => F.embedding(w, i64([1, 3, 1, 0, 1, 3], [2, 3])), [input([5, 3], 66)]);
});

test("gradcheck: softmax, logSoftmax, layerNorm, normalize", () => {
  const x = input([3, 5], 70, -2, 2);
  gradcheck("softmax last dim", (t) => F.softmax(t, -1), [x]);
  gradcheck("softmax dim 0", (t) => F.softmax(t, 0), [x]);
  gradcheck("logSoftmax", (t) => F.logSoftmax(t, 1), [x]);
  gradcheck("layerNorm input, weight, bias", (t, w, b) => F.layerNorm(t, [4], w, b, 1e-5), [
    input([2, 3, 4], 71, -2, 2),
    input([4], 72, 0.5, 1.5),
    input([4], 73),
  ]);
  gradcheck("layerNorm over two dims without affine", (t) => F.layerNorm(t, [3, 4], null, null, 1e-6), [
    input([2, 3, 4], 74),
  ]);
  gradcheck("normalize", (t) => F.normalize(t, { dim: -1 }), [x]);
  gradcheck("normalize dim 0", (t) => F.normalize(t, { dim: 0 }), [x]);
});

test("gradcheck: crossEntropy and mseLoss", () => {
  const logits = input([4, 5], 80, -2, 2);
  const target = i64([1, 4, -100, 0]);
  gradcheck("crossEntropy mean with ignored target", (t) => F.crossEntropy(t, target), [logits]);
  gradcheck("crossEntropy sum", (t) => F.crossEntropy(t, i64([1, 4, 2, 0]), { reduction: "sum" }), [logits]);
  gradcheck("crossEntropy none", (t) => F.crossEntropy(t, i64([1, 4, 2, 0]), { reduction: "none" }), [logits]);
  gradcheck("crossEntropy label smoothing", (t) => F.crossEntropy(t, i64([1, 4, 2, 0]), { labelSmoothing: 0.1 }), [
    logits,
  ]);
  gradcheck(
    "crossEntropy class weights",
    (t) => F.crossEntropy(t, i64([1, 4, 2, 0]), { weight: f64([1, 2, 0.5, 1, 3], [5]) }),
    [logits],
  );
  gradcheck("mseLoss mean", (a, b) => F.mseLoss(a, b), [input([3, 4], 81), input([3, 4], 82)]);
  gradcheck("mseLoss none", (a, b) => F.mseLoss(a, b, "none"), [input([3, 4], 83), input([3, 4], 84)]);
});

test("gradcheck: interpolate bilinear, avgPool2d", () => {
  gradcheck("bilinear up", (t) => F.interpolate(t, [5, 7]), [input([1, 2, 3, 4], 90)]);
  gradcheck("bilinear align_corners", (t) => F.interpolate(t, [5, 7], "bilinear", true), [input([1, 2, 3, 4], 91)]);
  gradcheck("bilinear 14x14 -> 7x7", (t) => F.interpolate(t, [7, 7]), [input([1, 1, 14, 14], 92)]);
  gradcheck("bilinear down, odd ratio", (t) => F.interpolate(t, [3, 2]), [input([2, 1, 7, 5], 93)]);
  gradcheck("avgPool2d", (t) => F.avgPool2d(t, 2), [input([2, 2, 4, 6], 94)]);
  gradcheck("avgPool2d stride 1", (t) => F.avgPool2d(t, [2, 3], 1), [input([1, 2, 4, 5], 95)]);
});

test("gradcheck: scaledDotProductAttention with an additive mask", () => {
  const [b, h, n, m, d] = [1, 2, 3, 4, 5];
  const maskValues = [0, -Infinity, 0, 0.5, 0, 0, -Infinity, -Infinity, -1, 0, 0, 0];
  const mask = f64(maskValues, [n, m]);
  gradcheck("sdpa masked", (q, k, v) => F.scaledDotProductAttention(q, k, v, mask, 0.4), [
    input([b, h, n, d], 100),
    input([b, h, m, d], 101),
    input([b, h, m, d], 102),
  ]);
  gradcheck("sdpa default scale", (q, k, v) => F.scaledDotProductAttention(q, k, v), [
    input([b, h, n, d], 103),
    input([b, h, m, d], 104),
    input([b, h, m, d], 105),
  ]);
});
