// Device helpers of the CUDA kernels: element loads and stores in the input dtype, and warp
// reductions in a fixed order (the same bits on every run: determinism is part of the contract).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "common/hd.h"
#include "cuda/common/params.h"

namespace tempattn::cuda {

constexpr unsigned kFullMask = 0xFFFFFFFFu;

template <Dtype kDtype>
struct DtypeOf;
template <>
struct DtypeOf<Dtype::kFloat32> {
  using type = float;
};
template <>
struct DtypeOf<Dtype::kFloat16> {
  using type = c10::Half;
};
template <>
struct DtypeOf<Dtype::kBFloat16> {
  using type = c10::BFloat16;
};

// Row t of (b, h) of a Rows view, typed.
template <typename scalar_t>
__device__ __forceinline__ const scalar_t* row_ptr(const Rows& r, int64_t b, int64_t h, int64_t t) {
  return static_cast<const scalar_t*>(r.data) + b * r.stride_b + h * r.stride_h + t * r.stride_t;
}

template <typename scalar_t>
__device__ __forceinline__ float to_float(scalar_t x) {
  return static_cast<float>(x);
}

// Sum over the warp, the butterfly's result of lane 0 given to every lane (lanes of a butterfly
// add in different orders; one lane's bits make every lane agree).
__device__ __forceinline__ float warp_sum(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(kFullMask, x, offset);
  return __shfl_sync(kFullMask, x, 0);
}

// Max over the warp, NaN when any lane holds NaN (common::nan_max).
__device__ __forceinline__ float warp_max(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x = common::nan_max(x, __shfl_xor_sync(kFullMask, x, offset));
  return __shfl_sync(kFullMask, x, 0);
}

// Max and sum over the 4 lanes of a quad (the lanes holding one row's columns in a tensor-core
// fragment); lane 4g's result for all four, so every lane of a row agrees bit for bit.
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

// The lanes that share one query row, for the modifiers' gradient partials (mods.cuh): the whole
// warp in the SIMT kernels (one row per warp, a key per lane), a quad in the tensor-core ones.
struct WarpLanes {
  static __device__ __forceinline__ float sum(float x) { return warp_sum(x); }
  static __device__ __forceinline__ bool leader() { return (threadIdx.x & 31) == 0; }
};
struct QuadLanes {
  static __device__ __forceinline__ float sum(float x) { return quad_sum(x); }
  static __device__ __forceinline__ bool leader() { return (threadIdx.x & 3) == 0; }
};

// Blocks of a 1-D grid over (tiles, B * H): tile index and bh of this block, tiles fastest.
struct TileOfBlock {
  int64_t tile, bh;
};
__device__ __forceinline__ TileOfBlock tile_of_block(int64_t n_tiles) {
  const int64_t block = blockIdx.x;
  return {block % n_tiles, block / n_tiles};
}

// The final score of query (b, h, position pos) and key j from its dot product: scale, key bias,
// modifier (in the CPU kernels' order).
template <typename Mod>
__device__ __forceinline__ float finish_score(const ForwardParams& p, const Mod& mod, float qk, int64_t b, int64_t h,
                                              int64_t pos, int64_t j) {
  float s = qk * p.scale;
  if (p.key_bias != nullptr) s += p.key_bias[(b * p.H + h) * p.Tk + j];
  return s + mod.score(b, h, pos, j);
}

__device__ __forceinline__ bool key_is_valid(const ForwardParams& p, int64_t b, int64_t j) {
  return p.key_valid == nullptr || p.key_valid[b * p.Tk + j];
}

}  // namespace tempattn::cuda
