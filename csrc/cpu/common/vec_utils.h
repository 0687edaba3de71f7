// Vectorised building blocks of the tiled attention core: a register-blocked GEMM on packed
// tiles, exp over a row, and conversions between the input dtype and the accumulation dtype.
#pragma once
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

namespace tempattn::cpu {

template <typename T>
constexpr int64_t vec_size() {
  return at::vec::Vectorized<T>::size();
}

// n rounded up to a multiple of the vector width: packed rows are padded so GEMMs never need a column tail.
template <typename T>
int64_t padded(int64_t n) {
  return (n + vec_size<T>() - 1) / vec_size<T>() * vec_size<T>();
}

template <typename T>
constexpr T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

// C[ROWS][NV vectors] (+)= A[ROWS][K] * B[K][NV vectors]: the accumulators stay in registers.
template <typename T, int ROWS, int NV>
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
      const Vec a(A[r * lda + k]);
      for (int c = 0; c < NV; ++c) acc[r][c] = at::vec::fmadd(a, b[c], acc[r][c]);
    }
  }
  for (int r = 0; r < ROWS; ++r)
    for (int c = 0; c < NV; ++c) acc[r][c].store(C + r * ldc + c * W);
}

template <typename T, int ROWS>
inline void gemm_row_block(int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc,
                           bool accumulate) {
  constexpr int64_t W = vec_size<T>();
  int64_t j = 0;
  for (; j + 2 * W <= N; j += 2 * W) gemm_microkernel<T, ROWS, 2>(K, A, lda, B + j, ldb, C + j, ldc, accumulate);
  for (; j < N; j += W) gemm_microkernel<T, ROWS, 1>(K, A, lda, B + j, ldb, C + j, ldc, accumulate);
}

// C[M][N] (+)= A[M][K] * B[K][N], all row-major; N must be a multiple of the vector width
// (B and C rows are padded), so columns past the logical width hold don't-care values.
template <typename T>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc,
          bool accumulate) {
  constexpr int ROWS = 4;
  int64_t i = 0;
  for (; i + ROWS <= M; i += ROWS)
    gemm_row_block<T, ROWS>(N, K, A + i * lda, lda, B, ldb, C + i * ldc, ldc, accumulate);
  switch (M - i) {
    case 3: gemm_row_block<T, 3>(N, K, A + i * lda, lda, B, ldb, C + i * ldc, ldc, accumulate); break;
    case 2: gemm_row_block<T, 2>(N, K, A + i * lda, lda, B, ldb, C + i * ldc, ldc, accumulate); break;
    case 1: gemm_row_block<T, 1>(N, K, A + i * lda, lda, B, ldb, C + i * ldc, ldc, accumulate); break;
    default: break;
  }
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
    const Vec e = (Vec::loadu(x + c) - vshift).exp_u20();
    e.store(x + c);
    vsum = vsum + e;
  }
  T lanes[W];
  vsum.store(lanes);
  T sum = 0;
  for (int64_t l = 0; l < W; ++l) sum += lanes[l];
  for (; c < n; ++c) {
    x[c] = std::exp(x[c] - shift);
    sum += x[c];
  }
  return sum;
}

template <typename T>
T row_max(const T* x, int64_t n) {
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t W = Vec::size();
  int64_t c = 0;
  T m = neg_inf<T>();
  if (n >= W) {
    Vec vmax = Vec::loadu(x);
    for (c = W; c + W <= n; c += W) vmax = at::vec::maximum(vmax, Vec::loadu(x + c));
    T lanes[W];
    vmax.store(lanes);
    for (int64_t l = 0; l < W; ++l) m = std::max(m, lanes[l]);
  }
  for (; c < n; ++c) m = std::max(m, x[c]);
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

// dst[c][r] = src row r, column c: a transposed pack (rows along the contiguous axis), done in
// bands of rows so that the writes run along dst's rows.
template <typename scalar_t, typename acc_t, typename RowFn>
void load_rows_transposed(RowFn src_row, int64_t rows, int64_t n, acc_t* dst, int64_t ld) {
  constexpr int64_t kBand = 16;
  const scalar_t* src[kBand];
  for (int64_t r0 = 0; r0 < rows; r0 += kBand) {
    const int64_t band = std::min(kBand, rows - r0);
    for (int64_t r = 0; r < band; ++r) src[r] = src_row(r0 + r);
    for (int64_t c = 0; c < n; ++c)
      for (int64_t r = 0; r < band; ++r) dst[c * ld + r0 + r] = static_cast<acc_t>(src[r][c]);
  }
}

template <typename scalar_t, typename acc_t>
void store_row(const acc_t* src, int64_t n, acc_t factor, scalar_t* dst) {
  for (int64_t c = 0; c < n; ++c) dst[c] = static_cast<scalar_t>(src[c] * factor);
}

}  // namespace tempattn::cpu
