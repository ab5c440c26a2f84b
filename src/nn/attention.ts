// attention.ts: timm's ViT self-attention (one packed qkv Linear, output split [q | k | v], heads contiguous within
// each third). The block output goes through the fused attention kernel where libtorch has one; the CLS-query
// attention probabilities that token removal needs (docs/model.md#attention-guided-token-removal) are computed for row
// 0 only, so the (N x N) map is never materialised (docs/parity.md#teacher-attention-memory).
import { F, type Tensor, tidy } from "../torch/mod.ts";
import { Linear } from "./linear.ts";
import { Module } from "./module.ts";

/** Splits a packed projection (B, N, 3D) into q, k, v, each (B, H, N, hd). */
export function splitHeads(packed: Tensor, numHeads: number): [Tensor, Tensor, Tensor] {
  const [b, n, threeD] = packed.shape;
  const headDim = threeD / 3 / numHeads;
  const heads = packed.reshape([b, n, 3, numHeads, headDim]).permute([2, 0, 3, 1, 4]); // heads: (3, B, H, N, hd)
  return [heads.select(0, 0), heads.select(0, 1), heads.select(0, 2)];
}

/** Merges heads back: (B, H, N, hd) -> (B, N, H*hd). */
export function mergeHeads(x: Tensor): Tensor {
  const [b, h, n, hd] = x.shape;
  return x.transpose(1, 2).reshape([b, n, h * hd]);
}

/** softmax(q_0 k^T * scale) for the first query only. q, k: (B, H, N, hd) -> (B, H, N). */
export function firstQueryAttention(q: Tensor, k: Tensor, scale: number): Tensor {
  return tidy(() => {
    const scores = q.narrow(2, 0, 1).matmul(k.transpose(-2, -1)).mul(scale); // scores: (B, H, 1, N)
    return F.softmax(scores, -1).squeeze(2);
  });
}

export class Attention extends Module {
  readonly dim: number;
  readonly numHeads: number;
  readonly headDim: number;
  readonly scale: number;
  readonly qkv: Linear; // dim -> 3 dim
  readonly proj: Linear; // dim -> dim

  constructor(dim: number, numHeads: number, options: { qkvBias?: boolean } = {}) {
    super();
    const { qkvBias = true } = options;
    if (dim % numHeads !== 0) throw new Error(`Attention: dim ${dim} is not divisible by ${numHeads} heads`);
    this.dim = dim;
    this.numHeads = numHeads;
    this.headDim = dim / numHeads;
    this.scale = this.headDim ** -0.5;
    this.qkv = this.module("qkv", new Linear(dim, 3 * dim, { bias: qkvBias }));
    this.proj = this.module("proj", new Linear(dim, dim));
  }

  /** x: (B, N, D) -> (B, N, D). */
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const [q, k, v] = splitHeads(this.qkv.forward(x), this.numHeads); // q, k, v: (B, H, N, hd)
      const out = F.scaledDotProductAttention(q, k, v, null, this.scale); // out: (B, H, N, hd)
      return this.proj.forward(mergeHeads(out));
    });
  }

  /**
   * The same output as forward; adds the head sum of the CLS query's attention over the N-1 patch keys to acc
   * (B, N-1) float32 in place, through the fused native op (one CUDA kernel on the packed qkv), so neither (B, H, N, N)
   * nor (B, H, N) is formed. The CUDA teacher path (vit.ts); the CPU keeps forwardWithClsAttention.
   */
  forwardAccumulatingClsAttention(x: Tensor, acc: Tensor): Tensor {
    return tidy(() => {
      const packed = this.qkv.forward(x); // packed: (B, N, 3D)
      F.clsAttentionAccumulate_(acc, packed, this.numHeads, this.scale);
      const [q, k, v] = splitHeads(packed, this.numHeads); // q, k, v: (B, H, N, hd)
      const out = F.scaledDotProductAttention(q, k, v, null, this.scale); // out: (B, H, N, hd)
      return this.proj.forward(mergeHeads(out));
    });
  }

  /** The same output as forward, plus the CLS query's attention probabilities over all N keys: (B, H, N). */
  forwardWithClsAttention(x: Tensor): { out: Tensor; clsAttention: Tensor } {
    return tidy(() => {
      const [q, k, v] = splitHeads(this.qkv.forward(x), this.numHeads); // q, k, v: (B, H, N, hd)
      const out = F.scaledDotProductAttention(q, k, v, null, this.scale); // out: (B, H, N, hd)
      const clsAttention = firstQueryAttention(q, k, this.scale); // clsAttention: (B, H, N)
      return { out: this.proj.forward(mergeHeads(out)), clsAttention };
    });
  }
}
