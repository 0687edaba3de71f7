// The tiled online-softmax attention core (FlashAttention-2 on the CPU), shared by the three
// operators and specialised by a score modifier `Mod` (see score_mods.h for the concept).
//
// Forward: one task per (b, h, query tile of tile_m rows), run in score blocks of block_m rows by
// block_n keys; blocks outside the causal / window band, or holding only padding, are skipped.
// Unbanded geometries pack every head's keys and values once up front; in a band (causal with a
// window) each task packs just the keys its rows can see; a decoding step (at most kDecodeRows
// query rows) reads them in place. Only out and the row log-sum-exp are written. Backward: one
// task per (b, h, key chunk), a partition that depends on the shape only (KeyChunks). A task walks the query tiles that see its keys in order, recomputing P from the
// saved lse; it owns dK, dV and d key_bias of its keys and writes its own dQ and modifier
// partials, which are then summed in chunk order. So every reduction runs in a fixed order
// whatever the thread count (no atomics on floats). No buffer grows with Tq * Tk.
#pragma once
#include "cpu/common/capability.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "common/band.h"
#include "common/score_math.h"
#include "cpu/common/buffer.h"
#include "cpu/common/philox.h"
#include "cpu/common/vec_utils.h"

namespace tempattn::cpu::CPU_CAPABILITY {


// A (B, H, T, X) tensor read row by row; the last dim has stride 1, the others are free.
template <typename T>
struct RowView {
  T* data = nullptr;
  int64_t stride_b = 0, stride_h = 0, stride_t = 0;
  T* row(int64_t b, int64_t h, int64_t t) const { return data + b * stride_b + h * stride_h + t * stride_t; }
};

// The most query rows of one score block.
constexpr int64_t kMaxBlockRows = 64;

struct AttentionGeometry {
  int64_t B, H, Tq, Tk, D, Dv;
  bool causal;
  int64_t window;  // -1: no window; else clamped to Tk (common::clamp_window)

  // The admissibility-by-index rules and tile ranges, shared with the CUDA kernels (common/band.h).
  common::Band band() const { return {Tq, Tk, causal, window}; }
  // Absolute position of query row i (bottom-right alignment).
  int64_t position(int64_t i) const { return band().position(i); }
  // Inclusive band of keys admissible by index for a query at position p.
  int64_t first_key(int64_t p) const { return band().first_key(p); }
  int64_t last_key(int64_t p) const { return band().last_key(p); }
  // Causal with a window: each query row sees at most window + 1 keys.
  bool banded() const { return band().banded(); }
  // Query rows per score block: narrow bands waste less of each block with fewer rows.
  int64_t block_m() const { return banded() && window <= 128 ? 16 : kMaxBlockRows; }
  // Key columns per score block (a multiple of the vector width vec): in a band, the whole span
  // of one block's rows, up to 256.
  int64_t block_n(int64_t vec) const {
    return banded() ? std::min<int64_t>((block_m() + window + vec - 1) / vec * vec, kMaxRowBiasColumns) : 64;
  }
  // Query rows per forward task; in a band, one pack of keys and values serves them all, so
  // longer tiles pack each key fewer times.
  int64_t tile_m() const { return banded() ? 256 : 64; }
  // Keys one forward task reads in a band.
  int64_t tile_span() const { return std::min(tile_m() + window, Tk); }
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
  RowView<const scalar_t> grad_out, out;  // (B, H, Tq, Dv) each
  const acc_t* grad_lse;                   // (B, H, Tq), or nullptr: lse unused
  const acc_t* lse;                        // (B, H, Tq)
  // Optional (B, H, Tq) normalisation of each row's P (common::RowNorm), which run_backward fills
  // when some row's lse is coarse: then P = exp(s - row_shift) * row_inv_sum, else exp(s - lse).
  const acc_t* row_shift = nullptr;
  const acc_t* row_inv_sum = nullptr;

  common::RowNorm<acc_t> row_norm(int64_t row) const {
    return row_shift == nullptr ? common::row_norm_from_lse(lse[row])
                                : common::RowNorm<acc_t>{row_shift[row], row_inv_sum[row]};
  }
};

// Where attention_forward also writes each row's running max and sum (both (B, H, Tq), or nullptr).
template <typename acc_t>
struct RowStats {
  acc_t* max = nullptr;
  acc_t* sum = nullptr;
};

template <typename scalar_t, typename acc_t>
struct AttentionGrads {
  scalar_t* dq;                // (B, H, Tq, D) contiguous
  scalar_t* dk;                // (B, H, Tk, D) contiguous
  scalar_t* dv;                // (B, H, Tk, Dv) contiguous
  acc_t* dkey_bias = nullptr;  // (B, H, Tk) or nullptr
  double* mod_partials;        // (B, H, mod.grad_size()), float64 whatever acc_t: a long reduction
};

// Whether a key range holds any valid key, from per-batch prefix counts of valid keys.
class KeyValidity {
 public:
  KeyValidity(const bool* key_valid, int64_t B, int64_t Tk) : Tk_(Tk) {
    if (key_valid == nullptr) return;
    prefix_ = Buffer<int64_t>(B * (Tk + 1));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < Tk; ++j)
        prefix_[b * (Tk + 1) + j + 1] = prefix_[b * (Tk + 1) + j] + (key_valid[b * Tk + j] ? 1 : 0);
  }
  bool any(int64_t b, int64_t j0, int64_t j1) const {
    return prefix_.empty() || prefix_[b * (Tk_ + 1) + j1] > prefix_[b * (Tk_ + 1) + j0];
  }

 private:
  int64_t Tk_;
  Buffer<int64_t> prefix_;
};

// Runs run_task(t, scratch) for t in [0, n_tasks), each worker claiming the next task in order
// (so unequal tiles balance), with one scratch from make_scratch() per worker. Every task writes
// its own outputs, so the results do not depend on which worker ran it.
template <typename MakeScratch, typename RunTask>
void parallel_tasks(int64_t n_tasks, const MakeScratch& make_scratch, const RunTask& run_task) {
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n_tasks));
  std::atomic<int64_t> next{0};
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    auto scratch = make_scratch();
    for (int64_t t = next++; t < n_tasks; t = next++) run_task(t, scratch);
  });
}

// Admissible columns [lo, hi) of a score row over keys [j0, j0 + n).
struct Span {
  int64_t lo, hi;
  bool empty() const { return hi <= lo; }
};

// x + key_bias[c, c + W), reading only the key_left columns that exist at the end of the row.
template <typename acc_t>
at::vec::Vectorized<acc_t> add_key_bias(at::vec::Vectorized<acc_t> x, const acc_t* key_bias, int64_t c,
                                        int64_t key_left) {
  using Vec = at::vec::Vectorized<acc_t>;
  if (key_bias == nullptr) return x;
  if (c + Vec::size() <= key_left) return x + Vec::loadu(key_bias + c);
  return x + Vec::loadu(key_bias + c, static_cast<int>(key_left - c));
}

// Sets the span's padded keys to -inf and writes the row max to *max_out: the finished pass's own
// max (loop_max(), computed only when needed) unless padding changed the row.
template <typename scalar_t, typename acc_t, typename LoopMax>
void mask_padding_and_report_max(const AttentionInputs<scalar_t, acc_t>& in, int64_t b, int64_t j0, Span span,
                                 acc_t* s, int64_t n, acc_t* max_out, const LoopMax& loop_max) {
  if (in.key_valid != nullptr) {
    const bool* valid = in.key_valid + b * in.geo.Tk + j0;
    for (int64_t c = span.lo; c < span.hi; ++c)
      if (!valid[c]) s[c] = neg_inf<acc_t>();
    if (max_out != nullptr) *max_out = row_max(s, n);
  } else if (max_out != nullptr) {
    *max_out = loop_max();
  }
}

// Turns the raw dot products s[0, n) of query row (b, h, position p) against keys [j0, j0 + n)
// into final scores: scale, key bias, modifier, and -inf outside the band or on padding; one
// vectorised pass over the whole vectors [0, padded(n)) (the score rows are padded; columns past
// n become -inf). Writes the row's max score to *max_out.
template <typename scalar_t, typename acc_t, typename Mod>
Span finish_scores(const AttentionInputs<scalar_t, acc_t>& in, const Mod& mod, int64_t b, int64_t h, int64_t p,
                   int64_t j0, int64_t n, acc_t* s, acc_t* max_out = nullptr) {
  using Vec = at::vec::Vectorized<acc_t>;
  constexpr int64_t W = Vec::size();
  const auto& g = in.geo;
  const int64_t n_padded = padded<acc_t>(n);
  const Span span{std::max<int64_t>(g.first_key(p) - j0, 0), std::min<int64_t>(g.last_key(p) - j0 + 1, n)};
  if (span.empty()) {
    std::fill(s, s + n_padded, neg_inf<acc_t>());
    if (max_out != nullptr) *max_out = neg_inf<acc_t>();
    return span;
  }
  const auto bias = mod.row_bias(b, h, p, j0);
  const acc_t* key_bias = in.key_bias == nullptr ? nullptr : in.key_bias + (b * g.H + h) * g.Tk + j0;
  const int64_t key_left = g.Tk - j0;
#if defined(CPU_CAPABILITY_AVX512)
  // Float rows: lane masks as bit masks, and the max without at::vec::maximum's NaN blends (any
  // NaN is tracked apart and makes the max NaN, as before).
  if constexpr (std::is_same_v<acc_t, float>) {
    static_assert(W == 16);
    const __m512 vscale = _mm512_set1_ps(in.scale), vinf = _mm512_set1_ps(neg_inf<float>());
    __m512 vmax = vinf;
    __mmask16 nan_lanes = 0;
    for (int64_t c = 0; c < n_padded; c += W) {
      Vec x = Vec(_mm512_mul_ps(_mm512_loadu_ps(s + c), vscale));
      x = add_key_bias(x, key_bias, c, key_left);
      x = bias.add(x, c);
      const int64_t from = std::clamp<int64_t>(span.lo - c, 0, W), to = std::clamp<int64_t>(span.hi - c, 0, W);
      const __mmask16 keep = static_cast<__mmask16>(((1u << to) - 1u) & ~((1u << from) - 1u));
      const __m512 y = _mm512_mask_mov_ps(vinf, keep, __m512(x));
      _mm512_storeu_ps(s + c, y);
      nan_lanes |= _mm512_cmp_ps_mask(y, y, _CMP_UNORD_Q);
      vmax = _mm512_max_ps(vmax, y);
    }
    mask_padding_and_report_max(in, b, j0, span, s, n, max_out, [&] {
      return nan_lanes != 0 ? std::numeric_limits<float>::quiet_NaN() : _mm512_reduce_max_ps(vmax);
    });
    return span;
  }
#endif
  const Vec vlo(static_cast<acc_t>(span.lo)), vhi(static_cast<acc_t>(span.hi)), vscale(in.scale), vinf(neg_inf<acc_t>());
  Vec vmax = vinf;
  for (int64_t c = 0; c < n_padded; c += W) {
    Vec x = Vec::loadu(s + c) * vscale;
    x = add_key_bias(x, key_bias, c, key_left);
    x = bias.add(x, c);
    const Vec col = Vec::arange(static_cast<acc_t>(c), acc_t(1));
    x = Vec::blendv(vinf, x, (col >= vlo) & (col < vhi));
    x.store(s + c);
    vmax = at::vec::maximum(vmax, x);
  }
  mask_padding_and_report_max(in, b, j0, span, s, n, max_out, [&] {
    return at::vec::vec_reduce_all<acc_t>([](const Vec& a, const Vec& c) { return at::vec::maximum(a, c); }, vmax);
  });
  return span;
}

// p[c] *= keep(b, h, i, j0 + c) / (1 - dropout_p).
template <typename acc_t>
void apply_dropout(const DropoutMask& dropout, int64_t b, int64_t h, int64_t i, int64_t j0, int64_t n, acc_t* p) {
  const acc_t keep_scale = static_cast<acc_t>(dropout.keep_scale);
  for (int64_t c = 0; c < n; ++c) p[c] = dropout.keep(b, h, i, j0 + c) ? p[c] * keep_scale : acc_t(0);
}

// ----------------------------------------------------------------------------------- forward

// Keys [j_base, ...) of one (b, h), keys transposed to (D, ld_keys) and values to (rows, ld_values)
// in the accumulation dtype, so the score and output GEMMs read unit-stride padded rows. When
// decoding, keys_t is null and the scores read the key rows in place (keys, ld_keys = their stride).
template <typename acc_t>
struct KeyValuePanel {
  const acc_t* keys_t;
  const acc_t* values;
  int64_t ld_keys, ld_values, j_base;
  const acc_t* keys = nullptr;
  const acc_t* key_block(int64_t j0) const { return keys_t + (j0 - j_base); }
  const acc_t* key_rows(int64_t j0) const { return keys + (j0 - j_base) * ld_keys; }
  const acc_t* value_rows(int64_t j0) const { return values + (j0 - j_base) * ld_values; }
};

// Values in the accumulation dtype with whole vectors per row feed the output GEMM unpacked.
template <typename scalar_t, typename acc_t>
bool reads_values_in_place(const AttentionGeometry& g) {
  return std::is_same_v<scalar_t, acc_t> && g.Dv % vec_size<acc_t>() == 0;
}

// The most query rows of a call that reads keys in place rather than packing them.
constexpr int64_t kDecodeRows = 4;

// A few query rows against unbanded keys (a decoding step with a key/value cache): each key is
// used by so few rows that packing its transpose would cost more than the dot products, so the
// scores read the key rows and the output GEMM the value rows where they are.
template <typename scalar_t, typename acc_t>
bool decodes_in_place(const AttentionGeometry& g) {
  return !g.banded() && g.Tq <= kDecodeRows && reads_values_in_place<scalar_t, acc_t>(g);
}

// s[r][c] = q_r . k_c for r < m, c < n over D columns: q rows (ld_q, zero past D), key rows at
// stride ld_k, read in place. Columns [n, padded(n)) of s are set to 0 (the score pass reads whole
// vectors and masks them).
template <typename acc_t>
void dot_rows(int64_t m, int64_t n, int64_t D, const acc_t* q, int64_t ld_q, const acc_t* k, int64_t ld_k, acc_t* s,
              int64_t ld_s) {
  using Vec = at::vec::Vectorized<acc_t>;
  constexpr int64_t W = Vec::size();
  for (int64_t c = 0; c < n; ++c) {
    const acc_t* key = k + c * ld_k;
    for (int64_t r = 0; r < m; ++r) {
      Vec acc(acc_t(0));
      for (int64_t d = 0; d < D; d += W) {
        const Vec kv = d + W <= D ? Vec::loadu(key + d) : Vec::loadu(key + d, static_cast<int>(D - d));
        acc = at::vec::fmadd(Vec::loadu(q + r * ld_q + d), kv, acc);
      }
      s[r * ld_s + c] = at::vec::vec_reduce_all<acc_t>(std::plus<Vec>(), acc);
    }
  }
  for (int64_t r = 0; r < m; ++r) std::fill(s + r * ld_s + n, s + r * ld_s + padded<acc_t>(n), acc_t(0));
}

// Packs keys and values [j_lo, j_lo + n) of (b, h) into keys_t (D, ld_keys) and values (n, ld_values).
template <typename scalar_t, typename acc_t>
KeyValuePanel<acc_t> pack_keys_values(const AttentionInputs<scalar_t, acc_t>& in, int64_t b, int64_t h, int64_t j_lo,
                                      int64_t n, acc_t* keys_t, int64_t ld_keys, acc_t* values, int64_t ld_values) {
  const auto& g = in.geo;
  load_rows_transposed<scalar_t>([&](int64_t j) { return in.k.row(b, h, j_lo + j); }, n, g.D, keys_t, ld_keys);
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    if (reads_values_in_place<scalar_t, acc_t>(g)) return {keys_t, in.v.row(b, h, j_lo), ld_keys, in.v.stride_t, j_lo};
  }
  load_rows<scalar_t>([&](int64_t j) { return in.v.row(b, h, j_lo + j); }, n, g.Dv, values, ld_values);
  return {keys_t, values, ld_keys, ld_values, j_lo};
}

// Every (b, h)'s keys and values packed up front, for the unbanded geometries where each key
// serves many query tiles.
template <typename acc_t>
struct PackedKeysValues {
  Buffer<acc_t> keys_t, values;              // (B * H, D, Tk + vec), (B * H, Tk, ld_values) or none
  std::vector<KeyValuePanel<acc_t>> panels;  // (B * H)

  template <typename scalar_t>
  PackedKeysValues(const AttentionInputs<scalar_t, acc_t>& in) {
    const auto& g = in.geo;
    const int64_t ld_keys = g.Tk + vec_size<acc_t>(), ld_values = padded<acc_t>(g.Dv);
    // Every row and column is written below: the packs need no zeroing pass.
    keys_t = Buffer<acc_t>::uninitialized(g.B * g.H * g.D * ld_keys);
    if (!reads_values_in_place<scalar_t, acc_t>(g))
      values = Buffer<acc_t>::uninitialized(g.B * g.H * g.Tk * ld_values);
    panels.resize(g.B * g.H);
    at::parallel_for(0, g.B * g.H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bh = begin; bh < end; ++bh) {
        acc_t* head_keys_t = keys_t.data() + bh * g.D * ld_keys;
        for (int64_t d = 0; d < g.D; ++d)
          std::fill(head_keys_t + d * ld_keys + g.Tk, head_keys_t + (d + 1) * ld_keys, acc_t(0));
        panels[bh] = pack_keys_values(in, bh / g.H, bh % g.H, 0, g.Tk, head_keys_t, ld_keys,
                                      values.empty() ? nullptr : values.data() + bh * g.Tk * ld_values, ld_values);
      }
    });
  }
};

template <typename acc_t>
struct ForwardScratch {
  int64_t ld_q, ld_v, block_n, ld_keys;
  std::vector<acc_t> q, out, row_max, row_sum;  // (tile_m, ld_q), (tile_m, ld_v), (tile_m), (tile_m)
  std::vector<acc_t> scores;                    // (block_m, block_n)
  std::vector<acc_t> keys_t, values;            // banded only: the tile's (D, ld_keys), (span, ld_v)
  ForwardScratch(const AttentionGeometry& g)
      : ld_q(padded<acc_t>(g.D)), ld_v(padded<acc_t>(g.Dv)), block_n(g.block_n(vec_size<acc_t>())),
        ld_keys(g.banded() ? padded<acc_t>(g.tile_span()) + block_n : 0), q(g.tile_m() * ld_q),
        out(g.tile_m() * ld_v), row_max(g.tile_m()), row_sum(g.tile_m()), scores(g.block_m() * block_n),
        keys_t(g.D * ld_keys, acc_t(0)), values(g.banded() ? g.tile_span() * ld_v : 0) {}
};

// Folds score row s[0, n), whose max is s_max, into the running (max, sum) of its query row and turns s into
// unnormalised probabilities; rescales the output row when the running max grows.
template <typename acc_t>
void online_softmax_step(acc_t* s, int64_t n, acc_t s_max, acc_t& run_max, acc_t& run_sum, acc_t* out_row,
                         int64_t ld_v) {
  // The row rules (common/score_math.h): the factor may underflow to 0 when the max jumps (a -1e4
  // key bias, a strong decay), and a NaN max makes it NaN, which reaches the output and lse.
  const acc_t new_max = common::softmax_new_max(run_max, s_max);
  if (new_max == neg_inf<acc_t>()) {
    std::fill(s, s + n, acc_t(0));
    return;
  }
  if (!(new_max == run_max)) {
    const acc_t factor = common::softmax_rescale(run_max, new_max);
    run_sum *= factor;
    scale_row(out_row, ld_v, factor);
    run_max = new_max;
  }
  run_sum += exp_shifted_sum(s, n, new_max);
}

// out rows (m, ld_v) += P rows (m, ld_p) of query rows [i0, i0 + m) times values [j0, j0 + n),
// over just the columns these rows can see (P is zero outside them), to skip the band's corners.
template <typename acc_t>
void accumulate_values(const AttentionGeometry& g, const KeyValuePanel<acc_t>& kv, int64_t j0, int64_t n, int64_t i0,
                       int64_t m, const acc_t* p, int64_t ld_p, acc_t* out, int64_t ld_v) {
  const common::Range keys = g.band().keys_of_rows(i0, i0 + m);
  const int64_t lo = std::max<int64_t>(keys.lo - j0, 0), hi = std::min<int64_t>(keys.hi - j0, n);
  if (hi > lo) gemm(m, ld_v, hi - lo, p + lo, ld_p, kv.value_rows(j0 + lo), kv.ld_values, out, ld_v, true);
}

// Query rows [i0, i0 + m) of (b, h), whose q rows sit at sc.q row r0 on, against their admissible
// key blocks: folds them into the running max / sum / out rows of the scratch from row r0 on.
template <typename scalar_t, typename acc_t, typename Mod>
void forward_rows(const AttentionInputs<scalar_t, acc_t>& in, const Mod& mod, const KeyValuePanel<acc_t>& kv,
                  const KeyValidity& validity, int64_t b, int64_t h, int64_t i0, int64_t m, int64_t r0,
                  ForwardScratch<acc_t>& sc) {
  const auto& g = in.geo;
  const int64_t bn = sc.block_n;
  const common::Range keys = g.band().keys_of_rows(i0, i0 + m);
  const int64_t key_lo = keys.lo, key_hi = keys.hi - 1;
  for (int64_t j0 = key_lo; j0 <= key_hi; j0 += bn) {
    const int64_t n = std::min(bn, key_hi + 1 - j0);
    if (!validity.any(b, j0, j0 + n)) continue;
    if (kv.keys_t != nullptr)
      gemm(m, padded<acc_t>(n), g.D, sc.q.data() + r0 * sc.ld_q, sc.ld_q, kv.key_block(j0), kv.ld_keys,
           sc.scores.data(), bn, false);
    else
      dot_rows(m, n, g.D, sc.q.data() + r0 * sc.ld_q, sc.ld_q, kv.key_rows(j0), kv.ld_keys, sc.scores.data(), bn);
    // Two passes over the rows, so that the rows' independent dependency chains overlap.
    acc_t block_max[kMaxBlockRows];
    for (int64_t r = 0; r < m; ++r)
      finish_scores(in, mod, b, h, g.position(i0 + r), j0, n, sc.scores.data() + r * bn, &block_max[r]);
    for (int64_t r = 0; r < m; ++r) {
      acc_t* s = sc.scores.data() + r * bn;
      online_softmax_step(s, n, block_max[r], sc.row_max[r0 + r], sc.row_sum[r0 + r],
                          sc.out.data() + (r0 + r) * sc.ld_v, sc.ld_v);
      if (in.dropout.active) apply_dropout(in.dropout, b, h, i0 + r, j0, n, s);
    }
    for (int64_t r = 0; r < m; r += kGemmRows)
      accumulate_values(g, kv, j0, n, i0 + r, std::min<int64_t>(kGemmRows, m - r), sc.scores.data() + r * bn, bn,
                        sc.out.data() + (r0 + r) * sc.ld_v, sc.ld_v);
  }
}

// The keys and values query rows [i0, i0 + m) of (b, h) read: the shared pack, the tensors
// themselves when decoding, or (banded) the span the rows see, packed into the scratch.
template <typename scalar_t, typename acc_t>
KeyValuePanel<acc_t> tile_panel(const AttentionInputs<scalar_t, acc_t>& in, const PackedKeysValues<acc_t>* shared,
                                int64_t b, int64_t h, int64_t i0, int64_t m, ForwardScratch<acc_t>& sc) {
  const auto& g = in.geo;
  if (shared != nullptr) return shared->panels[b * g.H + h];
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    if (decodes_in_place<scalar_t, acc_t>(g))
      return {nullptr, in.v.row(b, h, 0), in.k.stride_t, in.v.stride_t, 0, in.k.row(b, h, 0)};
  }
  const common::Range keys = g.band().keys_of_rows(i0, i0 + m);
  return pack_keys_values(in, b, h, keys.lo, keys.hi - keys.lo, sc.keys_t.data(), sc.ld_keys, sc.values.data(),
                          sc.ld_v);
}

// Query rows [i0, i0 + m), m <= tile_m, of (b, h) = bh, in sub-tiles of block_m rows.
template <typename scalar_t, typename acc_t, typename Mod>
void forward_tile(const AttentionInputs<scalar_t, acc_t>& in, const Mod& mod, const PackedKeysValues<acc_t>* shared,
                  const KeyValidity& validity, int64_t bh, int64_t i0, int64_t m, ForwardScratch<acc_t>& sc,
                  scalar_t* out, acc_t* lse, const RowStats<acc_t>& stats) {
  const auto& g = in.geo;
  const int64_t b = bh / g.H, h = bh % g.H;
  load_rows<scalar_t>([&](int64_t r) { return in.q.row(b, h, i0 + r); }, m, g.D, sc.q.data(), sc.ld_q);
  std::fill(sc.out.begin(), sc.out.end(), acc_t(0));
  std::fill(sc.row_max.begin(), sc.row_max.end(), neg_inf<acc_t>());
  std::fill(sc.row_sum.begin(), sc.row_sum.end(), acc_t(0));
  const KeyValuePanel<acc_t> kv = tile_panel(in, shared, b, h, i0, m, sc);
  for (int64_t r0 = 0; r0 < m; r0 += g.block_m())
    forward_rows(in, mod, kv, validity, b, h, i0 + r0, std::min(g.block_m(), m - r0), r0, sc);
  for (int64_t r = 0; r < m; ++r) {
    const acc_t sum = sc.row_sum[r];
    const int64_t row = bh * g.Tq + i0 + r;
    // The empty-row rule (common/score_math.h): output 0 and lse -inf; a NaN sum propagates.
    store_row(sc.out.data() + r * sc.ld_v, g.Dv, common::softmax_out_scale(sum), out + row * g.Dv);
    lse[row] = common::softmax_lse(sc.row_max[r], sum);
    if (stats.max != nullptr) {
      stats.max[row] = sc.row_max[r];
      stats.sum[row] = sum;
    }
  }
}

// out (B, H, Tq, Dv) contiguous in the input dtype, lse (B, H, Tq) in the accumulation dtype, and
// optionally each row's running max and sum (stats).
template <typename scalar_t, typename acc_t, typename Mod>
void attention_forward(const AttentionInputs<scalar_t, acc_t>& in, const Mod& mod, scalar_t* out, acc_t* lse,
                       const RowStats<acc_t>& stats = {}) {
  const auto& g = in.geo;
  std::optional<PackedKeysValues<acc_t>> shared;
  if (!g.banded() && !decodes_in_place<scalar_t, acc_t>(g)) shared.emplace(in);
  const KeyValidity validity(in.key_valid, g.B, g.Tk);
  const int64_t tm = g.tile_m(), n_tiles = (g.Tq + tm - 1) / tm;
  parallel_tasks(
      g.B * g.H * n_tiles, [&] { return ForwardScratch<acc_t>(g); },
      [&](int64_t task, ForwardScratch<acc_t>& sc) {
        const int64_t i0 = (task % n_tiles) * tm;
        forward_tile(in, mod, shared ? &*shared : nullptr, validity, task / n_tiles, i0, std::min(tm, g.Tq - i0), sc,
                     out, lse, stats);
      });
}

// ---------------------------------------------------------------------------------- backward

// The backward's fixed partition of each (b, h)'s keys into chunks, a function of the shape
// only: enough (b, h, chunk) tasks for 16 threads, chunks of >= 256 keys, and the dQ partials of
// all chunks within 2^24 values. In a narrow band a chunk's dQ partial spans just its keys plus
// the window, so chunks there stay short (kBandChunkKeys), keeping each task's packs
// cache-sized. Chunk c owns dK, dV and d key_bias of keys [k0(c), k1(c)) and writes dQ partials
// for the query rows [i_lo(c), i_hi(c)) that can see them, stacked at dq_offset(c) rows; the
// partials are summed in chunk order afterwards.
constexpr int64_t kBandChunkKeys = 1024;

struct KeyChunks {
  const AttentionGeometry& g;
  int64_t length, count;
  std::vector<int64_t> dq_offsets;  // (count + 1)

  explicit KeyChunks(const AttentionGeometry& geo) : g(geo) {
    const int64_t by_threads = (16 + g.B * g.H - 1) / (g.B * g.H);
    const int64_t by_memory = std::max<int64_t>(1, (int64_t{1} << 24) / (g.B * g.H * g.Tq * std::max<int64_t>(g.D, 1)));
    // A narrow band's partials hold at most 2 * Tq rows whatever the chunk count.
    const bool narrow_band = g.banded() && g.window <= kBandChunkKeys;
    const int64_t by_band = narrow_band ? (g.Tk + kBandChunkKeys - 1) / kBandChunkKeys : 1;
    const int64_t wanted = std::max<int64_t>(
        1, std::min({std::max(by_threads, by_band), (g.Tk + 255) / 256, narrow_band ? g.Tk : by_memory}));
    length = (g.Tk + wanted - 1) / wanted;
    count = (g.Tk + length - 1) / length;
    dq_offsets.assign(count + 1, 0);
    for (int64_t c = 0; c < count; ++c) dq_offsets[c + 1] = dq_offsets[c] + std::max<int64_t>(i_hi(c) - i_lo(c), 0);
  }
  int64_t k0(int64_t c) const { return c * length; }
  int64_t k1(int64_t c) const { return std::min(g.Tk, (c + 1) * length); }
  int64_t i_lo(int64_t c) const { return g.band().rows_of_keys(k0(c), k1(c)).lo; }
  int64_t i_hi(int64_t c) const { return g.band().rows_of_keys(k0(c), k1(c)).hi; }
  int64_t dq_rows() const { return dq_offsets[count]; }
};

template <typename acc_t>
struct BackwardScratch {
  int64_t bm, bn, ld_d, ld_v, ld_keys;
  Buffer<acc_t> keys, keys_t, values_t;         // the chunk's (length, ld_d), (D, ld_keys), (Dv, ld_keys)
  Buffer<acc_t> dkeys, dvalues;                 // (length, ld_d), (length, ld_v)
  std::vector<acc_t> q, grad_out;               // (bm, ld_d), (bm, ld_v)
  std::vector<acc_t> probs, dscores;            // (bm, bn): P, then dropped-out P; dP, then dS
  std::vector<acc_t> delta;                     // (bm): the rows' rowsum(dO * O) - dlse
  BackwardScratch(const AttentionGeometry& g, int64_t length)
      : bm(g.block_m()), bn(g.block_n(vec_size<acc_t>())), ld_d(padded<acc_t>(g.D)), ld_v(padded<acc_t>(g.Dv)),
        ld_keys(length + vec_size<acc_t>()), keys(length * ld_d), keys_t(g.D * ld_keys),
        values_t(g.Dv * ld_keys), dkeys(length * ld_d), dvalues(length * ld_v), q(bm * ld_d),
        grad_out(bm * ld_v), probs(bm * bn), dscores(bm * bn), delta(bm) {}
};

// sc.delta[r] = rowsum(dO * O) - dlse of query rows [i0, i0 + m), whose dO rows are loaded in
// sc.grad_out: FlashAttention-2's backward preprocessing, done where dO is already in cache (a
// chunk recomputes it for its own rows; the same inputs give every chunk the same bits).
template <typename scalar_t, typename acc_t>
void row_deltas(const AttentionGeometry& g, const BackwardInputs<scalar_t, acc_t>& bw, int64_t b, int64_t h,
                int64_t i0, int64_t m, BackwardScratch<acc_t>& sc) {
  for (int64_t r = 0; r < m; ++r) {
    const scalar_t* out = bw.out.row(b, h, i0 + r);
    const acc_t* grad_out = sc.grad_out.data() + r * sc.ld_v;
    acc_t dot = 0;
    for (int64_t c = 0; c < g.Dv; ++c) dot += grad_out[c] * static_cast<acc_t>(out[c]);
    sc.delta[r] = bw.grad_lse == nullptr ? dot : dot - bw.grad_lse[(b * g.H + h) * g.Tq + i0 + r];
  }
}

// ds[c] = p[c] * (ds[c] * keep(c) - delta), then p[c] *= keep(c), for c < n: dS from dP, and the
// dropped-out P that multiplies dO into dV.
template <typename acc_t>
void scores_gradient(const DropoutMask& dropout, int64_t b, int64_t h, int64_t i, int64_t j0, int64_t n, acc_t delta,
                     acc_t* p, acc_t* ds) {
  if (dropout.active) {
    const acc_t keep_scale = static_cast<acc_t>(dropout.keep_scale);
    for (int64_t c = 0; c < n; ++c) {
      const acc_t keep = dropout.keep(b, h, i, j0 + c) ? keep_scale : acc_t(0);
      ds[c] = common::score_grad(p[c], ds[c], keep, delta);
      p[c] *= keep;
    }
    return;
  }
  using Vec = at::vec::Vectorized<acc_t>;
  const Vec vdelta(delta);
  int64_t c = 0;
  for (; c + Vec::size() <= n; c += Vec::size()) (Vec::loadu(p + c) * (Vec::loadu(ds + c) - vdelta)).store(ds + c);
  for (; c < n; ++c) ds[c] = p[c] * (ds[c] - delta);
}

// Recomputes P for one query row of a key block from its saved lse, and turns dP (in ds) into
// dS = P * (dP * keep - delta), leaving the dropped-out P in place of P.
template <typename scalar_t, typename acc_t, typename Mod>
void backward_row(const AttentionInputs<scalar_t, acc_t>& in, const BackwardInputs<scalar_t, acc_t>& bw,
                  const Mod& mod, int64_t b, int64_t h, int64_t i, int64_t j0, int64_t n, int64_t r,
                  BackwardScratch<acc_t>& sc, acc_t* dkey_bias, double* mod_partial) {
  const auto& g = in.geo;
  const int64_t row = (b * g.H + h) * g.Tq + i, p = g.position(i);
  acc_t* s = sc.probs.data() + r * sc.bn;
  acc_t* ds = sc.dscores.data() + r * sc.bn;
  const acc_t row_lse = bw.lse[row];
  const Span span = finish_scores(in, mod, b, h, p, j0, n, s);
  if (span.empty() || row_lse == neg_inf<acc_t>()) {
    std::fill(s, s + n, acc_t(0));
    std::fill(ds, ds + n, acc_t(0));
    return;
  }
  const common::RowNorm<acc_t> norm = bw.row_norm(row);
  exp_shifted_sum(s, n, norm.shift);
  if (norm.inv_sum != acc_t(1))
    for (int64_t c = 0; c < n; ++c) s[c] *= norm.inv_sum;
  scores_gradient(in.dropout, b, h, i, j0, n, sc.delta[r], s, ds);
  if (dkey_bias != nullptr) add_row(dkey_bias + j0 + span.lo, ds + span.lo, span.hi - span.lo);
  mod.accumulate_grad(b, h, p, j0 + span.lo, span.hi - span.lo, ds + span.lo, mod_partial);
}

// Query rows [i0, i0 + m) against keys [j0, j0 + n), which sit at row / column jc of the chunk's
// packs; dQ of the rows accumulates into dq (m, ld_d).
template <typename scalar_t, typename acc_t, typename Mod>
void backward_block(const AttentionInputs<scalar_t, acc_t>& in, const BackwardInputs<scalar_t, acc_t>& bw,
                    const Mod& mod, int64_t b, int64_t h, int64_t i0, int64_t m, int64_t j0, int64_t n, int64_t jc,
                    BackwardScratch<acc_t>& sc, acc_t* dq, acc_t* dkey_bias, double* mod_partial) {
  const auto& g = in.geo;
  const int64_t n_padded = padded<acc_t>(n);
  gemm(m, n_padded, g.D, sc.q.data(), sc.ld_d, sc.keys_t.data() + jc, sc.ld_keys, sc.probs.data(), sc.bn, false);
  gemm(m, n_padded, g.Dv, sc.grad_out.data(), sc.ld_v, sc.values_t.data() + jc, sc.ld_keys, sc.dscores.data(),
       sc.bn, false);
  for (int64_t r = 0; r < m; ++r) backward_row(in, bw, mod, b, h, i0 + r, j0, n, r, sc, dkey_bias, mod_partial);
  gemm(m, sc.ld_d, n, sc.dscores.data(), sc.bn, sc.keys.data() + jc * sc.ld_d, sc.ld_d, dq, sc.ld_d, true);
  gemm_transposed_a(n, sc.ld_d, m, sc.dscores.data(), sc.bn, sc.q.data(), sc.ld_d, sc.dkeys.data() + jc * sc.ld_d,
                    sc.ld_d, true);
  gemm_transposed_a(n, sc.ld_v, m, sc.probs.data(), sc.bn, sc.grad_out.data(), sc.ld_v,
                    sc.dvalues.data() + jc * sc.ld_v, sc.ld_v, true);
}

// Keys [k0, k1) of (b, h) = bh against the query rows [i_lo, i_hi) that can see them: writes
// their dK, dV and d key_bias, the chunk's dQ partial (i_hi - i_lo, ld_d) and its modifier partial.
template <typename scalar_t, typename acc_t, typename Mod>
void backward_chunk(const AttentionInputs<scalar_t, acc_t>& in, const BackwardInputs<scalar_t, acc_t>& bw,
                    const Mod& mod, const KeyValidity& validity, int64_t bh, int64_t k0, int64_t k1, int64_t i_lo,
                    int64_t i_hi, BackwardScratch<acc_t>& sc, const AttentionGrads<scalar_t, acc_t>& grads,
                    acc_t* dq_partial, double* mod_partial) {
  const auto& g = in.geo;
  const int64_t b = bh / g.H, h = bh % g.H, len = k1 - k0;
  const auto key_row = [&](int64_t j) { return in.k.row(b, h, k0 + j); };
  load_rows<scalar_t>(key_row, len, g.D, sc.keys.data(), sc.ld_d);
  load_rows_transposed<scalar_t>(key_row, len, g.D, sc.keys_t.data(), sc.ld_keys);
  load_rows_transposed<scalar_t>([&](int64_t j) { return in.v.row(b, h, k0 + j); }, len, g.Dv, sc.values_t.data(),
                                 sc.ld_keys);
  std::fill(sc.dkeys.begin(), sc.dkeys.end(), acc_t(0));
  std::fill(sc.dvalues.begin(), sc.dvalues.end(), acc_t(0));
  std::fill(dq_partial, dq_partial + std::max<int64_t>(i_hi - i_lo, 0) * sc.ld_d, acc_t(0));
  std::fill(mod_partial, mod_partial + mod.grad_size(), 0.0);
  acc_t* dkey_bias = grads.dkey_bias == nullptr ? nullptr : grads.dkey_bias + bh * g.Tk;
  if (dkey_bias != nullptr) std::fill(dkey_bias + k0, dkey_bias + k1, acc_t(0));

  for (int64_t i0 = i_lo; i0 < i_hi; i0 += sc.bm) {
    const int64_t m = std::min(sc.bm, i_hi - i0);
    load_rows<scalar_t>([&](int64_t r) { return in.q.row(b, h, i0 + r); }, m, g.D, sc.q.data(), sc.ld_d);
    load_rows<scalar_t>([&](int64_t r) { return bw.grad_out.row(b, h, i0 + r); }, m, g.Dv, sc.grad_out.data(),
                        sc.ld_v);
    row_deltas(g, bw, b, h, i0, m, sc);
    const common::Range keys = g.band().keys_of_rows(i0, i0 + m);
    const int64_t key_lo = std::max(k0, keys.lo), key_hi = std::min(k1, keys.hi) - 1;
    for (int64_t j0 = key_lo; j0 <= key_hi; j0 += sc.bn) {
      const int64_t n = std::min(sc.bn, key_hi + 1 - j0);
      if (validity.any(b, j0, j0 + n))
        backward_block(in, bw, mod, b, h, i0, m, j0, n, j0 - k0, sc, dq_partial + (i0 - i_lo) * sc.ld_d, dkey_bias,
                       mod_partial);
    }
  }
  for (int64_t j = 0; j < len; ++j) {
    store_row(sc.dkeys.data() + j * sc.ld_d, g.D, in.scale, grads.dk + (bh * g.Tk + k0 + j) * g.D);
    store_row(sc.dvalues.data() + j * sc.ld_v, g.Dv, acc_t(1), grads.dv + (bh * g.Tk + k0 + j) * g.Dv);
  }
}

// dQ of (b, h) = bh and its modifier partial: the chunks' partials summed in chunk order.
template <typename scalar_t, typename acc_t>
void reduce_chunks(const AttentionInputs<scalar_t, acc_t>& in, const KeyChunks& chunks, int64_t bh, int64_t ld_d,
                   const acc_t* dq_partials, const double* mod_chunk_partials, int64_t grad_size,
                   const AttentionGrads<scalar_t, acc_t>& grads) {
  const auto& g = in.geo;
  std::vector<acc_t> row(ld_d);
  for (int64_t i = 0; i < g.Tq; ++i) {
    if (chunks.count == 1 && chunks.i_lo(0) <= i && i < chunks.i_hi(0)) {  // one partial: stored as it is
      store_row(dq_partials + (bh * chunks.dq_rows() + i - chunks.i_lo(0)) * ld_d, g.D, in.scale,
                grads.dq + (bh * g.Tq + i) * g.D);
      continue;
    }
    std::fill(row.begin(), row.end(), acc_t(0));
    for (int64_t c = 0; c < chunks.count; ++c)
      if (chunks.i_lo(c) <= i && i < chunks.i_hi(c))
        add_row(row.data(), dq_partials + (bh * chunks.dq_rows() + chunks.dq_offsets[c] + i - chunks.i_lo(c)) * ld_d,
                g.D);
    store_row(row.data(), g.D, in.scale, grads.dq + (bh * g.Tq + i) * g.D);
  }
  double* mod_partial = grads.mod_partials + bh * grad_size;
  std::fill(mod_partial, mod_partial + grad_size, 0.0);
  for (int64_t c = 0; c < chunks.count; ++c)
    add_row(mod_partial, mod_chunk_partials + (bh * chunks.count + c) * grad_size, grad_size);
}

template <typename scalar_t, typename acc_t, typename Mod>
void attention_backward(const AttentionInputs<scalar_t, acc_t>& in, const BackwardInputs<scalar_t, acc_t>& bw,
                        const Mod& mod, const AttentionGrads<scalar_t, acc_t>& grads) {
  const auto& g = in.geo;
  const KeyValidity validity(in.key_valid, g.B, g.Tk);
  const KeyChunks chunks(g);
  const int64_t BH = g.B * g.H, ld_d = padded<acc_t>(g.D), grad_size = mod.grad_size();
  // Each chunk zeroes its own partials before accumulating into them.
  auto dq_partials = Buffer<acc_t>::uninitialized(BH * chunks.dq_rows() * ld_d);
  auto mod_chunk_partials = Buffer<double>::uninitialized(BH * chunks.count * grad_size);
  // Chunk-major task order: the heaviest (first) causal chunks of every head start first.
  parallel_tasks(
      BH * chunks.count, [&] { return BackwardScratch<acc_t>(g, chunks.length); },
      [&](int64_t task, BackwardScratch<acc_t>& sc) {
        const int64_t c = task / BH, bh = task % BH;
        backward_chunk(in, bw, mod, validity, bh, chunks.k0(c), chunks.k1(c), chunks.i_lo(c), chunks.i_hi(c), sc,
                       grads, dq_partials.data() + (bh * chunks.dq_rows() + chunks.dq_offsets[c]) * ld_d,
                       mod_chunk_partials.data() + (bh * chunks.count + c) * grad_size);
        // A head of one chunk has all its partials now: reduced in the same task, which saves short
        // sequences (T <= 256) a second pass through the thread pool.
        if (chunks.count == 1)
          reduce_chunks(in, chunks, bh, ld_d, dq_partials.data(), mod_chunk_partials.data(), grad_size, grads);
      });
  if (chunks.count == 1) return;
  at::parallel_for(0, BH, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bh = begin; bh < end; ++bh)
      reduce_chunks(in, chunks, bh, ld_d, dq_partials.data(), mod_chunk_partials.data(), grad_size, grads);
  });
}

}  // namespace tempattn::cpu::CPU_CAPABILITY
