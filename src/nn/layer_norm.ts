// layer_norm.ts: torch.nn.LayerNorm over the last dimension, plus the CLIP text tower's variant that computes in
// fp32 and casts the result back to the input dtype (so fp16 activations never normalise in half precision).
import { F, Tensor } from "../torch/mod.ts";
import { Module } from "./module.ts";

export class LayerNorm extends Module {
  readonly dim: number;
  readonly eps: number;
  readonly castToFloat32: boolean;
  readonly weight: Tensor; // (dim)
  readonly bias: Tensor; // (dim)

  constructor(dim: number, options: { eps?: number; castToFloat32?: boolean } = {}) {
    super();
    const { eps = 1e-5, castToFloat32 = false } = options;
    this.dim = dim;
    this.eps = eps;
    this.castToFloat32 = castToFloat32;
    this.weight = this.parameter("weight", Tensor.ones([dim]));
    this.bias = this.parameter("bias", Tensor.zeros([dim]));
  }

  /** x: (..., dim) -> (..., dim). */
  forward(x: Tensor): Tensor {
    if (!this.castToFloat32) return F.layerNorm(x, [this.dim], this.weight, this.bias, this.eps);
    const dtype = x.dtype;
    if (dtype === "float32") return F.layerNorm(x, [this.dim], this.weight, this.bias, this.eps);
    using wide = x.to({ dtype: "float32" });
    using normed = F.layerNorm(wide, [this.dim], this.weight, this.bias, this.eps);
    // Under autocast layer_norm may already return fp32; the cast back restores the caller's dtype either way.
    return normed.to({ dtype });
  }
}
