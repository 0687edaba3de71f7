// The kernel launchers csrc/cuda/ops.cu calls, one set per head-dim bucket (each bucket's
// instantiations live in their own .cu file under csrc/cuda/kernels/ to keep compile units small).
#pragma once

#include "cuda/common/params.h"

namespace tempattn::cuda {

// Head-dim buckets: kHeadDim = 64, 128 or 256, the smallest >= max(D, Dv).
template <int kHeadDim>
void simt_forward(const ForwardParams& p, const ModParams& mod, Dtype dtype, cudaStream_t stream);

template <int kHeadDim>
void simt_backward(const ForwardParams& p, const BackwardParams& bw, const ModParams& mod, Dtype dtype,
                   cudaStream_t stream);

// The tensor-core forward (mma.cuh), float16 and bfloat16 only.
template <int kHeadDim>
void mma_forward(const ForwardParams& p, const ModParams& mod, Dtype dtype, cudaStream_t stream);

// The tensor-core backward (mma_backward.cuh), float16 and bfloat16, head-dim buckets 64 and 128;
// bw.key_redo / bw.row_redo hold one flag per block of kMmaBackwardKeys keys / kMmaBackwardRows rows.
constexpr int kMmaBackwardKeys = 64, kMmaBackwardRows = 64;
template <int kHeadDim>
void mma_backward(const ForwardParams& p, const BackwardParams& bw, const ModParams& mod, Dtype dtype,
                  cudaStream_t stream);

}  // namespace tempattn::cuda
