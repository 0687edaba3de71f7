"""TSA / TSAGated: padding invariance, leak checks, engineered features, MoE, gate, bad input."""
import dataclasses

import pytest
import torch

from tempattn.models import create_model
from tempattn.models.tsa.data import EventSequences
from tempattn.models.tsa.model import MixtureOfExperts, SequenceGate, engineered_features, prepare_events

CARDS = (8, 3)
SMALL = dict(d_model=16, n_heads=2, expert_hidden=16)


def random_events(batch=6, length=9, lengths=None) -> EventSequences:
    """Random right-padded sequences with sorted times; row 0 is full, the last row has 1 event."""
    if lengths is None:
        lengths = torch.randint(2, length + 1, (batch,))
        lengths[0], lengths[-1] = length, 1
    categorical = torch.stack([torch.randint(0, n, (batch, length)) for n in CARDS], dim=-1)
    times = torch.rand(batch, length, dtype=torch.float64).mul(5).cumsum(1)
    padding = torch.arange(length) >= lengths[:, None]
    return EventSequences(categorical, torch.randn(batch, length, 2), times, padding)


def perturb_padding(events: EventSequences) -> EventSequences:
    pad = events.padding_mask
    return EventSequences(torch.where(pad[..., None], torch.randint_like(events.categorical, 0, 3),
                                      events.categorical),
                          torch.where(pad[..., None], torch.randn_like(events.numeric) * 100, events.numeric),
                          torch.where(pad, torch.rand_like(events.times) * 1e4 - 5e3, events.times), pad)


def eval_model(name="tsa", **kw):
    return create_model(name, **SMALL, **kw).eval()


@pytest.mark.parametrize("name", ["tsa", "tsa_gated"])
def test_defaults_build_and_give_finite_logits(name):
    model = create_model(name).eval()
    inputs = (random_events(),) * (2 if name == "tsa_gated" else 1)
    logits = model(*inputs)
    assert logits.shape == (6,) and torch.isfinite(logits).all()
    assert logits.std() > 0  # rows differ


def test_padded_events_do_not_change_the_logit_but_real_past_events_do():
    model, events = eval_model(), random_events()
    logits = model(events)
    assert torch.equal(model(perturb_padding(events)), logits)
    numeric = events.numeric.clone()
    numeric[0, 2, 1] += 1.0  # a real past event (row 0 is full, so position 2 is before the target)
    assert not torch.allclose(model(dataclasses.replace(events, numeric=numeric))[0], logits[0])


def test_padding_nan_values_are_never_read():
    model, events = eval_model(), random_events()
    nan_padding = dataclasses.replace(events, numeric=events.numeric.masked_fill(events.padding_mask[..., None],
                                                                                 float("nan")))
    assert torch.equal(model(nan_padding), model(events))


def test_extra_padding_columns_change_nothing():
    """The attention masks padding: the logit does not depend on how much padding there is."""
    model, events = eval_model(), random_events()
    extra = 5
    padded = EventSequences(torch.nn.functional.pad(events.categorical, (0, 0, 0, extra)),
                            torch.nn.functional.pad(events.numeric, (0, 0, 0, extra), value=3.0),
                            torch.nn.functional.pad(events.times, (0, extra), value=7.0),
                            torch.nn.functional.pad(events.padding_mask, (0, extra), value=True))
    torch.testing.assert_close(model(padded), model(events), atol=1e-6, rtol=0)


def test_fully_padded_rows_are_finite_with_finite_gradients():
    events = random_events(lengths=torch.tensor([4, 0, 9, 0]), batch=4)
    for name in ("tsa", "tsa_gated"):
        model = create_model(name, **SMALL).train()
        inputs = (events, perturb_padding(events)) if name == "tsa_gated" else (events,)
        logits = model(*inputs)
        assert torch.isfinite(logits).all()
        logits.sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        model.eval()
        assert torch.equal(model(*(perturb_padding(x) for x in inputs))[[1, 3]], model(*inputs)[[1, 3]])


def test_gated_peer_padding_invariance_and_sensitivity():
    model = eval_model("tsa_gated")
    events, peer = random_events(), random_events()
    peer = dataclasses.replace(peer, times=peer.times - 100.0)  # every peer event before the targets
    logits = model(events, peer)
    assert torch.equal(model(events, perturb_padding(peer)), logits)
    numeric = peer.numeric.clone()
    numeric[0, 0] += 1.0
    assert not torch.allclose(model(events, dataclasses.replace(peer, numeric=numeric))[0], logits[0])


def test_gated_rejects_a_peer_event_after_the_target():
    model, events = eval_model("tsa_gated"), random_events()
    peer = dataclasses.replace(events, times=events.times + 1.0)
    with pytest.raises(ValueError, match=r"peer\.times.*later than the target.*leaks"):
        model(events, peer)


def test_decreasing_times_are_rejected():
    events = random_events()
    times = events.times.clone()
    times[0, -1] = times[0, 0] - 1.0
    with pytest.raises(ValueError, match=r"events\.times.*non-decreasing"):
        eval_model()(dataclasses.replace(events, times=times))


def test_eval_is_deterministic_and_training_gate_noise_is_not():
    model, events = eval_model(gate_noise=1.0), random_events(batch=32)
    assert torch.equal(model(events), model(events))
    model.train()
    assert not torch.equal(model(events), model(events))


@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_moe_routes_to_exactly_top_k_experts(top_k):
    moe = MixtureOfExperts(8, n_experts=4, top_k=top_k, hidden=8, gate_noise=1.0).eval()
    x = torch.randn(10, 8)
    with torch.no_grad():
        weights, probabilities = moe.gate_weights(moe.norm(x))
        y, balance = moe(x)
        experts = torch.stack([torch.nn.functional.gelu(moe.norm(x) @ moe.w_in[e] + moe.b_in[e]) @ moe.w_out[e]
                               + moe.b_out[e] for e in range(4)], dim=1)
    assert ((weights > 0).sum(-1) == top_k).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(10))
    assert torch.equal(weights.argmax(-1), probabilities.argmax(-1))  # no noise in eval: top-1 of the clean gate
    torch.testing.assert_close(y, x + (weights[..., None] * experts).sum(1))
    routed_share = torch.stack([(weights[:, e] > 0).float().mean() / top_k for e in range(4)])
    assert balance.item() == pytest.approx(4 * float((routed_share * probabilities.mean(0)).sum()), abs=1e-6)
    if top_k == 4:  # soft gating routes every row everywhere: the loss is exactly 1
        assert balance.item() == pytest.approx(1.0, abs=1e-6)


def test_sequence_gate_mixes_elementwise():
    gate = SequenceGate(4)
    h1, h2 = torch.randn(3, 4), torch.randn(3, 4)
    mixed, g = gate(h1, h2)
    expected_g = torch.sigmoid(torch.cat([h1, h2], -1) @ gate.linear.weight.T + gate.linear.bias)
    torch.testing.assert_close(g, expected_g)
    torch.testing.assert_close(mixed, expected_g * h1 + (1 - expected_g) * h2)
    assert ((g > 0) & (g < 1)).all()


def test_engineered_features_hand_computed():
    amounts = torch.tensor([[1.0, 2.0, 3.0, 5.0, 0.0]])
    times = torch.tensor([[0.0, 1.0, 1.5, 2.0, 0.0]], dtype=torch.float64)
    padding = torch.tensor([[False, False, False, False, True]])
    events = EventSequences(torch.zeros(1, 5, 1, dtype=torch.long), torch.stack([amounts, amounts], -1), times,
                            padding)
    features = engineered_features(prepare_events(events, (2,), 2), amount_feature=0, window_days=1.0)
    std = (2 / 3) ** 0.5  # population std of 1, 2, 3
    expected = torch.tensor([[torch.asinh(torch.tensor(3 / std)).item(), torch.log1p(torch.tensor(0.5)).item(),
                              torch.log1p(torch.tensor(2.0)).item(), torch.log1p(torch.tensor(3.0)).item()]])
    torch.testing.assert_close(features, expected)


def test_engineered_features_of_a_single_event_are_zero():
    events = random_events(lengths=torch.tensor([1, 1]), batch=2)
    features = engineered_features(prepare_events(events, CARDS, 2), amount_feature=0, window_days=1.0)
    assert torch.equal(features, torch.zeros(2, 4))


def test_backend_is_threaded_to_every_attention():
    torch.manual_seed(0)
    reference = create_model("tsa_gated", **SMALL, backend="reference").eval()
    cpu = create_model("tsa_gated", **SMALL, backend="cpu").eval()
    cpu.load_state_dict(reference.state_dict())
    attentions = [m for m in cpu.modules() if type(m).__name__ == "MultiheadAttention"]
    assert len(attentions) == 3 and all(m.backend == "cpu" for m in attentions)
    events, peer = random_events(), random_events()
    peer = dataclasses.replace(peer, times=peer.times - 100.0)
    torch.testing.assert_close(cpu(events, peer), reference(events, peer), atol=1e-5, rtol=1e-5)


def test_optional_mlp_and_soft_gating_build():
    model = eval_model(use_mlp=False, top_k=4)
    assert isinstance(model.mlp, torch.nn.Linear)
    assert torch.isfinite(model(random_events())).all()


@pytest.mark.parametrize("kw,exc,words", [
    (dict(top_k=5), ValueError, ["top_k", "[1, 4]", "5"]),
    (dict(cardinalities=()), TypeError, ["cardinalities", "non-empty"]),
    (dict(cardinalities=(8, 0)), ValueError, ["cardinalities", "positive"]),
    (dict(amount_feature=2), ValueError, ["amount_feature", "[0, 1]"]),
    (dict(d_model=16, n_heads=3), ValueError, ["num_heads", "divisor"]),
    (dict(gate_noise=-1.0), ValueError, ["gate_noise", ">= 0"]),
    (dict(backend="gpu"), ValueError, ["backend", "'gpu'"]),
])
def test_bad_constructor_arguments(kw, exc, words):
    with pytest.raises(exc) as info:
        create_model("tsa", **kw)
    assert all(w in str(info.value) for w in words) and "hint" in str(info.value)


def test_bad_event_inputs():
    model, events = eval_model(), random_events()
    with pytest.raises(ValueError, match=r"events\.categorical.*\(B, T, 2\).*hint"):
        model(dataclasses.replace(events, categorical=events.categorical[..., :1]))
    with pytest.raises(ValueError, match=r"events\.numeric.*\(B, T, 2\)"):
        model(dataclasses.replace(events, numeric=events.numeric[..., :1]))
    categorical = events.categorical.clone()
    categorical[0, 0, 1] = 3
    with pytest.raises(ValueError, match=r"events\.categorical.*cardinalit.*hint"):
        model(dataclasses.replace(events, categorical=categorical))
    with pytest.raises(TypeError, match=r"events.*EventSequences.*tuple"):
        model((events.categorical, events.numeric))


def test_event_sequences_validate_their_fields():
    events = random_events()
    with pytest.raises(TypeError, match=r"EventSequences\.categorical.*int64.*float32"):
        EventSequences(events.categorical.float(), events.numeric, events.times, events.padding_mask)
    with pytest.raises(TypeError, match=r"EventSequences\.padding_mask.*bool"):
        EventSequences(events.categorical, events.numeric, events.times, events.padding_mask.long())
    with pytest.raises(ValueError, match=r"EventSequences\.times.*\(N, T\) = \(6, 9\)"):
        EventSequences(events.categorical, events.numeric, events.times[:, :4], events.padding_mask)
