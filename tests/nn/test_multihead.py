"""tempattn.nn.MultiheadAttention against torch.nn.MultiheadAttention: outputs, weights, state_dict, errors."""
import pytest
import torch

import tempattn.nn as tnn
from tempattn.nn import multihead

E, H, B, L, S = 8, 2, 3, 4, 6

# (name, constructor kwargs, self-attention?)
CONFIGS = [
    ("self", {}, True),
    ("self_batch_first", {"batch_first": True}, True),
    ("self_no_bias", {"bias": False}, True),
    ("self_bias_kv_zero_attn", {"add_bias_kv": True, "add_zero_attn": True}, True),
    ("cross", {"batch_first": True}, False),
    ("cross_kdim_vdim", {"kdim": 5, "vdim": 3}, False),
]
MASKS = ["none", "kpm_bool", "kpm_float", "causal_bool", "causal_float", "is_causal", "causal_kpm", "attn_bool",
         "attn_float", "attn_3d"]
WEIGHTS = [(False, True), (True, True), (True, False)]  # (need_weights, average_attn_weights)


def make_pair(**kwargs):
    """A torch MHA and ours with the same weights (ours loads torch's state_dict strictly)."""
    ref = torch.nn.MultiheadAttention(E, H, **kwargs)
    ours = tnn.MultiheadAttention(E, H, **kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def make_inputs(kwargs, self_attention):
    """query, key, value in the module's layout."""
    Tq, Tk = (L, L) if self_attention else (L, S)
    shape = (lambda T, d: (B, T, d)) if kwargs.get("batch_first") else (lambda T, d: (T, B, d))
    query = torch.randn(shape(Tq, E))
    if self_attention:
        return query, query, query
    return query, torch.randn(shape(Tk, kwargs.get("kdim", E))), torch.randn(shape(Tk, kwargs.get("vdim", E)))


def bottom_right_causal(Tq, Tk):
    return torch.ones(Tq, Tk, dtype=torch.bool).triu(Tk - Tq + 1)


def padding_mask(Tk):
    """(B, Tk) bool, True = padding; key 0 always kept so no row is empty."""
    lengths = torch.tensor([Tk, 1, max(Tk - 2, 1)])
    return torch.arange(Tk)[None, :] >= lengths[:, None]


def mask_kwargs(case, Tq, Tk):
    """forward kwargs for a mask case; random masks keep key 0 so no row is empty."""
    random_bool = torch.rand(Tq, Tk) < 0.4
    random_bool[:, 0] = False
    causal = bottom_right_causal(Tq, Tk)
    float_of = lambda m: torch.zeros(m.shape).masked_fill(m, float("-inf"))  # noqa: E731
    return {
        "none": {},
        "kpm_bool": {"key_padding_mask": padding_mask(Tk)},
        "kpm_float": {"key_padding_mask": torch.randn(B, Tk)},
        "causal_bool": {"attn_mask": causal},
        "causal_float": {"attn_mask": float_of(causal)},
        "is_causal": {"attn_mask": causal, "is_causal": True},
        "causal_kpm": {"attn_mask": causal, "key_padding_mask": padding_mask(Tk)},
        "attn_bool": {"attn_mask": random_bool},
        "attn_float": {"attn_mask": torch.randn(Tq, Tk)},
        "attn_3d": {"attn_mask": torch.randn(B * H, Tq, Tk)},
    }[case]


@pytest.mark.parametrize("need_weights,average", WEIGHTS, ids=["no_weights", "avg_weights", "head_weights"])
@pytest.mark.parametrize("mask_case", MASKS)
@pytest.mark.parametrize("name,kwargs,self_attention", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_matches_torch(name, kwargs, self_attention, mask_case, need_weights, average):
    if mask_case == "is_causal" and not self_attention:
        pytest.skip("is_causal is a hint for square masks only (PyTorch aligns it top-left otherwise)")
    if mask_case == "is_causal" and "add_bias_kv" in kwargs and not need_weights:
        pytest.skip("PyTorch drops attn_mask here and hides bias_k/zero keys (its need_weights=True path shows "
                    "them); we follow attn_mask on both paths")
    ref, ours = make_pair(**kwargs)
    query, key, value = make_inputs(kwargs, self_attention)
    Tq, Tk = (L, L) if self_attention else (L, S)
    masks = mask_kwargs(mask_case, Tq, Tk)
    expected, expected_w = ref(query, key, value, need_weights=need_weights, average_attn_weights=average, **masks)
    got, got_w = ours(query, key, value, need_weights=need_weights, average_attn_weights=average, **masks)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    if need_weights:
        torch.testing.assert_close(got_w, expected_w, atol=1e-6, rtol=0)
    else:
        assert got_w is None


@pytest.mark.parametrize("need_weights", [False, True])
def test_gradients_match_torch(need_weights):
    ref, ours = make_pair(batch_first=True)
    x = torch.randn(B, L, E, requires_grad=True)
    mask = {"attn_mask": bottom_right_causal(L, L), "key_padding_mask": padding_mask(L)}
    ref(x, x, x, need_weights=need_weights, **mask)[0].square().sum().backward()
    expected = [x.grad.clone()] + [p.grad for p in ref.parameters()]
    x.grad = None
    ours(x, x, x, need_weights=need_weights, **mask)[0].square().sum().backward()
    for got, want in zip([x.grad] + [p.grad for p in ours.parameters()], expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("need_weights", [False, True])
def test_unbatched_matches_torch(need_weights):
    ref, ours = make_pair()
    x = torch.randn(L, E)
    attn_mask = torch.rand(H, L, L) < 0.4
    attn_mask[..., 0] = False
    masks = {"key_padding_mask": torch.tensor([False, False, True, False]), "attn_mask": attn_mask}
    expected, expected_w = ref(x, x, x, need_weights=need_weights, **masks)
    got, got_w = ours(x, x, x, need_weights=need_weights, **masks)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    if need_weights:
        torch.testing.assert_close(got_w, expected_w, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kwargs", [{}, {"bias": False}, {"kdim": 5, "vdim": 3}, {"add_bias_kv": True}],
                         ids=["packed", "no_bias", "kdim_vdim", "bias_kv"])
def test_state_dict_loads_both_ways(kwargs):
    ref = torch.nn.MultiheadAttention(E, H, **kwargs)
    ours = tnn.MultiheadAttention(E, H, **kwargs)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    fresh_ref = torch.nn.MultiheadAttention(E, H, **kwargs)
    fresh_ref.load_state_dict(ours.state_dict(), strict=True)
    for (name, a), (_, b) in zip(fresh_ref.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), name


def test_fully_padded_row_gives_zeros_where_torch_gives_nan():
    """Documented difference: a query with no admissible key returns zeros (PyTorch: NaN)."""
    ref, ours = make_pair(batch_first=True)
    x = torch.randn(2, L, E, requires_grad=True)
    kpm = torch.zeros(2, L, dtype=torch.bool)
    kpm[1] = True
    assert torch.isnan(ref(x, x, x, key_padding_mask=kpm)[0][1]).all()
    for need_weights in (False, True):
        out, weights = ours(x, x, x, key_padding_mask=kpm, need_weights=need_weights)
        bias = ours.out_proj.bias.detach()
        torch.testing.assert_close(out[1], bias.expand(L, E))  # zero attention output, then out_proj
        torch.testing.assert_close(out[0], ref(x, x, x, key_padding_mask=kpm)[0][0], atol=1e-6, rtol=0)
        if need_weights:
            assert torch.equal(weights[1], torch.zeros(L, L))
        out.sum().backward()
        assert torch.isfinite(x.grad).all()
        x.grad = None


def test_fused_path_used_when_expressible(monkeypatch):
    calls = []
    real = multihead.masked_sdpa
    monkeypatch.setattr(multihead, "masked_sdpa", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    ours = tnn.MultiheadAttention(E, H, batch_first=True, dropout=0.25)
    x = torch.randn(B, L, E)
    ours(x, x, x, key_padding_mask=padding_mask(L), attn_mask=bottom_right_causal(L, L), need_weights=False)
    assert calls[-1]["causal"] is True and calls[-1]["dropout_p"] == 0.25
    ours.eval()
    ours(x, x, x, attn_mask=torch.randn(L, L), need_weights=False)
    ours(x, x, x, need_weights=True)
    assert len(calls) == 1
    ours(x, x, x, is_causal=True, need_weights=False)
    assert calls[-1]["causal"] is True and calls[-1]["dropout_p"] == 0.0


def test_is_causal_without_mask_applies_causal_mask():
    ref, ours = make_pair(batch_first=True)
    x = torch.randn(B, L, E)
    expected = ref(x, x, x, attn_mask=bottom_right_causal(L, L), need_weights=False)[0]
    torch.testing.assert_close(ours(x, x, x, is_causal=True, need_weights=False)[0], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours(x, x, x, is_causal=True)[0], expected, atol=1e-6, rtol=0)


def test_dropout_in_training_only():
    ref, ours = make_pair(batch_first=True, dropout=0.5)
    x = torch.randn(B, L, E)
    ref.eval()
    ours.eval()
    torch.testing.assert_close(ours(x, x, x)[0], ref(x, x, x)[0], atol=1e-6, rtol=0)
    ours.train()
    assert not torch.allclose(ours(x, x, x, need_weights=False)[0], ref(x, x, x)[0], atol=1e-3)


def test_causal_future_perturbation_does_not_leak():
    ours = tnn.MultiheadAttention(E, H, batch_first=True)
    x = torch.randn(B, L + 3, E)
    t = 2
    changed = x.clone()
    changed[:, t + 1:] += torch.randn_like(changed[:, t + 1:])
    for need_weights in (False, True):
        before = ours(x, x, x, is_causal=True, need_weights=need_weights)[0]
        after = ours(changed, changed, changed, is_causal=True, need_weights=need_weights)[0]
        torch.testing.assert_close(after[:, : t + 1], before[:, : t + 1], atol=0, rtol=0)


@pytest.mark.parametrize("need_weights", [False, True])
def test_gradcheck_float64(need_weights):
    ours = tnn.MultiheadAttention(4, 2, batch_first=True, dtype=torch.float64, backend="reference")
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    kpm = torch.tensor([[False, False, True], [False, False, False]])

    def f(x, weight):
        return ours(x, x, x, key_padding_mask=kpm, is_causal=True, need_weights=need_weights)[0] * weight

    assert torch.autograd.gradcheck(f, (x, torch.tensor(1.5, dtype=torch.float64, requires_grad=True)))


def test_compile_fullgraph():
    ours = tnn.MultiheadAttention(E, H, batch_first=True, backend="reference")
    x = torch.randn(B, L, E)
    kpm = padding_mask(L)
    compiled = torch.compile(ours, fullgraph=True)
    for need_weights in (False, True):
        expected = ours(x, x, x, key_padding_mask=kpm, is_causal=True, need_weights=need_weights)
        got = compiled(x, x, x, key_padding_mask=kpm, is_causal=True, need_weights=need_weights)
        torch.testing.assert_close(got[0], expected[0], atol=1e-6, rtol=0)


def test_compile_fullgraph_auto_backend():
    ours = tnn.MultiheadAttention(E, H, batch_first=True)
    x = torch.randn(B, L, E)
    got = torch.compile(ours, fullgraph=True)(x, x, x, is_causal=True, need_weights=False)[0]
    torch.testing.assert_close(got, ours(x, x, x, is_causal=True, need_weights=False)[0], atol=1e-6, rtol=0)


def test_drop_in_inside_transformer_encoder_layer():
    layer = torch.nn.TransformerEncoderLayer(E, H, dim_feedforward=16, dropout=0.0, batch_first=True)
    x, mask = torch.randn(B, L, E), bottom_right_causal(L, L)
    expected = layer(x, src_mask=mask, is_causal=True)
    swapped = tnn.MultiheadAttention(E, H, batch_first=True)
    swapped.load_state_dict(layer.self_attn.state_dict(), strict=True)
    layer.self_attn = swapped
    torch.testing.assert_close(layer(x, src_mask=mask, is_causal=True), expected, atol=1e-6, rtol=0)


def test_to_dtype_and_reset_parameters():
    ours = tnn.MultiheadAttention(E, H, add_bias_kv=True).to(torch.float64)
    assert all(p.dtype == torch.float64 for p in ours.parameters())
    x = torch.randn(L, B, E, dtype=torch.float64)
    assert ours(x, x, x)[0].dtype == torch.float64
    before = ours.in_proj_weight.clone()
    ours.reset_parameters()
    assert not torch.equal(before, ours.in_proj_weight)
    assert torch.equal(ours.in_proj_bias, torch.zeros(3 * E, dtype=torch.float64))
    assert "add_bias_kv=True" in repr(ours) and "backend='auto'" in repr(ours)


@pytest.mark.parametrize("build,forward,exc,words", [
    (dict(embed_dim=8, num_heads=3), None, ValueError, ["num_heads", "divisor of embed_dim = 8", "got 3"]),
    (dict(embed_dim=0, num_heads=1), None, ValueError, ["embed_dim", "positive"]),
    (dict(embed_dim=8, num_heads=2, dropout=1.0), None, ValueError, ["dropout", "[0, 1)"]),
    (dict(embed_dim=8, num_heads=2), dict(query=torch.randn(L, B, 6)), ValueError,
     ["query", "8 features", "(4, 3, 6)"]),
    (dict(embed_dim=8, num_heads=2), dict(key_padding_mask=torch.zeros(B, L + 1, dtype=torch.bool)), ValueError,
     ["key_padding_mask", "(3, 4)", "(3, 5)"]),
    (dict(embed_dim=8, num_heads=2), dict(attn_mask=torch.zeros(L, L + 1, dtype=torch.bool)), ValueError,
     ["attn_mask", "(4, 4)", "(4, 5)"]),
    (dict(embed_dim=8, num_heads=2), dict(attn_mask=torch.zeros(L, L, dtype=torch.int64)), TypeError,
     ["attn_mask", "bool", "int64"]),
])
def test_errors_name_argument_expected_and_actual(build, forward, exc, words):
    with pytest.raises(exc) as info:
        layer = tnn.MultiheadAttention(**build)
        x = torch.randn(L, B, 8)
        kwargs = {"query": x, "key": x, "value": x, **(forward or {})}
        layer(**kwargs)
    message = str(info.value)
    assert "hint:" in message
    for word in words:
        assert word in message
