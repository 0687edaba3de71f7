// Stand-in for cuda_fp16.h (tests/cuda_emulation).
#pragma once

#include "stand_in_16bit.h"

using __half = tempattn::emu::Scalar16<c10::Half>;
using __half2 = tempattn::emu::Pair16<c10::Half>;
inline __half __ushort_as_half(uint16_t x) { return {x}; }
inline float __half2float(__half h) { return tempattn::emu::to_float(h); }
inline __half2 __floats2half2_rn(float lo, float hi) { return tempattn::emu::pair_rn<c10::Half>(lo, hi); }
