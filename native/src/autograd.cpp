// autograd.cpp: the "autograd" section of detailclip.h: requires_grad, backward, and reading, setting and clearing
// the .grad of leaf tensors. The engine is libtorch's; these are thin doors into it.
#include <ATen/core/grad_mode.h>

#include <string>

#include "common.h"

namespace {

// The checks torch.Tensor.grad's Python setter makes, which mutable_grad() skips.
void check_grad_matches(const at::Tensor& t, const at::Tensor& grad) {
  if (grad.scalar_type() != t.scalar_type()) {
    throw std::invalid_argument(std::string("dc_set_grad: gradient dtype ") + c10::toString(grad.scalar_type()) +
                                " does not match the tensor's " + c10::toString(t.scalar_type()));
  }
  if (grad.device() != t.device()) {
    throw std::invalid_argument("dc_set_grad: gradient is on " + grad.device().str() + " but the tensor is on " +
                                t.device().str());
  }
  if (!grad.sizes().equals(t.sizes())) {
    throw std::invalid_argument("dc_set_grad: gradient shape " + c10::str(grad.sizes()) +
                                " does not match the tensor's " + c10::str(t.sizes()));
  }
}

}  // namespace

extern "C" {

int32_t dc_set_requires_grad(dc_tensor t, int32_t requires_grad) {
  DC_STATUS(dc::unwrap(t).requires_grad_(requires_grad != 0))
}

int32_t dc_requires_grad(dc_tensor t) { DC_COUNT(dc::unwrap(t).requires_grad() ? 1 : 0) }

int32_t dc_is_leaf(dc_tensor t) { DC_COUNT(dc::unwrap(t).is_leaf() ? 1 : 0) }

int32_t dc_backward(dc_tensor t, dc_tensor grad, int32_t retain_graph) {
  DC_STATUS({
    const at::Tensor gradient = grad == nullptr ? at::Tensor() : dc::unwrap(grad, "grad");
    dc::unwrap(t).backward(gradient, dc::optional<bool>(retain_graph != 0), false);
  })
}

int32_t dc_grad(dc_tensor t, dc_tensor* out) {
  DC_STATUS({
    if (out == nullptr) throw std::invalid_argument("dc_grad: output handle pointer is NULL");
    const at::Tensor& g = dc::unwrap(t).grad();
    *out = g.defined() ? dc::wrap(g) : nullptr;
  })
}

// A NULL grad clears it (p.grad = None).
int32_t dc_set_grad(dc_tensor t, dc_tensor grad) {
  DC_STATUS({
    at::Tensor& x = dc::unwrap(t);
    if (grad == nullptr) {
      x.mutable_grad().reset();
    } else {
      const at::Tensor& g = dc::unwrap(grad, "grad");
      check_grad_matches(x, g);
      x.mutable_grad() = g;
    }
  })
}

// As torch.optim.Optimizer.zero_grad: either drop the gradient or detach it from any graph and zero it in place.
int32_t dc_zero_grad(dc_tensor t, int32_t set_to_none) {
  DC_STATUS({
    at::Tensor& g = dc::unwrap(t).mutable_grad();
    if (g.defined()) {
      if (set_to_none != 0) {
        g.reset();
      } else {
        at::NoGradGuard no_grad;
        if (g.grad_fn()) {
          g.detach_();
        } else {
          g.requires_grad_(false);
        }
        g.zero_();
      }
    }
  })
}

dc_tensor dc_detach(dc_tensor t) { DC_TENSOR(dc::unwrap(t).detach()) }

int32_t dc_detach_(dc_tensor t) { DC_STATUS(dc::unwrap(t).detach_()) }

}  // extern "C"
