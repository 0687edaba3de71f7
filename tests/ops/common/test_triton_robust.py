"""Triton core robustness (docs/contract.md): non-finite inputs propagate, large score offsets stay exact.

- A NaN in q row i makes out row i and lse i NaN; a NaN in k_j, v_j or key_bias_j makes every
  row that admits key j NaN; rows that cannot see j stay exact, and so do the gradients that do
  not depend on the NaN. Only the admissibility rules (masks, causal, window) remove keys: NaN
  (or inf) in padded keys changes nothing.
- The online softmax stays exact when the running maximum jumps by any amount (key_bias of
  -1e4 / -1e9, eps=0 strong decays, scale=1e4), forward, lse and every gradient, against the
  float64 reference backend.

Run under TRITON_INTERPRET=1 (CPU) or on a GPU; skipped otherwise.
"""
import pytest
import torch

import tempattn
from tests.conftest import TARGETS
from tests.ops import dense

TRITON = [t for t in TARGETS if t.backend == "triton"]
pytestmark = [pytest.mark.skipif(not TRITON, reason="the triton backend needs TRITON_INTERPRET=1 or a GPU"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]  # numpy's NaN warnings under the interpreter

NAN, INF = float("nan"), float("inf")
TOL = dict(rtol=2e-4, atol=2e-5)
DIFFERENTIABLE = ("q", "k", "v", "key_bias", "rel_bias", "log_gamma", "alpha_logits")


def _call(op, x, backend, **kw):
    """(out, lse) of the public operator ``op`` on the tensors ``x``."""
    common = dict(key_padding_mask=x.get("key_padding_mask"), key_bias=x.get("key_bias"), return_lse=True,
                  backend=backend, **kw)
    if op == "masked_sdpa":
        return tempattn.masked_sdpa(x["q"], x["k"], x["v"], **common)
    if op == "relpos_attention":
        return tempattn.relpos_attention(x["q"], x["k"], x["v"], x["rel_bias"], **common)
    return tempattn.decay_attention(x["q"], x["k"], x["v"], x["log_gamma"], x["alpha_logits"], **common)


def _leaves(x, dtype, device):
    """Fresh leaves on ``device``: q/k/v in ``dtype``, the score parameters float32 (float64 with float64)."""
    out = {}
    for name, t in x.items():
        t = t.detach().clone()
        if t.is_floating_point():
            t = t.to(dtype if name in ("q", "k", "v") or dtype == torch.float64 else torch.float32)
        t = t.to(device)
        out[name] = t.requires_grad_(name in DIFFERENTIABLE)
    return out


def _run(op, x, backend, dtype, device, weights=None, **kw):
    """(out, lse, grads, weights): grads of sum(w_out * out) + sum(w_lse * lse over finite lse)."""
    y = _leaves(x, dtype, device)
    out, lse = _call(op, y, backend, **kw)
    if weights is None:
        weights = (torch.randn(out.shape, dtype=torch.float64), torch.randn(lse.shape, dtype=torch.float64))
    w_out, w_lse = (w.to(device) for w in weights)
    finite_lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    loss = (out.double() * w_out).sum() + (finite_lse.double() * w_lse).sum()
    names = [n for n in DIFFERENTIABLE if n in y]
    grads = dict(zip(names, torch.autograd.grad(loss, [y[n] for n in names])))
    return out.detach().cpu(), lse.detach().cpu(), {n: g.cpu() for n, g in grads.items()}, weights


def _compare_with_float64_reference(op, x, target, grad_floor=0.0, **kw):
    """Forward, lse and every gradient against the float64 reference; ``grad_floor`` adds an absolute
    tolerance of that fraction of each gradient's largest entry."""
    out, lse, grads, weights = _run(op, x, "triton", torch.float32, target.device, **kw)
    ref_out, ref_lse, ref_grads, _ = _run(op, x, "reference", torch.float64, "cpu", weights, **kw)
    torch.testing.assert_close(out.double(), ref_out, **TOL)
    assert torch.equal(torch.isneginf(lse), torch.isneginf(ref_lse)), "empty rows differ"
    torch.testing.assert_close(lse.double(), ref_lse, **TOL)
    for name, g in grads.items():
        assert torch.isfinite(g).all(), f"non-finite d{name}"
        atol = TOL["atol"] + grad_floor * ref_grads[name].abs().max().item()
        torch.testing.assert_close(g.double(), ref_grads[name], rtol=TOL["rtol"], atol=atol,
                                   msg=lambda m: f"d{name}: {m}")


# ---------------------------------------------------------------------------------------------
# Large score offsets: the running maximum jumps by ~1e9, ~1e4, ~1e3, or scores are ~1e5.
# ---------------------------------------------------------------------------------------------

def _qkv(B, H, Tq, Tk, D, Dv=None):
    return dict(q=torch.randn(B, H, Tq, D, dtype=torch.float64), k=torch.randn(B, H, Tk, D, dtype=torch.float64),
                v=torch.randn(B, H, Tk, Dv or D, dtype=torch.float64))


def _soft_masked_first_blocks(bias, T, D, causal, Tq=None):
    """masked_sdpa, key_bias ``bias`` on keys 0..31 (two interpreter tiles), a few keys lifted by +20."""
    Tq = T if Tq is None else Tq
    x = _qkv(1, 1, Tq, T, D)
    kb = torch.randn(1, 1, T, dtype=torch.float64)
    kb[..., :32] = bias
    kb[0, 0, T - 5] = 20.0   # the maximum jumps upwards late, too
    kb[0, 0, 40] = 20.0
    x["key_bias"] = kb
    return x, dict(causal=causal)


def _lattice(shape):
    return (torch.randn(shape, dtype=torch.float64) * 4).round().clamp(-12, 12) / 8


def _scale_1e4(T, D):
    """Causal scores ~1e5 with scale=1e4, every row one-hot in both precisions.

    q and k are multiples of 1/8, so q.k is exact in float32 and distinct scores are >= 1e4/64
    apart. Rows whose top score is tied are redrawn: a tie would leave lse = m + log 2, which
    a float32 lse near 1e5 cannot carry to 2e-4 (its ulp is ~0.008), for any kernel. The gradients
    get an absolute floor of 1e-5 of their largest entry: dS = P * (dP - delta) cancels to ~1e-7 in
    float32 and dq, dk carry it times scale (observed ~7e-7 of the largest entry).
    """
    x = dict(q=_lattice((1, 1, T, D)), k=_lattice((1, 1, T, D)), v=torch.randn(1, 1, T, D, dtype=torch.float64))
    for h in range(1):
        for i in range(T):
            while True:
                top = torch.topk(x["k"][0, h, :i + 1] @ x["q"][0, h, i], min(2, i + 1)).values
                if len(top) == 1 or top[0] != top[1]:
                    break
                x["q"][0, h, i] = _lattice((D,))
    return x, dict(causal=True, scale=1e4, grad_floor=1e-5)


def _strong_decay(T, D):
    """decay_attention with eps=0 and gamma in [1e-3, 0.05]: far keys sit ~1e3 below near ones."""
    x = _qkv(1, 1, T, T, D)
    x["log_gamma"] = torch.log(torch.empty(1, 3, dtype=torch.float64).uniform_(1e-3, 0.05))
    x["alpha_logits"] = torch.randn(1, 3, dtype=torch.float64)
    x["key_bias"] = torch.randn(1, T, dtype=torch.float64)
    return x, dict(eps=0.0)


def _relpos_far_tail(T, D):
    """relpos_attention, window=None: distances >= 15 share rel_bias = -1e4."""
    x = _qkv(1, 1, T, T, D)
    rel = torch.randn(1, 16, dtype=torch.float64)
    rel[:, -1] = -1e4
    x["rel_bias"] = rel
    return x, dict(window=None)


LARGE_OFFSET_CASES = {
    "sdpa-bias-1e9-T200": ("masked_sdpa", lambda: _soft_masked_first_blocks(-1e9, 200, 16, causal=False)),
    "sdpa-bias-1e4-causal-Tq168-T200": ("masked_sdpa", lambda: _soft_masked_first_blocks(-1e4, 200, 16, True, 168)),
    "sdpa-bias-1e9-T63-D40": ("masked_sdpa", lambda: _soft_masked_first_blocks(-1e9, 63, 40, causal=False)),
    "sdpa-scale1e4-causal-T300": ("masked_sdpa", lambda: _scale_1e4(300, 16)),
    "decay-eps0-strong-T200": ("decay_attention", lambda: _strong_decay(200, 16)),
    "relpos-tail-1e4-T63-D40": ("relpos_attention", lambda: _relpos_far_tail(63, 40)),
}


@pytest.mark.parametrize("target", TRITON, ids=str)
@pytest.mark.parametrize("name", list(LARGE_OFFSET_CASES))
def test_online_softmax_is_exact_when_the_running_max_jumps(name, target):
    op, build = LARGE_OFFSET_CASES[name]
    x, kw = build()
    _compare_with_float64_reference(op, x, target, **kw)


# ---------------------------------------------------------------------------------------------
# NaN propagation.
# ---------------------------------------------------------------------------------------------

def _admissible(op, B, H, Tq, Tk, pad, causal=True, window=None):
    """(B, H, Tq, Tk) bool admissibility, from the independent dense tables."""
    allowed = dense.allowed_table(Tq, Tk, causal, window)
    return (allowed[None, None] & ~pad[:, None, None, :]).expand(B, H, Tq, Tk)


def _expected_nan(adm, bad_rows, bad_keys, bad_v, Dv, D, kb_2d):
    """NaN masks of out, lse and each gradient for NaN sources.

    bad_rows (B, H, Tq): q row NaN. bad_keys (B, H, Tk): k_j or key_bias_j NaN.
    bad_v (B, H, Tk, Dv): v entries NaN. Loss weights are finite.
    """
    live = adm.any(-1)                                               # rows with an admissible key
    rows = (bad_rows | (adm & bad_keys[:, :, None, :]).any(-1)) & live  # lse NaN, every dS of the row NaN
    v_hit = (adm.double() @ bad_v.double()) > 0                      # out[i, d] reaches a NaN v[j, d]
    out = rows[..., None].expand(*rows.shape, Dv) | v_hit
    ds_rows = rows | v_hit.any(-1)                                   # delta_i = dO_i . out_i is NaN
    dk_keys = (adm & ds_rows[..., None]).any(-2)
    dv_keys = (adm & rows[..., None]).any(-2)                        # P is NaN only on rows with NaN lse
    return dict(out=out, lse=rows, q=ds_rows[..., None].expand(*rows.shape, D),
                k=dk_keys[..., None].expand(*dk_keys.shape, D), v=dv_keys[..., None].expand(*dv_keys.shape, Dv),
                key_bias=dk_keys.any(1) if kb_2d else dk_keys, ds_rows=ds_rows)


def _check_nan_pattern(got, expected, exact, what):
    """NaN exactly where expected; elsewhere equal to the float64 reference on sanitised inputs."""
    bad = torch.isnan(got)
    assert torch.equal(bad, expected), (f"{what}: NaN at {bad.nonzero().tolist()[:6]}... "
                                        f"expected at {expected.nonzero().tolist()[:6]}...")
    torch.testing.assert_close(got[~expected].double(), exact[~expected], **TOL, msg=lambda m: f"{what}: {m}")


def _nan_case(op):
    """(clean float64 inputs, dirty copy with the NaN sources and garbage under padding, expected masks, kwargs)."""
    B, H, Tq, Tk, D, Dv = 2, 2, 48, 48, 16, 24
    kw = {}
    if op == "decay_attention":
        Tq = 30   # cross attention: query i sits at i + 18
    x = _qkv(B, H, Tq, Tk, D, Dv)
    pad = torch.zeros(B, Tk, dtype=torch.bool)
    pad[:, 0] = True          # causal row 0 of a square problem has no admissible key
    pad[1, 40:] = True
    pad[0, 25] = True
    x["key_padding_mask"] = pad
    window = None
    if op == "masked_sdpa":
        x["key_bias"] = torch.randn(B, H, Tk, dtype=torch.float64)
        kw = dict(causal=True)
    elif op == "relpos_attention":
        window = 3
        x["rel_bias"] = torch.randn(H, window + 1, dtype=torch.float64)
        x["key_bias"] = torch.randn(B, Tk, dtype=torch.float64)
        kw = dict(window=window)
    else:
        x["log_gamma"] = torch.log(torch.empty(H, 3, dtype=torch.float64).uniform_(0.5, 0.99))
        x["alpha_logits"] = torch.randn(H, 3, dtype=torch.float64)
        x["key_bias"] = torch.randn(B, H, Tk, dtype=torch.float64)
    kb_2d = x["key_bias"].dim() == 2

    dirty = {n: t.clone() for n, t in x.items()}
    bad_rows = torch.zeros(B, H, Tq, dtype=torch.bool)
    bad_keys = torch.zeros(B, H, Tk, dtype=torch.bool)
    bad_v = torch.zeros(B, H, Tk, Dv, dtype=torch.bool)
    # One source per (batch, head) slice, placed inside and on the edges of 16-wide tiles.
    rows = (0, 21) if Tq == Tk else (0, 13)       # row 0 of a square problem is empty: it stays zeros
    for i in rows:
        dirty["q"][0, 0, i, 2] = NAN
        bad_rows[0, 0, i] = True
    dirty["k"][0, 1, 16, 3] = NAN
    bad_keys[0, 1, 16] = True
    dirty["v"][1, 0, 7, 5] = NAN
    bad_v[1, 0, 7, 5] = True
    if kb_2d:
        dirty["key_bias"][1, 33] = NAN
        bad_keys[1, :, 33] = True
    else:
        dirty["key_bias"][1, 1, 33] = NAN
        bad_keys[1, 1, 33] = True
    # Padded keys carry NaN / inf everywhere: they must change nothing.
    for name, fill in (("k", NAN), ("v", INF)):
        dirty[name][:, :, 40:][pad[:, None, 40:, None].expand(B, H, 8, dirty[name].shape[-1])] = fill
        dirty[name][0, :, 25] = fill
    dirty["v"][0, :, 0, 1] = NAN
    if kb_2d:
        dirty["key_bias"][pad] = NAN
    else:
        dirty["key_bias"].masked_fill_(pad[:, None, :], NAN)

    adm = _admissible(op, B, H, Tq, Tk, pad, window=window)
    expected = _expected_nan(adm, bad_rows, bad_keys, bad_v, Dv, D, kb_2d)
    # Modifier parameters: NaN for each (head, index) some NaN dS reaches.
    if op == "relpos_attention":
        delta = torch.arange(Tq)[:, None] + (Tk - Tq) - torch.arange(Tk)[None, :]
        index = delta.clamp(0, window)
        hit = adm & expected["ds_rows"][..., None]                   # (B, H, Tq, Tk)
        expected["rel_bias"] = torch.stack([(hit & (index == r)).any(-1).any(-1).any(0) for r in range(window + 1)],
                                           dim=-1)
    elif op == "decay_attention":
        heads = expected["ds_rows"].any(-1).any(0)                   # (H,)
        expected["log_gamma"] = heads[:, None].expand(H, 3)
        expected["alpha_logits"] = heads[:, None].expand(H, 3)
    return x, dirty, expected, kw


@pytest.mark.parametrize("target", TRITON, ids=str)
@pytest.mark.parametrize("op", ["masked_sdpa", "relpos_attention", "decay_attention"])
def test_nan_in_q_k_v_key_bias_propagates_to_exactly_the_rows_that_see_it(op, target):
    x, dirty, expected, kw = _nan_case(op)
    out, lse, grads, weights = _run(op, dirty, "triton", torch.float32, target.device, **kw)
    ref_out, ref_lse, ref_grads, _ = _run(op, x, "reference", torch.float64, "cpu", weights, **kw)
    _check_nan_pattern(out, expected["out"], ref_out, "out")
    _check_nan_pattern(lse, expected["lse"], ref_lse, "lse")
    assert torch.equal(torch.isneginf(lse), torch.isneginf(ref_lse)), "empty rows differ"
    live = ~torch.isneginf(ref_lse)
    assert (out[~live] == 0).all(), "rows without an admissible key must be zeros, NaN q or not"
    for name, g in grads.items():
        _check_nan_pattern(g, expected[name], ref_grads[name], f"d{name}")


@pytest.mark.parametrize("target", TRITON, ids=str)
def test_nan_rows_do_not_become_empty_in_any_tile(target):
    """A NaN key in the first, a middle or the last tile of a long row: that row is NaN, never zeros / finite."""
    T, D = 80, 16
    x = _qkv(1, 3, T, T, D)
    dirty = {n: t.clone() for n, t in x.items()}
    for h, j in enumerate((3, 40, 79)):
        dirty["k"][0, h, j, 0] = NAN
    out, lse, _, _ = _run("masked_sdpa", dirty, "triton", torch.float32, target.device, causal=False)
    assert torch.isnan(out).all() and torch.isnan(lse).all()
    out, lse, _, _ = _run("masked_sdpa", dirty, "triton", torch.float32, target.device, causal=True)
    for h, j in enumerate((3, 40, 79)):
        assert torch.isnan(out[0, h, j:]).all() and torch.isnan(lse[0, h, j:]).all()
        assert torch.isfinite(out[0, h, :j]).all() and torch.isfinite(lse[0, h, :j]).all()


@pytest.mark.parametrize("target", TRITON, ids=str)
def test_minus_inf_key_bias_is_a_zero_weight_not_a_nan(target):
    """key_bias = -inf is a hard soft-mask: weight 0; a row whose every admissible key is at -inf gives zeros."""
    T, D = 40, 16
    x = _qkv(1, 2, T, T, D)
    kb = torch.randn(1, 2, T, dtype=torch.float64)
    kb[0, 0, :20] = -INF     # rows 0..19 of head 0 see only -inf keys
    kb[0, 1, 5:30] = -INF
    x["key_bias"] = kb
    out, lse, grads, weights = _run("masked_sdpa", x, "triton", torch.float32, target.device, causal=True)
    ref_out, ref_lse, ref_grads, _ = _run("masked_sdpa", x, "reference", torch.float64, "cpu", weights, causal=True)
    assert (out[0, 0, :20] == 0).all() and torch.isneginf(lse[0, 0, :20]).all()
    torch.testing.assert_close(out.double(), ref_out, **TOL)
    torch.testing.assert_close(lse.double(), ref_lse, **TOL)
    for name, g in grads.items():
        assert not torch.isnan(g).any(), f"NaN d{name}"
        torch.testing.assert_close(g.double(), ref_grads[name], **TOL, msg=lambda m: f"d{name}: {m}")


@pytest.mark.parametrize("target", TRITON, ids=str)
def test_inf_in_v_and_key_bias_follows_ieee_on_the_admitting_rows_only(target):
    """+-inf in v: out[i, d] = +-inf on the rows that admit the key (NaN where +inf meets -inf), exact elsewhere.
    key_bias = +inf: the rows that admit the key give out = NaN (softmax's inf - inf) and lse = +inf, and P = 0
    for their other keys, so dV of every other key stays finite (compared with key_bias = +1e6 there)."""
    T, D = 40, 16
    x = _qkv(1, 2, T, T, D)
    x["key_bias"] = torch.randn(1, 2, T, dtype=torch.float64)
    dirty = {n: t.clone() for n, t in x.items()}
    dirty["v"][0, 0, 9, 3], dirty["v"][0, 0, 20, 3] = INF, -INF
    dirty["key_bias"][0, 1, 25] = INF
    like = {n: t.clone() for n, t in x.items()}
    like["key_bias"][0, 1, 25] = 1e6    # head 1's reference: key 25 takes all the weight of rows >= 25
    out, lse, grads, weights = _run("masked_sdpa", dirty, "triton", torch.float32, target.device, causal=True)
    ref_out, ref_lse, ref_grads, _ = _run("masked_sdpa", like, "reference", torch.float64, "cpu", weights,
                                          causal=True)
    rows = torch.arange(T)

    # head 0: infinities in column 3 of v
    col = out[0, 0, :, 3]
    assert torch.isposinf(col[9:20]).all() and torch.isnan(col[20:]).all()
    keep = torch.ones(T, D, dtype=torch.bool)
    keep[9:, 3] = False
    torch.testing.assert_close(out[0, 0][keep].double(), ref_out[0, 0][keep], **TOL)
    torch.testing.assert_close(lse[0, 0].double(), ref_lse[0, 0], **TOL)
    torch.testing.assert_close(grads["v"][0, 0].double(), ref_grads["v"][0, 0], **TOL)   # P and dO are finite
    assert not torch.isfinite(grads["q"][0, 0, 9:]).all(-1).any()
    torch.testing.assert_close(grads["q"][0, 0, :9].double(), ref_grads["q"][0, 0, :9], **TOL)

    # head 1: key_bias = +inf on key 25
    assert torch.isnan(out[0, 1, 25:]).all() and torch.isposinf(lse[0, 1, 25:]).all()
    torch.testing.assert_close(out[0, 1, :25].double(), ref_out[0, 1, :25], **TOL)
    torch.testing.assert_close(lse[0, 1, :25].double(), ref_lse[0, 1, :25], **TOL)
    others = rows != 25
    assert not torch.isfinite(grads["v"][0, 1, 25]).all()
    torch.testing.assert_close(grads["v"][0, 1, others].double(), ref_grads["v"][0, 1, others], **TOL)
    assert not torch.isfinite(grads["q"][0, 1, 25:]).all(-1).any()
    torch.testing.assert_close(grads["q"][0, 1, :25].double(), ref_grads["q"][0, 1, :25], **TOL)
