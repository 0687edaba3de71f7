"""``python -m tempattn.models validate migt_tvdt`` and ``validate kolosis``: every criterion printed with its
verdict, the bounded ones passing at quick settings, validation.json written; and the shared helpers."""
import json

import pytest
import torch

from tempattn.models import __main__ as models_cli
from tempattn.models.common.validation import criterion, saved_bytes, slope, verdict_of


def validate(family, tmp_path, capsys, *argv):
    code = models_cli.main(["validate", family, "--out", str(tmp_path), *argv])
    printed = capsys.readouterr().out.splitlines()
    report = json.loads((tmp_path / "validation.json").read_text())
    for name, row in report.items():
        assert any(line.startswith(verdict_of(row)) and f" {name} " in line for line in printed), name
        assert row["value"] == row["value"]  # not NaN
    assert code == (0 if all(r["pass"] is not False for r in report.values()) else 1)
    return report, code


def test_validate_migt_tvdt(tmp_path, capsys):
    report, code = validate("migt_tvdt", tmp_path, capsys, "--context", "32")
    assert set(report) == {"memory_batch128_mb", "memory_batch_exponent", "crossing_rate", "padding_leak"}
    assert code == 0
    assert report["memory_batch128_mb"]["pass"] is None and report["memory_batch128_mb"]["value"] > 0
    assert 0.8 < report["memory_batch_exponent"]["value"] < 1.2
    assert report["crossing_rate"]["value"] == 0.0 and report["padding_leak"]["value"] == 0.0
    assert report["padding_leak"]["detail"]["padded_steps"] > 0  # the check had padding to perturb
    assert report["memory_batch128_mb"]["detail"]["quantiles"] == [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95]


def test_validate_kolosis(tmp_path, capsys):
    report, _ = validate("kolosis", tmp_path, capsys, "--steps", "12", "--context", "16", "--controls")
    assert set(report) == {"temporal_ppl_ratio", "plain_ppl_ratio", "relpos_ppl_ratio", "gamma_in_range",
                           "alpha_sum_error", "fusion_sum_error", "temporal_fusion_share"}
    for name in ("gamma_in_range", "alpha_sum_error", "fusion_sum_error"):
        assert report[name]["pass"], name
    assert report["temporal_ppl_ratio"]["pass"] is not None and report["temporal_ppl_ratio"]["value"] > 0
    gamma = report["gamma_in_range"]["detail"]
    for (lo, hi), low, high in zip(gamma["ranges"], gamma["min"], gamma["max"]):
        assert lo <= low <= high <= hi
    assert 0 < report["temporal_fusion_share"]["value"] < 1
    assert set(report["temporal_ppl_ratio"]["detail"]["perplexity"]) == {"kolosis", "kolosis_baseline",
                                                                         "kolosis_plain", "kolosis_relpos"}


def test_validate_lists_the_families(capsys):
    assert models_cli.main(["validate", "char_lm"]) == 2
    err = capsys.readouterr().err
    assert "gpcm" in err and "migt_tvdt" in err and "kolosis" in err


def test_criterion_verdicts_and_helpers():
    assert verdict_of(criterion(0.5, "<", 1.0, "x")) == "PASS"
    assert verdict_of(criterion(1.0, "<", 1.0, "x")) == "FAIL"
    assert verdict_of(criterion(0.0, "<=", 0.0, "x")) == "PASS"
    assert verdict_of(criterion(float("inf"), "<=", 0.0, "x")) == "FAIL"
    assert verdict_of(criterion(0.95, ">=", 0.95, "x")) == "PASS"
    assert verdict_of(criterion(3.0, "info", None, "x")) == "INFO"
    assert slope([1, 2, 4], [3, 12, 48]) == pytest.approx(2.0)
    x = torch.ones(1000, requires_grad=True)
    assert saved_bytes(lambda: (x * x).sum()) == 4000  # x is saved (twice, one storage)
