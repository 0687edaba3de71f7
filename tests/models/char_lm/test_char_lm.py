"""char_lm / char_lstm: leak-freedom, attention maths, KV-cache decoding, sampling filters, bad input."""
import math

import pytest
import torch

from tempattn.models import create_model
from tempattn.models.char_lm import CharLSTM, CharTransformerLM
from tempattn.nn import CausalSelfAttention
from tempattn.models.char_lm.model import (filter_logits, lstm_parameter_count, matched_lstm_hidden,
                                           next_token_probs, sample_next)
from tempattn.testing import dropout_keep_mask

V, CONTEXT, B, T = 11, 12, 3, 10


def tiny_lm(**kw) -> CharTransformerLM:
    options = dict(vocab_size=V, context=CONTEXT, embed_dim=16, num_heads=2, num_layers=2, dropout=0.0,
                   backend="cpu")
    return CharTransformerLM(**{**options, **kw})


def tiny_lstm() -> CharLSTM:
    return CharLSTM(vocab_size=V, embed_dim=8, hidden_size=16, num_layers=2)


MODELS = {"char_lm": tiny_lm, "char_lstm": tiny_lstm}


def random_ids(*shape) -> torch.Tensor:
    return torch.randint(0, V, shape)


def changed(ids: torch.Tensor) -> torch.Tensor:
    """Every id replaced by a different one."""
    return (ids + torch.randint(1, V, ids.shape)) % V


# ---- defaults --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["char_lm", "char_lstm"])
def test_create_model_defaults_start_near_uniform(name):
    model = create_model(name).eval()
    ids = torch.randint(0, model.vocab_size, (2, 32))
    with torch.no_grad():
        logits = model(ids)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids.roll(-1, 1).flatten())
    assert abs(float(loss) - math.log(model.vocab_size)) < 0.2


def test_default_models_have_similar_parameter_counts():
    counts = [sum(p.numel() for p in create_model(n).parameters()) for n in ("char_lm", "char_lstm")]
    assert abs(counts[0] - counts[1]) / counts[0] < 0.1


def test_tied_head_shares_the_embedding_and_untied_adds_v_times_e():
    tied, untied = tiny_lm(), tiny_lm(tie_weights=False)
    assert tied.head.weight is tied.token_embedding.weight
    assert untied.head.weight is not untied.token_embedding.weight
    n_tied, n_untied = (sum(p.numel() for p in m.parameters()) for m in (tied, untied))
    assert n_untied - n_tied == V * 16


# ---- leak-freedom -------------------------------------------------------------------------------------

def logits_with_seed(model, ids, seed):
    """Forward with torch's generator reset, so training-mode dropout draws the same Philox seeds."""
    torch.manual_seed(seed)
    return model(ids)


@pytest.mark.parametrize("name,training", [("char_lm", False), ("char_lm", True), ("char_lstm", False)])
def test_future_tokens_do_not_change_earlier_logits(name, training):
    model = tiny_lm(dropout=0.3) if name == "char_lm" else MODELS[name]()
    model.train(training)
    ids = random_ids(B, T)
    t = int(torch.randint(1, T - 1, ()))
    future = ids.clone()
    future[:, t + 1:] = changed(ids[:, t + 1:])
    past = ids.clone()
    past[:, t] = changed(ids[:, t])
    with torch.no_grad():
        base, with_future, with_past = (logits_with_seed(model, x, 7) for x in (ids, future, past))
    torch.testing.assert_close(with_future[:, :t + 1], base[:, :t + 1], rtol=0, atol=1e-6)
    torch.testing.assert_close(with_past[:, :t], base[:, :t], rtol=0, atol=1e-6)
    assert (with_past[:, t] - base[:, t]).abs().amax(-1).min() > 1e-4  # each row sees its own change
    assert (with_future[:, t + 1:] - base[:, t + 1:]).abs().max() > 1e-4


# ---- attention maths and dropout --------------------------------------------------------------------

def dense_causal_attention(layer, x, keep=None, p=0.0):
    """Plain-PyTorch causal attention of ``layer``; ``keep`` (B, H, T, T) applies dropout after softmax."""
    H = layer.num_heads
    q, k, v = (t.unflatten(-1, (H, -1)).transpose(1, 2) for t in layer.in_proj(x).chunk(3, dim=-1))
    scores = q @ k.transpose(-1, -2) / math.sqrt(layer.head_dim)
    future = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)
    weights = torch.softmax(scores.masked_fill(future, -math.inf), dim=-1)
    if keep is not None:
        weights = weights * keep / (1.0 - p)
    return layer.out_proj((weights @ v).transpose(1, 2).flatten(2))


def test_causal_self_attention_drops_probabilities_after_softmax(backend):
    p, seed, (b, t, e, h) = 0.3, 1234, (2, 6, 8, 2)
    layer = CausalSelfAttention(e, h, dropout=p, backend=backend).train()
    x = torch.randn(b, t, e)
    keep = dropout_keep_mask(seed, b, h, t, t, p, device=x.device)
    torch.testing.assert_close(layer(x, seed=seed), dense_causal_attention(layer, x, keep, p), rtol=1e-5, atol=1e-5)
    layer.eval()
    torch.testing.assert_close(layer(x, seed=seed), dense_causal_attention(layer, x), rtol=1e-5, atol=1e-5)


def test_dropout_only_in_training_mode():
    model, ids = tiny_lm(dropout=0.5), random_ids(B, T)
    model.eval()
    torch.testing.assert_close(logits_with_seed(model, ids, 1), logits_with_seed(model, ids, 2), rtol=0, atol=0)
    model.train()
    assert not torch.allclose(logits_with_seed(model, ids, 1), logits_with_seed(model, ids, 2))
    torch.testing.assert_close(logits_with_seed(model, ids, 3), logits_with_seed(model, ids, 3), rtol=0, atol=0)


# ---- incremental decoding ------------------------------------------------------------------------------

@torch.no_grad()
def test_kv_cache_decoding_matches_full_forward_past_the_context():
    model = tiny_lm().eval()
    ids = random_ids(B, CONTEXT + 5)
    prompt_len = 4
    logits, state = model._start(ids[:, :prompt_len])
    torch.testing.assert_close(logits, model(ids[:, :prompt_len])[:, -1], rtol=1e-5, atol=1e-5)
    for t in range(prompt_len, ids.shape[1]):
        logits, state = model._step(ids[:, t], state)
        window = ids[:, max(0, t + 1 - CONTEXT):t + 1]
        torch.testing.assert_close(logits, model(window)[:, -1], rtol=1e-5, atol=1e-5)
        assert (state.caches is not None) == (t + 1 <= CONTEXT)


def reference_generate(model, prompt, n, generator, **sampling):
    """Generation by re-running the model on the whole text (its last ``context`` ids) each step."""
    tokens = prompt
    for _ in range(n):
        window = tokens[:, -model.context:] if hasattr(model, "context") else tokens
        logits = model(window)[:, -1]
        tokens = torch.cat([tokens, sample_next(logits, generator=generator, **sampling)[:, None]], dim=1)
    return tokens


@pytest.mark.parametrize("name", ["char_lm", "char_lstm"])
def test_generate_matches_reference_sampler_and_is_deterministic(name):
    model = MODELS[name]().train()
    prompt, n, sampling = random_ids(B, 5), CONTEXT + 4, dict(temperature=0.7, top_k=8, top_p=0.95)
    got = model.generate(prompt, n, generator=torch.Generator().manual_seed(5), **sampling)
    assert model.training  # generate restores the mode it found
    with torch.no_grad():
        expected = reference_generate(model.eval(), prompt, n, torch.Generator().manual_seed(5), **sampling)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    again = model.generate(prompt, n, generator=torch.Generator().manual_seed(5), **sampling)
    torch.testing.assert_close(again, got, rtol=0, atol=0)
    unbatched = model.generate(prompt[0], n, generator=torch.Generator().manual_seed(5), **sampling)
    first_row = model.generate(prompt[:1], n, generator=torch.Generator().manual_seed(5), **sampling)
    torch.testing.assert_close(unbatched, first_row[0], rtol=0, atol=0)
    other = model.generate(prompt, 40, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(other, model.generate(prompt, 40, generator=torch.Generator().manual_seed(5)))


# ---- sampling filters on hand-built logits ------------------------------------------------------------

def test_top_k_one_is_argmax():
    logits = torch.randn(6, V)
    probs = next_token_probs(logits, temperature=1.3, top_k=1)
    torch.testing.assert_close(probs, torch.nn.functional.one_hot(logits.argmax(-1), V).float())
    for seed in range(3):
        draw = sample_next(logits, top_k=1, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(draw, logits.argmax(-1))


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    e3, e2 = math.exp(3.0), math.exp(2.0)
    expected = torch.tensor([[0.0, e3 / (e3 + e2), e2 / (e3 + e2), 0.0]])
    torch.testing.assert_close(next_token_probs(logits, top_k=2), expected)


@pytest.mark.parametrize("top_p,kept", [(0.3, [1]), (0.74, [1, 3]), (0.76, [0, 1, 3]), (1.0, [0, 1, 2, 3])])
def test_top_p_keeps_the_smallest_set_reaching_the_mass(top_p, kept):
    probs = torch.tensor([[0.1875, 0.5, 0.0625, 0.25]])
    expected = torch.zeros_like(probs)
    expected[0, kept] = probs[0, kept] / probs[0, kept].sum()
    torch.testing.assert_close(next_token_probs(probs.log(), top_p=top_p), expected)
    assert torch.isneginf(filter_logits(probs.log(), top_p=top_p)).sum() == 4 - len(kept)


def test_temperature_scales_before_top_p():
    logits = torch.tensor([[0.5, 0.3, 0.2]]).log()
    sharpened = torch.tensor([[0.25, 0.09, 0.04]]) / 0.38  # p**(1/0.5), renormalised
    torch.testing.assert_close(next_token_probs(logits, temperature=0.5), sharpened)
    torch.testing.assert_close(next_token_probs(logits, temperature=0.5, top_p=0.6), torch.tensor([[1.0, 0.0, 0.0]]))
    torch.testing.assert_close(next_token_probs(logits, top_p=0.6), torch.tensor([[0.625, 0.375, 0.0]]))


def test_sample_frequencies_follow_the_filtered_distribution():
    logits = torch.randn(V)
    probs = next_token_probs(logits, temperature=0.9, top_p=0.8)
    draws = sample_next(logits.expand(40000, V), temperature=0.9, top_p=0.8,
                        generator=torch.Generator().manual_seed(0))
    frequencies = torch.bincount(draws, minlength=V).float() / len(draws)
    torch.testing.assert_close(frequencies, probs, rtol=0, atol=0.012)
    assert (frequencies[probs == 0] == 0).all()


# ---- bad input ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,exc,name", [
    (dict(temperature=0.0), ValueError, "temperature"),
    (dict(temperature=-1.0), ValueError, "temperature"),
    (dict(temperature="hot"), TypeError, "temperature"),
    (dict(top_k=0), ValueError, "top_k"),
    (dict(top_k=V + 1), ValueError, "top_k"),
    (dict(top_k=2.5), TypeError, "top_k"),
    (dict(top_p=0.0), ValueError, "top_p"),
    (dict(top_p=1.5), ValueError, "top_p"),
    (dict(max_new_tokens=-1), ValueError, "max_new_tokens"),
    (dict(max_new_tokens=2.0), TypeError, "max_new_tokens"),
    (dict(prompt_ids=torch.rand(1, 3)), TypeError, "prompt_ids"),
    (dict(prompt_ids=torch.tensor([[0, V]])), ValueError, "prompt_ids"),
    (dict(prompt_ids=torch.zeros(1, 0, dtype=torch.long)), ValueError, "prompt_ids"),
])
def test_generate_rejects_bad_arguments(kwargs, exc, name):
    arguments = {"prompt_ids": random_ids(1, 3), "max_new_tokens": 4, **kwargs}
    with pytest.raises(exc, match=rf"`{name}` must be .*got .*hint"):
        tiny_lm().generate(**arguments)


@pytest.mark.parametrize("build,exc,name", [
    (lambda: tiny_lm()(random_ids(1, CONTEXT + 1)), ValueError, "ids"),
    (lambda: tiny_lm()(random_ids(1, 3).float()), TypeError, "ids"),
    (lambda: tiny_lstm()(torch.full((1, 3), -1)), ValueError, "ids"),
    (lambda: tiny_lm(num_heads=3), ValueError, "num_heads"),
    (lambda: tiny_lm(dropout=1.0), ValueError, "dropout"),
    (lambda: tiny_lm(context=0), ValueError, "context"),
    (lambda: tiny_lm(tie_weights=1), TypeError, "tie_weights"),
    (lambda: CharLSTM(hidden_size=0), ValueError, "hidden_size"),
])
def test_models_reject_bad_input(build, exc, name):
    with pytest.raises(exc, match=rf"`{name}` must be .*got .*hint"):
        build()


# ---- parameter matching ---------------------------------------------------------------------------------

@pytest.mark.parametrize("layers", [1, 3])
def test_lstm_parameter_count_formula(layers):
    model = CharLSTM(vocab_size=7, embed_dim=5, hidden_size=9, num_layers=layers)
    assert lstm_parameter_count(7, 5, 9, layers) == sum(p.numel() for p in model.parameters())


def test_matched_lstm_hidden_is_the_closest_width():
    target = int(torch.randint(20_000, 200_000, ()))
    gaps = {h: abs(lstm_parameter_count(70, 64, h, 2) - target) for h in range(1, 400)}
    assert gaps[matched_lstm_hidden(target, 70, 64, 2)] == min(gaps.values())
