"""The CUDA kernels of csrc/cuda run on the CPU by an emulator of the CUDA execution model (see
include/tempattn_cuda_emulation.h), so that `make test` runs their source without a GPU."""
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


@functools.lru_cache(maxsize=None)
def emulated_ops():
    """The module of the six emulated operators (the tempattn_C schemas, CPU tensors), compiled on first use
    into build/cuda-emulation (ninja rebuilds it when a source or header changes)."""
    from torch.utils import cpp_extension

    build = ROOT / "build" / "cuda-emulation"
    build.mkdir(parents=True, exist_ok=True)
    return cpp_extension.load(
        name="tempattn_cuda_emulation",
        sources=[str(HERE / "emulated_ops.cpp")],
        # The stand-in CUDA headers first: csrc/cuda includes <cuda_runtime.h>, <cuda_fp16.h>, <cuda_bf16.h>.
        extra_include_paths=[str(HERE / "include"), str(ROOT / "csrc")],
        extra_cflags=["-O2", "-g0"],
        build_directory=str(build),
        verbose=False,
    )
