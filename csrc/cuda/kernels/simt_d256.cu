// The SIMT kernels for head dims (D, Dv) up to 256, every dtype and modifier (common/simt.cuh).
#include "cuda/common/launch.h"
#include "cuda/common/simt.cuh"

TEMPATTN_SIMT_BUCKET(256)
