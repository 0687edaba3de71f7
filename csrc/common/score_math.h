// The per-score maths of the three operators, as scalar host/device functions: the score
// modifiers m_ij (relative bias lookup, decay mixture over a position or timestamp offset), the
// online-softmax row rules (running max and sum, the empty-row rule) and dS. The CPU kernels use
// them directly or to tabulate their vectorised paths; the CUDA kernels call them per score.
// (The contract: docs/contract.md; the Triton twin: kernels/common/score_mods.py.)
#pragma once

#include "common/hd.h"

namespace tempattn::common {

// ------------------------------------------------------------------ relpos_attention modifier
// m_ij = rel_bias[h, min(Delta, R - 1)], Delta = p_i - j >= 0 (admissible keys only).
TEMPATTN_HD int64_t relpos_column(int64_t delta, int64_t R) { return hd_min(delta, R - 1); }

template <typename T>
TEMPATTN_HD T relpos_bias(const T* rel_bias, int64_t R, int64_t h, int64_t delta) {
  return rel_bias[h * R + relpos_column(delta, R)];
}

// ------------------------------------------------------------------- decay_attention modifier
// Delta of the decay: the position offset p - j, or times[p] - times[j]; clamped at 0.
template <typename T>
TEMPATTN_HD T decay_offset(T delta) {
  return delta > T(0) ? delta : T(0);
}

// log eps, -inf for eps = 0 (then m is the pure mixture).
template <typename T>
TEMPATTN_HD T decay_log_eps(double eps) {
  return eps > 0 ? static_cast<T>(hd_log(eps)) : neg_infinity<T>();
}

// One head's mixture: log a_s = log_softmax(alpha_logits[h])_s and log_gamma_s for s < S.
template <typename T>
struct DecayHead {
  const T* log_a;
  const T* log_gamma;
  int64_t S;
  T log_eps;

  // log a_s + log_gamma_s * Delta.
  TEMPATTN_HD T term(int64_t s, T delta) const { return log_a[s] + log_gamma[s] * delta; }

  // m(Delta) = logaddexp(logsumexp_s(term_s), log eps), with one shift by the largest term.
  TEMPATTN_HD T log_mix(T delta) const {
    T top = log_eps;
    for (int64_t s = 0; s < S; ++s) top = hd_max(top, term(s, delta));
    T sum = log_eps == neg_infinity<T>() ? T(0) : hd_exp(log_eps - top);
    for (int64_t s = 0; s < S; ++s) sum += hd_exp(term(s, delta) - top);
    return top + hd_log(sum);
  }

  // r_s = a_s * gamma_s^Delta / exp(m) = d m / d log a_s; r_s * Delta = d m / d log_gamma_s.
  TEMPATTN_HD T responsibility(int64_t s, T delta, T m) const { return hd_exp(term(s, delta) - m); }
};

// log_softmax of one row of S logits, into log_a.
template <typename T>
TEMPATTN_HD void log_softmax_row(const T* logits, int64_t S, T* log_a) {
  T top = logits[0];
  for (int64_t s = 1; s < S; ++s) top = hd_max(top, logits[s]);
  T sum = 0;
  for (int64_t s = 0; s < S; ++s) sum += hd_exp(logits[s] - top);
  const T log_sum = hd_log(sum);
  for (int64_t s = 0; s < S; ++s) log_a[s] = logits[s] - top - log_sum;
}

// ------------------------------------------------------------------------- online softmax row
// The running (max, sum) of one query row over its score blocks. A NaN score makes the max NaN
// and so the row's output and lse NaN; a jump of the max by any amount rescales exactly (the
// factor may underflow to 0, and then the earlier blocks vanish from sum and output alike).

// The row's max after a block whose max score is block_max.
template <typename T>
TEMPATTN_HD T softmax_new_max(T run_max, T block_max) {
  return nan_max(run_max, block_max);
}
// The factor the row's sum and output are multiplied by when the max moves from run_max to new_max.
template <typename T>
TEMPATTN_HD T softmax_rescale(T run_max, T new_max) {
  return new_max == run_max ? T(1) : hd_exp(run_max - new_max);
}
// The shift of the block's exps: the max, or 0 while no score is above -inf (exp(-inf) = 0, not NaN).
template <typename T>
TEMPATTN_HD T softmax_shift(T run_max) {
  return run_max == neg_infinity<T>() ? T(0) : run_max;
}
// The empty-row rule: a row whose sum is exactly 0 had no admissible finite score; its output is
// 0 and its lse -inf. (A NaN sum is no empty row: the NaN propagates.)
template <typename T>
TEMPATTN_HD bool softmax_row_empty(T sum) {
  return sum == T(0);
}
template <typename T>
TEMPATTN_HD T softmax_out_scale(T sum) {
  return softmax_row_empty(sum) ? T(0) : T(1) / sum;
}
template <typename T>
TEMPATTN_HD T softmax_lse(T run_max, T sum) {
  return softmax_row_empty(sum) ? neg_infinity<T>() : run_max + hd_log(sum);
}

// ------------------------------------------------------------------------------- backward
// The backward recomputes a row's P as exp(s - shift) * inv_sum. For an ordinary row that is
// exp(s - lse) from the forward's lse (shift = lse, inv_sum = 1). A row whose lse is "coarse" --
// finite but so large that its dtype cannot hold row_max + log(row_sum) to about 2^-14, as when
// every key of the row carries an additive -1e4 / -1e9 or the scale is huge -- would get P off by
// the rounding of lse (tied keys each P = 1, a factor up to e^32 at |lse| ~ 1e9); it is normalised
// from a rerun of the forward's row max and sum instead (shift = max, inv_sum = 1 / sum).
template <typename T>
struct RowNorm {
  T shift;
  T inv_sum;
};

// 2^(mantissa digits - 14): 1024 in float32, 2^39 in float64.
template <typename T>
TEMPATTN_HD T coarse_lse_limit() {
  return sizeof(T) == sizeof(float) ? T(1024.0) : T(549755813888.0);
}
// Whether the backward must rerun the row's statistics (a NaN or infinite lse is never coarse:
// NaN propagates, -inf is the empty row).
template <typename T>
TEMPATTN_HD bool lse_is_coarse(T lse) {
  const T limit = coarse_lse_limit<T>();
  return (lse >= limit || lse <= -limit) && lse != -neg_infinity<T>() && lse != neg_infinity<T>();
}
template <typename T>
TEMPATTN_HD RowNorm<T> row_norm_from_lse(T lse) {
  return {lse, T(1)};
}
// A coarse row's rerun statistics (its sum is > 0: a coarse lse is finite).
template <typename T>
TEMPATTN_HD RowNorm<T> row_norm_from_stats(T row_max, T row_sum) {
  return {row_max, T(1) / row_sum};
}
// The rule: a coarse row's rerun statistics, an ordinary row's lse (row_max, row_sum unused then).
template <typename T>
TEMPATTN_HD RowNorm<T> backward_row_norm(T lse, T row_max, T row_sum) {
  return lse_is_coarse(lse) ? row_norm_from_stats(row_max, row_sum) : row_norm_from_lse(lse);
}
// P of a score, 0 for an empty row (shift = lse = -inf).
template <typename T>
TEMPATTN_HD T probability(T s, RowNorm<T> norm) {
  return norm.shift == neg_infinity<T>() ? T(0) : hd_exp(s - norm.shift) * norm.inv_sum;
}
// dS = P * (dP * keep - delta), keep the dropout factor of the score (1 without dropout).
template <typename T>
TEMPATTN_HD T score_grad(T p, T dp, T keep, T delta) {
  return p * (dp * keep - delta);
}

}  // namespace tempattn::common
