// test_hooks.ts: the NaN paths cannot be reached on purpose by a healthy run, so the tests poison one through the
// hidden --test-hook-inject-nan flag (options.testHookInjectNan): STEP:TERM multiplies that loss term of the first
// micro-batch of optimizer step STEP by NaN; STEP:parameters poisons the first trainable parameter right after that
// step's update (its loss still finite), which only the check before a save can find.
import { noGrad, type Tensor } from "../torch/mod.ts";
import type { TrainOptions } from "./options.ts";

export class NanInjection {
  private constructor(readonly step: number, readonly term: string) {}

  /** The injection the options ask for, or null (every real run). */
  static fromOptions(options: TrainOptions): NanInjection | null {
    const spec = options.testHookInjectNan;
    if (!spec) return null;
    const [step, term] = spec.split(":");
    return new NanInjection(Number(step), term ?? "loss");
  }

  /** After the forward of (step, micro): the chosen loss term (the total loss if the model has no such term). */
  poisonLoss(step: number, micro: number, terms: Record<string, Tensor>): void {
    if (this.step !== step || micro !== 0 || this.term === "parameters") return;
    (terms[this.term] ?? terms.loss).mul_(Number.NaN);
  }

  /** After the update of `step`: the first trainable parameter. */
  poisonParameters(step: number, trainable: Tensor[]): void {
    if (this.term === "parameters" && this.step === step) noGrad(() => trainable[0].mul_(Number.NaN));
  }
}
