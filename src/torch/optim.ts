// optim.ts: the in-place, no-grad update primitives of the optimizer, the EMA teacher and the grad scaler. Each
// works on a whole list of tensors in one native call (foreach kernels where libtorch has them).
import { native } from "./lib.ts";
import { check, handleList, own, Tensor } from "./tensor.ts";

const i64 = BigInt;

function sameLength(op: string, a: readonly Tensor[], b: readonly Tensor[]): void {
  if (a.length !== b.length) throw new RangeError(`${op}: lists differ in length (${a.length} vs ${b.length})`);
}

export function foreachMul_(tensors: readonly Tensor[], scalar: number): void {
  check(native().dc_foreach_mul_scalar_(handleList(tensors), i64(tensors.length), scalar), "foreach_mul_", [tensors]);
}

/** tensors[i] += alpha * others[i]. */
export function foreachAdd_(tensors: readonly Tensor[], others: readonly Tensor[], alpha = 1): void {
  sameLength("foreach_add_", tensors, others);
  const status = native().dc_foreach_add_list_(handleList(tensors), handleList(others), i64(tensors.length), alpha);
  check(status, "foreach_add_", [tensors, others]);
}

export function foreachLerp_(tensors: readonly Tensor[], ends: readonly Tensor[], weight: number): void {
  sameLength("foreach_lerp_", tensors, ends);
  const status = native().dc_foreach_lerp_(handleList(tensors), handleList(ends), i64(tensors.length), weight);
  check(status, "foreach_lerp_", [tensors, ends]);
}

export function foreachZero_(tensors: readonly Tensor[]): void {
  check(native().dc_foreach_zero_(handleList(tensors), i64(tensors.length)), "foreach_zero_", [tensors]);
}

export function foreachCopy_(dst: readonly Tensor[], src: readonly Tensor[]): void {
  sameLength("foreach_copy_", dst, src);
  check(native().dc_foreach_copy_(handleList(dst), handleList(src), i64(dst.length)), "foreach_copy_", [dst, src]);
}

/** teacher <- momentum * teacher + (1 - momentum) * student, pairwise. */
export function emaUpdate_(teacher: readonly Tensor[], student: readonly Tensor[], momentum: number): void {
  sameLength("ema_update_", teacher, student);
  const status = native().dc_ema_update_(handleList(teacher), handleList(student), i64(teacher.length), momentum);
  check(status, "ema_update_", [teacher, student]);
}

export interface AdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** One AdamW step of a parameter group (torch.optim.AdamW semantics); step is 1-based, counted after the update. */
export function adamwStep_(
  params: readonly Tensor[],
  expAvg: readonly Tensor[],
  expAvgSq: readonly Tensor[],
  hyper: AdamWHyper,
  step: number,
): void {
  sameLength("adamw_step_", params, expAvg);
  sameLength("adamw_step_", params, expAvgSq);
  const status = native().dc_adamw_step_(
    handleList(params),
    handleList(expAvg),
    handleList(expAvgSq),
    i64(params.length),
    hyper.lr,
    hyper.beta1,
    hyper.beta2,
    hyper.eps,
    hyper.weightDecay,
    i64(step),
  );
  check(status, "adamw_step_", [params]);
}

/** grads *= invScale; foundInf (1-element f32) becomes 1 when any gradient is not finite. */
export function ampUnscale_(grads: readonly Tensor[], foundInf: Tensor, invScale: number): void {
  const status = native().dc_amp_unscale_(handleList(grads), i64(grads.length), foundInf.handle, invScale);
  check(status, "amp_unscale_", [grads, foundInf]);
}

/** The total L2 norm of the parameters' gradients, as a 0-d tensor (no host sync). */
export function gradNorm(params: readonly Tensor[]): Tensor {
  return own(native().dc_grad_norm(handleList(params), i64(params.length)), "grad_norm", [params]);
}
