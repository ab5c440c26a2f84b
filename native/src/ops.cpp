// ops.cpp: the "elementwise" and "reductions" sections of detailclip.h: op-code dispatch for unary and binary math,
// scalar forms, fused updates, and reductions over dimension lists.
#include <cmath>
#include <string>
#include <vector>

#include "common.h"

namespace {

[[noreturn]] void unknown_op(const char* function, int32_t op) {
  throw std::invalid_argument(std::string(function) + ": unknown op code " + std::to_string(op));
}

// JavaScript numbers are untyped, so an integral value applied to an integer or bool tensor becomes an integer
// Scalar: `idx + 1` keeps int64 as it does in Python, while `idx + 0.5` still promotes to float.
at::Scalar scalar_for(const at::Tensor& t, double v) {
  const bool integral_tensor = !at::isFloatingType(t.scalar_type()) && !at::isComplexType(t.scalar_type());
  if (integral_tensor && std::isfinite(v) && std::trunc(v) == v && std::fabs(v) < 9.2e18) {
    return at::Scalar(static_cast<int64_t>(v));
  }
  return at::Scalar(v);
}

// A CPU 0-d "wrapped number" takes part in type promotion like a Python scalar and may meet tensors on any device,
// which lets the ops that have no Scalar overload (maximum, atan2, scalar-first forms) share the tensor path.
at::Tensor wrapped_scalar(const at::Scalar& s) {
  at::Tensor t = s.isFloatingPoint() ? at::scalar_tensor(s, at::TensorOptions().dtype(at::kDouble))
                                     : at::scalar_tensor(s, at::TensorOptions().dtype(at::kLong));
  t.unsafeGetTensorImpl()->set_wrapped_number(true);
  return t;
}

at::Tensor unary(int32_t op, const at::Tensor& t) {
  switch (op) {
    case DC_NEG: return at::neg(t);
    case DC_EXP: return at::exp(t);
    case DC_LOG: return at::log(t);
    case DC_SQRT: return at::sqrt(t);
    case DC_RSQRT: return at::rsqrt(t);
    case DC_ABS: return at::abs(t);
    case DC_SIN: return at::sin(t);
    case DC_COS: return at::cos(t);
    case DC_TANH: return at::tanh(t);
    case DC_SIGMOID: return at::sigmoid(t);
    case DC_RELU: return at::relu(t);
    case DC_ERF: return at::erf(t);
    case DC_ERFINV: return at::erfinv(t);
    case DC_RECIPROCAL: return at::reciprocal(t);
    case DC_SIGN: return at::sign(t);
    case DC_FLOOR: return at::floor(t);
    case DC_CEIL: return at::ceil(t);
    case DC_ROUND: return at::round(t);
    case DC_LOGICAL_NOT: return at::logical_not(t);
    case DC_ISFINITE: return at::isfinite(t);
    case DC_ISNAN: return at::isnan(t);
    case DC_SQUARE: return at::square(t);
    case DC_LOG1P: return at::log1p(t);
    case DC_EXPM1: return at::expm1(t);
    case DC_SILU: return at::silu(t);
    case DC_TRUNC: return at::trunc(t);
    default: unknown_op("dc_unary", op);
  }
}

void unary_(int32_t op, at::Tensor& t) {
  switch (op) {
    case DC_NEG: t.neg_(); return;
    case DC_EXP: t.exp_(); return;
    case DC_LOG: t.log_(); return;
    case DC_SQRT: t.sqrt_(); return;
    case DC_RSQRT: t.rsqrt_(); return;
    case DC_ABS: t.abs_(); return;
    case DC_SIN: t.sin_(); return;
    case DC_COS: t.cos_(); return;
    case DC_TANH: t.tanh_(); return;
    case DC_SIGMOID: t.sigmoid_(); return;
    case DC_RELU: t.relu_(); return;
    case DC_ERF: t.erf_(); return;
    case DC_ERFINV: t.erfinv_(); return;
    case DC_RECIPROCAL: t.reciprocal_(); return;
    case DC_SIGN: t.sign_(); return;
    case DC_FLOOR: t.floor_(); return;
    case DC_CEIL: t.ceil_(); return;
    case DC_ROUND: t.round_(); return;
    case DC_LOGICAL_NOT: t.logical_not_(); return;
    case DC_ISFINITE:
    case DC_ISNAN:
      // Their result is bool, so PyTorch has no in-place form either.
      throw std::invalid_argument("dc_unary_: op code " + std::to_string(op) +
                                  " (isfinite/isnan) has no in-place form");
    case DC_SQUARE: t.square_(); return;
    case DC_LOG1P: t.log1p_(); return;
    case DC_EXPM1: t.expm1_(); return;
    case DC_SILU: at::silu_(t); return;
    case DC_TRUNC: t.trunc_(); return;
    default: unknown_op("dc_unary_", op);
  }
}

// `function` names the exported entry point in the error for an unknown code.
at::Tensor binary(int32_t op, const at::Tensor& a, const at::Tensor& b, const char* function) {
  switch (op) {
    case DC_ADD: return at::add(a, b);
    case DC_SUB: return at::sub(a, b);
    case DC_MUL: return at::mul(a, b);
    case DC_DIV: return at::div(a, b);
    case DC_POW: return at::pow(a, b);
    case DC_MAXIMUM: return at::maximum(a, b);
    case DC_MINIMUM: return at::minimum(a, b);
    case DC_EQ: return at::eq(a, b);
    case DC_NE: return at::ne(a, b);
    case DC_LT: return at::lt(a, b);
    case DC_LE: return at::le(a, b);
    case DC_GT: return at::gt(a, b);
    case DC_GE: return at::ge(a, b);
    case DC_LOGICAL_AND: return at::logical_and(a, b);
    case DC_LOGICAL_OR: return at::logical_or(a, b);
    case DC_REMAINDER: return at::remainder(a, b);
    case DC_ATAN2: return at::atan2(a, b);
    // floor_divide truncated before 1.13; div with "floor" means the same on every version.
    case DC_FLOOR_DIVIDE: return at::div(a, b, "floor");
    default: unknown_op(function, op);
  }
}

void binary_(int32_t op, at::Tensor& a, const at::Tensor& b, const char* function) {
  switch (op) {
    case DC_ADD: a.add_(b); return;
    case DC_SUB: a.sub_(b); return;
    case DC_MUL: a.mul_(b); return;
    case DC_DIV: a.div_(b); return;
    case DC_POW: a.pow_(b); return;
    // No maximum_/minimum_ methods; the out= form with a as output is the in-place kernel.
    case DC_MAXIMUM: at::maximum_out(a, a, b); return;
    case DC_MINIMUM: at::minimum_out(a, a, b); return;
    case DC_EQ: a.eq_(b); return;
    case DC_NE: a.ne_(b); return;
    case DC_LT: a.lt_(b); return;
    case DC_LE: a.le_(b); return;
    case DC_GT: a.gt_(b); return;
    case DC_GE: a.ge_(b); return;
    case DC_LOGICAL_AND: a.logical_and_(b); return;
    case DC_LOGICAL_OR: a.logical_or_(b); return;
    case DC_REMAINDER: a.remainder_(b); return;
    case DC_ATAN2: a.atan2_(b); return;
    case DC_FLOOR_DIVIDE: a.div_(b, "floor"); return;
    default: unknown_op(function, op);
  }
}

at::Tensor binary_scalar(int32_t op, const at::Tensor& a, double value) {
  const at::Scalar b = scalar_for(a, value);
  switch (op) {
    case DC_ADD: return at::add(a, b);
    case DC_SUB: return at::sub(a, b);
    case DC_MUL: return at::mul(a, b);
    case DC_DIV: return at::div(a, b);
    case DC_POW: return at::pow(a, b);
    case DC_EQ: return at::eq(a, b);
    case DC_NE: return at::ne(a, b);
    case DC_LT: return at::lt(a, b);
    case DC_LE: return at::le(a, b);
    case DC_GT: return at::gt(a, b);
    case DC_GE: return at::ge(a, b);
    case DC_REMAINDER: return at::remainder(a, b);
    case DC_FLOOR_DIVIDE: return at::div(a, b, "floor");
    case DC_MAXIMUM:
    case DC_MINIMUM:
    case DC_LOGICAL_AND:
    case DC_LOGICAL_OR:
    case DC_ATAN2: return binary(op, a, wrapped_scalar(b), "dc_binary_scalar");
    default: unknown_op("dc_binary_scalar", op);
  }
}

void binary_scalar_(int32_t op, at::Tensor& a, double value) {
  const at::Scalar b = scalar_for(a, value);
  switch (op) {
    case DC_ADD: a.add_(b); return;
    case DC_SUB: a.sub_(b); return;
    case DC_MUL: a.mul_(b); return;
    case DC_DIV: a.div_(b); return;
    case DC_POW: a.pow_(b); return;
    case DC_EQ: a.eq_(b); return;
    case DC_NE: a.ne_(b); return;
    case DC_LT: a.lt_(b); return;
    case DC_LE: a.le_(b); return;
    case DC_GT: a.gt_(b); return;
    case DC_GE: a.ge_(b); return;
    case DC_REMAINDER: a.remainder_(b); return;
    case DC_FLOOR_DIVIDE: a.div_(b, "floor"); return;
    case DC_MAXIMUM:
    case DC_MINIMUM:
    case DC_LOGICAL_AND:
    case DC_LOGICAL_OR:
    case DC_ATAN2: binary_(op, a, wrapped_scalar(b), "dc_binary_scalar_"); return;
    default: unknown_op("dc_binary_scalar_", op);
  }
}

// An infinite bound on the open side means "no bound", so integer tensors are not promoted by a +-inf Scalar.
dc::optional<at::Scalar> lower_bound(const at::Tensor& t, double v) {
  if (std::isinf(v) && v < 0) return dc::nullopt;
  return scalar_for(t, v);
}

dc::optional<at::Scalar> upper_bound(const at::Tensor& t, double v) {
  if (std::isinf(v) && v > 0) return dc::nullopt;
  return scalar_for(t, v);
}

// ndim = 0 means every dimension, listed explicitly so keepdim and the empty-list conventions agree across versions.
std::vector<int64_t> reduce_dims(const at::Tensor& t, const int64_t* dims, int64_t ndim) {
  std::vector<int64_t> out = dc::int_list(dims, ndim);
  if (out.empty()) {
    for (int64_t d = 0; d < t.dim(); ++d) out.push_back(d);
  }
  return out;
}

// var/std's correction is `optional<int64_t>` in libtorch 1.13 and `optional<Scalar>` in 2.x. A bare int64_t would
// silently pick the `bool unbiased` overload, so this converts to either optional and to nothing else: whichever
// signature the headers declare is the only viable one, with no version guard to get wrong.
struct Correction {
  int64_t value;
  operator dc::optional<int64_t>() const { return value; }
  operator dc::optional<at::Scalar>() const { return at::Scalar(value); }
};

at::OptionalIntArrayRef optional_dims(const std::vector<int64_t>& dims) {
  if (dims.empty()) return dc::nullopt;
  return at::IntArrayRef(dims);
}

void check_outputs(dc_tensor* a, dc_tensor* b) {
  if (a == nullptr || b == nullptr) throw std::invalid_argument("output handle pointer is NULL");
}

}  // namespace

extern "C" {

// ---- elementwise ----

dc_tensor dc_unary(int32_t op, dc_tensor t) { DC_TENSOR(unary(op, dc::unwrap(t))) }

int32_t dc_unary_(int32_t op, dc_tensor t) { DC_STATUS(unary_(op, dc::unwrap(t))) }

dc_tensor dc_binary(int32_t op, dc_tensor a, dc_tensor b) {
  DC_TENSOR(binary(op, dc::unwrap(a, "a"), dc::unwrap(b, "b"), "dc_binary"))
}

dc_tensor dc_binary_scalar(int32_t op, dc_tensor a, double b) { DC_TENSOR(binary_scalar(op, dc::unwrap(a), b)) }

dc_tensor dc_scalar_binary(int32_t op, double a, dc_tensor b) {
  DC_TENSOR(binary(op, wrapped_scalar(scalar_for(dc::unwrap(b), a)), dc::unwrap(b), "dc_scalar_binary"))
}

int32_t dc_binary_(int32_t op, dc_tensor a, dc_tensor b) {
  DC_STATUS(binary_(op, dc::unwrap(a, "a"), dc::unwrap(b, "b"), "dc_binary_"))
}

int32_t dc_binary_scalar_(int32_t op, dc_tensor a, double b) { DC_STATUS(binary_scalar_(op, dc::unwrap(a), b)) }

dc_tensor dc_add_scaled(dc_tensor a, dc_tensor b, double alpha) {
  DC_TENSOR(at::add(dc::unwrap(a, "a"), dc::unwrap(b, "b"), scalar_for(dc::unwrap(a, "a"), alpha)))
}

int32_t dc_add_scaled_(dc_tensor a, dc_tensor b, double alpha) {
  DC_STATUS(dc::unwrap(a, "a").add_(dc::unwrap(b, "b"), scalar_for(dc::unwrap(a, "a"), alpha)))
}

dc_tensor dc_clamp(dc_tensor t, double min, double max) {
  DC_GUARD_BEGIN
  const at::Tensor& x = dc::unwrap(t);
  auto lo = lower_bound(x, min);
  auto hi = upper_bound(x, max);
  // at::clamp rejects two missing bounds; (-inf, inf) is the identity.
  if (!lo && !hi) return dc::wrap(x.clone());
  return dc::wrap(at::clamp(x, lo, hi));
  DC_GUARD_END(nullptr)
}

int32_t dc_clamp_(dc_tensor t, double min, double max) {
  DC_STATUS({
    at::Tensor& x = dc::unwrap(t);
    auto lo = lower_bound(x, min);
    auto hi = upper_bound(x, max);
    if (lo || hi) x.clamp_(lo, hi);
  })
}

dc_tensor dc_lerp(dc_tensor a, dc_tensor b, double weight) {
  DC_TENSOR(at::lerp(dc::unwrap(a, "a"), dc::unwrap(b, "b"), at::Scalar(weight)))
}

int32_t dc_lerp_(dc_tensor a, dc_tensor b, double weight) {
  DC_STATUS(dc::unwrap(a, "a").lerp_(dc::unwrap(b, "b"), at::Scalar(weight)))
}

int32_t dc_addcmul_(dc_tensor t, dc_tensor a, dc_tensor b, double value) {
  DC_STATUS(dc::unwrap(t).addcmul_(dc::unwrap(a, "a"), dc::unwrap(b, "b"), at::Scalar(value)))
}

int32_t dc_addcdiv_(dc_tensor t, dc_tensor a, dc_tensor b, double value) {
  DC_STATUS(dc::unwrap(t).addcdiv_(dc::unwrap(a, "a"), dc::unwrap(b, "b"), at::Scalar(value)))
}

dc_tensor dc_gelu(dc_tensor t, int32_t tanh_approximation) {
  DC_TENSOR(at::gelu(dc::unwrap(t), tanh_approximation != 0 ? "tanh" : "none"))
}

// ---- reductions ----

dc_tensor dc_sum(dc_tensor t, const int64_t* dims, int64_t ndim, int32_t keepdim) {
  DC_GUARD_BEGIN
  const at::Tensor& x = dc::unwrap(t);
  if (x.dim() == 0) return dc::wrap(at::sum(x));
  return dc::wrap(at::sum(x, reduce_dims(x, dims, ndim), keepdim != 0));
  DC_GUARD_END(nullptr)
}

dc_tensor dc_mean(dc_tensor t, const int64_t* dims, int64_t ndim, int32_t keepdim) {
  DC_GUARD_BEGIN
  const at::Tensor& x = dc::unwrap(t);
  if (x.dim() == 0) return dc::wrap(at::mean(x));
  return dc::wrap(at::mean(x, reduce_dims(x, dims, ndim), keepdim != 0));
  DC_GUARD_END(nullptr)
}

dc_tensor dc_var(dc_tensor t, const int64_t* dims, int64_t ndim, int64_t correction, int32_t keepdim) {
  DC_GUARD_BEGIN
  const std::vector<int64_t> d = dc::int_list(dims, ndim);
  return dc::wrap(at::var(dc::unwrap(t), optional_dims(d), Correction{correction}, keepdim != 0));
  DC_GUARD_END(nullptr)
}

dc_tensor dc_std(dc_tensor t, const int64_t* dims, int64_t ndim, int64_t correction, int32_t keepdim) {
  DC_GUARD_BEGIN
  const std::vector<int64_t> d = dc::int_list(dims, ndim);
  return dc::wrap(at::std(dc::unwrap(t), optional_dims(d), Correction{correction}, keepdim != 0));
  DC_GUARD_END(nullptr)
}

dc_tensor dc_norm(dc_tensor t, double p, const int64_t* dims, int64_t ndim, int32_t keepdim) {
  DC_GUARD_BEGIN
  const at::Tensor& x = dc::unwrap(t);
  if (x.dim() == 0) return dc::wrap(at::norm(x, at::Scalar(p)));
  return dc::wrap(at::norm(x, dc::optional<at::Scalar>(p), reduce_dims(x, dims, ndim), keepdim != 0));
  DC_GUARD_END(nullptr)
}

dc_tensor dc_amax(dc_tensor t, const int64_t* dims, int64_t ndim, int32_t keepdim) {
  DC_GUARD_BEGIN
  const at::Tensor& x = dc::unwrap(t);
  return dc::wrap(at::amax(x, reduce_dims(x, dims, ndim), keepdim != 0));
  DC_GUARD_END(nullptr)
}

dc_tensor dc_amin(dc_tensor t, const int64_t* dims, int64_t ndim, int32_t keepdim) {
  DC_GUARD_BEGIN
  const at::Tensor& x = dc::unwrap(t);
  return dc::wrap(at::amin(x, reduce_dims(x, dims, ndim), keepdim != 0));
  DC_GUARD_END(nullptr)
}

dc_tensor dc_logsumexp(dc_tensor t, const int64_t* dims, int64_t ndim, int32_t keepdim) {
  DC_GUARD_BEGIN
  const at::Tensor& x = dc::unwrap(t);
  // logsumexp of a single element is the element; the empty dim list means "none" to some versions.
  if (x.dim() == 0) return dc::wrap(x.clone());
  return dc::wrap(at::logsumexp(x, reduce_dims(x, dims, ndim), keepdim != 0));
  DC_GUARD_END(nullptr)
}

dc_tensor dc_prod(dc_tensor t, int64_t dim, int32_t keepdim) { DC_TENSOR(at::prod(dc::unwrap(t), dim, keepdim != 0)) }

dc_tensor dc_cumsum(dc_tensor t, int64_t dim) { DC_TENSOR(at::cumsum(dc::unwrap(t), dim)) }

dc_tensor dc_argmax(dc_tensor t, int64_t dim, int32_t keepdim, int32_t all_dims) {
  DC_TENSOR(all_dims != 0 ? at::argmax(dc::unwrap(t)) : at::argmax(dc::unwrap(t), dim, keepdim != 0))
}

dc_tensor dc_argmin(dc_tensor t, int64_t dim, int32_t keepdim, int32_t all_dims) {
  DC_TENSOR(all_dims != 0 ? at::argmin(dc::unwrap(t)) : at::argmin(dc::unwrap(t), dim, keepdim != 0))
}

// The multi-output functions compute everything before wrapping, so a failure leaves no handle behind.
int32_t dc_max_dim(dc_tensor t, int64_t dim, int32_t keepdim, dc_tensor* out_values, dc_tensor* out_indices) {
  DC_STATUS({
    check_outputs(out_values, out_indices);
    auto result = at::max(dc::unwrap(t), dim, keepdim != 0);
    *out_values = dc::wrap(std::get<0>(result));
    *out_indices = dc::wrap(std::get<1>(result));
  })
}

dc_tensor dc_all(dc_tensor t) { DC_TENSOR(at::all(dc::unwrap(t))) }

dc_tensor dc_any(dc_tensor t) { DC_TENSOR(at::any(dc::unwrap(t))) }

int32_t dc_sort(dc_tensor t, int64_t dim, int32_t descending, int32_t stable, dc_tensor* out_values,
                dc_tensor* out_indices) {
  DC_STATUS({
    check_outputs(out_values, out_indices);
    auto result = at::sort(dc::unwrap(t), dc::optional<bool>(stable != 0), dim, descending != 0);
    *out_values = dc::wrap(std::get<0>(result));
    *out_indices = dc::wrap(std::get<1>(result));
  })
}

dc_tensor dc_argsort(dc_tensor t, int64_t dim, int32_t descending, int32_t stable) {
  DC_TENSOR(at::argsort(dc::unwrap(t), stable != 0, dim, descending != 0))
}

int32_t dc_topk(dc_tensor t, int64_t k, int64_t dim, int32_t largest, int32_t sorted, dc_tensor* out_values,
                dc_tensor* out_indices) {
  DC_STATUS({
    check_outputs(out_values, out_indices);
    auto result = at::topk(dc::unwrap(t), k, dim, largest != 0, sorted != 0);
    *out_values = dc::wrap(std::get<0>(result));
    *out_indices = dc::wrap(std::get<1>(result));
  })
}

int32_t dc_allclose(dc_tensor a, dc_tensor b, double rtol, double atol) {
  DC_GUARD_BEGIN
  const at::Tensor& x = dc::unwrap(a, "a");
  const at::Tensor& y = dc::unwrap(b, "b");
  // at::allclose broadcasts; a shape mismatch is almost always a bug in a test, so it is an error, not a 0.
  if (!x.sizes().equals(y.sizes())) {
    throw std::invalid_argument("dc_allclose: shapes differ: " + c10::str(x.sizes()) + " vs " + c10::str(y.sizes()));
  }
  return at::allclose(x, y, rtol, atol) ? 1 : 0;
  DC_GUARD_END(-1)
}

}  // extern "C"
