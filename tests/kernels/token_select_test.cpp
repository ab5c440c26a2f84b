// token_select_test.cpp: runs kernels/token_select_impl.h (the code the CUDA kernel runs) on the CPU so that
// tests/kernels_test.ts can compare it with native/src/prune.cpp's reference (dc_select_tokens) without a GPU.
// Built by the test with `g++ -std=c++17 -x c++ -DDC_HD=` (host-only: __host__ __device__ become nothing).
// Protocol, all little-endian int64/float64 on stdin, repeated until EOF: a case header
// [batch, grid_h, grid_w, cell, keep_cells, dtype (0 float32, 1 float64)], then batch*grid_h*grid_w float64 scores
// (rounded to float32 here when dtype is 0, exactly as the shim widens nothing: the test sends float32-exact values).
// For each case it writes mask (B*N), ids_keep (B*K) and ids_restore (B*N) as int64 to stdout.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../../kernels/token_select_impl.h"

namespace {

bool read_all(void* data, size_t bytes) { return std::fread(data, 1, bytes, stdin) == bytes; }

void write_all(const std::vector<int64_t>& v) {
  if (std::fwrite(v.data(), sizeof(int64_t), v.size(), stdout) != v.size()) std::exit(3);
}

template <typename T>
void run_case(const std::vector<double>& raw, int64_t batch, int64_t grid_h, int64_t grid_w, int64_t cell,
              int64_t keep_cells) {
  const int64_t patches = grid_h * grid_w;
  const int64_t cells = (grid_h / cell) * (grid_w / cell);
  const int64_t kept = keep_cells * cell * cell;
  std::vector<T> scores(raw.begin(), raw.end());
  std::vector<T> cell_scores(static_cast<size_t>(cells));
  std::vector<uint8_t> cell_kept(static_cast<size_t>(cells)), mask(static_cast<size_t>(batch * patches));
  std::vector<int64_t> keep(static_cast<size_t>(batch * kept), -1), restore(static_cast<size_t>(batch * patches), -1);
  for (int64_t b = 0; b < batch; ++b) {
    dc_kernels::select_sample(scores.data() + b * patches, grid_h, grid_w, cell, keep_cells, cell_scores.data(),
                              cell_kept.data(), mask.data() + b * patches, keep.data() + b * kept,
                              restore.data() + b * patches);
  }
  write_all(std::vector<int64_t>(mask.begin(), mask.end()));
  write_all(keep);
  write_all(restore);
}

}  // namespace

int main() {
  int64_t header[6];
  while (read_all(header, sizeof header)) {
    const int64_t batch = header[0], grid_h = header[1], grid_w = header[2], cell = header[3], keep_cells = header[4];
    std::vector<double> raw(static_cast<size_t>(batch * grid_h * grid_w));
    if (!read_all(raw.data(), raw.size() * sizeof(double))) return 2;
    if (header[5] == 0) {
      run_case<float>(raw, batch, grid_h, grid_w, cell, keep_cells);
    } else {
      run_case<double>(raw, batch, grid_h, grid_w, cell, keep_cells);
    }
  }
  return std::fflush(stdout) == 0 ? 0 : 3;
}
