// The tiled online-softmax attention core (FlashAttention-2 on the CPU), shared by the three
// operators and specialised by a score modifier `Mod` (see score_mods.h for the concept).
//
// Forward: one task per (b, h, query tile of block_m rows); key blocks of kBlockN columns that
// lie outside the causal / window band, or hold only padding, are skipped. Only out and the row
// log-sum-exp are written. Backward: one task per (b, h), walking the query tiles in order and
// recomputing P tile by tile from the saved lse; dK, dV, d key_bias and the modifier's gradient
// partial of that (b, h) are accumulated by that task alone, so every reduction runs in a fixed
// order whatever the thread count (no atomics). No buffer grows with Tq * Tk.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "cpu/common/philox.h"
#include "cpu/common/vec_utils.h"

namespace tempattn::cpu {

constexpr int64_t kBlockN = 64;

// A (B, H, T, X) tensor read row by row; the last dim has stride 1, the others are free.
template <typename T>
struct RowView {
  T* data = nullptr;
  int64_t stride_b = 0, stride_h = 0, stride_t = 0;
  T* row(int64_t b, int64_t h, int64_t t) const { return data + b * stride_b + h * stride_h + t * stride_t; }
};

struct AttentionGeometry {
  int64_t B, H, Tq, Tk, D, Dv;
  bool causal;
  int64_t window;  // -1: no window

  // Absolute position of query row i (bottom-right alignment).
  int64_t position(int64_t i) const { return i + Tk - Tq; }
  // Inclusive band of keys admissible by index for a query at position p.
  int64_t first_key(int64_t p) const { return causal && window >= 0 ? std::max<int64_t>(0, p - window) : 0; }
  int64_t last_key(int64_t p) const { return causal ? std::min(p, Tk - 1) : Tk - 1; }
  // Narrow bands waste less of each tile with shorter query tiles.
  int64_t block_m() const { return causal && window >= 0 && window <= 128 ? 16 : 64; }
};

template <typename scalar_t, typename acc_t>
struct AttentionInputs {
  AttentionGeometry geo;
  RowView<const scalar_t> q, k, v;
  const bool* key_valid = nullptr;  // (B, Tk), True = attend; nullptr: all valid
  const acc_t* key_bias = nullptr;  // (B, H, Tk) or nullptr
  acc_t scale;
  DropoutMask dropout;
};

template <typename scalar_t, typename acc_t>
struct BackwardInputs {
  RowView<const scalar_t> grad_out;
  const acc_t* delta;  // (B, H, Tq): rowsum(dO * O) - dlse
  const acc_t* lse;    // (B, H, Tq)
};

template <typename scalar_t, typename acc_t>
struct AttentionGrads {
  scalar_t* dq;                // (B, H, Tq, D) contiguous
  scalar_t* dk;                // (B, H, Tk, D) contiguous
  scalar_t* dv;                // (B, H, Tk, Dv) contiguous
  acc_t* dkey_bias = nullptr;  // (B, H, Tk) or nullptr
  acc_t* mod_partials;         // (B, H, mod.grad_size())
};

// Whether a key range holds any valid key, from per-batch prefix counts of valid keys.
class KeyValidity {
 public:
  KeyValidity(const bool* key_valid, int64_t B, int64_t Tk) : Tk_(Tk) {
    if (key_valid == nullptr) return;
    prefix_.assign(B * (Tk + 1), 0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < Tk; ++j)
        prefix_[b * (Tk + 1) + j + 1] = prefix_[b * (Tk + 1) + j] + (key_valid[b * Tk + j] ? 1 : 0);
  }
  bool any(int64_t b, int64_t j0, int64_t j1) const {
    return prefix_.empty() || prefix_[b * (Tk_ + 1) + j1] > prefix_[b * (Tk_ + 1) + j0];
  }

 private:
  int64_t Tk_;
  std::vector<int64_t> prefix_;
};

// Runs run_task(t, scratch) for t in [0, n_tasks), dealt round-robin to the workers (so the
// unequal causal tiles balance), with one scratch from make_scratch() per worker.
template <typename MakeScratch, typename RunTask>
void parallel_round_robin(int64_t n_tasks, const MakeScratch& make_scratch, const RunTask& run_task) {
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n_tasks));
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) {
      auto scratch = make_scratch();
      for (int64_t t = w; t < n_tasks; t += workers) run_task(t, scratch);
    }
  });
}

// Admissible columns [lo, hi) of a score row over keys [j0, j0 + n).
struct Span {
  int64_t lo, hi;
  bool empty() const { return hi <= lo; }
};

// Turns the raw dot products s[0, n) of query row (b, h, position p) against keys [j0, j0 + n)
// into final scores: scale, key bias, modifier, and -inf outside the band or on padding.
template <typename scalar_t, typename acc_t, typename Mod>
Span finish_scores(const AttentionInputs<scalar_t, acc_t>& in, const Mod& mod, int64_t b, int64_t h, int64_t p,
                   int64_t j0, int64_t n, acc_t* s) {
  const auto& g = in.geo;
  const Span span{std::max<int64_t>(g.first_key(p) - j0, 0), std::min<int64_t>(g.last_key(p) - j0 + 1, n)};
  if (span.empty()) {
    std::fill(s, s + n, neg_inf<acc_t>());
    return span;
  }
  std::fill(s, s + span.lo, neg_inf<acc_t>());
  std::fill(s + span.hi, s + n, neg_inf<acc_t>());
  scale_row(s + span.lo, span.hi - span.lo, in.scale);
  if (in.key_bias != nullptr) add_row(s + span.lo, in.key_bias + (b * g.H + h) * g.Tk + j0 + span.lo, span.hi - span.lo);
  mod.add_bias(b, h, p, j0 + span.lo, span.hi - span.lo, s + span.lo);
  if (in.key_valid != nullptr) {
    const bool* valid = in.key_valid + b * g.Tk + j0;
    for (int64_t c = span.lo; c < span.hi; ++c)
      if (!valid[c]) s[c] = neg_inf<acc_t>();
  }
  return span;
}

// p[c] *= keep(b, h, i, j0 + c) / (1 - dropout_p).
template <typename acc_t>
void apply_dropout(const DropoutMask& dropout, int64_t b, int64_t h, int64_t i, int64_t j0, int64_t n, acc_t* p) {
  const acc_t keep_scale = static_cast<acc_t>(dropout.keep_scale);
  for (int64_t c = 0; c < n; ++c) p[c] = dropout.keep(b, h, i, j0 + c) ? p[c] * keep_scale : acc_t(0);
}

// ----------------------------------------------------------------------------------- forward

template <typename acc_t>
struct ForwardScratch {
  int64_t ld_q, ld_v;
  std::vector<acc_t> q, scores, out, row_max, row_sum;  // (bm, ld_q), (bm, kBlockN), (bm, ld_v), (bm), (bm)
  ForwardScratch(int64_t bm, int64_t D, int64_t Dv)
      : ld_q(padded<acc_t>(D)), ld_v(padded<acc_t>(Dv)), q(bm * ld_q), scores(bm * kBlockN), out(bm * ld_v),
        row_max(bm), row_sum(bm) {}
};

// Every (b, h)'s keys transposed to (D, ld_keys) and values to (Tk, ld_values), in the
// accumulation dtype, so the score and output GEMMs read unit-stride padded rows.
template <typename acc_t>
struct PackedKeysValues {
  int64_t ld_keys, ld_values, D, Tk;
  std::vector<acc_t> keys_t, values;

  template <typename scalar_t>
  PackedKeysValues(const AttentionInputs<scalar_t, acc_t>& in)
      : ld_keys(in.geo.Tk + vec_size<acc_t>()), ld_values(padded<acc_t>(in.geo.Dv)), D(in.geo.D), Tk(in.geo.Tk),
        keys_t(in.geo.B * in.geo.H * in.geo.D * ld_keys, acc_t(0)),
        values(in.geo.B * in.geo.H * in.geo.Tk * ld_values) {
    const auto& g = in.geo;
    at::parallel_for(0, g.B * g.H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t b = bh / g.H, h = bh % g.H;
        load_rows_transposed<scalar_t>([&](int64_t j) { return in.k.row(b, h, j); }, g.Tk, g.D, key_block(bh, 0),
                                       ld_keys);
        load_rows<scalar_t>([&](int64_t j) { return in.v.row(b, h, j); }, g.Tk, g.Dv, value_rows(bh, 0), ld_values);
      }
    });
  }
  const acc_t* key_block(int64_t bh, int64_t j0) const { return keys_t.data() + bh * D * ld_keys + j0; }
  acc_t* key_block(int64_t bh, int64_t j0) { return keys_t.data() + bh * D * ld_keys + j0; }
  const acc_t* value_rows(int64_t bh, int64_t j0) const { return values.data() + (bh * Tk + j0) * ld_values; }
  acc_t* value_rows(int64_t bh, int64_t j0) { return values.data() + (bh * Tk + j0) * ld_values; }
};

// Folds score row s[0, n) into the running (max, sum) of its query row and turns s into
// unnormalised probabilities; rescales the output row when the running max grows.
template <typename acc_t>
void online_softmax_step(acc_t* s, int64_t n, acc_t& run_max, acc_t& run_sum, acc_t* out_row, int64_t ld_v) {
  const acc_t new_max = std::max(run_max, row_max(s, n));
  if (new_max == neg_inf<acc_t>()) {
    std::fill(s, s + n, acc_t(0));
    return;
  }
  if (new_max != run_max) {
    const acc_t factor = std::exp(run_max - new_max);
    run_sum *= factor;
    scale_row(out_row, ld_v, factor);
    run_max = new_max;
  }
  run_sum += exp_shifted_sum(s, n, new_max);
}

template <typename scalar_t, typename acc_t, typename Mod>
void forward_tile(const AttentionInputs<scalar_t, acc_t>& in, const Mod& mod, const PackedKeysValues<acc_t>& kv,
                  const KeyValidity& validity, int64_t bh, int64_t i0, int64_t m, ForwardScratch<acc_t>& sc,
                  scalar_t* out, acc_t* lse) {
  const auto& g = in.geo;
  const int64_t b = bh / g.H, h = bh % g.H;
  load_rows<scalar_t>([&](int64_t r) { return in.q.row(b, h, i0 + r); }, m, g.D, sc.q.data(), sc.ld_q);
  std::fill(sc.out.begin(), sc.out.end(), acc_t(0));
  std::fill(sc.row_max.begin(), sc.row_max.end(), neg_inf<acc_t>());
  std::fill(sc.row_sum.begin(), sc.row_sum.end(), acc_t(0));
  const int64_t key_lo = g.first_key(g.position(i0)), key_hi = g.last_key(g.position(i0 + m - 1));
  for (int64_t j0 = key_lo; j0 <= key_hi; j0 += kBlockN) {
    const int64_t n = std::min(kBlockN, key_hi + 1 - j0);
    if (!validity.any(b, j0, j0 + n)) continue;
    gemm(m, padded<acc_t>(n), g.D, sc.q.data(), sc.ld_q, kv.key_block(bh, j0), kv.ld_keys, sc.scores.data(), kBlockN,
         false);
    for (int64_t r = 0; r < m; ++r) {
      acc_t* s = sc.scores.data() + r * kBlockN;
      finish_scores(in, mod, b, h, g.position(i0 + r), j0, n, s);
      online_softmax_step(s, n, sc.row_max[r], sc.row_sum[r], sc.out.data() + r * sc.ld_v, sc.ld_v);
      if (in.dropout.active) apply_dropout(in.dropout, b, h, i0 + r, j0, n, s);
    }
    gemm(m, sc.ld_v, n, sc.scores.data(), kBlockN, kv.value_rows(bh, j0), kv.ld_values, sc.out.data(), sc.ld_v, true);
  }
  for (int64_t r = 0; r < m; ++r) {
    const acc_t sum = sc.row_sum[r];
    const int64_t row = bh * g.Tq + i0 + r;
    store_row(sc.out.data() + r * sc.ld_v, g.Dv, sum > 0 ? acc_t(1) / sum : acc_t(0), out + row * g.Dv);
    lse[row] = sum > 0 ? sc.row_max[r] + std::log(sum) : neg_inf<acc_t>();
  }
}

// out (B, H, Tq, Dv) contiguous in the input dtype, lse (B, H, Tq) in the accumulation dtype.
template <typename scalar_t, typename acc_t, typename Mod>
void attention_forward(const AttentionInputs<scalar_t, acc_t>& in, const Mod& mod, scalar_t* out, acc_t* lse) {
  const auto& g = in.geo;
  const PackedKeysValues<acc_t> kv(in);
  const KeyValidity validity(in.key_valid, g.B, g.Tk);
  const int64_t bm = g.block_m(), n_tiles = (g.Tq + bm - 1) / bm;
  parallel_round_robin(
      g.B * g.H * n_tiles, [&] { return ForwardScratch<acc_t>(bm, g.D, g.Dv); },
      [&](int64_t task, ForwardScratch<acc_t>& sc) {
        const int64_t i0 = (task % n_tiles) * bm;
        forward_tile(in, mod, kv, validity, task / n_tiles, i0, std::min(bm, g.Tq - i0), sc, out, lse);
      });
}

// ---------------------------------------------------------------------------------- backward

template <typename acc_t>
struct BackwardScratch {
  int64_t bm, ld_d, ld_v, ld_keys;
  std::vector<acc_t> keys, keys_t, values_t;    // (Tk, ld_d), (D, ld_keys), (Dv, ld_keys)
  std::vector<acc_t> dkeys, dvalues;            // (Tk, ld_d), (Tk, ld_v)
  std::vector<acc_t> q, grad_out, dq;           // (bm, ld_d), (bm, ld_v), (bm, ld_d)
  std::vector<acc_t> probs, dscores;            // (bm, kBlockN): P, then dP -> dS
  std::vector<acc_t> probs_t, dscores_t;        // (kBlockN, bm): dropped-out P^T and dS^T
  BackwardScratch(const AttentionGeometry& g, int64_t bm_)
      : bm(bm_), ld_d(padded<acc_t>(g.D)), ld_v(padded<acc_t>(g.Dv)), ld_keys(g.Tk + vec_size<acc_t>()),
        keys(g.Tk * ld_d), keys_t(g.D * ld_keys, acc_t(0)), values_t(g.Dv * ld_keys, acc_t(0)), dkeys(g.Tk * ld_d),
        dvalues(g.Tk * ld_v), q(bm * ld_d), grad_out(bm * ld_v), dq(bm * ld_d), probs(bm * kBlockN),
        dscores(bm * kBlockN), probs_t(kBlockN * bm), dscores_t(kBlockN * bm) {}
};

// Recomputes P for one query row of a key block from its saved lse, and turns dP (in ds) into
// dS = P * (dP * keep - delta); stores the transposes of dropped-out P and dS in column r.
template <typename scalar_t, typename acc_t, typename Mod>
void backward_row(const AttentionInputs<scalar_t, acc_t>& in, const BackwardInputs<scalar_t, acc_t>& bw,
                  const Mod& mod, int64_t b, int64_t h, int64_t i, int64_t j0, int64_t n, int64_t r,
                  BackwardScratch<acc_t>& sc, acc_t* dkey_bias, acc_t* mod_partial) {
  const auto& g = in.geo;
  const int64_t row = (b * g.H + h) * g.Tq + i, p = g.position(i);
  acc_t* s = sc.probs.data() + r * kBlockN;
  acc_t* ds = sc.dscores.data() + r * kBlockN;
  const acc_t row_lse = bw.lse[row];
  const Span span = finish_scores(in, mod, b, h, p, j0, n, s);
  if (span.empty() || row_lse == neg_inf<acc_t>()) {
    for (int64_t c = 0; c < n; ++c) sc.probs_t[c * sc.bm + r] = sc.dscores_t[c * sc.bm + r] = ds[c] = acc_t(0);
    return;
  }
  exp_shifted_sum(s, n, row_lse);
  const acc_t delta = bw.delta[row];
  const acc_t keep_scale = static_cast<acc_t>(in.dropout.keep_scale);
  for (int64_t c = 0; c < n; ++c) {
    const acc_t keep = !in.dropout.active ? acc_t(1) : in.dropout.keep(b, h, i, j0 + c) ? keep_scale : acc_t(0);
    const acc_t dscore = s[c] * (ds[c] * keep - delta);
    sc.probs_t[c * sc.bm + r] = s[c] * keep;
    sc.dscores_t[c * sc.bm + r] = dscore;
    ds[c] = dscore;
  }
  if (dkey_bias != nullptr) add_row(dkey_bias + j0 + span.lo, ds + span.lo, span.hi - span.lo);
  mod.accumulate_grad(b, h, p, j0 + span.lo, span.hi - span.lo, ds + span.lo, mod_partial);
}

template <typename scalar_t, typename acc_t, typename Mod>
void backward_block(const AttentionInputs<scalar_t, acc_t>& in, const BackwardInputs<scalar_t, acc_t>& bw,
                    const Mod& mod, int64_t b, int64_t h, int64_t i0, int64_t m, int64_t j0, int64_t n,
                    BackwardScratch<acc_t>& sc, acc_t* dkey_bias, acc_t* mod_partial) {
  const auto& g = in.geo;
  const int64_t n_padded = padded<acc_t>(n);
  gemm(m, n_padded, g.D, sc.q.data(), sc.ld_d, sc.keys_t.data() + j0, sc.ld_keys, sc.probs.data(), kBlockN, false);
  gemm(m, n_padded, g.Dv, sc.grad_out.data(), sc.ld_v, sc.values_t.data() + j0, sc.ld_keys, sc.dscores.data(),
       kBlockN, false);
  for (int64_t r = 0; r < m; ++r) backward_row(in, bw, mod, b, h, i0 + r, j0, n, r, sc, dkey_bias, mod_partial);
  gemm(m, sc.ld_d, n, sc.dscores.data(), kBlockN, sc.keys.data() + j0 * sc.ld_d, sc.ld_d, sc.dq.data(), sc.ld_d, true);
  gemm(n, sc.ld_d, m, sc.dscores_t.data(), sc.bm, sc.q.data(), sc.ld_d, sc.dkeys.data() + j0 * sc.ld_d, sc.ld_d,
       true);
  gemm(n, sc.ld_v, m, sc.probs_t.data(), sc.bm, sc.grad_out.data(), sc.ld_v, sc.dvalues.data() + j0 * sc.ld_v,
       sc.ld_v, true);
}

template <typename scalar_t, typename acc_t, typename Mod>
void backward_head(const AttentionInputs<scalar_t, acc_t>& in, const BackwardInputs<scalar_t, acc_t>& bw,
                   const Mod& mod, const KeyValidity& validity, int64_t bh, BackwardScratch<acc_t>& sc,
                   const AttentionGrads<scalar_t, acc_t>& grads) {
  const auto& g = in.geo;
  const int64_t b = bh / g.H, h = bh % g.H;
  load_rows<scalar_t>([&](int64_t j) { return in.k.row(b, h, j); }, g.Tk, g.D, sc.keys.data(), sc.ld_d);
  load_rows_transposed<scalar_t>([&](int64_t j) { return in.k.row(b, h, j); }, g.Tk, g.D, sc.keys_t.data(),
                                 sc.ld_keys);
  load_rows_transposed<scalar_t>([&](int64_t j) { return in.v.row(b, h, j); }, g.Tk, g.Dv, sc.values_t.data(),
                                 sc.ld_keys);
  std::fill(sc.dkeys.begin(), sc.dkeys.end(), acc_t(0));
  std::fill(sc.dvalues.begin(), sc.dvalues.end(), acc_t(0));
  acc_t* dkey_bias = grads.dkey_bias == nullptr ? nullptr : grads.dkey_bias + bh * g.Tk;
  if (dkey_bias != nullptr) std::fill(dkey_bias, dkey_bias + g.Tk, acc_t(0));
  acc_t* mod_partial = grads.mod_partials + bh * mod.grad_size();
  std::fill(mod_partial, mod_partial + mod.grad_size(), acc_t(0));

  for (int64_t i0 = 0; i0 < g.Tq; i0 += sc.bm) {
    const int64_t m = std::min(sc.bm, g.Tq - i0);
    load_rows<scalar_t>([&](int64_t r) { return in.q.row(b, h, i0 + r); }, m, g.D, sc.q.data(), sc.ld_d);
    load_rows<scalar_t>([&](int64_t r) { return bw.grad_out.row(b, h, i0 + r); }, m, g.Dv, sc.grad_out.data(),
                        sc.ld_v);
    std::fill(sc.dq.begin(), sc.dq.end(), acc_t(0));
    const int64_t key_lo = g.first_key(g.position(i0)), key_hi = g.last_key(g.position(i0 + m - 1));
    for (int64_t j0 = key_lo; j0 <= key_hi; j0 += kBlockN) {
      const int64_t n = std::min(kBlockN, key_hi + 1 - j0);
      if (validity.any(b, j0, j0 + n)) backward_block(in, bw, mod, b, h, i0, m, j0, n, sc, dkey_bias, mod_partial);
    }
    for (int64_t r = 0; r < m; ++r)
      store_row(sc.dq.data() + r * sc.ld_d, g.D, in.scale, grads.dq + (bh * g.Tq + i0 + r) * g.D);
  }
  for (int64_t j = 0; j < g.Tk; ++j) {
    store_row(sc.dkeys.data() + j * sc.ld_d, g.D, in.scale, grads.dk + (bh * g.Tk + j) * g.D);
    store_row(sc.dvalues.data() + j * sc.ld_v, g.Dv, acc_t(1), grads.dv + (bh * g.Tk + j) * g.Dv);
  }
}

template <typename scalar_t, typename acc_t, typename Mod>
void attention_backward(const AttentionInputs<scalar_t, acc_t>& in, const BackwardInputs<scalar_t, acc_t>& bw,
                        const Mod& mod, const AttentionGrads<scalar_t, acc_t>& grads) {
  const auto& g = in.geo;
  const KeyValidity validity(in.key_valid, g.B, g.Tk);
  parallel_round_robin(
      g.B * g.H, [&] { return BackwardScratch<acc_t>(g, g.block_m()); },
      [&](int64_t bh, BackwardScratch<acc_t>& sc) { backward_head(in, bw, mod, validity, bh, sc, grads); });
}

}  // namespace tempattn::cpu
