// block.ts: timm 0.5.4's pre-norm ViT Block (no layer-scale, no drop-path): x += attn(norm1(x)); x += mlp(norm2(x)).
// Used by the vision encoder and the MAE-style decoder.
import { type Tensor, tidy } from "../torch/mod.ts";
import { Attention } from "./attention.ts";
import { LayerNorm } from "./layer_norm.ts";
import { Mlp } from "./mlp.ts";
import { Module } from "./module.ts";

export class Block extends Module {
  readonly norm1: LayerNorm;
  readonly attn: Attention;
  readonly norm2: LayerNorm;
  readonly mlp: Mlp;

  constructor(dim: number, numHeads: number, options: { mlpRatio?: number; eps?: number } = {}) {
    super();
    const { mlpRatio = 4, eps = 1e-6 } = options;
    this.norm1 = this.module("norm1", new LayerNorm(dim, { eps }));
    this.attn = this.module("attn", new Attention(dim, numHeads, { qkvBias: true }));
    this.norm2 = this.module("norm2", new LayerNorm(dim, { eps }));
    // timm truncates the hidden width: int(dim * mlp_ratio).
    this.mlp = this.module("mlp", new Mlp(dim, Math.trunc(dim * mlpRatio), { activation: "gelu" }));
  }

  /** x: (B, N, D) -> (B, N, D). */
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const h = x.add(this.attn.forward(this.norm1.forward(x))); // h: (B, N, D)
      return h.add(this.mlp.forward(this.norm2.forward(h)));
    });
  }

  /** forward, adding the layer's CLS-attention head sum (B, N-1) to acc (Attention.forwardAccumulatingClsAttention). */
  forwardAccumulatingClsAttention(x: Tensor, acc: Tensor): Tensor {
    return tidy(() => {
      const h = x.add(this.attn.forwardAccumulatingClsAttention(this.norm1.forward(x), acc)); // h: (B, N, D)
      return h.add(this.mlp.forward(this.norm2.forward(h)));
    });
  }

  /** forward plus the CLS query's attention probabilities of this block: clsAttention (B, H, N). */
  forwardWithClsAttention(x: Tensor): { out: Tensor; clsAttention: Tensor } {
    return tidy(() => {
      const { out: attended, clsAttention } = this.attn.forwardWithClsAttention(this.norm1.forward(x));
      const h = x.add(attended); // h: (B, N, D)
      return { out: h.add(this.mlp.forward(this.norm2.forward(h))), clsAttention };
    });
  }
}
