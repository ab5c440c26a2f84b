// bench.cpp: the "diagnostics" section of detailclip.h: a native baseline for the FFI benchmark (bench/ffi), timing
// the same create-and-free round trip a TypeScript `a.add(b).dispose()` makes, without the FFI crossing.
#include <chrono>
#include <string>

#include "common.h"

extern "C" {

double dc_bench_add_loop(dc_tensor a, dc_tensor b, int64_t iters) {
  DC_GUARD_BEGIN
  if (iters < 0) throw std::invalid_argument("dc_bench_add_loop: negative iteration count " + std::to_string(iters));
  const at::Tensor& x = dc::unwrap(a, "a");
  const at::Tensor& y = dc::unwrap(b, "b");
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iters; ++i) {
    // Through the exported wrap/free pair, so the handle bookkeeping is part of what is measured.
    dc_tensor h = dc::wrap(x + y);
    dc_free(h);
  }
  const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
  return elapsed.count();
  DC_GUARD_END(-1.0)
}

}  // extern "C"
