"""make cuda-check: compile and link tempattn._C with its CUDA kernels, without a GPU, and check every
kernel's resources.

Run with a CUDA build of torch (CI: a separate venv with torch==2.14.1 from the local index) and
CUDA_HOME pointing at the toolkit. It

1. builds the extension from scratch (a fresh temporary build directory: nothing is cached, so no
   stale object hides an error) for TEMPATTN_CUDA_ARCHS (default "80;90") with ``-Xptxas -v``, into
   that directory -- never into the checkout, whose tempattn/_C*.so is the CPU test build;
2. loads the linked library in a subprocess and checks that each tempattn_C operator has a CUDA
   kernel registered (an undefined symbol fails the load);
3. prints the ptxas resource table (registers, spill stores / loads, stack frame, static shared
   memory) of every kernel for every arch, and fails on
     - any spill in a kernel whose head-dim bucket is <= 128 (the last integer template argument of
       every kernel in csrc/cuda is its head-dim bucket, kHeadDim),
     - shared memory over the arch's per-block limit (sm_80: 166912 B, sm_90: 232448 B), and
     - dynamic shared memory (``extern __shared__``) in csrc/cuda, which ptxas cannot see: the
       kernels keep their shared memory static so that this check covers it.

Exit status 0 when everything passes. Usage: python tools/cuda_check.py [--keep DIR]
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMEM_LIMIT = {"sm_80": 166912, "sm_86": 101376, "sm_89": 101376, "sm_90": 232448}
SPILL_FREE_UP_TO = 128
OPS = [f"{op}_{kind}" for op in ("masked_sdpa", "relpos_attention", "decay_attention") for kind in ("fwd", "bwd")]

ENTRY = re.compile(r"ptxas info\s*: Compiling entry function '([^']+)' for '(sm_\d+a?)'")
SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"ptxas info\s*: Used (\d+) registers.*?(?:, (\d+) bytes smem)?(?:,|$)")


def build(build_dir: str) -> str:
    """Builds the extension into build_dir; returns the build log (raises on a failed build)."""
    env = dict(os.environ)
    env.setdefault("TEMPATTN_CUDA_ARCHS", "80;90")
    env["TEMPATTN_NVCC_FLAGS"] = (env.get("TEMPATTN_NVCC_FLAGS", "") + " -Xptxas -v").strip()
    env.setdefault("TEMPATTN_CPU_BUILD_CAPABILITIES", "default")  # the CPU ISA levels are `make test`'s business
    env.pop("TEMPATTN_SKIP_CUDA_BUILD", None)
    cmd = [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", os.path.join(build_dir, "lib"),
           "--build-temp", os.path.join(build_dir, "temp")]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    log = result.stdout + result.stderr
    with open(os.path.join(build_dir, "build.log"), "w") as f:
        f.write(log)
    if result.returncode != 0:
        print(log[-20000:])
        raise SystemExit(f"cuda-check: the build failed (exit {result.returncode}); full log in {build_dir}/build.log")
    if "Compiling entry function" not in log:
        raise SystemExit("cuda-check: the build compiled no CUDA kernel: is torch a CUDA build and CUDA_HOME set? "
                         f"(torch.version.cuda, CUDA_HOME={os.environ.get('CUDA_HOME')}); log in {build_dir}/build.log")
    return log


def parse(log: str):
    """[(mangled name, arch, registers, spill stores, spill loads, smem bytes, stack frame bytes)] from
    ptxas -v output."""
    kernels, current, spills = [], None, (0, 0, 0)
    for line in log.splitlines():
        if m := ENTRY.search(line):
            current, spills = (m.group(1), m.group(2)), (0, 0, 0)
        elif current and (m := SPILLS.search(line)):
            spills = (int(m.group(2)), int(m.group(3)), int(m.group(1)))
        elif current and (m := USED.search(line)):
            smem = re.search(r"(\d+) bytes smem", line)
            kernels.append((*current, int(m.group(1)), *spills[:2], int(smem.group(1)) if smem else 0, spills[2]))
            current = None
    return kernels


def demangle(names):
    tool = shutil.which("c++filt")
    if tool is None:
        return {n: n for n in names}
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}


def head_dim_bucket(demangled: str):
    """The last integer template argument of the kernel (its kHeadDim), or None."""
    args = demangled.split("(")[0]
    found = re.findall(r"[<, ](\d+)>?", args)
    return int(found[-1]) if found else None


def short(demangled: str) -> str:
    name = demangled.split("(")[0].replace("tempattn::cuda::", "").replace("c10::", "")
    return name


def check_resources(kernels):
    names = demangle(sorted({k[0] for k in kernels}))
    failures = []
    print(f"{'arch':6} {'regs':>4} {'spill st':>8} {'spill ld':>8} {'stack B':>7} {'smem B':>7}  kernel")
    for mangled, arch, regs, stores, loads, smem, stack in sorted(kernels, key=lambda k: (k[1], names[k[0]])):
        name = names[mangled]
        print(f"{arch:6} {regs:4d} {stores:8d} {loads:8d} {stack:7d} {smem:7d}  {short(name)}")
        bucket = head_dim_bucket(name)
        if bucket is None:
            failures.append(f"{arch} {short(name)}: no head-dim template argument (kHeadDim) to check spills against")
        elif bucket <= SPILL_FREE_UP_TO and (stores or loads):
            failures.append(f"{arch} {short(name)}: spills ({stores} B stores, {loads} B loads) at head dim {bucket}")
        limit = SMEM_LIMIT.get(arch.rstrip("a"))
        if limit is None:
            failures.append(f"{arch} {short(name)}: no shared-memory limit known for this arch")
        elif smem > limit:
            failures.append(f"{arch} {short(name)}: {smem} B shared memory > {limit} B")
    per_arch = {}
    for mangled, arch, *_ in kernels:
        per_arch.setdefault(arch, set()).add(mangled)
    archs = {f"sm_{a.strip()}" for a in os.environ.get("TEMPATTN_CUDA_ARCHS", "80;90").replace(",", ";").split(";")
             if a.strip()}
    if set(per_arch) != archs:
        failures.append(f"kernels were compiled for {sorted(per_arch)}, expected {sorted(archs)}")
    if len({frozenset(v) for v in per_arch.values()}) > 1:
        failures.append("the archs compiled different sets of kernels")
    return failures


def check_static_shared_memory():
    """Dynamic shared memory escapes ptxas's table: csrc/cuda keeps its shared memory static."""
    sources = glob.glob(os.path.join(ROOT, "csrc", "cuda", "**", "*.cu*"), recursive=True)
    sources += glob.glob(os.path.join(ROOT, "csrc", "cuda", "**", "*.h"), recursive=True)
    return [f"{os.path.relpath(s, ROOT)}: uses dynamic shared memory (extern __shared__), which this check cannot "
            "size; keep shared memory static or extend tools/cuda_check.py" for s in sources
            if "extern __shared__" in open(s).read()]


LOAD_CHECK = """
import sys, torch
torch.ops.load_library(sys.argv[1])
missing = [op for op in sys.argv[2:] if not torch._C._dispatch_has_kernel_for_dispatch_key(f"tempattn_C::{op}", "CUDA")]
assert torch.ops.tempattn_C.cuda_built(), "cuda_built() is False"
if missing:
    raise SystemExit(f"no CUDA kernel registered for {missing}")
print("loaded", sys.argv[1], "with CUDA kernels for", len(sys.argv) - 2, "ops")
"""


def check_link(build_dir: str):
    libs = glob.glob(os.path.join(build_dir, "lib", "tempattn", "_C*.so"))
    if len(libs) != 1:
        return [f"expected one linked tempattn/_C*.so in {build_dir}/lib, found {libs}"]
    result = subprocess.run([sys.executable, "-c", LOAD_CHECK, libs[0], *OPS], capture_output=True, text=True)
    print(result.stdout.strip())
    return [] if result.returncode == 0 else [f"loading the linked library failed:\n{result.stderr[-4000:]}"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="build here (kept) instead of a temporary directory")
    args = parser.parse_args()
    import torch
    if torch.version.cuda is None:
        raise SystemExit(f"cuda-check needs a CUDA build of torch, got {torch.__version__} (CPU only)")
    start = time.monotonic()
    build_dir = args.keep or tempfile.mkdtemp(prefix="tempattn-cuda-check-")
    if args.keep and os.path.exists(build_dir):
        shutil.rmtree(build_dir)  # nothing cached between runs
    os.makedirs(build_dir, exist_ok=True)
    print(f"cuda-check: torch {torch.__version__} (CUDA {torch.version.cuda}), CUDA_HOME={os.environ.get('CUDA_HOME')}, "
          f"archs {os.environ.get('TEMPATTN_CUDA_ARCHS', '80;90')}, MAX_JOBS={os.environ.get('MAX_JOBS', '-')}")
    try:
        kernels = parse(build(build_dir))
        failures = check_static_shared_memory() + check_resources(kernels) + check_link(build_dir)
    finally:
        if not args.keep:
            shutil.rmtree(build_dir, ignore_errors=True)
    minutes = (time.monotonic() - start) / 60
    print(f"cuda-check: {len(kernels)} kernel compilations checked in {minutes:.1f} min")
    if failures:
        print("cuda-check FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("cuda-check passed")


if __name__ == "__main__":
    main()
