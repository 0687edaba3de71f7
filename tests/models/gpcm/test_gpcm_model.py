"""GPCM knowledge tracer: the GPCM formula, the memory, the response shift, leak-freedom, bad input."""
import math

import pytest
import torch

from tempattn.models import create_model
from tempattn.models.gpcm import GPCMKnowledgeTracer, build_gpcm
from tempattn.models.gpcm.model import (DKVMNMemory, gpcm_log_probs, linear_recurrence, ordered_thresholds,
                                        shifted_interactions)

NAMES = ("gpcm", "attention_gpcm")
N_ITEMS, K = 7, 4


def small_model(name: str, **kw) -> GPCMKnowledgeTracer:
    return create_model(name, n_items=N_ITEMS, n_categories=K, embed_dim=8, num_heads=2, memory_size=4,
                        memory_dim=8, summary_dim=8, backend="cpu", **kw).eval()


def random_batch(B: int = 3, T: int = 12):
    items = torch.randint(0, N_ITEMS, (B, T))
    responses = torch.randint(0, K, (B, T))
    padding = torch.arange(T) >= torch.randint(T // 2, T + 1, (B,))[:, None]
    padding[0] = False  # one full-length row
    return items, responses, padding


def test_gpcm_log_probs_match_hand_computed_values():
    # θ = 0.5, α = 2, β = (-1, 1): category logits 0, 2·1.5 = 3, 3 + 2·(-0.5) = 2
    log_probs = gpcm_log_probs(torch.tensor(0.5), torch.tensor(2.0), torch.tensor([-1.0, 1.0]))
    expected = torch.tensor([0.0, 3.0, 2.0]) - math.log(1 + math.exp(3) + math.exp(2))
    torch.testing.assert_close(log_probs, expected)
    masked = gpcm_log_probs(torch.tensor(0.5), torch.tensor(2.0), torch.tensor([-1.0, 1.0]),
                            torch.tensor([True, True, False]))
    torch.testing.assert_close(masked[:2], torch.tensor([0.0, 3.0]) - math.log(1 + math.exp(3)))
    assert masked[2] == float("-inf")


def test_gpcm_with_two_categories_is_the_2pl_model():
    theta, alpha, beta = torch.randn(50), torch.rand(50) + 0.5, torch.randn(50, 1)
    p_correct = gpcm_log_probs(theta, alpha, beta)[:, 1].exp()
    torch.testing.assert_close(p_correct, torch.sigmoid(alpha * (theta - beta[:, 0])))


def test_ordered_thresholds_are_strictly_increasing_from_the_first():
    first, raw = torch.randn(20, 1), 3 * torch.randn(20, 4)
    beta = ordered_thresholds(first, raw)
    assert beta.shape == (20, 5)
    assert bool((beta.diff(dim=1) > 0).all())
    torch.testing.assert_close(beta[:, :1], first)


def test_shifted_interactions_carry_the_previous_step_only():
    items = torch.tensor([[3, 1, 2, 0]])
    responses = torch.tensor([[1, 0, 2, 1]])
    padding = torch.tensor([[False, False, True, False]])
    interaction, response = shifted_interactions(items, responses, padding, n_items=5, n_categories=3)
    start = 5 * 3
    assert interaction.tolist() == [[start, 3 * 3 + 1, 1 * 3 + 0, start]]  # after padding: start again
    assert response.tolist() == [[3, 1, 0, 3]]


def test_dkvmn_reads_the_memory_before_the_step_writes():
    memory = DKVMNMemory(embed_dim=2, write_dim=2, memory_size=2, memory_dim=2)
    with torch.no_grad():
        memory.key_memory.copy_(torch.eye(2))
        memory.erase.weight.zero_()
        memory.erase.bias.fill_(100.0)  # erase everything addressed
        memory.add.weight.copy_(torch.eye(2))
        memory.add.bias.zero_()
    slot0, slot1 = torch.tensor([60.0, 0.0]), torch.tensor([0.0, 60.0])  # one-hot addressing
    keys = torch.stack([slot0, slot0, slot1, slot0])[None]
    writes = torch.randn(1, 4, 2)
    padding = torch.tensor([[False, True, False, False]])
    reads = memory(keys, writes, padding)[0]
    initial = memory.initial_values.detach()
    torch.testing.assert_close(reads[0], initial[0])  # nothing written yet
    torch.testing.assert_close(reads[1], torch.tanh(writes[0, 0]))  # step 0's write
    torch.testing.assert_close(reads[2], initial[1])
    torch.testing.assert_close(reads[3], torch.tanh(writes[0, 0]))  # the padded step 1 wrote nothing


def _dkvmn_as_designed(memory: DKVMNMemory, keys, writes, padding):
    """The DKVMN equations step by step: read, then M ← M ∘ (1 − w eᵀ) + w aᵀ unless the step is padding."""
    weights = torch.softmax(keys @ memory.key_memory.T, dim=-1)
    erase, add = torch.sigmoid(memory.erase(writes)), torch.tanh(memory.add(writes))
    values = memory.initial_values.expand(keys.shape[0], -1, -1)
    reads = []
    for t in range(keys.shape[1]):
        w = weights[:, t, :, None]
        reads.append((w * values).sum(dim=1))
        written = values * (1 - w * erase[:, t, None, :]) + w * add[:, t, None, :]
        values = torch.where(padding[:, t, None, None], values, written)
    return torch.stack(reads, dim=1)


@pytest.mark.parametrize("T", [2, 3, 7, 8, 33, 100, 129])
def test_dkvmn_matches_its_equations_with_gradients(T):
    """The scan form (no loop over steps) equals the step-by-step loop, values and gradients, odd and even T,
    one chunk of MEMORY_CHUNK pairs and several."""
    torch.manual_seed(T)
    memory = DKVMNMemory(embed_dim=5, write_dim=6, memory_size=3, memory_dim=4).double()
    keys = torch.randn(3, T, 5, dtype=torch.float64, requires_grad=True)
    writes = torch.randn(3, T, 6, dtype=torch.float64, requires_grad=True)
    padding = torch.zeros(3, T, dtype=torch.bool)
    padding[1, T // 3] = padding[2, T // 2 + 1:] = True  # a hole and right padding
    got, expected = memory(keys, writes, padding), _dkvmn_as_designed(memory, keys, writes, padding)
    torch.testing.assert_close(got, expected)
    weights = torch.randn_like(got)
    inputs = (keys, writes, *memory.parameters())
    for g, e in zip(torch.autograd.grad((got * weights).sum(), inputs),
                    torch.autograd.grad((expected * weights).sum(), inputs)):
        torch.testing.assert_close(g, e)
    assert memory(keys[:, :1], writes[:, :1], padding[:, :1]).shape == (3, 1, 4)  # T = 1: no write at all


def test_dkvmn_scan_survives_saturated_writes():
    """Erase 1 on a one-hot slot makes a write's keep factor exactly 0 (float32): the scan, which never divides,
    stays finite and equal to the loop."""
    memory = DKVMNMemory(embed_dim=2, write_dim=2, memory_size=2, memory_dim=3)
    with torch.no_grad():
        memory.key_memory.copy_(torch.eye(2))
        memory.erase.weight.zero_()
        memory.erase.bias.fill_(1e4)  # sigmoid -> exactly 1.0
    keys = torch.tensor([[1e4, 0.0], [0.0, 1e4]]).repeat(20, 1)[None]  # softmax -> exactly one-hot
    writes = torch.randn(1, 40, 2)
    padding = torch.zeros(1, 40, dtype=torch.bool)
    got, expected = memory(keys, writes, padding), _dkvmn_as_designed(memory, keys, writes, padding)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("T", [0, 1, 2, 5, 16, 31, 64])
def test_linear_recurrence_equals_the_loop(T):
    torch.manual_seed(T)
    decay = torch.rand(2, T, 3, 4, dtype=torch.float64, requires_grad=True)
    inputs = torch.randn(2, T, 3, 4, dtype=torch.float64, requires_grad=True)
    initial = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    h, expected = initial, []
    for t in range(T):
        h = decay[:, t] * h + inputs[:, t]
        expected.append(h)
    got = linear_recurrence(decay, inputs, initial)
    assert got.shape == (2, T, 3, 4)
    if T == 0:
        return
    expected = torch.stack(expected, dim=1)
    torch.testing.assert_close(got, expected)
    grads = torch.randn_like(got)
    for g, e in zip(torch.autograd.grad((got * grads).sum(), (decay, inputs, initial)),
                    torch.autograd.grad((expected * grads).sum(), (decay, inputs, initial))):
        torch.testing.assert_close(g, e)


def test_the_relative_layer_leaves_the_checks_to_the_model():
    model = small_model("gpcm")
    assert model.mixer.attention.check_inputs is False  # the model checks items and responses once per call
    items, responses, padding = random_batch()
    with pytest.raises(ValueError, match="`responses`"):
        model(items, responses + K, padding)


@pytest.mark.parametrize("name", NAMES)
def test_probabilities_normalise_and_respect_item_categories(name):
    item_categories = [2, 3, 4, 4, 2, 3, 4]
    model = small_model(name, item_categories=item_categories)
    items, responses, padding = random_batch()
    responses = torch.minimum(responses, torch.tensor(item_categories)[items] - 1)
    probs = model(items, responses, padding).exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(items.shape))
    impossible = torch.arange(K) >= torch.tensor(item_categories)[items][..., None]
    real = ~padding[..., None]  # padded steps hold junk
    assert bool((probs[impossible & real] == 0).all()) and bool((probs[~impossible & real] > 0).all())


@pytest.mark.parametrize("name", NAMES)
def test_no_leak_from_the_current_or_future_responses(name):
    model = small_model(name)
    items, responses, padding = random_batch()
    t0 = 6
    before = model(items, responses, padding)
    future_items, future_responses = items.clone(), responses.clone()
    future_responses[:, t0:] = (future_responses[:, t0:] + torch.randint(1, K, future_responses[:, t0:].shape)) % K
    future_items[:, t0 + 1:] = torch.randint(0, N_ITEMS, future_items[:, t0 + 1:].shape)
    after = model(future_items, future_responses, padding)
    torch.testing.assert_close(after[:, :t0 + 1], before[:, :t0 + 1], atol=1e-6, rtol=0)
    assert not torch.allclose(after[:, t0 + 1:], before[:, t0 + 1:], atol=1e-4)  # the future did change


@pytest.mark.parametrize("name", NAMES)
def test_the_previous_response_changes_the_next_prediction(name):
    model = small_model(name)
    items, responses, padding = random_batch()
    t0 = 4
    changed = responses.clone()
    changed[:, t0 - 1] = (changed[:, t0 - 1] + 1) % K
    before, after = model(items, responses, padding), model(items, changed, padding)
    torch.testing.assert_close(after[:, :t0], before[:, :t0], atol=1e-6, rtol=0)
    assert bool(((after[:, t0] - before[:, t0]).abs().amax(dim=-1) > 1e-5).all())


@pytest.mark.parametrize("name", NAMES)
def test_padded_steps_are_ignored(name):
    model = small_model(name)
    items, responses, padding = random_batch()
    padding[1, 3] = True  # a hole as well as the right padding
    junk_items = torch.where(padding, torch.randint(-5, 50, items.shape), items)
    junk_responses = torch.where(padding, torch.randint(-5, 50, items.shape), responses)
    before, after = model(items, responses, padding), model(junk_items, junk_responses, padding)
    torch.testing.assert_close(after[~padding], before[~padding], atol=1e-6, rtol=0)
    assert torch.isfinite(after).all()


def test_the_two_models_differ_only_in_attention():
    gpcm, baseline = small_model("gpcm"), small_model("attention_gpcm")
    assert type(gpcm.mixer).__name__ == "_RelativeMixer" and gpcm.mixer.attention.window == 5
    assert gpcm.mixer.attention.n_categories == K + 1  # the K response categories and "none"
    assert type(baseline.mixer).__name__ == "_CausalMixer"
    rest = lambda m: {k: v.shape for k, v in m.state_dict().items() if not k.startswith("mixer.")}
    assert rest(gpcm) == rest(baseline)


def test_create_model_defaults_run_and_backprop():
    for name in NAMES:
        model = create_model(name)
        items, responses = torch.randint(0, 50, (2, 9)), torch.randint(0, 4, (2, 9))
        log_probs = model(items, responses)
        assert log_probs.shape == (2, 9, 4)
        (-log_probs.gather(-1, responses[..., None]).mean()).backward()
        assert model.discrimination_raw.grad.abs().sum() > 0 and model.memory.erase.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("call, exc, words", [
    (lambda m, i, r: m(i, torch.where(torch.rand(i.shape) < 0.2, float("nan"), r.float())), TypeError,
     ["`responses`", "long", "NaN", "sequences_from_matrix"]),
    (lambda m, i, r: m(i + N_ITEMS, r), ValueError, ["`items`", f"[0, {N_ITEMS})", "values in"]),
    (lambda m, i, r: m(i, r + 1), ValueError, ["`responses`", f"[0, {K})", f"values in [1, {K}]"]),
    (lambda m, i, r: m(i.int(), r), TypeError, ["`items`", "long", "torch.int32"]),
    (lambda m, i, r: m(i, r[:, :-1]), ValueError, ["`responses`", "items' shape"]),
    (lambda m, i, r: m(i, r, torch.zeros(i.shape)), TypeError, ["`padding_mask`", "bool", "True = padding"]),
])
def test_bad_inputs_are_named(call, exc, words):
    model = small_model("gpcm")
    items, responses, _ = random_batch()
    with pytest.raises(exc) as info:
        call(model, items, responses)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("build, exc, words", [
    (lambda: build_gpcm(window=None), ValueError, ["`window`", "relative", "None"]),
    (lambda: create_model("attention_gpcm", window=3), TypeError, ["window"]),
    (lambda: GPCMKnowledgeTracer(5, 3, attention="causal", window=3), ValueError, ["`window`", "None", "got 3"]),
    (lambda: GPCMKnowledgeTracer(5, 3, attention="flash"), ValueError, ["`attention`", "'relative'", "'flash'"]),
    (lambda: build_gpcm(n_categories=1), ValueError, ["`n_categories`", ">= 2", "got 1"]),
    (lambda: build_gpcm(n_items=2.5), TypeError, ["`n_items`", "float"]),
    (lambda: build_gpcm(n_items=3, item_categories=[2, 5, 3]), ValueError, ["`item_categories`", "[2, 4]"]),
    (lambda: build_gpcm(n_items=3, item_categories=[2, 3]), ValueError, ["`item_categories`", "3 ints"]),
])
def test_bad_constructor_arguments_are_named(build, exc, words):
    with pytest.raises(exc) as info:
        build()
    for word in words:
        assert word in str(info.value)
