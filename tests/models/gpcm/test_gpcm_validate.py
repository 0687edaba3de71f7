"""``python -m tempattn.models validate gpcm`` prints every criterion of the design with its verdict."""
import json

from tempattn.models import __main__ as models_cli
from tempattn.models.gpcm.validate import CRITERIA


def test_validate_prints_every_criterion_with_a_verdict(tmp_path, capsys):
    code = models_cli.main(["validate", "gpcm", "--students", "300", "--examples", "256", "--rounds", "2",
                            "--out", str(tmp_path)])
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "validation.json").read_text())
    assert set(report) == set(CRITERIA)
    for name, row in report.items():
        verdict = "PASS" if row["pass"] else "FAIL"
        assert any(line.startswith(verdict) and name in line for line in out.splitlines()), name
        assert row["value"] == row["value"]  # not NaN
    assert report["parameter_ratio"]["pass"] and 0.5 < report["memory_exponent"]["value"] < 1.2
    assert code == (0 if all(r["pass"] for r in report.values()) else 1)


def test_validate_needs_a_known_family(capsys):
    assert models_cli.main(["validate"]) == 2
    assert models_cli.main(["validate", "tsa"]) == 2
    assert "validate FAMILY" in capsys.readouterr().err
