// The 16-bit types and conversions of cuda_fp16.h / cuda_bf16.h that the kernels use, for the host
// (tests/cuda_emulation), through c10's types: round to nearest even, as the device's _rn intrinsics.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

namespace tempattn::emu {

template <typename C10Type>
struct Scalar16 {
  uint16_t x;
};
template <typename C10Type>
struct Pair16 {
  Scalar16<C10Type> lo, hi;  // lo in the low 16 bits, as on the device
};
template <typename C10Type>
float to_float(Scalar16<C10Type> h) {
  return static_cast<float>(C10Type(h.x, C10Type::from_bits()));
}
template <typename C10Type>
Pair16<C10Type> pair_rn(float lo, float hi) {
  return {{C10Type(lo).x}, {C10Type(hi).x}};
}

}  // namespace tempattn::emu
