// The score modifiers on the device: m_ij from the shared maths (common/score_math.h) and the
// gradient partials of their parameters (params.h, ModParams). Every modifier has
//   float score(b, h, p, j)            m of query position p and key j (admissible only)
//   template <class Lanes, int kCount>
//   void grad(tail, row, b, h, p, j[kCount], ds[kCount], ok, row_ok)
//                                      collective over the Lanes that share `row` (= bh * Tq + i;
//                                      device.cuh: a warp in the SIMT kernels, a quad in the
//                                      tensor-core ones): folds the dS of this lane's kCount keys
//                                      j[e] (admissible where bit e of ok is set) into the row's
//                                      partials, written only when row_ok
//   template <class Lanes> void grad_finish(tail, row, row_ok)
//                                      collective, once per row at the end
// Partials are written by one lane per (row, column), in a fixed order: no atomics.
#pragma once

#include "common/score_math.h"
#include "cuda/common/device.cuh"

namespace tempattn::cuda {

struct NoModDevice {
  explicit NoModDevice(const ModParams&, int64_t) {}
  __device__ float score(int64_t, int64_t, int64_t, int64_t) const { return 0.f; }
  template <class Lanes, int kCount>
  __device__ void grad(float&, int64_t, int64_t, int64_t, int64_t, const int64_t (&)[kCount], const float (&)[kCount],
                       uint32_t, bool) const {}
  template <class Lanes>
  __device__ void grad_finish(float, int64_t, bool) const {}
};

// m = rel_bias[h, min(Delta, R - 1)]; dS of offset Delta < R - 1 has one key per row (stored by
// the lane holding it), the offsets >= R - 1 share the last column (summed per lane in key order,
// then over the lanes).
struct RelposDevice {
  const float* rel_bias;
  float* band;
  int64_t R;
  explicit RelposDevice(const ModParams& m, int64_t) : rel_bias(m.rel_bias), band(m.partial0), R(m.R) {}
  __device__ float score(int64_t, int64_t h, int64_t p, int64_t j) const {
    return common::relpos_bias(rel_bias, R, h, p - j);
  }
  template <class Lanes, int kCount>
  __device__ void grad(float& tail, int64_t row, int64_t, int64_t, int64_t p, const int64_t (&j)[kCount],
                       const float (&ds)[kCount], uint32_t ok, bool) const {
#pragma unroll
    for (int e = 0; e < kCount; ++e) {
      if (!((ok >> e) & 1u)) continue;
      const int64_t delta = p - j[e];
      if (delta < R - 1)
        band[row * R + delta] = ds[e];
      else
        tail += ds[e];
    }
  }
  template <class Lanes>
  __device__ void grad_finish(float tail, int64_t row, bool row_ok) const {
    const float total = Lanes::sum(tail);
    if (row_ok && Lanes::leader()) band[row * R + R - 1] = total;
  }
};

// m = log(sum_s a_s gamma_s^Delta + eps), Delta from positions or timestamps (clamped at 0).
struct DecayDevice {
  const float* log_a;
  const float* log_gamma;
  const float* times;
  float* d_log_a;
  float* d_log_gamma;
  int64_t S, Tk;
  float log_eps;
  DecayDevice(const ModParams& m, int64_t Tk_)
      : log_a(m.log_a), log_gamma(m.log_gamma), times(m.times), d_log_a(m.partial0), d_log_gamma(m.partial1),
        S(m.S), Tk(Tk_), log_eps(m.log_eps) {}
  __device__ common::DecayHead<float> head(int64_t h) const { return {log_a + h * S, log_gamma + h * S, S, log_eps}; }
  __device__ float offset(int64_t b, int64_t p, int64_t j) const {
    if (times != nullptr) return common::decay_offset(times[b * Tk + p] - times[b * Tk + j]);
    return common::decay_offset(static_cast<float>(p - j));
  }
  __device__ float score(int64_t b, int64_t h, int64_t p, int64_t j) const { return head(h).log_mix(offset(b, p, j)); }
  // d log a_s += sum_j dS r_s and d log_gamma_s += sum_j dS r_s Delta over the lanes' keys.
  template <class Lanes, int kCount>
  __device__ void grad(float&, int64_t row, int64_t b, int64_t h, int64_t p, const int64_t (&j)[kCount],
                       const float (&ds)[kCount], uint32_t ok, bool row_ok) const {
    const common::DecayHead<float> mix = head(h);
    // m of each key; its Delta is recomputed per s rather than kept (keeping both spills in the tensor-core
    // dQ pass).
    float m[kCount];
#pragma unroll
    for (int e = 0; e < kCount; ++e) m[e] = (ok >> e) & 1u ? mix.log_mix(offset(b, p, j[e])) : 0.f;
    for (int64_t s = 0; s < S; ++s) {
      float w = 0.f, w_delta = 0.f;
#pragma unroll
      for (int e = 0; e < kCount; ++e) {
        const float delta = (ok >> e) & 1u ? offset(b, p, j[e]) : 0.f;
        const float we = (ok >> e) & 1u ? ds[e] * mix.responsibility(s, delta, m[e]) : 0.f;
        w += we;
        w_delta += we * delta;
      }
      const float sum_w = Lanes::sum(w), sum_w_delta = Lanes::sum(w_delta);
      if (row_ok && Lanes::leader()) {
        d_log_a[row * S + s] += sum_w;
        d_log_gamma[row * S + s] += sum_w_delta;
      }
    }
  }
  template <class Lanes>
  __device__ void grad_finish(float, int64_t, bool) const {}
};

}  // namespace tempattn::cuda
