// common.h: what every translation unit of the shim shares: the exception-proof wrapper, the thread-local last
// error, handle creation with the live-handle count, and the dtype/device code tables of detailclip.h.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h> // at::NoGradGuard: ATen.h stopped bringing it in 2.x
#include <torch/version.h>

#include <atomic>
#include <string>
#include <vector>

#include "detailclip.h"

#define DC_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

// Optionals are spelled dc::optional / dc::nullopt. libtorch 1.13 has its own c10::optional class, which is what its
// signatures take; from 2.2 on c10::optional is only an alias of std::optional that later 2.x releases deprecate (it
// disappears under C10_NODEPRECATED, and ATen headers written against std::optional need not include the alias).
#if DC_TORCH_AT_LEAST(2, 3)
#include <optional>
namespace dc {
using std::nullopt;
using std::optional;
}  // namespace dc
#else
#include <c10/util/Optional.h>
namespace dc {
using c10::nullopt;
using c10::optional;
}  // namespace dc
#endif

namespace dc {

extern std::atomic<int64_t> live_tensors;

void set_error(const std::string& message);

// Every tensor crossing the boundary goes through here: one heap handle owning one reference.
inline dc_tensor wrap(at::Tensor t) {
  live_tensors.fetch_add(1, std::memory_order_relaxed);
  return new at::Tensor(std::move(t));
}

inline at::Tensor& unwrap(dc_tensor t, const char* what = "tensor") {
  if (t == nullptr) throw std::invalid_argument(std::string(what) + " handle is NULL");
  return *t;
}

inline optional<at::Tensor> optional_tensor(dc_tensor t) {
  if (t == nullptr) return nullopt;
  return *t;
}

at::ScalarType scalar_type(int32_t code);
int32_t dtype_code(at::ScalarType type);
at::Device device(int32_t code);
int32_t device_code(const at::Device& device);

inline at::TensorOptions options(int32_t dtype, int32_t device_code) {
  return at::TensorOptions().dtype(scalar_type(dtype)).device(device(device_code));
}

inline std::vector<int64_t> int_list(const int64_t* values, int64_t n) {
  if (n < 0) throw std::invalid_argument("negative list length " + std::to_string(n));
  if (n > 0 && values == nullptr) throw std::invalid_argument("list pointer is NULL");
  return std::vector<int64_t>(values, values + n);
}

inline std::vector<at::Tensor> tensor_list(const dc_tensor* handles, int64_t n) {
  if (n < 0) throw std::invalid_argument("negative tensor count " + std::to_string(n));
  if (n > 0 && handles == nullptr) throw std::invalid_argument("tensor array is NULL");
  std::vector<at::Tensor> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out.push_back(unwrap(handles[i], "tensor array element"));
  return out;
}

// Writes handles for `tensors` into out[0..capacity); returns the total count (the caller sees a short buffer).
inline int64_t write_handles(const std::vector<at::Tensor>& tensors, dc_tensor* out, int64_t capacity) {
  const int64_t n = static_cast<int64_t>(tensors.size());
  if (n > capacity) {
    throw std::invalid_argument("output array holds " + std::to_string(capacity) + " handles but the op returns " +
                                std::to_string(n));
  }
  for (int64_t i = 0; i < n; ++i) out[i] = wrap(tensors[static_cast<size_t>(i)]);
  return n;
}

}  // namespace dc

// DC_GUARD(sentinel) { ... } wraps an exported body: any exception becomes the last error and the sentinel.
// c10::Error is caught first so the message is the one without libtorch's C++ backtrace.
#define DC_GUARD_BEGIN try {
#define DC_GUARD_END(sentinel)                    \
  }                                               \
  catch (const c10::Error& e) {                   \
    dc::set_error(e.what_without_backtrace());    \
    return sentinel;                              \
  }                                               \
  catch (const std::exception& e) {               \
    dc::set_error(e.what());                      \
    return sentinel;                              \
  }                                               \
  catch (...) {                                   \
    dc::set_error("unknown C++ exception");       \
    return sentinel;                              \
  }

// The three sentinel shapes of the ABI.
#define DC_TENSOR(expr) \
  DC_GUARD_BEGIN return dc::wrap(expr); DC_GUARD_END(nullptr)
#define DC_STATUS(stmts) \
  DC_GUARD_BEGIN stmts; return 0; DC_GUARD_END(1)
#define DC_COUNT(expr) \
  DC_GUARD_BEGIN return (expr); DC_GUARD_END(-1)
