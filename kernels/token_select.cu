// token_select.cu: attention-guided token selection on the GPU in one launch (one block per sample): patch scores ->
// pooled cell scores -> per-sample top-k cells -> mask, ids_keep (raster order), ids_restore. The arithmetic lives in
// token_select_impl.h, shared with the CPU test that holds it equal to native/src/prune.cpp bit for bit; this file
// only maps it onto threads: one thread per cell for pooling and ranking (ranks by counting, no sort), one per patch
// for the outputs. Cell scores and keep flags stay in shared memory, so the only global traffic is the B x N scores
// in and the three outputs out. No torch headers (see kernels.h).
#include <cuda_runtime.h>

#include "kernels.h"
#include "token_select_impl.h"

namespace dc_kernels {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads) select_tokens_kernel(const T* __restrict__ scores, int64_t grid_h,
                                                                 int64_t grid_w, int64_t cell, int64_t keep_cells,
                                                                 uint8_t* __restrict__ mask, int64_t* __restrict__ keep,
                                                                 int64_t* __restrict__ restore) {
  // Scratch: C cell scores (T), then C keep flags. Aligned for double.
  extern __shared__ __align__(16) unsigned char scratch[];
  const int64_t cells = (grid_h / cell) * (grid_w / cell);
  const int64_t patches = grid_h * grid_w;
  const int64_t kept_patches = keep_cells * cell * cell;
  T* cell_scores = reinterpret_cast<T*>(scratch);
  uint8_t* cell_kept = scratch + cells * static_cast<int64_t>(sizeof(T));
  const int64_t b = blockIdx.x;
  const T* s = scores + b * patches;

  for (int64_t c = threadIdx.x; c < cells; c += blockDim.x) cell_scores[c] = pool_cell(s, grid_w, cell, c);
  __syncthreads();
  for (int64_t c = threadIdx.x; c < cells; c += blockDim.x) {
    cell_kept[c] = cell_rank(cell_scores, cells, c) < keep_cells ? 1 : 0;
  }
  __syncthreads();
  for (int64_t p = threadIdx.x; p < patches; p += blockDim.x) {
    write_patch(cell_kept, grid_w, cell, kept_patches, p, mask + b * patches, keep + b * kept_patches,
                restore + b * patches);
  }
}

template <typename T>
int launch(const T* scores, int64_t batch, int64_t grid_h, int64_t grid_w, int64_t cell, int64_t keep_cells,
           uint8_t* mask, int64_t* keep, int64_t* restore, void* stream) {
  if (batch == 0) return 0;
  const int64_t cells = (grid_h / cell) * (grid_w / cell);
  const size_t shared = static_cast<size_t>(cells) * (sizeof(T) + 1);
  // 48 KiB is every card's default dynamic limit: C <= 5461 float cells, far above any ViT grid.
  if (shared > 48 * 1024 || batch > 0x7fffffff) return static_cast<int>(cudaErrorInvalidValue);
  select_tokens_kernel<T><<<static_cast<unsigned>(batch), kThreads, shared, static_cast<cudaStream_t>(stream)>>>(
      scores, grid_h, grid_w, cell, keep_cells, mask, keep, restore);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int select_tokens_f32(const float* scores, int64_t batch, int64_t grid_h, int64_t grid_w, int64_t cell,
                      int64_t keep_cells, uint8_t* mask, int64_t* keep, int64_t* restore, void* stream) {
  return launch(scores, batch, grid_h, grid_w, cell, keep_cells, mask, keep, restore, stream);
}

int select_tokens_f64(const double* scores, int64_t batch, int64_t grid_h, int64_t grid_w, int64_t cell,
                      int64_t keep_cells, uint8_t* mask, int64_t* keep, int64_t* restore, void* stream) {
  return launch(scores, batch, grid_h, grid_w, cell, keep_cells, mask, keep, restore, stream);
}

const char* error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

}  // namespace dc_kernels
