"""The Triton loops' TMA path (tensor descriptors, sm_90): the launcher's rule (``launch.use_tma``,
``configs.tma_eligible``), the descriptors ``plan()`` passes, the forward autotuner's re-blocking, what the
compile gate compiles for sm_90; and the three operators with their loops' tiles read by descriptors
(TEMPATTN_TRITON_TMA=1) against the float64 reference, forward and every gradient, at odd lengths and head
dims and with strided inputs: under TRITON_INTERPRET=1, and on an sm_90 GPU with the pointer path too.
"""
import itertools
import os

import pytest
import torch

pytest.importorskip("triton")
import tempattn  # noqa: E402
from tempattn.kernels.common import configs as C  # noqa: E402
from tempattn.kernels.common import launch as L  # noqa: E402

from tests.conftest import TARGETS  # noqa: E402
from tests.kernels.test_triton_configs import _gate, _ptxas_available  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's log2(0)
# Triton's compiler does not run in a process that started under the interpreter (triton's own library
# functions were jitted as interpreted ones at import): make test runs this file without it first.
STARTED_INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
needs_descriptors = pytest.mark.skipif(not L.TRITON_HAS_TMA, reason=f"TMA needs triton >= {L.TMA_MIN_TRITON}")


def _operands(dtype=torch.float16, B=2, H=3, T=96, D=64, Dv=None):
    q, k, v = (torch.zeros(B, H, T, d, dtype=dtype) for d in (D, D, Dv or D))
    kw = dict(mod="masked_sdpa", key_valid=None, key_bias=None, mod_a=None, mod_b=None, times=None, causal=True,
              window=-1, eps=0.0, dropout_p=0.0, seed=0, scale=D ** -0.5, precision=L.dtype_name(dtype, False))
    return q, k, v, kw


def _forward_plan(config, q, k, v, kw, arch, **extra):
    B, H, Tq, _ = q.shape
    return L.plan("fwd", config, q, k, v, out=torch.empty(B, H, Tq, v.shape[3], dtype=q.dtype),
                  lse=torch.empty(B, H, Tq), redo=L.redo_flags(q), arch=arch, **extra, **kw)


@pytest.fixture
def auto(monkeypatch):
    """The launcher's own choice, as on a GPU: no interpreter, TEMPATTN_TRITON_TMA unset."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv(L.TMA_ENV, raising=False)


def test_tma_switch_values(monkeypatch):
    for value, mode in (("", "auto"), ("0", "off"), ("1", "on")):
        monkeypatch.setenv(L.TMA_ENV, value)
        assert L.tma_mode() == mode
    monkeypatch.setenv(L.TMA_ENV, "yes")
    with pytest.raises(ValueError, match=r"TEMPATTN_TRITON_TMA must be unset, 0 or 1, got 'yes'"):
        L.tma_mode()


@pytest.mark.parametrize("kernel, config, dtype, aligned, want", [
    ("fwd", "128x64w8s3", "fp16", True, True),
    ("fwd", "64x32w8s2", "bf16", True, True),      # the heavy forward: 64 rows, two warp groups
    ("dq", "64x64w4s3", "fp16", True, True),
    ("dq", "16x32w8s2", "fp16", True, False),      # 16-row dots: mma.sync
    ("dkdv", "32x64w8s2", "fp16", True, False),    # q / dO tiles also feed the 32-row dots
    ("dkdv", "64x64w4s2", "fp16", True, True),
    ("fwd", "128x64w8s3", "fp32", True, False),
    ("fwd", "128x64w8s3", "tf32", True, False),
    ("fwd", "128x64w8s3", "fp16", False, False),   # head dim 72: a 128-wide block over 72 columns
])
def test_tma_eligibility_rule(kernel, config, dtype, aligned, want):
    assert C.tma_eligible(kernel, C.parse_config(config), dtype, aligned) is want


def test_forward_candidates_agree_on_tma():
    """The autotuner launches every candidate with the default's USE_TMA: the rule must not tell them apart."""
    for arch, dtype, d in itertools.product((90, 100), C.DTYPES, (16, 32, 64, 128, 256)):
        for (mod, dropout), aligned in itertools.product(
                [("masked_sdpa", False), ("masked_sdpa", True), ("relpos_attention", False)], (True, False)):
            cands = C.candidates("fwd", arch, dtype, d, d, mod, dropout, aligned)
            assert len({C.tma_eligible("fwd", c, dtype, aligned) for c in cands}) == 1, (arch, dtype, d, mod, cands)


@needs_descriptors
def test_plan_passes_descriptors_on_sm90_only(auto):
    q, k, v, kw = _operands(D=64)
    config = C.parse_config("128x64w8s3")
    _, _, args, kwargs = _forward_plan(config, q, k, v, kw, arch=90)
    descriptors = [a for a in args if isinstance(a, L.TensorDescriptor)]
    assert kwargs["USE_TMA"] is True and len(descriptors) == 2
    assert [d.block_shape for d in descriptors] == [[1, 1, 64, 64]] * 2
    assert descriptors[0].base is k and descriptors[1].base is v
    for arch in (80, 89):
        _, _, args, kwargs = _forward_plan(config, q, k, v, kw, arch=arch)
        assert kwargs["USE_TMA"] is False and not any(isinstance(a, L.TensorDescriptor) for a in args)
    _, _, _, kwargs = _forward_plan(C.redo_config(64, 64), q, k, v, kw, arch=90, redo_pass=True)
    assert kwargs["USE_TMA"] is False


@needs_descriptors
def test_dkdv_descriptors_cover_q_and_grad_out(auto, monkeypatch):
    monkeypatch.setenv(L.TMA_ENV, "1")
    q, k, v, kw = _operands(D=64, Dv=32)
    B, H, T, _ = q.shape
    do = torch.zeros_like(v)
    _, _, args, kwargs = L.plan("dkdv", C.parse_config("32x64w8s2"), q, k, v, grad_out=do,
                                delta=torch.zeros(B, H, T), norm=torch.zeros(B, H, T, 2),
                                outputs=(torch.empty_like(k), torch.empty_like(v), None), redo=L.redo_flags(k),
                                arch=90, **kw)
    descriptors = [a for a in args if isinstance(a, L.TensorDescriptor)]
    assert kwargs["USE_TMA"] is True
    assert [(d.base is t, d.block_shape) for d, t in zip(descriptors, (q, do))] == \
        [(True, [1, 1, 32, 64]), (True, [1, 1, 32, 32])]


@needs_descriptors
@pytest.mark.parametrize("layout", ["expanded", "offset", "wide_last_stride"])
def test_tensors_tma_cannot_read_take_the_pointer_path(auto, layout):
    q, k, v, kw = _operands(D=64)
    if layout == "expanded":  # one key head for every query head: stride 0
        k = k[:, :1].expand_as(q)
    elif layout == "offset":  # a base 2 bytes past a 16-byte boundary
        k = torch.zeros(q.numel() + 1, dtype=q.dtype)[1:].view_as(q)
    else:
        k = torch.zeros(*q.shape[:3], 128, dtype=q.dtype)[..., ::2]
    assert not L.tma_fits(k)
    _, _, _, kwargs = _forward_plan(C.parse_config("128x64w8s3"), q, k, v, kw, arch=90)
    assert kwargs["USE_TMA"] is False


@needs_descriptors
def test_autotune_pre_hook_reblocks_each_candidate():
    k, v = torch.zeros(1, 1, 64, 64, dtype=torch.float16), torch.zeros(1, 1, 64, 32, dtype=torch.float16)
    nargs = dict(K_DESC=L.TensorDescriptor(k, list(k.shape), list(k.stride()), [1, 1, 16, 64]),
                 V_DESC=L.TensorDescriptor(v, list(v.shape), list(v.stride()), [1, 1, 16, 32]),
                 BLOCK_N=128, HEAD_DIM=64, HEAD_DIM_V=32)
    L._reblock_loop_descriptors(nargs)
    assert nargs["K_DESC"].block_shape == [1, 1, 128, 64] and nargs["V_DESC"].block_shape == [1, 1, 128, 32]
    L._reblock_loop_descriptors(dict(nargs, K_DESC=k, V_DESC=v))  # pointers (no TMA): left alone


@needs_descriptors
@pytest.mark.skipif(not _ptxas_available() or STARTED_INTERPRETING,
                    reason="needs the ptxas that ships with triton, in a process not started under the interpreter")
def test_gate_compiles_tma_as_launched(auto, tmp_path, monkeypatch):
    """sm_90's forward and dQ with wgmma tiles read their loop tiles by TMA; sm_80's and dK/dV's by pointers.
    Compiled, the TMA forward keeps its wgmma and spills nothing."""
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    gate = _gate()
    specs = [gate.Spec("fwd", "masked_sdpa", "mask", "fp16", 64, arch, "128x64w8s3") for arch in (90, 80)]
    sm90, sm80 = gate._compile_group(specs[:1]) + gate._compile_group(specs[1:])
    assert sm90.ok and sm80.ok, (sm90.error, sm80.error)
    assert sm90.tma and not sm80.tma
    assert sm90.wgmma > 0 and sm90.spill_stores == 0 and not gate.check(sm90, C)
    assert gate._source(gate.Spec("dkdv", "masked_sdpa", "mask", "fp16", 64, 90, "32x64w8s2"))[4] is False
    assert gate._source(gate.Spec("dq", "masked_sdpa", "mask", "fp16", 64, 90, "64x64w4s3"))[4] is True


# ---- the TMA path run: by the interpreter (descriptors forced on CPU tensors) or on an sm_90 GPU --------------

TRITON = [t for t in TARGETS if t.backend == "triton" and t.unavailable is None]
DEVICE = TRITON[0].device if TRITON else "cpu"
RUNS_TMA = bool(TRITON) and L.TRITON_HAS_TMA and (DEVICE == "cpu" or L.device_arch(DEVICE) >= 90)


def _params(op, H, gen):
    """The operator's differentiable parameters (float64) and its other arguments."""
    if op == "relpos_attention":
        return dict(rel_bias=torch.randn(H, 9, generator=gen, dtype=torch.float64) * 0.3), dict(window=8)
    if op == "decay_attention":
        return dict(log_gamma=-torch.rand(H, 2, generator=gen, dtype=torch.float64),
                    alpha_logits=torch.randn(H, 2, generator=gen, dtype=torch.float64)), {}
    return {}, dict(causal=True)


@pytest.mark.skipif(not RUNS_TMA, reason="needs TRITON_INTERPRET=1 or an sm_90 GPU, and triton >= 3.6")
@pytest.mark.parametrize("op", ["masked_sdpa", "relpos_attention", "decay_attention"])
@pytest.mark.parametrize("T, D, layout", [(63, 40, "contiguous"), (70, 16, "transposed"), (33, 32, "sliced")])
@pytest.mark.parametrize("tma", ["1", "0"])
def test_tma_path_matches_float64_reference(op, T, D, layout, tma, monkeypatch):
    """TEMPATTN_TRITON_TMA=1: every main loop reads by descriptors; =0 (on a GPU only: the interpreter runs the
    pointer path in the whole contract suite): none does."""
    if tma == "0" and DEVICE == "cpu":
        pytest.skip("the interpreter's pointer path is the contract suite's")
    monkeypatch.setenv(L.TMA_ENV, tma)
    seen = []
    plan = L.plan

    def spy(kernel, *args, **kwargs):
        out = plan(kernel, *args, **kwargs)
        seen.append((kernel, out[3].get("USE_TMA"), kwargs.get("redo_pass", False)))
        return out

    monkeypatch.setattr(L, "plan", spy)
    B, H = 2, 3
    gen = torch.Generator().manual_seed(T * D)

    def leaf():
        if layout == "transposed":  # (B, T, H, D) memory, seen as (B, H, T, D)
            x = torch.randn(B, T, H, D, generator=gen, dtype=torch.float64).transpose(1, 2)
        elif layout == "sliced":  # every other row of a longer sequence: row stride 2 * D
            x = torch.randn(B, H, 2 * T, D, generator=gen, dtype=torch.float64)[:, :, ::2]
        else:
            x = torch.randn(B, H, T, D, generator=gen, dtype=torch.float64)
        return x.to(DEVICE)

    q64, k64, v64 = (leaf().requires_grad_() for _ in range(3))
    params64, options = _params(op, H, gen)
    params64 = {name: p.to(DEVICE).requires_grad_() for name, p in params64.items()}
    q, k, v = (x.detach().float().requires_grad_() for x in (q64, k64, v64))
    params = {name: p.detach().float().requires_grad_() for name, p in params64.items()}
    fn = getattr(tempattn, op)
    out = fn(q, k, v, *params.values(), **options, backend="triton")
    ref = fn(q64, k64, v64, *params64.values(), **options, backend="reference")
    weight = torch.randn(ref.shape, generator=gen, dtype=torch.float64).to(DEVICE)
    got = torch.autograd.grad((out.double() * weight).sum(), [q, k, v, *params.values()])
    want = torch.autograd.grad((ref * weight).sum(), [q64, k64, v64, *params64.values()])
    torch.testing.assert_close(out.double(), ref, rtol=2e-4, atol=2e-5)
    for name, a, b in zip(["q", "k", "v", *params], got, want):
        torch.testing.assert_close(a.double(), b, rtol=2e-4, atol=2e-5, msg=lambda m: f"d{name}: {m}")
    main = {kernel: tma for kernel, tma, redo in seen if not redo and kernel != "norm"}
    assert main == dict.fromkeys(("fwd", "dkdv", "dq"), tma == "1"), seen
