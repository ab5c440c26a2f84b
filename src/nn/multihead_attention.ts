// multihead_attention.ts: torch.nn.MultiheadAttention as OpenAI CLIP's text tower uses it (self-attention, packed
// in_proj rows [q; k; v], both projections with bias), but batch-first: x is (B, L, D) where torch's is (L, B, D).
// The numbers equal torch's sequence-first module; only the layout of the activations differs.
import { F, Tensor, tidy } from "../torch/mod.ts";
import { mergeHeads, splitHeads } from "./attention.ts";
import { Linear } from "./linear.ts";
import { Module } from "./module.ts";

export class MultiheadAttention extends Module {
  readonly dim: number;
  readonly numHeads: number;
  readonly headDim: number;
  readonly in_proj_weight: Tensor; // (3D, D)
  readonly in_proj_bias: Tensor; // (3D)
  readonly out_proj: Linear; // D -> D

  constructor(dim: number, numHeads: number) {
    super();
    if (dim % numHeads !== 0) throw new Error(`MultiheadAttention: dim ${dim} is not divisible by ${numHeads} heads`);
    this.dim = dim;
    this.numHeads = numHeads;
    this.headDim = dim / numHeads;
    // torch's order: empty in_proj tensors, then out_proj (default Linear init draws from the generator), then
    // _reset_parameters: xavier_uniform in_proj_weight and zero both biases.
    this.in_proj_weight = this.parameter("in_proj_weight", Tensor.empty([3 * dim, dim]));
    this.in_proj_bias = this.parameter("in_proj_bias", Tensor.empty([3 * dim]));
    this.out_proj = this.module("out_proj", new Linear(dim, dim));
    this.in_proj_weight.xavierUniform_();
    this.in_proj_bias.zero_();
    this.out_proj.bias!.zero_();
  }

  /** x: (B, L, D), additiveMask: (L, L) added to the scores (e.g. the causal mask) or null -> (B, L, D). */
  forward(x: Tensor, additiveMask: Tensor | null = null): Tensor {
    return tidy(() => {
      const packed = F.linear(x, this.in_proj_weight, this.in_proj_bias); // packed: (B, L, 3D)
      const [q, k, v] = splitHeads(packed, this.numHeads); // q, k, v: (B, H, L, hd)
      const out = F.scaledDotProductAttention(q, k, v, additiveMask, this.headDim ** -0.5); // out: (B, H, L, hd)
      return this.out_proj.forward(mergeHeads(out));
    });
  }
}
