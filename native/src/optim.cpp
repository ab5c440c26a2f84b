// optim.cpp: the "optimizers, EMA, mixed precision" section of detailclip.h: foreach list updates, the EMA teacher
// update, one AdamW step with torch.optim.AdamW's arithmetic, and the grad-scaler helpers. Everything here mutates
// parameters or optimizer state in place, so it all runs under no-grad.
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <string>
#include <vector>

#include "common.h"

namespace {

// Gradients of the given parameters, for those that have one.
std::vector<at::Tensor> defined_grads(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> grads;
  grads.reserve(params.size());
  for (const at::Tensor& p : params) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  return grads;
}

// The same arithmetic as torch.optim.AdamW's single-tensor path (PyTorch 1.13), done list-wise; `step` counts this
// update. Parameters without a gradient are skipped, so their moments are left as they are.
void adamw_step(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& exp_avg,
                const std::vector<at::Tensor>& exp_avg_sq, double lr, double beta1, double beta2, double eps,
                double weight_decay, int64_t step) {
  if (step < 1) throw std::invalid_argument("dc_adamw_step_: step must be >= 1 (it counts this update), got " +
                                            std::to_string(step));
  std::vector<at::Tensor> p, g, m, v;
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& grad = params[i].grad();
    if (!grad.defined()) continue;
    p.push_back(params[i]);
    g.push_back(grad);
    m.push_back(exp_avg[i]);
    v.push_back(exp_avg_sq[i]);
  }
  if (p.empty()) return;

  // mul_(1) is exact, so skipping it when there is no decay changes nothing.
  if (weight_decay != 0.0) at::_foreach_mul_(p, 1.0 - lr * weight_decay);
  at::_foreach_mul_(m, beta1);
  at::_foreach_add_(m, g, 1.0 - beta1);
  at::_foreach_mul_(v, beta2);
  at::_foreach_addcmul_(v, g, g, 1.0 - beta2);

  const double bias_correction1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  const double step_size = lr / bias_correction1;
  std::vector<at::Tensor> denom = at::_foreach_sqrt(v);
  at::_foreach_div_(denom, std::sqrt(bias_correction2));
  at::_foreach_add_(denom, eps);
  at::_foreach_addcdiv_(p, m, denom, -step_size);
}

void foreach_lerp(const std::vector<at::Tensor>& tensors, const std::vector<at::Tensor>& ends, double weight) {
#if DC_TORCH_AT_LEAST(2, 1)
  if (!tensors.empty()) at::_foreach_lerp_(tensors, ends, at::Scalar(weight));
#else
  // No _foreach_lerp_ in 1.13; on the CPU the foreach ops are this loop anyway.
  for (size_t i = 0; i < tensors.size(); ++i) tensors[i].lerp_(ends[i], weight);
#endif
}

void amp_unscale(const std::vector<at::Tensor>& grads, at::Tensor& found_inf, double inv_scale) {
  if (found_inf.numel() != 1 || found_inf.scalar_type() != at::kFloat) {
    throw std::invalid_argument("dc_amp_unscale_: found_inf must be a 1-element f32 tensor, got " +
                                std::string(c10::toString(found_inf.scalar_type())) + " " +
                                c10::str(found_inf.sizes()));
  }
  if (grads.empty()) return;
  bool all_cuda = found_inf.is_cuda();
  for (const at::Tensor& g : grads) all_cuda = all_cuda && g.is_cuda();
  if (all_cuda) {
    // GradScaler's own kernel; it wants inv_scale as an f32 tensor beside found_inf.
    at::Tensor inv = at::full({1}, inv_scale, found_inf.options());
    at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv);
    return;
  }
  // libtorch 1.13 has no CPU kernel for it. Same contract without a host sync: the flag is accumulated as a device
  // tensor and only ever raised, never cleared. The check comes before the multiply, as in the kernel.
  at::Tensor any_bad;
  for (const at::Tensor& g : grads) {
    at::Tensor bad = at::logical_not(at::isfinite(g)).any().to(found_inf.device());
    any_bad = any_bad.defined() ? at::logical_or(any_bad, bad) : bad;
  }
  found_inf.masked_fill_(any_bad, 1.0);
  for (const at::Tensor& g : grads) g.mul_(inv_scale);
}

at::Tensor grad_norm(const std::vector<at::Tensor>& params) {
  const at::Device device = params.empty() ? at::Device(at::kCPU) : params.front().device();
  const std::vector<at::Tensor> grads = defined_grads(params);
  if (grads.empty()) return at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device));
  // As clip_grad_norm_: the norm of the per-tensor norms, each taken in f32 so half-precision gradients cannot
  // overflow the sum.
  std::vector<at::Tensor> norms = at::_foreach_norm(grads, 2);
  for (at::Tensor& n : norms) n = n.to(device, at::kFloat);
  return at::norm(at::stack(norms), 2);
}

}  // namespace

// The foreach ops reject empty lists on 1.13 while an empty parameter group is legal, hence the emptiness checks.
extern "C" {

int32_t dc_foreach_mul_scalar_(const dc_tensor* tensors, int64_t n, double scalar) {
  DC_STATUS({
    at::NoGradGuard no_grad;
    const std::vector<at::Tensor> t = dc::tensor_list(tensors, n);
    if (!t.empty()) at::_foreach_mul_(t, scalar);
  })
}

int32_t dc_foreach_add_list_(const dc_tensor* tensors, const dc_tensor* others, int64_t n, double alpha) {
  DC_STATUS({
    at::NoGradGuard no_grad;
    const std::vector<at::Tensor> t = dc::tensor_list(tensors, n);
    const std::vector<at::Tensor> o = dc::tensor_list(others, n);
    if (!t.empty()) at::_foreach_add_(t, o, alpha);
  })
}

int32_t dc_foreach_lerp_(const dc_tensor* tensors, const dc_tensor* ends, int64_t n, double weight) {
  DC_STATUS({
    at::NoGradGuard no_grad;
    foreach_lerp(dc::tensor_list(tensors, n), dc::tensor_list(ends, n), weight);
  })
}

int32_t dc_foreach_zero_(const dc_tensor* tensors, int64_t n) {
  DC_STATUS({
    at::NoGradGuard no_grad;
    const std::vector<at::Tensor> t = dc::tensor_list(tensors, n);
    if (!t.empty()) at::_foreach_zero_(t);
  })
}

int32_t dc_foreach_copy_(const dc_tensor* dst, const dc_tensor* src, int64_t n) {
  DC_STATUS({
    at::NoGradGuard no_grad;
    const std::vector<at::Tensor> d = dc::tensor_list(dst, n);
    const std::vector<at::Tensor> s = dc::tensor_list(src, n);
    // _foreach_copy_ only exists in recent 2.x releases; copy_ per tensor is what it falls back to off CUDA.
    for (size_t i = 0; i < d.size(); ++i) d[i].copy_(s[i]);
  })
}

int32_t dc_ema_update_(const dc_tensor* teacher, const dc_tensor* student, int64_t n, double momentum) {
  DC_STATUS({
    at::NoGradGuard no_grad;
    const std::vector<at::Tensor> t = dc::tensor_list(teacher, n);
    const std::vector<at::Tensor> s = dc::tensor_list(student, n);
    // teacher.mul_(m).add_(student, alpha=1-m), the reference's formula, rather than a lerp that rounds differently.
    if (!t.empty()) {
      at::_foreach_mul_(t, momentum);
      at::_foreach_add_(t, s, 1.0 - momentum);
    }
  })
}

int32_t dc_adamw_step_(const dc_tensor* params, const dc_tensor* exp_avg, const dc_tensor* exp_avg_sq, int64_t n,
                       double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step) {
  DC_STATUS({
    at::NoGradGuard no_grad;
    adamw_step(dc::tensor_list(params, n), dc::tensor_list(exp_avg, n), dc::tensor_list(exp_avg_sq, n), lr, beta1,
               beta2, eps, weight_decay, step);
  })
}

int32_t dc_amp_unscale_(const dc_tensor* grads, int64_t n, dc_tensor found_inf, double inv_scale) {
  DC_STATUS({
    at::NoGradGuard no_grad;
    amp_unscale(dc::tensor_list(grads, n), dc::unwrap(found_inf, "found_inf"), inv_scale);
  })
}

dc_tensor dc_grad_norm(const dc_tensor* params, int64_t n) {
  DC_GUARD_BEGIN
  at::NoGradGuard no_grad;
  return dc::wrap(grad_norm(dc::tensor_list(params, n)));
  DC_GUARD_END(nullptr)
}

}  // extern "C"
