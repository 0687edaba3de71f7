// The tensor-core backward for float16 / bfloat16 inputs at head dims up to 128: FlashAttention-2's
// backward with mma.sync.m16n8k16 (fp32 accumulation), in two passes so that every output has a
// single writer and no float atomics are needed (the results are the same bits on every run):
//
//   dK/dV: a block of 4 warps owns kKeys = 64 keys (16 per warp; K and V staged once) and walks
//          the query tiles of kRows rows that see them (common::Band). Per tile, with Q and dO
//          staged: S^T = K Q^T and dP^T = V dO^T from K's and V's A fragments, every score
//          finished, masked and normalised with the shared maths (csrc/common/: band, modifiers,
//          common::RowNorm from the prepass, dropout, dS); then dV += P^T dO and dK += dS^T Q with
//          P^T and dS^T taken straight from the accumulators (the C layout is the next A layout).
//   dQ:    a block owns kQRows = 64 query rows (Q and dO fragments in registers) and walks the key
//          tiles of kQKeys keys: S = Q K^T, dP = dO V^T, dS, then dQ += dS K; the modifier's
//          per-row gradient partials are folded over each row's quad (mods.cuh, QuadLanes).
//
// Both passes read each row's normalisation from the SIMT prepass (simt_row_norm_kernel), exactly
// as the SIMT backward does, so rows whose lse is coarse are renormalised here too.
//
// Non-finite values: S, dP and dS of a (row, key) pair involve that pair's vectors only and are
// zeroed where the pair is not admissible, so d key_bias and the modifier partials are exact. The
// products by Q, dO and K would turn 0 * inf into NaN for keys (rows) that cannot see a non-finite
// row (key); a block whose accumulators end non-finite (rare) flags itself and stores nothing, and
// the SIMT kernels recompute its keys (rows) exactly after it (params.h, RedoFlags).
//
// Head dim 256 keeps the SIMT backward: 16 keys per warp would hold 256 fp32 dK/dV accumulators per
// thread, past the register file.
#pragma once

#include "cuda/common/launch.h"
#include "cuda/common/mma.cuh"
#include "cuda/common/simt.cuh"

namespace tempattn::cuda {

template <int kHeadDim>
struct MmaBackwardShape {
  static_assert(kHeadDim <= 128, "head dim 256 runs the SIMT backward");
  static constexpr int kWarps = 4, kThreads = 32 * kWarps;
  static constexpr int kLd = kHeadDim + 8;              // shared row stride (16-bit elements)
  static constexpr int kKeys = 16 * kWarps;             // dK/dV: keys per block
  static constexpr int kRows = kHeadDim > 64 ? 16 : 32;  // dK/dV: query rows per tile
  static constexpr int kQRows = 16 * kWarps;            // dQ: query rows per block
  static constexpr int kQKeys = kHeadDim > 64 ? 32 : 64;  // dQ: keys per tile
  static_assert((2 * kKeys + 2 * kRows) * kLd * 2 + 3 * kRows * 4 <= 48 * 1024, "static shared memory (dK/dV)");
  static_assert(kQRows <= 2 * kQKeys, "dQ stages Q and dO through its K and V tiles");
  static_assert(kKeys == kMmaBackwardKeys && kQRows == kMmaBackwardRows, "the flags' tiles (launch.h)");
};

// A block's place in the grid and the step counts of its head dims: the block owns tile `blk.tile`
// of `per_block` rows (or keys) of `length`, starting at t0, of head blk.bh = (b, h).
struct MmaBlock {
  int lane, warp;
  int64_t n_tiles;
  TileOfBlock blk;
  int64_t b, h, t0;
  int D, Dv, k_steps, v_steps;  // k steps (of 16) over D and over Dv
  __device__ MmaBlock(const ForwardParams& p, int64_t length, int per_block)
      : lane(threadIdx.x & 31), warp(threadIdx.x >> 5), n_tiles(RedoFlags::tiles(length, per_block)),
        blk(tile_of_block(n_tiles)), b(blk.bh / p.H), h(blk.bh % p.H), t0(blk.tile * per_block),
        D(static_cast<int>(p.D)), Dv(static_cast<int>(p.Dv)), k_steps((D + 15) / 16), v_steps((Dv + 15) / 16) {}
  // Records whether this block's outputs must be redone (params.h, RedoFlags: its tile is the
  // block's per_block); returns it.
  __device__ bool flag_redo(const RedoFlags& redo, bool bad) const {
    const bool any = __syncthreads_or(bad);
    if (threadIdx.x == 0) redo.flag_of_tile(blk.bh, n_tiles, blk.tile) = any ? 1 : 0;
    return any;
  }
};

// ------------------------------------------------------------------------------- dK/dV pass
template <typename scalar_t, typename Mod, int kHeadDim>
__global__ void __launch_bounds__(MmaBackwardShape<kHeadDim>::kThreads, 1)
    mma_dkdv_kernel(const ForwardParams p, const BackwardParams bw, const Mod mod) {
  using Shape = MmaBackwardShape<kHeadDim>;
  constexpr int kKeys = Shape::kKeys, kRows = Shape::kRows, kLd = Shape::kLd, kThreads = Shape::kThreads;
  constexpr int kKChunks = kHeadDim / 16;  // k steps of S^T = K Q^T and dP^T = V dO^T
  constexpr int kSTiles = kRows / 8;       // n tiles of S^T (query rows)
  constexpr int kOTiles = kHeadDim / 8;    // n tiles of dK and dV
  __shared__ __align__(16) uint16_t k_tile[kKeys * kLd], v_tile[kKeys * kLd];
  __shared__ __align__(16) uint16_t q_tile[kRows * kLd], do_tile[kRows * kLd];
  __shared__ float row_shift[kRows], row_inv_sum[kRows], row_delta[kRows];

  const MmaBlock place(p, p.Tk, kKeys);
  const int lane = place.lane, warp = place.warp, D = place.D, Dv = place.Dv;
  const int64_t b = place.b, h = place.h, j0 = place.t0;
  // This thread's two keys (the accumulator rows of elements 0, 1 and 2, 3).
  int64_t key_j[2];
  bool key_ok[2];
  for (int half = 0; half < 2; ++half) {
    key_j[half] = j0 + warp * 16 + common::mma_c_coord(lane, 2 * half).row;
    key_ok[half] = key_j[half] < p.Tk && key_is_valid(p, b, key_j[half]);
  }
  stage_bits<scalar_t, kThreads, kLd>(k_tile, p.k, b, h, j0, p.Tk, kKeys, D, nullptr);
  stage_bits<scalar_t, kThreads, kLd>(v_tile, p.v, b, h, j0, p.Tk, kKeys, Dv, nullptr);

  float dk[kOTiles][4], dv[kOTiles][4];
  zero_fill(dk);
  zero_fill(dv);
  float dkb[2] = {0.f, 0.f};  // this lane's share of each key's d key_bias
  const common::Range rows = p.band.rows_of_keys(j0, common::hd_min(j0 + kKeys, p.Tk));
  for (int64_t i0 = rows.lo; i0 < rows.hi; i0 += kRows) {
    __syncthreads();  // the previous tile is consumed
    stage_bits<scalar_t, kThreads, kLd>(q_tile, p.q, b, h, i0, rows.hi, kRows, D, nullptr);
    stage_bits<scalar_t, kThreads, kLd>(do_tile, bw.grad_out, b, h, i0, rows.hi, kRows, Dv, nullptr);
    if (threadIdx.x < kRows) {
      const bool in = i0 + threadIdx.x < rows.hi;
      const int64_t row = place.blk.bh * p.Tq + i0 + threadIdx.x;
      row_shift[threadIdx.x] = in ? bw.row_shift[row] : 0.f;
      row_inv_sum[threadIdx.x] = in ? bw.row_inv_sum[row] : 0.f;
      row_delta[threadIdx.x] = in ? bw.delta[row] : 0.f;
    }
    __syncthreads();

    // S^T = K Q^T and dP^T = V dO^T for this warp's 16 keys (K's and V's fragments reloaded per tile:
    // kept in registers they would crowd out the accumulators).
    float s[kSTiles][4], dp[kSTiles][4];
    zero_fill(s);
    zero_fill(dp);
    {
      uint32_t k_frag[kKChunks][4];
      load_a_fragments<kKChunks, kLd>(k_frag, k_tile, warp * 16);
      mma_a_xt<scalar_t, kKChunks, kSTiles, kLd>(s, k_frag, q_tile, place.k_steps);
    }
    {
      uint32_t v_frag[kKChunks][4];
      load_a_fragments<kKChunks, kLd>(v_frag, v_tile, warp * 16);
      mma_a_xt<scalar_t, kKChunks, kSTiles, kLd>(dp, v_frag, do_tile, place.v_steps);
    }

    // P^T (dropped) into s and dS^T into dp, 0 where the pair is not admissible.
#pragma unroll
    for (int nt = 0; nt < kSTiles; ++nt) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int half = c >> 1, r = nt * 8 + common::mma_c_coord(lane, c).col;
        const int64_t i = i0 + r, j = key_j[half], pos = p.band.position(i);
        const bool ok = key_ok[half] && i < rows.hi && p.band.admits(pos, j);
        float prob = 0.f, ds = 0.f;
        if (ok) {
          const float score = finish_score(p, mod, s[nt][c], b, h, pos, j);
          const float pr = common::probability(score, common::RowNorm<float>{row_shift[r], row_inv_sum[r]});
          const float keep = p.dropout.factor<float>(b, h, i, j);
          ds = common::score_grad(pr, dp[nt][c], keep, row_delta[r]);
          prob = pr * keep;
          dkb[half] += ds;
        }
        s[nt][c] = prob;
        dp[nt][c] = ds;
      }
    }
    // dV += P^T dO and dK += dS^T Q.
    mma_c_x<scalar_t, kSTiles, kOTiles, kLd>(dv, s, do_tile, (Dv + 7) / 8, false);
    mma_c_x<scalar_t, kSTiles, kOTiles, kLd>(dk, dp, q_tile, (D + 7) / 8, false);
  }

  if (place.flag_redo(bw.key_redo, any_non_finite(dk) || any_non_finite(dv))) return;  // the SIMT redo writes them
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const float dkey_bias = quad_sum(dkb[half]);
    if (key_j[half] >= p.Tk) continue;
    const int64_t key = place.blk.bh * p.Tk + key_j[half];
    store_row(static_cast<scalar_t*>(bw.dk) + key * D, dk, half, D, p.scale);
    store_row(static_cast<scalar_t*>(bw.dv) + key * Dv, dv, half, Dv, 1.f);
    if (bw.dkey_bias != nullptr && (lane & 3) == 0) bw.dkey_bias[key] = dkey_bias;
  }
}

// ----------------------------------------------------------------------------------- dQ pass
template <typename scalar_t, typename Mod, int kHeadDim>
__global__ void __launch_bounds__(MmaBackwardShape<kHeadDim>::kThreads, 1)
    mma_dq_kernel(const ForwardParams p, const BackwardParams bw, const Mod mod) {
  using Shape = MmaBackwardShape<kHeadDim>;
  constexpr int kRows = Shape::kQRows, kKeys = Shape::kQKeys, kLd = Shape::kLd, kThreads = Shape::kThreads;
  constexpr int kKChunks = kHeadDim / 16;  // k steps of S = Q K^T and dP = dO V^T
  constexpr int kSTiles = kKeys / 8;       // n tiles of S (keys)
  constexpr int kOTiles = kHeadDim / 8;    // n tiles of dQ
  constexpr int kRowKeys = 2 * kSTiles;    // a lane's keys of each of its rows per tile
  __shared__ __align__(16) uint16_t kv_tiles[2 * kKeys * kLd];
  uint16_t* k_tile = kv_tiles;
  uint16_t* v_tile = kv_tiles + kKeys * kLd;

  const MmaBlock place(p, p.Tq, kRows);
  const int lane = place.lane, warp = place.warp, D = place.D, Dv = place.Dv;
  const int64_t b = place.b, h = place.h, i0 = place.t0;
  // This thread's two rows (accumulator elements 0, 1 and 2, 3): index, position, normalisation.
  int64_t row_i[2], row_pos[2], row[2];
  bool row_ok[2];
  common::RowNorm<float> norm[2];
  float delta[2];
  for (int half = 0; half < 2; ++half) {
    row_i[half] = i0 + warp * 16 + common::mma_c_coord(lane, 2 * half).row;
    row_pos[half] = p.band.position(row_i[half]);
    row_ok[half] = row_i[half] < p.Tq;
    row[half] = place.blk.bh * p.Tq + row_i[half];
    norm[half] = row_ok[half] ? common::RowNorm<float>{bw.row_shift[row[half]], bw.row_inv_sum[row[half]]}
                              : common::RowNorm<float>{0.f, 0.f};
    delta[half] = row_ok[half] ? bw.delta[row[half]] : 0.f;
  }

  // Q's and dO's A fragments, staged through the K / V tiles once.
  uint32_t q_frag[kKChunks][4], do_frag[kKChunks][4];
  stage_bits<scalar_t, kThreads, kLd>(kv_tiles, p.q, b, h, i0, p.Tq, kRows, D, nullptr);
  __syncthreads();
  load_a_fragments<kKChunks, kLd>(q_frag, kv_tiles, warp * 16);
  __syncthreads();
  stage_bits<scalar_t, kThreads, kLd>(kv_tiles, bw.grad_out, b, h, i0, p.Tq, kRows, Dv, nullptr);
  __syncthreads();
  load_a_fragments<kKChunks, kLd>(do_frag, kv_tiles, warp * 16);

  float dq[kOTiles][4];
  zero_fill(dq);
  float tail[2] = {0.f, 0.f};  // the modifier's per-row running partial (relpos: its last column)
  const common::Range keys = p.band.keys_of_rows(i0, common::hd_min(i0 + kRows, p.Tq));
  for (int64_t j0 = keys.lo; j0 < keys.hi; j0 += kKeys) {
    __syncthreads();  // the previous tile (and Q's, dO's staging) is consumed
    stage_bits<scalar_t, kThreads, kLd>(k_tile, p.k, b, h, j0, keys.hi, kKeys, D, nullptr);
    stage_bits<scalar_t, kThreads, kLd>(v_tile, p.v, b, h, j0, keys.hi, kKeys, Dv, nullptr);
    const bool valid = threadIdx.x < kKeys && j0 + threadIdx.x < keys.hi && key_is_valid(p, b, j0 + threadIdx.x);
    if (!__syncthreads_or(valid)) continue;  // a tile of padding only

    float s[kSTiles][4], dp[kSTiles][4];
    zero_fill(s);
    zero_fill(dp);
    mma_a_xt<scalar_t, kKChunks, kSTiles, kLd>(s, q_frag, k_tile, place.k_steps);
    mma_a_xt<scalar_t, kKChunks, kSTiles, kLd>(dp, do_frag, v_tile, place.v_steps);

    // dS into s, 0 where the pair is not admissible; each row's keys and dS for the modifier.
    int64_t row_keys[2][kRowKeys];
    float row_ds[2][kRowKeys];
    uint32_t admitted[2] = {0u, 0u};
#pragma unroll
    for (int nt = 0; nt < kSTiles; ++nt) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int half = c >> 1, e = 2 * nt + (c & 1);
        const int64_t i = row_i[half], j = j0 + nt * 8 + common::mma_c_coord(lane, c).col;
        const bool ok = row_ok[half] && j < keys.hi && p.band.admits(row_pos[half], j) && key_is_valid(p, b, j);
        float ds = 0.f;
        if (ok) {
          const float score = finish_score(p, mod, s[nt][c], b, h, row_pos[half], j);
          const float keep = p.dropout.factor<float>(b, h, i, j);
          ds = common::score_grad(common::probability(score, norm[half]), dp[nt][c], keep, delta[half]);
        }
        s[nt][c] = ds;
        row_keys[half][e] = j;
        row_ds[half][e] = ds;
        admitted[half] |= ok ? (1u << e) : 0u;
      }
    }
#pragma unroll
    for (int half = 0; half < 2; ++half)
      mod.template grad<QuadLanes, kRowKeys>(tail[half], row[half], b, h, row_pos[half], row_keys[half],
                                             row_ds[half], admitted[half], row_ok[half]);
    // dQ += dS K.
    mma_c_x<scalar_t, kSTiles, kOTiles, kLd>(dq, s, k_tile, (D + 7) / 8, false);
  }
#pragma unroll
  for (int half = 0; half < 2; ++half) mod.template grad_finish<QuadLanes>(tail[half], row[half], row_ok[half]);

  if (place.flag_redo(bw.row_redo, any_non_finite(dq))) return;  // the SIMT redo writes these rows' dQ
#pragma unroll
  for (int half = 0; half < 2; ++half)
    if (row_ok[half]) store_row(static_cast<scalar_t*>(bw.dq) + row[half] * D, dq, half, D, p.scale);
}

}  // namespace tempattn::cuda

// The tensor-core backward launcher of one head-dim bucket (launch.h), for float16 and bfloat16:
// the SIMT row-norm prepass, the two tensor-core passes, then the SIMT kernels' exact redo of the
// blocks they flagged (a grid of blocks that return at once when none is).
#define TEMPATTN_MMA_BACKWARD_BUCKET(kHeadDim)                                                              \
  namespace tempattn::cuda {                                                                               \
  template <>                                                                                              \
  void mma_backward<kHeadDim>(const ForwardParams& p, const BackwardParams& bw, const ModParams& m,         \
                              Dtype dtype, cudaStream_t stream) {                                          \
    using Shape = MmaBackwardShape<kHeadDim>;                                                              \
    const unsigned key_grid = static_cast<unsigned>((p.Tk + Shape::kKeys - 1) / Shape::kKeys * p.B * p.H); \
    const unsigned row_grid = static_cast<unsigned>((p.Tq + Shape::kQRows - 1) / Shape::kQRows * p.B * p.H); \
    with_dtype_and_mod(dtype, m, p.Tk, [&](auto tag, auto mod) {                                           \
      using scalar_t = decltype(tag);                                                                      \
      if constexpr (!std::is_same_v<scalar_t, float>) {                                                    \
        launch_row_norm<scalar_t, decltype(mod), kHeadDim>(p, bw, mod, stream);                            \
        TEMPATTN_LAUNCH(key_grid, Shape::kThreads, stream, (p, bw, mod),                                    \
                        mma_dkdv_kernel<scalar_t, decltype(mod), kHeadDim>);                               \
        TEMPATTN_LAUNCH(row_grid, Shape::kThreads, stream, (p, bw, mod),                                    \
                        mma_dq_kernel<scalar_t, decltype(mod), kHeadDim>);                                 \
        launch_simt_grads<scalar_t, decltype(mod), /*kRedo=*/true, kHeadDim>(p, bw, mod, stream);          \
      }                                                                                                    \
    });                                                                                                    \
  }                                                                                                        \
  }
