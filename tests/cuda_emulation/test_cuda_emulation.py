"""The CUDA backend's kernels (csrc/cuda), run on the CPU by the emulator, against the CPU kernels.

The emulated operators are ops.cu's own functions, with its launchers and every kernel of csrc/cuda
compiled for the host (tests/cuda_emulation/emulated_ops.cpp): the tensor-core forward and backward
(float16 / bfloat16, mma.sync emulated from the fragment layouts) and the SIMT kernels (float32, the
head-dim-256 backward, and every dtype under TEMPATTN_CUDA_SIMT=1). They are compared with the C++ CPU
kernels (the "cpu" backend, itself checked against the float64 oracle by tests/ops) through the same
tempattn_C schemas, forward and every gradient, over several 64-key blocks, partial tiles, every
head-dim bucket, masks, key bias, windows, timestamps, dropout, coarse-lse rows and non-finite inputs.

What this cannot show (the GPU checks of .ci/gpu-check do): the real instructions' rounding order, races
between concurrent blocks, and speed.
"""
import pytest
import torch

import tempattn
from tempattn.ops.decay_attention.op import DECAY_ATTENTION
from tempattn.ops.masked_sdpa.op import MASKED_SDPA
from tempattn.ops.relpos_attention.op import RELPOS_ATTENTION
from tests.cuda_emulation import emulated_ops
from tests.ops.cases import Case, make_inputs, key_valid
from tests.ops.coarse_lse import BIASES

pytestmark = pytest.mark.skipif(not tempattn.backends()["cpu"]["available"], reason="the C++ extension is not built")

# The operators' declarations: the tensors and configuration of their tempattn_C schemas, in order.
DECLARED = {d.name: d for d in (MASKED_SDPA, RELPOS_ATTENTION, DECAY_ATTENTION)}
OPS = tuple(DECLARED)

# Each op at: several 64-key / 64-row blocks with partial last ones (causal, D not a multiple of 16),
# a rectangular non-causal-or-windowed case with Dv != D, and the 128 / 256 head-dim buckets.
CASES = [
    Case("masked_sdpa", B=1, H=2, Tq=150, Tk=150, D=40, Dv=40, mask="padding", key_bias="3d"),
    Case("masked_sdpa", B=2, H=1, Tq=70, Tk=133, D=64, Dv=24, causal=False, mask="valid", key_bias="3d"),
    Case("masked_sdpa", B=2, H=1, Tq=80, Tk=80, D=128, Dv=96, mask="empty_sequence"),
    Case("masked_sdpa", B=1, H=1, Tq=40, Tk=70, D=200, Dv=256, key_bias="3d"),
    Case("relpos_attention", B=1, H=2, Tq=150, Tk=150, D=40, Dv=40, R=9, mask="padding", key_bias="3d"),
    Case("relpos_attention", B=1, H=2, Tq=90, Tk=140, D=64, Dv=48, window=37, key_bias="3d"),
    Case("relpos_attention", B=1, H=1, Tq=70, Tk=70, D=128, Dv=128, window=20),
    Case("decay_attention", B=1, H=2, Tq=150, Tk=150, D=40, Dv=40, S=3, mask="padding", key_bias="3d"),
    Case("decay_attention", B=2, H=1, Tq=90, Tk=140, D=64, Dv=64, S=2, times=True, window=50, eps=0.0),
    Case("decay_attention", B=1, H=1, Tq=70, Tk=70, D=128, Dv=128, S=2, times=True),
    Case("decay_attention", B=1, H=1, Tq=33, Tk=33, D=256, Dv=256, S=1),
]

# Max error bounds relative to each tensor's magnitude, about 3x the largest seen over CASES: float32 runs the
# same formula in float32 on both sides (the order of the sums differs); at 16 bits the output (and so
# rowsum(dO * O)) is rounded to the input dtype and P and dS are before the tensor-core products
# (FlashAttention's choice), against the CPU kernels' float32 on the same rounded inputs. The score parameters'
# gradients sum dS over whole rows, where P * (dP - rowsum(dO * O)) cancels: their relative error is larger.
RTOL = {torch.float32: 1e-5, torch.float16: 2.5e-3, torch.bfloat16: 2e-2}
PARAMETER_RTOL = {torch.float32: 1e-5, torch.float16: 1.5e-2, torch.bfloat16: 1e-1}


def rtol_of(name: str, dtype) -> float:
    return (RTOL if name in ("out", "lse", "q", "k", "v") else PARAMETER_RTOL)[dtype]


def _config(case: Case, seed: int) -> list:
    """The schema's configuration values, by name from the case (seed and scale given here)."""
    values = dict(seed=seed, scale=case.D ** -0.5)
    return [values[name] if name in values else getattr(case, name) for name, _ in DECLARED[case.op].config_specs]


def _raw_inputs(case: Case, dtype, seed=0) -> dict:
    """q, k, v in ``dtype``; key_valid (B, Tk) bool, key_bias (B, H, Tk) and the parameters in float32."""
    torch.manual_seed(seed)
    x = {n: t.detach() for n, t in make_inputs(case, dtype=torch.float32, requires_grad=False).items()}
    for n in ("q", "k", "v"):
        x[n] = x[n].to(dtype)
    x["key_valid"] = key_valid(x)
    x.pop("key_padding_mask", None)
    x.pop("key_valid_mask", None)
    return x


def run(ops, case: Case, x: dict, grad_out, grad_lse, seed=5, dtype=None):
    """(out, lse, {name: gradient}) of the raw forward and backward ops, q, k, v cast to ``dtype`` if given."""
    cast = {n: (t.to(dtype) if dtype is not None and n in ("q", "k", "v") else t) for n, t in x.items()}
    specs = DECLARED[case.op].tensor_specs
    tensors = [cast.get(name) for name, _, _ in specs]
    config = _config(case, seed)
    out, lse = getattr(ops, f"{case.op}_fwd")(*tensors, *config)
    grads = getattr(ops, f"{case.op}_bwd")(grad_out.to(out.dtype), out, grad_lse, lse, *tensors, *config)
    names = [name for name, _, differentiable in specs if differentiable and name in x]  # present ones, in order
    return out, lse, dict(zip(names, grads, strict=True))


def _cotangents(case: Case, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(case.B, case.H, case.Tq, case.Dv, generator=g),
            torch.randn(case.B, case.H, case.Tq, generator=g))


def assert_close(what, got, want, rtol):
    got, want = got.float(), want.float()
    assert torch.equal(torch.isfinite(got), torch.isfinite(want)), f"{what}: the non-finite entries differ"
    finite = torch.isfinite(want)
    if not finite.any():
        return
    scale = want[finite].abs().max().item() + 1e-6
    err = (got[finite] - want[finite]).abs().max().item()
    assert err <= rtol * scale, f"{what}: max error {err:.3g} > {rtol:.1g} x {scale:.3g}"


def _check_against_cpu(case, x, dtype):
    """The emulated ops on inputs ``x`` (q, k, v in ``dtype``) against the CPU kernels on the same values in
    float32: out, lse and every gradient."""
    grad_out, grad_lse = _cotangents(case)
    got = run(emulated_ops(), case, x, grad_out, grad_lse)
    want = run(torch.ops.tempattn_C, case, x, grad_out.to(dtype).float(), grad_lse, dtype=torch.float32)
    assert_close("out", got[0], want[0], rtol_of("out", dtype))
    assert_close("lse", got[1], want[1], rtol_of("lse", dtype))
    assert set(got[2]) == set(want[2])
    for name in want[2]:
        assert_close(f"d{name}", got[2][name], want[2][name], rtol_of(name, dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_emulated_cuda_kernels_match_the_cpu_kernels(case, dtype):
    _check_against_cpu(case, _raw_inputs(case, dtype), dtype)


@pytest.mark.parametrize("op", OPS)
def test_emulated_dropout_matches_the_cpu_kernels_bit_for_bit_in_its_keep_mask(op):
    """Same Philox keep decisions (a differing one moves an output by a whole probability), float32 (SIMT) and
    float16 (tensor cores)."""
    case = Case(op, B=1, H=2, Tq=90, Tk=90, D=32, Dv=32, dropout_p=0.3, key_bias="3d")
    for dtype in (torch.float32, torch.float16):
        _check_against_cpu(case, _raw_inputs(case, dtype), dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_emulated_simt_kernels_at_16_bits_match_the_cpu_kernels(op, dtype, monkeypatch):
    """TEMPATTN_CUDA_SIMT=1 (read at every call by the emulated build) runs the SIMT kernels at 16 bits."""
    monkeypatch.setenv("TEMPATTN_CUDA_SIMT", "1")
    case = next(c for c in CASES if c.op == op)
    _check_against_cpu(case, _raw_inputs(case, dtype), dtype)


def _coarse_inputs(op, bias):
    """Rows 0..63 with every key at ``bias`` and tied scores (tests/ops/coarse_lse.py): their float32 lse is
    coarse."""
    case = Case(op, B=1, H=2, Tq=130, Tk=130, D=16, Dv=16, key_bias="3d", **({"window": 8} if op != "masked_sdpa"
                                                                          else {}))
    x = _raw_inputs(case, torch.float32)
    x["k"][:, :, :64] = 0.0
    x["key_bias"] = torch.zeros(1, 2, 130)
    x["key_bias"][:, :, :64] = bias
    return case, x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("bias", BIASES)
@pytest.mark.parametrize("op", OPS)
def test_emulated_gradients_of_rows_with_a_coarse_lse_match_the_cpu_kernels(op, bias, dtype):
    case, x = _coarse_inputs(op, bias)
    _check_against_cpu(case, {n: (t.to(dtype) if n in ("q", "k", "v") else t) for n, t in x.items()}, dtype)


POISONED_ROW = 70  # in the second 64-row / 64-key block


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("name", ["q", "k", "v", "grad_out"])
@pytest.mark.parametrize("op", OPS)
def test_emulated_tensor_core_backward_keeps_a_non_finite_row_to_the_pairs_that_see_it(op, name, value):
    """A NaN / inf row reaches exactly the entries it reaches in the SIMT float32 backward (IEEE products over the
    admissible pairs only): the tensor-core blocks that meet it are redone exactly, so no 0 * inf leaks into keys
    (rows) that cannot see it; the other entries still agree to float16 rounding."""
    case = Case(op, B=1, H=1, Tq=150, Tk=150, D=32, Dv=32, key_bias="3d",
                **({"window": 40} if op != "masked_sdpa" else {}))
    x = _raw_inputs(case, torch.float16)
    grad_out, grad_lse = _cotangents(case)
    if name == "grad_out":
        grad_out[0, 0, POISONED_ROW] = value
    else:
        x[name][0, 0, POISONED_ROW] = value
    got = run(emulated_ops(), case, x, grad_out, grad_lse)
    simt = run(emulated_ops(), case, x, grad_out.half().float(), grad_lse, dtype=torch.float32)
    for grad_name in simt[2]:
        assert_close(f"d{grad_name}", got[2][grad_name], simt[2][grad_name], rtol_of(grad_name, torch.float16))

