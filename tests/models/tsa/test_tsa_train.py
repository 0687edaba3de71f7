"""Learnability on synthetic ground truth, the baseline, and the command line."""
import json

import pytest
import torch

from tempattn.models import create_model
from tempattn.models.__main__ import main as models_main
from tempattn.models.tsa import data as tsa_data
from tempattn.models.tsa.train import (LogisticRegression, TrainConfig, baseline_report, evaluate,
                                       last_event_features, main, roc_auc, train)

SMALL = dict(d_model=16, n_heads=2, expert_hidden=32)


def fit_on_synthetic(name: str, with_peer: bool, steps: int):
    dataset = tsa_data.make_synthetic(tsa_data.SyntheticConfig(n_accounts=2500, with_peer=with_peer), seed=0)
    parts = [dataset.subset(rows) for rows in tsa_data.split_by_group(dataset.groups, seed=0)]
    torch.manual_seed(0)
    model = create_model(name, **SMALL)
    config = TrainConfig(epochs=1, steps_per_epoch=steps, batch_size=128, lr=5e-3, seed=0)
    train(model, parts[0], parts[1], config, log=lambda line: None)
    test = parts[2]
    return evaluate(model, test, config)["roc_auc"], roc_auc(test.clean_labels, test.labels), baseline_report(
        parts[0], test)["roc_auc"]


@pytest.mark.parametrize("name,with_peer,steps", [("tsa", False, 200), ("tsa_gated", True, 300)])
def test_short_training_reaches_the_optimum_and_beats_the_baseline(name, with_peer, steps):
    model_auc, oracle_auc, baseline_auc = fit_on_synthetic(name, with_peer, steps)
    assert model_auc >= oracle_auc - 0.03, (model_auc, oracle_auc)
    assert model_auc >= baseline_auc + 0.05, (model_auc, baseline_auc)


def test_logistic_regression_recovers_a_linear_rule():
    x = torch.randn(2000, 3, dtype=torch.float64)
    logits = 2.0 * x[:, 0] - 1.0 * x[:, 2]
    y = (torch.rand(2000, dtype=torch.float64) < torch.sigmoid(logits)).double()
    model = LogisticRegression(l2=0.0).fit(x, y)
    weight = model.weight[1:] / model.std  # back to the raw feature scale
    torch.testing.assert_close(weight, torch.tensor([2.0, 0.0, -1.0], dtype=torch.float64), atol=0.25, rtol=0)


def test_last_event_features_pick_the_last_real_event():
    events = tsa_data.pad_histories([
        (torch.tensor([[1], [2]]).numpy(), torch.tensor([[0.5], [1.5]]).numpy(), torch.tensor([0.0, 1.0]).numpy()),
        (torch.tensor([[0]]).numpy(), torch.tensor([[-2.0]]).numpy(), torch.tensor([3.0]).numpy())], 3)
    features = last_event_features(events, (3,))
    assert features.tolist() == [[1.5, 0.0, 0.0, 1.0], [-2.0, 1.0, 0.0, 0.0]]


def test_cli_writes_metrics_and_is_deterministic(tmp_path, capsys):
    argv = ["tsa", "--dataset", "synthetic", "--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "16",
            "--n-accounts", "300", "--d-model", "16", "--seed", "3"]
    assert models_main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("epoch ") for line in lines) == 4
    first, second = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in "ab")
    assert first["epochs"] == second["epochs"] and first["final"] == second["final"]
    assert [row["epoch"] for row in first["epochs"]] == [1, 2]
    assert set(first["final"]) == {"test"} and first["final_split"] == "test"
    assert {"baseline_logreg_last_event", "bayes_optimal_roc_auc"} <= set(first["references"])
    assert 0.0 <= first["final"]["test"]["roc_auc"] <= 1.0


@pytest.mark.parametrize("argv,words", [
    (["tsa", "--epochs", "0"], ["--epochs", "positive int", "'0'"]),
    (["tsa", "--lr", "nan"], ["--lr", "positive float"]),
    (["tsa", "--dataset", "mnist"], ["--dataset", "cdnow", "synthetic"]),
    (["gpcm"], ["name", "tsa"]),
])
def test_cli_rejects_bad_options(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err
