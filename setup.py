"""Build tempattn and its extension tempattn._C.

Environment flags (all listed in the README):
  TEMPATTN_SKIP_CUDA_BUILD=1   build only the C++ CPU kernels, even where nvcc and a CUDA torch exist
  TEMPATTN_CUDA_ARCHS="80;90"  CUDA compute capabilities to compile for (default 80;90)
  MAX_JOBS=N                   parallel compile jobs (read by torch's ninja build)
"""
import glob
import os
import platform

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _build_cuda() -> bool:
    if _flag("TEMPATTN_SKIP_CUDA_BUILD"):
        return False
    has_sources = bool(glob.glob("csrc/cuda/**/*.cu", recursive=True))
    return torch.version.cuda is not None and CUDA_HOME is not None and has_sources


def _sources(pattern: str):
    return sorted(glob.glob(os.path.join("csrc", pattern), recursive=True))


def _cuda_arch_flags():
    archs = os.environ.get("TEMPATTN_CUDA_ARCHS", "80;90").replace(",", ";").split(";")
    return [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs if a.strip()]


def _cpu_vector_flags():
    """at::vec ISA flags for the CPU kernels: the widest of AVX-512 / AVX2 the x86-64 build machine has."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return []
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "fma"} <= flags:
        return ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c",
                "-DCPU_CAPABILITY_AVX512", "-DCPU_CAPABILITY=AVX512"]
    if {"avx2", "fma", "f16c"} <= flags:
        return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"]
    return []


def _extension():
    cxx = ["-O3", "-std=c++17", "-fopenmp"] + _cpu_vector_flags()
    sources = _sources("*.cpp") + _sources("cpu/**/*.cpp")
    include_dirs = [os.path.join(ROOT, "csrc")]
    if not _build_cuda():
        return CppExtension("tempattn._C", sources, include_dirs=include_dirs,
                            extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])
    nvcc = ["-O3", "-std=c++17", "--use_fast_math", "-lineinfo", *_cuda_arch_flags()]
    return CUDAExtension("tempattn._C", sources + _sources("cuda/**/*.cu"), include_dirs=include_dirs,
                         define_macros=[("TEMPATTN_WITH_CUDA", "1")],
                         extra_compile_args={"cxx": cxx + ["-DTEMPATTN_WITH_CUDA=1"], "nvcc": nvcc},
                         extra_link_args=["-fopenmp"])


setup(
    name="tempattn",
    version="0.1.0",
    description="Fused attention with temporal structure for PyTorch (CPU, Triton and CUDA kernels)",
    packages=find_packages(include=["tempattn", "tempattn.*"]) + ["tempattn.kernels"]
    + [f"tempattn.kernels.{p}" for p in find_packages(where="kernels")],
    package_dir={"tempattn.kernels": "kernels"},
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.10",
    install_requires=["torch>=2.11", "numpy"],
    extras_require={"triton": ["triton>=3.6"], "test": ["pytest", "pytest-benchmark"]},
)
