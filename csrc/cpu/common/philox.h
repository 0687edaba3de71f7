// Philox4x32-10 dropout keep mask, bit for bit the definition in tempattn/ops/common/philox.py:
// the host/device definition in common/philox.h, shared with the CUDA kernels.
#pragma once
#include "cpu/common/capability.h"

#include "common/philox.h"

namespace tempattn::cpu::CPU_CAPABILITY {

using common::DropoutMask;
using common::philox_first_word;

}  // namespace tempattn::cpu::CPU_CAPABILITY
