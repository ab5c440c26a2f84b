// cuda.cpp: the "CUDA kernels and device switches" section of detailclip.h: the teacher CLS-attention accumulation
// (fused kernel on CUDA, libtorch composition elsewhere), TF32 switches and the caching allocator's peak statistics.
// Everything that needs CUDA headers sits under DC_WITH_CUDA (a CUDA libtorch) and DC_WITH_KERNELS (kernels/*.cu
// compiled by nvcc), so the same file builds against Debian's CPU-only libtorch 1.13.
#include <stdexcept>
#include <string>

#include "common.h"

#if DC_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#endif
#if DC_WITH_KERNELS
#include "../../kernels/kernels.h"
#endif

namespace {

// The reference composition (what src/nn/attention.ts does on the CPU): row 0 of softmax(q k^T * scale) per head,
// patch columns, summed over heads, added to acc.
void cls_attention_composed(at::Tensor& acc, const at::Tensor& qkv, int64_t heads, double scale) {
  const int64_t b = qkv.size(0), n = qkv.size(1), width = qkv.size(2) / 3;
  const at::Tensor split = qkv.reshape({b, n, 3, heads, width / heads}).permute({2, 0, 3, 1, 4});  // (3, B, H, N, hd)
  const at::Tensor q0 = split.select(0, 0).narrow(2, 0, 1);                                        // (B, H, 1, N)
  const at::Tensor k = split.select(0, 1);
  const at::Tensor probs = at::softmax(q0.matmul(k.transpose(-2, -1)).mul(scale), -1).squeeze(2);  // (B, H, N)
  acc.add_(probs.slice(2, 1).sum(1).to(acc.scalar_type()));
}

void cls_attention(at::Tensor& acc, const at::Tensor& qkv, int64_t heads, double scale) {
  const std::string where = "dc_cls_attention_accumulate_: ";
  if (qkv.dim() != 3 || heads <= 0 || qkv.size(2) % (3 * heads) != 0) {
    throw std::invalid_argument(where + "qkv must be (B, N, 3*heads*head_dim) with heads > 0, got " +
                                c10::str(qkv.sizes()) + " and " + std::to_string(heads) + " heads");
  }
  if (qkv.size(1) < 2) throw std::invalid_argument(where + "qkv needs at least one token beside the CLS token");
  if (acc.scalar_type() != at::kFloat || acc.dim() != 2 || acc.size(0) != qkv.size(0) ||
      acc.size(1) != qkv.size(1) - 1 || !acc.is_contiguous() || acc.device() != qkv.device()) {
    throw std::invalid_argument(where + "acc must be a contiguous float32 (B, N-1) = (" +
                                std::to_string(qkv.size(0)) + ", " + std::to_string(qkv.size(1) - 1) +
                                ") tensor on the qkv device, got " + std::string(c10::toString(acc.scalar_type())) +
                                " " + c10::str(acc.sizes()) + " on " + acc.device().str());
  }
  at::NoGradGuard no_grad;
  const at::Tensor input = qkv.detach();
#if DC_WITH_KERNELS
  const at::ScalarType type = input.scalar_type();
  if (input.is_cuda() && (type == at::kFloat || type == at::kHalf || type == at::kBFloat16)) {
    const at::Tensor packed = input.contiguous();
    const c10::cuda::CUDAGuard guard(packed.device());
    const int32_t code = type == at::kFloat ? 0 : (type == at::kHalf ? 2 : 3);
    const int64_t head_dim = packed.size(2) / 3 / heads;
    const int status = dc_kernels::cls_attention_accumulate(packed.data_ptr(), code, packed.size(0), packed.size(1),
                                                            heads, head_dim, scale, acc.data_ptr<float>(),
                                                            at::cuda::getCurrentCUDAStream().stream());
    if (status != 0) throw std::runtime_error(where + "CUDA kernel failed: " + dc_kernels::error_string(status));
    return;
  }
#endif
  cls_attention_composed(acc, input, heads, scale);
}

}  // namespace

extern "C" {

int32_t dc_kernels_compiled(void) {
#if DC_WITH_KERNELS
  return 1;
#else
  return 0;
#endif
}

int32_t dc_cls_attention_accumulate_(dc_tensor acc, dc_tensor qkv, int64_t heads, double scale) {
  DC_STATUS(cls_attention(dc::unwrap(acc, "acc"), dc::unwrap(qkv, "qkv"), heads, scale))
}

int32_t dc_set_allow_tf32(int32_t enabled) {
  DC_STATUS({
    at::globalContext().setAllowTF32CuBLAS(enabled != 0);
    at::globalContext().setAllowTF32CuDNN(enabled != 0);
  })
}

int64_t dc_cuda_max_memory_allocated(int32_t device) {
  DC_GUARD_BEGIN
#if DC_WITH_CUDA
  if (device < 0 || !at::hasCUDA()) throw std::invalid_argument("cuda_max_memory_allocated: not a CUDA device");
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
  // Index 0 is StatType::AGGREGATE, whose namespace moved between releases (c10::cuda:: then c10::CachingAllocator::).
  return stats.allocated_bytes[0].peak;
#else
  throw std::runtime_error("cuda_max_memory_allocated: this libtorch has no CUDA");
#endif
  DC_GUARD_END(-1)
}

int32_t dc_cuda_reset_peak_memory_stats(int32_t device) {
  DC_STATUS({
#if DC_WITH_CUDA
    if (device < 0 || !at::hasCUDA()) throw std::invalid_argument("cuda_reset_peak_memory_stats: not a CUDA device");
    c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
#else
    throw std::runtime_error("cuda_reset_peak_memory_stats: this libtorch has no CUDA");
#endif
  })
}

}  // extern "C"
