// weight_norm_linear.ts: nn.utils.weight_norm(nn.Linear(in, out, bias=False)) as the iBOT head's last layer. The
// parameters are stored as PyTorch stores them (weight_g (out, 1), weight_v (out, in)) and the weight
// W = g * v / ||v|| (norm per output row) is rebuilt in the graph on every forward, so gradients reach v through the
// normalisation. With frozenG (iBOT's norm_last_layer) g is fixed at 1 and W is v with unit rows.
import { F, type Tensor, tidy } from "../torch/mod.ts";
import { defaultWeight } from "./linear.ts";
import { Module } from "./module.ts";

export class WeightNormLinear extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly weight_g: Tensor; // (out, 1)
  readonly weight_v: Tensor; // (out, in)

  constructor(inFeatures: number, outFeatures: number, options: { frozenG?: boolean } = {}) {
    super();
    const { frozenG = true } = options;
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    // The wrapped Linear draws its default weight; weight_norm then registers g before v. iBOT fills g with 1
    // right away, so g's initial value (||v|| per row) never matters.
    const v = defaultWeight([outFeatures, inFeatures]);
    this.weight_g = this.parameter("weight_g", v.norm(2, 1, true).fill_(1), !frozenG);
    this.weight_v = this.parameter("weight_v", v);
  }

  /** g * v / ||v||, rows normalised: (out, in). */
  weight(): Tensor {
    return tidy(() => this.weight_v.mul(this.weight_g.div(this.weight_v.norm(2, 1, true))));
  }

  /** x: (..., in) -> (..., out). */
  forward(x: Tensor): Tensor {
    return tidy(() => F.linear(x, this.weight()));
  }
}
