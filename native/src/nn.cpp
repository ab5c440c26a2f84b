// nn.cpp: the "linear algebra and neural-network functions" section of detailclip.h: matmul, linear, conv patch
// embedding, normalisations, losses, resampling and attention (fused on libtorch >= 2.0, composed on 1.13).
#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <ATen/core/Reduction.h>

#include "common.h"

namespace {

int64_t reduction_code(int32_t code, const char* function) {
  switch (code) {
    case 0: return at::Reduction::None;
    case 1: return at::Reduction::Mean;
    case 2: return at::Reduction::Sum;
    default:
      throw std::invalid_argument(std::string(function) + ": unknown reduction code " + std::to_string(code) +
                                  " (0 none, 1 mean, 2 sum)");
  }
}

at::Tensor softmax_like(bool log, const at::Tensor& t, int64_t dim, int32_t dtype) {
  dc::optional<at::ScalarType> type;
  if (dtype >= 0) type = dc::scalar_type(dtype);
  return log ? at::log_softmax(t, dim, type) : at::softmax(t, dim, type);
}

at::Tensor interpolate(const at::Tensor& x, int64_t out_h, int64_t out_w, int32_t mode, bool align_corners) {
  if (x.dim() != 4) {
    throw std::invalid_argument("dc_interpolate: input must be 4-D (N, C, H, W), got " + std::to_string(x.dim()) +
                                "-D " + c10::str(x.sizes()));
  }
  const std::array<int64_t, 2> size{out_h, out_w};
  // Scales are passed explicitly (as F.interpolate does with size=) so the IntArrayRef overload is chosen, not the
  // `.vec` one that takes optional scale factors.
  switch (mode) {
    case 0: return at::upsample_nearest2d(x, size, dc::nullopt, dc::nullopt);
    case 1: return at::upsample_bilinear2d(x, size, align_corners, dc::nullopt, dc::nullopt);
    case 2: return at::upsample_bicubic2d(x, size, align_corners, dc::nullopt, dc::nullopt);
    default:
      throw std::invalid_argument("dc_interpolate: unknown mode " + std::to_string(mode) +
                                  " (0 nearest, 1 bilinear, 2 bicubic)");
  }
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const dc::optional<at::Tensor>& mask, double scale) {
#if DC_TORCH_AT_LEAST(2, 0)
  dc::optional<at::Tensor> m = mask;
  // The fused kernels accept a bool mask or a float mask of the query's dtype; an f32 mask beside bf16 activations
  // (autocast off) would be rejected, so it follows q.
  if (m && m->scalar_type() != at::kBool && m->scalar_type() != q.scalar_type()) m = m->to(q.scalar_type());
#if DC_TORCH_AT_LEAST(2, 1)
  return at::scaled_dot_product_attention(q, k, v, m, 0.0, false, dc::optional<double>(scale));
#else
  // 2.0 has no scale argument and always uses 1/sqrt(E); fold the ratio into q.
  const double ratio = scale * std::sqrt(static_cast<double>(q.size(-1)));
  return at::scaled_dot_product_attention(q * ratio, k, v, m, 0.0, false);
#endif
#else
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1)) * scale;
  if (mask) {
    if (mask->scalar_type() == at::kBool) {
      // A bool mask means "may attend" (as in 2.x's SDPA); turn it into the additive form.
      scores = scores.masked_fill(mask->logical_not(), -std::numeric_limits<double>::infinity());
    } else {
      scores = scores + *mask;
    }
  }
  return at::matmul(at::softmax(scores, -1), v);
#endif
}

}  // namespace

extern "C" {

dc_tensor dc_matmul(dc_tensor a, dc_tensor b) { DC_TENSOR(at::matmul(dc::unwrap(a, "a"), dc::unwrap(b, "b"))) }

dc_tensor dc_bmm(dc_tensor a, dc_tensor b) { DC_TENSOR(at::bmm(dc::unwrap(a, "a"), dc::unwrap(b, "b"))) }

dc_tensor dc_linear(dc_tensor x, dc_tensor weight, dc_tensor bias) {
  DC_TENSOR(at::linear(dc::unwrap(x, "x"), dc::unwrap(weight, "weight"), dc::optional_tensor(bias)))
}

dc_tensor dc_conv2d(dc_tensor x, dc_tensor weight, dc_tensor bias, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                    int64_t pad_w, int64_t groups) {
  DC_GUARD_BEGIN
  const std::array<int64_t, 2> stride{stride_h, stride_w};
  const std::array<int64_t, 2> padding{pad_h, pad_w};
  const std::array<int64_t, 2> dilation{1, 1};
  return dc::wrap(at::conv2d(dc::unwrap(x, "x"), dc::unwrap(weight, "weight"), dc::optional_tensor(bias), stride,
                             padding, dilation, groups));
  DC_GUARD_END(nullptr)
}

dc_tensor dc_embedding(dc_tensor weight, dc_tensor indices) {
  DC_TENSOR(at::embedding(dc::unwrap(weight, "weight"), dc::unwrap(indices, "indices")))
}

dc_tensor dc_softmax(dc_tensor t, int64_t dim, int32_t dtype) {
  DC_TENSOR(softmax_like(false, dc::unwrap(t), dim, dtype))
}

dc_tensor dc_log_softmax(dc_tensor t, int64_t dim, int32_t dtype) {
  DC_TENSOR(softmax_like(true, dc::unwrap(t), dim, dtype))
}

dc_tensor dc_layer_norm(dc_tensor x, const int64_t* normalized_shape, int64_t ndim, dc_tensor weight, dc_tensor bias,
                        double eps) {
  DC_GUARD_BEGIN
  const std::vector<int64_t> shape = dc::int_list(normalized_shape, ndim);
  return dc::wrap(
      at::layer_norm(dc::unwrap(x, "x"), shape, dc::optional_tensor(weight), dc::optional_tensor(bias), eps));
  DC_GUARD_END(nullptr)
}

dc_tensor dc_normalize(dc_tensor t, double p, int64_t dim, double eps) {
  DC_GUARD_BEGIN
  // The same composition as torch.nn.functional.normalize, so gradients match it exactly.
  const at::Tensor& x = dc::unwrap(t);
  const std::array<int64_t, 1> dims{dim};
  at::Tensor denom = at::norm(x, dc::optional<at::Scalar>(p), dims, true).clamp_min(eps).expand_as(x);
  return dc::wrap(x / denom);
  DC_GUARD_END(nullptr)
}

dc_tensor dc_cross_entropy(dc_tensor logits, dc_tensor target, dc_tensor weight, int32_t reduction,
                           int64_t ignore_index, double label_smoothing) {
  DC_TENSOR(at::cross_entropy_loss(dc::unwrap(logits, "logits"), dc::unwrap(target, "target"),
                                   dc::optional_tensor(weight), reduction_code(reduction, "dc_cross_entropy"),
                                   ignore_index, label_smoothing))
}

dc_tensor dc_mse_loss(dc_tensor a, dc_tensor b, int32_t reduction) {
  DC_TENSOR(at::mse_loss(dc::unwrap(a, "a"), dc::unwrap(b, "b"), reduction_code(reduction, "dc_mse_loss")))
}

dc_tensor dc_interpolate(dc_tensor x, int64_t out_h, int64_t out_w, int32_t mode, int32_t align_corners) {
  DC_TENSOR(interpolate(dc::unwrap(x, "x"), out_h, out_w, mode, align_corners != 0))
}

dc_tensor dc_avg_pool2d(dc_tensor x, int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w) {
  DC_GUARD_BEGIN
  const std::array<int64_t, 2> kernel{kernel_h, kernel_w};
  const std::array<int64_t, 2> stride{stride_h, stride_w};
  const std::array<int64_t, 2> padding{0, 0};
  return dc::wrap(at::avg_pool2d(dc::unwrap(x, "x"), kernel, stride, padding));
  DC_GUARD_END(nullptr)
}

dc_tensor dc_one_hot(dc_tensor indices, int64_t num_classes) {
  DC_TENSOR(at::one_hot(dc::unwrap(indices, "indices"), num_classes))
}

dc_tensor dc_scaled_dot_product_attention(dc_tensor q, dc_tensor k, dc_tensor v, dc_tensor mask, double scale) {
  DC_TENSOR(attention(dc::unwrap(q, "q"), dc::unwrap(k, "k"), dc::unwrap(v, "v"), dc::optional_tensor(mask), scale))
}

}  // extern "C"
