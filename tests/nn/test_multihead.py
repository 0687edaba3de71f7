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
MASKS = ["none", "kpm_bool", "kpm_float", "kpm_float_inf", "causal_bool", "causal_float", "causal_top_left",
         "is_causal", "causal_kpm", "attn_bool", "attn_float", "attn_3d"]
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


def top_left_causal(Tq, Tk):
    """PyTorch's causal mask (that of SDPA's is_causal): query i sees keys j <= i."""
    return torch.ones(Tq, Tk, dtype=torch.bool).triu(1)


def float_of(mask):
    return torch.zeros(mask.shape).masked_fill(mask, float("-inf"))


def padding_mask(Tk):
    """(B, Tk) bool, True = padding; key 0 always kept so no row is empty."""
    lengths = torch.tensor([Tk, 1, max(Tk - 2, 1)])
    return torch.arange(Tk)[None, :] >= lengths[:, None]


def mask_kwargs(case, Tq, Tk):
    """forward kwargs for a mask case; random masks keep key 0 so no row is empty."""
    random_bool = torch.rand(Tq, Tk) < 0.4
    random_bool[:, 0] = False
    causal = bottom_right_causal(Tq, Tk)
    return {
        "none": {},
        "kpm_bool": {"key_padding_mask": padding_mask(Tk)},
        "kpm_float": {"key_padding_mask": torch.randn(B, Tk)},
        "kpm_float_inf": {"key_padding_mask": torch.randn(B, Tk).masked_fill(padding_mask(Tk), float("-inf"))},
        "causal_bool": {"attn_mask": causal},
        "causal_float": {"attn_mask": float_of(causal)},
        "causal_top_left": {"attn_mask": top_left_causal(Tq, Tk)},
        "is_causal": {"attn_mask": top_left_causal(Tq, Tk), "is_causal": True},
        "causal_kpm": {"attn_mask": causal, "key_padding_mask": padding_mask(Tk)},
        "attn_bool": {"attn_mask": random_bool},
        "attn_float": {"attn_mask": torch.randn(Tq, Tk)},
        "attn_3d": {"attn_mask": torch.randn(B * H, Tq, Tk)},
    }[case]


@pytest.mark.parametrize("need_weights,average", WEIGHTS, ids=["no_weights", "avg_weights", "head_weights"])
@pytest.mark.parametrize("mask_case", MASKS)
@pytest.mark.parametrize("name,kwargs,self_attention", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_matches_torch(name, kwargs, self_attention, mask_case, need_weights, average):
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


def spy_fused(monkeypatch):
    """The (args, kwargs) of every ``masked_sdpa`` call the layer makes from now on."""
    calls = []
    real = multihead.masked_sdpa
    monkeypatch.setattr(multihead, "masked_sdpa", lambda *a, **kw: calls.append((a, kw)) or real(*a, **kw))
    return calls


def test_fused_path_used_when_expressible(monkeypatch):
    calls = spy_fused(monkeypatch)
    ours = tnn.MultiheadAttention(E, H, batch_first=True, dropout=0.25)
    x = torch.randn(B, L, E)
    ours(x, x, x, key_padding_mask=padding_mask(L), attn_mask=bottom_right_causal(L, L), need_weights=False)
    assert calls[-1][1]["causal"] is True and calls[-1][1]["dropout_p"] == 0.25
    ours.eval()
    ours(x, x, x, attn_mask=torch.randn(L, L), need_weights=False)
    ours(x, x, x, need_weights=True)
    assert len(calls) == 1
    ours(x, x, x, is_causal=True, need_weights=False)
    assert calls[-1][1]["causal"] is True and calls[-1][1]["dropout_p"] == 0.0


def test_float_key_padding_mask_is_fused_as_mask_and_bias(monkeypatch):
    """-inf entries become the operator's key_padding_mask, the finite rest its key_bias."""
    calls = spy_fused(monkeypatch)
    ours = tnn.MultiheadAttention(E, H, batch_first=True)
    x = torch.randn(B, L, E)
    padding, bias = padding_mask(L), torch.randn(B, L)
    ours(x, x, x, key_padding_mask=bias.masked_fill(padding, float("-inf")), need_weights=False)
    kwargs = calls[-1][1]
    assert torch.equal(kwargs["key_padding_mask"], padding)
    assert torch.equal(kwargs["key_bias"], bias.masked_fill(padding, 0.0))


@pytest.mark.parametrize("alignment,keys_passed", [("top_left", L), ("bottom_right", S)])
def test_causal_cross_attention_is_fused_for_both_alignments(monkeypatch, alignment, keys_passed):
    """Top-left causality never reaches past key L - 1: the operator gets the first L keys only."""
    calls = spy_fused(monkeypatch)
    ours = tnn.MultiheadAttention(E, H, batch_first=True, causal_alignment=alignment)
    query, memory = torch.randn(B, L, E), torch.randn(B, S, E)
    ours(query, memory, memory, key_padding_mask=padding_mask(S), is_causal=True, need_weights=False)
    (_, k, v), kwargs = calls[-1]
    assert k.shape[2] == v.shape[2] == kwargs["key_padding_mask"].shape[1] == keys_passed
    assert kwargs["causal"] is True


def test_is_causal_without_mask_applies_causal_mask():
    """Documented difference: PyTorch raises (outside its native fast path); we apply the causal mask."""
    ref, ours = make_pair(batch_first=True)
    x = torch.randn(B, L, E)
    with pytest.raises(RuntimeError, match="Need attn_mask"):
        ref(x, x, x, is_causal=True)
    expected = ref(x, x, x, attn_mask=bottom_right_causal(L, L), need_weights=False)[0]
    torch.testing.assert_close(ours(x, x, x, is_causal=True, need_weights=False)[0], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours(x, x, x, is_causal=True)[0], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("need_weights,with_padding", [(False, False), (False, True), (True, False)],
                         ids=["fused", "fused_padding", "weights"])
@pytest.mark.parametrize("Tq,Tk", [(3, 6), (6, 3)], ids=["fewer_queries", "more_queries"])
def test_is_causal_follows_torch_top_left_mask(Tq, Tk, need_weights, with_padding):
    """Issue 9: with Tq != Tk, PyTorch's is_causal is its top-left mask (query i sees keys j <= i)."""
    ref, ours = make_pair(batch_first=True)
    query, memory = torch.randn(B, Tq, E), torch.randn(B, Tk, E)
    masks = {"key_padding_mask": padding_mask(Tk)} if with_padding else {}
    kwargs = {"need_weights": need_weights, "is_causal": True, **masks}
    expected = ref(query, memory, memory, attn_mask=top_left_causal(Tq, Tk), **kwargs)[0]
    got = ours(query, memory, memory, attn_mask=top_left_causal(Tq, Tk), **kwargs)[0]
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours(query, memory, memory, **kwargs)[0], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("need_weights", [False, True])
def test_bottom_right_alignment_on_request(need_weights):
    """causal_alignment="bottom_right": L new queries against S cached keys are the last L rows of causal attention."""
    ref, _ = make_pair(batch_first=True)
    ours = tnn.MultiheadAttention(E, H, batch_first=True, causal_alignment="bottom_right")
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(B, S, E)
    query = x[:, -2:]
    expected = ref(query, x, x, attn_mask=bottom_right_causal(2, S), need_weights=need_weights)[0]
    for masks in ({}, {"attn_mask": bottom_right_causal(2, S)}):
        got = ours(query, x, x, is_causal=True, need_weights=need_weights, **masks)[0]
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    full = ours(x, x, x, is_causal=True, need_weights=need_weights)[0]
    torch.testing.assert_close(full[:, -2:], expected, atol=1e-6, rtol=0)


NESTED_LENGTHS = (L, 1, L - 2)  # those of padding_mask(L)
strided_nested_is_prototype = pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning")


def nested_batch(layout, width=E):
    return torch.nested.nested_tensor([torch.randn(n, width) for n in NESTED_LENGTHS], layout=layout)


@strided_nested_is_prototype
@pytest.mark.parametrize("need_weights,average", WEIGHTS, ids=["no_weights", "avg_weights", "head_weights"])
def test_nested_input_matches_torch_fast_path(need_weights, average):
    """Issue 10: PyTorch takes nested self-attention on its native path (strided layout, eval, no autograd)."""
    ref, ours = make_pair(batch_first=True)
    ref.eval()
    ours.eval()
    x = nested_batch(torch.strided)
    with torch.no_grad():
        expected, expected_w = ref(x, x, x, need_weights=need_weights, average_attn_weights=average)
        got, got_w = ours(x, x, x, need_weights=need_weights, average_attn_weights=average)
    assert got.is_nested and got.layout == torch.strided
    for got_row, expected_row in zip(got.unbind(), expected.unbind()):
        torch.testing.assert_close(got_row, expected_row, atol=1e-6, rtol=0)
    if need_weights:
        torch.testing.assert_close(got_w, expected_w, atol=1e-6, rtol=0)


@strided_nested_is_prototype
@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("layout", [torch.strided, torch.jagged], ids=["strided", "jagged"])
def test_nested_input_trains_like_padded_batch(layout, is_causal):
    """Both layouts in training: the padded batch with its key_padding_mask, gradients included."""
    ref, ours = make_pair(batch_first=True)
    rows = [torch.randn(n, E, requires_grad=True) for n in NESTED_LENGTHS]
    padded = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    causal = {"attn_mask": top_left_causal(L, L), "is_causal": True} if is_causal else {}
    expected = ref(padded, padded, padded, key_padding_mask=padding_mask(L), need_weights=False, **causal)[0]
    sum(expected[b, :n].square().sum() for b, n in enumerate(NESTED_LENGTHS)).backward()
    expected_grads = [r.grad.clone() for r in rows] + [p.grad for p in ref.parameters()]
    for r in rows:
        r.grad = None
    x = torch.nested.as_nested_tensor(rows, layout=layout)
    got = ours(x, x, x, need_weights=False, is_causal=is_causal)[0]
    assert got.is_nested and got.layout == layout
    for b, got_row in enumerate(got.unbind()):
        torch.testing.assert_close(got_row, expected[b, :NESTED_LENGTHS[b]], atol=1e-6, rtol=0)
    sum(row.square().sum() for row in got.unbind()).backward()
    for got_grad, want in zip([r.grad for r in rows] + [p.grad for p in ours.parameters()], expected_grads):
        torch.testing.assert_close(got_grad, want, atol=1e-5, rtol=1e-5)


NESTED_ERRORS = [  # (id, call(layer, seq_first_layer, nested x), exception, words in the message)
    ("cross_attention", lambda m, _, x: m(x, nested_batch(torch.strided), nested_batch(torch.strided)), TypeError,
     ["`key`", "the nested query itself", "nested tensor (torch.strided) of 3 sequences"]),
    ("dense_query", lambda m, _, x: m(torch.randn(B, L, E), x, x), TypeError, ["`key`", "a regular tensor"]),
    ("key_padding_mask", lambda m, _, x: m(x, x, x, key_padding_mask=padding_mask(L)), ValueError,
     ["`key_padding_mask`", "None with nested inputs", "(3, 4)"]),
    ("attn_mask", lambda m, _, x: m(x, x, x, attn_mask=top_left_causal(L, L)), ValueError,
     ["`attn_mask`", "None with nested inputs"]),
    ("seq_first", lambda _, m, x: m(x, x, x), TypeError, ["`query`", "batch_first=False", "batch_first=True"]),
    ("width", lambda m, _, x: m(*[nested_batch(torch.jagged, width=5)] * 3), ValueError,
     ["`query`", "(length, 8) sequences", "(4, 5)"]),
]


@strided_nested_is_prototype
@pytest.mark.parametrize("call,exc,words", [c[1:] for c in NESTED_ERRORS], ids=[c[0] for c in NESTED_ERRORS])
def test_nested_input_errors(call, exc, words):
    """Unsupported nested calls fail up front naming the argument, not deep inside a matmul."""
    layer, seq_first = tnn.MultiheadAttention(E, H, batch_first=True), tnn.MultiheadAttention(E, H)
    with pytest.raises(exc) as info:
        call(layer, seq_first, nested_batch(torch.strided))
    message = str(info.value)
    assert "hint:" in message
    for word in words:
        assert word in message


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


def test_compile_fullgraph_attn_mask_after_length_change():
    """A second length makes torch.compile recompile with a symbolic length; a fixed-shape mask must still pass."""
    torch._dynamo.reset()  # so the length becomes symbolic here, whatever compiled before
    ours = tnn.MultiheadAttention(E, H, batch_first=True)
    compiled = torch.compile(ours, fullgraph=True, backend="eager")  # the checks run while dynamo traces
    for length in (L, S):
        x = torch.randn(B, length, E)
        compiled(x, x, x, need_weights=False)
    masks = {"attn_mask": float_of(top_left_causal(S, S)), "is_causal": True, "need_weights": False}
    torch.testing.assert_close(compiled(x, x, x, **masks)[0], ours(x, x, x, **masks)[0], atol=1e-6, rtol=0)


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
    assert "causal_alignment='top_left'" in repr(ours)


@pytest.mark.parametrize("build,forward,exc,words", [
    (dict(embed_dim=8, num_heads=3), None, ValueError, ["num_heads", "divisor of embed_dim = 8", "got 3"]),
    (dict(embed_dim=0, num_heads=1), None, ValueError, ["embed_dim", "positive"]),
    (dict(embed_dim=8, num_heads=2, dropout=1.0), None, ValueError, ["dropout", "[0, 1)"]),
    (dict(embed_dim=8, num_heads=2, causal_alignment="left"), None, ValueError,
     ["causal_alignment", "('top_left', 'bottom_right')", "'left'"]),
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
