// cls_attention.cu: the teacher's CLS-row attention for token removal (docs/parity.md#teacher-attention-memory) without
// the (B, H, N, N) map: one block per sample reads the packed qkv Linear output, forms softmax(scale * q_cls . k_j)
// over the N keys for each head in turn, and adds the head sum of the patch columns (j >= 1) into a float32 running sum
// (B, N-1). The block output of the layer still goes through libtorch's fused attention; this kernel replaces only the
// row-0 matmul, softmax, slice, head sum and accumulate (five launches and two (B, H, N) temporaries per layer). Heads
// are summed in a fixed order and reductions use a fixed shuffle tree, so the result is deterministic. No torch
// headers.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels.h"

namespace dc_kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

__device__ inline float to_float(float x) { return x; }
__device__ inline float to_float(__half x) { return __half2float(x); }
__device__ inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// Block-wide reduction (max or sum) in a fixed order: butterfly within warps, then warp 0 over the warp partials.
template <bool kMax>
__device__ float block_reduce(float v, float* partials) {
  for (int o = 16; o > 0; o >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, v, o);
    v = kMax ? fmaxf(v, other) : v + other;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) partials[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kWarps ? partials[lane] : (kMax ? -INFINITY : 0.0f);
    for (int o = 16; o > 0; o >>= 1) {
      const float other = __shfl_xor_sync(0xffffffffu, v, o);
      v = kMax ? fmaxf(v, other) : v + other;
    }
    if (lane == 0) partials[0] = v;
  }
  __syncthreads();
  const float result = partials[0];
  __syncthreads();  // partials is reused by the next reduction
  return result;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) cls_attention_kernel(const T* __restrict__ qkv, int64_t tokens,
                                                                 int64_t heads, int64_t head_dim, float scale,
                                                                 float* __restrict__ acc) {
  // Scratch: q_cls (head_dim), logits (tokens), the head sum (tokens), kWarps reduction partials.
  extern __shared__ __align__(16) float smem[];
  float* q = smem;
  float* logits = q + head_dim;
  float* head_sum = logits + tokens;
  float* partials = head_sum + tokens;
  const int64_t width = heads * head_dim;
  const T* row0 = qkv + blockIdx.x * tokens * 3 * width;

  for (int64_t j = threadIdx.x; j < tokens; j += blockDim.x) head_sum[j] = 0.0f;
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) q[d] = to_float(row0[h * head_dim + d]);
    __syncthreads();
    float local_max = -INFINITY;
    for (int64_t j = threadIdx.x; j < tokens; j += blockDim.x) {
      const T* k = row0 + j * 3 * width + width + h * head_dim;  // [q | k | v] thirds, heads contiguous in each
      float dot = 0.0f;
      for (int64_t d = 0; d < head_dim; ++d) dot += q[d] * to_float(k[d]);
      logits[j] = dot * scale;
      local_max = fmaxf(local_max, logits[j]);
    }
    const float max = block_reduce<true>(local_max, partials);
    float local_sum = 0.0f;
    for (int64_t j = threadIdx.x; j < tokens; j += blockDim.x) {
      logits[j] = expf(logits[j] - max);  // expf, not __expf: the masks rank these sums
      local_sum += logits[j];
    }
    const float inv = 1.0f / block_reduce<false>(local_sum, partials);
    for (int64_t j = threadIdx.x; j < tokens; j += blockDim.x) head_sum[j] += logits[j] * inv;
    __syncthreads();  // q is rewritten by the next head
  }
  float* out = acc + blockIdx.x * (tokens - 1);
  for (int64_t j = 1 + threadIdx.x; j < tokens; j += blockDim.x) out[j - 1] += head_sum[j];
}

template <typename T>
int launch(const void* qkv, int64_t batch, int64_t tokens, int64_t heads, int64_t head_dim, double scale, float* acc,
           void* stream) {
  const size_t shared = static_cast<size_t>(head_dim + 2 * tokens + kWarps) * sizeof(float);
  if (shared > 48 * 1024 || batch > 0x7fffffff) return static_cast<int>(cudaErrorInvalidValue);
  cls_attention_kernel<T><<<static_cast<unsigned>(batch), kThreads, shared, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const T*>(qkv), tokens, heads, head_dim, static_cast<float>(scale), acc);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int cls_attention_accumulate(const void* qkv, int32_t dtype, int64_t batch, int64_t tokens, int64_t heads,
                             int64_t head_dim, double scale, float* acc, void* stream) {
  if (batch == 0 || tokens < 2) return 0;
  switch (dtype) {
    case 0: return launch<float>(qkv, batch, tokens, heads, head_dim, scale, acc, stream);
    case 2: return launch<__half>(qkv, batch, tokens, heads, head_dim, scale, acc, stream);
    case 3: return launch<__nv_bfloat16>(qkv, batch, tokens, heads, head_dim, scale, acc, stream);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}

}  // namespace dc_kernels
