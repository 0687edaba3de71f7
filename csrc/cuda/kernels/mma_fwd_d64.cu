// The tensor-core forward (float16 / bfloat16) for head dims (D, Dv) up to 64 (common/mma.cuh).
#include "cuda/common/launch.h"
#include "cuda/common/mma.cuh"
#include "cuda/common/simt.cuh"

TEMPATTN_MMA_BUCKET(64)
