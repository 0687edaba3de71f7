// The CUDA extension's operators (csrc/cuda/ops.cu) with every kernel of csrc/cuda compiled for the
// host and run by the emulator (include/tempattn_cuda_emulation.h) on CPU tensors: the same host
// code, launchers and kernel source as on a GPU, so the CPU suite exercises the kernels' tiling,
// fragment mapping, staging and synchronisation (tests/cuda_emulation/test_cuda_emulation.py).
#define TEMPATTN_CUDA_EMULATION 1

#include <torch/extension.h>

#include "cuda/common/mma_backward.cuh"

TEMPATTN_SIMT_BUCKET(64)
TEMPATTN_SIMT_BUCKET(128)
TEMPATTN_SIMT_BUCKET(256)
TEMPATTN_MMA_BUCKET(64)
TEMPATTN_MMA_BUCKET(128)
TEMPATTN_MMA_BUCKET(256)
TEMPATTN_MMA_BACKWARD_BUCKET(64)
TEMPATTN_MMA_BACKWARD_BUCKET(128)

#include "cuda/ops.cu"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace tempattn::cuda;
  m.def("masked_sdpa_fwd", &masked_sdpa_fwd);
  m.def("masked_sdpa_bwd", &masked_sdpa_bwd);
  m.def("relpos_attention_fwd", &relpos_attention_fwd);
  m.def("relpos_attention_bwd", &relpos_attention_bwd);
  m.def("decay_attention_fwd", &decay_attention_fwd);
  m.def("decay_attention_bwd", &decay_attention_bwd);
}
