"""The CUDA extension kernels (backend "cuda") against the float64 oracle and the Triton kernels.

These run on a GPU only (`.ci/gpu-check` runs them, `-k cuda`); here they are collected and skip.
The backend-parametrised suite covers "cuda" through its cuda-cuda target besides; this file adds what
is specific to the CUDA kernels: every head-dim bucket (64 / 128 / 256, D != Dv), windows and
timestamps on the tile-skipping paths, several 64-key blocks of the tensor-core kernels (float16 /
bfloat16), the dropout keep mask bit for bit (against tempattn.testing.dropout_keep_mask through the
oracle, and against Triton's output), bitwise reproducible gradients (no float atomics), and the
tensor-core backward's exact redo of blocks that meet a non-finite input.

.ci/gpu-check runs this file twice: as is (tensor-core kernels at 16 bits) and with TEMPATTN_CUDA_SIMT=1
(the SIMT kernels at every dtype).
"""
import pytest
import torch

import tempattn
from tests.ops.cases import DIFFERENTIABLE, Case, call, gradients, loss_weights, make_inputs, oracle, scalar_loss
from tests.ops.coarse_lse import BIASES, OPS, assert_gradients_match_the_float32_formula

CUDA_READY = torch.cuda.is_available() and tempattn.backends()["cuda"]["available"]
TRITON_READY = torch.cuda.is_available() and tempattn.backends()["triton"]["available"]
pytestmark = pytest.mark.skipif(not CUDA_READY, reason=tempattn.backends()["cuda"]["reason"] or "no CUDA device")

CASES = [
    Case("masked_sdpa", causal=False, Tq=37, Tk=70, D=64, Dv=64, mask="padding", key_bias="3d"),
    Case("masked_sdpa", causal=True, Tq=50, Tk=83, D=128, Dv=40, mask="empty_sequence"),
    Case("masked_sdpa", causal=True, Tq=33, Tk=33, D=256, Dv=256, key_bias="2d"),
    Case("relpos_attention", Tq=45, Tk=77, D=32, Dv=32, window=9, mask="valid", key_bias="3d"),
    Case("relpos_attention", Tq=64, Tk=64, D=96, Dv=160, window=None, R=12),
    Case("decay_attention", Tq=40, Tk=72, D=64, Dv=64, S=3, mask="padding"),
    Case("decay_attention", Tq=41, Tk=41, D=128, Dv=128, S=2, times=True, window=17, eps=0.0),
    # Several 64-row / 64-key blocks of the tensor-core kernels, partial last blocks, D not a multiple of 16.
    Case("masked_sdpa", B=1, causal=True, Tq=200, Tk=263, D=40, Dv=40, mask="padding", key_bias="3d"),
    Case("relpos_attention", B=1, Tq=300, Tk=300, D=128, Dv=128, window=100, key_bias="2d"),
    Case("decay_attention", B=1, Tq=1024, Tk=1024, D=64, Dv=64, S=2, times=True, eps=0.0),
]


@pytest.fixture(autouse=True)
def on_cuda():
    """The oracle and the cotangents build their tensors on the default device (conftest restores it)."""
    torch.set_default_device("cuda")


# Mean-absolute-error bounds of the kernels against the float64 oracle (the inputs are O(1)).
TOLERANCE = {torch.float32: 2e-5, torch.float16: 3e-3, torch.bfloat16: 2.5e-2}


def _run(case, x, backend, seed=1234):
    out, lse = call(case, x, backend, seed=seed)
    w_out, w_lse = loss_weights(out, lse)
    grads = gradients(case, x, scalar_loss(out, lse, w_out.to(out.device), w_lse.to(out.device)))
    return out, lse, grads, (w_out, w_lse)


def _close(got, want, dtype, what):
    got, want = got.double(), want.double()
    assert torch.equal(torch.isfinite(got), torch.isfinite(want)), f"{what}: non-finite entries differ"
    finite = torch.isfinite(want)
    err = (got[finite] - want[finite]).abs().mean().item() if finite.any() else 0.0
    scale = max(want[finite].abs().mean().item(), 1.0) if finite.any() else 1.0
    assert err <= TOLERANCE[dtype] * scale, f"{what}: mean abs error {err:.3g} > {TOLERANCE[dtype] * scale:.3g}"


@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_cuda_matches_the_float64_oracle(case, dtype, dropout_p):
    case = case.with_(dropout_p=dropout_p)
    x = make_inputs(case, dtype=dtype, device="cuda")
    out, lse, grads, (w_out, w_lse) = _run(case, x, "cuda")
    ref = {n: t.detach().double().requires_grad_(t.requires_grad) if t.is_floating_point() else t for n, t in x.items()}
    want_out, want_lse = oracle(case, ref, seed=1234)
    want_grads = gradients(case, ref, scalar_loss(want_out, want_lse, w_out.to("cuda"), w_lse.to("cuda")))
    _close(out, want_out, dtype, "out")
    _close(lse, want_lse, torch.float32, "lse")
    for name in grads:
        _close(grads[name], want_grads[name], dtype, f"d{name}")


@pytest.mark.skipif(not TRITON_READY, reason="triton is not available on this GPU")
@pytest.mark.parametrize("case", CASES, ids=str)
def test_cuda_matches_triton_with_the_same_dropout_mask(case):
    case = case.with_(dropout_p=0.25)
    x = make_inputs(case, dtype=torch.float32, device="cuda")
    out_c, lse_c, grads_c, _ = _run(case, x, "cuda", seed=987654321)
    out_t, lse_t, grads_t, _ = _run(case, x, "triton", seed=987654321)
    # One differing keep decision moves an output by a whole probability: far above these bounds.
    torch.testing.assert_close(out_c, out_t, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lse_c, lse_t, rtol=1e-5, atol=1e-5)
    for name in grads_c:
        torch.testing.assert_close(grads_c[name], grads_t[name], rtol=1e-3, atol=1e-4, msg=f"d{name}")


@pytest.mark.parametrize("case", CASES, ids=str)
def test_cuda_gradients_are_bitwise_reproducible(case):
    case = case.with_(dropout_p=0.1, key_bias="3d")
    x = make_inputs(case, dtype=torch.bfloat16, device="cuda")
    first, second = _run(case, x, "cuda"), _run(case, x, "cuda")
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    for name in DIFFERENTIABLE[case.op]:
        if name in first[2]:
            assert torch.equal(first[2][name], second[2][name]), f"d{name} differs between two runs"


# The backward's prepass renormalises rows whose float32 lse is coarse (common::lse_is_coarse), for the SIMT
# (float32) and the tensor-core (float16 / bfloat16) passes alike.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("bias", BIASES)
@pytest.mark.parametrize("op", OPS)
def test_cuda_gradients_of_rows_with_every_key_biased_match_the_float32_formula(op, bias, dtype):
    assert_gradients_match_the_float32_formula(op, bias, "cuda", dtype)


POISONED_ROW = 70  # in the second 64-row / 64-key block of the tensor-core kernels


def _poisoned_gradients(case, x, dtype, name, value):
    """The cuda gradients with row POISONED_ROW of head 0 of ``name`` (q, k, v or the output's cotangent) set
    to ``value``, every input given in ``dtype``."""
    y = {n: (t.detach().to(dtype) if n in ("q", "k", "v") else t.detach()).requires_grad_(t.requires_grad)
         for n, t in x.items()}
    if name in y:
        with torch.no_grad():
            y[name][0, 0, POISONED_ROW] = value
    out, lse = call(case, y, "cuda")
    w_out, w_lse = loss_weights(out, lse)
    w_out = w_out.to("cuda")
    if name == "grad_out":
        w_out[0, 0, POISONED_ROW] = value
    return gradients(case, y, scalar_loss(out, lse, w_out, torch.zeros_like(w_lse).to("cuda")))


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("name", ["q", "k", "v", "grad_out"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_tensor_core_gradients_keep_a_non_finite_row_to_the_pairs_that_see_it(op, dtype, name, value):
    """A NaN / inf row of q, k, v or dO reaches exactly the gradient entries it reaches in the SIMT float32
    backward (IEEE products over the admissible pairs only): a tensor-core block that meets it is redone exactly,
    and no 0 * inf leaks into keys (rows) that cannot see it. Finite entries agree to the 16-bit rounding."""
    case = Case(op, B=1, H=2, Tq=150, Tk=150, D=64, Dv=64, mask="padding", key_bias="3d",
                **({"window": 40} if op != "masked_sdpa" else {}))
    torch.manual_seed(0)
    x = make_inputs(case, dtype=torch.float32, device="cuda")
    torch.manual_seed(1)
    got = _poisoned_gradients(case, x, dtype, name, value)
    torch.manual_seed(1)  # the same cotangents
    x32 = {n: (t.detach().to(dtype).float() if n in ("q", "k", "v") else t.detach()).requires_grad_(t.requires_grad)
           for n, t in x.items()}
    want = _poisoned_gradients(case, x32, torch.float32, name, value)
    for grad_name in got:
        g, w = got[grad_name].float(), want[grad_name]
        assert torch.equal(torch.isfinite(g), torch.isfinite(w)), f"d{grad_name}: non-finite entries differ"
        finite = torch.isfinite(w)
        scale = w[finite].abs().max().item() + 1.0 if finite.any() else 1.0
        err = (g[finite] - w[finite]).abs().max().item() if finite.any() else 0.0
        assert err <= 32 * torch.finfo(dtype).eps * scale, f"d{grad_name}: max error {err:.3g} (scale {scale:.3g})"


def test_auto_keeps_triton_until_the_cuda_kernels_are_validated_here():
    from tempattn import _dispatch
    q = torch.randn(1, 1, 4, 8, device="cuda")
    for op in ("masked_sdpa", "relpos_attention", "decay_attention"):
        chosen = _dispatch._resolve(op, "auto", q.device)
        assert chosen == ("cuda" if _dispatch.cuda_validated(op, q.device) else "triton")
    note = tempattn.backends()["cuda"]["note"]
    assert "validated" in note
