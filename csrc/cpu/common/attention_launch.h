// From checked at::Tensor arguments to the attention core and back: output allocation, dtype
// dispatch (accumulating in float32, or float64 for float64 inputs) and the modifier hook-up.
#pragma once
#include "cpu/common/capability.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <optional>
#include <tuple>
#include <vector>

#include "cpu/common/attention_core.h"
#include "cpu/common/block_cache.h"
#include "cpu/common/checks.h"

namespace tempattn::cpu::CPU_CAPABILITY {

// One operator call's tensors and configuration, already checked.
struct AttentionCall {
  at::Tensor q, k, v;                          // (B, H, Tq, D), (B, H, Tk, D), (B, H, Tk, Dv)
  std::optional<at::Tensor> key_valid;         // (B, Tk) bool
  std::optional<at::Tensor> key_bias;          // (B, H, Tk) accumulation dtype
  bool causal;
  std::optional<int64_t> window;               // none: every causal key
  double dropout_p;
  int64_t seed;
  double scale;
};

// Passed to an operator's make_mod(AccTag<acc_t>{}) so it builds its modifier in the accumulation dtype.
template <typename T>
struct AccTag {
  using type = T;
};

template <typename scalar_t>
RowView<const scalar_t> row_view(const at::Tensor& t) {
  return {t.const_data_ptr<scalar_t>(), t.stride(0), t.stride(1), t.stride(2)};
}

inline at::TensorOptions accumulate_options(const at::Tensor& q) {
  return q.options().dtype(accumulate_dtype(q.scalar_type()));
}

template <typename scalar_t, typename acc_t>
AttentionInputs<scalar_t, acc_t> make_inputs(const AttentionCall& c) {
  AttentionInputs<scalar_t, acc_t> in;
  // The one place the window becomes the core's sentinel (-1: none). A window of Tk keys or more
  // admits every causal key: clamped, so no index arithmetic overflows.
  const int64_t Tk = c.k.size(2), window = c.window ? common::clamp_window(*c.window, Tk) : -1;
  in.geo = {c.q.size(0), c.q.size(1), c.q.size(2), Tk, c.q.size(3), c.v.size(3), c.causal, window};
  in.q = row_view<scalar_t>(c.q);
  in.k = row_view<scalar_t>(c.k);
  in.v = row_view<scalar_t>(c.v);
  in.key_valid = c.key_valid ? c.key_valid->const_data_ptr<bool>() : nullptr;
  in.key_bias = c.key_bias ? c.key_bias->const_data_ptr<acc_t>() : nullptr;
  in.scale = static_cast<acc_t>(c.scale);
  in.dropout = DropoutMask::make(c.dropout_p, c.seed);
  return in;
}

// (out (B, H, Tq, Dv) in q's dtype, lse (B, H, Tq) in the accumulation dtype).
template <typename MakeMod>
std::tuple<at::Tensor, at::Tensor> run_forward(const AttentionCall& c, const MakeMod& make_mod) {
  const at::Tensor& q = c.q;
  at::Tensor out = cached_empty({q.size(0), q.size(1), q.size(2), c.v.size(3)}, q.options());
  at::Tensor lse = cached_empty({q.size(0), q.size(1), q.size(2)}, accumulate_options(q));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "tempattn_cpu_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    attention_forward(make_inputs<scalar_t, acc_t>(c), make_mod(AccTag<acc_t>{}), out.mutable_data_ptr<scalar_t>(),
                      lse.mutable_data_ptr<acc_t>());
  });
  return {out, lse};
}

// Gradients of q, k, v (input dtype) and key_bias (undefined without one), and the modifier's
// (B, H, grad_size) float64 partials, which the operator reduces over b into its parameter gradients.
struct BackwardResult {
  at::Tensor dq, dk, dv, dkey_bias, mod_partials;

  // [dq, dk, dv, *param_grads] + [dkey_bias] when the call had a key_bias.
  std::vector<at::Tensor> with(std::vector<at::Tensor> param_grads) const {
    std::vector<at::Tensor> grads{dq, dk, dv};
    grads.insert(grads.end(), param_grads.begin(), param_grads.end());
    if (dkey_bias.defined()) grads.push_back(dkey_bias);
    return grads;
  }
};

// Whether some row's lse is coarse (common::lse_is_coarse): then the backward needs row_norms.
template <typename acc_t>
bool any_lse_coarse(const acc_t* lse, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (common::lse_is_coarse(lse[i])) return true;
  return false;
}

// Each row's normalisation of P (common::RowNorm) as (shift, inv_sum) tensors: the saved lse for an
// ordinary row, the row max and sum of a rerun of the forward (its outputs discarded) for a coarse
// one, so that the backward normalises P exactly as the forward did.
template <typename scalar_t, typename acc_t, typename Mod>
std::tuple<at::Tensor, at::Tensor> row_norms(const AttentionCall& c, const Mod& mod, const at::Tensor& saved_lse) {
  const at::Tensor& q = c.q;
  at::Tensor out = at::empty({q.size(0), q.size(1), q.size(2), c.v.size(3)}, q.options());
  at::Tensor lse = at::empty({q.size(0), q.size(1), q.size(2)}, accumulate_options(q));
  at::Tensor shift = at::empty_like(lse), inv_sum = at::empty_like(lse);
  acc_t* shifts = shift.mutable_data_ptr<acc_t>();
  acc_t* inv_sums = inv_sum.mutable_data_ptr<acc_t>();
  attention_forward(make_inputs<scalar_t, acc_t>(c), mod, out.mutable_data_ptr<scalar_t>(),
                    lse.mutable_data_ptr<acc_t>(), RowStats<acc_t>{shifts, inv_sums});
  const acc_t* saved = saved_lse.const_data_ptr<acc_t>();
  for (int64_t r = 0; r < saved_lse.numel(); ++r) {
    const common::RowNorm<acc_t> norm = common::backward_row_norm(saved[r], shifts[r], inv_sums[r]);
    shifts[r] = norm.shift;
    inv_sums[r] = norm.inv_sum;
  }
  return {shift, inv_sum};
}

template <typename MakeMod>
BackwardResult run_backward(const AttentionCall& c, const at::Tensor& grad_out, const at::Tensor& out,
                            const std::optional<at::Tensor>& grad_lse, const at::Tensor& lse,
                            const MakeMod& make_mod) {
  const at::Tensor& q = c.q;
  BackwardResult r;
  r.dq = cached_empty(q.sizes(), q.options());
  r.dk = cached_empty(c.k.sizes(), q.options());
  r.dv = cached_empty(c.v.sizes(), q.options());
  if (c.key_bias) r.dkey_bias = cached_empty({q.size(0), q.size(1), c.k.size(2)}, accumulate_options(q));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "tempattn_cpu_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto mod = make_mod(AccTag<acc_t>{});
    r.mod_partials = cached_empty({q.size(0), q.size(1), mod.grad_size()}, q.options().dtype(at::kDouble));
    BackwardInputs<scalar_t, acc_t> bw{row_view<scalar_t>(grad_out), row_view<scalar_t>(out),
                                       grad_lse ? grad_lse->const_data_ptr<acc_t>() : nullptr,
                                       lse.const_data_ptr<acc_t>()};
    at::Tensor row_shift, row_inv_sum;  // kept alive through the backward
    if (any_lse_coarse(lse.const_data_ptr<acc_t>(), lse.numel())) {
      std::tie(row_shift, row_inv_sum) = row_norms<scalar_t, acc_t>(c, mod, lse);
      bw.row_shift = row_shift.const_data_ptr<acc_t>();
      bw.row_inv_sum = row_inv_sum.const_data_ptr<acc_t>();
    }
    const AttentionGrads<scalar_t, acc_t> grads{
        r.dq.mutable_data_ptr<scalar_t>(), r.dk.mutable_data_ptr<scalar_t>(), r.dv.mutable_data_ptr<scalar_t>(),
        r.dkey_bias.defined() ? r.dkey_bias.mutable_data_ptr<acc_t>() : nullptr,
        r.mod_partials.mutable_data_ptr<double>()};
    attention_backward(make_inputs<scalar_t, acc_t>(c), bw, mod, grads);
  });
  return r;
}

}  // namespace tempattn::cpu::CPU_CAPABILITY
