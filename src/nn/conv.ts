// conv.ts: torch.nn.Conv2d (square kernel and stride, no padding) with PyTorch's default initialisation. The ViT
// patch embedding is the only user; it keeps this random init and is frozen (docs/model.md#vision-encoder).
import { F, Tensor } from "../torch/mod.ts";
import { defaultBias, defaultWeight } from "./linear.ts";
import { Module } from "./module.ts";

export class Conv2d extends Module {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelSize: number;
  readonly stride: number;
  readonly weight: Tensor; // (out, in, k, k)
  readonly bias: Tensor | null; // (out)

  constructor(
    inChannels: number,
    outChannels: number,
    kernelSize: number,
    stride = 1,
    options: { bias?: boolean } = {},
  ) {
    super();
    const { bias = true } = options;
    this.inChannels = inChannels;
    this.outChannels = outChannels;
    this.kernelSize = kernelSize;
    this.stride = stride;
    const fanIn = inChannels * kernelSize * kernelSize;
    this.weight = this.parameter("weight", defaultWeight([outChannels, inChannels, kernelSize, kernelSize]));
    this.bias = bias ? this.parameter("bias", defaultBias(outChannels, fanIn)) : null;
  }

  /** x: (B, in, H, W) -> (B, out, H', W'). */
  forward(x: Tensor): Tensor {
    return F.conv2d(x, this.weight, this.bias, { stride: this.stride });
  }
}
