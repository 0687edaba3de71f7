// The tensor-core forward for float16 / bfloat16 inputs: FlashAttention-2's forward with
// mma.sync.m16n8k16 (fp32 accumulation) through inline PTX, for sm_80 and later.
//
// A block of 4 warps owns kM = 64 query rows (16 per warp) of one (b, h) and walks the key tiles
// of kN keys that its rows see (common::Band). Per tile: K and V are staged in shared memory as
// 16-bit bit patterns (rows padded by 8 elements: the fragment loads of a warp hit 32 distinct
// banks), S = Q K^T from Q's A fragments (loaded once, kept in registers) and K's B fragments;
// every score is finished and masked with the shared maths (csrc/common/: band, modifiers, row
// rules, dropout), exactly as the SIMT kernels and the CPU do; then O += P V with P's fragments
// taken straight from S's accumulators (the m16n8k16 C layout is the A layout of the next product).
//
// Non-finite values: admissibility is tracked apart from the score (a NaN score propagates). A NaN
// or infinite value of V would turn 0 * v into NaN for rows that cannot see its key; a tile whose
// V holds one (rare: one block-wide vote per tile) feeds the tensor cores V with those entries
// zeroed and adds their products over the admissible (row, key) pairs only, in IEEE arithmetic,
// from P written to shared memory: the same results as the Triton kernels' _dot_admissible.
//
// Fragment layouts of mma.m16n8k16: common/mma_layout.h (checked on the CPU against the PTX ISA).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "common/band.h"
#include "common/mma_layout.h"
#include "common/score_math.h"
#include "cuda/common/device.cuh"
#include "cuda/common/mods.cuh"

namespace tempattn::cuda {

template <int kHeadDim>
struct MmaShape {
  static constexpr int kWarps = 4, kThreads = 32 * kWarps;
  static constexpr int kM = 16 * kWarps;                  // query rows per block
  static constexpr int kN = kHeadDim > 128 ? 32 : 64;     // keys per tile
  static constexpr int kLd = kHeadDim + 8;                // shared row stride (16-bit elements)
  static constexpr int kTileBytes = kN * kLd * 2;         // one staged K or V tile
  static constexpr int kPBytes = kM * kN * 4;             // P (float) for the non-finite V path
  static constexpr bool kPInK = kPBytes <= kTileBytes;    // P can reuse K's tile (S is done with it)
  static constexpr int kBytes = 2 * kTileBytes + (kPInK ? 0 : kPBytes);
  static_assert(kM * kLd * 2 <= 2 * kTileBytes, "Q is staged in the K and V tiles");
  static_assert(kBytes <= 48 * 1024, "static shared memory");
};

// d += a * b on the tensor cores, fp32 accumulation.
template <typename scalar_t>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);

template <>
__device__ __forceinline__ void mma_16816<c10::Half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void mma_16816<c10::BFloat16>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as a 16-bit pair (lo in the low half: the lower column / row index), round to nearest.
template <typename scalar_t>
__device__ __forceinline__ uint32_t pack_pair(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack_pair<c10::Half>(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}
template <>
__device__ __forceinline__ uint32_t pack_pair<c10::BFloat16>(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// A 16-bit pattern: its float value, and whether it is NaN or infinite (exponent all ones).
template <typename scalar_t>
__device__ __forceinline__ float bits_to_float(uint16_t x);
template <>
__device__ __forceinline__ float bits_to_float<c10::Half>(uint16_t x) {
  return __half2float(__ushort_as_half(x));
}
template <>
__device__ __forceinline__ float bits_to_float<c10::BFloat16>(uint16_t x) {
  return __bfloat162float(__ushort_as_bfloat16(x));
}
template <typename scalar_t>
__device__ __forceinline__ bool bits_non_finite(uint16_t x) {
  constexpr uint16_t kExp = std::is_same_v<scalar_t, c10::Half> ? 0x7C00 : 0x7F80;
  return (x & kExp) == kExp;
}

// B fragment half of V: V[row][col] and V[row + 1][col] (zeroed where non-finite when `clean`).
template <typename scalar_t>
__device__ __forceinline__ uint32_t value_pair(const uint16_t* v, int ld, int row, int col, bool clean) {
  uint16_t lo = v[row * ld + col], hi = v[(row + 1) * ld + col];
  if (clean) {
    lo = bits_non_finite<scalar_t>(lo) ? uint16_t(0) : lo;
    hi = bits_non_finite<scalar_t>(hi) ? uint16_t(0) : hi;
  }
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
}

// Stages rows [t0, t0 + rows) (zeros from `end` on and past `cols`) of (b, h) into dst (rows, kLd)
// as bit patterns; returns (block-wide) whether any staged value is NaN or infinite when `vote`.
template <typename scalar_t, int kThreads, int kLd>
__device__ void stage_bits(uint16_t* dst, const Rows& src, int64_t b, int64_t h, int64_t t0, int64_t end, int rows,
                           int cols, bool* non_finite) {
  bool bad = false;
  for (int idx = threadIdx.x; idx < rows * kLd; idx += kThreads) {
    const int r = idx / kLd, c = idx % kLd;
    uint16_t x = 0;
    if (c < cols && t0 + r < end) x = row_ptr<scalar_t>(src, b, h, t0 + r)[c].x;
    dst[idx] = x;
    bad = bad || bits_non_finite<scalar_t>(x);
  }
  if (non_finite != nullptr) *non_finite = bad;
}

// Max and sum over the 4 lanes of a quad (the lanes holding one row's columns); lane 4g's result
// for all four, so every lane of a row agrees bit for bit.
__device__ __forceinline__ float quad_max(float x) {
  x = common::nan_max(x, __shfl_xor_sync(kFullMask, x, 1));
  x = common::nan_max(x, __shfl_xor_sync(kFullMask, x, 2));
  return __shfl_sync(kFullMask, x, (threadIdx.x & 31) & ~3);
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(kFullMask, x, 1);
  x += __shfl_xor_sync(kFullMask, x, 2);
  return __shfl_sync(kFullMask, x, (threadIdx.x & 31) & ~3);
}

template <typename scalar_t, typename Mod, int kHeadDim>
__global__ void __launch_bounds__(MmaShape<kHeadDim>::kThreads, 1)
    mma_forward_kernel(const ForwardParams p, const Mod mod) {
  using Shape = MmaShape<kHeadDim>;
  constexpr int kM = Shape::kM, kN = Shape::kN, kLd = Shape::kLd, kThreads = Shape::kThreads;
  constexpr int kKChunks = kHeadDim / 16;  // k steps of S = Q K^T
  constexpr int kSTiles = kN / 8;          // n tiles of S
  constexpr int kOTiles = kHeadDim / 8;    // n tiles of O
  __shared__ alignas(16) unsigned char smem[Shape::kBytes];
  uint16_t* k_tile = reinterpret_cast<uint16_t*>(smem);
  uint16_t* v_tile = k_tile + kN * kLd;
  float* p_tile = reinterpret_cast<float*>(Shape::kPInK ? smem : smem + 2 * Shape::kTileBytes);

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  // This lane's (k, n) in the two registers of a B fragment (K^T or V).
  const common::FragCoord b_lo = common::mma_b_coord(lane, 0), b_hi = common::mma_b_coord(lane, 2);
  const int64_t n_tiles = (p.Tq + kM - 1) / kM;
  const TileOfBlock blk = tile_of_block(n_tiles);
  const int64_t b = blk.bh / p.H, h = blk.bh % p.H, i0 = blk.tile * kM;
  const int D = static_cast<int>(p.D), Dv = static_cast<int>(p.Dv);
  // This thread's two rows (accumulator elements 0, 1 and 2, 3) and their positions.
  int64_t row_i[2], row_pos[2];
  for (int half = 0; half < 2; ++half) {
    row_i[half] = i0 + warp * 16 + common::mma_c_coord(lane, 2 * half).row;
    row_pos[half] = p.band.position(row_i[half]);
  }

  // Q's A fragments, staged through the K / V tiles once.
  uint32_t q_frag[kKChunks][4];
  stage_bits<scalar_t, kThreads, kLd>(k_tile, p.q, b, h, i0, p.Tq, kM, D, nullptr);
  __syncthreads();
#pragma unroll
  for (int kc = 0; kc < kKChunks; ++kc) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {  // register r holds elements 2r, 2r + 1 (consecutive columns)
      const common::FragCoord at = common::mma_a_coord(lane, 2 * r);
      q_frag[kc][r] = *reinterpret_cast<const uint32_t*>(k_tile + (warp * 16 + at.row) * kLd + kc * 16 + at.col);
    }
  }

  float out[kOTiles][4];
#pragma unroll
  for (int nt = 0; nt < kOTiles; ++nt) out[nt][0] = out[nt][1] = out[nt][2] = out[nt][3] = 0.f;
  float run_max[2] = {common::neg_infinity<float>(), common::neg_infinity<float>()};
  float part_sum[2] = {0.f, 0.f};  // this lane's share of each row's sum, reduced over the quad at the end
  const int k_steps = (D + 15) / 16, o_tiles = (Dv + 7) / 8;

  const common::Range keys = p.band.keys_of_rows(i0, common::hd_min<int64_t>(i0 + kM, p.Tq));
  for (int64_t j0 = keys.lo; j0 < keys.hi; j0 += kN) {
    __syncthreads();  // the previous tile (and Q's staging) is consumed
    bool v_bad;
    stage_bits<scalar_t, kThreads, kLd>(k_tile, p.k, b, h, j0, keys.hi, kN, D, nullptr);
    stage_bits<scalar_t, kThreads, kLd>(v_tile, p.v, b, h, j0, keys.hi, kN, Dv, &v_bad);
    const bool valid = threadIdx.x < kN && j0 + threadIdx.x < keys.hi && key_is_valid(p, b, j0 + threadIdx.x);
    const bool non_finite_v = __syncthreads_or(v_bad);
    if (!__syncthreads_or(valid)) continue;  // a tile of padding only

    // S = Q K^T over the k steps that hold columns < D (the rest are zeros).
    float s[kSTiles][4];
#pragma unroll
    for (int nt = 0; nt < kSTiles; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
    for (int kc = 0; kc < kKChunks; ++kc) {
      if (kc >= k_steps) break;
#pragma unroll
      for (int nt = 0; nt < kSTiles; ++nt) {
        // B = K^T: element (k, n) is K[n][k], so a register's two k are consecutive in K's row.
        const uint16_t* k_row = k_tile + (nt * 8 + b_lo.col) * kLd + kc * 16;
        mma_16816<scalar_t>(s[nt], q_frag[kc], *reinterpret_cast<const uint32_t*>(k_row + b_lo.row),
                            *reinterpret_cast<const uint32_t*>(k_row + b_hi.row));
      }
    }

    // Finish and mask the scores (shared maths), then the row rules: new max, rescale, exps.
    uint32_t admitted = 0;  // bit 4 nt + c: entry (nt, c) admissible
    float tile_max[2] = {common::neg_infinity<float>(), common::neg_infinity<float>()};
#pragma unroll
    for (int nt = 0; nt < kSTiles; ++nt) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int half = c >> 1;
        const int64_t i = row_i[half], j = j0 + nt * 8 + common::mma_c_coord(lane, c).col;
        const bool ok = i < p.Tq && j < keys.hi && p.band.admits(row_pos[half], j) && key_is_valid(p, b, j);
        s[nt][c] = ok ? finish_score(p, mod, s[nt][c], b, h, row_pos[half], j) : common::neg_infinity<float>();
        admitted |= ok ? (1u << (4 * nt + c)) : 0u;
        tile_max[half] = common::nan_max(tile_max[half], s[nt][c]);
      }
    }
    float shift[2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const float new_max = common::softmax_new_max(run_max[half], quad_max(tile_max[half]));
      const float factor = common::softmax_rescale(run_max[half], new_max);
      part_sum[half] *= factor;
#pragma unroll
      for (int nt = 0; nt < kOTiles; ++nt) {
        out[nt][2 * half] *= factor;
        out[nt][2 * half + 1] *= factor;
      }
      run_max[half] = new_max;
      shift[half] = common::softmax_shift(new_max);
    }
#pragma unroll
    for (int nt = 0; nt < kSTiles; ++nt) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int half = c >> 1;
        const bool ok = (admitted >> (4 * nt + c)) & 1u;
        float prob = ok ? common::hd_exp(s[nt][c] - shift[half]) : 0.f;
        part_sum[half] += prob;
        if (ok) prob *= p.dropout.factor<float>(b, h, row_i[half], j0 + nt * 8 + common::mma_c_coord(lane, c).col);
        s[nt][c] = prob;
      }
    }

    // O += P V: P's A fragments from S's accumulators, V's B fragments from the staged tile.
#pragma unroll
    for (int kc = 0; kc < kN / 16; ++kc) {
      const uint32_t a[4] = {pack_pair<scalar_t>(s[2 * kc][0], s[2 * kc][1]),
                             pack_pair<scalar_t>(s[2 * kc][2], s[2 * kc][3]),
                             pack_pair<scalar_t>(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                             pack_pair<scalar_t>(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
      for (int nt = 0; nt < kOTiles; ++nt) {
        if (nt >= o_tiles) break;
        const int col = nt * 8 + b_lo.col;
        mma_16816<scalar_t>(out[nt], a, value_pair<scalar_t>(v_tile, kLd, kc * 16 + b_lo.row, col, non_finite_v),
                            value_pair<scalar_t>(v_tile, kLd, kc * 16 + b_hi.row, col, non_finite_v));
      }
    }
    if (non_finite_v) {
      // The zeroed non-finite values' products, over the admissible (row, key) pairs only.
      __syncthreads();  // every warp is done with K: P takes its place
#pragma unroll
      for (int nt = 0; nt < kSTiles; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const bool ok = (admitted >> (4 * nt + c)) & 1u;
          const common::FragCoord at = common::mma_c_coord(lane, c);
          p_tile[(warp * 16 + at.row) * kN + nt * 8 + at.col] = ok ? s[nt][c] : -1.f;
        }
      __syncthreads();
#pragma unroll
      for (int nt = 0; nt < kOTiles; ++nt) {
        if (nt >= o_tiles) break;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const common::FragCoord at = common::mma_c_coord(lane, c);
          const int r = warp * 16 + at.row, d = nt * 8 + at.col;
          if (d >= Dv) continue;
#pragma unroll 1
          for (int j = 0; j < kN; ++j) {
            const float pj = p_tile[r * kN + j];  // -1: not admissible (P >= 0 or NaN otherwise)
            const uint16_t vj = v_tile[j * kLd + d];
            if (!(pj < 0.f) && bits_non_finite<scalar_t>(vj)) out[nt][c] += pj * bits_to_float<scalar_t>(vj);
          }
        }
      }
    }
  }

  // The empty-row rule and the stores: rows of this block past Tq and columns past Dv are skipped.
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const float sum = quad_sum(part_sum[half]);
    const int64_t i = row_i[half];
    if (i >= p.Tq) continue;
    const int64_t row = blk.bh * p.Tq + i;
    const float out_scale = common::softmax_out_scale(sum);
    scalar_t* out_row = static_cast<scalar_t*>(p.out) + row * Dv;
#pragma unroll
    for (int nt = 0; nt < kOTiles; ++nt) {
      for (int c = 0; c < 2; ++c) {
        const int d = nt * 8 + common::mma_c_coord(lane, 2 * half + c).col;
        if (d < Dv) out_row[d] = static_cast<scalar_t>(out[nt][2 * half + c] * out_scale);
      }
    }
    if ((lane & 3) == 0) p.lse[row] = common::softmax_lse(run_max[half], sum);  // one lane of the quad
  }
}

}  // namespace tempattn::cuda

// The tensor-core forward launcher of one head-dim bucket (launch.h), for float16 and bfloat16.
#define TEMPATTN_MMA_BUCKET(kHeadDim)                                                                          \
  namespace tempattn::cuda {                                                                                   \
  template <>                                                                                                  \
  void mma_forward<kHeadDim>(const ForwardParams& p, const ModParams& m, Dtype dtype, cudaStream_t stream) {   \
    using Shape = MmaShape<kHeadDim>;                                                                          \
    const unsigned grid = static_cast<unsigned>((p.Tq + Shape::kM - 1) / Shape::kM * p.B * p.H);              \
    with_dtype_and_mod(dtype, m, p.Tk, [&](auto tag, auto mod) {                                               \
      if constexpr (!std::is_same_v<decltype(tag), float>)                                                     \
        mma_forward_kernel<decltype(tag), decltype(mod), kHeadDim><<<grid, Shape::kThreads, 0, stream>>>(p, mod); \
    });                                                                                                        \
  }                                                                                                            \
  }
