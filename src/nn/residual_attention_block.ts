// residual_attention_block.ts: OpenAI CLIP's text-transformer block: x += attn(ln_1(x), mask); x += mlp(ln_2(x)),
// with fp32-casting LayerNorms (eps 1e-5) and a QuickGELU MLP named c_fc/c_proj. Members are registered in CLIP's
// order (attn, ln_1, mlp, ln_2), which is also the order of its state dict and of its generator draws. OpenCLIP's
// block is the same with GELU for its non-OpenAI models (and other MLP widths for e.g. ViT-H), hence the options.
import { type Tensor, tidy } from "../torch/mod.ts";
import type { Activation } from "./activation.ts";
import { LayerNorm } from "./layer_norm.ts";
import { Mlp } from "./mlp.ts";
import { Module } from "./module.ts";
import { MultiheadAttention } from "./multihead_attention.ts";

export class ResidualAttentionBlock extends Module {
  readonly attn: MultiheadAttention;
  readonly ln_1: LayerNorm;
  readonly mlp: Mlp;
  readonly ln_2: LayerNorm;

  constructor(dim: number, numHeads: number, options: { activation?: Activation; mlpWidth?: number } = {}) {
    super();
    const { activation = "quick_gelu", mlpWidth = 4 * dim } = options;
    this.attn = this.module("attn", new MultiheadAttention(dim, numHeads));
    this.ln_1 = this.module("ln_1", new LayerNorm(dim, { eps: 1e-5, castToFloat32: true }));
    this.mlp = this.module("mlp", new Mlp(dim, mlpWidth, { activation, names: ["c_fc", "c_proj"] }));
    this.ln_2 = this.module("ln_2", new LayerNorm(dim, { eps: 1e-5, castToFloat32: true }));
  }

  /** x: (B, L, D), additiveMask: (L, L) or null -> (B, L, D). */
  forward(x: Tensor, additiveMask: Tensor | null = null): Tensor {
    return tidy(() => {
      const h = x.add(this.attn.forward(this.ln_1.forward(x), additiveMask)); // h: (B, L, D)
      return h.add(this.mlp.forward(this.ln_2.forward(h)));
    });
  }
}
