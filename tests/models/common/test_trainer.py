"""The shared training loop (tempattn.models.common.trainer): one metrics.json schema, the trained model
restored by create_model + load_state_dict, checkpoints read with weights_only=True, --resume equal to an
uninterrupted run, early stopping, the quiet progress bar and the shared CLI options."""
import json
import math

import pytest
import torch
from torch import nn

from tempattn.models import __main__ as models_cli
from tempattn.models import create_model
from tempattn.models.common import trainer
from tempattn.models.common.cli import REPORT_KEYS, TrainBudget
from tempattn.models.common.lm import lr_factor
from tempattn.models.gpcm.data import simulate_gpcm, split_by_student
from tempattn.models.gpcm.train import evaluate as gpcm_evaluate

TINY = {
    "gpcm": ["gpcm", "--dataset", "synthetic", "--synthetic-students", "120", "--steps-per-epoch", "3",
             "--batch-size", "16", "--embed-dim", "8", "--backend", "cpu"],
    "tsa": ["tsa", "--dataset", "synthetic", "--steps-per-epoch", "3", "--batch-size", "16", "--n-accounts", "300",
            "--d-model", "16", "--seed", "3"],
    "char_lm": ["char_lm", "--dataset", "synthetic", "--steps-per-epoch", "4", "--batch-size", "4", "--context", "8",
                "--embed-dim", "8", "--num-heads", "2", "--num-layers", "1", "--max-eval-chars", "400",
                "--sample-chars", "4", "--backend", "cpu", "--seed", "3"],
    "kolosis": ["kolosis", "--dataset", "synthetic", "--steps-per-epoch", "3", "--batch-size", "4", "--context", "12",
                "--embed-dim", "8", "--num-heads", "2", "--num-layers", "1", "--n-concepts", "3",
                "--val-windows", "8", "--backend", "cpu", "--dropout", "0.1"],
    "migt_tvdt": ["migt_tvdt", "--dataset", "synthetic", "--steps-per-epoch", "3", "--batch-size", "8", "--context",
                  "8", "--horizon", "2", "--quantiles", "0.2,0.5,0.8", "--d-model", "8", "--heads", "2",
                  "--layers", "1", "--seed", "3", "--backend", "cpu"],
}


def run(argv, out, *extra):
    assert models_cli.main([*argv, "--quiet", "--out", str(out), *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


def without_seconds(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


@pytest.mark.parametrize("family", list(TINY))
def test_one_metrics_schema_and_a_restorable_best_model(family, tmp_path):
    metrics = run(TINY[family], tmp_path, "--epochs", "2")
    assert tuple(metrics) == REPORT_KEYS
    assert metrics["model"] == family and [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert set(metrics["final"]) == {metrics["final_split"]} and 1 <= metrics["best_epoch"] <= 2
    assert metrics["config"]["grad_clip"] == 1.0 and metrics["stopped_early"] is False
    restored = trainer.load_trained(tmp_path)
    assert sum(p.numel() for p in restored.parameters()) == metrics["n_parameters"]
    # the file holds the best epoch's weights: those of best.pt, read with weights_only=True
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == metrics["best_epoch"]
    for name, value in restored.state_dict().items():
        torch.testing.assert_close(value, best["model"][name], rtol=0, atol=0)
    saved = json.loads((tmp_path / "model.json").read_text())
    model = create_model(saved["name"], **saved["kwargs"])
    model.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"])


def test_the_restored_gpcm_reproduces_its_test_metrics(tmp_path):
    metrics = run(TINY["gpcm"], tmp_path, "--epochs", "2")
    sequences = simulate_gpcm(120, seed=0).sequences
    test_set = sequences.subset(split_by_student(len(sequences), 0).test)
    again = gpcm_evaluate(trainer.load_trained(tmp_path), test_set)
    assert again == pytest.approx(metrics["final"]["test"], rel=1e-6)


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("family", ["gpcm", "tsa", "char_lm"])
def test_resume_continues_as_the_uninterrupted_run(family, tmp_path, monkeypatch):
    whole = run(TINY[family], tmp_path / "whole", "--epochs", "3")
    save = trainer._save

    def save_then_stop(payload, path):  # the process dies right after epoch 1's checkpoint
        save(payload, path)
        if path.name == trainer.CHECKPOINT_LAST and payload["epoch"] == 1:
            raise Interrupted

    monkeypatch.setattr(trainer, "_save", save_then_stop)
    with pytest.raises(Interrupted):
        run(TINY[family], tmp_path / "cut", "--epochs", "3")
    monkeypatch.setattr(trainer, "_save", save)
    resumed = run(TINY[family], tmp_path / "cut", "--epochs", "3", "--resume")
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3]
    for got, want in zip(without_seconds(resumed["epochs"]), without_seconds(whole["epochs"])):
        assert got == pytest.approx(want, rel=1e-6, abs=1e-7)
    assert resumed["best_epoch"] == whole["best_epoch"]
    split = whole["final_split"]
    assert resumed["final"][split] == pytest.approx(whole["final"][split], rel=1e-6)


def test_resume_needs_out_and_a_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        models_cli.main([*TINY["tsa"], "--resume"])
    assert info.value.code != 0 and "--resume needs --out" in str(info.value.code)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        models_cli.main([*TINY["tsa"], "--quiet", "--resume", "--out", str(tmp_path)])


def toy_fit(values, patience, tmp_path=None):
    """A linear model fitted to noise; the 'validation' value of epoch e is values[e - 1]."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    weights = []
    config = TrainBudget(epochs=len(values), steps_per_epoch=2, batch_size=4, patience=patience)

    def evaluate(m):
        weights.append(m.weight.detach().clone())
        return {"val": values[len(weights) - 1]}

    result = trainer.fit(model, config, sample=lambda g: torch.randn(4, 3, generator=g),
                         loss=lambda m, x: m(x).square().mean(), evaluate=evaluate, monitor="val",
                         checkpoint_dir=tmp_path)
    return model, weights, result


def test_early_stopping_restores_the_best_epoch(tmp_path):
    model, weights, result = toy_fit([3.0, 1.0, 2.0, 2.5, 0.5, 0.1], patience=2, tmp_path=tmp_path)
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4] and result.stopped_early
    assert result.best_epoch == 2
    torch.testing.assert_close(model.weight.detach(), weights[1], rtol=0, atol=0)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["epoch"] == 4 and state["stopped_early"] and set(state["rng"]) >= {"torch", "generator"}
    assert set(state) >= {"model", "optimizer", "scheduler", "rng", "epoch"}
    _, _, never = toy_fit([3.0, 1.0, 2.0, 2.5], patience=0)
    assert len(never.history) == 4 and not never.stopped_early


def test_cosine_schedule_and_clipping_come_from_the_config(monkeypatch):
    """A constant gradient makes each AdamW step lr_t x sign(g): the step sizes trace the schedule."""
    model = nn.Linear(3, 1, bias=False)
    config = TrainBudget(epochs=1, steps_per_epoch=10, batch_size=4, lr=0.5, grad_clip=0.25, min_lr_ratio=0.1)
    clipped, seen = [], []
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda p, max_norm: clipped.append(max_norm) or clip(
        p, max_norm))

    def loss(m, x):
        seen.append(m.weight.detach().clone())
        return m(x).sum()

    trainer.fit(model, config, sample=lambda g: torch.ones(4, 3), loss=loss, evaluate=lambda m: {"v": 0.0},
                monitor="v")
    steps = [float((b - a).norm()) / math.sqrt(3) for a, b in zip(seen, seen[1:])]
    assert steps == pytest.approx([0.5 * lr_factor(s, 10, 0, 0.1) for s in range(9)], rel=1e-4)
    assert clipped == [0.25] * 10


def test_progress_bar_only_on_a_terminal(monkeypatch):
    assert trainer._progress(10, "x", quiet=False) is None  # pytest's stderr is not a terminal
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    assert trainer._progress(10, "x", quiet=True) is None


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        models_cli.main(["tsa", "--help"])
    text = capsys.readouterr().out
    assert "(default: 5)" in text and "--patience" in text and "--grad-clip" in text and "--resume" in text


@pytest.mark.parametrize("name", ["gpcm", "migt_tvdt", "kolosis", "char_lm", "tsa"])
def test_help_gives_every_option_a_default(name, capsys):
    """Every option with a value shows its default (argparse shows none for an option without help text)."""
    with pytest.raises(SystemExit):
        models_cli.main([name, "--help"])
    options = capsys.readouterr().out.split("options:")[1].split("\n  -")[1:]
    flags = [" ".join(o.split()) for o in options]
    valued = [f for f in flags if not f.startswith(("-help", "h,", "-amp", "-resume", "-quiet"))]
    assert len(valued) > 15
    assert all("(default:" in f for f in valued), [f[:40] for f in valued if "(default:" not in f]


def test_world_size_must_divide_the_batch(monkeypatch):
    monkeypatch.setattr(trainer, "world_size", lambda: 3)
    with pytest.raises(ValueError, match="not divisible by the world size 3"):
        trainer.shard_rows(16)
    monkeypatch.setattr(trainer, "world_size", lambda: 1)
    assert trainer.shard_rows(16) is None
