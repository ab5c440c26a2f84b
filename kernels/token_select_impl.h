// token_select_impl.h: the per-sample arithmetic of attention-guided token selection
// (docs/model.md#attention-guided-token-removal), written once as __host__ __device__ functions so that the very same
// code runs in the CUDA kernel (token_select.cu) and, on the CPU, in the test binary
// (tests/kernels/token_select_test.cpp, driven by tests/kernels_test.ts) that compares it with native/src/prune.cpp's
// reference, which uses an independent formulation (std::stable_sort). No torch and no CUDA headers: a plain C++
// compiler builds it once DC_HD is defined empty.
//
// Contract (equal to prune.cpp bit for bit):
// - Cell score = the cell x cell block mean, summed in double in raster order and rounded once to the score type
//   (for cell 2 this is libtorch 1.13's channels-last bilinear 2x resize; see prune.cpp's pool_cells).
// - Ranking = torch.argsort(descending=True) made deterministic: NaN ranks above every number, and cells of equal
//   score (two NaNs count as equal) rank by lower cell index first. A cell's rank is the number of cells that precede
//   it under this strict total order, so it is the cell's position in prune.cpp's stable sort; the kernel computes
//   every rank independently (one thread per cell, C^2 comparisons: C = 49 for ViT-B/16), with no sort at all.
// - The top keep_cells ranks are kept. Kept patches take slots 0..K-1 and removed ones K..N-1, each in raster order;
//   ids_restore[p] is p's slot. A patch's slot comes from the number of kept patches before it, counted per patch so
//   that every thread can write its own patches without a scan.
#ifndef DETAILCLIP_TOKEN_SELECT_IMPL_H
#define DETAILCLIP_TOKEN_SELECT_IMPL_H

#include <stdint.h>

#ifndef DC_HD
#ifdef __CUDACC__
#define DC_HD __host__ __device__
#else
#define DC_HD
#endif
#endif

namespace dc_kernels {

// `x != x` rather than isnan: one spelling for host and device, and it needs no <cmath> overload for double/float.
template <typename T>
DC_HD inline bool is_nan(T x) {
  return x != x;
}

// Cell score of cell index `c` (raster order over the (grid_h/cell) x (grid_w/cell) cell grid) of one image's patch
// scores: the double sum in raster order, divided by cell*cell once, rounded once to T.
template <typename T>
DC_HD inline T pool_cell(const T* scores, int64_t grid_w, int64_t cell, int64_t c) {
  const int64_t cells_w = grid_w / cell;
  const int64_t r = c / cells_w;
  const int64_t col = c % cells_w;
  const T* block = scores + (r * cell) * grid_w + col * cell;
  double sum = 0.0;
  for (int64_t i = 0; i < cell; ++i) {
    for (int64_t j = 0; j < cell; ++j) sum += static_cast<double>(block[i * grid_w + j]);
  }
  return static_cast<T>(sum / static_cast<double>(cell * cell));
}

// True when score a ranks strictly before score b in descending order, NaN first (prune.cpp's ranks_before).
template <typename T>
DC_HD inline bool ranks_before(T a, T b) {
  if (is_nan(a)) return !is_nan(b);
  if (is_nan(b)) return false;
  return a > b;
}

// Position of cell i in the stable descending order of cell_scores[0..cells): cells that rank before it, plus the
// equal-scored cells with a lower index (the tie-break).
template <typename T>
DC_HD inline int64_t cell_rank(const T* cell_scores, int64_t cells, int64_t i) {
  const T s = cell_scores[i];
  int64_t rank = 0;
  for (int64_t j = 0; j < cells; ++j) {
    const T t = cell_scores[j];
    if (ranks_before(t, s) || (j < i && !ranks_before(s, t))) ++rank;
  }
  return rank;
}

// Cell index of patch p (raster order over the grid_h x grid_w patch grid).
DC_HD inline int64_t cell_of_patch(int64_t p, int64_t grid_w, int64_t cell) {
  return (p / grid_w / cell) * (grid_w / cell) + (p % grid_w) / cell;
}

// Writes patch p's outputs: mask[p] (1 = removed), restore[p] (its slot) and, when kept, keep[slot] = p.
// cell_kept: one flag per cell (1 = kept); kept_patches: K, the number of kept patches (keep_cells * cell^2).
DC_HD inline void write_patch(const uint8_t* cell_kept, int64_t grid_w, int64_t cell, int64_t kept_patches, int64_t p,
                              uint8_t* mask, int64_t* keep, int64_t* restore) {
  int64_t kept_before = 0;
  for (int64_t q = 0; q < p; ++q) kept_before += cell_kept[cell_of_patch(q, grid_w, cell)];
  const bool kept = cell_kept[cell_of_patch(p, grid_w, cell)] != 0;
  mask[p] = kept ? 0 : 1;
  if (kept) {
    keep[kept_before] = p;
    restore[p] = kept_before;
  } else {
    restore[p] = kept_patches + (p - kept_before);  // removed patches before p, after all K kept slots
  }
}

// The whole per-sample selection, serially: what one CUDA block does with its threads, for the CPU test and as a
// readable statement of the kernel. cell_scores and cell_kept are caller scratch of `cells` elements.
template <typename T>
inline void select_sample(const T* scores, int64_t grid_h, int64_t grid_w, int64_t cell, int64_t keep_cells,
                          T* cell_scores, uint8_t* cell_kept, uint8_t* mask, int64_t* keep, int64_t* restore) {
  const int64_t cells = (grid_h / cell) * (grid_w / cell);
  for (int64_t c = 0; c < cells; ++c) cell_scores[c] = pool_cell(scores, grid_w, cell, c);
  for (int64_t c = 0; c < cells; ++c) cell_kept[c] = cell_rank(cell_scores, cells, c) < keep_cells ? 1 : 0;
  const int64_t kept_patches = keep_cells * cell * cell;
  for (int64_t p = 0; p < grid_h * grid_w; ++p) write_patch(cell_kept, grid_w, cell, kept_patches, p, mask, keep, restore);
}

}  // namespace dc_kernels

#endif
