// Host/device portability of the shared maths headers (csrc/common/*.h): plain C++ that g++ (the
// CPU kernels) and nvcc (the CUDA kernels, host and device side) both compile. Nothing here
// depends on torch, ATen or the CUDA runtime.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define TEMPATTN_HD __host__ __device__ __forceinline__
#else
#define TEMPATTN_HD inline
#endif

namespace tempattn::common {

template <typename T>
TEMPATTN_HD T neg_infinity() {
  return -static_cast<T>(INFINITY);
}

// exp / log / isnan of float and double, the device's functions in device code.
TEMPATTN_HD float hd_exp(float x) { return ::expf(x); }
TEMPATTN_HD double hd_exp(double x) { return ::exp(x); }
TEMPATTN_HD float hd_log(float x) { return ::logf(x); }
TEMPATTN_HD double hd_log(double x) { return ::log(x); }
template <typename T>
TEMPATTN_HD bool hd_isnan(T x) {
  return x != x;
}

template <typename T>
TEMPATTN_HD T hd_min(T a, T b) {
  return b < a ? b : a;
}
template <typename T>
TEMPATTN_HD T hd_max(T a, T b) {
  return a < b ? b : a;
}

// max(a, b), NaN when either is NaN.
template <typename T>
TEMPATTN_HD T nan_max(T a, T b) {
  return hd_isnan(a) ? a : hd_isnan(b) ? b : hd_max(a, b);
}

}  // namespace tempattn::common
