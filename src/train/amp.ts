// amp.ts: mixed precision. bf16 autocast needs no scaler; fp16 uses this dynamic grad scaler (libtorch has no C++
// GradScaler, docs/training.md#mixed-precision): scale the loss, unscale the gradients before the step, skip the step
// and back the scale off when any gradient is not finite, grow it after `growthInterval` clean steps. The inf check
// stays on the gradients' device; the only host read is the one-element flag, once per optimizer step, and only in
// fp16 mode.
//
// The arithmetic is torch.cuda.amp.GradScaler's (its _amp_update_scale_ kernel): the scale is a float32, so every
// update rounds to float32, and growth that would reach float32 infinity is not applied; the unscale multiplies by
// the float32 reciprocal of the scale. tests/amp_test.ts compares step by step against PyTorch's GradScaler.
import { ampUnscale_, autocast, type Device, noGrad, Tensor, TorchError } from "../torch/mod.ts";

export type Precision = "fp32" | "bf16" | "fp16";

/**
 * Why this libtorch cannot autocast to `precision` on `device`, or null when it can (fp32 needs nothing). Asked once
 * before training so that, e.g., fp16 on the CPU of libtorch 1.13 (whose CPU autocast is bf16 only) is one clear
 * option error instead of a failure inside the first step.
 */
export function autocastUnsupported(device: Device, precision: Precision): string | null {
  if (precision === "fp32") return null;
  try {
    autocast(device === "cpu" ? "cpu" : "cuda", precision === "bf16" ? "bfloat16" : "float16", () => {});
    return null;
  } catch (error) {
    if (error instanceof TorchError) return error.message;
    throw error;
  }
}

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
  /** 1-element f32 flag on the gradients' device (made on first use), so the check never leaves that device. */
  #foundInf: Tensor | null = null;

  constructor(
    options: { initScale?: number; growthFactor?: number; backoffFactor?: number; growthInterval?: number } = {},
  ) {
    this.scale = Math.fround(options.initScale ?? 2 ** 16);
    this.growthFactor = options.growthFactor ?? 2;
    this.backoffFactor = options.backoffFactor ?? 0.5;
    this.growthInterval = options.growthInterval ?? 2000;
    // PyTorch asserts the two factors; a scale of 0 or infinity would skip every step or none.
    const bad = !(this.scale > 0 && Number.isFinite(this.scale))
      ? `initScale ${options.initScale}`
      : !(this.growthFactor > 1)
      ? `growthFactor ${this.growthFactor} (must be > 1)`
      : !(this.backoffFactor > 0 && this.backoffFactor < 1)
      ? `backoffFactor ${this.backoffFactor} (must be in (0, 1))`
      : !(Number.isSafeInteger(this.growthInterval) && this.growthInterval >= 1)
      ? `growthInterval ${this.growthInterval} (must be an integer >= 1)`
      : null;
    if (bad !== null) throw new RangeError(`GradScaler: invalid ${bad}`);
  }

  /**
   * Unscales the gradients of `params` in place (so clipping after this sees the true gradients) and updates the
   * scale. Returns true when the optimizer should step (all gradients finite), false when the step must be skipped.
   */
  unscaleAndUpdate(params: readonly Tensor[]): boolean {
    const grads = params.map((p) => p.grad).filter((g): g is Tensor => g !== null);
    try {
      const foundInf = noGrad(() => {
        const flag = this.#flagOn(grads[0]?.device ?? "cpu");
        flag.zero_();
        ampUnscale_(grads, flag, Math.fround(1 / this.scale));
        return flag.item() !== 0;
      });
      this.update(foundInf);
      return !foundInf;
    } finally {
      for (const g of grads) g.dispose();
    }
  }

  /** The scale update of one optimizer step (PyTorch's GradScaler.update after the step or the skipped step). */
  update(foundInf: boolean): void {
    if (foundInf) {
      this.scale = Math.fround(this.scale * this.backoffFactor);
      this.growthTracker = 0;
      return;
    }
    this.growthTracker += 1;
    if (this.growthTracker === this.growthInterval) {
      const grown = Math.fround(this.scale * this.growthFactor);
      if (Number.isFinite(grown)) this.scale = grown; // never grow to float32 infinity
      this.growthTracker = 0;
    }
  }

  state(): GradScalerState {
    return { scale: this.scale, growthTracker: this.growthTracker };
  }

  load(state: GradScalerState): void {
    this.scale = Math.fround(state.scale);
    this.growthTracker = state.growthTracker;
  }

  dispose(): void {
    this.#foundInf?.dispose();
    this.#foundInf = null;
  }

  #flagOn(device: Device): Tensor {
    if (this.#foundInf?.device !== device) {
      this.#foundInf?.dispose();
      this.#foundInf = Tensor.zeros([1], { device }).keep();
    }
    return this.#foundInf;
  }
}
