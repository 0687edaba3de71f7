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
// d += a * b on the tensor cores, fp32 accumulation (emulated from the warp's fragments on the CPU
// by tests/cuda_emulation).
#if defined(TEMPATTN_CUDA_EMULATION)
template <typename scalar_t>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  emu::mma_16816(d, a, b0, b1, [](uint16_t x) { return bits_to_float<scalar_t>(x); });
}
#else
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
#endif

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

// The A fragments of rows [r0, r0 + 16) of a staged tile (row stride kLd), every k chunk of 16
// columns: register r of chunk kc holds elements 2r, 2r + 1 (consecutive columns).
template <int kKChunks, int kLd>
__device__ __forceinline__ void load_a_fragments(uint32_t (&a)[kKChunks][4], const uint16_t* tile, int r0) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int kc = 0; kc < kKChunks; ++kc) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const common::FragCoord at = common::mma_a_coord(lane, 2 * r);
      a[kc][r] = *reinterpret_cast<const uint32_t*>(tile + (r0 + at.row) * kLd + kc * 16 + at.col);
    }
  }
}

// acc[nt] += A X^T over the k chunks < k_steps (the rest hold zeros): A's fragments in registers,
// X staged (n, k) row-major, B(k, n) = X[n][k], so a register's two k are consecutive in X's row.
template <typename scalar_t, int kKChunks, int kNTiles, int kLd>
__device__ __forceinline__ void mma_a_xt(float (&acc)[kNTiles][4], const uint32_t (&a)[kKChunks][4],
                                         const uint16_t* x, int k_steps) {
  const int lane = threadIdx.x & 31;
  const common::FragCoord b_lo = common::mma_b_coord(lane, 0), b_hi = common::mma_b_coord(lane, 2);
#pragma unroll
  for (int kc = 0; kc < kKChunks; ++kc) {
    if (kc >= k_steps) break;
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
      const uint16_t* x_row = x + (nt * 8 + b_lo.col) * kLd + kc * 16;
      mma_16816<scalar_t>(acc[nt], a[kc], *reinterpret_cast<const uint32_t*>(x_row + b_lo.row),
                          *reinterpret_cast<const uint32_t*>(x_row + b_hi.row));
    }
  }
}

// acc[nt] += P X over the n tiles < n_tiles: P (16 rows, 8 kPTiles columns) rounded to scalar_t from
// the accumulators of an earlier product (the m16n8k16 C layout is the A layout of the next), X
// staged (k, n) row-major, B(k, n) = X[k][n] (its non-finite entries zeroed when `clean`).
template <typename scalar_t, int kPTiles, int kNTiles, int kLd>
__device__ __forceinline__ void mma_c_x(float (&acc)[kNTiles][4], const float (&pc)[kPTiles][4], const uint16_t* x,
                                        int n_tiles, bool clean) {
  const int lane = threadIdx.x & 31;
  const common::FragCoord b_lo = common::mma_b_coord(lane, 0), b_hi = common::mma_b_coord(lane, 2);
#pragma unroll
  for (int kc = 0; kc < kPTiles / 2; ++kc) {
    const uint32_t a[4] = {pack_pair<scalar_t>(pc[2 * kc][0], pc[2 * kc][1]),
                           pack_pair<scalar_t>(pc[2 * kc][2], pc[2 * kc][3]),
                           pack_pair<scalar_t>(pc[2 * kc + 1][0], pc[2 * kc + 1][1]),
                           pack_pair<scalar_t>(pc[2 * kc + 1][2], pc[2 * kc + 1][3])};
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
      if (nt >= n_tiles) break;
      const int col = nt * 8 + b_lo.col;
      mma_16816<scalar_t>(acc[nt], a, value_pair<scalar_t>(x, kLd, kc * 16 + b_lo.row, col, clean),
                          value_pair<scalar_t>(x, kLd, kc * 16 + b_hi.row, col, clean));
    }
  }
}

template <int kTiles>
__device__ __forceinline__ void zero_fill(float (&acc)[kTiles][4]) {
#pragma unroll
  for (int nt = 0; nt < kTiles; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
}

// Stores this lane's accumulators of row `half` (elements 2 half, 2 half + 1), times factor, into
// the columns < cols of out_row.
template <typename scalar_t, int kTiles>
__device__ __forceinline__ void store_row(scalar_t* out_row, const float (&acc)[kTiles][4], int half, int cols,
                                          float factor) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int nt = 0; nt < kTiles; ++nt) {
    for (int c = 0; c < 2; ++c) {
      const int col = nt * 8 + common::mma_c_coord(lane, 2 * half + c).col;
      if (col < cols) out_row[col] = static_cast<scalar_t>(acc[nt][2 * half + c] * factor);
    }
  }
}

// Whether any of a thread's accumulators is NaN or infinite.
template <int kTiles>
__device__ __forceinline__ bool any_non_finite(const float (&acc)[kTiles][4]) {
  bool bad = false;
#pragma unroll
  for (int nt = 0; nt < kTiles; ++nt)
#pragma unroll
    for (int c = 0; c < 4; ++c) bad = bad || !isfinite(acc[nt][c]);
  return bad;
}

template <typename scalar_t, typename Mod, int kHeadDim>
__global__ void __launch_bounds__(MmaShape<kHeadDim>::kThreads, 1)
    mma_forward_kernel(const ForwardParams p, const Mod mod) {
  using Shape = MmaShape<kHeadDim>;
  constexpr int kM = Shape::kM, kN = Shape::kN, kLd = Shape::kLd, kThreads = Shape::kThreads;
  constexpr int kKChunks = kHeadDim / 16;  // k steps of S = Q K^T
  constexpr int kSTiles = kN / 8;          // n tiles of S
  constexpr int kOTiles = kHeadDim / 8;    // n tiles of O
  __shared__ __align__(16) unsigned char smem[Shape::kBytes];
  uint16_t* k_tile = reinterpret_cast<uint16_t*>(smem);
  uint16_t* v_tile = k_tile + kN * kLd;
  float* p_tile = reinterpret_cast<float*>(Shape::kPInK ? smem : smem + 2 * Shape::kTileBytes);

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
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
  load_a_fragments<kKChunks, kLd>(q_frag, k_tile, warp * 16);

  float out[kOTiles][4];
  zero_fill(out);
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
    zero_fill(s);
    mma_a_xt<scalar_t, kKChunks, kSTiles, kLd>(s, q_frag, k_tile, k_steps);

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
    mma_c_x<scalar_t, kSTiles, kOTiles, kLd>(out, s, v_tile, o_tiles, non_finite_v);
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
    store_row(static_cast<scalar_t*>(p.out) + row * Dv, out, half, Dv, common::softmax_out_scale(sum));
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
        TEMPATTN_LAUNCH(grid, Shape::kThreads, stream, (p, mod), mma_forward_kernel<decltype(tag), decltype(mod), kHeadDim>); \
    });                                                                                                        \
  }                                                                                                            \
  }
