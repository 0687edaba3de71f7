"""Build tempattn and its extension tempattn._C (metadata and extras: pyproject.toml).

`pip install .` / `pip wheel .` build in pip's isolated environment with the torch that
pyproject.toml's [build-system] pins; `pip install -e . --no-build-isolation` builds against the
torch already installed. Either way the wheel requires the torch minor version it was built
against (the extension uses torch's C++ ABI, which changes between minor versions).

The CPU kernels (csrc/cpu/kernels/*.cpp) are compiled once per ISA level -- default (the
baseline), avx2 and avx512 on x86-64 -- and the level is chosen at run time (csrc/cpu/dispatch.h);
everything else is compiled for the baseline only, so the wheel runs on any x86-64 CPU.

Environment flags (all listed in the README):
  TEMPATTN_SKIP_CUDA_BUILD=1            build only the C++ CPU kernels, even where nvcc and a CUDA torch exist
  TEMPATTN_CUDA_ARCHS="80;90"           CUDA compute capabilities to compile for (default 80;90)
  TEMPATTN_NVCC_FLAGS="..."             extra nvcc flags (tools/cuda_check.py passes "-Xptxas -v")
  TEMPATTN_CPU_BUILD_CAPABILITIES=...   ISA levels of the CPU kernels to compile, of default;avx2;avx512
                                        (default: all the build machine's architecture has; default is always built)
  MAX_JOBS=N                            parallel compile jobs (read by torch's ninja build)
"""
import glob
import os
import platform

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:  # an sdist or metadata step without torch; building the extension needs it
    torch = None

ROOT = os.path.dirname(os.path.abspath(__file__))

# ISA levels of the CPU kernels: (macros, -m flags) of each, as ATen's CPU_CAPABILITY builds.
# The runtime check for each level (csrc/cpu/dispatch.cpp) covers every feature its flags enable.
CPU_LEVELS = {
    "default": (["-DCPU_CAPABILITY=DEFAULT"], []),
    "avx2": (["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"], ["-mavx2", "-mfma", "-mf16c"]),
    "avx512": (["-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"],
               ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"]),
}
KERNEL_SOURCES = "cpu/kernels/*.cpp"  # compiled once per level; every other source once, for the baseline


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _sources(pattern: str):
    return sorted(glob.glob(os.path.join("csrc", pattern), recursive=True))


def _cpu_levels():
    """The ISA levels to compile, lowest first: all of CPU_LEVELS on x86-64, else default only."""
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    available = list(CPU_LEVELS) if x86 else ["default"]
    requested = os.environ.get("TEMPATTN_CPU_BUILD_CAPABILITIES", "").replace(",", ";").split(";")
    requested = {r.strip().lower() for r in requested if r.strip()}
    unknown = requested - set(CPU_LEVELS)
    if unknown:
        raise SystemExit(f"TEMPATTN_CPU_BUILD_CAPABILITIES: unknown level(s) {sorted(unknown)}; "
                         f"choose from {list(CPU_LEVELS)}")
    return [level for level in available if not requested or level in requested or level == "default"]


def _build_cuda() -> bool:
    if _flag("TEMPATTN_SKIP_CUDA_BUILD"):
        return False
    has_sources = bool(glob.glob("csrc/cuda/**/*.cu", recursive=True))
    return torch.version.cuda is not None and CUDA_HOME is not None and has_sources


def _cxx_std() -> str:
    """The C++ standard torch's headers need: C++20 from torch 2.14 on (ATen refuses older), else C++17."""
    major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    return "-std=c++20" if (major, minor) >= (2, 14) else "-std=c++17"


def _cuda_arch_flags():
    archs = os.environ.get("TEMPATTN_CUDA_ARCHS", "80;90").replace(",", ";").split(";")
    return [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs if a.strip()]


def _pip_cuda_includes():
    """Headers of pip's CUDA packages (nvidia/cu13/include in site-packages), which torch's CUDA headers
    include (cuBLAS, cuSPARSE, ...) and a bare toolkit may lack; searched after the toolkit's own."""
    import site
    roots = site.getsitepackages() + [site.getusersitepackages()]
    found = [d for r in roots for d in sorted(glob.glob(os.path.join(r, "nvidia", "cu*", "include")))]
    return [flag for d in found for flag in ("-isystem", d)]


def _nvcc_extra_flags():
    """TEMPATTN_NVCC_FLAGS (space-separated), e.g. "-Xptxas -v" for tools/cuda_check.py's resource table."""
    return os.environ.get("TEMPATTN_NVCC_FLAGS", "").split()


def _extension():
    """tempattn._C: the baseline sources here; the per-level kernel objects are added by BuildTempattn."""
    baseline = [s for s in _sources("*.cpp") + _sources("cpu/**/*.cpp") if s not in _sources(KERNEL_SOURCES)]
    if torch is None:
        return Extension("tempattn._C", baseline)  # BuildNeedsTorch explains
    levels = _cpu_levels()
    # -g0: no debug info (Python's CFLAGS carry -g), a third off the build and most of the .so.
    cxx = ["-O3", _cxx_std(), "-fopenmp", "-g0"] + [f"-DTEMPATTN_CPU_{level.upper()}=1" for level in levels[1:]]
    include_dirs = [os.path.join(ROOT, "csrc")]
    if not _build_cuda():
        ext = CppExtension("tempattn._C", baseline, include_dirs=include_dirs, extra_compile_args={"cxx": cxx},
                           extra_link_args=["-fopenmp"])
    else:
        pip_includes = _pip_cuda_includes()
        nvcc = ["-O3", _cxx_std(), "--use_fast_math", "-lineinfo", *_cuda_arch_flags(), *_nvcc_extra_flags(),
                *pip_includes]
        cxx = cxx + pip_includes
        ext = CUDAExtension("tempattn._C", baseline + _sources("cuda/**/*.cu"), include_dirs=include_dirs,
                            define_macros=[("TEMPATTN_WITH_CUDA", "1")],
                            extra_compile_args={"cxx": cxx + ["-DTEMPATTN_WITH_CUDA=1"], "nvcc": nvcc},
                            extra_link_args=["-fopenmp"])
    ext.cpu_kernel_levels = [(level, _sources(KERNEL_SOURCES)) for level in levels]
    return ext


if torch is not None:
    class BuildTempattn(BuildExtension.with_options(use_ninja=True)):
        """torch's BuildExtension, plus the CPU kernel sources compiled once per ISA level.

        The levels' objects are linked after the baseline objects, lowest level first: where two
        objects define the same inline function (a COMDAT: std::, c10:: templates), the linker keeps
        the first, so a caller never gets a copy compiled for a level above its own.
        """

        def build_extension(self, ext):
            level_objects = []
            for level, sources in getattr(ext, "cpu_kernel_levels", []):
                macros, march = CPU_LEVELS[level]
                args = ext.extra_compile_args
                if isinstance(args, dict):
                    args = {**args, "cxx": args["cxx"] + macros + march}
                else:
                    args = list(args) + macros + march
                level_objects += self.compiler.compile(
                    sources, output_dir=os.path.join(self.build_temp, f"isa-{level}"), macros=ext.define_macros,
                    include_dirs=ext.include_dirs, debug=self.debug, extra_postargs=args, depends=ext.depends)
            ext.extra_objects = level_objects + [o for o in (ext.extra_objects or []) if o not in level_objects]
            super().build_extension(ext)

    BUILD_EXT = BuildTempattn
else:
    class BuildNeedsTorch(build_ext):
        def run(self):
            raise SystemExit(
                "building tempattn's extension needs torch: `pip install .` gets it in pip's isolated build "
                "environment (see pyproject.toml); with --no-build-isolation, install torch first")

    BUILD_EXT = BuildNeedsTorch


def _install_requires():
    """The torch minor version the extension is built against (its C++ ABI), and numpy."""
    if torch is None:
        return ["torch>=2.11", "numpy"]
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return [f"torch=={major}.{minor}.*", "numpy"]


def _packages():
    """tempattn.*, kernels/ as tempattn.kernels, benchmarks/ (the suite) as tempattn.bench.suite."""
    from setuptools import find_packages
    return (find_packages(include=["tempattn", "tempattn.*"]) + ["tempattn.kernels"]
            + [f"tempattn.kernels.{p}" for p in find_packages(where="kernels")] + ["tempattn.bench.suite"])


setup(
    packages=_packages(),
    package_dir={"tempattn.kernels": "kernels", "tempattn.bench.suite": "benchmarks"},
    package_data={"tempattn.bench.suite": ["pytest.ini"]},
    exclude_package_data={"": ["*.so", "*.pyd"]},
    ext_modules=[_extension()],
    cmdclass={"build_ext": BUILD_EXT},
    install_requires=_install_requires(),
)
