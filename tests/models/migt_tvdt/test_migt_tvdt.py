"""MIGT-TVDT model: non-crossing quantiles, padding ignored (also by RevIN), no look-ahead, input checks."""
import dataclasses

import pytest
import torch

from tempattn.models import create_model
from tempattn.models.migt_tvdt import MIGTTVDT, build_migt_tvdt
from tempattn.models.migt_tvdt.data import SeasonalVAR, make_windows
from tempattn.models.migt_tvdt.model import GatedRevIN, TemporalCrossBlock, last_valid_index
from tempattn.models.migt_tvdt.train import crossing_rate

B, T, V, H = 4, 12, 3, 4
QUANTILES = (0.1, 0.3, 0.5, 0.7, 0.9)
DAY = 86400


def tiny_model(**kw) -> MIGTTVDT:
    options = dict(n_vars=V, horizon=H, quantiles=QUANTILES, d_model=16, n_heads=2, n_layers=2, backend="cpu")
    return MIGTTVDT(**{**options, **kw}).eval()


def random_inputs():
    """x (B, T, V), int64 timestamps on real dates with 1-3 day gaps, and a mask with every padding layout:
    row 0 none, row 1 left padding, row 2 interior gaps, row 3 right padding (origin T - 4)."""
    x = torch.randn(B, T, V) * 3 + 5
    gaps = torch.randint(1, 4, (B, T)) * DAY
    timestamps = 1_200_000_000 + torch.randint(0, 1000, (B, 1)) * DAY + gaps.cumsum(1)
    padding = torch.zeros(B, T, dtype=torch.bool)
    padding[1, :3] = True
    padding[2, [4, 7]] = True
    padding[3, -3:] = True
    return x, timestamps, padding


def scramble_padding(x, timestamps, padding):
    """The same inputs with NaN, huge values and other dates at the padded steps."""
    x, timestamps = x.clone(), timestamps.clone()
    x[padding] = torch.randn(int(padding.sum()), V) * 1e6
    row, step = padding.nonzero()[0].tolist()
    x[row, step] = float("nan")
    timestamps[padding] = torch.randint(0, 2_000_000_000, (int(padding.sum()),))
    return x, timestamps


def test_quantiles_never_cross_even_with_extreme_head_weights():
    model = tiny_model()
    with torch.no_grad():
        model.head.proj.weight.mul_(200.0)
        model.head.proj.bias.normal_(0.0, 50.0)
    x, timestamps, padding = random_inputs()
    pred = model(x * 100, timestamps, padding)
    assert pred.shape == (B, H, V, len(QUANTILES))
    assert torch.isfinite(pred).all()
    assert crossing_rate(pred) == 0.0
    assert (pred.diff(dim=-1) >= 0).all()


def test_padded_steps_are_ignored_bit_for_bit():
    model = tiny_model()
    x, timestamps, padding = random_inputs()
    reference = model(x, timestamps, padding)
    scrambled_x, scrambled_t = scramble_padding(x, timestamps, padding)
    assert torch.equal(model(scrambled_x, scrambled_t, padding), reference)
    observed_step = (~padding[2]).nonzero()[3].item()
    x[2, observed_step] += 1.0
    changed = model(x, timestamps, padding)
    assert not torch.allclose(changed[2], reference[2], atol=1e-4), "an observed step must matter"
    torch.testing.assert_close(changed[[0, 1, 3]], reference[[0, 1, 3]], rtol=0, atol=1e-6)


def test_revin_statistics_use_only_observed_steps():
    revin = GatedRevIN(V, gate_init=3.0)
    x, _, padding = random_inputs()
    scrambled, _ = scramble_padding(x, torch.zeros(B, T, dtype=torch.long), padding)
    normed, loc, scale = revin(scrambled, ~padding)
    gate = torch.sigmoid(torch.tensor(3.0))
    for row in range(B):
        observed = x[row][~padding[row]]
        mean, var = observed.mean(0), observed.var(0, unbiased=False)
        torch.testing.assert_close(loc[row, 0], gate * mean)
        torch.testing.assert_close(scale[row, 0], gate * torch.sqrt(var + revin.eps) + 1 - gate)
    torch.testing.assert_close(normed[~padding], ((x - loc) / scale)[~padding])
    assert (normed[padding] == 0).all()
    quantiles = torch.randn(B, H, V, 2).sort(dim=-1).values
    torch.testing.assert_close(revin.invert(quantiles, loc, scale),
                               quantiles * scale.unsqueeze(-1) + loc.unsqueeze(-1))


def test_forecast_ignores_the_future_of_the_series_but_not_its_origin():
    series = SeasonalVAR().simulate(300, seed=int(torch.randint(0, 10_000, ())))
    origins = series.valid[:250].nonzero().squeeze(1)[[60, 120, 200]]
    model = tiny_model(horizon=4)
    windows = make_windows(series, origins, context=32, horizon=4)
    reference = model(windows.x, windows.timestamps, windows.key_padding_mask)
    for row, origin in enumerate(origins.tolist()):
        future = series.values.clone()
        future[origin + 1:] = torch.randn_like(future[origin + 1:]) * 100
        perturbed = make_windows(dataclasses.replace(series, values=future),
                                 origins[row:row + 1], 32, 4)
        assert not torch.equal(perturbed.targets.nan_to_num(), windows.targets[row:row + 1].nan_to_num())
        torch.testing.assert_close(model(perturbed.x, perturbed.timestamps, perturbed.key_padding_mask),
                                   reference[row:row + 1], rtol=0, atol=1e-6)
        past = series.values.clone()
        past[origin] += 1.0
        moved = make_windows(dataclasses.replace(series, values=past),
                             origins[row:row + 1], 32, 4)
        assert not torch.allclose(model(moved.x, moved.timestamps, moved.key_padding_mask),
                                  reference[row:row + 1], atol=1e-4)


def test_block_is_causal_over_time_and_mixes_variables_within_a_step():
    block = TemporalCrossBlock(d_model=8, n_heads=2, dropout=0.0, backend="cpu")
    tokens = torch.randn(B, T, V, 8)
    padding = random_inputs()[2]
    reference = block(tokens, padding)
    step = 6
    later = tokens.clone()
    later[:, step + 1:] = torch.randn_like(later[:, step + 1:])
    torch.testing.assert_close(block(later, padding)[:, :step + 1], reference[:, :step + 1], rtol=0, atol=1e-6)
    other_variable = tokens.clone()
    other_variable[0, step, 1] = torch.randn(8)  # row 0 has no padding
    moved = block(other_variable, padding)
    assert not torch.allclose(moved[0, step, 0], reference[0, step, 0], atol=1e-4), "cross-variable attention"
    assert not torch.allclose(moved[0, step + 1, 2], reference[0, step + 1, 2], atol=1e-4), "temporal attention"
    torch.testing.assert_close(moved[0, :step], reference[0, :step], rtol=0, atol=1e-6)


def test_right_padding_equals_truncating_the_window():
    model = tiny_model()
    x, timestamps, _ = random_inputs()
    origin = 7
    padding = torch.zeros(B, T, dtype=torch.bool)
    padding[:, origin + 1:] = True
    assert (last_valid_index(padding) == origin).all()
    torch.testing.assert_close(model(x, timestamps, padding),
                               model(x[:, :origin + 1], timestamps[:, :origin + 1]), rtol=1e-5, atol=1e-5)


def test_reference_backend_matches_cpu_backend():
    cpu = tiny_model(backend="cpu")
    reference = tiny_model(backend="reference")
    reference.load_state_dict(cpu.state_dict())
    x, timestamps, padding = random_inputs()
    torch.testing.assert_close(reference(x, timestamps, padding), cpu(x, timestamps, padding),
                               rtol=1e-5, atol=1e-5)


def test_create_model_with_defaults_trains_one_step():
    model = create_model("migt_tvdt", backend="cpu")
    assert isinstance(model, MIGTTVDT) and type(build_migt_tvdt()) is MIGTTVDT
    x = torch.randn(2, 20, model.n_vars)
    timestamps = 1_500_000_000 + torch.arange(20).repeat(2, 1) * DAY
    pred = model(x, timestamps)
    assert pred.shape == (2, model.horizon, model.n_vars, len(model.quantiles))
    pred.square().mean().backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    for name in ("revin.gate_logit", "embed.value_weight", "time.proj.weight",
                 "blocks.0.temporal.in_proj_weight", "blocks.1.cross.in_proj_weight", "head.proj.bias"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name


@pytest.mark.parametrize("change, exc, words", [
    (lambda x, t, m: (x, t, m.float()), TypeError, ["key_padding_mask", "bool", "True = padding"]),
    (lambda x, t, m: (x, t, m[:, :-1]), ValueError, ["key_padding_mask", "(B, T)"]),
    (lambda x, t, m: (x, t, m.index_fill(0, torch.tensor([1]), True)), ValueError, ["key_padding_mask", "padded row"]),
    (lambda x, t, m: (x.index_fill(1, torch.tensor([0]), float("nan")), t, m), ValueError, ["x", "finite"]),
    (lambda x, t, m: (x[..., :2], t, m), TypeError, ["x", "V=3"]),
    (lambda x, t, m: (x.long(), t, m), TypeError, ["x", "float"]),
    (lambda x, t, m: (x, t[:, :-1], m), TypeError, ["timestamps", "(B, T)"]),
])
def test_bad_forward_inputs_name_the_argument(change, exc, words):
    x, timestamps, padding = random_inputs()
    with pytest.raises(exc) as info:
        tiny_model()(*change(x, timestamps, padding))
    for word in words:
        assert word in str(info.value)
    assert "hint" in str(info.value)


@pytest.mark.parametrize("kw, exc, name", [
    ({"quantiles": (0.5, 0.1)}, ValueError, "quantiles"),
    ({"quantiles": (0.0, 0.5)}, ValueError, "quantiles"),
    ({"quantiles": "0.5"}, TypeError, "quantiles"),
    ({"horizon": 0}, ValueError, "horizon"),
    ({"n_vars": 2.0}, TypeError, "n_vars"),
    ({"n_heads": 3}, ValueError, "num_heads"),
])
def test_bad_constructor_arguments(kw, exc, name):
    with pytest.raises(exc, match=name):
        build_migt_tvdt(**kw)
