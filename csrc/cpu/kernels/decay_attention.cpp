// decay_attention on the CPU: the tiled attention core with a learned mixture of exponential
// decays, m = log(sum_s a_hs * gamma_hs^Delta + eps). With position offsets the modifier is
// tabulated per (h, Delta) (an OffsetTableMod, O(H * Tk)); with timestamps it is evaluated per
// score (TimesDecayMod).
// Compiled once per ISA level into tempattn::cpu::<level> (cpu/common/capability.h); the
// operator is registered once, in cpu/bindings.cpp.
#include "cpu/common/capability.h"

#include <ATen/ops/empty.h>

#include <cmath>

#include "common/score_math.h"
#include "cpu/common/attention_launch.h"
#include "cpu/common/score_mods.h"
#include "cpu/dispatch.h"

namespace tempattn::cpu::CPU_CAPABILITY {
namespace {

// The per-head mixture: log a_hs = log_softmax(alpha_logits[h]), log_gamma (H, S), log eps.
template <typename acc_t>
class DecayMixture {
 public:
  DecayMixture(const at::Tensor& log_gamma, const at::Tensor& alpha_logits, double eps)
      : H_(log_gamma.size(0)), S_(log_gamma.size(1)), log_gamma_(log_gamma.const_data_ptr<acc_t>(),
                                                                  log_gamma.const_data_ptr<acc_t>() + H_ * S_),
        log_a_(H_ * S_), log_eps_(common::decay_log_eps<acc_t>(eps)) {
    const acc_t* logits = alpha_logits.const_data_ptr<acc_t>();
    for (int64_t h = 0; h < H_; ++h) common::log_softmax_row(logits + h * S_, S_, log_a_.data() + h * S_);
  }

  int64_t heads() const { return H_; }
  int64_t scales() const { return S_; }
  acc_t weight(int64_t h, int64_t s) const { return std::exp(log_a_[h * S_ + s]); }

  // Head h's mixture as the shared scalar maths sees it (common/score_math.h).
  common::DecayHead<acc_t> head(int64_t h) const {
    return {log_a_.data() + h * S_, log_gamma_.data() + h * S_, S_, log_eps_};
  }

  // m(h, Delta) = logaddexp(logsumexp_s(log a_hs + log_gamma_hs * Delta), log eps).
  acc_t log_mix(int64_t h, acc_t delta) const { return head(h).log_mix(delta); }

  // log_mix of a vector of offsets: the vectorised twin of common::DecayHead::log_mix.
  at::vec::Vectorized<acc_t> log_mix(int64_t h, const at::vec::Vectorized<acc_t>& delta) const {
    using Vec = at::vec::Vectorized<acc_t>;
    Vec top(log_eps_);
    for (int64_t s = 0; s < S_; ++s) top = at::vec::maximum(top, term(h, s, delta));
    Vec sum = exp_vec(Vec(log_eps_) - top);
    for (int64_t s = 0; s < S_; ++s) sum = sum + exp_vec(term(h, s, delta) - top);
    return top + sum.log();
  }

  // r_s = a_hs * gamma_hs^Delta / exp(m) = d m / d log a_hs; r_s * Delta = d m / d log_gamma_hs.
  acc_t responsibility(int64_t h, int64_t s, acc_t delta, acc_t m) const {
    return head(h).responsibility(s, delta, m);
  }
  at::vec::Vectorized<acc_t> responsibility(int64_t h, int64_t s, const at::vec::Vectorized<acc_t>& delta,
                                            const at::vec::Vectorized<acc_t>& m) const {
    return exp_vec(term(h, s, delta) - m);
  }

 private:
  template <typename T>
  T term(int64_t h, int64_t s, const T& delta) const {
    return T(log_a_[h * S_ + s]) + T(log_gamma_[h * S_ + s]) * delta;
  }

  int64_t H_, S_;
  std::vector<acc_t> log_gamma_, log_a_;
  acc_t log_eps_;
};

// Delta = times[b, p] - times[b, j] clamped at 0, the mixture evaluated per score. Its gradient
// partial per (b, h) is (2, S): sum dS * r_s, then sum dS * r_s * Delta.
template <typename acc_t>
struct TimesDecayMod {
  DecayMixture<acc_t> mix;
  const acc_t* times;  // (B, Tk)
  int64_t Tk;

  // Offsets from the query time `now` to keys [c, c + W) of the row of key times from j0 on
  // (`left` of them exist): past the last key, the lanes read zeros (masked by the core).
  static at::vec::Vectorized<acc_t> offsets(const acc_t* keys, acc_t now, int64_t c, int64_t left) {
    using Vec = at::vec::Vectorized<acc_t>;
    const Vec t = c + Vec::size() <= left ? Vec::loadu(keys + c)
                                          : Vec::loadu(keys + c, static_cast<int>(std::max<int64_t>(left - c, 0)));
    return at::vec::maximum(Vec(now) - t, Vec(acc_t(0)));
  }
  struct RowBias {
    const DecayMixture<acc_t>* mix;
    const acc_t* keys;  // times of keys j0, ...
    acc_t now;
    int64_t h, left;    // keys left in the row of times from j0 on
    template <typename Vec>
    Vec add(const Vec& x, int64_t c) const {
      return x + mix->log_mix(h, offsets(keys, now, c, left));
    }
  };
  RowBias row_bias(int64_t b, int64_t h, int64_t p, int64_t j0) const {
    return {&mix, times + b * Tk + j0, times[b * Tk + p], h, Tk - j0};
  }
  int64_t grad_size() const { return 2 * mix.scales(); }
  // partial[s] += sum_c ds[c] * r_s(c), partial[S + s] += sum_c ds[c] * r_s(c) * Delta(c), a
  // vector of keys at a time, lanes past n contributing ds = 0.
  void accumulate_grad(int64_t b, int64_t h, int64_t p, int64_t j0, int64_t n, const acc_t* ds,
                       double* partial) const {
    using Vec = at::vec::Vectorized<acc_t>;
    constexpr int64_t W = Vec::size();
    const int64_t S = mix.scales();
    const acc_t* keys = times + b * Tk + j0;
    const acc_t now = times[b * Tk + p];
    const auto sum = [](const Vec& x) { return at::vec::vec_reduce_all<acc_t>(std::plus<Vec>(), x); };
    for (int64_t c = 0; c < n; c += W) {
      const Vec d = c + W <= n ? Vec::loadu(ds + c) : Vec::loadu(ds + c, static_cast<int>(n - c));
      const Vec delta = offsets(keys, now, c, Tk - j0), m = mix.log_mix(h, delta);
      for (int64_t s = 0; s < S; ++s) {
        const Vec weighted = d * mix.responsibility(h, s, delta, m);
        partial[s] += sum(weighted);
        partial[S + s] += sum(weighted * delta);
      }
    }
  }
};

struct DecayConfig {
  const at::Tensor& log_gamma;
  const at::Tensor& alpha_logits;
  const std::optional<at::Tensor>& times;
  double eps;
  int64_t Tk;
};

template <typename acc_t>
OffsetTableMod<acc_t> position_decay_mod(const DecayMixture<acc_t>& mix, int64_t Tk) {
  return OffsetTableMod<acc_t>::build(mix.heads(), Tk, [&](int64_t h, int64_t d) {
    return mix.log_mix(h, common::decay_offset(static_cast<acc_t>(d)));
  });
}

// Returns run(make_mod), make_mod(AccTag<acc_t>{}) building this configuration's modifier.
template <typename Run>
auto with_decay_mod_maker(const DecayConfig& cfg, const Run& run) {
  if (cfg.times) {
    return run([&cfg](auto tag) {
      using acc_t = typename decltype(tag)::type;
      return TimesDecayMod<acc_t>{DecayMixture<acc_t>(cfg.log_gamma, cfg.alpha_logits, cfg.eps),
                                  cfg.times->const_data_ptr<acc_t>(), cfg.Tk};
    });
  }
  return run([&cfg](auto tag) {
    using acc_t = typename decltype(tag)::type;
    return position_decay_mod(DecayMixture<acc_t>(cfg.log_gamma, cfg.alpha_logits, cfg.eps), cfg.Tk);
  });
}

// (sum dS * r_s, sum dS * r_s * Delta) per (h, s), summed over b in order in float64, from the
// float64 partials: (B, H, Tk) per-offset dS sums in position mode, (B, H, 2, S) in timestamp mode.
template <typename acc_t>
void mixture_sums(const DecayConfig& cfg, const DecayMixture<acc_t>& mix, const at::Tensor& partials, double* sum_r,
                  double* sum_r_delta) {
  const int64_t B = partials.size(0), H = mix.heads(), S = mix.scales(), L = partials.size(2);
  const double* part = partials.const_data_ptr<double>();
  std::fill(sum_r, sum_r + H * S, 0.0);
  std::fill(sum_r_delta, sum_r_delta + H * S, 0.0);
  for (int64_t h = 0; h < H; ++h) {
    if (cfg.times) {
      for (int64_t b = 0; b < B; ++b)
        for (int64_t s = 0; s < S; ++s) {
          sum_r[h * S + s] += part[(b * H + h) * L + s];
          sum_r_delta[h * S + s] += part[(b * H + h) * L + S + s];
        }
      continue;
    }
    for (int64_t d = 0; d < L; ++d) {
      double ds = 0;
      for (int64_t b = 0; b < B; ++b) ds += part[(b * H + h) * L + OffsetTableMod<acc_t>::slot(L, d)];
      if (ds == 0) continue;  // offsets no admissible score has: r_s may be 0 * inf there
      const acc_t delta = static_cast<acc_t>(d), m = mix.log_mix(h, delta);
      for (int64_t s = 0; s < S; ++s) {
        const double weighted = ds * mix.responsibility(h, s, delta, m);
        sum_r[h * S + s] += weighted;
        sum_r_delta[h * S + s] += weighted * delta;
      }
    }
  }
}

// [dlog_gamma, dalpha_logits]: dlog_gamma = sum dS r Delta; dalpha_hs = A_hs - a_hs * sum_s' A_hs'.
std::vector<at::Tensor> decay_param_grads(const DecayConfig& cfg, const at::Tensor& partials) {
  at::Tensor dlog_gamma = at::empty(cfg.log_gamma.sizes(), cfg.log_gamma.options());
  at::Tensor dalpha = at::empty(cfg.alpha_logits.sizes(), cfg.alpha_logits.options());
  AT_DISPATCH_FLOATING_TYPES(cfg.log_gamma.scalar_type(), "decay_param_grads", [&] {
    const DecayMixture<scalar_t> mix(cfg.log_gamma, cfg.alpha_logits, cfg.eps);
    const int64_t H = mix.heads(), S = mix.scales();
    std::vector<double> sum_r(H * S), sum_r_delta(H * S);
    mixture_sums(cfg, mix, partials, sum_r.data(), sum_r_delta.data());
    std::copy(sum_r_delta.begin(), sum_r_delta.end(), dlog_gamma.mutable_data_ptr<scalar_t>());
    scalar_t* da = dalpha.mutable_data_ptr<scalar_t>();
    for (int64_t h = 0; h < H; ++h) {
      double total = 0;
      for (int64_t s = 0; s < S; ++s) total += sum_r[h * S + s];
      for (int64_t s = 0; s < S; ++s) da[h * S + s] = sum_r[h * S + s] - mix.weight(h, s) * total;
    }
  });
  return {dlog_gamma, dalpha};
}

AttentionCall decay_call(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const DecayConfig& cfg, const std::optional<at::Tensor>& key_valid,
                         const std::optional<at::Tensor>& key_bias, std::optional<int64_t> window, double dropout_p, int64_t seed,
                         double scale) {
  check_qkv(op, q, k, v);
  check_key_args(op, q, k, key_valid, key_bias);
  check_causal_lengths(op, q, k);
  check_dropout(op, dropout_p);
  TORCH_CHECK(!window || *window >= 0, op, ": `window` must be >= 0 or None, got ", *window);
  TORCH_CHECK(cfg.eps >= 0 && std::isfinite(cfg.eps), op, ": `eps` must be a finite float >= 0, got ", cfg.eps);
  const at::ScalarType acc = accumulate_dtype(q.scalar_type());
  TORCH_CHECK(cfg.log_gamma.dim() == 2 && cfg.log_gamma.size(1) >= 1, op,
              ": `log_gamma` must be (H, S) with S >= 1, got shape ", cfg.log_gamma.sizes());
  check_exact(op, "log_gamma", cfg.log_gamma, {q.size(1), cfg.log_gamma.size(1)}, acc);
  check_exact(op, "alpha_logits", cfg.alpha_logits, cfg.log_gamma.sizes(), acc);
  check_optional(op, "times", cfg.times, {q.size(0), k.size(2)}, acc);
  return {q, k, v, key_valid, key_bias, /*causal=*/true, window, dropout_p, seed, scale};
}

// The forward's value checks (see checks.h), under the public operator's name.
void check_decay_values(const DecayConfig& cfg) {
  const char* op = "decay_attention";
  check_finite_values(op, "log_gamma", cfg.log_gamma);
  check_finite_values(op, "alpha_logits", cfg.alpha_logits);
  check_non_positive_log_gamma(op, cfg.log_gamma);
  if (cfg.times) check_times_values(op, *cfg.times);
}

std::tuple<at::Tensor, at::Tensor> decay_attention_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                       const at::Tensor& log_gamma, const at::Tensor& alpha_logits,
                                                       const std::optional<at::Tensor>& times,
                                                       const std::optional<at::Tensor>& key_valid,
                                                       const std::optional<at::Tensor>& key_bias, std::optional<int64_t> window,
                                                       double eps, double dropout_p, int64_t seed, double scale) {
  const DecayConfig cfg{log_gamma, alpha_logits, times, eps, k.size(2)};
  const AttentionCall call =
      decay_call("decay_attention_fwd", q, k, v, cfg, key_valid, key_bias, window, dropout_p, seed, scale);
  check_decay_values(cfg);
  return with_decay_mod_maker(cfg, [&](const auto& make_mod) { return run_forward(call, make_mod); });
}

// [dq, dk, dv, dlog_gamma, dalpha_logits] + [dkey_bias] when key_bias is given.
std::vector<at::Tensor> decay_attention_bwd(const at::Tensor& grad_out, const at::Tensor& out,
                                            const std::optional<at::Tensor>& grad_lse, const at::Tensor& lse,
                                            const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            const at::Tensor& log_gamma, const at::Tensor& alpha_logits,
                                            const std::optional<at::Tensor>& times,
                                            const std::optional<at::Tensor>& key_valid,
                                            const std::optional<at::Tensor>& key_bias, std::optional<int64_t> window, double eps,
                                            double dropout_p, int64_t seed, double scale) {
  const char* op = "decay_attention_bwd";
  const DecayConfig cfg{log_gamma, alpha_logits, times, eps, k.size(2)};
  const AttentionCall call = decay_call(op, q, k, v, cfg, key_valid, key_bias, window, dropout_p, seed, scale);
  check_backward_args(op, grad_out, out, grad_lse, lse, q, v);
  const BackwardResult r = with_decay_mod_maker(
      cfg, [&](const auto& make_mod) { return run_backward(call, grad_out, out, grad_lse, lse, make_mod); });
  return r.with(decay_param_grads(cfg, r.mod_partials));
}

}  // namespace

// This level's entry points (declared in cpu/dispatch.h), constant-initialised.
const DecayAttentionKernels decay_attention_kernels{&decay_attention_fwd, &decay_attention_bwd};

}  // namespace tempattn::cpu::CPU_CAPABILITY
