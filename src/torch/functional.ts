// functional.ts: the neural-network functions (torch.nn.functional counterparts) over Tensor. Each is one native
// call; shapes in the comments follow PyTorch's conventions.

/**
 * torch.nn.functional counterparts over Tensor: linear, softmax, normalize, crossEntropy, attention, ...
 *
 * @module
 */
import { type DType, dtypeCode } from "./dtype.ts";
import { native } from "./lib.ts";
import { check, int64List, own, ownOut, Tensor } from "./tensor.ts";

const i64 = BigInt;

/** y = x W^T + b. x: (..., in), weight: (out, in), bias: (out) or null. */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor {
  const args = bias ? [x, weight, bias] : [x, weight];
  return own(native().dc_linear(x.handle, weight.handle, bias?.handle ?? null), "linear", args);
}

/** x: (B, C, H, W), weight: (O, C/groups, kh, kw) -> (B, O, H', W'). */
export function conv2d(
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null = null,
  options: { stride?: number | [number, number]; padding?: number | [number, number]; groups?: number } = {},
): Tensor {
  const [sh, sw] = pair(options.stride ?? 1);
  const [ph, pw] = pair(options.padding ?? 0);
  const pointer = native().dc_conv2d(
    x.handle,
    weight.handle,
    bias?.handle ?? null,
    i64(sh),
    i64(sw),
    i64(ph),
    i64(pw),
    i64(options.groups ?? 1),
  );
  return own(pointer, "conv2d", bias ? [x, weight, bias] : [x, weight]);
}

/** weight: (V, D), indices: (...) int64 -> (..., D). */
export function embedding(weight: Tensor, indices: Tensor): Tensor {
  return own(native().dc_embedding(weight.handle, indices.handle), "embedding", [weight, indices]);
}

/** Softmax along dim, optionally computed in another dtype (as torch's softmax(dtype=)). */
export function softmax(x: Tensor, dim: number, dtype?: DType): Tensor {
  const code = dtype === undefined ? -1 : dtypeCode(dtype);
  return own(native().dc_softmax(x.handle, i64(dim), code), "softmax", [x]);
}

export function logSoftmax(x: Tensor, dim: number, dtype?: DType): Tensor {
  const code = dtype === undefined ? -1 : dtypeCode(dtype);
  return own(native().dc_log_softmax(x.handle, i64(dim), code), "log_softmax", [x]);
}

/** LayerNorm over the trailing dims of normalizedShape. */
export function layerNorm(
  x: Tensor,
  normalizedShape: readonly number[],
  weight: Tensor | null,
  bias: Tensor | null,
  eps: number,
): Tensor {
  const pointer = native().dc_layer_norm(
    x.handle,
    int64List(normalizedShape),
    i64(normalizedShape.length),
    weight?.handle ?? null,
    bias?.handle ?? null,
    eps,
  );
  return own(pointer, "layer_norm", [x, weight, bias].filter((t) => t !== null));
}

/** F.normalize: x / max(||x||_p, eps) along dim. */
export function normalize(x: Tensor, options: { p?: number; dim?: number; eps?: number } = {}): Tensor {
  const { p = 2, dim = -1, eps = 1e-12 } = options;
  return own(native().dc_normalize(x.handle, p, i64(dim), eps), "normalize", [x]);
}

export type Reduction = "none" | "mean" | "sum";
const reductionCode: Record<Reduction, number> = { none: 0, mean: 1, sum: 2 };

/** logits: (N, C), target: (N) int64 class indices. */
export function crossEntropy(
  logits: Tensor,
  target: Tensor,
  options: { weight?: Tensor; reduction?: Reduction; ignoreIndex?: number; labelSmoothing?: number } = {},
): Tensor {
  const { weight, reduction = "mean", ignoreIndex = -100, labelSmoothing = 0 } = options;
  const pointer = native().dc_cross_entropy(
    logits.handle,
    target.handle,
    weight?.handle ?? null,
    reductionCode[reduction],
    i64(ignoreIndex),
    labelSmoothing,
  );
  return own(pointer, "cross_entropy", weight ? [logits, target, weight] : [logits, target]);
}

export function mseLoss(a: Tensor, b: Tensor, reduction: Reduction = "mean"): Tensor {
  return own(native().dc_mse_loss(a.handle, b.handle, reductionCode[reduction]), "mse_loss", [a, b]);
}

export type InterpolationMode = "nearest" | "bilinear" | "bicubic";
const interpolationCode: Record<InterpolationMode, number> = { nearest: 0, bilinear: 1, bicubic: 2 };

/** x: (B, C, H, W) -> (B, C, outH, outW). */
export function interpolate(
  x: Tensor,
  size: [number, number],
  mode: InterpolationMode = "bilinear",
  alignCorners = false,
): Tensor {
  const pointer = native().dc_interpolate(
    x.handle,
    i64(size[0]),
    i64(size[1]),
    interpolationCode[mode],
    alignCorners ? 1 : 0,
  );
  return own(pointer, "interpolate", [x]);
}

/** x: (B, C, H, W); stride defaults to the kernel size. */
export function avgPool2d(x: Tensor, kernel: number | [number, number], stride?: number | [number, number]): Tensor {
  const [kh, kw] = pair(kernel);
  const [sh, sw] = pair(stride ?? kernel);
  return own(native().dc_avg_pool2d(x.handle, i64(kh), i64(kw), i64(sh), i64(sw)), "avg_pool2d", [x]);
}

export function oneHot(indices: Tensor, numClasses: number): Tensor {
  return own(native().dc_one_hot(indices.handle, i64(numClasses)), "one_hot", [indices]);
}

/**
 * softmax(q k^T * scale + mask) v. q: (B, H, N, d), k/v: (B, H, M, d), mask additive and broadcastable to
 * (B, H, N, M) or null. Fused on libtorch >= 2.0.
 */
export function scaledDotProductAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  mask: Tensor | null = null,
  scale = 1 / Math.sqrt(q.size(-1)),
): Tensor {
  const pointer = native().dc_scaled_dot_product_attention(q.handle, k.handle, v.handle, mask?.handle ?? null, scale);
  return own(pointer, "scaled_dot_product_attention", mask ? [q, k, v, mask] : [q, k, v]);
}

/**
 * Attention-guided token selection (the native op dc_select_tokens; the model-level API with the official ratio
 * semantics is src/models/token_selection.ts). scores: (B, gridH*gridW) -> mask (B, N) bool (true = removed),
 * idsKeep (B, K) int64 ascending, idsRestore (B, N) int64. No gradient flows through it.
 */
export function selectTokens(
  scores: Tensor,
  gridH: number,
  gridW: number,
  cell: number,
  ratio: number,
): { mask: Tensor; idsKeep: Tensor; idsRestore: Tensor } {
  const out = new BigUint64Array(3);
  const status = native().dc_select_tokens(
    scores.handle,
    i64(gridH),
    i64(gridW),
    i64(cell),
    ratio,
    out.subarray(0, 1),
    out.subarray(1, 2),
    out.subarray(2, 3),
  );
  check(status, "select_tokens", [scores]);
  const [mask, idsKeep, idsRestore] = ownOut(out, 3, "select_tokens", [scores]);
  return { mask, idsKeep, idsRestore };
}

/**
 * acc (B, N-1) float32 += the head sum of the CLS query's attention probabilities over the patch keys, from the packed
 * qkv Linear output (B, N, 3*heads*headDim). On CUDA one fused kernel (kernels/cls_attention.cu), elsewhere the
 * libtorch composition; the (B, H, N, N) map is never formed. In place on acc; no gradient.
 */
export function clsAttentionAccumulate_(acc: Tensor, qkv: Tensor, heads: number, scale: number): void {
  check(native().dc_cls_attention_accumulate_(acc.handle, qkv.handle, i64(heads), scale), "cls_attention_accumulate_", [
    acc,
    qkv,
  ]);
}

function pair(value: number | [number, number]): [number, number] {
  return typeof value === "number" ? [value, value] : value;
}
