// kernels.h: the host launchers of the CUDA kernels in kernels/*.cu, the only surface the shim (native/src) sees.
// Raw pointers, sizes and a stream passed as void* (a cudaStream_t), so neither side needs the other's headers: the
// .cu files compile with plain nvcc (no torch headers, which CI's Debian torch lacks for CUDA) and the shim's .cpp
// files compile without the CUDA toolkit's headers. Each launcher returns 0 or a cudaError_t value; the caller turns
// a non-zero one into an exception with dc_kernels_error_string.
#ifndef DETAILCLIP_KERNELS_H
#define DETAILCLIP_KERNELS_H

#include <stdint.h>

namespace dc_kernels {

// Token selection (token_select.cu), one block per sample, one launch. scores: (batch, grid_h*grid_w) contiguous on
// the device; mask (batch, N) bytes (0/1, a torch bool tensor's storage), keep (batch, keep_cells*cell^2) and
// restore (batch, N) int64. Returns cudaErrorInvalidValue when the cell scratch does not fit in shared memory.
int select_tokens_f32(const float* scores, int64_t batch, int64_t grid_h, int64_t grid_w, int64_t cell,
                      int64_t keep_cells, uint8_t* mask, int64_t* keep, int64_t* restore, void* stream);
int select_tokens_f64(const double* scores, int64_t batch, int64_t grid_h, int64_t grid_w, int64_t cell,
                      int64_t keep_cells, uint8_t* mask, int64_t* keep, int64_t* restore, void* stream);

// Teacher CLS attention (cls_attention.cu): acc[b, j-1] += sum_h softmax_j(scale * q[b,h,0,:] . k[b,h,j,:]) for
// j = 1..tokens-1, the heads summed in a fixed order (deterministic, no atomics). qkv is the packed qkv Linear output
// (batch, tokens, 3*heads*head_dim) contiguous, in float32 (dtype 0), float16 (2) or bfloat16 (3) (the shim's dtype
// codes); acc is float32 (batch, tokens-1) contiguous. Softmax in float32.
int cls_attention_accumulate(const void* qkv, int32_t dtype, int64_t batch, int64_t tokens, int64_t heads,
                             int64_t head_dim, double scale, float* acc, void* stream);

const char* error_string(int code);

}  // namespace dc_kernels

#endif
