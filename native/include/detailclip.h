/*
 * detailclip.h: the whole C ABI of libdetailclip, the native half of detailclip.
 *
 * Conventions (the same for every function, so the TypeScript side can be generated from this file):
 * - Every function is `extern "C"` and prefixed `dc_`. Under C++ a `dc_tensor` is an `at::Tensor*` that owns exactly
 *   one reference; `dc_free` deletes it. Every tensor a function returns is a new handle the caller must free.
 * - No C++ exception ever crosses this boundary. On failure a function returns its sentinel and stores a message
 *   that `dc_last_error` returns (thread-local, valid until the next failure on the same thread):
 *     handle-returning functions -> NULL;  int32_t status functions -> non-zero;
 *     int64_t count/size functions and int32_t queries (dtype, flags, allclose) -> -1;
 *     dc_device -> -2 (because -1 means the CPU).
 * - Scalars are doubles; a whole-number scalar applied to an integer or bool tensor acts as an integer scalar
 *   (int64 + 1 stays int64, as in Python). Clamp bounds of -inf/+inf mean "no bound".
 * - dtype codes: DC_F32 0, DC_F64 1, DC_F16 2, DC_BF16 3, DC_I64 4, DC_I32 5, DC_U8 6, DC_BOOL 7, DC_I8 8, DC_I16 9.
 * - device codes: -1 is the CPU, n >= 0 is cuda:n.
 * - Shapes and dimension lists are `const int64_t*` with a separate length. Optional tensors are NULL.
 * - Arrays of handles are `const dc_tensor*` with a length; multi-output ops write handles into `dc_tensor* out`.
 * - Functions marked DC_NONBLOCKING are coarse, self-contained and safe to run off the JS main thread.
 *
 * Each parameter name below is copied into the generated TypeScript symbol table (tools/gen_symbols.ts), so keep
 * one declaration per line.
 */
#ifndef DETAILCLIP_H
#define DETAILCLIP_H

#include <stdint.h>

#ifdef __cplusplus
namespace at { class Tensor; }
typedef at::Tensor* dc_tensor;
extern "C" {
#else
typedef void* dc_tensor;
#endif
/* An opaque RAII guard owned by the caller (inference mode). */
typedef void* dc_guard;

#define DC_API __attribute__((visibility("default")))
#define DC_NONBLOCKING

/* Bump when any signature or code below changes; src/torch/lib.ts refuses a library with another version. */
#define DC_ABI_VERSION 8

/* ---- library, errors, runtime ------------------------------------------------------------------------------- */
DC_API int32_t dc_abi_version(void);
DC_API const char* dc_last_error(void);
DC_API const char* dc_torch_version(void);
DC_API int64_t dc_live_tensors(void);
DC_API void dc_free(dc_tensor t);
DC_API int32_t dc_set_num_threads(int32_t n);
DC_API int32_t dc_get_num_threads(void);
DC_API int32_t dc_cuda_is_available(void);
DC_API int32_t dc_cuda_device_count(void);
DC_API int32_t dc_cuda_synchronize(int32_t device);
DC_API int32_t dc_manual_seed(uint64_t seed);
DC_API dc_tensor dc_rng_get_state(int32_t device);
DC_API int32_t dc_rng_set_state(int32_t device, dc_tensor state);
DC_API int32_t dc_set_grad_enabled(int32_t enabled);
DC_API int32_t dc_is_grad_enabled(void);
/* Inference mode is a RAII guard in libtorch; enter returns an opaque guard that exit destroys (strictly nested). */
DC_API dc_guard dc_inference_mode_enter(void);
DC_API int32_t dc_inference_mode_exit(dc_guard guard);
/* Autocast for device_type 0 = CPU, 1 = CUDA; dtype is the lower-precision type (DC_F16 or DC_BF16). */
DC_API int32_t dc_autocast_set(int32_t device_type, int32_t enabled, int32_t dtype);
DC_API int32_t dc_autocast_is_enabled(int32_t device_type);
DC_API int32_t dc_autocast_clear_cache(void);

/* ---- metadata ---------------------------------------------------------------------------------------------- */
DC_API int64_t dc_dim(dc_tensor t);
DC_API int32_t dc_shape(dc_tensor t, int64_t* out_shape);
DC_API int64_t dc_numel(dc_tensor t);
DC_API int32_t dc_dtype(dc_tensor t);
DC_API int32_t dc_device(dc_tensor t);
DC_API int32_t dc_is_contiguous(dc_tensor t);

/* ---- creation and copies ----------------------------------------------------------------------------------- */
DC_API dc_tensor dc_empty(const int64_t* shape, int64_t ndim, int32_t dtype, int32_t device);
DC_API dc_tensor dc_zeros(const int64_t* shape, int64_t ndim, int32_t dtype, int32_t device);
DC_API dc_tensor dc_ones(const int64_t* shape, int64_t ndim, int32_t dtype, int32_t device);
DC_API dc_tensor dc_full(const int64_t* shape, int64_t ndim, double value, int32_t dtype, int32_t device);
DC_API dc_tensor dc_scalar_tensor(double value, int32_t dtype, int32_t device);
DC_API dc_tensor dc_arange(double start, double end, double step, int32_t dtype, int32_t device);
DC_API dc_tensor dc_linspace(double start, double end, int64_t steps, int32_t dtype, int32_t device);
DC_API dc_tensor dc_eye(int64_t n, int32_t dtype, int32_t device);
DC_API dc_tensor dc_rand(const int64_t* shape, int64_t ndim, int32_t dtype, int32_t device);
DC_API dc_tensor dc_randn(const int64_t* shape, int64_t ndim, int32_t dtype, int32_t device);
DC_API dc_tensor dc_randint(int64_t low, int64_t high, const int64_t* shape, int64_t ndim, int32_t device);
DC_API dc_tensor dc_randperm(int64_t n, int32_t device);
/* Copies nbytes of raw little-endian element data (nbytes must equal numel * element size). */
DC_API dc_tensor dc_from_data(const void* data, int64_t nbytes, const int64_t* shape, int64_t ndim, int32_t dtype, int32_t device);
/* Copies the tensor's elements, row-major, into out (nbytes must equal numel * element size); any device. */
DC_API int32_t dc_copy_to_buffer(dc_tensor t, void* out, int64_t nbytes);
DC_API int32_t dc_item(dc_tensor t, double* out);
DC_API dc_tensor dc_shallow_clone(dc_tensor t);
DC_API dc_tensor dc_clone(dc_tensor t);
DC_API dc_tensor dc_contiguous(dc_tensor t);
/* dtype < 0 keeps the dtype; device < -1 keeps the device. */
DC_API dc_tensor dc_to(dc_tensor t, int32_t dtype, int32_t device, int32_t non_blocking);
DC_API dc_tensor dc_pin_memory(dc_tensor t);
DC_API int32_t dc_copy_(dc_tensor dst, dc_tensor src);

/* ---- seeded initialisation, in place under no-grad (torch.nn.init semantics) --------------------------------- */
DC_API int32_t dc_normal_(dc_tensor t, double mean, double std);
DC_API int32_t dc_uniform_(dc_tensor t, double low, double high);
/* timm/PyTorch trunc_normal_: N(mean, std) truncated to [a, b] in absolute units. */
DC_API int32_t dc_trunc_normal_(dc_tensor t, double mean, double std, double a, double b);
DC_API int32_t dc_xavier_uniform_(dc_tensor t, double gain);
DC_API int32_t dc_kaiming_uniform_(dc_tensor t, double a);
DC_API int32_t dc_fill_(dc_tensor t, double value);
DC_API int32_t dc_zero_(dc_tensor t);

/* ---- views and indexing ------------------------------------------------------------------------------------ */
DC_API dc_tensor dc_reshape(dc_tensor t, const int64_t* shape, int64_t ndim);
DC_API dc_tensor dc_view(dc_tensor t, const int64_t* shape, int64_t ndim);
DC_API dc_tensor dc_permute(dc_tensor t, const int64_t* dims, int64_t ndim);
DC_API dc_tensor dc_transpose(dc_tensor t, int64_t dim0, int64_t dim1);
DC_API dc_tensor dc_slice(dc_tensor t, int64_t dim, int64_t start, int64_t end, int64_t step);
DC_API dc_tensor dc_select(dc_tensor t, int64_t dim, int64_t index);
DC_API dc_tensor dc_narrow(dc_tensor t, int64_t dim, int64_t start, int64_t length);
DC_API dc_tensor dc_squeeze(dc_tensor t, int64_t dim);
DC_API dc_tensor dc_unsqueeze(dc_tensor t, int64_t dim);
DC_API dc_tensor dc_flatten(dc_tensor t, int64_t start_dim, int64_t end_dim);
DC_API dc_tensor dc_expand(dc_tensor t, const int64_t* shape, int64_t ndim);
DC_API dc_tensor dc_repeat(dc_tensor t, const int64_t* repeats, int64_t ndim);
DC_API dc_tensor dc_flip(dc_tensor t, const int64_t* dims, int64_t ndim);
DC_API dc_tensor dc_gather(dc_tensor t, int64_t dim, dc_tensor index);
DC_API dc_tensor dc_scatter(dc_tensor t, int64_t dim, dc_tensor index, dc_tensor src);
DC_API dc_tensor dc_scatter_add(dc_tensor t, int64_t dim, dc_tensor index, dc_tensor src);
DC_API dc_tensor dc_index_select(dc_tensor t, int64_t dim, dc_tensor index);
DC_API dc_tensor dc_masked_fill(dc_tensor t, dc_tensor mask, double value);
DC_API dc_tensor dc_where(dc_tensor condition, dc_tensor a, dc_tensor b);
DC_API dc_tensor dc_triu(dc_tensor t, int64_t diagonal);
DC_API dc_tensor dc_tril(dc_tensor t, int64_t diagonal);
DC_API dc_tensor dc_cat(const dc_tensor* tensors, int64_t n, int64_t dim);
DC_API dc_tensor dc_stack(const dc_tensor* tensors, int64_t n, int64_t dim);
/* Write up to capacity handles into out; return how many there are (or -1). */
DC_API int64_t dc_chunk(dc_tensor t, int64_t chunks, int64_t dim, dc_tensor* out, int64_t capacity);
DC_API int64_t dc_split(dc_tensor t, int64_t split_size, int64_t dim, dc_tensor* out, int64_t capacity);

/* ---- elementwise --------------------------------------------------------------------------------------------- */
/* Unary op codes. */
#define DC_NEG 0
#define DC_EXP 1
#define DC_LOG 2
#define DC_SQRT 3
#define DC_RSQRT 4
#define DC_ABS 5
#define DC_SIN 6
#define DC_COS 7
#define DC_TANH 8
#define DC_SIGMOID 9
#define DC_RELU 10
#define DC_ERF 11
#define DC_ERFINV 12
#define DC_RECIPROCAL 13
#define DC_SIGN 14
#define DC_FLOOR 15
#define DC_CEIL 16
#define DC_ROUND 17
#define DC_LOGICAL_NOT 18
#define DC_ISFINITE 19
#define DC_ISNAN 20
#define DC_SQUARE 21
#define DC_LOG1P 22
#define DC_EXPM1 23
#define DC_SILU 24
#define DC_TRUNC 25
DC_API dc_tensor dc_unary(int32_t op, dc_tensor t);
DC_API int32_t dc_unary_(int32_t op, dc_tensor t);
/* Binary op codes (broadcasting). */
#define DC_ADD 0
#define DC_SUB 1
#define DC_MUL 2
#define DC_DIV 3
#define DC_POW 4
#define DC_MAXIMUM 5
#define DC_MINIMUM 6
#define DC_EQ 7
#define DC_NE 8
#define DC_LT 9
#define DC_LE 10
#define DC_GT 11
#define DC_GE 12
#define DC_LOGICAL_AND 13
#define DC_LOGICAL_OR 14
#define DC_REMAINDER 15
#define DC_ATAN2 16
#define DC_FLOOR_DIVIDE 17
DC_API dc_tensor dc_binary(int32_t op, dc_tensor a, dc_tensor b);
DC_API dc_tensor dc_binary_scalar(int32_t op, dc_tensor a, double b);
/* scalar op tensor, for the non-commutative ops (e.g. 1 - x, 2 / x). */
DC_API dc_tensor dc_scalar_binary(int32_t op, double a, dc_tensor b);
DC_API int32_t dc_binary_(int32_t op, dc_tensor a, dc_tensor b);
DC_API int32_t dc_binary_scalar_(int32_t op, dc_tensor a, double b);
DC_API dc_tensor dc_add_scaled(dc_tensor a, dc_tensor b, double alpha);
DC_API int32_t dc_add_scaled_(dc_tensor a, dc_tensor b, double alpha);
DC_API dc_tensor dc_clamp(dc_tensor t, double min, double max);
DC_API int32_t dc_clamp_(dc_tensor t, double min, double max);
DC_API dc_tensor dc_lerp(dc_tensor a, dc_tensor b, double weight);
DC_API int32_t dc_lerp_(dc_tensor a, dc_tensor b, double weight);
DC_API int32_t dc_addcmul_(dc_tensor t, dc_tensor a, dc_tensor b, double value);
DC_API int32_t dc_addcdiv_(dc_tensor t, dc_tensor a, dc_tensor b, double value);
DC_API dc_tensor dc_gelu(dc_tensor t, int32_t tanh_approximation);

/* ---- reductions ---------------------------------------------------------------------------------------------- */
/* ndim = 0 reduces over all dimensions. */
DC_API dc_tensor dc_sum(dc_tensor t, const int64_t* dims, int64_t ndim, int32_t keepdim);
DC_API dc_tensor dc_mean(dc_tensor t, const int64_t* dims, int64_t ndim, int32_t keepdim);
/* correction 1 = unbiased (torch default), 0 = population. */
DC_API dc_tensor dc_var(dc_tensor t, const int64_t* dims, int64_t ndim, int64_t correction, int32_t keepdim);
DC_API dc_tensor dc_std(dc_tensor t, const int64_t* dims, int64_t ndim, int64_t correction, int32_t keepdim);
DC_API dc_tensor dc_norm(dc_tensor t, double p, const int64_t* dims, int64_t ndim, int32_t keepdim);
DC_API dc_tensor dc_amax(dc_tensor t, const int64_t* dims, int64_t ndim, int32_t keepdim);
DC_API dc_tensor dc_amin(dc_tensor t, const int64_t* dims, int64_t ndim, int32_t keepdim);
DC_API dc_tensor dc_logsumexp(dc_tensor t, const int64_t* dims, int64_t ndim, int32_t keepdim);
DC_API dc_tensor dc_prod(dc_tensor t, int64_t dim, int32_t keepdim);
DC_API dc_tensor dc_cumsum(dc_tensor t, int64_t dim);
/* Over all elements when all_dims != 0 (then dim and keepdim are ignored). */
DC_API dc_tensor dc_argmax(dc_tensor t, int64_t dim, int32_t keepdim, int32_t all_dims);
DC_API dc_tensor dc_argmin(dc_tensor t, int64_t dim, int32_t keepdim, int32_t all_dims);
DC_API int32_t dc_max_dim(dc_tensor t, int64_t dim, int32_t keepdim, dc_tensor* out_values, dc_tensor* out_indices);
DC_API dc_tensor dc_all(dc_tensor t);
DC_API dc_tensor dc_any(dc_tensor t);
DC_API int32_t dc_sort(dc_tensor t, int64_t dim, int32_t descending, int32_t stable, dc_tensor* out_values, dc_tensor* out_indices);
DC_API dc_tensor dc_argsort(dc_tensor t, int64_t dim, int32_t descending, int32_t stable);
DC_API int32_t dc_topk(dc_tensor t, int64_t k, int64_t dim, int32_t largest, int32_t sorted, dc_tensor* out_values, dc_tensor* out_indices);
/* 1 when every element of a and b is within atol + rtol * |b| (same shape), 0 when not, negative on error. */
DC_API int32_t dc_allclose(dc_tensor a, dc_tensor b, double rtol, double atol);

/* ---- linear algebra and neural-network functions ---------------------------------------------------------------- */
DC_API dc_tensor dc_matmul(dc_tensor a, dc_tensor b);
DC_API dc_tensor dc_bmm(dc_tensor a, dc_tensor b);
DC_API dc_tensor dc_linear(dc_tensor x, dc_tensor weight, dc_tensor bias);
DC_API dc_tensor dc_conv2d(dc_tensor x, dc_tensor weight, dc_tensor bias, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t groups);
DC_API dc_tensor dc_embedding(dc_tensor weight, dc_tensor indices);
/* dtype < 0 keeps the input dtype; otherwise the input is cast first (as torch's softmax(dtype=)). */
DC_API dc_tensor dc_softmax(dc_tensor t, int64_t dim, int32_t dtype);
DC_API dc_tensor dc_log_softmax(dc_tensor t, int64_t dim, int32_t dtype);
DC_API dc_tensor dc_layer_norm(dc_tensor x, const int64_t* normalized_shape, int64_t ndim, dc_tensor weight, dc_tensor bias, double eps);
/* F.normalize: x / max(||x||_p, eps) along dim. */
DC_API dc_tensor dc_normalize(dc_tensor t, double p, int64_t dim, double eps);
/* reduction: 0 none, 1 mean, 2 sum. target holds class indices (int64). */
DC_API dc_tensor dc_cross_entropy(dc_tensor logits, dc_tensor target, dc_tensor weight, int32_t reduction, int64_t ignore_index, double label_smoothing);
DC_API dc_tensor dc_mse_loss(dc_tensor a, dc_tensor b, int32_t reduction);
/* mode: 0 nearest, 1 bilinear, 2 bicubic. Output size (out_h, out_w). */
DC_API dc_tensor dc_interpolate(dc_tensor x, int64_t out_h, int64_t out_w, int32_t mode, int32_t align_corners);
DC_API dc_tensor dc_avg_pool2d(dc_tensor x, int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w);
DC_API dc_tensor dc_one_hot(dc_tensor indices, int64_t num_classes);
/* softmax(q k^T * scale + mask) v over the last two dims; mask is additive float, bool (true = may attend) or NULL.
 * Uses the fused kernel on
 * libtorch >= 2.0 and the explicit composition on 1.13. */
DC_API dc_tensor dc_scaled_dot_product_attention(dc_tensor q, dc_tensor k, dc_tensor v, dc_tensor mask, double scale);

/* ---- autograd ---------------------------------------------------------------------------------------------------- */
DC_API int32_t dc_set_requires_grad(dc_tensor t, int32_t requires_grad);
DC_API int32_t dc_requires_grad(dc_tensor t);
DC_API int32_t dc_is_leaf(dc_tensor t);
/* Backward from t (a scalar unless grad is given). */
DC_API int32_t dc_backward(dc_tensor t, dc_tensor grad, int32_t retain_graph);
/* Writes the gradient handle into out, or NULL when the tensor has no gradient. */
DC_API int32_t dc_grad(dc_tensor t, dc_tensor* out);
/* grad NULL clears the gradient; otherwise dtype, device and shape must match (as Python's .grad setter). */
DC_API int32_t dc_set_grad(dc_tensor t, dc_tensor grad);
DC_API int32_t dc_zero_grad(dc_tensor t, int32_t set_to_none);
DC_API dc_tensor dc_detach(dc_tensor t);
DC_API int32_t dc_detach_(dc_tensor t);

/* ---- optimizers, EMA, mixed precision (all in place, under no-grad) ------------------------------------------- */
DC_API int32_t dc_foreach_mul_scalar_(const dc_tensor* tensors, int64_t n, double scalar);
DC_API int32_t dc_foreach_add_list_(const dc_tensor* tensors, const dc_tensor* others, int64_t n, double alpha);
DC_API int32_t dc_foreach_lerp_(const dc_tensor* tensors, const dc_tensor* ends, int64_t n, double weight);
DC_API int32_t dc_foreach_zero_(const dc_tensor* tensors, int64_t n);
DC_API int32_t dc_foreach_copy_(const dc_tensor* dst, const dc_tensor* src, int64_t n);
/* EMA: teacher <- momentum * teacher + (1 - momentum) * student, for each pair. */
DC_API int32_t dc_ema_update_(const dc_tensor* teacher, const dc_tensor* student, int64_t n, double momentum);
/* One AdamW step (PyTorch semantics: decoupled decay p *= 1 - lr*wd, bias-corrected Adam, eps after sqrt) for a
 * parameter group. step is the 1-based step count after this update, shared by the group (PyTorch counts per
 * parameter; they differ only for parameters that skipped steps). Parameters without a gradient are skipped. */
DC_API int32_t dc_adamw_step_(const dc_tensor* params, const dc_tensor* exp_avg, const dc_tensor* exp_avg_sq, int64_t n, double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step);
/* Grad scaler: multiply every gradient by inv_scale; set found_inf (a 1-element f32 tensor) to 1 when any is not
 * finite. found_inf is never cleared here (the caller zeroes it per step). */
DC_API int32_t dc_amp_unscale_(const dc_tensor* grads, int64_t n, dc_tensor found_inf, double inv_scale);
/* Total L2 norm of the gradients of the given parameters, as a 0-d f32 tensor (no host sync). */
DC_API dc_tensor dc_grad_norm(const dc_tensor* params, int64_t n);

/* ---- token selection (docs/model.md#attention-guided-token-removal; CPU reference in prune.cpp) ----------------- */
/* scores (B, grid_h*grid_w) float, e.g. the teacher's CLS->patch attention. Pools each cell x cell block of patches
 * into one cell score (the block mean accumulated in double: for cell 2 bit-identical to the official bilinear 2x
 * resize on libtorch 1.13), keeps the top min(floor(C*ratio) + 1, C) of the C cells (descending, ties to the lower
 * index) and removes the rest.
 * Writes out_mask (B, N) bool (true = removed), out_ids_keep (B, K) int64 (kept patches, ascending raster order,
 * K the same for every image) and out_ids_restore (B, N) int64 (inverse permutation of [kept, removed ascending]).
 * grid_h and grid_w must be divisible by cell; ratio must lie in [0, 1]. No gradient flows through it. */
DC_API int32_t dc_select_tokens(dc_tensor scores, int64_t grid_h, int64_t grid_w, int64_t cell, double ratio, dc_tensor* out_mask, dc_tensor* out_ids_keep, dc_tensor* out_ids_restore);

/* ---- distributed (c10d; dist.cpp) ------------------------------------------------------------------------------ */
/* Process groups are int64 ids (>= 0). backend: 0 Gloo (CPU tensors), 1 NCCL (CUDA tensors). timeout_ms bounds the
 * rendezvous, every collective and every store wait. backend 2 forms only the rendezvous store (store calls work,
 * collectives fail): for tests of the rendezvous on builds without a collective backend. A failed collective (peer died, deadline passed) marks the group
 * broken; its message names the lost ranks, and every later call on the group repeats it.
 * 1 when the backend was compiled in, 0 when not. */
DC_API int32_t dc_dist_available(int32_t backend);
/* Rank 0 hosts the TCPStore at host:port (libtorch >= 2.4: bound to host when it is a literal address of this machine,
 * else on every interface; a port held by another program is an error naming it) and waits for world - 1 workers; a
 * worker first checks (within timeout_ms) that a store answers at host:port, naming the program there when not;
 * every rank then forms the group. */
DC_API int64_t dc_dist_init(const char* host, int64_t port, int64_t rank, int64_t world, int32_t backend, int64_t timeout_ms);
DC_API int32_t dc_dist_destroy(int64_t group);
/* In place; op: 0 sum, 1 avg (sum / world), 2 max, 3 min. Any layout and dtype (copied through a dense buffer). */
DC_API int32_t dc_dist_all_reduce_(int64_t group, dc_tensor t, int32_t op);
/* Broadcasts each tensor from root, in place, packed into flat buckets of about bucket_bytes (no autograd). */
DC_API int32_t dc_dist_broadcast_(int64_t group, const dc_tensor* tensors, int64_t n, int64_t root, int64_t bucket_bytes);
/* (B, ...) -> (world*B, ...) concatenated in rank order; no gradient. Every rank must pass the same shape. */
DC_API dc_tensor dc_dist_all_gather(int64_t group, dc_tensor t);
/* As dc_dist_all_gather, with a gradient: backward all-reduces (sums) the incoming gradient and returns this rank's
 * rows (SLIP's GatherLayer). */
DC_API dc_tensor dc_dist_gather_with_grad(int64_t group, dc_tensor t);
DC_API int32_t dc_dist_barrier(int64_t group);
/* Averages the .grad of each parameter over ranks: flat buckets of about bucket_bytes, one all-reduce each, all in
 * flight together, then divided by world and copied back. A parameter without a gradient gets a zero one first. */
DC_API int32_t dc_dist_average_grads_(int64_t group, const dc_tensor* params, int64_t n, int64_t bucket_bytes);
/* The same average, overlapped with backward: post hooks on the parameters' gradient accumulators launch each bucket's
 * all-reduce as soon as its gradients are complete. prepare() before the backward (of the last micro-step), finish()
 * after it: launches what is left, waits, divides by world and copies back. The first prepared step learns how many
 * gradients each parameter gets and reduces at finish only. new returns an id (-1 on error). */
DC_API int64_t dc_dist_reducer_new(int64_t group, const dc_tensor* params, int64_t n, int64_t bucket_bytes);
DC_API int32_t dc_dist_reducer_prepare(int64_t reducer);
/* finish returns how many buckets were launched during backward (overlapped), -1 on error. */
DC_API int64_t dc_dist_reducer_finish(int64_t reducer);
DC_API int64_t dc_dist_reducer_buckets(int64_t reducer);
DC_API int32_t dc_dist_reducer_free(int64_t reducer);
/* The rendezvous store: key is NUL-terminated; get waits up to the timeout, copies min(size, capacity) bytes into out
 * and returns the value's size. */
DC_API int32_t dc_dist_store_set(int64_t group, const char* key, const void* value, int64_t nbytes);
DC_API int64_t dc_dist_store_get(int64_t group, const char* key, void* out, int64_t capacity);

/* ---- process (process.cpp) -------------------------------------------------------------------------------- */
/* Ties this process to its parent (a rank to its launcher): returns 1 at once when the parent is no longer
 * parent_pid, else starts (once per process) a thread that checks every interval_ms and SIGKILLs this process as
 * soon as the parent has changed (the launcher died, even by SIGKILL), and returns 0. */
DC_API int32_t dc_exit_with_parent(int64_t parent_pid, int64_t interval_ms);

/* ---- data pipeline (data.cpp): image decoding and augmentation on native worker threads ----------------------- */
/* A loader owns a pool of worker threads that read encoded images (a whole file or a byte range of one, e.g. a tar
 * member, or a zip member, stored or deflated), decode them (JPEG via TurboJPEG with DCT down-scaling, PNG via libpng, WebP via libwebp) to RGB8 and write
 * the train augmentation of docs/data.md#image-transforms or the eval transform as normalized float32 (B, 3, S, S)
 * views. Loaders are named by positive int64 ids, not pointers, so a stale or twice-freed id is an error, never a
 * crash. Bad input never fails a call: every candidate image gets a status (DC_IMG_*), and each batch slot is filled by
 * the first candidate of its chain whose status is DC_IMG_OK. A sample's random stream depends only on (seed, rank,
 * epoch, sample index, view), never on the worker that ran it. */
/* Candidate status: 0 decoded; the others are the reasons an image is skipped; -1 in out_status means not tried. */
#define DC_IMG_OK 0
#define DC_IMG_MISSING 1
#define DC_IMG_UNREADABLE 2
#define DC_IMG_EMPTY 3
#define DC_IMG_UNSUPPORTED 4
#define DC_IMG_TOO_LARGE 5
#define DC_IMG_CORRUPT 6
#define DC_IMG_TRUNCATED 7
#define DC_IMG_FAILED 8
/* A compressed or archived member (a zip member) that fails its checks: bad local header, deflate data that does not
 * inflate, or an uncompressed size or CRC-32 other than the archive's directory says. */
#define DC_IMG_MEMBER_CORRUPT 9
/* Loader configuration: DC_CFG_COUNT doubles at these indices. Mode 0 = train, 1 = eval. Alpha 0 = drop (PIL's
 * convert("RGB")), 1 = composite on black. A jitter range equal to the identity (1, 1) or hue (0, 0) is not drawn. */
#define DC_CFG_THREADS 0
#define DC_CFG_IMAGE_SIZE 1
#define DC_CFG_MODE 2
#define DC_CFG_VIEWS 3
#define DC_CFG_MAX_PIXELS 4
#define DC_CFG_MAX_BYTES 5
#define DC_CFG_ALPHA 6
#define DC_CFG_DCT_SCALING 7
#define DC_CFG_PIN 8
#define DC_CFG_SCALE_MIN 9
#define DC_CFG_SCALE_MAX 10
#define DC_CFG_RATIO_MIN 11
#define DC_CFG_RATIO_MAX 12
#define DC_CFG_JITTER_P 13
#define DC_CFG_BRIGHTNESS_MIN 14
#define DC_CFG_BRIGHTNESS_MAX 15
#define DC_CFG_CONTRAST_MIN 16
#define DC_CFG_CONTRAST_MAX 17
#define DC_CFG_SATURATION_MIN 18
#define DC_CFG_SATURATION_MAX 19
#define DC_CFG_HUE_MIN 20
#define DC_CFG_HUE_MAX 21
#define DC_CFG_GRAY_P 22
#define DC_CFG_BLUR_P 23
#define DC_CFG_BLUR_SIGMA_MIN 24
#define DC_CFG_BLUR_SIGMA_MAX 25
#define DC_CFG_SOLARIZE_P 26
#define DC_CFG_SOLARIZE_THRESHOLD 27
#define DC_CFG_MEAN_R 28
#define DC_CFG_STD_R 31
#define DC_CFG_COUNT 34
/* A candidate is DC_CAND_STRIDE int64 values at these indices: the byte offset and length (-1 = to the end of the file)
 * of the stored bytes; the sample index (keys the random stream); the method: DC_CAND_RAW (the bytes are the encoded
 * image) or DC_CAND_DEFLATE (a raw deflate stream, zip's method 8, that inflates to it); flags: DC_CAND_ZIP_LOCAL =
 * the offset is a zip member's local file header (its signature is checked, the data starts after its name and extra
 * field, and length counts from there); the uncompressed size (-1 = unknown) and the CRC-32 of the uncompressed
 * bytes (-1 = not checked). A size or CRC-32 that differs, or deflate data that does not inflate, is
 * DC_IMG_MEMBER_CORRUPT; an uncompressed size over the byte limit is DC_IMG_TOO_LARGE. */
#define DC_CAND_OFFSET 0
#define DC_CAND_LENGTH 1
#define DC_CAND_INDEX 2
#define DC_CAND_METHOD 3
#define DC_CAND_FLAGS 4
#define DC_CAND_SIZE 5
#define DC_CAND_CRC32 6
#define DC_CAND_STRIDE 7
#define DC_CAND_RAW 0
#define DC_CAND_DEFLATE 8
#define DC_CAND_ZIP_LOCAL 1
/* The per-slot record of dc_loader_collect (DC_INFO_STRIDE int64 values, all -1 for an unfilled slot): the candidate
 * used, the image size, the decoded size (smaller after DCT scaling), the crop box (top, left, height, width) of each
 * view in original pixels (eval: crop offset and resized height and width in u, v unused), and the applied ops, 4 bits
 * per view (1 jitter, 2 grayscale, 4 blur, 8 solarize; v's shifted by 4). */
#define DC_INFO_CANDIDATE 0
#define DC_INFO_WIDTH 1
#define DC_INFO_HEIGHT 2
#define DC_INFO_DECODED_WIDTH 3
#define DC_INFO_DECODED_HEIGHT 4
#define DC_INFO_U_TOP 5
#define DC_INFO_U_LEFT 6
#define DC_INFO_U_HEIGHT 7
#define DC_INFO_U_WIDTH 8
#define DC_INFO_V_TOP 9
#define DC_INFO_V_LEFT 10
#define DC_INFO_V_HEIGHT 11
#define DC_INFO_V_WIDTH 12
#define DC_INFO_FLAGS 13
#define DC_INFO_STRIDE 14
/* Starts `threads` workers; returns the loader id (> 0) or -1. */
DC_API int64_t dc_loader_new(const double* config, int64_t n_config);
/* Stops the workers (waiting for the images in progress) and forgets the loader and its uncollected jobs. */
DC_API int32_t dc_loader_free(int64_t loader);
/* Queues one batch and returns at once with a job id (> 0) or -1. paths: n NUL-terminated UTF-8 paths back to back
 * (paths_nbytes in all); candidates: n * DC_CAND_STRIDE; slot_begin: batch + 1 offsets, slot b tries candidates
 * [slot_begin[b], slot_begin[b+1]) in order (an empty range leaves the slot untouched; a range with no decodable image
 * zero-fills it). u and v: contiguous CPU float32 (batch, 3, S, S) tensors to fill, or NULL to allocate (pinned when
 * the config asks and CUDA is available); v is ignored with one view. */
DC_API int64_t dc_loader_submit(int64_t loader, const char* paths, int64_t paths_nbytes, const int64_t* candidates, int64_t n, const int64_t* slot_begin, int64_t batch, uint64_t seed, int64_t rank, int64_t epoch, dc_tensor u, dc_tensor v);
/* Blocks until the job is done, off the JS thread. 0 = done; 1 = unknown loader or job, or the loader was freed
 * (the message is thread-local to the calling thread: call dc_loader_collect for it). */
DC_API DC_NONBLOCKING int32_t dc_loader_wait(int64_t loader, int64_t job);
/* Blocks until the job is done, then writes out_views[0..2) (u, and v or NULL), out_info (batch * DC_INFO_STRIDE,
 * may be NULL) and out_status (n candidate statuses, may be NULL) and forgets the job. */
DC_API int32_t dc_loader_collect(int64_t loader, int64_t job, dc_tensor* out_views, int64_t* out_info, int64_t* out_status);
/* Decodes one encoded image to a (H, W, 3) uint8 tensor. min_side > 0 lets a JPEG decode at the smallest DCT scale
 * whose shorter side is still >= min_side. Returns 0, or the DC_IMG_* reason (message "image_decode: <reason>"). */
DC_API int32_t dc_image_decode(const void* data, int64_t nbytes, int64_t max_pixels, int64_t min_side, int32_t alpha, dc_tensor* out);
/* The RandomResizedCrop boxes the loader would draw for sample indices 0..count-1 (seed, rank 0, epoch 0, view u)
 * of a width x height image: 5 int64 per box (top, left, height, width, attempt 1..10 or 0 for the fallback). */
DC_API int32_t dc_crop_params(const double* config, int64_t n_config, int64_t width, int64_t height, uint64_t seed, int64_t count, int64_t* out);

/* ---- CUDA kernels and device switches (kernels/, cuda.cpp) ---------------------------------------------------- */
/* 1 when this library was built with the CUDA kernels (a CUDA libtorch and nvcc), else 0. */
DC_API int32_t dc_kernels_compiled(void);
/* acc (B, N-1) float32 += sum over heads of softmax(scale * q_cls . k_j) for keys j = 1..N-1, from the packed qkv
 * Linear output (B, N, 3*heads*head_dim) ([q | k | v], heads contiguous in each third), so the teacher's CLS
 * attention never needs the (B, H, N, N) map (docs/parity.md#teacher-attention-memory). CUDA: one fused kernel
 * (float32, float16 or bfloat16 qkv; deterministic head order); CPU or a build without kernels: the libtorch
 * composition. No gradient. */
DC_API int32_t dc_cls_attention_accumulate_(dc_tensor acc, dc_tensor qkv, int64_t heads, double scale);
/* TF32 for cuBLAS matmuls and cuDNN convolutions (libtorch: matmul off, cuDNN on by default); 0 turns both off. */
DC_API int32_t dc_set_allow_tf32(int32_t enabled);
/* The CUDA caching allocator's peak allocated bytes on the device since the last reset; -1 without CUDA. */
DC_API int64_t dc_cuda_max_memory_allocated(int32_t device);
DC_API int32_t dc_cuda_reset_peak_memory_stats(int32_t device);

/* ---- torch .pt files (io.cpp) ------------------------------------------------------------------------------ */
/* Writes a dict of name -> tensor with libtorch's pickler (torch::pickle_save: the zip format Python's torch.load
 * reads) to path, atomically (path.tmp-<pid>, fsync, rename). names: n NUL-terminated UTF-8 keys back to back
 * (names_nbytes in all), in the dict's order; each tensor is written detached, on the CPU, as its own storage. */
DC_API int32_t dc_save_pt(const char* path, const char* names, int64_t names_nbytes, const dc_tensor* tensors, int64_t n);
/* A view of t's storage with the given sizes, strides and storage offset (torch.as_strided); libtorch checks that it
 * stays inside the storage. Rebuilds pickled tensors (storage + offset + sizes + strides) in src/torch/pt_file.ts. */
DC_API dc_tensor dc_as_strided(dc_tensor t, const int64_t* size, int64_t ndim, const int64_t* stride, int64_t storage_offset);

/* ---- diagnostics ------------------------------------------------------------------------------------------------- */
/* Runs `iters` times: handle = new (a + b); free(handle). The native baseline for bench/ffi. Returns seconds. */
DC_API double dc_bench_add_loop(dc_tensor a, dc_tensor b, int64_t iters);

#ifdef __cplusplus
}
#endif

#endif
