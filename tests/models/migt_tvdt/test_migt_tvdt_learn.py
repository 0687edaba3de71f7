"""MIGT-TVDT learns the seasonal VAR(1): near the true conditional quantiles, far better than the baselines."""
import json

import pytest

import torch

from tempattn.models.migt_tvdt import MIGTTVDT
from tempattn.models.migt_tvdt.data import ForecastData, SeasonalVAR, contiguous_split
from tempattn.models.migt_tvdt.train import TrainConfig, fit, main

QUANTILES = (0.1, 0.5, 0.9)


def test_training_reaches_the_oracle_and_beats_the_baselines():
    torch.manual_seed(0)
    process = SeasonalVAR()
    series = process.simulate(20_000, seed=1)  # long enough that the windows do not overfit
    data = ForecastData(series, contiguous_split(series, horizon=3, min_history=6), process)
    model = MIGTTVDT(n_vars=3, horizon=3, quantiles=QUANTILES, d_model=16, n_heads=2, n_layers=1, backend="cpu")
    config = TrainConfig(epochs=3, steps_per_epoch=70, batch_size=64, lr=1e-2, context=16, seed=0)
    result = fit(model, data, config, log=lambda line: None)
    test, references = result["test"], result["references"]
    oracle = references["oracle"]["test"]["pinball"]
    baseline = min(references["naive"]["test"]["pinball"], references["climatology"]["test"]["pinball"])
    assert result["epochs"][-1]["val"]["pinball"] < result["epochs"][0]["val"]["pinball"]
    assert test["pinball"] < 1.08 * oracle, (test["pinball"], oracle)
    assert test["pinball"] < 0.85 * baseline, (test["pinball"], baseline)
    assert abs(test["coverage"] - 0.8) < 0.06
    assert test["crossing_rate"] == 0.0


def run_cli(out):
    argv = ["migt_tvdt", "--dataset", "synthetic", "--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "8",
            "--context", "8", "--horizon", "2", "--quantiles", "0.2,0.5,0.8", "--d-model", "8", "--heads", "2",
            "--layers", "1", "--seed", "3", "--backend", "cpu", "--out", str(out)]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def test_cli_writes_deterministic_metrics(tmp_path, capsys):
    first, second = run_cli(tmp_path / "a"), run_cli(tmp_path / "b")
    assert [e["epoch"] for e in first["epochs"]] == [1, 2]
    assert first["epochs"] == second["epochs"] and first["final"] == second["final"]
    assert first["final_split"] == "test" and abs(first["final"]["test"]["nominal_coverage"] - 0.6) < 1e-12
    assert set(first["references"]) == {"naive", "climatology", "oracle"}
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert len(lines) == 4 and "val_pinball" in lines[0]


def test_cli_rejects_unordered_quantiles(capsys):
    with pytest.raises(SystemExit):
        main(["migt_tvdt", "--dataset", "synthetic", "--quantiles", "0.5,0.1"])
    assert "quantiles" in capsys.readouterr().err
