// What the CUDA kernels receive: plain structs of pointers, strides and sizes, built on the host by
// csrc/cuda/ops.cu from checked tensors and passed by value. No torch types, so the kernel files
// compile without ATen; the per-score maths are the host/device headers in csrc/common/.
#pragma once

#include <cuda_runtime.h>

// kernel<<<grid, threads, 0, stream>>> args, written TEMPATTN_LAUNCH(grid, threads, stream, args, kernel) so that
// tests/cuda_emulation can run the same launch on its CPU emulator (which defines it first).
#ifndef TEMPATTN_LAUNCH
#define TEMPATTN_LAUNCH(grid, threads, stream, args, ...) __VA_ARGS__<<<(grid), (threads), 0, (stream)>>> args
#endif

#include "common/band.h"
#include "common/philox.h"

namespace tempattn::cuda {

// The input dtype of q, k, v (and grad_out, out, dq, dk, dv); everything else is float32.
enum class Dtype { kFloat32, kFloat16, kBFloat16 };

// The score modifier of an operator (kernels/common/score_mods.py has the same three).
enum class ModKind { kNone, kRelpos, kDecay };

// A (B, H, T, X) tensor whose last dim has stride 1.
struct Rows {
  const void* data;
  int64_t stride_b, stride_h, stride_t;
};

struct ForwardParams {
  Rows q, k, v;
  int64_t B, H, Tq, Tk, D, Dv;
  common::Band band;               // window clamped (common::clamp_window)
  const bool* key_valid;           // (B, Tk), True = attend; nullptr: all valid
  const float* key_bias;           // (B, H, Tk) contiguous or nullptr
  float scale;
  common::DropoutMask dropout;
  void* out;                       // (B, H, Tq, Dv) contiguous, input dtype
  float* lse;                      // (B, H, Tq) contiguous
};

// Blocks of the tensor-core backward (mma_backward.cuh) whose dK/dV (dQ) came out non-finite: one
// flag per (bh, tile of `tile` keys / rows), written by every block. The SIMT kernels, launched after
// it in their redo mode, recompute the keys (rows) of the flagged blocks exactly -- IEEE products over
// the admissible pairs only -- and leave the others: a NaN or infinite q, k, v or dO never leaks as
// 0 * inf into a key (row) that cannot see it, as in the SIMT, CPU and Triton kernels.
struct RedoFlags {
  int* flags = nullptr;  // (B * H, tiles(T, tile)) contiguous
  int64_t tile = 1;

  static TEMPATTN_HD int64_t tiles(int64_t T, int64_t tile) { return (T + tile - 1) / tile; }
  // The flag of tile `index` of head bh, whose T rows (or keys) form n_tiles tiles.
  TEMPATTN_HD int& flag_of_tile(int64_t bh, int64_t n_tiles, int64_t index) const { return flags[bh * n_tiles + index]; }
  // The flag of the block that holds index t of head bh (of T rows or keys).
  TEMPATTN_HD int& flag(int64_t bh, int64_t T, int64_t t) const { return flag_of_tile(bh, tiles(T, tile), t / tile); }
};

struct BackwardParams {
  Rows grad_out;                   // (B, H, Tq, Dv)
  const float* delta;              // (B, H, Tq) contiguous: rowsum(dO * O) - dlse
  const float* lse;                // (B, H, Tq) contiguous
  // (B, H, Tq) contiguous: each row's normalisation of P (common::RowNorm), written from lse by
  // the backward's prepass and read by its dK/dV and dQ passes.
  float* row_shift;
  float* row_inv_sum;
  void* dq;                        // (B, H, Tq, D) contiguous, input dtype
  void* dk;                        // (B, H, Tk, D)
  void* dv;                        // (B, H, Tk, Dv)
  float* dkey_bias;                // (B, H, Tk) or nullptr
  RedoFlags key_redo, row_redo;    // the tensor-core backward's flags (unused by the SIMT backward)
};

// The modifier's parameters and, in the backward, its per-row gradient partials (zeroed by the
// host), reduced over (b, i) by the host in a fixed order:
//   relpos: rel_bias (H, R); partial0 = band (B, H, Tq, R): dS of row i at offset Delta < R - 1,
//           the row's sum over Delta >= R - 1 in column R - 1.
//   decay:  log_a = log_softmax(alpha_logits), log_gamma (H, S), times (B, Tk) or nullptr;
//           partial0 = sum_j dS r_s (d log a), partial1 = sum_j dS r_s Delta (d log_gamma), (B, H, Tq, S).
struct ModParams {
  ModKind kind = ModKind::kNone;
  const float* rel_bias = nullptr;
  int64_t R = 1;
  const float* log_a = nullptr;
  const float* log_gamma = nullptr;
  int64_t S = 1;
  float log_eps = 0.f;
  const float* times = nullptr;
  float* partial0 = nullptr;
  float* partial1 = nullptr;
};

}  // namespace tempattn::cuda
