// The SIMT attention kernels: FlashAttention-2's tiling (online softmax forward; a dK/dV pass
// over key blocks and a dQ pass over query blocks in the backward, so every output has a single
// writer and no float atomics are needed) with one warp per query row (forward, dQ) or per key
// (dK/dV) and fp32 arithmetic for every input dtype. Scores, the band, the row rules, dropout
// and the modifiers are the shared host/device maths (csrc/common/); only the thread mapping and
// the shared-memory staging here are GPU-only.
//
// A block of kWarps warps handles kWarps consecutive rows (or keys) and stages the tile of kTile
// keys (or query rows) they all read in shared memory, as float32, rows padded by one float so
// that lanes reading down a column hit distinct banks. Head dims (D, Dv) are up to kHeadDim (64, 128
// or 256, the last template argument of every kernel: tools/cuda_check.py reads it): lane l owns
// columns l, l + 32, ... of its row's output / gradient accumulators (kHeadDim / 32 of them).
#pragma once

#include "common/band.h"
#include "common/score_math.h"
#include "cuda/common/device.cuh"
#include "cuda/common/mods.cuh"

namespace tempattn::cuda {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;

// Keys (forward, dQ) or query rows (dK/dV) per staged tile: 16 for the widest heads keeps the
// static shared memory under 48 KiB (two 16 x 257 float tiles plus the per-warp rows).
template <int kHeadDim>
constexpr int simt_tile() {
  return kHeadDim > 128 ? 16 : 32;
}

// Stages rows [t0, t0 + kRows) of (b, h), `cols` columns, into dst (kRows, kLd) float32; rows
// from T on are zeros. Whole block.
template <typename scalar_t, int kRows, int kLd>
__device__ void stage_rows(float* dst, const Rows& src, int64_t b, int64_t h, int64_t t0, int64_t T, int cols) {
  constexpr int ld = kLd;
  for (int idx = threadIdx.x; idx < kRows * cols; idx += kThreads) {
    const int r = idx / cols, c = idx % cols;
    dst[r * ld + c] = t0 + r < T ? to_float(row_ptr<scalar_t>(src, b, h, t0 + r)[c]) : 0.f;
  }
}

// dot of n floats at x and y (ascending order, fused multiply-adds; y staged as float or read in
// its input dtype): every kernel computes a score's dot product with this, so the backward
// recomputes the forward's scores bit for bit.
template <typename Y>
__device__ __forceinline__ float dot(const float* x, const Y* y, int n) {
  float acc = 0.f;
  for (int d = 0; d < n; ++d) acc = fmaf(x[d], to_float(y[d]), acc);
  return acc;
}

// ------------------------------------------------------------------------------------ forward
template <typename scalar_t, typename Mod, int kHeadDim>
__global__ void __launch_bounds__(kThreads, 4) simt_forward_kernel(const ForwardParams p, const Mod mod) {
  constexpr int kChunks = kHeadDim / 32, kTile = simt_tile<kHeadDim>(), kMaxD = kHeadDim;
  __shared__ float keys[kTile * (kMaxD + 1)], values[kTile * (kMaxD + 1)], queries[kWarps * kMaxD];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t n_tiles = (p.Tq + kWarps - 1) / kWarps;
  const TileOfBlock blk = tile_of_block(n_tiles);
  const int64_t b = blk.bh / p.H, h = blk.bh % p.H, i0 = blk.tile * kWarps, i = i0 + warp;
  const bool row_ok = i < p.Tq;
  const int64_t pos = p.band.position(i);
  const int D = static_cast<int>(p.D), Dv = static_cast<int>(p.Dv);
  float* q_row = queries + warp * kMaxD;
  for (int d = lane; d < D; d += 32) q_row[d] = row_ok ? to_float(row_ptr<scalar_t>(p.q, b, h, i)[d]) : 0.f;

  float acc[kChunks];
  for (int t = 0; t < kChunks; ++t) acc[t] = 0.f;
  float run_max = common::neg_infinity<float>(), run_sum = 0.f;
  const common::Range keys_seen = p.band.keys_of_rows(i0, common::hd_min(i0 + kWarps, p.Tq));
  for (int64_t j0 = keys_seen.lo; j0 < keys_seen.hi; j0 += kTile) {
    __syncthreads();  // the previous tile is consumed
    stage_rows<scalar_t, kTile, kMaxD + 1>(keys, p.k, b, h, j0, keys_seen.hi, D);
    stage_rows<scalar_t, kTile, kMaxD + 1>(values, p.v, b, h, j0, keys_seen.hi, Dv);
    // A tile of padding only is skipped (the barrier also publishes the staged tiles).
    const bool valid = threadIdx.x < kTile && j0 + threadIdx.x < keys_seen.hi && key_is_valid(p, b, j0 + threadIdx.x);
    if (!__syncthreads_or(valid)) continue;

    const int64_t j = j0 + lane;
    const bool ok = row_ok && lane < kTile && j < keys_seen.hi && p.band.admits(pos, j) && key_is_valid(p, b, j);
    const float s = ok ? finish_score(p, mod, dot(q_row, keys + lane * (kMaxD + 1), D), b, h, pos, j)
                       : common::neg_infinity<float>();
    // The row rules (common/score_math.h): rescale on a new max, exps from the shift.
    const float new_max = common::softmax_new_max(run_max, warp_max(s));
    const float factor = common::softmax_rescale(run_max, new_max);
    run_sum *= factor;
    for (int t = 0; t < kChunks; ++t) acc[t] *= factor;
    run_max = new_max;
    float prob = ok ? common::hd_exp(s - common::softmax_shift(new_max)) : 0.f;
    run_sum += warp_sum(prob);
    if (ok) prob *= p.dropout.factor<float>(b, h, i, j);
    // out += P V over this tile's admissible keys, in key order (a non-admissible key's value,
    // even a NaN, never reaches the row).
    for (unsigned admitted = __ballot_sync(kFullMask, ok); admitted != 0; admitted &= admitted - 1) {
      const int c = __ffs(admitted) - 1;
      const float pc = __shfl_sync(kFullMask, prob, c);
      const float* v_row = values + c * (kMaxD + 1);
      for (int t = 0; t < kChunks; ++t)
        if (lane + 32 * t < Dv) acc[t] = fmaf(pc, v_row[lane + 32 * t], acc[t]);
    }
  }
  if (!row_ok) return;
  const int64_t row = blk.bh * p.Tq + i;
  const float out_scale = common::softmax_out_scale(run_sum);
  scalar_t* out = static_cast<scalar_t*>(p.out) + row * Dv;
  for (int t = 0; t < kChunks; ++t)
    if (lane + 32 * t < Dv) out[lane + 32 * t] = static_cast<scalar_t>(acc[t] * out_scale);
  if (lane == 0) p.lse[row] = common::softmax_lse(run_max, run_sum);
}

// ------------------------------------------------------------------------- backward prepass
// Each row's normalisation of P (common::RowNorm) into bw.row_shift / bw.row_inv_sum, one warp
// per row: the saved lse for an ordinary row; for a row whose lse is coarse (rare: every key
// biased by -1e4 / -1e9, a huge scale), the row max and 1 / sum of its scores, rerun with the
// backward's own dot one key per lane straight from global memory (no staging, no block barrier:
// a warp of an ordinary row leaves at once), so that the row's P sums to 1 in the backward.
template <typename scalar_t, typename Mod, int kHeadDim>
__global__ void __launch_bounds__(kThreads, 4)
    simt_row_norm_kernel(const ForwardParams p, const BackwardParams bw, const Mod mod) {
  __shared__ float queries[kWarps * kHeadDim];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const TileOfBlock blk = tile_of_block((p.Tq + kWarps - 1) / kWarps);
  const int64_t i = blk.tile * kWarps + warp;
  if (i >= p.Tq) return;
  const int64_t row = blk.bh * p.Tq + i;
  float run_max = common::neg_infinity<float>(), run_sum = 0.f;
  if (common::lse_is_coarse(bw.lse[row])) {  // uniform over the warp
    const int64_t b = blk.bh / p.H, h = blk.bh % p.H, pos = p.band.position(i);
    const int D = static_cast<int>(p.D);
    float* q_row = queries + warp * kHeadDim;
    for (int d = lane; d < D; d += 32) q_row[d] = to_float(row_ptr<scalar_t>(p.q, b, h, i)[d]);
    __syncwarp();
    const common::Range keys = p.band.keys_of_rows(i, i + 1);
    for (int64_t j0 = keys.lo; j0 < keys.hi; j0 += 32) {
      const int64_t j = j0 + lane;
      const bool ok = j < keys.hi && p.band.admits(pos, j) && key_is_valid(p, b, j);
      const float s = ok ? finish_score(p, mod, dot(q_row, row_ptr<scalar_t>(p.k, b, h, j), D), b, h, pos, j)
                         : common::neg_infinity<float>();
      const float new_max = common::softmax_new_max(run_max, warp_max(s));
      run_sum *= common::softmax_rescale(run_max, new_max);
      run_max = new_max;
      run_sum += warp_sum(ok ? common::hd_exp(s - common::softmax_shift(new_max)) : 0.f);
    }
  }
  if (lane == 0) {
    const common::RowNorm<float> norm = common::backward_row_norm(bw.lse[row], run_max, run_sum);
    bw.row_shift[row] = norm.shift;
    bw.row_inv_sum[row] = norm.inv_sum;
  }
}

// ----------------------------------------------------------------------------------- dQ pass
// dQ of one query row per warp, and the modifier's per-row gradient partials. kRedo: only the rows
// of the blocks the tensor-core backward flagged (params.h, RedoFlags), dQ only (its partials, sums
// of dS alone, are exact already).
template <typename scalar_t, typename Mod, bool kRedo, int kHeadDim>
__global__ void __launch_bounds__(kThreads, 4)
    simt_dq_kernel(const ForwardParams p, const BackwardParams bw, const Mod mod) {
  constexpr int kChunks = kHeadDim / 32, kTile = simt_tile<kHeadDim>(), kMaxD = kHeadDim;
  __shared__ float keys[kTile * (kMaxD + 1)], values[kTile * (kMaxD + 1)];
  __shared__ float queries[kWarps * kMaxD], grads[kWarps * kMaxD];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t n_tiles = (p.Tq + kWarps - 1) / kWarps;
  const TileOfBlock blk = tile_of_block(n_tiles);
  const int64_t b = blk.bh / p.H, h = blk.bh % p.H, i0 = blk.tile * kWarps, i = i0 + warp;
  if (kRedo && bw.row_redo.flag(blk.bh, p.Tq, i0) == 0) return;  // the whole block (4 | tile)
  const bool row_ok = i < p.Tq;
  const int64_t pos = p.band.position(i), row = blk.bh * p.Tq + i;
  const int D = static_cast<int>(p.D), Dv = static_cast<int>(p.Dv);
  float* q_row = queries + warp * kMaxD;
  float* do_row = grads + warp * kMaxD;
  for (int d = lane; d < D; d += 32) q_row[d] = row_ok ? to_float(row_ptr<scalar_t>(p.q, b, h, i)[d]) : 0.f;
  for (int d = lane; d < Dv; d += 32) do_row[d] = row_ok ? to_float(row_ptr<scalar_t>(bw.grad_out, b, h, i)[d]) : 0.f;
  const common::RowNorm<float> norm{row_ok ? bw.row_shift[row] : 0.f, row_ok ? bw.row_inv_sum[row] : 0.f};
  const float delta = row_ok ? bw.delta[row] : 0.f;

  float acc[kChunks];
  for (int t = 0; t < kChunks; ++t) acc[t] = 0.f;
  float tail = 0.f;
  const common::Range keys_seen = p.band.keys_of_rows(i0, common::hd_min(i0 + kWarps, p.Tq));
  for (int64_t j0 = keys_seen.lo; j0 < keys_seen.hi; j0 += kTile) {
    __syncthreads();
    stage_rows<scalar_t, kTile, kMaxD + 1>(keys, p.k, b, h, j0, keys_seen.hi, D);
    stage_rows<scalar_t, kTile, kMaxD + 1>(values, p.v, b, h, j0, keys_seen.hi, Dv);
    const bool valid = threadIdx.x < kTile && j0 + threadIdx.x < keys_seen.hi && key_is_valid(p, b, j0 + threadIdx.x);
    if (!__syncthreads_or(valid)) continue;

    const int64_t j = j0 + lane;
    const bool ok = row_ok && lane < kTile && j < keys_seen.hi && p.band.admits(pos, j) && key_is_valid(p, b, j);
    float ds = 0.f;
    if (ok) {
      const float s = finish_score(p, mod, dot(q_row, keys + lane * (kMaxD + 1), D), b, h, pos, j);
      const float dp = dot(do_row, values + lane * (kMaxD + 1), Dv);
      ds = common::score_grad(common::probability(s, norm), dp, p.dropout.factor<float>(b, h, i, j), delta);
    }
    if constexpr (!kRedo) mod.template grad<WarpLanes, 1>(tail, row, b, h, pos, {j}, {ds}, ok ? 1u : 0u, row_ok);
    for (unsigned admitted = __ballot_sync(kFullMask, ok); admitted != 0; admitted &= admitted - 1) {
      const int c = __ffs(admitted) - 1;
      const float dsc = __shfl_sync(kFullMask, ds, c);
      const float* k_row = keys + c * (kMaxD + 1);
      for (int t = 0; t < kChunks; ++t)
        if (lane + 32 * t < D) acc[t] = fmaf(dsc, k_row[lane + 32 * t], acc[t]);
    }
  }
  if constexpr (!kRedo) mod.template grad_finish<WarpLanes>(tail, row, row_ok);
  if (!row_ok) return;
  scalar_t* dq = static_cast<scalar_t*>(bw.dq) + row * D;
  for (int t = 0; t < kChunks; ++t)
    if (lane + 32 * t < D) dq[lane + 32 * t] = static_cast<scalar_t>(acc[t] * p.scale);
}

// ------------------------------------------------------------------------------- dK/dV pass
// dK, dV and d key_bias of one key per warp, over the query rows that see the block's keys. kRedo:
// only the keys of the blocks the tensor-core backward flagged (params.h, RedoFlags).
template <typename scalar_t, typename Mod, bool kRedo, int kHeadDim>
__global__ void __launch_bounds__(kThreads, 4)
    simt_dkdv_kernel(const ForwardParams p, const BackwardParams bw, const Mod mod) {
  constexpr int kChunks = kHeadDim / 32, kTile = simt_tile<kHeadDim>(), kMaxD = kHeadDim;
  __shared__ float queries[kTile * (kMaxD + 1)], grads[kTile * (kMaxD + 1)];
  __shared__ float key_rows[kWarps * kMaxD], value_rows[kWarps * kMaxD], deltas[kTile];
  __shared__ common::RowNorm<float> norms[kTile];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t n_tiles = (p.Tk + kWarps - 1) / kWarps;
  const TileOfBlock blk = tile_of_block(n_tiles);
  const int64_t b = blk.bh / p.H, h = blk.bh % p.H, j0 = blk.tile * kWarps, j = j0 + warp;
  if (kRedo && bw.key_redo.flag(blk.bh, p.Tk, j0) == 0) return;  // the whole block (4 | tile)
  const bool key_ok = j < p.Tk && key_is_valid(p, b, j);
  const int D = static_cast<int>(p.D), Dv = static_cast<int>(p.Dv);
  float* k_row = key_rows + warp * kMaxD;
  float* v_row = value_rows + warp * kMaxD;
  for (int d = lane; d < D; d += 32) k_row[d] = j < p.Tk ? to_float(row_ptr<scalar_t>(p.k, b, h, j)[d]) : 0.f;
  for (int d = lane; d < Dv; d += 32) v_row[d] = j < p.Tk ? to_float(row_ptr<scalar_t>(p.v, b, h, j)[d]) : 0.f;

  float dk[kChunks], dv[kChunks];
  for (int t = 0; t < kChunks; ++t) dk[t] = dv[t] = 0.f;
  float dkb = 0.f;
  const common::Range rows_seen = p.band.rows_of_keys(j0, common::hd_min(j0 + kWarps, p.Tk));
  for (int64_t i0 = rows_seen.lo; i0 < rows_seen.hi; i0 += kTile) {
    __syncthreads();
    stage_rows<scalar_t, kTile, kMaxD + 1>(queries, p.q, b, h, i0, rows_seen.hi, D);
    stage_rows<scalar_t, kTile, kMaxD + 1>(grads, bw.grad_out, b, h, i0, rows_seen.hi, Dv);
    if (threadIdx.x < kTile) {
      const int64_t i = i0 + threadIdx.x;
      norms[threadIdx.x] = i < rows_seen.hi ? common::RowNorm<float>{bw.row_shift[blk.bh * p.Tq + i],
                                                                    bw.row_inv_sum[blk.bh * p.Tq + i]}
                                            : common::RowNorm<float>{0.f, 0.f};
      deltas[threadIdx.x] = i < rows_seen.hi ? bw.delta[blk.bh * p.Tq + i] : 0.f;
    }
    __syncthreads();

    const int64_t i = i0 + lane, pos = p.band.position(i);
    const bool ok = key_ok && lane < kTile && i < rows_seen.hi && p.band.admits(pos, j);
    float ds = 0.f, prob = 0.f;
    if (ok) {
      const float s = finish_score(p, mod, dot(queries + lane * (kMaxD + 1), k_row, D), b, h, pos, j);
      const float dp = dot(grads + lane * (kMaxD + 1), v_row, Dv);
      const float keep = p.dropout.factor<float>(b, h, i, j), pr = common::probability(s, norms[lane]);
      ds = common::score_grad(pr, dp, keep, deltas[lane]);
      prob = pr * keep;
      dkb += ds;
    }
    // dV += P^T dO and dK += dS^T Q over this tile's admissible rows, in row order.
    for (unsigned admitted = __ballot_sync(kFullMask, ok); admitted != 0; admitted &= admitted - 1) {
      const int c = __ffs(admitted) - 1;
      const float pc = __shfl_sync(kFullMask, prob, c), dsc = __shfl_sync(kFullMask, ds, c);
      const float* q_c = queries + c * (kMaxD + 1);
      const float* do_c = grads + c * (kMaxD + 1);
      for (int t = 0; t < kChunks; ++t) {
        if (lane + 32 * t < Dv) dv[t] = fmaf(pc, do_c[lane + 32 * t], dv[t]);
        if (lane + 32 * t < D) dk[t] = fmaf(dsc, q_c[lane + 32 * t], dk[t]);
      }
    }
  }
  dkb = warp_sum(dkb);
  if (j >= p.Tk) return;
  const int64_t key = blk.bh * p.Tk + j;
  scalar_t* dk_out = static_cast<scalar_t*>(bw.dk) + key * D;
  scalar_t* dv_out = static_cast<scalar_t*>(bw.dv) + key * Dv;
  for (int t = 0; t < kChunks; ++t) {
    if (lane + 32 * t < D) dk_out[lane + 32 * t] = static_cast<scalar_t>(dk[t] * p.scale);
    if (lane + 32 * t < Dv) dv_out[lane + 32 * t] = static_cast<scalar_t>(dv[t]);
  }
  if (bw.dkey_bias != nullptr && lane == 0) bw.dkey_bias[key] = dkb;
}

// ---------------------------------------------------------------------------------- launchers
inline unsigned grid_of(int64_t rows, int64_t BH) { return static_cast<unsigned>((rows + kWarps - 1) / kWarps * BH); }

// Calls fn(scalar_t{}, Mod) for the runtime dtype and modifier: one instantiation per pair.
template <typename Fn>
void with_dtype_and_mod(Dtype dtype, const ModParams& m, int64_t Tk, const Fn& fn) {
  const auto with_mod = [&](auto tag) {
    switch (m.kind) {
      case ModKind::kNone: fn(tag, NoModDevice(m, Tk)); break;
      case ModKind::kRelpos: fn(tag, RelposDevice(m, Tk)); break;
      case ModKind::kDecay: fn(tag, DecayDevice(m, Tk)); break;
    }
  };
  switch (dtype) {
    case Dtype::kFloat32: with_mod(float{}); break;
    case Dtype::kFloat16: with_mod(c10::Half{}); break;
    case Dtype::kBFloat16: with_mod(c10::BFloat16{}); break;
  }
}

// The backward's row-norm prepass (common::RowNorm of every row), and its dK/dV and dQ passes
// (kRedo: only the blocks the tensor-core backward flagged).
template <typename scalar_t, typename Mod, int kHeadDim>
void launch_row_norm(const ForwardParams& p, const BackwardParams& bw, const Mod& mod, cudaStream_t stream) {
  TEMPATTN_LAUNCH(grid_of(p.Tq, p.B * p.H), kThreads, stream, (p, bw, mod), simt_row_norm_kernel<scalar_t, Mod, kHeadDim>);
}
template <typename scalar_t, typename Mod, bool kRedo, int kHeadDim>
void launch_simt_grads(const ForwardParams& p, const BackwardParams& bw, const Mod& mod, cudaStream_t stream) {
  TEMPATTN_LAUNCH(grid_of(p.Tk, p.B * p.H), kThreads, stream, (p, bw, mod), simt_dkdv_kernel<scalar_t, Mod, kRedo, kHeadDim>);
  TEMPATTN_LAUNCH(grid_of(p.Tq, p.B * p.H), kThreads, stream, (p, bw, mod), simt_dq_kernel<scalar_t, Mod, kRedo, kHeadDim>);
}

}  // namespace tempattn::cuda

// The definitions of one head-dim bucket's launchers (launch.h), expanded once in its own .cu file.
#define TEMPATTN_SIMT_BUCKET(kHeadDim)                                                                          \
  namespace tempattn::cuda {                                                                                   \
  template <>                                                                                                  \
  void simt_forward<kHeadDim>(const ForwardParams& p, const ModParams& m, Dtype dtype, cudaStream_t stream) {   \
    with_dtype_and_mod(dtype, m, p.Tk, [&](auto tag, auto mod) {                                               \
      TEMPATTN_LAUNCH(grid_of(p.Tq, p.B * p.H), kThreads, stream, (p, mod),                                    \
                      simt_forward_kernel<decltype(tag), decltype(mod), kHeadDim>);                             \
    });                                                                                                        \
  }                                                                                                            \
  template <>                                                                                                  \
  void simt_backward<kHeadDim>(const ForwardParams& p, const BackwardParams& bw, const ModParams& m,            \
                              Dtype dtype, cudaStream_t stream) {                                              \
    with_dtype_and_mod(dtype, m, p.Tk, [&](auto tag, auto mod) {                                               \
      launch_row_norm<decltype(tag), decltype(mod), kHeadDim>(p, bw, mod, stream);                             \
      launch_simt_grads<decltype(tag), decltype(mod), /*kRedo=*/false, kHeadDim>(p, bw, mod, stream);          \
    });                                                                                                        \
  }                                                                                                            \
  }
