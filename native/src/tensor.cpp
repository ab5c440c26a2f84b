// tensor.cpp: the library itself (errors, versions, runtime switches), tensor metadata, creation, copies in and
// out of host memory, seeded initialisation and views. The math lives in ops.cpp and nn.cpp.
#include <ATen/autocast_mode.h>
#include <c10/core/InferenceMode.h>
#include <torch/nn/init.h>
#include <torch/utils.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "common.h"

namespace dc {

std::atomic<int64_t> live_tensors{0};

static thread_local std::string last_error;

void set_error(const std::string& message) { last_error = message; }

at::ScalarType scalar_type(int32_t code) {
  switch (code) {
    case 0: return at::kFloat;
    case 1: return at::kDouble;
    case 2: return at::kHalf;
    case 3: return at::kBFloat16;
    case 4: return at::kLong;
    case 5: return at::kInt;
    case 6: return at::kByte;
    case 7: return at::kBool;
    case 8: return at::kChar;
    case 9: return at::kShort;
  }
  throw std::invalid_argument("unknown dtype code " + std::to_string(code));
}

int32_t dtype_code(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return 0;
    case at::kDouble: return 1;
    case at::kHalf: return 2;
    case at::kBFloat16: return 3;
    case at::kLong: return 4;
    case at::kInt: return 5;
    case at::kByte: return 6;
    case at::kBool: return 7;
    case at::kChar: return 8;
    case at::kShort: return 9;
    default: break;
  }
  throw std::invalid_argument(std::string("dtype ") + c10::toString(type) + " has no detailclip code");
}

at::Device device(int32_t code) {
  if (code == -1) return at::Device(at::kCPU);
  if (code == -3) return at::Device(at::kMeta);
  if (code >= 0) return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(code));
  throw std::invalid_argument("unknown device code " + std::to_string(code) + " (-1 cpu, -3 meta, n >= 0 cuda:n)");
}

int32_t device_code(const at::Device& d) {
  if (d.is_cpu()) return -1;
  if (d.is_meta()) return -3;
  if (d.is_cuda()) return d.has_index() ? d.index() : 0;
  throw std::invalid_argument("device " + d.str() + " has no detailclip code");
}

}  // namespace dc

static at::Tensor host_contiguous(const at::Tensor& t) { return t.detach().to(at::kCPU).contiguous(); }

static void check_nbytes(int64_t numel, at::ScalarType type, int64_t nbytes, const char* what) {
  const int64_t expected = numel * static_cast<int64_t>(c10::elementSize(type));
  if (expected != nbytes) {
    throw std::invalid_argument(std::string(what) + ": buffer has " + std::to_string(nbytes) + " bytes but " +
                                std::to_string(numel) + " elements of " + c10::toString(type) + " need " +
                                std::to_string(expected));
  }
}

extern "C" {

// ---- library, errors, runtime ----------------------------------------------------------------------------------
int32_t dc_abi_version(void) { return DC_ABI_VERSION; }

const char* dc_last_error(void) { return dc::last_error.c_str(); }

const char* dc_torch_version(void) { return TORCH_VERSION; }

int64_t dc_live_tensors(void) { return dc::live_tensors.load(std::memory_order_relaxed); }

void dc_free(dc_tensor t) {
  if (t == nullptr) return;
  delete t;
  dc::live_tensors.fetch_sub(1, std::memory_order_relaxed);
}

int32_t dc_set_num_threads(int32_t n) {
  DC_STATUS({
    if (n < 1) throw std::invalid_argument("set_num_threads: need at least 1 thread, got " + std::to_string(n));
    at::set_num_threads(n);
  })
}

int32_t dc_get_num_threads(void) { return at::get_num_threads(); }

int32_t dc_cuda_is_available(void) { DC_COUNT(at::hasCUDA() ? 1 : 0) }

int32_t dc_cuda_device_count(void) { DC_COUNT(at::hasCUDA() ? at::detail::getCUDAHooks().getNumGPUs() : 0) }

int32_t dc_cuda_synchronize(int32_t device) {
  DC_STATUS({
    if (device < 0) return 0;
    if (!at::hasCUDA()) throw std::runtime_error("cuda_synchronize: this libtorch has no CUDA");
#if DC_TORCH_AT_LEAST(2, 0)
    at::detail::getCUDAHooks().deviceSynchronize(static_cast<c10::DeviceIndex>(device));
#else
    // 1.13 hooks have no synchronize; a blocking device-to-host copy on the device's stream waits for its work.
    at::zeros({1}, at::TensorOptions().device(dc::device(device))).cpu();
#endif
  })
}

int32_t dc_manual_seed(uint64_t seed) { DC_STATUS(torch::manual_seed(seed)) }

dc_tensor dc_rng_get_state(int32_t device) {
  DC_GUARD_BEGIN
  auto generator = device < 0 ? at::detail::getDefaultCPUGenerator()
                              : at::globalContext().defaultGenerator(dc::device(device));
  std::lock_guard<std::mutex> lock(generator.mutex());
  return dc::wrap(generator.get_state());
  DC_GUARD_END(nullptr)
}

int32_t dc_rng_set_state(int32_t device, dc_tensor state) {
  DC_STATUS({
    auto generator = device < 0 ? at::detail::getDefaultCPUGenerator()
                                : at::globalContext().defaultGenerator(dc::device(device));
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(dc::unwrap(state, "state"));
  })
}

int32_t dc_set_grad_enabled(int32_t enabled) {
  const bool previous = at::GradMode::is_enabled();
  at::GradMode::set_enabled(enabled != 0);
  return previous ? 1 : 0;
}

int32_t dc_is_grad_enabled(void) { return at::GradMode::is_enabled() ? 1 : 0; }

dc_guard dc_inference_mode_enter(void) {
  DC_GUARD_BEGIN return static_cast<void*>(new c10::InferenceMode(true));
  DC_GUARD_END(nullptr)
}

int32_t dc_inference_mode_exit(dc_guard guard) {
  DC_STATUS({
    if (guard == nullptr) throw std::invalid_argument("inference_mode_exit: guard is NULL");
    delete static_cast<c10::InferenceMode*>(guard);
  })
}

static at::DeviceType autocast_device(int32_t device_type) {
  if (device_type == 0) return at::kCPU;
  if (device_type == 1) return at::kCUDA;
  throw std::invalid_argument("autocast: device_type must be 0 (cpu) or 1 (cuda), got " + std::to_string(device_type));
}

int32_t dc_autocast_set(int32_t device_type, int32_t enabled, int32_t dtype) {
  DC_STATUS({
    const at::DeviceType type = autocast_device(device_type);
    const at::ScalarType low = dc::scalar_type(dtype);
    if (low != at::kHalf && low != at::kBFloat16) {
      throw std::invalid_argument("autocast: dtype must be f16 or bf16");
    }
#if DC_TORCH_AT_LEAST(2, 4)
    at::autocast::set_autocast_enabled(type, enabled != 0);
    at::autocast::set_autocast_dtype(type, low);
#else
    if (type == at::kCPU) {
      at::autocast::set_cpu_enabled(enabled != 0);
      at::autocast::set_autocast_cpu_dtype(low);
    } else {
      at::autocast::set_enabled(enabled != 0);
      at::autocast::set_autocast_gpu_dtype(low);
    }
#endif
  })
}

int32_t dc_autocast_is_enabled(int32_t device_type) {
  DC_GUARD_BEGIN
  const at::DeviceType type = autocast_device(device_type);
#if DC_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(type) ? 1 : 0;
#else
  return (type == at::kCPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled()) ? 1 : 0;
#endif
  DC_GUARD_END(-1)
}

int32_t dc_autocast_clear_cache(void) { DC_STATUS(at::autocast::clear_cache()) }

// ---- metadata ------------------------------------------------------------------------------------------------
int64_t dc_dim(dc_tensor t) { DC_COUNT(dc::unwrap(t).dim()) }

int32_t dc_shape(dc_tensor t, int64_t* out_shape) {
  DC_STATUS({
    const auto sizes = dc::unwrap(t).sizes();
    for (size_t i = 0; i < sizes.size(); ++i) out_shape[i] = sizes[i];
  })
}

int64_t dc_numel(dc_tensor t) { DC_COUNT(dc::unwrap(t).numel()) }

int32_t dc_dtype(dc_tensor t) { DC_COUNT(dc::dtype_code(dc::unwrap(t).scalar_type())) }

int32_t dc_device(dc_tensor t) {
  // -1 is a valid answer (cpu), so failures use -2.
  DC_GUARD_BEGIN return dc::device_code(dc::unwrap(t).device());
  DC_GUARD_END(-2)
}

int32_t dc_is_contiguous(dc_tensor t) { DC_COUNT(dc::unwrap(t).is_contiguous() ? 1 : 0) }

// ---- creation and copies -------------------------------------------------------------------------------------
dc_tensor dc_empty(const int64_t* shape, int64_t ndim, int32_t dtype, int32_t device) {
  DC_TENSOR(at::empty(dc::int_list(shape, ndim), dc::options(dtype, device)))
}

dc_tensor dc_zeros(const int64_t* shape, int64_t ndim, int32_t dtype, int32_t device) {
  DC_TENSOR(at::zeros(dc::int_list(shape, ndim), dc::options(dtype, device)))
}

dc_tensor dc_ones(const int64_t* shape, int64_t ndim, int32_t dtype, int32_t device) {
  DC_TENSOR(at::ones(dc::int_list(shape, ndim), dc::options(dtype, device)))
}

dc_tensor dc_full(const int64_t* shape, int64_t ndim, double value, int32_t dtype, int32_t device) {
  DC_TENSOR(at::full(dc::int_list(shape, ndim), value, dc::options(dtype, device)))
}

dc_tensor dc_scalar_tensor(double value, int32_t dtype, int32_t device) {
  DC_TENSOR(at::scalar_tensor(value, dc::options(dtype, device)))
}

dc_tensor dc_arange(double start, double end, double step, int32_t dtype, int32_t device) {
  DC_TENSOR(at::arange(start, end, step, dc::options(dtype, device)))
}

dc_tensor dc_linspace(double start, double end, int64_t steps, int32_t dtype, int32_t device) {
  DC_TENSOR(at::linspace(start, end, steps, dc::options(dtype, device)))
}

dc_tensor dc_eye(int64_t n, int32_t dtype, int32_t device) { DC_TENSOR(at::eye(n, dc::options(dtype, device))) }

dc_tensor dc_rand(const int64_t* shape, int64_t ndim, int32_t dtype, int32_t device) {
  DC_TENSOR(at::rand(dc::int_list(shape, ndim), dc::options(dtype, device)))
}

dc_tensor dc_randn(const int64_t* shape, int64_t ndim, int32_t dtype, int32_t device) {
  DC_TENSOR(at::randn(dc::int_list(shape, ndim), dc::options(dtype, device)))
}

dc_tensor dc_randint(int64_t low, int64_t high, const int64_t* shape, int64_t ndim, int32_t device) {
  DC_TENSOR(at::randint(low, high, dc::int_list(shape, ndim), dc::options(4, device)))
}

dc_tensor dc_randperm(int64_t n, int32_t device) { DC_TENSOR(at::randperm(n, dc::options(4, device))) }

dc_tensor dc_from_data(const void* data, int64_t nbytes, const int64_t* shape, int64_t ndim, int32_t dtype,
                       int32_t device) {
  DC_GUARD_BEGIN
  auto sizes = dc::int_list(shape, ndim);
  at::Tensor host = at::empty(sizes, dc::options(dtype, -1));
  check_nbytes(host.numel(), host.scalar_type(), nbytes, "from_data");
  if (nbytes > 0) {
    if (data == nullptr) throw std::invalid_argument("from_data: data pointer is NULL");
    std::memcpy(host.data_ptr(), data, static_cast<size_t>(nbytes));
  }
  return dc::wrap(device == -1 ? host : host.to(dc::device(device)));
  DC_GUARD_END(nullptr)
}

int32_t dc_copy_to_buffer(dc_tensor t, void* out, int64_t nbytes) {
  DC_STATUS({
    at::Tensor host = host_contiguous(dc::unwrap(t));
    check_nbytes(host.numel(), host.scalar_type(), nbytes, "copy_to_buffer");
    if (nbytes > 0) {
      if (out == nullptr) throw std::invalid_argument("copy_to_buffer: output pointer is NULL");
      std::memcpy(out, host.data_ptr(), static_cast<size_t>(nbytes));
    }
  })
}

int32_t dc_item(dc_tensor t, double* out) { DC_STATUS(*out = dc::unwrap(t).item<double>()) }

dc_tensor dc_shallow_clone(dc_tensor t) { DC_TENSOR(dc::unwrap(t)) }

dc_tensor dc_clone(dc_tensor t) { DC_TENSOR(dc::unwrap(t).clone()) }

dc_tensor dc_contiguous(dc_tensor t) { DC_TENSOR(dc::unwrap(t).contiguous()) }

dc_tensor dc_to(dc_tensor t, int32_t dtype, int32_t device, int32_t non_blocking) {
  DC_GUARD_BEGIN
  const at::Tensor& self = dc::unwrap(t);
  const at::ScalarType type = dtype < 0 ? self.scalar_type() : dc::scalar_type(dtype);
  const at::Device target = device < -1 ? self.device() : dc::device(device);
  return dc::wrap(self.to(target, type, non_blocking != 0));
  DC_GUARD_END(nullptr)
}

dc_tensor dc_pin_memory(dc_tensor t) { DC_TENSOR(dc::unwrap(t).pin_memory()) }

int32_t dc_copy_(dc_tensor dst, dc_tensor src) { DC_STATUS(dc::unwrap(dst, "dst").copy_(dc::unwrap(src, "src"))) }

// ---- seeded initialisation -----------------------------------------------------------------------------------
int32_t dc_normal_(dc_tensor t, double mean, double std) {
  DC_STATUS({
    at::NoGradGuard no_grad;
    dc::unwrap(t).normal_(mean, std);
  })
}

int32_t dc_uniform_(dc_tensor t, double low, double high) {
  DC_STATUS({
    at::NoGradGuard no_grad;
    dc::unwrap(t).uniform_(low, high);
  })
}

int32_t dc_trunc_normal_(dc_tensor t, double mean, double std, double a, double b) {
  DC_STATUS({
    // The inverse-CDF method of torch.nn.init.trunc_normal_ (and timm), step for step.
    at::NoGradGuard no_grad;
    auto norm_cdf = [](double x) { return (1.0 + std::erf(x / std::sqrt(2.0))) / 2.0; };
    const double low = norm_cdf((a - mean) / std);
    const double high = norm_cdf((b - mean) / std);
    at::Tensor& self = dc::unwrap(t);
    self.uniform_(2 * low - 1, 2 * high - 1);
    self.erfinv_();
    self.mul_(std * std::sqrt(2.0));
    self.add_(mean);
    self.clamp_(a, b);
  })
}

int32_t dc_xavier_uniform_(dc_tensor t, double gain) { DC_STATUS(torch::nn::init::xavier_uniform_(dc::unwrap(t), gain)) }

int32_t dc_kaiming_uniform_(dc_tensor t, double a) {
  DC_STATUS(torch::nn::init::kaiming_uniform_(dc::unwrap(t), a, torch::kFanIn, torch::kLeakyReLU))
}

int32_t dc_fill_(dc_tensor t, double value) {
  DC_STATUS({
    at::NoGradGuard no_grad;
    dc::unwrap(t).fill_(value);
  })
}

int32_t dc_zero_(dc_tensor t) {
  DC_STATUS({
    at::NoGradGuard no_grad;
    dc::unwrap(t).zero_();
  })
}

// ---- views and indexing --------------------------------------------------------------------------------------
dc_tensor dc_reshape(dc_tensor t, const int64_t* shape, int64_t ndim) {
  DC_TENSOR(dc::unwrap(t).reshape(dc::int_list(shape, ndim)))
}

dc_tensor dc_view(dc_tensor t, const int64_t* shape, int64_t ndim) {
  DC_TENSOR(dc::unwrap(t).view(dc::int_list(shape, ndim)))
}

dc_tensor dc_permute(dc_tensor t, const int64_t* dims, int64_t ndim) {
  DC_TENSOR(dc::unwrap(t).permute(dc::int_list(dims, ndim)))
}

dc_tensor dc_transpose(dc_tensor t, int64_t dim0, int64_t dim1) { DC_TENSOR(dc::unwrap(t).transpose(dim0, dim1)) }

dc_tensor dc_slice(dc_tensor t, int64_t dim, int64_t start, int64_t end, int64_t step) {
  DC_TENSOR(dc::unwrap(t).slice(dim, start, end, step))
}

dc_tensor dc_select(dc_tensor t, int64_t dim, int64_t index) { DC_TENSOR(dc::unwrap(t).select(dim, index)) }

dc_tensor dc_narrow(dc_tensor t, int64_t dim, int64_t start, int64_t length) {
  DC_TENSOR(dc::unwrap(t).narrow(dim, start, length))
}

dc_tensor dc_squeeze(dc_tensor t, int64_t dim) { DC_TENSOR(dc::unwrap(t).squeeze(dim)) }

dc_tensor dc_unsqueeze(dc_tensor t, int64_t dim) { DC_TENSOR(dc::unwrap(t).unsqueeze(dim)) }

dc_tensor dc_flatten(dc_tensor t, int64_t start_dim, int64_t end_dim) {
  DC_TENSOR(dc::unwrap(t).flatten(start_dim, end_dim))
}

dc_tensor dc_expand(dc_tensor t, const int64_t* shape, int64_t ndim) {
  DC_TENSOR(dc::unwrap(t).expand(dc::int_list(shape, ndim)))
}

dc_tensor dc_repeat(dc_tensor t, const int64_t* repeats, int64_t ndim) {
  DC_TENSOR(dc::unwrap(t).repeat(dc::int_list(repeats, ndim)))
}

dc_tensor dc_flip(dc_tensor t, const int64_t* dims, int64_t ndim) {
  DC_TENSOR(dc::unwrap(t).flip(dc::int_list(dims, ndim)))
}

dc_tensor dc_gather(dc_tensor t, int64_t dim, dc_tensor index) {
  DC_TENSOR(dc::unwrap(t).gather(dim, dc::unwrap(index, "index")))
}

dc_tensor dc_scatter(dc_tensor t, int64_t dim, dc_tensor index, dc_tensor src) {
  DC_TENSOR(dc::unwrap(t).scatter(dim, dc::unwrap(index, "index"), dc::unwrap(src, "src")))
}

dc_tensor dc_scatter_add(dc_tensor t, int64_t dim, dc_tensor index, dc_tensor src) {
  DC_TENSOR(dc::unwrap(t).scatter_add(dim, dc::unwrap(index, "index"), dc::unwrap(src, "src")))
}

dc_tensor dc_index_select(dc_tensor t, int64_t dim, dc_tensor index) {
  DC_TENSOR(dc::unwrap(t).index_select(dim, dc::unwrap(index, "index")))
}

dc_tensor dc_masked_fill(dc_tensor t, dc_tensor mask, double value) {
  DC_TENSOR(dc::unwrap(t).masked_fill(dc::unwrap(mask, "mask"), value))
}

dc_tensor dc_where(dc_tensor condition, dc_tensor a, dc_tensor b) {
  DC_TENSOR(at::where(dc::unwrap(condition, "condition"), dc::unwrap(a, "a"), dc::unwrap(b, "b")))
}

dc_tensor dc_triu(dc_tensor t, int64_t diagonal) { DC_TENSOR(dc::unwrap(t).triu(diagonal)) }

dc_tensor dc_tril(dc_tensor t, int64_t diagonal) { DC_TENSOR(dc::unwrap(t).tril(diagonal)) }

dc_tensor dc_cat(const dc_tensor* tensors, int64_t n, int64_t dim) { DC_TENSOR(at::cat(dc::tensor_list(tensors, n), dim)) }

dc_tensor dc_stack(const dc_tensor* tensors, int64_t n, int64_t dim) {
  DC_TENSOR(at::stack(dc::tensor_list(tensors, n), dim))
}

int64_t dc_chunk(dc_tensor t, int64_t chunks, int64_t dim, dc_tensor* out, int64_t capacity) {
  DC_COUNT(dc::write_handles(dc::unwrap(t).chunk(chunks, dim), out, capacity))
}

int64_t dc_split(dc_tensor t, int64_t split_size, int64_t dim, dc_tensor* out, int64_t capacity) {
  DC_COUNT(dc::write_handles(dc::unwrap(t).split(split_size, dim), out, capacity))
}

}  // extern "C"
