"""The fused C++ CPU kernels (backend="cpu") against the reference backend, through the public functions."""
import zlib

import pytest
import torch

import tempattn

pytestmark = pytest.mark.skipif(not tempattn.backends()["cpu"]["available"],
                                reason=f"cpu backend unavailable: {tempattn.backends()['cpu']['reason']}")

OPS = ("masked_sdpa", "relpos", "decay")
N_SCALES = 3


def make_inputs(op, B, H, Tq, Tk, D, Dv, dtype, *, window=None, key_bias_shape=None, qkv_layout="bhtd", gen=None):
    """Differentiable tensors (a dict, all leaves) for one call."""
    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    def qkv(T, d):
        if qkv_layout == "bthd":  # non-contiguous (B, H, T, d) view of a (B, T, H, d) tensor
            return randn(B, T, H, d).transpose(1, 2).detach()
        return randn(B, H, T, d)

    t = {"q": qkv(Tq, D), "k": qkv(Tk, D), "v": qkv(Tk, Dv)}
    if key_bias_shape == "bt":
        t["key_bias"] = randn(B, Tk)
    elif key_bias_shape == "bht":
        t["key_bias"] = randn(B, H, Tk)
    if op == "relpos":
        t["rel_bias"] = randn(H, (window + 1) if window is not None else 7)
    if op == "decay":
        t["log_gamma"] = -torch.rand(H, N_SCALES, generator=gen, dtype=torch.float64).to(dtype) * 0.5
        t["alpha_logits"] = randn(H, N_SCALES)
    return {name: x.requires_grad_(True) for name, x in t.items()}


def call(op, t, backend, **kw):
    """(out, lse) of the op; kw: window, causal, times, eps, key_valid_mask, dropout_p, seed."""
    common = dict(key_bias=t.get("key_bias"), backend=backend, return_lse=True,
                  key_valid_mask=kw.get("key_valid_mask"), dropout_p=kw.get("dropout_p", 0.0), seed=kw.get("seed"))
    if op == "masked_sdpa":
        return tempattn.masked_sdpa(t["q"], t["k"], t["v"], causal=kw.get("causal", False), **common)
    if op == "relpos":
        return tempattn.relpos_attention(t["q"], t["k"], t["v"], t["rel_bias"], window=kw.get("window"), **common)
    return tempattn.decay_attention(t["q"], t["k"], t["v"], t["log_gamma"], t["alpha_logits"], times=kw.get("times"),
                                    eps=kw.get("eps", 1e-8), window=kw.get("window"), **common)


def forward_backward(op, t, backend, grad_seed=0, **kw):
    """[out, lse, *grads of t in key order] with fixed random upstream gradients for out and lse."""
    t = {name: x.detach().clone().requires_grad_(True) for name, x in t.items()}
    out, lse = call(op, t, backend, **kw)
    gen = torch.Generator().manual_seed(grad_seed)
    g_out = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.dtype)
    g_lse = torch.randn(lse.shape, generator=gen, dtype=torch.float64).to(lse.dtype)
    finite_lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    loss = (out * g_out).sum() + (finite_lse * g_lse).sum()
    grads = torch.autograd.grad(loss, list(t.values()))
    return [out.detach(), lse.detach(), *grads]


def random_mask(B, Tk, gen, p_valid=0.7):
    return torch.rand(B, Tk, generator=gen) < p_valid


def increasing_times(B, Tk, gen, dtype):
    """Non-decreasing timestamps with repeats (steps of 0, 0.5, 1, ...)."""
    steps = torch.randint(0, 4, (B, Tk), generator=gen).to(dtype) * 0.5
    return torch.cumsum(steps, dim=1) + 1000.0


def assert_close_all(got, want, rtol, atol, names):
    for name, g, w in zip(names, got, want):
        assert g.shape == w.shape, name
        assert torch.equal(torch.isfinite(g), torch.isfinite(w)), f"{name}: finite pattern differs"
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol, equal_nan=False, msg=lambda m: f"{name}: {m}")


def names_of(t):
    return ["out", "lse", *(f"d{n}" for n in t)]


CASES = [
    # op, (B, H, Tq, Tk, D, Dv), kw
    ("masked_sdpa", (2, 3, 63, 63, 40, 40), dict()),
    ("masked_sdpa", (2, 3, 70, 130, 40, 24), dict(mask=True)),
    ("masked_sdpa", (3, 5, 1, 1, 16, 8), dict(causal=True)),
    ("masked_sdpa", (2, 2, 65, 129, 32, 48), dict(causal=True, mask=True)),
    ("masked_sdpa", (1, 2, 130, 17, 8, 8), dict(mask=True)),
    ("relpos", (2, 3, 63, 63, 40, 40), dict(window=0)),
    ("relpos", (2, 3, 50, 77, 40, 24), dict(window=5, mask=True)),
    ("relpos", (2, 2, 70, 70, 16, 16), dict(window=200)),
    ("relpos", (3, 5, 1, 1, 8, 8), dict(window=None)),
    ("relpos", (2, 2, 100, 140, 24, 32), dict(window=None, mask=True)),
    ("decay", (2, 3, 63, 63, 40, 40), dict()),
    ("decay", (2, 3, 50, 77, 40, 24), dict(window=0, mask=True)),
    ("decay", (2, 2, 90, 130, 16, 16), dict(window=33, times=True)),
    ("decay", (2, 2, 70, 70, 16, 8), dict(times=True, mask=True, eps=0.0)),
    ("decay", (3, 5, 1, 1, 8, 8), dict(window=300, eps=0.5)),
    # Decoding steps (at most 4 query rows, no band): keys and values read in place when Dv fills vectors.
    ("masked_sdpa", (2, 3, 3, 300, 40, 32), dict(causal=True, mask=True)),
    ("masked_sdpa", (2, 2, 2, 100, 16, 16), dict()),
    ("relpos", (2, 2, 1, 200, 24, 16), dict(window=None, mask=True)),
    ("decay", (2, 2, 4, 150, 16, 32), dict(times=True, mask=True)),
    ("decay", (1, 2, 4, 150, 16, 20), dict()),
    # Narrow bands over more than 1024 keys: several backward key chunks per head.
    ("relpos", (1, 2, 2300, 2300, 8, 8), dict(window=40, mask=True)),
    ("decay", (1, 2, 2100, 2300, 8, 8), dict(window=100, times=True)),
]


def case_kwargs(op, shape, spec, gen, dtype):
    B, H, Tq, Tk, D, Dv = shape
    kw = {key: spec[key] for key in ("causal", "window", "eps") if key in spec}
    if spec.get("mask"):
        kw["key_valid_mask"] = random_mask(B, Tk, gen)
    if spec.get("times"):
        kw["times"] = increasing_times(B, Tk, gen, dtype)
    return kw


def case_id(case):
    op, shape, spec = case
    return f"{op}-{'x'.join(map(str, shape))}-" + "-".join(f"{k}{v}" for k, v in spec.items())


@pytest.mark.parametrize("key_bias_shape", [None, "bt", "bht"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float64_matches_reference(case, key_bias_shape):
    op, shape, spec = case
    gen = torch.Generator().manual_seed(zlib.crc32(case_id(case).encode()))
    t = make_inputs(op, *shape, torch.float64, window=spec.get("window"), key_bias_shape=key_bias_shape, gen=gen)
    kw = case_kwargs(op, shape, spec, gen, torch.float64)
    got = forward_backward(op, t, "cpu", **kw)
    want = forward_backward(op, t, "reference", **kw)
    assert_close_all(got, want, rtol=1e-9, atol=1e-10, names=names_of(t))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("op", OPS)
def test_low_precision_error_like_reference(op, dtype):
    """Error vs float64 truth is at most a small multiple of the reference's own error in that dtype."""
    gen = torch.Generator().manual_seed(7)
    shape = (2, 3, 90, 130, 40, 24)
    window = 20 if op != "masked_sdpa" else None
    t = make_inputs(op, *shape, dtype, window=window, key_bias_shape="bht", gen=gen)
    kw = dict(causal=True, key_valid_mask=random_mask(2, 130, gen), window=window)
    truth = forward_backward(op, {n: x.double() for n, x in t.items()}, "reference", **kw)
    got = forward_backward(op, t, "cpu", **kw)
    ref = forward_backward(op, t, "reference", **kw)
    for name, g, r, w in zip(names_of(t), got, ref, truth):
        assert g.dtype == r.dtype, name
        finite = torch.isfinite(w)
        assert torch.equal(torch.isfinite(g), finite), name
        err_got = (g.double() - w).abs()[finite].max()
        err_ref = (r.double() - w).abs()[finite].max()
        scale = w.abs()[finite].max()
        assert err_got <= 4 * err_ref + 1e-5 * scale, f"{name}: cpu error {err_got:.3g}, reference error {err_ref:.3g}"


@pytest.mark.parametrize("op", OPS)
def test_non_contiguous_qkv(op):
    gen = torch.Generator().manual_seed(3)
    shape = (2, 3, 45, 80, 32, 32)
    t = make_inputs(op, *shape, torch.float64, window=9 if op != "masked_sdpa" else None, qkv_layout="bthd", gen=gen)
    assert not t["q"].is_contiguous() and t["q"].stride(-1) == 1
    kw = dict(causal=True, window=9 if op != "masked_sdpa" else None)
    assert_close_all(forward_backward(op, t, "cpu", **kw), forward_backward(op, t, "reference", **kw),
                     rtol=1e-9, atol=1e-10, names=names_of(t))


@pytest.mark.parametrize("op", OPS)
def test_fully_padded_rows_give_zeros(op):
    """A sequence with every key padded: out 0, lse -inf, zero gradients, no NaN anywhere."""
    gen = torch.Generator().manual_seed(5)
    B, H, Tq, Tk = 3, 2, 40, 70
    t = make_inputs(op, B, H, Tq, Tk, 16, 16, torch.float64, window=6 if op != "masked_sdpa" else None,
                    key_bias_shape="bht", gen=gen)
    valid = random_mask(B, Tk, gen)
    valid[1] = False
    valid[2, -10:] = False  # with window 6, the last rows of batch 2 see only padding
    kw = dict(causal=True, key_valid_mask=valid, window=6 if op != "masked_sdpa" else None)
    got = forward_backward(op, t, "cpu", **kw)
    out, lse, *grads = got
    assert torch.all(out[1] == 0) and torch.all(lse[1] == float("-inf"))
    for g in grads:
        assert torch.isfinite(g).all()
    assert torch.all(grads[0][1] == 0) and torch.all(grads[1][1] == 0) and torch.all(grads[2][1] == 0)
    assert_close_all(got, forward_backward(op, t, "reference", **kw), rtol=1e-9, atol=1e-10, names=names_of(t))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("op", OPS)
def test_outputs_fully_written(op, dtype):
    """Outputs are allocated uninitialised: every element must be written and finite."""
    gen = torch.Generator().manual_seed(11)
    t = make_inputs(op, 2, 3, 33, 65, 20, 12, dtype, window=4 if op != "masked_sdpa" else None,
                    key_bias_shape="bt", gen=gen)
    for _ in range(3):
        for x in forward_backward(op, t, "cpu", causal=True, window=4 if op != "masked_sdpa" else None):
            assert torch.isfinite(x).all()


@pytest.mark.parametrize("op", OPS)
def test_dropout_matches_reference(op):
    gen = torch.Generator().manual_seed(13)
    t = make_inputs(op, 2, 3, 50, 70, 24, 16, torch.float64, window=12 if op != "masked_sdpa" else None,
                    key_bias_shape="bht", gen=gen)
    kw = dict(causal=op == "masked_sdpa", window=12 if op != "masked_sdpa" else None, dropout_p=0.3,
              seed=(0x5EADBEEF << 32) + 12345, key_valid_mask=random_mask(2, 70, gen))
    assert_close_all(forward_backward(op, t, "cpu", **kw), forward_backward(op, t, "reference", **kw),
                     rtol=1e-9, atol=1e-10, names=names_of(t))


def test_dropout_keep_mask_is_applied_exactly():
    """out with v = one-hot key index recovers P * keep / (1 - p) per element."""
    B, H, T, p, seed = 1, 2, 40, 0.4, 987654321
    q = torch.zeros(B, H, T, 8, dtype=torch.float64)
    k = torch.zeros(B, H, T, 8, dtype=torch.float64)
    v = torch.eye(T, dtype=torch.float64).expand(B, H, T, T)
    out = tempattn.masked_sdpa(q, k, v, dropout_p=p, seed=seed, backend="cpu")
    keep = tempattn.testing.dropout_keep_mask(seed, B, H, T, T, p)
    torch.testing.assert_close(out, keep.double() / T / (1 - p), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("B,Tq,Tk", [(3, 150, 200), (1, 2500, 2600)], ids=["one-chunk", "many-chunks"])
@pytest.mark.parametrize("op", OPS)
def test_backward_bitwise_deterministic_across_thread_counts(op, B, Tq, Tk):
    gen = torch.Generator().manual_seed(17)
    t = make_inputs(op, B, 3, Tq, Tk, 32, 32, torch.float32, window=40 if op != "masked_sdpa" else None,
                    key_bias_shape="bt", gen=gen)
    kw = dict(causal=True, window=40 if op != "masked_sdpa" else None, key_valid_mask=random_mask(B, Tk, gen),
              times=increasing_times(B, Tk, gen, torch.float32) if op == "decay" else None)
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 2):
            torch.set_num_threads(n)
            runs.append(forward_backward(op, t, "cpu", **kw))
    finally:
        torch.set_num_threads(threads)
    for other in runs[1:]:
        for name, a, b in zip(names_of(t), runs[0], other):
            assert torch.equal(a, b), f"{name} differs between runs"


def gradcheck_inputs(op, window, key_bias_shape, gen):
    t = make_inputs(op, 2, 2, 7, 9, 4, 3, torch.float64, window=window, key_bias_shape=key_bias_shape, gen=gen)
    return list(t.keys()), list(t.values())


@pytest.mark.parametrize("op,window,extra", [
    ("masked_sdpa", None, dict(causal=False)),
    ("masked_sdpa", None, dict(causal=True, mask=True)),
    ("relpos", 3, dict(mask=True)),
    ("relpos", None, dict()),
    ("decay", None, dict(mask=True)),
    ("decay", 4, dict(times=True)),
])
def test_gradcheck(op, window, extra):
    gen = torch.Generator().manual_seed(19)
    names, tensors = gradcheck_inputs(op, window, "bht", gen)
    kw = dict(window=window, causal=extra.get("causal", True))
    if extra.get("mask"):
        kw["key_valid_mask"] = random_mask(2, 9, gen)
    if extra.get("times"):
        kw["times"] = increasing_times(2, 9, gen, torch.float64)

    def fn(*xs):
        out, lse = call(op, dict(zip(names, xs)), "cpu", **kw)
        return out, torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("op", OPS)
def test_rejects_bad_arguments_in_kernel(op):
    """The registered kernels check their own arguments with messages naming them."""
    q = torch.randn(1, 2, 4, 8)
    k = torch.randn(1, 2, 5, 8)
    v = torch.randn(1, 2, 5, 8)
    ops = torch.ops.tempattn_C
    with pytest.raises(RuntimeError, match="key_bias"):
        bad_bias = torch.zeros(1, 2, 5, dtype=torch.float64)
        if op == "masked_sdpa":
            ops.masked_sdpa_fwd(q, k, v, None, bad_bias, False, 0.0, 0, 1.0)
        elif op == "relpos":
            ops.relpos_attention_fwd(q, k, v, torch.zeros(2, 3), None, bad_bias, 2, 0.0, 0, 1.0)
        else:
            ops.decay_attention_fwd(q, k, v, torch.zeros(2, 3), torch.zeros(2, 3), None, None, bad_bias, -1, 1e-8,
                                    0.0, 0, 1.0)
    with pytest.raises(RuntimeError, match="`k`"):
        ops.masked_sdpa_fwd(q, k[..., :4], v, None, None, False, 0.0, 0, 1.0)


@pytest.mark.parametrize("Tq", [1, 2, 4, 5])
@pytest.mark.parametrize("op", OPS)
def test_float32_decoding_steps_match_float64_reference(op, Tq):
    """A few query rows against a long cache (the in-place decoding path up to 4 rows, packed from 5)."""
    gen = torch.Generator().manual_seed(11 + Tq)
    Tk = 333
    t = make_inputs(op, 2, 3, Tq, Tk, 40, 32, torch.float32, window=None, key_bias_shape="bht", gen=gen)
    kw = dict(causal=True, key_valid_mask=random_mask(2, Tk, gen))
    got = forward_backward(op, t, "cpu", **kw)
    want = forward_backward(op, {n: x.detach().double() for n, x in t.items()}, "reference", **kw)
    assert_close_all(got, [w.to(g.dtype) for g, w in zip(got, want)], rtol=2e-4, atol=2e-5, names=names_of(t))
