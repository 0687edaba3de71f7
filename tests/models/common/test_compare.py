"""``python -m tempattn.models compare FAMILY``: every member trained over the same seeds, the report's structure,
seeds that differ from each other and repeat exactly, and the on-par rule."""
import json
import statistics

import pytest

from tempattn.models import __main__ as models_cli
from tempattn.models.common.compare import FAMILIES, summarise, verdict

# tiny budgets on the synthetic data: seconds per family
TINY = {
    "gpcm": ["--dataset", "synthetic", "--synthetic-students", "120", "--epochs", "1", "--steps-per-epoch", "3",
             "--batch-size", "16", "--embed-dim", "8"],
    "migt_tvdt": ["--dataset", "synthetic", "--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "8",
                  "--context", "8", "--horizon", "2", "--quantiles", "0.2,0.5,0.8", "--d-model", "8", "--heads", "2",
                  "--layers", "1"],
    "kolosis": ["--dataset", "synthetic", "--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "4",
                "--context", "12", "--embed-dim", "8", "--num-heads", "2", "--num-layers", "1", "--n-concepts", "3",
                "--val-windows", "8"],
    "char_lm": ["--dataset", "synthetic", "--epochs", "1", "--steps-per-epoch", "4", "--batch-size", "4",
                "--context", "8", "--embed-dim", "8", "--num-heads", "2", "--num-layers", "1",
                "--max-eval-chars", "400", "--sample-chars", "4"],
    "tsa": ["--dataset", "synthetic", "--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "16",
            "--n-accounts", "300", "--d-model", "16"],
}
VERDICTS = {"better", "worse", "on par", "n/a"}


def compare(family, out, *extra):
    assert models_cli.main(["compare", family, "--out", str(out), "--threads", "1", *TINY[family], *extra]) == 0
    return json.loads((out / "compare.json").read_text())


def test_every_family_has_a_tiny_budget_here():
    assert set(TINY) == set(FAMILIES)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_compare_trains_every_member_over_the_same_seeds(family, tmp_path, capsys):
    spec = FAMILIES[family]
    report = compare(family, tmp_path / "a", "--seeds", "2")
    model = spec.models[0]
    assert report["family"] == family and report["model"] == model and report["seeds"] == [0, 1]
    assert report["split"] in ("test", "validation") and report["budget"] == list(spec.budget)
    assert report["command"].startswith(f"python -m tempattn.models compare {family} ")
    assert {"date", "machine", "wall_seconds", "cpu_seconds"} <= set(report)
    trained = [name for name, row in report["models"].items() if row["kind"] == "trained"]
    assert trained == list(spec.models)
    assert report["baselines"] == [name for name in report["models"] if name != model]
    assert len(report["baselines"]) >= 1  # a trained baseline, or a reference from the same runs
    metrics = [key for key, _ in spec.metrics]
    for name, row in report["models"].items():
        assert set(row["per_seed"]) == {"0", "1"}
        if row["kind"] == "trained":
            assert row["n_parameters"] > 0 and set(metrics) <= set(row["summary"])
        for key, summary in row["summary"].items():
            values = [row["per_seed"][seed][key] for seed in ("0", "1")]
            assert summary == {"mean": pytest.approx(statistics.fmean(values)),
                               "std": pytest.approx(statistics.stdev(values)), "n": 2}
    assert set(report["verdicts"]) == set(report["baselines"])
    for name, by_metric in report["verdicts"].items():
        assert by_metric and set(by_metric) <= set(metrics)
        for key, row in by_metric.items():
            assert row["model"] in VERDICTS
            paired = [report["models"][model]["per_seed"][s][key] - report["models"][name]["per_seed"][s][key]
                      for s in ("0", "1")]
            assert row["paired_difference"]["mean"] == pytest.approx(statistics.fmean(paired))
    # the seeds really differ: another split, initialisation and batch order
    first = metrics[0]
    per_seed = report["models"][model]["per_seed"]
    assert per_seed["0"][first] != per_seed["1"][first]
    # ... and a seed repeats exactly in another invocation, alone and after nothing else
    again = compare(family, tmp_path / "b", "--seeds", "1", "--first-seed", "1", "--models", model)
    assert again["seeds"] == [1] and list(again["models"])[0] == model
    for name, row in again["models"].items():
        for key in metrics:
            if key in row["per_seed"]["1"]:
                assert row["per_seed"]["1"][key] == report["models"][name]["per_seed"]["1"][key], (name, key)
    assert all(v["model"] == "n/a" for by_metric in again["verdicts"].values() for v in by_metric.values())
    # the files: the tables, every run's metrics and model, no checkpoints
    table = (tmp_path / "a" / "compare.md").read_text()
    assert f"| `{model}` | 0 |" in table and "Per seed" in table and report["split"] in table
    run = tmp_path / "a" / "runs" / model / "seed1"
    assert (run / "metrics.json").is_file() and (run / "model.pt").is_file() and not (run / "checkpoints").exists()
    assert "wrote" in capsys.readouterr().out


def test_kolosis_compare_includes_the_controls():
    assert FAMILIES["kolosis"].models == ("kolosis", "kolosis_baseline", "kolosis_plain", "kolosis_relpos")


def test_verdicts_claim_a_win_only_when_the_intervals_do_not_overlap():
    low, high, wide = summarise([1.0, 1.1, 1.2]), summarise([2.0, 2.1, 2.2]), summarise([0.0, 1.5, 3.0])
    assert verdict(high, low, "max") == "better" and verdict(high, low, "min") == "worse"
    assert verdict(low, high, "min") == "better" and verdict(low, high, "max") == "worse"
    assert verdict(wide, low, "max") == "on par" and verdict(low, wide, "min") == "on par"
    assert verdict(high, low, None) == "n/a"
    assert verdict(summarise([2.0]), summarise([1.0]), "max") == "n/a"  # one seed: no verdict
    assert summarise([3.0]) == {"mean": 3.0, "std": 0.0, "n": 1}
    assert summarise([1.0, 3.0])["std"] == pytest.approx(2 ** 0.5)  # the sample std (n - 1)


@pytest.mark.parametrize("argv,words", [
    (["compare"], ["family"]),
    (["compare", "gpt"], ["invalid choice", "gpt"]),
    (["compare", "tsa", "--seed", "3"], ["--seed", "compare sets"]),
    (["compare", "tsa", "--out=x", "--resume"], ["--out", "--resume"]),
    (["compare", "tsa", "--models", "char_lm"], ["--models", "tsa", "char_lm"]),
    (["compare", "tsa", "--seeds", "0"], ["--seeds", ">= 1"]),
])
def test_compare_usage_errors(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        models_cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err
