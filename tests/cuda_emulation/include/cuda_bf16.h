// Stand-in for cuda_bf16.h (tests/cuda_emulation).
#pragma once

#include "stand_in_16bit.h"

using __nv_bfloat16 = tempattn::emu::Scalar16<c10::BFloat16>;
using __nv_bfloat162 = tempattn::emu::Pair16<c10::BFloat16>;
inline __nv_bfloat16 __ushort_as_bfloat16(uint16_t x) { return {x}; }
inline float __bfloat162float(__nv_bfloat16 h) { return tempattn::emu::to_float(h); }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
  return tempattn::emu::pair_rn<c10::BFloat16>(lo, hi);
}
