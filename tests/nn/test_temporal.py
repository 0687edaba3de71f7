"""RelativeTemporalAttention, MultiScaleDecayAttention and TemporalContext: maths, caching, leaks, compile."""
import math

import pytest
import torch

import tempattn.nn as tnn

E, H, B, T = 8, 2, 2, 7
WINDOW, N_CATEGORIES = 2, 3


def randomise(layer):
    """Non-trivial values for the zero-initialised score parameters."""
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name in ("rel_bias", "alpha_logits", "gamma_raw", "category_bias.weight"):
                p.normal_()
    return layer


def make_relpos(**kwargs):
    return randomise(tnn.RelativeTemporalAttention(E, H, window=WINDOW, n_categories=N_CATEGORIES, **kwargs))


def make_decay(**kwargs):
    return randomise(tnn.MultiScaleDecayAttention(E, H, **kwargs))


def padding_mask():
    return torch.arange(T)[None, :] >= torch.tensor([T, T - 2])[:, None]


def increasing_times(dtype=torch.float64):
    return 1.7e9 + torch.cumsum(torch.rand(B, T, dtype=dtype) * 3.0, dim=1)


def dense_layer_output(layer, x, score_mod, admissible):
    """Plain-PyTorch output of a causal layer given its (B|1, H, T, T) score modifier and mask."""
    q, k, v = layer.in_proj(x).chunk(3, dim=-1)
    q, k, v = (t.unflatten(-1, (H, -1)).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(E // H) + score_mod
    weights = torch.softmax(scores.masked_fill(~admissible, float("-inf")), dim=-1)
    return layer.out_proj((weights @ v).transpose(1, 2).flatten(2))


def offsets():
    return torch.arange(T)[:, None] - torch.arange(T)[None, :]


def test_relpos_matches_dense_formula():
    layer = make_relpos()
    x, categories, kpm = torch.randn(B, T, E), torch.randint(0, N_CATEGORIES, (B, T)), padding_mask()
    delta = offsets()
    rel = layer.rel_bias[:, delta.clamp(0, WINDOW)][None]
    limit = layer.category_bias_limit
    key_bias = (limit * torch.tanh(layer.category_bias.weight[categories] / limit)).transpose(1, 2)[:, :, None, :]
    admissible = ((delta >= 0) & (delta <= WINDOW))[None, None] & ~kpm[:, None, None, :]
    expected = dense_layer_output(layer, x, rel + key_bias, admissible)
    got = layer(x, categories=categories, key_padding_mask=kpm)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("use_times", [False, True])
def test_decay_matches_dense_formula(use_times):
    layer = make_decay()
    x = torch.randn(B, T, E)
    times = increasing_times() if use_times else None
    delta = (times[:, :, None] - times[:, None, :]).float() if use_times else offsets().float()[None]
    gamma, alpha = layer.decay_stats()
    mix = (alpha[None, :, None, None, :] * gamma[None, :, None, None, :] ** delta.clamp_min(0)[:, None, :, :, None])
    score_mod = torch.log(mix.sum(-1) + layer.eps)
    admissible = (offsets() >= 0)[None, None]
    torch.testing.assert_close(layer(x, times=times), dense_layer_output(layer, x, score_mod, admissible),
                               atol=1e-5, rtol=1e-5)


def test_decay_rates_stay_in_their_ranges():
    layer = tnn.MultiScaleDecayAttention(E, H, scales=((0.5, 0.7), (0.9, 1.0)))
    with torch.no_grad():
        layer.gamma_raw.copy_(torch.tensor([[-1e4, 1e4], [30.0, -30.0]]))
    gamma, alpha = layer.decay_stats()
    assert gamma.shape == alpha.shape == (H, 2) and not gamma.requires_grad
    low, high = torch.tensor([0.5, 0.9]), torch.tensor([0.7, 1.0])
    assert ((gamma >= low) & (gamma <= high)).all()
    torch.testing.assert_close(alpha.sum(-1), torch.ones(H))
    fresh = tnn.MultiScaleDecayAttention(E, 4).decay_stats().gamma
    assert (fresh[1:] > fresh[:-1]).all()  # heads start spread over each range


# ---- incremental decoding ----------------------------------------------------------------------

def run_in_chunks(layer, x, chunk_sizes, **per_step):
    """Decode ``x`` in chunks through the cache; return the concatenated outputs and the caches."""
    cache, outputs, caches, start = layer.empty_cache(x.shape[0]), [], [], 0
    for size in chunk_sizes:
        sl = slice(start, start + size)
        step_kwargs = {name: value[:, sl] for name, value in per_step.items()}
        y, cache = layer(x[:, sl], cache=cache, **step_kwargs)
        outputs.append(y)
        caches.append(cache)
        start += size
    return torch.cat(outputs, dim=1), caches


CHUNKINGS = [[1] * T, [3, 1, 2, 1]]


@pytest.mark.parametrize("chunks", CHUNKINGS, ids=["steps", "chunks"])
def test_relpos_cache_matches_full_forward(chunks):
    layer = make_relpos()
    x, categories, kpm = torch.randn(B, T, E), torch.randint(0, N_CATEGORIES, (B, T)), padding_mask()
    full = layer(x, categories=categories, key_padding_mask=kpm)
    decoded, caches = run_in_chunks(layer, x, chunks, categories=categories, key_padding_mask=kpm)
    torch.testing.assert_close(decoded, full, atol=1e-5, rtol=1e-5)
    assert all(c.length <= WINDOW for c in caches) and caches[-1].key_bias.shape == (B, H, WINDOW)


@pytest.mark.parametrize("chunks", CHUNKINGS, ids=["steps", "chunks"])
@pytest.mark.parametrize("window", [None, 3])
def test_decay_cache_matches_full_forward(chunks, window):
    layer = make_decay(window=window)
    x, times, kpm = torch.randn(B, T, E), increasing_times(), padding_mask()
    full = layer(x, times=times, key_padding_mask=kpm)
    decoded, caches = run_in_chunks(layer, x, chunks, times=times, key_padding_mask=kpm)
    torch.testing.assert_close(decoded, full, atol=1e-5, rtol=1e-5)
    assert caches[-1].length == (T if window is None else window)


@pytest.mark.parametrize("chunks", CHUNKINGS, ids=["steps", "chunks"])
def test_temporal_context_cache_matches_full_forward(chunks):
    layer = tnn.TemporalContext(E, kernel_size=3)
    x = torch.randn(B, T, E)
    decoded, caches = run_in_chunks(layer, x, chunks)
    torch.testing.assert_close(decoded, layer(x), atol=1e-6, rtol=1e-6)
    assert caches[-1].shape == (B, 2, E)


def test_cache_rejects_mismatch():
    layer = make_decay()
    cache = layer(torch.randn(B, 2, E), cache=layer.empty_cache(B))[1]
    with pytest.raises(ValueError, match="`times` must be given on every step"):
        layer(torch.randn(B, 1, E), times=torch.zeros(B, 1), cache=cache)
    with pytest.raises(ValueError, match=r"`cache` must be of \(B, H, D\)"):
        layer(torch.randn(B + 1, 1, E), cache=cache)
    with pytest.raises(TypeError, match="`cache` must be a KVCache"):
        layer(torch.randn(B, 1, E), cache=(cache.k, cache.v))


# ---- no leaks from the future --------------------------------------------------------------------

CAUSAL_LAYERS = {
    "relpos": lambda: (make_relpos(), {"categories": torch.randint(0, N_CATEGORIES, (B, T))}),
    "decay": lambda: (make_decay(), {}),
    "decay_times": lambda: (make_decay(window=4), {"times": increasing_times()}),
    "context": lambda: (tnn.TemporalContext(E, kernel_size=3), {}),
}


def perturb_after(t, x, extra):
    """Copies of ``x`` and the per-step inputs changed at every step after ``t``."""
    x = x.clone()
    x[:, t + 1:] = torch.randn_like(x[:, t + 1:])
    changed = {}
    for name, value in extra.items():
        value = value.clone()
        if name == "categories":
            value[:, t + 1:] = (value[:, t + 1:] + 1) % N_CATEGORIES
        else:  # times: jump forward, still non-decreasing
            value[:, t + 1:] += 100.0
        changed[name] = value
    return x, changed


@pytest.mark.parametrize("name", CAUSAL_LAYERS)
def test_future_steps_do_not_leak(name):
    layer, extra = CAUSAL_LAYERS[name]()
    x = torch.randn(B, T, E)
    before = layer(x, **extra)
    for t in range(T - 1):
        changed_x, changed_extra = perturb_after(t, x, extra)
        after = layer(changed_x, **changed_extra)
        torch.testing.assert_close(after[:, : t + 1], before[:, : t + 1], atol=0, rtol=0)
        assert not torch.equal(after[:, t + 1:], before[:, t + 1:])


# ---- gradients, compile, modules ----------------------------------------------------------------

def float64_layers():
    kw = {"dtype": torch.float64, "backend": "reference"}
    return {
        "relpos": (tnn.RelativeTemporalAttention(4, 2, window=2, n_categories=2, **kw),
                   {"categories": torch.tensor([[0, 1, 1], [1, 0, 1]]),
                    "key_padding_mask": torch.tensor([[False, False, True], [False, False, False]])}),
        "decay": (tnn.MultiScaleDecayAttention(4, 2, **kw),
                  {"times": torch.tensor([[0.0, 1.0, 3.0], [0.0, 0.5, 0.5]])}),
        "context": (tnn.TemporalContext(4, kernel_size=2, dtype=torch.float64), {}),
    }


@pytest.mark.parametrize("name", ["relpos", "decay", "context"])
def test_gradcheck_float64(name):
    layer, extra = float64_layers()[name]
    randomise(layer)
    params = [p for n, p in layer.named_parameters() if n in ("rel_bias", "gamma_raw", "alpha_logits")]
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: layer(x, **extra), (x,))
    for p in params:  # the score parameters, one at a time
        def of_param(value, p=p):
            return torch.func.functional_call(layer, {n: value if q is p else q for n, q in layer.named_parameters()},
                                              (x.detach(),), extra)
        assert torch.autograd.gradcheck(of_param, (p.detach().clone().requires_grad_(True),))


@pytest.mark.parametrize("name", ["relpos", "decay", "context"])
def test_compile_fullgraph_with_and_without_cache(name):
    layer, extra = float64_layers()[name]
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    compiled = torch.compile(layer, fullgraph=True)
    torch.testing.assert_close(compiled(x, **extra), layer(x, **extra))
    step = {k: v[:, :1] for k, v in extra.items()}
    expected, expected_cache = layer(x[:, :1], cache=layer.empty_cache(2), **step)
    got, got_cache = compiled(x[:, :1], cache=layer.empty_cache(2), **step)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got_cache, expected_cache)


@pytest.mark.parametrize("name", ["relpos", "decay", "context"])
def test_state_dict_round_trip_to_dtype_and_reset(name):
    layer, extra = float64_layers()[name]
    layer = layer.to(torch.float32)
    assert all(t.dtype == torch.float32 for t in [*layer.parameters(), *layer.buffers()])
    extra = {k: v.float() if v.is_floating_point() else v for k, v in extra.items()}
    x = torch.randn(2, 3, 4)
    randomise(layer)
    clone, _ = float64_layers()[name]
    clone.load_state_dict(layer.state_dict(), strict=True)
    torch.testing.assert_close(clone.float()(x, **extra), layer(x, **extra))
    layer.reset_parameters()
    assert not torch.allclose(clone.float()(x, **extra), layer(x, **extra))
    assert "dim=4" in repr(layer) or "embed_dim=4" in repr(layer)


@pytest.mark.parametrize("build,call,exc,words", [
    (lambda: tnn.RelativeTemporalAttention(8, 3), None, ValueError, ["num_heads", "divisor of embed_dim = 8"]),
    (lambda: tnn.RelativeTemporalAttention(8, 2, window=-1), None, ValueError, ["window", ">= 0", "-1"]),
    (lambda: tnn.RelativeTemporalAttention(8, 2, window=None), None, TypeError, ["window", "NoneType"]),
    (lambda: tnn.MultiScaleDecayAttention(8, 2, scales=((0.0, 0.5),)), None, ValueError, ["scales", "0 < lo"]),
    (lambda: tnn.TemporalContext(8, kernel_size=0), None, ValueError, ["kernel_size", "positive"]),
    (lambda: tnn.RelativeTemporalAttention(8, 2), lambda m: m(torch.randn(2, 5, 6)), ValueError,
     ["`x`", "8 features", "(2, 5, 6)"]),
    (lambda: tnn.RelativeTemporalAttention(8, 2, n_categories=3), lambda m: m(torch.randn(2, 5, 8)), TypeError,
     ["categories", "long tensor of shape (B, T) = (2, 5)", "NoneType"]),
    (lambda: tnn.RelativeTemporalAttention(8, 2, n_categories=3),
     lambda m: m(torch.randn(2, 5, 8), categories=torch.full((2, 5), 3)), ValueError, ["categories", "[0, 3)"]),
    (lambda: tnn.MultiScaleDecayAttention(8, 2),
     lambda m: m(torch.randn(2, 5, 8), key_padding_mask=torch.zeros(2, 4, dtype=torch.bool)), ValueError,
     ["key_padding_mask", "(2, 5)", "(2, 4)"]),
    (lambda: tnn.MultiScaleDecayAttention(8, 2), lambda m: m(torch.randn(2, 5, 8), times=torch.zeros(2, 4)),
     ValueError, ["times", "(2, 5)", "(2, 4)"]),
])
def test_errors_name_argument_expected_and_actual(build, call, exc, words):
    with pytest.raises(exc) as info:
        call(build()) if call else build()
    message = str(info.value)
    assert "hint:" in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("name", ["relpos", "decay"])
def test_check_inputs_false_skips_the_argument_checks_only(name):
    """A model that checks its inputs once turns the layer's own checks off; the results are the same."""
    layer = make_relpos() if name == "relpos" else make_decay()
    x, kpm = torch.randn(B, T, E), padding_mask()
    extra = ({"categories": torch.randint(0, N_CATEGORIES, (B, T))} if name == "relpos"
             else {"times": increasing_times()})
    expected = layer(x, key_padding_mask=kpm, **extra)
    cache = layer(x[:, :3], cache=layer.empty_cache(B), **{k: v[:, :3] for k, v in extra.items()})[1]
    step = layer(x[:, 3:4], cache=cache, **{k: v[:, 3:4] for k, v in extra.items()})[0]
    layer.check_inputs = False
    torch.testing.assert_close(layer(x, key_padding_mask=kpm, **extra), expected, rtol=0, atol=0)
    torch.testing.assert_close(layer(x[:, 3:4], cache=cache, **{k: v[:, 3:4] for k, v in extra.items()})[0], step,
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="`x`"):  # checked by default
        tnn.RelativeTemporalAttention(E, H)(torch.randn(B, T, E + 1))
