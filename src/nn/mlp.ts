// mlp.ts: the transformer feed-forward (Linear -> activation -> Linear). timm names the layers fc1/fc2, CLIP names
// them c_fc/c_proj; the names only change the state-dict keys, the TypeScript members are always fc1 and fc2.
import { type Tensor, tidy } from "../torch/mod.ts";
import { activate, type Activation } from "./activation.ts";
import { Linear } from "./linear.ts";
import { Module } from "./module.ts";

export interface MlpOptions {
  activation?: Activation;
  names?: readonly [string, string];
}

export class Mlp extends Module {
  readonly activation: Activation;
  readonly fc1: Linear; // dim -> hidden
  readonly fc2: Linear; // hidden -> dim

  constructor(dim: number, hidden: number, options: MlpOptions = {}) {
    super();
    const { activation = "gelu", names = ["fc1", "fc2"] } = options;
    this.activation = activation;
    this.fc1 = this.module(names[0], new Linear(dim, hidden));
    this.fc2 = this.module(names[1], new Linear(hidden, dim));
  }

  /** x: (..., dim) -> (..., dim). */
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const h = activate(this.fc1.forward(x), this.activation); // h: (..., hidden)
      return this.fc2.forward(h);
    });
  }
}
