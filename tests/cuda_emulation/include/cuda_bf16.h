// Stand-in for cuda_bf16.h (tests/cuda_emulation): the conversions the kernels use, through
// c10::BFloat16 (round to nearest even, as the device's _rn intrinsics).
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>

struct __nv_bfloat16 {
  uint16_t x;
};
struct __nv_bfloat162 {
  __nv_bfloat16 lo, hi;  // lo in the low 16 bits, as on the device
};
inline __nv_bfloat16 __ushort_as_bfloat16(uint16_t x) { return {x}; }
inline float __bfloat162float(__nv_bfloat16 h) {
  return static_cast<float>(c10::BFloat16(h.x, c10::BFloat16::from_bits()));
}
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
  return {{c10::BFloat16(lo).x}, {c10::BFloat16(hi).x}};
}
