// heads.ts: the iBOT projection head (docs/model.md#ibot-head): a 3-layer GELU MLP to a 256-d bottleneck, L2
// normalisation, then a weight-normalised bias-free Linear to the K prototypes whose g is frozen at 1. DetailCLIP
// shares one last layer between CLS and patch tokens, so `last_layer2` is the same module as `last_layer`: the state
// dict holds both key sets (as the official checkpoints do) while the parameters are counted and trained once.
import { Linear } from "../nn/linear.ts";
import { Module } from "../nn/module.ts";
import { WeightNormLinear } from "../nn/weight_norm_linear.ts";
import { F, type Tensor, tidy } from "../torch/mod.ts";

export interface IBOTHeadConfig {
  inDim: number;
  outDim: number;
  hiddenDim?: number;
  bottleneckDim?: number;
}

/** iBOT's nn.Sequential(Linear, GELU, Linear, GELU, Linear): children keep the Sequential indices 0, 2 and 4. */
export class IBOTMlp extends Module {
  readonly layers: readonly [Linear, Linear, Linear];

  constructor(inDim: number, hiddenDim: number, bottleneckDim: number) {
    super();
    this.layers = [
      this.module("0", new Linear(inDim, hiddenDim)),
      this.module("2", new Linear(hiddenDim, hiddenDim)),
      this.module("4", new Linear(hiddenDim, bottleneckDim)),
    ];
  }

  /** x: (..., in) -> (..., bottleneck). */
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const [first, second, third] = this.layers;
      const h = second.forward(first.forward(x).gelu()).gelu(); // h: (..., hidden)
      return third.forward(h);
    });
  }
}

export class IBOTHead extends Module {
  readonly mlp: IBOTMlp;
  readonly last_layer: WeightNormLinear;
  /** The same module as last_layer (shared head). */
  readonly last_layer2: WeightNormLinear;

  constructor(config: IBOTHeadConfig) {
    super();
    const { inDim, outDim, hiddenDim = 2048, bottleneckDim = 256 } = config;
    this.mlp = this.module("mlp", new IBOTMlp(inDim, hiddenDim, bottleneckDim));
    // iBOT applies _init_weights before it creates the last layer, so v keeps PyTorch's default Linear init.
    for (const linear of this.mlp.layers) {
      linear.weight.truncNormal_(0, 0.02, -2, 2);
      linear.bias!.zero_();
    }
    this.last_layer = this.module("last_layer", new WeightNormLinear(bottleneckDim, outDim, { frozenG: true }));
    this.last_layer2 = this.module("last_layer2", this.last_layer);
  }

  /** x: (..., in) -> logits (..., out). */
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const z = F.normalize(this.mlp.forward(x), { p: 2, dim: -1, eps: 1e-12 }); // z: (..., bottleneck)
      return this.last_layer.forward(z);
    });
  }
}
