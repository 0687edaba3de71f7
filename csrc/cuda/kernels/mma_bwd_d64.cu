// The tensor-core backward (float16 / bfloat16) for head dims (D, Dv) up to 64 (common/mma_backward.cuh).
#include "cuda/common/mma_backward.cuh"

TEMPATTN_MMA_BACKWARD_BUCKET(64)
