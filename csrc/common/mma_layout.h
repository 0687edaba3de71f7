// The fragment layouts of mma.sync.m16n8k16 with .f16 / .bf16 inputs and .f32 accumulators (PTX
// ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"): the (row, col) of its tile
// that element e of a lane's fragment holds. The tensor-core kernels (csrc/cuda/common/mma.cuh)
// index their shared-memory tiles and accumulators through these; being host-callable, the CPU
// suite checks them against the ISA's tables (tests/cpu/test_shared_headers.py), which leaves only
// the instruction itself to a GPU.
//
// The ISA's words: groupID = lane / 4, threadID_in_group = lane % 4; a 32-bit register holds two
// consecutive elements, the even one in its low half.
#pragma once

#include "common/hd.h"

namespace tempattn::common {

struct FragCoord {
  int row, col;
};

// A (16 x 16, row-major): elements 0..7 in registers e / 2 = 0..3.
TEMPATTN_HD FragCoord mma_a_coord(int lane, int e) {
  return {(lane >> 2) + 8 * ((e >> 1) & 1), 2 * (lane & 3) + (e & 1) + 8 * (e >> 2)};
}
// B (16 x 8, k x n, ".col"): elements 0..3 in registers e / 2 = 0..1.
TEMPATTN_HD FragCoord mma_b_coord(int lane, int e) {
  return {2 * (lane & 3) + (e & 1) + 8 * (e >> 1), lane >> 2};
}
// C and D (16 x 8, float32): elements 0..3, one per register.
TEMPATTN_HD FragCoord mma_c_coord(int lane, int e) {
  return {(lane >> 2) + 8 * (e >> 1), 2 * (lane & 3) + (e & 1)};
}

}  // namespace tempattn::common
