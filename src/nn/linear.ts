// linear.ts: torch.nn.Linear with PyTorch's default initialisation. Models re-initialise afterwards (timm's
// trunc_normal, CLIP's normal), mirroring PyTorch's "construct, then apply(_init_weights)", so the generator is
// consumed in the same order as the reference code and a seeded construction can reproduce its numbers.
import { F, Tensor } from "../torch/mod.ts";
import { Module } from "./module.ts";

/** kaiming_uniform(a = sqrt 5) = U(±1/sqrt(fan_in)): what nn.Linear and nn.Conv2d do in reset_parameters. */
export function defaultWeight(shape: readonly number[]): Tensor {
  return Tensor.empty(shape).kaimingUniform_(Math.sqrt(5));
}

/** nn.Linear / nn.Conv2d's default bias: U(±1/sqrt(fan_in)). */
export function defaultBias(size: number, fanIn: number): Tensor {
  const bound = fanIn > 0 ? 1 / Math.sqrt(fanIn) : 0;
  return Tensor.empty([size]).uniform_(-bound, bound);
}

export class Linear extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly weight: Tensor; // (out, in)
  readonly bias: Tensor | null; // (out)

  constructor(inFeatures: number, outFeatures: number, options: { bias?: boolean } = {}) {
    super();
    const { bias = true } = options;
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    // Weight first, then bias: the generator order of nn.Linear.reset_parameters.
    this.weight = this.parameter("weight", defaultWeight([outFeatures, inFeatures]));
    this.bias = bias ? this.parameter("bias", defaultBias(outFeatures, inFeatures)) : null;
  }

  /** x: (..., in) -> (..., out). */
  forward(x: Tensor): Tensor {
    return F.linear(x, this.weight, this.bias);
  }
}
