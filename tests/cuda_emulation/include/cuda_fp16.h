// Stand-in for cuda_fp16.h (tests/cuda_emulation): the conversions the kernels use, through c10::Half
// (round to nearest even, as the device's _rn intrinsics).
#pragma once

#include <c10/util/Half.h>

#include <cstdint>

struct __half {
  uint16_t x;
};
struct __half2 {
  __half lo, hi;  // lo in the low 16 bits, as on the device
};
inline __half __ushort_as_half(uint16_t x) { return {x}; }
inline float __half2float(__half h) { return static_cast<float>(c10::Half(h.x, c10::Half::from_bits())); }
inline __half2 __floats2half2_rn(float lo, float hi) { return {{c10::Half(lo).x}, {c10::Half(hi).x}}; }
