// Vectorised building blocks of the tiled attention core: a register-blocked GEMM on packed
// tiles, exp over a row, and conversions between the input dtype and the accumulation dtype.
#pragma once
#include "cpu/common/capability.h"

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "common/hd.h"

namespace tempattn::cpu::CPU_CAPABILITY {

template <typename T>
constexpr int64_t vec_size() {
  return at::vec::Vectorized<T>::size();
}

// n rounded up to a multiple of the vector width: packed rows are padded so GEMMs never need a column tail.
template <typename T>
int64_t padded(int64_t n) {
  return (n + vec_size<T>() - 1) / vec_size<T>() * vec_size<T>();
}

// The most key columns of one score block (see AttentionGeometry::block_n); score modifiers
// keep whole-vector reads of that many columns in bounds.
constexpr int64_t kMaxRowBiasColumns = 256;

template <typename T>
constexpr T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

// C[ROWS][NV vectors] (+)= A[ROWS][K] * B[K][NV vectors]: the accumulators stay in registers.
// A(r, k) is A[r * lda + k], or A[k * lda + r] when kTransposedA (A stored as its transpose).
template <typename T, int ROWS, int NV, bool kTransposedA>
inline void gemm_microkernel(int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc,
                             bool accumulate) {
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t W = Vec::size();
  Vec acc[ROWS][NV];
  for (int r = 0; r < ROWS; ++r)
    for (int c = 0; c < NV; ++c) acc[r][c] = accumulate ? Vec::loadu(C + r * ldc + c * W) : Vec(T(0));
  for (int64_t k = 0; k < K; ++k) {
    Vec b[NV];
    for (int c = 0; c < NV; ++c) b[c] = Vec::loadu(B + k * ldb + c * W);
    for (int r = 0; r < ROWS; ++r) {
      const Vec a(kTransposedA ? A[k * lda + r] : A[r * lda + k]);
      for (int c = 0; c < NV; ++c) acc[r][c] = at::vec::fmadd(a, b[c], acc[r][c]);
    }
  }
  for (int r = 0; r < ROWS; ++r)
    for (int c = 0; c < NV; ++c) acc[r][c].store(C + r * ldc + c * W);
}

// Vectors of columns per microkernel call: 4 (16 accumulators) with the 32 registers of AVX-512, else 2.
template <typename T>
constexpr int wide_vectors() {
  return sizeof(at::vec::Vectorized<T>) >= 64 ? 4 : 2;
}

template <typename T, int ROWS, bool kTransposedA>
inline void gemm_row_block(int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc,
                           bool accumulate) {
  constexpr int64_t W = vec_size<T>();
  constexpr int NV = wide_vectors<T>();
  int64_t j = 0;
  for (; j + NV * W <= N; j += NV * W) {
    // A last run of 5 vectors in one pass (20 accumulators) rather than 4 + 1.
    if constexpr (NV == 4) {
      if (N - j == 5 * W) {
        gemm_microkernel<T, ROWS, 5, kTransposedA>(K, A, lda, B + j, ldb, C + j, ldc, accumulate);
        return;
      }
    }
    gemm_microkernel<T, ROWS, NV, kTransposedA>(K, A, lda, B + j, ldb, C + j, ldc, accumulate);
  }
  switch ((N - j) / W) {
    case 3: gemm_microkernel<T, ROWS, 3, kTransposedA>(K, A, lda, B + j, ldb, C + j, ldc, accumulate); break;
    case 2: gemm_microkernel<T, ROWS, 2, kTransposedA>(K, A, lda, B + j, ldb, C + j, ldc, accumulate); break;
    case 1: gemm_microkernel<T, ROWS, 1, kTransposedA>(K, A, lda, B + j, ldb, C + j, ldc, accumulate); break;
    default: break;
  }
}

// Rows of C per microkernel call.
constexpr int kGemmRows = 4;

template <typename T, bool kTransposedA>
void gemm_rows(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc,
               bool accumulate) {
  constexpr int ROWS = kGemmRows;
  const int64_t row_step = kTransposedA ? 1 : lda;
  int64_t i = 0;
  for (; i + ROWS <= M; i += ROWS)
    gemm_row_block<T, ROWS, kTransposedA>(N, K, A + i * row_step, lda, B, ldb, C + i * ldc, ldc, accumulate);
  const T* a = A + i * row_step;
  T* c = C + i * ldc;
  switch (M - i) {
    case 3: gemm_row_block<T, 3, kTransposedA>(N, K, a, lda, B, ldb, c, ldc, accumulate); break;
    case 2: gemm_row_block<T, 2, kTransposedA>(N, K, a, lda, B, ldb, c, ldc, accumulate); break;
    case 1: gemm_row_block<T, 1, kTransposedA>(N, K, a, lda, B, ldb, c, ldc, accumulate); break;
    default: break;
  }
}

// C[M][N] (+)= A[M][K] * B[K][N], all row-major; N must be a multiple of the vector width
// (B and C rows are padded), so columns past the logical width hold don't-care values.
template <typename T>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc,
          bool accumulate) {
  gemm_rows<T, false>(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
}

// C[M][N] (+)= At^T * B[K][N] for At[K][M] row-major (leading dim ldat): a GEMM on a transposed
// operand without writing the transpose.
template <typename T>
void gemm_transposed_a(int64_t M, int64_t N, int64_t K, const T* At, int64_t ldat, const T* B, int64_t ldb, T* C,
                       int64_t ldc, bool accumulate) {
  gemm_rows<T, true>(M, N, K, At, ldat, B, ldb, C, ldc, accumulate);
}

#if defined(CPU_CAPABILITY_AVX512)
// exp of float lanes as 2^k * e^r, x = k ln2 + r, |r| <= ln2 / 2, with the degree-6 Taylor
// polynomial of e^r (relative error ~2e-7), in about half the instructions of exp_u20, which
// matters as the softmax's exps are a large part of the forward. -inf and underflow give 0;
// NaN stays NaN.
inline __m512 exp_fast(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-110.f), x);  // NaN-propagating order
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);  // ln2 in two parts
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.f / 720);
  for (const float coef : {1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f}) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(coef));
  return _mm512_scalef_ps(p, k);
}
#endif

template <typename T>
at::vec::Vectorized<T> exp_vec(const at::vec::Vectorized<T>& x) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<T, float>) return exp_fast(x);
#endif
  return x.exp_u20();
}

// x[c] = exp(x[c] - shift) for c < n; -inf entries give 0. Returns the sum of the results.
template <typename T>
T exp_shifted_sum(T* x, int64_t n, T shift) {
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t W = Vec::size();
  const Vec vshift(shift);
  Vec vsum(T(0));
  int64_t c = 0;
  for (; c + W <= n; c += W) {
    const Vec e = exp_vec(Vec::loadu(x + c) - vshift);
    e.store(x + c);
    vsum = vsum + e;
  }
  if (c < n) {
    // The tail as one partial vector, its missing lanes -inf (exp: 0): short rows (T < 64) spent
    // as long in scalar expf on their tails as in the vector loop.
    const Vec e = exp_vec(Vec::set(Vec(neg_inf<T>()), Vec::loadu(x + c, n - c), n - c) - vshift);
    e.store(x + c, n - c);
    vsum = vsum + e;
  }
  return at::vec::vec_reduce_all<T>([](const Vec& a, const Vec& b) { return a + b; }, vsum);
}

// max(a, b), NaN when either is NaN (std::max drops a NaN second argument): common/hd.h.
using common::nan_max;

// The max of x[0, n), NaN when any is NaN (at::vec::maximum propagates NaN too).
template <typename T>
T row_max(const T* x, int64_t n) {
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t W = Vec::size();
  int64_t c = 0;
  T m = neg_inf<T>();
  if (n >= W) {
    Vec vmax = Vec::loadu(x);
    for (c = W; c + W <= n; c += W) vmax = at::vec::maximum(vmax, Vec::loadu(x + c));
    m = at::vec::vec_reduce_all<T>([](const Vec& a, const Vec& b) { return at::vec::maximum(a, b); }, vmax);
  }
  for (; c < n; ++c) m = nan_max(m, x[c]);
  return m;
}

// dst[c] += src[c] for c < n.
template <typename T>
void add_row(T* dst, const T* src, int64_t n) {
  using Vec = at::vec::Vectorized<T>;
  int64_t c = 0;
  for (; c + Vec::size() <= n; c += Vec::size()) (Vec::loadu(dst + c) + Vec::loadu(src + c)).store(dst + c);
  for (; c < n; ++c) dst[c] += src[c];
}

template <typename T>
void scale_row(T* x, int64_t n, T factor) {
  using Vec = at::vec::Vectorized<T>;
  int64_t c = 0;
  for (; c + Vec::size() <= n; c += Vec::size()) (Vec::loadu(x + c) * Vec(factor)).store(x + c);
  for (; c < n; ++c) x[c] *= factor;
}

// dst[r][c] = src row r (n columns, accumulation dtype) for r < rows; columns [n, ld) are zeroed.
template <typename scalar_t, typename acc_t, typename RowFn>
void load_rows(RowFn src_row, int64_t rows, int64_t n, acc_t* dst, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    const scalar_t* src = src_row(r);
    acc_t* out = dst + r * ld;
    for (int64_t c = 0; c < n; ++c) out[c] = static_cast<acc_t>(src[c]);
    std::fill(out + n, out + ld, acc_t(0));
  }
}

#if defined(CPU_CAPABILITY_AVX512)
// dst[c][r] = src[r][c0 + c] for r, c < 16, in registers: 32-bit, 64-bit, then 128-bit lane interleaves.
inline void transpose_16x16(const float* const* src, int64_t c0, float* dst, int64_t ld) {
  __m512 t[16], u[16];
  for (int k = 0; k < 8; ++k) {
    const __m512 a = _mm512_loadu_ps(src[2 * k] + c0), b = _mm512_loadu_ps(src[2 * k + 1] + c0);
    t[2 * k] = _mm512_unpacklo_ps(a, b);
    t[2 * k + 1] = _mm512_unpackhi_ps(a, b);
  }
  // u[4k + m], 128-bit lane L: column 4L + m of rows 4k .. 4k + 3.
  for (int k = 0; k < 4; ++k) {
    const __m512d t0 = _mm512_castps_pd(t[4 * k]), t1 = _mm512_castps_pd(t[4 * k + 1]);
    const __m512d t2 = _mm512_castps_pd(t[4 * k + 2]), t3 = _mm512_castps_pd(t[4 * k + 3]);
    u[4 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    u[4 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    u[4 * k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    u[4 * k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
  for (int m = 0; m < 4; ++m) {
    const __m512 v0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88), v1 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xDD);
    const __m512 v2 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88);
    const __m512 v3 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xDD);
    _mm512_storeu_ps(dst + m * ld, _mm512_shuffle_f32x4(v0, v2, 0x88));
    _mm512_storeu_ps(dst + (4 + m) * ld, _mm512_shuffle_f32x4(v1, v3, 0x88));
    _mm512_storeu_ps(dst + (8 + m) * ld, _mm512_shuffle_f32x4(v0, v2, 0xDD));
    _mm512_storeu_ps(dst + (12 + m) * ld, _mm512_shuffle_f32x4(v1, v3, 0xDD));
  }
}
#endif

// dst[c][r] = src row r, column c: a transposed pack (rows along the contiguous axis), done in
// bands of 16 rows so that the writes run along dst's rows (float bands in registers on AVX-512).
template <typename scalar_t, typename acc_t, typename RowFn>
void load_rows_transposed(RowFn src_row, int64_t rows, int64_t n, acc_t* dst, int64_t ld) {
  constexpr int64_t kBand = 16;
  const scalar_t* src[kBand];
  for (int64_t r0 = 0; r0 < rows; r0 += kBand) {
    const int64_t band = std::min(kBand, rows - r0);
    for (int64_t r = 0; r < band; ++r) src[r] = src_row(r0 + r);
    int64_t c = 0;
#if defined(CPU_CAPABILITY_AVX512)
    if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
      if (band == kBand)
        for (; c + kBand <= n; c += kBand) transpose_16x16(src, c, dst + c * ld + r0, ld);
    }
#endif
    for (; c < n; ++c)
      for (int64_t r = 0; r < band; ++r) dst[c * ld + r0 + r] = static_cast<acc_t>(src[r][c]);
  }
}

template <typename scalar_t, typename acc_t>
void store_row(const acc_t* src, int64_t n, acc_t factor, scalar_t* dst) {
  for (int64_t c = 0; c < n; ++c) dst[c] = static_cast<scalar_t>(src[c] * factor);
}

}  // namespace tempattn::cpu::CPU_CAPABILITY
