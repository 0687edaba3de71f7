"""tools/cuda_check.py's verdicts on ptxas -v output (the check itself runs in `make cuda-check`)."""
import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("cuda_check", Path(__file__).resolve().parents[2] / "tools" / "cuda_check.py")
cuda_check = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(cuda_check)

# The mangled names of simt_dq_kernel<float, NoModDevice, kHeadDim> and mma_forward_kernel<Half, DecayDevice, 256>.
SIMT = "_ZN8tempattn4cuda14simt_dq_kernelIfNS0_11NoModDeviceELi{}EEEvNS0_13ForwardParamsENS0_14BackwardParamsET0_"
MMA = "_ZN8tempattn4cuda18mma_forward_kernelIN3c104HalfENS0_11DecayDeviceELi256EEEvNS0_13ForwardParamsET0_"


def _log(name, arch, stack=0, stores=0, loads=0, regs=64, smem=18688):
    return (f"ptxas info    : Compiling entry function '{name}' for '{arch}'\n"
            f"ptxas info    : Function properties for {name}\n"
            f"    {stack} bytes stack frame, {stores} bytes spill stores, {loads} bytes spill loads\n"
            f"ptxas info    : Used {regs} registers, used 1 barriers, {smem} bytes smem, 673 bytes cmem[0]\n")


@pytest.fixture(autouse=True)
def archs(monkeypatch):
    monkeypatch.setenv("TEMPATTN_CUDA_ARCHS", "80;90")


def _failures(log):
    return cuda_check.check_resources(cuda_check.parse(log))


def test_parse_reads_every_field():
    (kernel,) = cuda_check.parse(_log(SIMT.format(64), "sm_90", stack=16, stores=4, loads=8, regs=72, smem=1024))
    assert kernel == (SIMT.format(64), "sm_90", 72, 4, 8, 1024, 16)


def test_clean_kernels_on_both_archs_pass():
    assert _failures(_log(SIMT.format(64), "sm_80") + _log(SIMT.format(64), "sm_90")) == []


@pytest.mark.parametrize("head_dim, fails", [(64, True), (128, True), (256, False)])
def test_spills_fail_up_to_head_dim_128(head_dim, fails):
    log = _log(SIMT.format(head_dim), "sm_80", stores=8, loads=8) + _log(SIMT.format(head_dim), "sm_90")
    assert bool(_failures(log)) == fails


def test_shared_memory_over_the_arch_limit_fails():
    ok = _log(MMA, "sm_80", smem=166912) + _log(MMA, "sm_90", smem=232448)
    assert _failures(ok) == []
    assert _failures(_log(MMA, "sm_80", smem=166913) + _log(MMA, "sm_90", smem=100))
    assert _failures(_log(MMA, "sm_80", smem=100) + _log(MMA, "sm_90", smem=232449))


def test_a_missing_arch_fails():
    assert _failures(_log(SIMT.format(64), "sm_80"))


def test_the_head_dim_bucket_is_the_last_template_integer():
    names = cuda_check.demangle([MMA, SIMT.format(128)])
    assert cuda_check.head_dim_bucket(names[MMA]) == 256
    assert cuda_check.head_dim_bucket(names[SIMT.format(128)]) == 128
