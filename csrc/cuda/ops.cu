// The three operators on CUDA tensors: argument checks, output allocation, the launch of the
// head-dim bucket's kernels (csrc/cuda/kernels/) and the fixed-order reduction of the parameter
// gradients' per-row partials. Registered for the CUDA dispatch key of the tempattn_C ops whose
// schemas csrc/cpu/bindings.cpp defines (the same schemas as the CPU kernels).
#include <ATen/ATen.h>
#include <torch/library.h>
#if !defined(TEMPATTN_CUDA_EMULATION)
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include <cstdlib>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "common/band.h"
#include "common/score_math.h"
#include "common/tensor_checks.h"
#include "cuda/common/launch.h"

namespace tempattn::cuda {
namespace {

// ------------------------------------------------------------------------------- the device
// TEMPATTN_CUDA_SIMT=1 runs the SIMT kernels for float16 / bfloat16 too: the reference the
// tensor-core forward and backward are compared with on a GPU.
bool simt_switch_set() {
  const char* env = std::getenv("TEMPATTN_CUDA_SIMT");
  return env != nullptr && std::string(env) == "1";
}

// Everything this file asks of the CUDA runtime. tests/cuda_emulation compiles this file with the
// kernels for the host and runs them on CPU tensors by its emulator: there, tensors stay on the CPU,
// the stream is a placeholder and the TEMPATTN_CUDA_SIMT switch is read at every call (the tests
// flip it; on a GPU it is read once).
#if defined(TEMPATTN_CUDA_EMULATION)
constexpr const char* kDeviceName = "CPU (the CUDA emulator)";
bool on_kernel_device(const at::Tensor& t) { return t.is_cpu(); }
struct DeviceScope {
  explicit DeviceScope(const at::Tensor&) {}
  cudaStream_t stream() const { return nullptr; }
};
void check_launch() {}
bool simt_only() { return simt_switch_set(); }
#else
constexpr const char* kDeviceName = "CUDA";
bool on_kernel_device(const at::Tensor& t) { return t.is_cuda(); }
struct DeviceScope {
  c10::cuda::CUDAGuard guard;
  explicit DeviceScope(const at::Tensor& q) : guard(q.device()) {}
  cudaStream_t stream() const { return at::cuda::getCurrentCUDAStream(); }
};
void check_launch() { C10_CUDA_KERNEL_LAUNCH_CHECK(); }
bool simt_only() {
  static const bool value = simt_switch_set();
  return value;
}
#endif

// ------------------------------------------------------------------------------------ checks
void check_cuda(const char* op, const char* name, const at::Tensor& t, const at::Tensor& q) {
  TORCH_CHECK(t.device() == q.device(), op, ": `", name, "` must be on q's device ", q.device(), ", got ", t.device());
}

// q (B, H, Tq, D), k (B, H, Tk, D), v (B, H, Tk, Dv): float16, bfloat16 or float32, last dim stride 1.
void check_qkv(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(on_kernel_device(q), op, ": `q` must be a ", kDeviceName, " tensor, got device ", q.device());
  const auto dtype = q.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16, op,
              ": the cuda backend takes float16, bfloat16 or float32 `q`, got ", dtype,
              "; hint: use backend='cpu' or 'reference' for float64");
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"q", q}, {"k", k}, {"v", v}}) {
    check_cuda(op, name, t, q);
    common::check_qkv_layout(op, name, t, dtype);
  }
  common::check_kv_shapes(op, q, k, v);
  TORCH_CHECK(q.size(3) <= 256 && v.size(3) <= 256, op, ": head dims must be <= 256, got D = ", q.size(3),
              " and Dv = ", v.size(3));
}

// A contiguous tensor on q's device of an exact shape and dtype.
void check_exact(const char* op, const char* name, const at::Tensor& t, const at::Tensor& q, at::IntArrayRef shape,
                 at::ScalarType dtype) {
  check_cuda(op, name, t, q);
  common::check_exact_layout(op, name, t, shape, dtype);
}

void check_optional(const char* op, const char* name, const std::optional<at::Tensor>& t, const at::Tensor& q,
                    at::IntArrayRef shape, at::ScalarType dtype) {
  if (t.has_value()) check_exact(op, name, *t, q, shape, dtype);
}

void check_common(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const std::optional<at::Tensor>& key_valid, const std::optional<at::Tensor>& key_bias, bool causal,
                  double dropout_p) {
  check_qkv(op, q, k, v);
  check_optional(op, "key_valid", key_valid, q, {q.size(0), k.size(2)}, at::kBool);
  check_optional(op, "key_bias", key_bias, q, {q.size(0), q.size(1), k.size(2)}, at::kFloat);
  TORCH_CHECK(!causal || q.size(2) <= k.size(2), op, ": causal attention needs Tq <= Tk, got Tq = ", q.size(2),
              " and Tk = ", k.size(2));
  TORCH_CHECK(dropout_p >= 0.0 && dropout_p < 1.0, op, ": `dropout_p` must be in [0, 1), got ", dropout_p);
}

void check_window(const char* op, std::optional<int64_t> window) {
  TORCH_CHECK(!window || *window >= 0, op, ": `window` must be >= 0 or None, got ", *window);
}

// Checks the backward's inputs; returns delta = rowsum(dO * O) - dlse (float32, (B, H, Tq)), the
// per-row term of dS = P * (dP - delta) (the CPU kernels fuse it into their loop over dO rows).
at::Tensor backward_delta(const char* op, const at::Tensor& grad_out, const at::Tensor& out,
                          const std::optional<at::Tensor>& grad_lse, const at::Tensor& lse, const at::Tensor& q,
                          const at::Tensor& v) {
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"grad_out", grad_out}, {"out", out}}) {
    check_cuda(op, name, t, q);
    common::check_output_layout(op, name, t, q, v);
  }
  if (grad_lse) check_exact(op, "grad_lse", *grad_lse, q, {q.size(0), q.size(1), q.size(2)}, at::kFloat);
  check_exact(op, "lse", lse, q, {q.size(0), q.size(1), q.size(2)}, at::kFloat);
  at::Tensor delta = at::linalg_vecdot(grad_out.to(at::kFloat), out.to(at::kFloat));
  return (grad_lse ? delta - *grad_lse : delta).contiguous();
}

// ------------------------------------------------------------------------------------ launch
Dtype dtype_of(const at::Tensor& q) {
  switch (q.scalar_type()) {
    case at::kHalf: return Dtype::kFloat16;
    case at::kBFloat16: return Dtype::kBFloat16;
    default: return Dtype::kFloat32;
  }
}

Rows rows_of(const at::Tensor& t) { return {t.const_data_ptr(), t.stride(0), t.stride(1), t.stride(2)}; }

template <typename T>
const T* data_or_null(const std::optional<at::Tensor>& t) {
  return t ? t->const_data_ptr<T>() : nullptr;
}

// One call's checked tensors and configuration.
struct Call {
  const at::Tensor &q, &k, &v;
  const std::optional<at::Tensor>& key_valid;
  const std::optional<at::Tensor>& key_bias;
  bool causal;
  std::optional<int64_t> window;
  double dropout_p;
  int64_t seed;
  double scale;
};

ForwardParams forward_params(const Call& c) {
  const int64_t Tk = c.k.size(2);
  ForwardParams p{};
  p.q = rows_of(c.q);
  p.k = rows_of(c.k);
  p.v = rows_of(c.v);
  p.B = c.q.size(0);
  p.H = c.q.size(1);
  p.Tq = c.q.size(2);
  p.Tk = Tk;
  p.D = c.q.size(3);
  p.Dv = c.v.size(3);
  // The one place the window becomes the kernels' sentinel (-1: none), clamped as on the CPU.
  p.band = {p.Tq, Tk, c.causal, c.window ? common::clamp_window(*c.window, Tk) : -1};
  p.key_valid = data_or_null<bool>(c.key_valid);
  p.key_bias = data_or_null<float>(c.key_bias);
  p.scale = static_cast<float>(c.scale);
  p.dropout = common::DropoutMask::make(c.dropout_p, c.seed);
  return p;
}

// The smallest head-dim bucket holding D and Dv.
int head_dim_bucket(const ForwardParams& p) {
  const int64_t d = std::max(p.D, p.Dv);
  return d <= 64 ? 64 : d <= 128 ? 128 : 256;
}

// The forward: the tensor-core kernels for float16 / bfloat16, the SIMT ones for float32 (IEEE
// float32 products, as the contract asks without TF32).
std::tuple<at::Tensor, at::Tensor> run_forward(const Call& c, const ModParams& mod) {
  const DeviceScope device(c.q);
  at::Tensor out = at::empty({c.q.size(0), c.q.size(1), c.q.size(2), c.v.size(3)}, c.q.options());
  at::Tensor lse = at::empty({c.q.size(0), c.q.size(1), c.q.size(2)}, c.q.options().dtype(at::kFloat));
  ForwardParams p = forward_params(c);
  p.out = out.mutable_data_ptr();
  p.lse = lse.mutable_data_ptr<float>();
  const cudaStream_t stream = device.stream();
  const Dtype dtype = dtype_of(c.q);
  if (dtype != Dtype::kFloat32 && !simt_only()) {
    switch (head_dim_bucket(p)) {
      case 64: mma_forward<64>(p, mod, dtype, stream); break;
      case 128: mma_forward<128>(p, mod, dtype, stream); break;
      default: mma_forward<256>(p, mod, dtype, stream); break;
    }
  } else {
    switch (head_dim_bucket(p)) {
      case 64: simt_forward<64>(p, mod, dtype, stream); break;
      case 128: simt_forward<128>(p, mod, dtype, stream); break;
      default: simt_forward<256>(p, mod, dtype, stream); break;
    }
  }
  check_launch();
  return {out, lse};
}

// dq, dk, dv (input dtype, contiguous) and d key_bias (float32, undefined without a key_bias).
struct Grads {
  at::Tensor dq, dk, dv, dkey_bias;
  // [dq, dk, dv, *param_grads] + [dkey_bias] when the call had a key_bias.
  std::vector<at::Tensor> with(std::vector<at::Tensor> param_grads) const {
    std::vector<at::Tensor> grads{dq, dk, dv};
    grads.insert(grads.end(), param_grads.begin(), param_grads.end());
    if (dkey_bias.defined()) grads.push_back(dkey_bias);
    return grads;
  }
};

Grads run_backward(const Call& c, const at::Tensor& grad_out, const at::Tensor& delta, const at::Tensor& lse,
                   const ModParams& mod) {
  const DeviceScope device(c.q);
  Grads g;
  // Every row of every output is written by exactly one warp (of the tensor-core pass or of its
  // SIMT redo): no zeroing needed.
  g.dq = at::empty(c.q.sizes(), c.q.options());
  g.dk = at::empty(c.k.sizes(), c.q.options());
  g.dv = at::empty(c.v.sizes(), c.q.options());
  if (c.key_bias) g.dkey_bias = at::empty({c.q.size(0), c.q.size(1), c.k.size(2)}, c.q.options().dtype(at::kFloat));
  const ForwardParams p = forward_params(c);
  BackwardParams bw{};
  bw.grad_out = rows_of(grad_out);
  bw.delta = delta.const_data_ptr<float>();
  bw.lse = lse.const_data_ptr<float>();
  // Written by the backward's prepass (simt.cuh): no host sync decides which rows need it.
  const at::Tensor row_shift = at::empty_like(lse), row_inv_sum = at::empty_like(lse);
  bw.row_shift = row_shift.mutable_data_ptr<float>();
  bw.row_inv_sum = row_inv_sum.mutable_data_ptr<float>();
  bw.dq = g.dq.mutable_data_ptr();
  bw.dk = g.dk.mutable_data_ptr();
  bw.dv = g.dv.mutable_data_ptr();
  bw.dkey_bias = g.dkey_bias.defined() ? g.dkey_bias.mutable_data_ptr<float>() : nullptr;
  const cudaStream_t stream = device.stream();
  const Dtype dtype = dtype_of(c.q);
  const int bucket = head_dim_bucket(p);
  if (dtype != Dtype::kFloat32 && bucket <= 128 && !simt_only()) {
    // One flag per block of the tensor-core passes, each written by its block (no zeroing).
    const auto flag_options = c.q.options().dtype(at::kInt);
    const at::Tensor key_flags = at::empty({p.B * p.H, RedoFlags::tiles(p.Tk, kMmaBackwardKeys)}, flag_options);
    const at::Tensor row_flags = at::empty({p.B * p.H, RedoFlags::tiles(p.Tq, kMmaBackwardRows)}, flag_options);
    bw.key_redo = {key_flags.mutable_data_ptr<int>(), kMmaBackwardKeys};
    bw.row_redo = {row_flags.mutable_data_ptr<int>(), kMmaBackwardRows};
    if (bucket == 64)
      mma_backward<64>(p, bw, mod, dtype, stream);
    else
      mma_backward<128>(p, bw, mod, dtype, stream);
  } else {
    switch (bucket) {
      case 64: simt_backward<64>(p, bw, mod, dtype, stream); break;
      case 128: simt_backward<128>(p, bw, mod, dtype, stream); break;
      default: simt_backward<256>(p, bw, mod, dtype, stream); break;
    }
  }
  check_launch();
  return g;
}

// Zeroed (B, H, Tq, width) float32 per-row partials of a modifier's parameter gradients.
at::Tensor zero_partials(const at::Tensor& q, int64_t width) {
  return at::zeros({q.size(0), q.size(1), q.size(2), width}, q.options().dtype(at::kFloat));
}

// The partials summed over (b, i): torch's CUDA reductions run in a fixed order (no atomics).
at::Tensor reduce_partials(const at::Tensor& partials) { return partials.sum(at::IntArrayRef{0, 2}); }

// --------------------------------------------------------------------------------- masked_sdpa
std::tuple<at::Tensor, at::Tensor> masked_sdpa_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                   const std::optional<at::Tensor>& key_valid,
                                                   const std::optional<at::Tensor>& key_bias, bool causal,
                                                   double dropout_p, int64_t seed, double scale) {
  check_common("masked_sdpa_fwd", q, k, v, key_valid, key_bias, causal, dropout_p);
  return run_forward({q, k, v, key_valid, key_bias, causal, std::nullopt, dropout_p, seed, scale}, ModParams{});
}

std::vector<at::Tensor> masked_sdpa_bwd(const at::Tensor& grad_out, const at::Tensor& out,
                                        const std::optional<at::Tensor>& grad_lse, const at::Tensor& lse,
                                        const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const std::optional<at::Tensor>& key_valid,
                                        const std::optional<at::Tensor>& key_bias, bool causal, double dropout_p,
                                        int64_t seed, double scale) {
  const char* op = "masked_sdpa_bwd";
  check_common(op, q, k, v, key_valid, key_bias, causal, dropout_p);
  const at::Tensor delta = backward_delta(op, grad_out, out, grad_lse, lse, q, v);
  const Call call{q, k, v, key_valid, key_bias, causal, std::nullopt, dropout_p, seed, scale};
  return run_backward(call, grad_out, delta, lse, ModParams{}).with({});
}

// ---------------------------------------------------------------------------- relpos_attention
ModParams relpos_mod(const char* op, const at::Tensor& q, const at::Tensor& rel_bias, std::optional<int64_t> window) {
  check_window(op, window);
  TORCH_CHECK(rel_bias.dim() == 2 && rel_bias.size(1) >= 1, op, ": `rel_bias` must be (H, R) with R >= 1, got shape ",
              rel_bias.sizes());
  const int64_t R = window ? *window + 1 : rel_bias.size(1);
  check_exact(op, "rel_bias", rel_bias, q, {q.size(1), R}, at::kFloat);
  ModParams m;
  m.kind = ModKind::kRelpos;
  m.rel_bias = rel_bias.const_data_ptr<float>();
  m.R = R;
  return m;
}

std::tuple<at::Tensor, at::Tensor> relpos_attention_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                        const at::Tensor& rel_bias,
                                                        const std::optional<at::Tensor>& key_valid,
                                                        const std::optional<at::Tensor>& key_bias,
                                                        std::optional<int64_t> window, double dropout_p, int64_t seed,
                                                        double scale) {
  const char* op = "relpos_attention_fwd";
  check_common(op, q, k, v, key_valid, key_bias, /*causal=*/true, dropout_p);
  const ModParams mod = relpos_mod(op, q, rel_bias, window);
  return run_forward({q, k, v, key_valid, key_bias, true, window, dropout_p, seed, scale}, mod);
}

// [dq, dk, dv, drel_bias] + [dkey_bias].
std::vector<at::Tensor> relpos_attention_bwd(const at::Tensor& grad_out, const at::Tensor& out,
                                             const std::optional<at::Tensor>& grad_lse, const at::Tensor& lse,
                                             const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                             const at::Tensor& rel_bias, const std::optional<at::Tensor>& key_valid,
                                             const std::optional<at::Tensor>& key_bias, std::optional<int64_t> window,
                                             double dropout_p, int64_t seed, double scale) {
  const char* op = "relpos_attention_bwd";
  check_common(op, q, k, v, key_valid, key_bias, /*causal=*/true, dropout_p);
  const at::Tensor delta = backward_delta(op, grad_out, out, grad_lse, lse, q, v);
  ModParams mod = relpos_mod(op, q, rel_bias, window);
  const at::Tensor band = zero_partials(q, mod.R);
  mod.partial0 = band.mutable_data_ptr<float>();
  const Call call{q, k, v, key_valid, key_bias, true, window, dropout_p, seed, scale};
  const Grads g = run_backward(call, grad_out, delta, lse, mod);
  return g.with({reduce_partials(band)});
}

// ----------------------------------------------------------------------------- decay_attention
// The modifier's parameters; log_a (kept alive by the caller) = log_softmax(alpha_logits).
ModParams decay_mod(const char* op, const at::Tensor& log_gamma, const std::optional<at::Tensor>& times,
                    std::optional<int64_t> window, double eps, const at::Tensor& log_a) {
  check_window(op, window);
  TORCH_CHECK(eps >= 0 && std::isfinite(eps), op, ": `eps` must be a finite float >= 0, got ", eps);
  ModParams m;
  m.kind = ModKind::kDecay;
  m.log_a = log_a.const_data_ptr<float>();
  m.log_gamma = log_gamma.const_data_ptr<float>();
  m.S = log_gamma.size(1);
  m.log_eps = common::decay_log_eps<float>(eps);
  m.times = data_or_null<float>(times);
  return m;
}

void check_decay_tensors(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& log_gamma,
                         const at::Tensor& alpha_logits, const std::optional<at::Tensor>& times) {
  TORCH_CHECK(log_gamma.dim() == 2 && log_gamma.size(1) >= 1, op, ": `log_gamma` must be (H, S) with S >= 1, got shape ",
              log_gamma.sizes());
  check_exact(op, "log_gamma", log_gamma, q, {q.size(1), log_gamma.size(1)}, at::kFloat);
  check_exact(op, "alpha_logits", alpha_logits, q, log_gamma.sizes(), at::kFloat);
  check_optional(op, "times", times, q, {q.size(0), k.size(2)}, at::kFloat);
}

std::tuple<at::Tensor, at::Tensor> decay_attention_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                       const at::Tensor& log_gamma, const at::Tensor& alpha_logits,
                                                       const std::optional<at::Tensor>& times,
                                                       const std::optional<at::Tensor>& key_valid,
                                                       const std::optional<at::Tensor>& key_bias,
                                                       std::optional<int64_t> window, double eps, double dropout_p,
                                                       int64_t seed, double scale) {
  const char* op = "decay_attention_fwd";
  check_common(op, q, k, v, key_valid, key_bias, /*causal=*/true, dropout_p);
  check_decay_tensors(op, q, k, log_gamma, alpha_logits, times);
  const at::Tensor log_a = at::log_softmax(alpha_logits, -1).contiguous();
  const ModParams mod = decay_mod(op, log_gamma, times, window, eps, log_a);
  return run_forward({q, k, v, key_valid, key_bias, true, window, dropout_p, seed, scale}, mod);
}

// [dq, dk, dv, dlog_gamma, dalpha_logits] + [dkey_bias]: dlog_gamma = sum dS r Delta;
// dalpha_s = A_s - a_s * sum_s' A_s' with A_s = sum dS r_s (the chain rule through log_softmax).
std::vector<at::Tensor> decay_attention_bwd(const at::Tensor& grad_out, const at::Tensor& out,
                                            const std::optional<at::Tensor>& grad_lse, const at::Tensor& lse,
                                            const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            const at::Tensor& log_gamma, const at::Tensor& alpha_logits,
                                            const std::optional<at::Tensor>& times,
                                            const std::optional<at::Tensor>& key_valid,
                                            const std::optional<at::Tensor>& key_bias, std::optional<int64_t> window,
                                            double eps, double dropout_p, int64_t seed, double scale) {
  const char* op = "decay_attention_bwd";
  check_common(op, q, k, v, key_valid, key_bias, /*causal=*/true, dropout_p);
  check_decay_tensors(op, q, k, log_gamma, alpha_logits, times);
  const at::Tensor delta = backward_delta(op, grad_out, out, grad_lse, lse, q, v);
  const at::Tensor log_a = at::log_softmax(alpha_logits, -1).contiguous();
  ModParams mod = decay_mod(op, log_gamma, times, window, eps, log_a);
  const at::Tensor d_log_a = zero_partials(q, mod.S), d_log_gamma = zero_partials(q, mod.S);
  mod.partial0 = d_log_a.mutable_data_ptr<float>();
  mod.partial1 = d_log_gamma.mutable_data_ptr<float>();
  const Call call{q, k, v, key_valid, key_bias, true, window, dropout_p, seed, scale};
  const Grads g = run_backward(call, grad_out, delta, lse, mod);
  const at::Tensor sum_r = reduce_partials(d_log_a);
  const at::Tensor d_alpha = sum_r - at::softmax(alpha_logits, -1) * sum_r.sum(-1, /*keepdim=*/true);
  return g.with({reduce_partials(d_log_gamma), d_alpha});
}

}  // namespace
}  // namespace tempattn::cuda

#if !defined(TEMPATTN_CUDA_EMULATION)  // the emulated build binds these functions itself
TORCH_LIBRARY_IMPL(tempattn_C, CUDA, m) {
  using namespace tempattn::cuda;
  m.impl("masked_sdpa_fwd", &masked_sdpa_fwd);
  m.impl("masked_sdpa_bwd", &masked_sdpa_bwd);
  m.impl("relpos_attention_fwd", &relpos_attention_fwd);
  m.impl("relpos_attention_bwd", &relpos_attention_bwd);
  m.impl("decay_attention_fwd", &decay_attention_fwd);
  m.impl("decay_attention_bwd", &decay_attention_bwd);
}
#endif
