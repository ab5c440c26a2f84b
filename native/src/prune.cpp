// prune.cpp: the "token selection" section of detailclip.h, the CPU reference of attention-guided token removal
// (docs/model.md#attention-guided-token-removal, steps 2-5, and
// docs/model.md#student-token-removal). It is one op rather than a chain of interpolate/argsort/scatter calls so that
// the pooling arithmetic, the tie rule and the three outputs are defined in one place; the CUDA kernel
// (kernels/token_select.cu) shares this contract and serves CUDA scores when the build has it. The work is tiny (B x
// 196 scores), so a scalar loop per image is the clearest correct form.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "common.h"

#if DC_WITH_KERNELS
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "../../kernels/kernels.h"
#endif

namespace {

// Cell scores (C = (grid_h/cell) * (grid_w/cell), raster order) of one image's patch scores (grid_h * grid_w): the
// block mean, summed in double in raster order and rounded once to the score type.
// For cell 2 this is bit for bit what the official F.interpolate(attn (B,1,14,14), (7,7), bilinear) computes on
// libtorch 1.13's CPU, where the golden masks come from: a (B,1,H,W) tensor also counts as channels-last contiguous,
// so upsample_bilinear2d takes its channels-last kernel, which weighs the four taps by 0.25 and accumulates in
// acc_type<float> = double in the order (h0,w0), (h0,w1), (h1,w0), (h1,w1), i.e. raster order (scaling each tap by
// 0.25 or the sum by 1/4 is the same in binary floating point). A float mean, or the NCHW kernel's width-then-height
// float order, differs in the last bit for about one cell in four, enough to swap two cells in the ranking. The op
// keeps this arithmetic whatever libtorch it is built against.
template <typename scalar_t>
void pool_cells(const scalar_t* scores, int64_t grid_h, int64_t grid_w, int64_t cell, scalar_t* out) {
  const int64_t cells_h = grid_h / cell;
  const int64_t cells_w = grid_w / cell;
  const double taps = static_cast<double>(cell * cell);
  for (int64_t r = 0; r < cells_h; ++r) {
    for (int64_t c = 0; c < cells_w; ++c) {
      const scalar_t* block = scores + (r * cell) * grid_w + c * cell;
      double sum = 0.0;
      for (int64_t i = 0; i < cell; ++i) {
        for (int64_t j = 0; j < cell; ++j) sum += static_cast<double>(block[i * grid_w + j]);
      }
      out[r * cells_w + c] = static_cast<scalar_t>(sum / taps);
    }
  }
}

// The ranking of torch.argsort(descending=True), made deterministic: NaN ranks above every number (as in torch's
// descending sort) and equal scores keep their index order.
template <typename scalar_t>
bool ranks_before(scalar_t a, scalar_t b) {
  if (std::isnan(a)) return !std::isnan(b);
  if (std::isnan(b)) return false;
  return a > b;
}

struct Selection {
  at::Tensor mask;
  at::Tensor ids_keep;
  at::Tensor ids_restore;
};

template <typename scalar_t>
Selection select_tokens(const at::Tensor& scores, int64_t grid_h, int64_t grid_w, int64_t cell, int64_t keep_cells) {
  const int64_t batch = scores.size(0);
  const int64_t patches = grid_h * grid_w;
  const int64_t cells_w = grid_w / cell;
  const int64_t cells = (grid_h / cell) * cells_w;
  const int64_t kept_patches = keep_cells * cell * cell;
  const auto long_options = at::TensorOptions().dtype(at::kLong);
  at::Tensor mask = at::empty({batch, patches}, at::TensorOptions().dtype(at::kBool));
  at::Tensor ids_keep = at::empty({batch, kept_patches}, long_options);
  at::Tensor ids_restore = at::empty({batch, patches}, long_options);

  const scalar_t* in = scores.data_ptr<scalar_t>();
  bool* mask_out = mask.data_ptr<bool>();
  int64_t* keep_out = ids_keep.data_ptr<int64_t>();
  int64_t* restore_out = ids_restore.data_ptr<int64_t>();
  std::vector<scalar_t> cell_scores(static_cast<size_t>(cells));
  std::vector<int64_t> order(static_cast<size_t>(cells));
  std::vector<char> cell_kept(static_cast<size_t>(cells));

  for (int64_t b = 0; b < batch; ++b) {
    pool_cells(in + b * patches, grid_h, grid_w, cell, cell_scores.data());
    std::iota(order.begin(), order.end(), int64_t{0});
    std::stable_sort(order.begin(), order.end(), [&](int64_t i, int64_t j) {
      return ranks_before(cell_scores[static_cast<size_t>(i)], cell_scores[static_cast<size_t>(j)]);
    });
    std::fill(cell_kept.begin(), cell_kept.end(), 0);
    for (int64_t k = 0; k < keep_cells; ++k) cell_kept[static_cast<size_t>(order[static_cast<size_t>(k)])] = 1;

    // Kept patches take slots 0..K-1 and removed ones K..N-1, each in raster order (a stable argsort of the mask);
    // ids_restore maps a patch to its slot, so gathering [kept tokens, mask tokens] with it restores raster order.
    bool* m = mask_out + b * patches;
    int64_t* keep = keep_out + b * kept_patches;
    int64_t* restore = restore_out + b * patches;
    int64_t next_kept = 0;
    int64_t next_removed = kept_patches;
    for (int64_t p = 0; p < patches; ++p) {
      const int64_t cell_index = (p / grid_w / cell) * cells_w + (p % grid_w) / cell;
      const bool removed = cell_kept[static_cast<size_t>(cell_index)] == 0;
      m[p] = removed;
      if (removed) {
        restore[p] = next_removed++;
      } else {
        keep[next_kept] = p;
        restore[p] = next_kept++;
      }
    }
  }
  return {mask, ids_keep, ids_restore};
}

#if DC_WITH_KERNELS
Selection select_cuda(const at::Tensor& scores, int64_t grid_h, int64_t grid_w, int64_t cell, int64_t keep_cells) {
  const c10::cuda::CUDAGuard guard(scores.device());
  const int64_t batch = scores.size(0);
  const auto on_device = at::TensorOptions().device(scores.device());
  Selection result{at::empty({batch, grid_h * grid_w}, on_device.dtype(at::kBool)),
                   at::empty({batch, keep_cells * cell * cell}, on_device.dtype(at::kLong)),
                   at::empty({batch, grid_h * grid_w}, on_device.dtype(at::kLong))};
  // A torch bool is one byte holding 0 or 1, which is what the kernel writes.
  auto* mask = reinterpret_cast<uint8_t*>(result.mask.data_ptr<bool>());
  void* stream = at::cuda::getCurrentCUDAStream().stream();
  const int status =
      scores.scalar_type() == at::kDouble
          ? dc_kernels::select_tokens_f64(scores.data_ptr<double>(), batch, grid_h, grid_w, cell, keep_cells, mask,
                                          result.ids_keep.data_ptr<int64_t>(), result.ids_restore.data_ptr<int64_t>(),
                                          stream)
          : dc_kernels::select_tokens_f32(scores.data_ptr<float>(), batch, grid_h, grid_w, cell, keep_cells, mask,
                                          result.ids_keep.data_ptr<int64_t>(), result.ids_restore.data_ptr<int64_t>(),
                                          stream);
  if (status != 0) {
    throw std::runtime_error(std::string("dc_select_tokens: CUDA kernel failed: ") + dc_kernels::error_string(status));
  }
  return result;
}
#endif

Selection select(const at::Tensor& input, int64_t grid_h, int64_t grid_w, int64_t cell, double ratio) {
  const std::string where = "dc_select_tokens: ";
  if (input.dim() != 2) {
    throw std::invalid_argument(where + "scores must be 2-D (B, grid_h*grid_w), got " + std::to_string(input.dim()) +
                                "-D " + c10::str(input.sizes()));
  }
  if (grid_h <= 0 || grid_w <= 0 || cell <= 0) {
    throw std::invalid_argument(where + "grid " + std::to_string(grid_h) + "x" + std::to_string(grid_w) +
                                " and cell " + std::to_string(cell) + " must be positive");
  }
  if (input.size(1) != grid_h * grid_w) {
    throw std::invalid_argument(where + "scores have " + std::to_string(input.size(1)) + " patches per image but the " +
                                std::to_string(grid_h) + "x" + std::to_string(grid_w) + " grid has " +
                                std::to_string(grid_h * grid_w));
  }
  if (grid_h % cell != 0 || grid_w % cell != 0) {
    throw std::invalid_argument(where + "the " + std::to_string(grid_h) + "x" + std::to_string(grid_w) +
                                " patch grid is not divisible into " + std::to_string(cell) + "x" +
                                std::to_string(cell) + " cells");
  }
  if (!(ratio >= 0.0 && ratio <= 1.0)) {
    throw std::invalid_argument(where + "ratio must lie in [0, 1], got " + std::to_string(ratio));
  }
  if (!at::isFloatingType(input.scalar_type())) {
    throw std::invalid_argument(where + "scores must be floating point, got " +
                                std::string(c10::toString(input.scalar_type())));
  }
  const int64_t cells = (grid_h / cell) * (grid_w / cell);
  // The official rule (docs/model.md#attention-guided-token-removal, step 4): int(C * ratio) + 1 cells are kept, so
  // "ratio" is close to a keep fraction.
  const int64_t keep_cells = std::min(static_cast<int64_t>(std::floor(static_cast<double>(cells) * ratio)) + 1, cells);

  // Half and bfloat16 scores are widened to float32 first (on their own device).
  at::Tensor scores = input.detach();
  if (scores.scalar_type() != at::kDouble) scores = scores.to(at::kFloat);
  scores = scores.contiguous();
#if DC_WITH_KERNELS
  // CUDA scores: kernels/token_select.cu in one launch on the current stream, the same arithmetic as below (shared
  // header kernels/token_select_impl.h, held equal to select_tokens by tests/kernels_test.ts).
  if (scores.is_cuda()) return select_cuda(scores, grid_h, grid_w, cell, keep_cells);
#endif
  // CPU reference (also for CUDA scores in a build without the kernels: copied to the host and the results moved back).
  scores = scores.to(at::kCPU);
  Selection result = scores.scalar_type() == at::kDouble
                         ? select_tokens<double>(scores, grid_h, grid_w, cell, keep_cells)
                         : select_tokens<float>(scores, grid_h, grid_w, cell, keep_cells);
  if (!input.device().is_cpu()) {
    result.mask = result.mask.to(input.device());
    result.ids_keep = result.ids_keep.to(input.device());
    result.ids_restore = result.ids_restore.to(input.device());
  }
  return result;
}

}  // namespace

extern "C" {

int32_t dc_select_tokens(dc_tensor scores, int64_t grid_h, int64_t grid_w, int64_t cell, double ratio,
                         dc_tensor* out_mask, dc_tensor* out_ids_keep, dc_tensor* out_ids_restore) {
  DC_STATUS({
    if (out_mask == nullptr || out_ids_keep == nullptr || out_ids_restore == nullptr) {
      throw std::invalid_argument("dc_select_tokens: output handle pointer is NULL");
    }
    Selection result = select(dc::unwrap(scores, "scores"), grid_h, grid_w, cell, ratio);
    // All three are computed before any handle is created, so a failure never leaves a handle behind.
    *out_mask = dc::wrap(std::move(result.mask));
    *out_ids_keep = dc::wrap(std::move(result.ids_keep));
    *out_ids_restore = dc::wrap(std::move(result.ids_restore));
  })
}

}  // extern "C"
