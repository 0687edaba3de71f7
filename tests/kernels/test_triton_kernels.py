"""The Triton core's tiling under TRITON_INTERPRET=1 (16 x 16 tiles): the causal split of the tile loops,
the window's tile ranges, and the relpos backward's per-tile band (diagonal sums carried from key tile to
key tile), each against the float64 reference over shapes that cross many tiles, with Tq != Tk.

Run under TRITON_INTERPRET=1 (CPU) or on a GPU; skipped otherwise.
"""
import math

import pytest
import torch

import tempattn
from tests.conftest import TARGETS
from tests.ops import coarse_lse

TRITON = [t for t in TARGETS if t.backend == "triton" and t.unavailable is None]
pytestmark = [pytest.mark.skipif(not TRITON, reason="the triton backend needs TRITON_INTERPRET=1 or a GPU"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]
DEVICE = TRITON[0].device if TRITON else "cpu"
TOL = dict(rtol=2e-4, atol=2e-5)


def _leaves(*shapes, dtype=torch.float32):
    return [torch.randn(*s, dtype=torch.float64).to(DEVICE, dtype).requires_grad_() for s in shapes]


def _grads(fn, tensors, weight):
    out = fn(*tensors)
    return [out.detach().double().cpu()] + [g.double().cpu() for g in
                                            torch.autograd.grad((out.double() * weight).sum(), tensors)]


def _compare(fn_triton, fn_reference, shapes):
    x = _leaves(*shapes)
    x64 = [t.detach().double().cpu().requires_grad_() for t in x]
    weight = torch.randn(fn_reference(*x64).shape, dtype=torch.float64)
    got = _grads(fn_triton, x, weight.to(DEVICE))
    want = _grads(fn_reference, x64, weight)
    for name, a, b in zip(["out"] + [f"d{i}" for i in range(len(x))], got, want):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("Tq, Tk", [(37, 37), (16, 64), (50, 83), (1, 47), (64, 64), (33, 17)])
def test_triton_causal_split_matches_reference(Tq, Tk):
    """Tiles below the causal diagonal skip its mask, the diagonal tiles keep it (bottom-right aligned)."""
    if Tq > Tk:
        pytest.skip("causal needs Tq <= Tk")

    def run(backend):
        return lambda q, k, v: tempattn.masked_sdpa(q, k, v, causal=True, backend=backend)

    _compare(run("triton"), run("reference"), [(1, 2, Tq, 16), (1, 2, Tk, 16), (1, 2, Tk, 16)])


@pytest.mark.parametrize("Tq, Tk, window, R", [(70, 70, 20, 21), (40, 90, 33, 34), (61, 61, 0, 1), (80, 80, 3, 4),
                                               (45, 45, None, 50), (70, 70, None, 5), (23, 71, 100, 101),
                                               (64, 64, 16, 17), (1, 64, 31, 32)])
def test_triton_relpos_band_tiles_match_reference(Tq, Tk, window, R):
    """The relpos backward's band: per query tile, diagonal sums carried across key tiles, the shared last
    column summed apart; windows that end inside a tile, past the table, and Tq < Tk."""
    def run(backend):
        return lambda q, k, v, rel: tempattn.relpos_attention(q, k, v, rel, window=window, backend=backend)

    _compare(run("triton"), run("reference"), [(2, 2, Tq, 16), (2, 2, Tk, 16), (2, 2, Tk, 16), (2, R)])


def test_triton_relpos_band_with_key_mask_and_bias():
    B, H, T, R = 2, 2, 53, 12
    valid = torch.rand(B, T) > 0.3
    valid[:, 0] = True

    def run(backend):
        return lambda q, k, v, rel, kb: tempattn.relpos_attention(
            q, k, v, rel, window=R - 1, key_padding_mask=~valid.to(DEVICE), key_bias=kb, backend=backend)

    _compare(run("triton"), run("reference"), [(B, H, T, 16), (B, H, T, 16), (B, H, T, 16), (H, R), (B, H, T)])


@pytest.mark.parametrize("Tq, Tk, window", [(60, 60, 17), (30, 75, 40), (50, 50, None)])
def test_triton_decay_tiles_match_reference(Tq, Tk, window):
    def run(backend):
        return lambda q, k, v, lg, al: tempattn.decay_attention(
            q, k, v, -torch.nn.functional.softplus(lg), al, window=window, eps=1e-6, backend=backend)

    x = [(1, 2, Tq, 16), (1, 2, Tk, 16), (1, 2, Tk, 16), (2, 3), (2, 3)]
    _compare(run("triton"), run("reference"), x)


def test_triton_relpos_band_memory_is_per_tile():
    """The band the dQ pass writes is (B, H, cdiv(Tq, BLOCK_M), R), not (B, H, Tq, R)."""
    from tempattn.kernels.common import attention_backward, attention_forward, configs
    B, H, T, D, R = 2, 3, 100, 16, 21
    q, k, v = (torch.randn(B, H, T, D, device=DEVICE) for _ in range(3))
    rel = torch.randn(H, R, device=DEVICE)
    kw = dict(mod="relpos_attention", key_valid=None, key_bias=None, mod_a=rel, mod_b=None, times=None,
              causal=True, window=R - 1, eps=0.0, dropout_p=0.0, seed=0, scale=D ** -0.5)
    out, lse = attention_forward(q, k, v, **kw)
    do = torch.randn_like(out)
    delta = (do * out).sum(-1)
    *_, band, none = attention_backward(do, delta, lse, q, k, v, **kw)
    block_m = configs.INTERPRETER_CONFIG.block_m if configs.interpreting() else None
    if block_m is not None:
        assert band.shape == (B, H, math.ceil(T / block_m), R)
    assert band.shape[2] < T and none is None


def test_triton_relpos_band_is_bitwise_deterministic():
    q, k, v = (torch.randn(2, 2, 70, 16, device=DEVICE) for _ in range(3))
    rel = torch.randn(2, 30, device=DEVICE, requires_grad=True)
    grads = []
    for _ in range(2):
        out = tempattn.relpos_attention(q, k, v, rel, window=None, backend="triton")
        grads.append(torch.autograd.grad(out.square().sum(), rel)[0])
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("where", ["v", "k", "q"])
def test_triton_exact_pass_keeps_non_finite_inputs_to_their_rows(where):
    """A NaN in one key's v / k, or one row's q, past the causal diagonal of most rows: the plain-dot loop
    leaks it (0 * NaN) into every row of the tile, the exact pass keeps it to the rows that admit it."""
    B, H, T, D = 1, 1, 40, 16
    q, k, v = (torch.randn(B, H, T, D, device=DEVICE) for _ in range(3))
    j = 29
    {"v": v, "k": k, "q": q}[where][0, 0, j, 3] = float("nan")
    out = tempattn.masked_sdpa(q, k, v, causal=True, backend="triton")
    bad = torch.isnan(out[0, 0]).any(-1)
    want = torch.zeros(T, dtype=torch.bool)
    want[j if where == "q" else slice(j, None)] = True
    assert torch.equal(bad.cpu(), want)


# The backward's row-norm prepass (attention_row_norm_kernel) renormalises rows whose float32 lse is coarse.
@pytest.mark.parametrize("bias", coarse_lse.BIASES)
@pytest.mark.parametrize("op", coarse_lse.OPS)
def test_triton_gradients_of_rows_with_every_key_biased_match_the_float32_formula(op, bias):
    with torch.device(DEVICE):
        coarse_lse.assert_gradients_match_the_float32_formula(op, bias, "triton")
