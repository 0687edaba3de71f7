"""The report generator on a small recorded run (tests/bench/data/small_run.json, pytest-benchmark's format).

The recording holds, on cpu at T = 1024, 2048, 4096: relpos W=64 (tempattn_cpu fwd and fwd+bwd
linear in T, flex fwd 5x slower, naive fwd quadratic, flex fwd+bwd unsupported), masked_sdpa
(sdpa_causal floor, sdpa_dense, tempattn_cpu at 1.2x / 1.05x of sdpa_dense) and the matmul
ceiling (2*2048^3 FLOPs in 0.2 s). No decay_attention results.
"""
import csv
from pathlib import Path

import pytest

from tempattn.bench import __main__ as cli
from tempattn.bench import convert, report
from tempattn.bench.growth import fit_exponent
from tempattn.bench.results import COLUMNS, Results, read_csv, write_csv
from tempattn.bench.targets import (DECAY, MASKED, MET, MISSED, NOT_MEASURED, RELPOS, CeilingTarget,
                                    ExponentTarget, TimeRatioTarget, evaluate)

SMALL_RUN = Path(__file__).parent / "data" / "small_run.json"


@pytest.fixture(scope="module")
def raw():
    return convert.load(SMALL_RUN)


@pytest.fixture(scope="module")
def rows(raw):
    return convert.rows_from_json(raw)


@pytest.fixture(scope="module")
def results(rows):
    return Results(rows)


def _find(rows, **fields):
    found = [r for r in rows if all(getattr(r, k) == v for k, v in fields.items())]
    assert len(found) == 1, fields
    return found[0]


def test_csv_has_the_documented_columns_and_round_trips(rows, tmp_path):
    path = tmp_path / "results.csv"
    write_csv(rows, path)
    with open(path, newline="") as f:
        assert tuple(next(csv.reader(f))) == COLUMNS
    assert read_csv(path) == rows


def test_measured_case_gives_time_memory_and_gflops_rows(rows, raw):
    info = next(b["extra_info"] for b in raw["benchmarks"]
                if b["extra_info"]["op"] == "relpos_attention" and b["extra_info"]["provider"] == "tempattn_cpu"
                and b["extra_info"]["mode"] == "fwd" and b["extra_info"]["T"] == 4096)
    key = dict(op="relpos_attention", provider="tempattn_cpu", mode="fwd", T=4096)
    time = _find(rows, metric="time", **key)
    assert (time.unit, time.W, time.S, time.device) == ("ms", 64, None, "cpu")
    assert time.value_p50 == pytest.approx(info["time_p50"] * 1e3)
    assert time.value_p20 < time.value_p50 < time.value_p80
    gflops = _find(rows, metric="gflops", **key)
    assert gflops.value_p50 == pytest.approx(info["flops"] / info["time_p50"] / 1e9)
    assert gflops.value_p20 == pytest.approx(info["flops"] / info["time_p80"] / 1e9)  # slow rounds: low GFLOP/s
    memory = _find(rows, metric="memory", **key)
    assert (memory.unit, memory.value_p50) == ("MiB", pytest.approx(8.0))
    assert (time.torch, time.tempattn_version, time.timestamp) == ("2.13.0+cpu", "0.1.0", raw["datetime"])


def test_unsupported_cases_are_rows_with_a_reason(rows):
    row = _find(rows, op="relpos_attention", provider="flex", mode="fwd+bwd", T=2048)
    assert row.metric == "time" and row.value_p50 is None and not row.measured
    assert "no CPU backward" in row.note


def test_admissible_flops_count_backward_as_two_and_a_half_forward(raw):
    infos = {(b["extra_info"]["mode"], b["extra_info"]["provider"], b["extra_info"]["T"]): b["extra_info"]
             for b in raw["benchmarks"] if b["extra_info"]["op"] == "relpos_attention"}
    fwd, fwd_bwd = infos[("fwd", "tempattn_cpu", 1024)], infos[("fwd+bwd", "tempattn_cpu", 1024)]
    assert fwd_bwd["flops"] == pytest.approx(3.5 * fwd["flops"])
    pairs = 2 * 4 * sum(min(i, 64) + 1 for i in range(1024))
    assert fwd["flops"] == 4 * 64 * pairs


def test_speedup_table_holds_anchor_over_tempattn_ratios(results):
    table = "\n".join(report.speedup_table(results, "cpu", RELPOS))
    assert "| tempattn_cpu | 4096 | fwd | 100.00× | 5.00× | 30.00× |" in table  # vs naive, flex, sdpa_causal
    masked = "\n".join(report.speedup_table(results, "cpu", MASKED))
    assert "| tempattn_cpu | 1024 | fwd | 0.83× | 0.50× |" in masked  # vs sdpa_dense, vs the sdpa_causal floor


@pytest.mark.parametrize("slope", [0.5, 1.0, 2.0])
def test_exponent_fit_recovers_a_known_slope(slope):
    fit = fit_exponent([(T, 3.0 * T ** slope) for T in (1024, 2048, 4096, 8192)])
    assert fit.exponent == pytest.approx(slope)
    assert fit.r2 == pytest.approx(1.0)


def test_exponent_fit_quality_drops_with_noise_and_needs_two_lengths():
    noisy = fit_exponent([(1024, 1.0), (2048, 3.0), (4096, 3.5), (8192, 9.0)])
    assert 0 < noisy.r2 < 0.99
    assert fit_exponent([(1024, 1.0)]) is None
    assert fit_exponent([(1024, 1.0), (1024, 2.0)]) is None


def test_ratio_target_verdicts(results):
    def verdict(target):
        return target.evaluate(results, "cpu", "tempattn_cpu")

    met, figure = verdict(TimeRatioTarget(RELPOS, "fwd", "flex", 0.25, "relpos ≥ 4x faster than flex"))
    assert met == MET and "0.200×" in figure and "5.00× faster" in figure
    assert verdict(TimeRatioTarget(RELPOS, "fwd", "flex", 0.1, "relpos ≥ 10x faster than flex"))[0] == MISSED
    assert verdict(TimeRatioTarget(MASKED, "fwd", "sdpa_dense", 1.1, "masked ≤ 1.1x"))[0] == MISSED  # 1.2x
    assert verdict(TimeRatioTarget(MASKED, "fwd+bwd", "sdpa_dense", 1.1, "masked ≤ 1.1x"))[0] == MET  # 1.05x
    status, why = verdict(TimeRatioTarget(RELPOS, "fwd+bwd", "flex", 0.25, "no flex backward"))
    assert status == NOT_MEASURED and "no CPU backward" in why
    assert verdict(TimeRatioTarget(DECAY, "fwd", "sdpa_causal", 1.3, "decay"))[0] == NOT_MEASURED


def test_ceiling_and_exponent_target_verdicts(results):
    status, figure = CeilingTarget(RELPOS, "fwd", 0.30, "ceiling").evaluate(results, "cpu", "tempattn_cpu")
    assert status == MET and "85.9 GFLOP/s matmul ceiling" in figure
    memory = ExponentTarget(RELPOS, "fwd+bwd", "memory", 1.05, "memory").evaluate(results, "cpu", "tempattn_cpu")
    assert memory[0] == MET and "exponent 1.00" in memory[1]
    quadratic = ExponentTarget(MASKED, "fwd", "time", 1.1, "time").evaluate(results, "cpu", "tempattn_cpu")
    assert quadratic[0] == MISSED and "exponent 2.00" in quadratic[1]
    assert ExponentTarget(DECAY, "fwd", "memory", 1.05, "m").evaluate(results, "cpu", "tempattn_cpu")[0] == NOT_MEASURED


def test_every_target_gets_a_verdict_per_fused_backend(results):
    verdicts = evaluate(results)
    assert verdicts and {v.provider for v in verdicts} == {"tempattn_cpu"}
    assert {v.status for v in verdicts} == {MET, MISSED, NOT_MEASURED}
    assert all(v.line().startswith(f"- **{v.status}**") for v in verdicts)


def test_report_has_every_section_and_writes_the_plots(raw, results, tmp_path):
    path = report.write_report(results, raw["machine_info"]["tempattn"], "quick", tmp_path)
    text = path.read_text()
    for heading in ("## Machine", "## Targets", "## Results on cpu", "### masked_sdpa (cpu)",
                    "### relpos_attention W=64 (cpu)", "## Unsupported cases"):
        assert heading in text
    assert "AMD EPYC (fixture)" in text and "matmul ceiling (cpu, fp32 N×N): 85.9 GFLOP/s" in text
    assert "| tempattn_cpu | fwd | 1.00 (R²=1.000) | 1.00 (R²=1.000) |" in text
    plots = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert plots == ["memory_cpu_masked_sdpa.png", "memory_cpu_relpos_attention_64.png", "speedup_cpu.png",
                     "time_cpu_masked_sdpa.png", "time_cpu_relpos_attention_64.png"]
    assert all((tmp_path / "plots" / name).stat().st_size > 1000 for name in plots)
    assert all(f"(plots/{name})" in text for name in plots)


def test_cli_rebuilds_csv_and_report_from_a_raw_file(tmp_path):
    assert cli.main(["--from-json", str(SMALL_RUN), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "REPORT.md").exists()
    assert len(read_csv(tmp_path / "results.csv")) == 3 * 31 + 4
