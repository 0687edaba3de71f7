"""GPCM family: learning a simulated GPCM population, and the CLI."""
import json

import pytest
import torch

from tempattn.models import create_model
from tempattn.models.gpcm.data import oracle_log_probs, simulate_gpcm, split_by_student
from tempattn.models.gpcm.train import TrainConfig, evaluate, main, per_item_marginal, prediction_metrics, train

TINY = dict(embed_dim=16, num_heads=2, memory_size=8, memory_dim=16, summary_dim=16, backend="cpu")


@pytest.mark.parametrize("name", ["gpcm", "attention_gpcm"])
def test_model_learns_a_simulated_population(name):
    """Closes most of the NLL gap between the per-item marginal and the Bayes-optimal oracle, and
    orders the items by difficulty (loosely: θ_t sees the item, so it can absorb part of β)."""
    sim = simulate_gpcm(2500, n_items=16, n_categories=3, seed=11)
    seq = sim.sequences
    split = split_by_student(len(seq), seed=11)
    train_set, val_set, test_set = (seq.subset(index) for index in split)
    torch.manual_seed(0)
    model = create_model(name, n_items=16, n_categories=3, **TINY)
    train(model, train_set, val_set, TrainConfig(epochs=1, steps_per_epoch=250, batch_size=64, lr=1e-2, seed=0),
          log=None)
    learned = evaluate(model, test_set)["nll"]
    marginal = prediction_metrics(per_item_marginal(train_set)[test_set.items], test_set.responses,
                                  test_set.padding_mask)["nll"]
    oracle = prediction_metrics(oracle_log_probs(sim)[split.test][:, :test_set.items.shape[1]], test_set.responses,
                                test_set.padding_mask)["nll"]
    assert learned < marginal - 0.6 * (marginal - oracle), (learned, marginal, oracle)
    _, beta = model.item_parameters()
    difficulty = torch.stack([beta.detach().mean(1), sim.beta.mean(1)])
    assert torch.corrcoef(difficulty)[0, 1] > 0.75


def test_cli_trains_writes_metrics_and_is_deterministic(tmp_path, capsys):
    argv = ["attention_gpcm", "--dataset", "synthetic", "--synthetic-students", "120", "--epochs", "2",
            "--steps-per-epoch", "3", "--batch-size", "16", "--embed-dim", "8", "--backend", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("epoch ") for line in lines) == 4
    first, second = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in "ab")
    assert {k: v for k, v in first.items() if k != "options"} == {k: v for k, v in second.items() if k != "options"}
    assert [e["epoch"] for e in first["epochs"]] == [1, 2]
    assert first["final_split"] == "test" and first["monitor"] == "val_nll"
    assert set(first["references"]) == {"per_item_marginal", "oracle"}
    assert 0 < first["final"]["test"]["nll"] < 5 and first["final"]["test"]["count"] > 0


def test_cli_rejects_an_unknown_dataset(capsys):
    with pytest.raises(SystemExit):
        main(["gpcm", "--dataset", "assistments"])
    assert "invalid choice: 'assistments'" in capsys.readouterr().err
