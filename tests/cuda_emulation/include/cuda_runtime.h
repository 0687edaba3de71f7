// Stand-in for the CUDA runtime header when tests/cuda_emulation compiles csrc/cuda for the host.
#pragma once

#include "tempattn_cuda_emulation.h"

using cudaStream_t = void*;
