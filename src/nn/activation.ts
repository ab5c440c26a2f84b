// activation.ts: the two activations the towers use. GELU is the exact erf form (timm, MAE decoder, iBOT head);
// QuickGELU is OpenAI CLIP's sigmoid approximation, which the text tower was trained with and must keep.
import { type Tensor, tidy } from "../torch/mod.ts";

export type Activation = "gelu" | "quick_gelu";

/** x * sigmoid(1.702 x). */
export function quickGelu(x: Tensor): Tensor {
  return tidy(() => x.mul(x.mul(1.702).sigmoid()));
}

export function activate(x: Tensor, activation: Activation): Tensor {
  return activation === "gelu" ? x.gelu() : quickGelu(x);
}
