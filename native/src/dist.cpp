// dist.cpp: the "distributed" section of detailclip.h: c10d under a C ABI. A process group joins through a TCPStore
// rendezvous (rank 0 hosts it), then runs collectives over ProcessGroupGloo (CPU tensors) or ProcessGroupNCCL (CUDA
// tensors, compiled only when the libtorch found has CUDA and NCCL headers). Groups are integer ids, not pointers,
// so a stale id is an error message rather than a crash.
//
// Failure behaviour: every collective and store call has a deadline (the group's timeout). When one fails (a peer
// closed its sockets because it died, or the deadline passed) the group is marked broken, this rank records its
// failure in the store, waits a few seconds for the other ranks to record theirs, and the error names the ranks that
// never did: those are the lost ones. If the store itself is gone, rank 0 (which hosts it) is the lost one. The
// message travels through the usual last-error path; no collective ever waits without a deadline.
//
// libtorch versions: on 1.13 the backends are ProcessGroup subclasses; from 2.0 they are c10d::Backend subclasses
// with the same collective signatures. `Comm` names whichever it is; nothing else differs for what we use.
#include "common.h"
#include "rendezvous.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(DC_WITH_GLOO) && !defined(USE_C10D_GLOO)
#define USE_C10D_GLOO 1
#endif
#if defined(DC_WITH_NCCL) && !defined(USE_C10D_NCCL)
#define USE_C10D_NCCL 1
#endif

#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#if DC_TORCH_AT_LEAST(2, 0)
#include <torch/csrc/distributed/c10d/Backend.hpp>
#else
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#endif
#ifdef DC_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef DC_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace {

#if DC_TORCH_AT_LEAST(2, 0)
using Comm = c10d::Backend;
#else
using Comm = c10d::ProcessGroup;
#endif

using Millis = std::chrono::milliseconds;

constexpr int32_t kGloo = 0;
constexpr int32_t kNccl = 1;
constexpr int32_t kStoreOnly = 2;  // the rendezvous store and nothing else: for tests of the rendezvous itself

// The store's wire dialect for the rendezvous probe (rendezvous.h): libtorch 1.13 numbers CHECK 4; 2.x put a
// VALIDATE query (code 0, which must come first) in front and CHECK became 5. 2.0 and 2.1 are not probed (which of
// them already had VALIDATE is not pinned down here, and a wrong guess would be misread by a real store).
#if DC_TORCH_AT_LEAST(2, 2)
#define DC_STORE_PROBE 1
constexpr dc::rendezvous::StoreDialect kStoreDialect{true, 5};
#elif !DC_TORCH_AT_LEAST(2, 0)
#define DC_STORE_PROBE 1
constexpr dc::rendezvous::StoreDialect kStoreDialect{false, 4};
#endif

// How long a failing rank waits for the others to record their failure before naming the silent ones.
constexpr Millis kDiagnoseWindow{3000};

struct Group {
  int64_t rank = 0;
  int64_t world = 1;
  int32_t backend = kGloo;
  std::string address;  // host:port of the store, for messages
  Millis timeout{1800000};
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<Comm> comm;
  at::Device device{at::kCPU};  // where barrier tokens live: the CPU for Gloo, this rank's GPU for NCCL
  std::mutex mutex;     // one collective at a time per group (the JS thread, and backward on the same thread)
  std::string broken;   // the first failure; every later call repeats it
};

std::mutex registry_mutex;
int64_t next_id = 0;

// Leaked on purpose: at process exit no destructor tears down a group whose peers may already be gone.
std::map<int64_t, std::shared_ptr<Group>>& registry() {
  static auto* groups = new std::map<int64_t, std::shared_ptr<Group>>();
  return *groups;
}

std::shared_ptr<Group> get_group(int64_t id) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  auto it = registry().find(id);
  if (it == registry().end()) {
    throw std::invalid_argument("dist: no process group with id " + std::to_string(id) + " (destroyed or never made)");
  }
  return it->second;
}

std::string rank_str(const Group& g) {
  return "rank " + std::to_string(g.rank) + " of " + std::to_string(g.world);
}

// Gloo prefixes its messages with "[/path/to/file.cc:123] "; the location means nothing to a user.
std::string clean_message(std::string message) {
  while (!message.empty() && message.front() == '[') {
    const auto close = message.find("] ");
    if (close == std::string::npos || message.substr(0, close).find(".c") == std::string::npos) break;
    message = message.substr(close + 2);
  }
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  return message;
}

std::string failure_key(int64_t rank) { return "dc/failed/" + std::to_string(rank); }

// After a failure: record ours, give the others a moment to record theirs, and name the ranks that stay silent.
std::string diagnose(Group& g) {
  if (g.world <= 1) return "";
  try {
    const std::string note = "failed";
    g.store->set(failure_key(g.rank), std::vector<uint8_t>(note.begin(), note.end()));
    std::vector<bool> reported(static_cast<size_t>(g.world), false);
    reported[static_cast<size_t>(g.rank)] = true;
    const auto deadline = std::chrono::steady_clock::now() + std::min(kDiagnoseWindow, g.timeout);
    while (true) {
      bool all = true;
      for (int64_t q = 0; q < g.world; ++q) {
        if (!reported[static_cast<size_t>(q)]) {
          reported[static_cast<size_t>(q)] = g.store->check({failure_key(q)});
          all = all && reported[static_cast<size_t>(q)];
        }
      }
      if (all || std::chrono::steady_clock::now() >= deadline) break;
      std::this_thread::sleep_for(Millis(50));
    }
    std::string silent;
    int64_t count = 0;
    for (int64_t q = 0; q < g.world; ++q) {
      if (!reported[static_cast<size_t>(q)]) {
        silent += (count++ ? ", " : "") + std::to_string(q);
      }
    }
    if (count == 0) return "; every other rank reported the same failure";
    const int64_t window_s = (std::min(kDiagnoseWindow, g.timeout).count() + 999) / 1000;
    return std::string("; lost ") + (count == 1 ? "rank " : "ranks ") + silent +
           " (exited, killed or stuck: no failure report from it within " + std::to_string(window_s) + " s)";
  } catch (const std::exception&) {
    if (g.rank == 0) return "";
    return "; lost rank 0 (its rendezvous store at " + g.address + " is unreachable: rank 0 exited or was killed)";
  }
}

[[noreturn]] void fail(Group& g, const std::string& op, const std::string& why) {
  std::string message = "dist " + op + " on " + rank_str(g) + " failed: " + clean_message(why);
  message += diagnose(g);
  g.broken = message;
  throw std::runtime_error(message);
}

// Runs one collective (launch returns its Work) and waits for it within the group's deadline.
void check_comm(const Group& g, const std::string& op) {
  if (!g.comm) throw std::invalid_argument("dist " + op + ": this group holds only a store (backend code 2)");
}

template <typename Launch>
void run(Group& g, const std::string& op, Launch&& launch) {
  check_comm(g, op);
  if (!g.broken.empty()) {
    throw std::runtime_error("dist " + op + ": the process group is unusable after an earlier failure: " + g.broken);
  }
  try {
    c10::intrusive_ptr<c10d::Work> work = launch();
    // The backend enforces the timeout itself (with a better message); this is the backstop.
    work->wait(g.timeout + Millis(5000));
  } catch (const c10::Error& e) {
    fail(g, op, e.what_without_backtrace());
  } catch (const std::exception& e) {
    fail(g, op, e.what());
  } catch (...) {
    fail(g, op, "unknown C++ exception");
  }
}

// Gloo on CPU reduces float, double, half and integer types; bfloat16 travels as float32 and comes back.
bool needs_upcast(const Group& g, const at::Tensor& t) {
  return g.backend == kGloo && t.scalar_type() == at::kBFloat16;
}

void check_device(const Group& g, const at::Tensor& t, const char* op) {
  if (g.backend == kGloo && !t.device().is_cpu()) {
    throw std::invalid_argument(std::string("dist ") + op + ": the Gloo group takes CPU tensors, got one on " +
                                t.device().str());
  }
  if (g.backend == kNccl && !t.device().is_cuda()) {
    throw std::invalid_argument(std::string("dist ") + op + ": the NCCL group takes CUDA tensors, got one on " +
                                t.device().str());
  }
}

c10d::ReduceOp reduce_op(int32_t op) {
  switch (op) {
    case 0:
    case 1:
      return c10d::ReduceOp::SUM;  // avg = sum, then divide (Gloo has no AVG)
    case 2:
      return c10d::ReduceOp::MAX;
    case 3:
      return c10d::ReduceOp::MIN;
    default:
      throw std::invalid_argument("dist all_reduce: unknown op code " + std::to_string(op) +
                                  " (0 sum, 1 avg, 2 max, 3 min)");
  }
}

// In-place all-reduce of a dense contiguous tensor (no autograd involvement).
void all_reduce_inplace(Group& g, at::Tensor& t, int32_t op, const std::string& name = "all_reduce") {
  check_device(g, t, name.c_str());
  c10d::AllreduceOptions opts;
  opts.reduceOp = reduce_op(op);
  opts.timeout = g.timeout;
  std::lock_guard<std::mutex> lock(g.mutex);
  std::vector<at::Tensor> tensors{t};
  run(g, name, [&] { return g.comm->allreduce(tensors, opts); });
}

// Reduces (or broadcasts) `t`, whatever its layout and dtype, writing the result back into t.
void reduce_any(Group& g, at::Tensor& t, int32_t op) {
  at::NoGradGuard no_grad;
  const bool direct = t.is_contiguous() && !needs_upcast(g, t);
  at::Tensor buffer = direct ? t : t.to(needs_upcast(g, t) ? at::kFloat : t.scalar_type()).contiguous();
  all_reduce_inplace(g, buffer, op);
  if (op == 1 && g.world > 1) {
    if (at::isIntegralType(buffer.scalar_type(), /*includeBool=*/true)) {
      buffer.div_(g.world, "floor");
    } else {
      buffer.div_(static_cast<double>(g.world));
    }
  }
  if (!direct) t.copy_(buffer);
}

at::Tensor all_gather_cat(Group& g, const at::Tensor& input, const std::string& name) {
  check_device(g, input, name.c_str());
  at::NoGradGuard no_grad;
  const bool upcast = needs_upcast(g, input);
  at::Tensor local = (upcast ? input.to(at::kFloat) : input).contiguous();
  std::vector<std::vector<at::Tensor>> outputs(1);
  for (int64_t r = 0; r < g.world; ++r) outputs[0].push_back(at::empty_like(local));
  std::vector<at::Tensor> inputs{local};
  c10d::AllgatherOptions opts;
  opts.timeout = g.timeout;
  {
    std::lock_guard<std::mutex> lock(g.mutex);
    run(g, name, [&] { return g.comm->allgather(outputs, inputs, opts); });
  }
  at::Tensor out = at::cat(outputs[0], 0);
  return upcast ? out.to(input.scalar_type()) : out;
}

// Packs tensors of one dtype and device into buckets of about bucket_bytes, runs `collective` on each flat bucket
// (all launched before any is waited on, so the backend may overlap them) and unpacks the results.
struct Bucket {
  std::vector<at::Tensor> members;
  at::Tensor flat;
  c10::intrusive_ptr<c10d::Work> work;
};

std::vector<Bucket> make_buckets(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes) {
  std::vector<Bucket> buckets;
  // Keys by (dtype, device) so a bucket is homogeneous; order inside a key follows the input order.
  std::vector<std::pair<std::pair<at::ScalarType, at::Device>, std::vector<at::Tensor>>> groups;
  for (const auto& t : tensors) {
    const auto key = std::make_pair(t.scalar_type(), t.device());
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& e) { return e.first == key; });
    if (it == groups.end()) {
      groups.push_back({key, {t}});
    } else {
      it->second.push_back(t);
    }
  }
  for (auto& [key, members] : groups) {
    Bucket current;
    int64_t bytes = 0;
    for (auto& t : members) {
      const int64_t size = t.numel() * static_cast<int64_t>(t.element_size());
      if (!current.members.empty() && bytes + size > bucket_bytes) {
        buckets.push_back(std::move(current));
        current = Bucket();
        bytes = 0;
      }
      current.members.push_back(t);
      bytes += size;
    }
    if (!current.members.empty()) buckets.push_back(std::move(current));
  }
  return buckets;
}

at::Tensor flatten(const std::vector<at::Tensor>& members, bool upcast) {
  std::vector<at::Tensor> flat;
  flat.reserve(members.size());
  for (const auto& t : members) flat.push_back(t.reshape({-1}));
  at::Tensor out = members.size() == 1 ? flat[0].clone() : at::cat(flat, 0);
  return upcast ? out.to(at::kFloat) : out;
}

void unflatten_into(const at::Tensor& flat, std::vector<at::Tensor>& members) {
  int64_t offset = 0;
  for (auto& t : members) {
    const int64_t n = t.numel();
    t.copy_(flat.narrow(0, offset, n).view(t.sizes()));
    offset += n;
  }
}

// Launches every bucket's collective, then waits for all of them (one deadline each).
template <typename Launch>
void run_buckets(Group& g, const std::string& name, std::vector<Bucket>& buckets, Launch&& launch) {
  check_comm(g, name);
  std::lock_guard<std::mutex> lock(g.mutex);
  if (!g.broken.empty()) {
    throw std::runtime_error("dist " + name + ": the process group is unusable after an earlier failure: " + g.broken);
  }
  try {
    for (auto& b : buckets) b.work = launch(b.flat);
    for (auto& b : buckets) b.work->wait(g.timeout + Millis(5000));
  } catch (const c10::Error& e) {
    fail(g, name, e.what_without_backtrace());
  } catch (const std::exception& e) {
    fail(g, name, e.what());
  } catch (...) {
    fail(g, name, "unknown C++ exception");
  }
}

// all_gather forward; backward sums the incoming gradient over ranks and returns this rank's rows (SLIP's
// GatherLayer): the local features then get the gradient of the sum of every rank's loss.
struct GatherWithGrad : public torch::autograd::Function<GatherWithGrad> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, at::Tensor input, int64_t group_id) {
    auto g = get_group(group_id);
    ctx->saved_data["group"] = group_id;
    ctx->saved_data["rows"] = input.size(0);
    return all_gather_cat(*g, input, "gather_with_grad");
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto g = get_group(ctx->saved_data["group"].toInt());
    const int64_t rows = ctx->saved_data["rows"].toInt();
    at::Tensor grad = grads[0].contiguous().clone();
    reduce_any(*g, grad, 0);
    return {grad.narrow(0, g->rank * rows, rows).contiguous(), at::Tensor()};
  }
};

// ---- gradient reducer: bucketed all-reduce launched during backward -------------------------------------------------
//
// DDP's overlap, without DDP: a post hook on each parameter's gradient accumulator (the AccumulateGrad node, held
// here so that it outlives the graph) counts the gradients that reach the parameter. When every member of a bucket has
// received all the gradients it will get in this backward, the bucket is flattened and its all-reduce launched, while
// backward goes on with the layers before it. Buckets launch strictly in index order (a ready bucket waits for the
// ones before it), so every rank issues the same collectives in the same order whatever its engine does. finish()
// launches what is left, waits, divides by world and copies back; the values are the same as dc_dist_average_grads_'s.
//
// How many gradients a parameter gets per backward is learned on the first armed step, which reduces everything at
// finish (no overlap); the counts are then compared over ranks (a mismatch is an error, since the launch order would
// differ). A backward may run in several engine calls (--grad-checkpointing), so counts can exceed one. A gradient
// that arrives after its bucket was launched would be lost: it is an error at finish, never a silent wrong average.
// Hooks only count while armed (prepare() before the last micro-step's backward), so accumulation micro-steps cost
// nothing. The hooks run on the thread the engine runs the accumulator on (the caller's for CPU tensors, a device
// thread for CUDA ones); the reducer's own mutex orders them against finish().
using Accumulator = decltype(torch::autograd::impl::grad_accumulator(std::declval<const at::Tensor&>()));

struct ReducerBucket {
  std::vector<size_t> members;  // parameter indices
  at::Tensor flat;
  c10::intrusive_ptr<c10d::Work> work;
  int64_t pending = 0;  // members still waiting for a gradient in this backward
  bool launched = false;
};

struct Reducer {
  std::shared_ptr<Group> group;
  std::vector<at::Tensor> params;
  std::vector<Accumulator> accumulators;
  std::vector<size_t> bucket_of;
  std::vector<ReducerBucket> buckets;
  std::vector<int64_t> expected;  // gradients per backward, learned on the first armed step
  std::vector<int64_t> seen;
  bool learned = false;
  bool armed = false;
  size_t next_bucket = 0;
  std::string late;  // the first gradient that came after its bucket left
  std::mutex mutex;
};

std::mutex reducer_registry_mutex;
int64_t next_reducer_id = 0;

std::map<int64_t, std::shared_ptr<Reducer>>& reducers() {
  static auto* all = new std::map<int64_t, std::shared_ptr<Reducer>>();
  return *all;
}

std::shared_ptr<Reducer> get_reducer(int64_t id) {
  std::lock_guard<std::mutex> lock(reducer_registry_mutex);
  auto it = reducers().find(id);
  if (it == reducers().end()) throw std::invalid_argument("dist reducer: no reducer with id " + std::to_string(id));
  return it->second;
}

// Flattens the bucket's gradients (a missing one becomes zeros, as dc_dist_average_grads_ does) and launches its
// all-reduce. Called with r.mutex held.
void launch_bucket(Reducer& r, ReducerBucket& b) {
  Group& g = *r.group;
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> grads;
  for (size_t i : b.members) {
    at::Tensor& grad = r.params[i].mutable_grad();
    if (!grad.defined()) grad = at::zeros_like(r.params[i]);
    grads.push_back(grad);
  }
  b.flat = flatten(grads, needs_upcast(g, grads[0]));
  c10d::AllreduceOptions opts;
  opts.reduceOp = c10d::ReduceOp::SUM;
  opts.timeout = g.timeout;
  std::lock_guard<std::mutex> lock(g.mutex);
  if (!g.broken.empty()) {
    throw std::runtime_error("dist reducer: the process group is unusable after an earlier failure: " + g.broken);
  }
  std::vector<at::Tensor> one{b.flat};
  try {
    b.work = g.comm->allreduce(one, opts);
  } catch (const c10::Error& e) {
    fail(g, "reducer all_reduce", e.what_without_backtrace());
  }
  b.launched = true;
}

void launch_ready(Reducer& r, bool all) {
  while (r.next_bucket < r.buckets.size() && (all || r.buckets[r.next_bucket].pending == 0)) {
    launch_bucket(r, r.buckets[r.next_bucket]);
    r.next_bucket++;
  }
}

void on_gradient(Reducer& r, size_t i) {
  std::lock_guard<std::mutex> lock(r.mutex);
  if (!r.armed) return;
  r.seen[i]++;
  if (!r.learned) return;
  ReducerBucket& b = r.buckets[r.bucket_of[i]];
  if (b.launched) {
    if (r.late.empty()) {
      r.late = "parameter " + std::to_string(i) + " received gradient " + std::to_string(r.seen[i]) + " of this " +
               "backward after its bucket was all-reduced (it got " + std::to_string(r.expected[i]) +
               " on the first step): the backward graph changed between steps";
    }
    return;
  }
  if (r.seen[i] == r.expected[i] && --b.pending == 0) launch_ready(r, false);
}

void arm(Reducer& r) {
  std::lock_guard<std::mutex> lock(r.mutex);
  if (r.armed) throw std::logic_error("dist reducer: prepare() called twice without finish()");
  std::fill(r.seen.begin(), r.seen.end(), 0);
  r.late.clear();
  r.next_bucket = 0;
  for (auto& b : r.buckets) {
    b.launched = false;
    b.work.reset();
    b.flat = at::Tensor();
    b.pending = 0;
    for (size_t i : b.members) b.pending += r.learned && r.expected[i] > 0 ? 1 : 0;
  }
  r.armed = true;
}

// Returns how many buckets backward had launched before this call (the overlapped ones).
int64_t finish(Reducer& r) {
  std::lock_guard<std::mutex> lock(r.mutex);
  if (!r.armed) throw std::logic_error("dist reducer: finish() without prepare()");
  r.armed = false;
  Group& g = *r.group;
  if (!r.learned) {
    // Every rank must have learned the same counts, or their launch orders would differ.
    at::NoGradGuard no_grad;
    at::Tensor counts = at::tensor(r.seen, at::TensorOptions().dtype(at::kLong)).to(g.device);
    at::Tensor low = counts.neg();
    all_reduce_inplace(g, counts, 2, "reducer counts");
    all_reduce_inplace(g, low, 2, "reducer counts");
    if (!at::equal(counts, low.neg())) {
      throw std::runtime_error("dist reducer: the ranks' backward graphs differ (parameters receive different numbers "
                               "of gradients on different ranks); train with --disable-grad-overlap");
    }
    r.expected = r.seen;
    r.learned = true;
  }
  if (!r.late.empty()) throw std::runtime_error("dist reducer: " + r.late + "; train with --disable-grad-overlap");
  const auto overlapped = static_cast<int64_t>(r.next_bucket);
  launch_ready(r, true);
  try {
    for (auto& b : r.buckets) b.work->wait(g.timeout + Millis(5000));
  } catch (const c10::Error& e) {
    fail(g, "reducer all_reduce", e.what_without_backtrace());
  } catch (const std::exception& e) {
    fail(g, "reducer all_reduce", e.what());
  }
  at::NoGradGuard no_grad;
  for (auto& b : r.buckets) {
    b.flat.div_(static_cast<double>(g.world));
    std::vector<at::Tensor> grads;
    for (size_t i : b.members) grads.push_back(r.params[i].mutable_grad());
    unflatten_into(b.flat, grads);
    b.flat = at::Tensor();
    b.work.reset();
  }
  return overlapped;
}

std::string c_string(const char* s, const char* what) {
  if (s == nullptr) throw std::invalid_argument(std::string(what) + " is NULL");
  return std::string(s);
}

std::vector<uint8_t> store_get(Group& g, const std::string& key) {
  try {
    return g.store->get(key);
  } catch (const c10::Error& e) {
    fail(g, "store get '" + key + "'", e.what_without_backtrace());
  } catch (const std::exception& e) {
    fail(g, "store get '" + key + "'", e.what());
  }
}

}  // namespace

extern "C" {

int32_t dc_dist_available(int32_t backend) {
  DC_GUARD_BEGIN
    if (backend == kGloo) {
#ifdef DC_WITH_GLOO
      return 1;
#else
      return 0;
#endif
    }
    if (backend == kNccl) {
#ifdef DC_WITH_NCCL
      return 1;
#else
      return 0;
#endif
    }
    if (backend == kStoreOnly) return 1;
    throw std::invalid_argument("dc_dist_available: unknown backend code " + std::to_string(backend) +
                                " (0 gloo, 1 nccl, 2 store only)");
  DC_GUARD_END(-1)
}

int64_t dc_dist_init(const char* host, int64_t port, int64_t rank, int64_t world, int32_t backend, int64_t timeout_ms) {
  DC_GUARD_BEGIN
    const std::string address = c_string(host, "dc_dist_init: host");
    if (world < 1) throw std::invalid_argument("dist init: world size must be >= 1, got " + std::to_string(world));
    if (rank < 0 || rank >= world) {
      throw std::invalid_argument("dist init: rank " + std::to_string(rank) + " is outside [0, " +
                                  std::to_string(world) + ")");
    }
    if (port < 1 || port > 65535) throw std::invalid_argument("dist init: bad port " + std::to_string(port));
    if (timeout_ms < 1) throw std::invalid_argument("dist init: timeout must be positive");
    auto g = std::make_shared<Group>();
    g->rank = rank;
    g->world = world;
    g->backend = backend;
    g->address = address + ":" + std::to_string(port);
    g->timeout = Millis(timeout_ms);

    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<uint16_t>(port);
    store_options.isServer = rank == 0;
    store_options.numWorkers = static_cast<size_t>(world);
    store_options.waitWorkers = true;
    store_options.timeout = g->timeout;
#if DC_TORCH_AT_LEAST(2, 3)
    // The classic socket server, not the libuv one (the default from 2.4): libtorch_cpu carries its own libuv, but the
    // Deno executable exports libuv-named functions of its own (uv_close, uv_async_init, ... for N-API), and the
    // dynamic linker binds libtorch's calls to those, so the libuv server crashed in uv_listen on rank 0 (found
    // with the CUDA 2.14 wheel; Debian's 1.13 has no libuv server).
    store_options.useLibUV = false;
#endif
    try {
      if (rank == 0) {
#if DC_TORCH_AT_LEAST(2, 4)
        // The store listens on the master address itself (127.0.0.1 for a local job), not on every interface, when
        // that address is a literal of this machine: a socket bound there is handed to c10d. Anything else keeps
        // c10d's wildcard: another node may resolve a host name to an address this one does not (127.0.1.1 in
        // /etc/hosts), "localhost" may be ::1 to one rank and 127.0.0.1 to another, and an address that is not this
        // machine's may reach it through NAT.
        if (dc::rendezvous::is_address_literal(address) && dc::rendezvous::is_local_address(address)) {
          store_options.masterListenFd = dc::rendezvous::bind_store_socket(address, store_options.port);
        } else {
          dc::rendezvous::check_port_free(store_options.port);
        }
#else
        // libtorch before 2.4 cannot give the store an address: it listens on the wildcard. The port is checked first
        // so that a program holding it is named.
        dc::rendezvous::check_port_free(store_options.port);
#endif
      } else {
#ifdef DC_STORE_PROBE
        // c10d bounds the connect but not the first reads: a foreign program on the port would hold this rank past
        // the timeout. Prove that a store answers there first, within the same timeout.
        dc::rendezvous::probe_store(address, store_options.port, g->timeout, kStoreDialect);
#endif
      }
      g->store = c10::make_intrusive<c10d::TCPStore>(address, store_options);
    } catch (const c10::Error& e) {
      throw std::runtime_error("dist init: rendezvous at " + g->address + " failed on " + rank_str(*g) + ": " +
                               clean_message(e.what_without_backtrace()) +
                               (rank == 0 ? "" : " (is rank 0 running, and MASTER_ADDR/MASTER_PORT right?)"));
    } catch (const std::exception& e) {
      throw std::runtime_error("dist init: rendezvous at " + g->address + " failed on " + rank_str(*g) + ": " +
                               clean_message(e.what()));
    }
    // The backend's own keys live under a prefix, apart from ours (dc/...).
    auto backend_store = c10::make_intrusive<c10d::PrefixStore>("backend", g->store);
    try {
      if (backend == kGloo) {
#ifdef DC_WITH_GLOO
        auto options = c10d::ProcessGroupGloo::Options::create(g->timeout);
        const char* iface = std::getenv("GLOO_SOCKET_IFNAME");
        const bool loopback = address == "localhost" || address.rfind("127.", 0) == 0;
        if (iface != nullptr && *iface != '\0') {
          options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
        } else if (loopback) {
          options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
        } else {
          options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
        }
        options->threads = 2;
        g->comm = c10::make_intrusive<c10d::ProcessGroupGloo>(backend_store, static_cast<int>(rank),
                                                              static_cast<int>(world), options);
#else
        throw std::runtime_error("this build of libdetailclip has no Gloo backend (Gloo headers were not found)");
#endif
      } else if (backend == kNccl) {
#ifdef DC_WITH_NCCL
        // This rank's GPU: LOCAL_RANK (torchrun, deno task launch), SLURM_LOCALID (srun), else rank modulo the count.
        const int devices = static_cast<int>(c10::cuda::device_count());
        if (devices < 1) throw std::runtime_error("the NCCL backend needs a CUDA device and none is visible");
        const char* local = std::getenv("LOCAL_RANK");
        if (local == nullptr || *local == '\0') local = std::getenv("SLURM_LOCALID");
        const int index = (local != nullptr && *local != '\0' ? std::atoi(local) : static_cast<int>(rank)) % devices;
        c10::cuda::set_device(static_cast<c10::DeviceIndex>(index));
        g->device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
        // Without blocking wait, ProcessGroupNCCL's watchdog thread tears the process down when a collective fails or
        // outlives options->timeout (TORCH_NCCL_ASYNC_ERROR_HANDLING's default), before run()'s wait could report it.
        // In blocking-wait mode there is no watchdog and wait() throws instead; it blocks the host until the collective
        // completes either way, since run() gives it a deadline. A user's own setting of the variable wins.
#if DC_TORCH_AT_LEAST(2, 2)
        const char* blocking_wait = "TORCH_NCCL_BLOCKING_WAIT";
#else
        const char* blocking_wait = "NCCL_BLOCKING_WAIT";
#endif
        if (std::getenv("TORCH_NCCL_BLOCKING_WAIT") == nullptr && std::getenv("NCCL_BLOCKING_WAIT") == nullptr) {
          ::setenv(blocking_wait, "1", 0);
        }
        auto options = c10d::ProcessGroupNCCL::Options::create();
        options->timeout = g->timeout;
        g->comm = c10::make_intrusive<c10d::ProcessGroupNCCL>(backend_store, static_cast<int>(rank),
                                                              static_cast<int>(world), options);
#else
        throw std::runtime_error("this build of libdetailclip has no NCCL backend (needs a CUDA libtorch with NCCL)");
#endif
      } else if (backend != kStoreOnly) {
        throw std::invalid_argument("unknown backend code " + std::to_string(backend) +
                                    " (0 gloo, 1 nccl, 2 store only)");
      }
    } catch (const c10::Error& e) {
      throw std::runtime_error("dist init: the process group could not form on " + rank_str(*g) + ": " +
                               clean_message(e.what_without_backtrace()));
    } catch (const std::exception& e) {
      throw std::runtime_error("dist init: the process group could not form on " + rank_str(*g) + ": " +
                               clean_message(e.what()));
    }
    std::lock_guard<std::mutex> lock(registry_mutex);
    const int64_t id = next_id++;
    registry()[id] = g;
    return id;
  DC_GUARD_END(-1)
}

int32_t dc_dist_destroy(int64_t group) {
  DC_STATUS({
    std::shared_ptr<Group> g;
    {
      std::lock_guard<std::mutex> lock(registry_mutex);
      auto it = registry().find(group);
      if (it == registry().end()) throw std::invalid_argument("dist destroy: no process group " + std::to_string(group));
      g = it->second;
      registry().erase(it);
    }
    // A broken group may hold a backend whose peers are gone; leak it rather than risk a teardown that waits.
    if (!g->broken.empty()) {
      new std::shared_ptr<Group>(g);
    }
  })
}

int32_t dc_dist_all_reduce_(int64_t group, dc_tensor t, int32_t op) {
  DC_STATUS({
    auto g = get_group(group);
    reduce_any(*g, dc::unwrap(t), op);
  })
}

int32_t dc_dist_broadcast_(int64_t group, const dc_tensor* tensors, int64_t n, int64_t root, int64_t bucket_bytes) {
  DC_STATUS({
    auto g = get_group(group);
    if (root < 0 || root >= g->world) throw std::invalid_argument("dist broadcast: bad root " + std::to_string(root));
    if (bucket_bytes < 1) throw std::invalid_argument("dist broadcast: bucket_bytes must be positive");
    std::vector<at::Tensor> tensors_in = dc::tensor_list(tensors, n);
    for (const auto& t : tensors_in) check_device(*g, t, "broadcast");
    at::NoGradGuard no_grad;
    auto buckets = make_buckets(tensors_in, bucket_bytes);
    for (auto& b : buckets) b.flat = flatten(b.members, needs_upcast(*g, b.members[0]));
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = g->timeout;
    run_buckets(*g, "broadcast", buckets, [&](at::Tensor& flat) {
      std::vector<at::Tensor> one{flat};
      return g->comm->broadcast(one, opts);
    });
    if (g->rank != root) {
      for (auto& b : buckets) unflatten_into(b.flat, b.members);
    }
  })
}

dc_tensor dc_dist_all_gather(int64_t group, dc_tensor t) {
  DC_GUARD_BEGIN
    auto g = get_group(group);
    return dc::wrap(all_gather_cat(*g, dc::unwrap(t), "all_gather"));
  DC_GUARD_END(nullptr)
}

dc_tensor dc_dist_gather_with_grad(int64_t group, dc_tensor t) {
  DC_GUARD_BEGIN
    get_group(group);  // fails early on a bad id
    return dc::wrap(GatherWithGrad::apply(dc::unwrap(t), group));
  DC_GUARD_END(nullptr)
}

int32_t dc_dist_barrier(int64_t group) {
  DC_STATUS({
    auto g = get_group(group);
    // An all-reduce of one element: the same on every backend, and it needs no device guess under NCCL.
    at::Tensor token = at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(g->device));
    all_reduce_inplace(*g, token, 0, "barrier");
  })
}

int32_t dc_dist_average_grads_(int64_t group, const dc_tensor* params, int64_t n, int64_t bucket_bytes) {
  DC_STATUS({
    auto g = get_group(group);
    if (bucket_bytes < 1) throw std::invalid_argument("dist average_grads: bucket_bytes must be positive");
    std::vector<at::Tensor> grads;
    grads.reserve(static_cast<size_t>(n));
    for (auto& p : dc::tensor_list(params, n)) {
      at::Tensor& grad = p.mutable_grad();
      // Every rank must send the same layout: a parameter without a gradient here contributes zeros.
      if (!grad.defined()) grad = at::zeros_like(p);
      check_device(*g, grad, "average_grads");
      grads.push_back(grad);
    }
    if (g->world == 1) return 0;
    at::NoGradGuard no_grad;
    auto buckets = make_buckets(grads, bucket_bytes);
    for (auto& b : buckets) b.flat = flatten(b.members, needs_upcast(*g, b.members[0]));
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = g->timeout;
    run_buckets(*g, "average_grads", buckets, [&](at::Tensor& flat) {
      std::vector<at::Tensor> one{flat};
      return g->comm->allreduce(one, opts);
    });
    for (auto& b : buckets) {
      b.flat.div_(static_cast<double>(g->world));
      unflatten_into(b.flat, b.members);
    }
  })
}

// Buckets are filled in reverse parameter order (gradients arrive roughly last layer first), the first one 1 MiB (as
// DDP's first bucket) so that communication starts early, the others about bucket_bytes.
int64_t dc_dist_reducer_new(int64_t group, const dc_tensor* params, int64_t n, int64_t bucket_bytes) {
  DC_GUARD_BEGIN
    auto g = get_group(group);
    check_comm(*g, "reducer");
    if (bucket_bytes < 1) throw std::invalid_argument("dist reducer: bucket_bytes must be positive");
    auto r = std::make_shared<Reducer>();
    r->group = g;
    r->params = dc::tensor_list(params, n);
    const size_t count = r->params.size();
    r->bucket_of.assign(count, 0);
    r->seen.assign(count, 0);
    r->expected.assign(count, 0);
    int64_t bytes = 0;
    int64_t limit = std::min<int64_t>(bucket_bytes, 1 << 20);
    for (size_t k = count; k-- > 0;) {
      const at::Tensor& p = r->params[k];
      if (!p.requires_grad() || !p.is_leaf()) {
        throw std::invalid_argument("dist reducer: parameter " + std::to_string(k) + " is not a leaf that requires grad");
      }
      check_device(*g, p, "reducer");
      const int64_t size = p.numel() * static_cast<int64_t>(p.element_size());
      const bool same_kind = !r->buckets.empty() &&
                             r->params[r->buckets.back().members[0]].scalar_type() == p.scalar_type() &&
                             r->params[r->buckets.back().members[0]].device() == p.device();
      if (r->buckets.empty() || !same_kind || bytes + size > limit) {
        if (!r->buckets.empty()) limit = bucket_bytes;
        r->buckets.emplace_back();
        bytes = 0;
      }
      r->buckets.back().members.push_back(k);
      r->bucket_of[k] = r->buckets.size() - 1;
      bytes += size;
    }
    std::weak_ptr<Reducer> weak = r;
    for (size_t k = 0; k < count; ++k) {
      auto accumulator = torch::autograd::impl::grad_accumulator(r->params[k]);
      accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
          [weak, k](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
            if (auto reducer = weak.lock()) on_gradient(*reducer, k);
            return outputs;
          }));
      r->accumulators.push_back(std::move(accumulator));
    }
    std::lock_guard<std::mutex> lock(reducer_registry_mutex);
    const int64_t id = next_reducer_id++;
    reducers()[id] = r;
    return id;
  DC_GUARD_END(-1)
}

int32_t dc_dist_reducer_prepare(int64_t reducer) { DC_STATUS(arm(*get_reducer(reducer))) }

int64_t dc_dist_reducer_finish(int64_t reducer) { DC_COUNT(finish(*get_reducer(reducer))) }

int64_t dc_dist_reducer_buckets(int64_t reducer) {
  DC_COUNT(static_cast<int64_t>(get_reducer(reducer)->buckets.size()))
}

// The hooks stay on the accumulators (a post hook cannot be removed) but find no reducer and do nothing.
int32_t dc_dist_reducer_free(int64_t reducer) {
  DC_STATUS({
    std::lock_guard<std::mutex> lock(reducer_registry_mutex);
    if (reducers().erase(reducer) == 0) {
      throw std::invalid_argument("dist reducer: no reducer with id " + std::to_string(reducer));
    }
  })
}

int32_t dc_dist_store_set(int64_t group, const char* key, const void* value, int64_t nbytes) {
  DC_STATUS({
    auto g = get_group(group);
    const std::string k = c_string(key, "dist store_set: key");
    if (nbytes < 0 || (nbytes > 0 && value == nullptr)) throw std::invalid_argument("dist store_set: bad value");
    const auto* bytes = static_cast<const uint8_t*>(value);
    try {
      g->store->set(k, std::vector<uint8_t>(bytes, bytes + nbytes));
    } catch (const c10::Error& e) {
      fail(*g, "store set '" + k + "'", e.what_without_backtrace());
    } catch (const std::exception& e) {
      fail(*g, "store set '" + k + "'", e.what());
    }
  })
}

// Waits (up to the group's timeout) for the key; copies min(size, capacity) bytes into out and returns the size.
int64_t dc_dist_store_get(int64_t group, const char* key, void* out, int64_t capacity) {
  DC_GUARD_BEGIN
    auto g = get_group(group);
    const std::string k = c_string(key, "dist store_get: key");
    if (capacity < 0 || (capacity > 0 && out == nullptr)) throw std::invalid_argument("dist store_get: bad buffer");
    std::vector<uint8_t> value = store_get(*g, k);
    const int64_t size = static_cast<int64_t>(value.size());
    if (size > 0 && capacity > 0) std::memcpy(out, value.data(), static_cast<size_t>(std::min(size, capacity)));
    return size;
  DC_GUARD_END(-1)
}

}  // extern "C"
