"""MIGT-TVDT metrics and baselines on hand-computed values; windows, splits, synthetic ground truth, real data."""
import pytest
import torch

from tempattn.data import DataUnavailable
from tempattn.models.migt_tvdt.data import SeasonalVAR, Series, Windows, contiguous_split, load_sp500_nasdaq, \
    make_windows
from tempattn.models.migt_tvdt.train import EmpiricalQuantileBaseline, crossing_rate, interval_coverage, \
    pinball_loss, pinball_per_variable, quantile_calibration

TAU = (0.1, 0.9)
# one (h, v) cell per window: interval [1, 3]; targets 2 (inside), 5 (above), 1 (on the lower edge)
PRED = torch.tensor([1.0, 3.0]).expand(3, 1, 1, 2)
TARGET = torch.tensor([2.0, 5.0, 1.0]).view(3, 1, 1)


def test_pinball_loss_by_hand():
    # target 2: 0.1*1 and 0.1*1 -> 0.1;  target 5: 0.1*4, 0.9*2 -> 1.1;  target 1: 0, 0.1*2 -> 0.1
    torch.testing.assert_close(pinball_loss(PRED, TARGET, TAU), torch.tensor(1.3 / 3))
    keep = torch.tensor([[True], [False], [True]])
    torch.testing.assert_close(pinball_loss(PRED, TARGET, TAU, keep), torch.tensor(0.1))
    missing = TARGET.clone()
    missing[1] = float("nan")
    torch.testing.assert_close(pinball_loss(PRED, missing, TAU), torch.tensor(0.1))


def test_pinball_per_variable_by_hand():
    pred = torch.stack([PRED[:2, :, 0], PRED[:2, :, 0] + 10], dim=2)  # (2, 1, 2, 2): variable 1 shifted by 10
    target = torch.stack([TARGET[:2, :, 0], TARGET[:2, :, 0]], dim=2)  # (2, 1, 2)
    # variable 0: (0.1 + 1.1) / 2; variable 1: targets 2, 5 below [11, 13]:
    # (0.9*9 + 0.1*11) / 2 = 4.6 and (0.9*6 + 0.1*8) / 2 = 3.1 -> 3.85
    torch.testing.assert_close(pinball_per_variable(pred, target, TAU), torch.tensor([0.6, 3.85]))


def test_coverage_and_calibration_by_hand():
    assert interval_coverage(PRED, TARGET) == pytest.approx(2 / 3)
    assert interval_coverage(PRED, TARGET, torch.tensor([[True], [False], [True]])) == pytest.approx(1.0)
    torch.testing.assert_close(quantile_calibration(PRED, TARGET), torch.tensor([1 / 3, 2 / 3], dtype=torch.float64))


def test_crossing_rate_by_hand():
    pred = torch.tensor([[0.0, 1.0, 0.5], [0.0, 0.0, 2.0]])  # pairs: ok, crossed, tie (not crossed), ok
    assert crossing_rate(pred) == 0.25


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="pred"):
        pinball_loss(PRED[:2], TARGET, TAU)
    with pytest.raises(ValueError, match="quantiles"):
        pinball_loss(PRED, TARGET, (0.5,))
    with pytest.raises(ValueError, match="mask"):
        interval_coverage(PRED, TARGET, torch.ones(3, 1))


def hand_windows(last_values, targets, scored) -> Windows:
    """Windows of 2 steps ending in ``last_values`` with one target each (one variable)."""
    n = len(last_values)
    x = torch.stack([torch.full((n,), float("nan")), torch.tensor(last_values)], 1).unsqueeze(-1)
    padding = torch.tensor([[True, False]]).repeat(n, 1)
    return Windows(x, torch.zeros(n, 2, dtype=torch.long), padding, torch.tensor(targets).view(n, 1, 1),
                   torch.tensor(scored).view(n, 1), torch.arange(n))


def test_empirical_baselines_by_hand():
    # changes from the last value: 1, 2, 3 (the fourth target is not scored)
    train = hand_windows([0.0, 1.0, 2.0, 0.0], [1.0, 3.0, 5.0, 100.0], [True, True, True, False])
    naive = EmpiricalQuantileBaseline.fit(train, (0.5,), relative_to_last=True)
    climatology = EmpiricalQuantileBaseline.fit(train, (0.5,), relative_to_last=False)
    new = hand_windows([10.0, -1.0], [0.0, 0.0], [True, True])
    torch.testing.assert_close(naive.predict(new).flatten(), torch.tensor([12.0, 1.0]))
    torch.testing.assert_close(climatology.predict(new).flatten(), torch.tensor([3.0, 3.0]))


def test_make_windows_pads_before_the_start_and_at_missing_steps():
    values = torch.randn(10, 2)
    valid = torch.ones(10, dtype=torch.bool)
    valid[2] = False
    values[2] = float("nan")
    series = Series(values, torch.arange(10) * 86400 + 10**9, valid, ("a", "b"))
    w = make_windows(series, torch.tensor([3, 6]), context=5, horizon=2)
    # origin 3: steps -1..3 (step 2 missing); origin 6: steps 2..6
    assert w.key_padding_mask.tolist() == [[True, False, False, True, False], [True, False, False, False, False]]
    assert (w.timestamps[0, :1] == 0).all() and (w.timestamps[1] == series.timestamps[2:7]).all()
    torch.testing.assert_close(w.x[1, 3:], values[5:7])
    torch.testing.assert_close(w.targets, values[torch.tensor([[4, 5], [7, 8]])])
    with pytest.raises(ValueError, match="origins"):
        make_windows(series, torch.tensor([8]), context=5, horizon=2)


def test_contiguous_split_never_shares_targets_between_blocks():
    series = SeasonalVAR().simulate(1000, seed=int(torch.randint(0, 10_000, ())))
    horizon, min_history = 5, 8
    origins = contiguous_split(series, horizon, min_history)
    targets = {name: o[:, None] + torch.arange(1, horizon + 1) for name, o in origins.items()}
    assert targets["train"].max() < 700 <= targets["val"].min() and targets["val"].max() < 850
    assert 850 <= targets["test"].min() and targets["test"].max() < 1000
    for o in origins.values():
        assert series.valid[o].all() and (o >= min_history).all()


def test_synthetic_oracle_quantiles_are_calibrated():
    process = SeasonalVAR()
    quantiles = (0.1, 0.5, 0.9)
    series = process.simulate(12_000, seed=int(torch.randint(0, 10_000, ())))
    assert 0.02 < 1 - series.valid.float().mean() < 0.04
    origins = series.valid[:-3].nonzero().squeeze(1)
    pred = process.conditional_quantiles(series, origins, 3, quantiles)
    windows = make_windows(series, origins, context=2, horizon=3)
    calibration = quantile_calibration(pred, windows.targets, windows.target_mask)
    torch.testing.assert_close(calibration, torch.tensor(quantiles, dtype=torch.float64), rtol=0, atol=0.015)
    shifted = pinball_loss(pred + 0.3, windows.targets, quantiles, windows.target_mask)
    assert pinball_loss(pred, windows.targets, quantiles, windows.target_mask) < shifted


def test_sp500_nasdaq_loader():
    try:
        series = load_sp500_nasdaq()
    except DataUnavailable as exc:
        pytest.skip(f"arch wheel unavailable here: {exc}")
    assert series.values.shape == (5030, 4)
    assert int((~series.valid).sum()) == 2  # two NASDAQ days report zero volume
    assert torch.isnan(series.values[~series.valid]).all() and torch.isfinite(series.values[series.valid]).all()
    gaps = series.timestamps.diff() // 86400
    assert (gaps >= 1).all() and (gaps == 3).sum() > 900  # weekends
    assert series.timestamps[0] == 915494400  # 1999-01-05, the first day with a return
    assert abs(float(series.values[series.valid, 0].mean())) < 0.05  # daily S&P 500 log return, percent
