// The score modifiers on the device: m_ij from the shared maths (common/score_math.h) and the
// gradient partials of their parameters (params.h, ModParams). Every modifier has
//   float score(b, h, p, j)                     m of query position p and key j (admissible only)
//   void grad(tail, row, b, h, p, j, ok, ds, row_ok)
//                                               warp-collective: folds the dS of this lane's key
//                                               (ok: admissible) into the partials of `row`
//                                               (= bh * Tq + i), written only when row_ok
//   void grad_finish(tail, row, row_ok)         warp-collective, once per row at the end
// Partials are written by one lane per (row, column) in key order: no atomics, fixed order.
#pragma once

#include "common/score_math.h"
#include "cuda/common/device.cuh"

namespace tempattn::cuda {

struct NoModDevice {
  explicit NoModDevice(const ModParams&, int64_t) {}
  __device__ float score(int64_t, int64_t, int64_t, int64_t) const { return 0.f; }
  __device__ void grad(float&, int64_t, int64_t, int64_t, int64_t, int64_t, bool, float, bool) const {}
  __device__ void grad_finish(float, int64_t, bool) const {}
};

// m = rel_bias[h, min(Delta, R - 1)]; dS of offset Delta < R - 1 has one key per row (stored),
// the offsets >= R - 1 share the last column (summed per lane in key order, then over the warp).
struct RelposDevice {
  const float* rel_bias;
  float* band;
  int64_t R;
  explicit RelposDevice(const ModParams& m, int64_t) : rel_bias(m.rel_bias), band(m.partial0), R(m.R) {}
  __device__ float score(int64_t, int64_t h, int64_t p, int64_t j) const {
    return common::relpos_bias(rel_bias, R, h, p - j);
  }
  __device__ void grad(float& tail, int64_t row, int64_t, int64_t, int64_t p, int64_t j, bool ok, float ds,
                       bool) const {
    if (!ok) return;
    const int64_t delta = p - j;
    if (delta < R - 1)
      band[row * R + delta] = ds;
    else
      tail += ds;
  }
  __device__ void grad_finish(float tail, int64_t row, bool row_ok) const {
    const float total = warp_sum(tail);
    if (row_ok && (threadIdx.x & 31) == 0) band[row * R + R - 1] = total;
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
  __device__ void grad(float&, int64_t row, int64_t b, int64_t h, int64_t p, int64_t j, bool ok, float ds,
                       bool row_ok) const {
    const common::DecayHead<float> mix = head(h);
    const float delta = ok ? offset(b, p, j) : 0.f;
    const float m = ok ? mix.log_mix(delta) : 0.f;
    for (int64_t s = 0; s < S; ++s) {
      const float w = ok ? ds * mix.responsibility(s, delta, m) : 0.f;
      const float sum_w = warp_sum(w), sum_w_delta = warp_sum(w * delta);
      if (row_ok && (threadIdx.x & 31) == 0) {
        d_log_a[row * S + s] += sum_w;
        d_log_gamma[row * S + s] += sum_w_delta;
      }
    }
  }
  __device__ void grad_finish(float, int64_t, bool) const {}
};

}  // namespace tempattn::cuda
