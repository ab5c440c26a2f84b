// amp.ts: mixed precision. bf16 autocast needs no scaler; fp16 uses this dynamic grad scaler (libtorch has no C++
// GradScaler, SPEC §11): scale the loss, unscale the gradients before the step, skip the step and halve the scale
// when any gradient is not finite, double it after `growthInterval` clean steps. The inf check stays on the device;
// the only host read is the one-element flag, once per optimizer step, and only in fp16 mode.
import { ampUnscale_, type Device, noGrad, Tensor } from "../torch/mod.ts";

export type Precision = "fp32" | "bf16" | "fp16";

export interface GradScalerState {
  scale: number;
  growthTracker: number;
}

export class GradScaler {
  scale: number;
  growthTracker = 0;
  readonly growthFactor: number;
  readonly backoffFactor: number;
  readonly growthInterval: number;
  readonly #foundInf: Tensor;

  constructor(
    options: {
      initScale?: number;
      growthFactor?: number;
      backoffFactor?: number;
      growthInterval?: number;
      /** Where the gradients live (cpu). */
      device?: Device;
    } = {},
  ) {
    this.scale = options.initScale ?? 2 ** 16;
    this.growthFactor = options.growthFactor ?? 2;
    this.backoffFactor = options.backoffFactor ?? 0.5;
    this.growthInterval = options.growthInterval ?? 2000;
    // Beside the gradients: with every tensor on the GPU the unscale is torch's own fused kernel
    // (_amp_foreach_non_finite_check_and_unscale_); a CPU flag would send CUDA gradients down the per-tensor fallback.
    this.#foundInf = Tensor.zeros([1], { device: options.device ?? "cpu" }).keep();
  }

  /**
   * Unscales the gradients of `params` in place and updates the scale. Returns true when the optimizer should
   * step (all gradients finite), false when the step must be skipped.
   */
  unscaleAndUpdate(params: readonly Tensor[]): boolean {
    const grads = params.map((p) => p.grad).filter((g): g is Tensor => g !== null);
    try {
      const foundInf = noGrad(() => {
        this.#foundInf.zero_();
        ampUnscale_(grads, this.#foundInf, 1 / this.scale);
        return this.#foundInf.item() !== 0;
      });
      if (foundInf) {
        this.scale *= this.backoffFactor;
        this.growthTracker = 0;
        return false;
      }
      this.growthTracker += 1;
      if (this.growthTracker === this.growthInterval) {
        this.scale *= this.growthFactor;
        this.growthTracker = 0;
      }
      return true;
    } finally {
      for (const g of grads) g.dispose();
    }
  }

  state(): GradScalerState {
    return { scale: this.scale, growthTracker: this.growthTracker };
  }

  load(state: GradScalerState): void {
    this.scale = state.scale;
    this.growthTracker = state.growthTracker;
  }

  dispose(): void {
    this.#foundInf.dispose();
  }
}
