// relpos_attention on the CPU: the tiled attention core with a relative-position bias looked up
// per offset, m = rel_bias[h, min(Delta, R - 1)].
// Compiled once per ISA level into tempattn::cpu::<level> (cpu/common/capability.h); the
// operator is registered once, in cpu/bindings.cpp.
#include "cpu/common/capability.h"

#include <ATen/ops/empty.h>

#include "common/score_math.h"
#include "cpu/common/attention_launch.h"
#include "cpu/common/score_mods.h"
#include "cpu/dispatch.h"

namespace tempattn::cpu::CPU_CAPABILITY {
namespace {

AttentionCall relpos_call(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const at::Tensor& rel_bias, const std::optional<at::Tensor>& key_valid,
                          const std::optional<at::Tensor>& key_bias, std::optional<int64_t> window, double dropout_p, int64_t seed,
                          double scale) {
  check_qkv(op, q, k, v);
  check_key_args(op, q, k, key_valid, key_bias);
  check_causal_lengths(op, q, k);
  check_dropout(op, dropout_p);
  TORCH_CHECK(!window || *window >= 0, op, ": `window` must be >= 0 or None, got ", *window);
  TORCH_CHECK(rel_bias.dim() == 2 && rel_bias.size(1) >= 1, op, ": `rel_bias` must be (H, R) with R >= 1, got shape ",
              rel_bias.sizes());
  const int64_t R = window ? *window + 1 : rel_bias.size(1);
  check_exact(op, "rel_bias", rel_bias, {q.size(1), R}, accumulate_dtype(q.scalar_type()));
  return {q, k, v, key_valid, key_bias, /*causal=*/true, window, dropout_p, seed, scale};
}

// m_h(Delta) = rel_bias[h, min(Delta, R - 1)] for every offset Delta in [0, Tk) a query can have.
template <typename acc_t>
OffsetTableMod<acc_t> relpos_mod(const at::Tensor& rel_bias, int64_t Tk) {
  const int64_t R = rel_bias.size(1);
  const acc_t* bias = rel_bias.const_data_ptr<acc_t>();
  return OffsetTableMod<acc_t>::build(rel_bias.size(0), Tk,
                                      [&](int64_t h, int64_t d) { return common::relpos_bias(bias, R, h, d); });
}

// make_mod for run_forward / run_backward.
auto relpos_mod_maker(const at::Tensor& rel_bias, int64_t Tk) {
  return [&rel_bias, Tk](auto tag) { return relpos_mod<typename decltype(tag)::type>(rel_bias, Tk); };
}

// d rel_bias[h, r]: the per-offset float64 dS sums (B, H, Tk) added over b, then over the offsets with
// min(Delta, R - 1) = r, in that fixed order.
at::Tensor rel_bias_grad(const at::Tensor& partials, const at::Tensor& rel_bias) {
  const int64_t B = partials.size(0), H = partials.size(1), Tk = partials.size(2), R = rel_bias.size(1);
  at::Tensor grad = at::empty({H, R}, rel_bias.options());
  AT_DISPATCH_FLOATING_TYPES(rel_bias.scalar_type(), "rel_bias_grad", [&] {
    const double* per_offset = partials.const_data_ptr<double>();
    std::vector<double> sums(H * R, 0.0);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t d = 0; d < Tk; ++d)
          sums[h * R + common::relpos_column(d, R)] += per_offset[(b * H + h) * Tk + OffsetTableMod<scalar_t>::slot(Tk, d)];
    std::copy(sums.begin(), sums.end(), grad.mutable_data_ptr<scalar_t>());
  });
  return grad;
}

std::tuple<at::Tensor, at::Tensor> relpos_attention_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                        const at::Tensor& rel_bias,
                                                        const std::optional<at::Tensor>& key_valid,
                                                        const std::optional<at::Tensor>& key_bias, std::optional<int64_t> window,
                                                        double dropout_p, int64_t seed, double scale) {
  const AttentionCall call =
      relpos_call("relpos_attention_fwd", q, k, v, rel_bias, key_valid, key_bias, window, dropout_p, seed, scale);
  check_finite_values("relpos_attention", "rel_bias", rel_bias);
  return run_forward(call, relpos_mod_maker(rel_bias, k.size(2)));
}

// [dq, dk, dv, drel_bias] + [dkey_bias] when key_bias is given.
std::vector<at::Tensor> relpos_attention_bwd(const at::Tensor& grad_out, const at::Tensor& out,
                                             const std::optional<at::Tensor>& grad_lse, const at::Tensor& lse,
                                             const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                             const at::Tensor& rel_bias, const std::optional<at::Tensor>& key_valid,
                                             const std::optional<at::Tensor>& key_bias, std::optional<int64_t> window,
                                             double dropout_p, int64_t seed, double scale) {
  const char* op = "relpos_attention_bwd";
  const AttentionCall call = relpos_call(op, q, k, v, rel_bias, key_valid, key_bias, window, dropout_p, seed, scale);
  check_backward_args(op, grad_out, out, grad_lse, lse, q, v);
  const BackwardResult r = run_backward(call, grad_out, out, grad_lse, lse, relpos_mod_maker(rel_bias, k.size(2)));
  return r.with({rel_bias_grad(r.mod_partials, rel_bias)});
}

}  // namespace

// This level's entry points (declared in cpu/dispatch.h), constant-initialised.
const RelposAttentionKernels relpos_attention_kernels{&relpos_attention_fwd, &relpos_attention_bwd};

}  // namespace tempattn::cpu::CPU_CAPABILITY
