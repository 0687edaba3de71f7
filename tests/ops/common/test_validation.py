"""Every bad input raises ValueError/TypeError naming the argument, expected vs received, and a hint."""
import pytest
import torch

import tempattn

B, H, T, D = 2, 3, 8, 16


def qkv(**kw):
    shape = dict(B=B, H=H, Tq=T, Tk=T, D=D, Dv=D)
    shape.update(kw)
    q = torch.randn(shape["B"], shape["H"], shape["Tq"], shape["D"])
    k = torch.randn(shape["B"], shape["H"], shape["Tk"], shape["D"])
    v = torch.randn(shape["B"], shape["H"], shape["Tk"], shape["Dv"])
    return q, k, v


def masked(**kw):
    q, k, v = qkv()
    args = dict(q=q, k=k, v=v)
    args.update(kw)
    q, k, v = args.pop("q"), args.pop("k"), args.pop("v")
    return lambda: tempattn.masked_sdpa(q, k, v, backend="reference", **args)


def relpos(window=3, rel_bias=None, **kw):
    q, k, v = qkv()
    rel_bias = torch.randn(H, 4) if rel_bias is None else rel_bias
    return lambda: tempattn.relpos_attention(q, k, v, rel_bias, window=window, backend="reference", **kw)


def decay(log_gamma=None, alpha_logits=None, **kw):
    q, k, v = qkv()
    log_gamma = -torch.rand(H, 3) if log_gamma is None else log_gamma
    alpha_logits = torch.randn(H, 3) if alpha_logits is None else alpha_logits
    return lambda: tempattn.decay_attention(q, k, v, log_gamma, alpha_logits, backend="reference", **kw)


CASES = {
    # name: (call, exception, argument named in the message)
    "q_not_tensor": (masked(q=[[1.0]]), TypeError, "`q`"),
    "q_rank_3": (masked(q=torch.randn(B, T, D)), ValueError, "`q`"),
    "k_rank_5": (masked(k=torch.randn(B, H, T, D, 1)), ValueError, "`k`"),
    "q_integer": (masked(q=torch.ones(B, H, T, D, dtype=torch.int64)), TypeError, "`q`"),
    "v_dtype_mismatch": (masked(v=torch.randn(B, H, T, D, dtype=torch.float64)), TypeError, "`v`"),
    "k_dtype_mismatch": (masked(k=torch.randn(B, H, T, D).half()), TypeError, "`k`"),
    "batch_mismatch": (masked(k=torch.randn(B + 1, H, T, D)), ValueError, "`k/v`"),
    "heads_mismatch": (masked(v=torch.randn(B, H + 1, T, D)), ValueError, "`k/v`"),
    "head_dim_mismatch": (masked(k=torch.randn(B, H, T, D + 1)), ValueError, "`k`"),
    "kv_length_mismatch": (masked(v=torch.randn(B, H, T + 1, D)), ValueError, "`v`"),
    "head_dim_too_large": (masked(q=torch.randn(B, H, T, 257), k=torch.randn(B, H, T, 257)), ValueError, "`q`"),
    "value_dim_too_large": (masked(v=torch.randn(B, H, T, 300)), ValueError, "`v`"),
    "last_dim_stride": (masked(q=torch.randn(B, H, D, T).transpose(2, 3)), ValueError, "`q`"),
    "window_past_int64": (decay(window=2**63), ValueError, "`window`"),
    "causal_tq_gt_tk": (masked(q=torch.randn(B, H, T + 2, D), causal=True), ValueError, "`q`"),
    "causal_not_bool": (masked(causal=1), TypeError, "`causal`"),
    "both_masks": (masked(key_padding_mask=torch.zeros(B, T, dtype=torch.bool),
                          key_valid_mask=torch.ones(B, T, dtype=torch.bool)), ValueError, "key_valid_mask"),
    "float_padding_mask": (masked(key_padding_mask=torch.zeros(B, T)), TypeError, "key_bias"),
    "float_valid_mask": (masked(key_valid_mask=torch.ones(B, T)), TypeError, "key_bias"),
    "int_valid_mask": (masked(key_valid_mask=torch.ones(B, T, dtype=torch.int32)), TypeError, "`key_valid_mask`"),
    "mask_wrong_shape": (masked(key_padding_mask=torch.zeros(B, T + 1, dtype=torch.bool)), ValueError,
                         "`key_padding_mask`"),
    "mask_wrong_rank": (masked(key_valid_mask=torch.ones(B, 1, T, dtype=torch.bool)), ValueError,
                        "`key_valid_mask`"),
    "key_bias_wrong_shape": (masked(key_bias=torch.randn(B, T - 1)), ValueError, "`key_bias`"),
    "key_bias_wrong_heads": (masked(key_bias=torch.randn(B, H + 1, T)), ValueError, "`key_bias`"),
    "key_bias_integer": (masked(key_bias=torch.ones(B, T, dtype=torch.int64)), TypeError, "`key_bias`"),
    "dropout_negative": (masked(dropout_p=-0.1), ValueError, "`dropout_p`"),
    "dropout_one": (masked(dropout_p=1.0), ValueError, "`dropout_p`"),
    "dropout_not_number": (masked(dropout_p="0.1"), TypeError, "`dropout_p`"),
    "seed_negative": (masked(dropout_p=0.1, seed=-1), ValueError, "`seed`"),
    "seed_float": (masked(dropout_p=0.1, seed=1.5), TypeError, "`seed`"),
    "scale_nan": (masked(scale=float("nan")), ValueError, "`scale`"),
    "unknown_backend": (lambda: tempattn.masked_sdpa(*qkv(), backend="fast"), ValueError, "`backend`"),
    "rel_bias_wrong_width": (relpos(window=3, rel_bias=torch.randn(H, 3)), ValueError, "`rel_bias`"),
    "rel_bias_wrong_heads": (relpos(window=3, rel_bias=torch.randn(H + 1, 4)), ValueError, "`rel_bias`"),
    "rel_bias_rank_1": (relpos(window=3, rel_bias=torch.randn(4)), ValueError, "`rel_bias`"),
    "rel_bias_empty_unwindowed": (relpos(window=None, rel_bias=torch.randn(H, 0)), ValueError, "`rel_bias`"),
    "negative_window": (relpos(window=-1, rel_bias=torch.randn(H, 0)), ValueError, "`window`"),
    "window_float": (relpos(window=2.5), TypeError, "`window`"),
    "rel_bias_nan": (relpos(rel_bias=torch.tensor([[0.0, float("nan"), 0.0, 0.0]] * H)), ValueError, "`rel_bias`"),
    "log_gamma_positive": (decay(log_gamma=torch.full((H, 3), 0.1)), ValueError, "`log_gamma`"),
    "log_gamma_nan": (decay(log_gamma=torch.full((H, 3), float("nan"))), ValueError, "`log_gamma`"),
    "log_gamma_wrong_heads": (decay(log_gamma=-torch.rand(H + 1, 3)), ValueError, "`log_gamma`"),
    "alpha_mismatch": (decay(alpha_logits=torch.randn(H, 2)), ValueError, "`alpha_logits`"),
    "alpha_inf": (decay(alpha_logits=torch.full((H, 3), float("inf"))), ValueError, "`alpha_logits`"),
    "times_wrong_shape": (decay(times=torch.arange(T + 1.0).expand(B, T + 1)), ValueError, "`times`"),
    "times_decreasing": (decay(times=torch.arange(T, 0.0, -1.0).expand(B, T)), ValueError, "`times`"),
    "times_nan": (decay(times=torch.full((B, T), float("nan"))), ValueError, "`times`"),
    "eps_negative": (decay(eps=-1e-3), ValueError, "`eps`"),
    "decay_window_negative": (decay(window=-3), ValueError, "`window`"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_raises_a_clear_error(name):
    fn, exc, argument = CASES[name]
    with pytest.raises(exc) as info:
        fn()
    message = str(info.value)
    assert argument in message, message
    assert "hint:" in message, message
    assert "got" in message or "both" in message, message


def test_at_least_thirty_distinct_cases():
    assert len(CASES) >= 30


def test_relpos_window_is_a_required_keyword():
    q, k, v = qkv()
    with pytest.raises(TypeError):
        tempattn.relpos_attention(q, k, v, torch.randn(H, 4), backend="reference")


def test_device_mismatch_is_reported():
    q, k, v = qkv()
    with pytest.raises((ValueError, RuntimeError)) as info:
        tempattn.masked_sdpa(q, k.to("meta"), v, backend="reference")
    assert "`k`" in str(info.value) and "device" in str(info.value)


VALUE_CASES = {
    "rel_bias_nan": lambda q, k, v, be: tempattn.relpos_attention(
        q, k, v, torch.tensor([[0.0, float("nan"), 0.0, 0.0]] * H), window=3, backend=be),
    "log_gamma_positive": lambda q, k, v, be: tempattn.decay_attention(
        q, k, v, torch.full((H, 3), 0.1), torch.zeros(H, 3), backend=be),
    "alpha_inf": lambda q, k, v, be: tempattn.decay_attention(
        q, k, v, -torch.rand(H, 3), torch.full((H, 3), float("inf")), backend=be),
    "times_decreasing": lambda q, k, v, be: tempattn.decay_attention(
        q, k, v, -torch.rand(H, 3), torch.zeros(H, 3), times=torch.arange(T, 0.0, -1.0).expand(B, T), backend=be),
    "times_inf": lambda q, k, v, be: tempattn.decay_attention(
        q, k, v, -torch.rand(H, 3), torch.zeros(H, 3), times=torch.full((B, T), float("inf")), backend=be),
}


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("name", sorted(VALUE_CASES))
def test_value_checks_in_cpp_match_python(name, requires_grad):
    """The C++ operators run the value checks for the cpu backend: same ValueError, same message."""
    if not tempattn.backends()["cpu"]["available"]:
        pytest.skip("the cpu backend is not built")
    q, k, v = (t.requires_grad_(requires_grad) for t in qkv())
    messages = []
    for backend in ("reference", "cpu"):
        with pytest.raises(ValueError) as info:
            VALUE_CASES[name](q, k, v, backend)
        messages.append(str(info.value).splitlines()[0])
    assert messages[0] == messages[1]
