"""The per-call latency pairs (tempattn.bench.latency): alternating timer, rounds, rows, verdicts, report, anchors.

No timing is asserted: the timer runs on a fake clock, and verdicts are computed from made-up rows.
"""
import csv
import dataclasses
import gc
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from tempattn.bench import cases as C
from tempattn.bench import convert, latency, report
from tempattn.bench.results import (LATENCY, Results, note_partner, note_rounds, partner_note, read_csv,
                                    write_csv)
from tempattn.bench.targets import MET, MISSED, NOT_MEASURED, TARGETS, LatencyTarget, evaluate

SUITE = Path(__file__).resolve().parents[2] / "benchmarks"
SMALL_RUN = Path(__file__).parent / "data" / "small_run.json"


class FakeClock:
    """A nanosecond clock that only moves when a fake call says how long it took."""

    def __init__(self):
        self.now = 0

    def __call__(self) -> int:
        return self.now

    def call(self, name, durations, log):
        """A zero-argument function taking ``durations[i]`` ns on its i-th call (the last one repeats)."""
        count = [0]

        def fn():
            log.append(name)
            self.now += durations[min(count[0], len(durations) - 1)]
            count[0] += 1
            return object()
        return fn


# ---------------------------------------------------------------------------------------------------------------
# the alternating timer


def test_alternate_times_one_call_of_each_per_round_swapping_the_order():
    clock, log = FakeClock(), []
    samples = latency.alternate(clock.call("a", [3], log), clock.call("b", [5], log), rounds=4, clock=clock)
    assert log == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert samples.first == (3, 3, 3, 3) and samples.second == (5, 5, 5, 5)
    assert samples.medians() == (3.0, 5.0)


def test_alternate_returns_the_median_of_each_side_not_the_mean():
    clock, log = FakeClock(), []
    samples = latency.alternate(clock.call("a", [10, 1000, 12, 11, 13], log), clock.call("b", [7, 7, 700, 9, 8], log),
                                rounds=5, clock=clock)
    assert samples.medians() == (12.0, 8.0)


def test_alternate_turns_the_garbage_collector_off_while_timing_only():
    seen = []
    latency.alternate(lambda: seen.append(gc.isenabled()), lambda: None, rounds=3)
    assert seen == [False] * 3 and gc.isenabled()


def test_pair_rounds_fill_the_profile_within_its_bounds():
    quick = C.PROFILES["quick"]
    assert latency.pair_rounds(1e-3, quick) == 2000  # 2 s / 1 ms
    assert latency.pair_rounds(1e-6, quick) == quick.latency_max_rounds
    assert latency.pair_rounds(1.0, quick) == quick.latency_min_rounds
    assert latency.pair_rounds(1e-6, C.PROFILES["tiny"]) == 2


def test_measure_pair_probes_warms_up_then_reports_percentiles_per_side_in_seconds():
    clock, log = FakeClock(), []
    profile = dataclasses.replace(C.PROFILES["quick"], latency_seconds=2.0)
    fused = clock.call("fused", [1_000_000], log)  # 1 ms
    anchor = clock.call("anchor", [50_000_000] + [3_000_000], log)  # a slow first call, then 3 ms
    measured = latency.measure_pair(fused, anchor, profile, clock=clock)
    assert measured["rounds"] == 500  # 2 s / (1 ms + 3 ms), the probe's medians
    calls = latency.PROBE_ROUNDS + int(500 * latency.WARM_UP_FRACTION) + 500
    assert log.count("fused") == log.count("anchor") == calls
    assert measured["time_p50"] == pytest.approx(1e-3) and measured["anchor_time_p50"] == pytest.approx(3e-3)
    assert measured["anchor_time_p80"] == pytest.approx(3e-3)  # the slow first call was a probe round


# ---------------------------------------------------------------------------------------------------------------
# the pairs


def test_pairs_cover_every_target_of_the_issue():
    scenarios = (latency.CALL, latency.KT, latency.DECODE, latency.STEP)
    by_scenario = {s: [p for p in latency.PAIRS if p.scenario == s] for s in scenarios}
    assert sum(map(len, by_scenario.values())) == len(latency.PAIRS) == 15
    ops = {"masked_sdpa", "relpos_attention", "decay_attention"}
    call = by_scenario[latency.CALL]
    assert {(p.op, p.mode) for p in call} == {(op, m) for op in ops for m in ("fwd", "fwd+grad")}
    assert all((p.anchor, p.max_ratio, p.shape) == (latency.PLAIN, 2.5, latency.CALL_SHAPE) for p in call)
    kt = by_scenario[latency.KT]
    assert {(p.op, p.mode) for p in kt} == {(op, m) for op in ops for m in ("fwd", "fwd+bwd")}
    assert all(p.max_ratio == 1.0 and p.shape == latency.Shape(32, 4, 28, 28, 16) for p in kt)
    assert {(p.op, p.mode) for p in kt if p.anchor == latency.DENSE} == {("relpos_attention", "fwd+bwd")}
    assert all(p.anchor == C.FLOOR for p in kt if p.anchor != latency.DENSE)
    decode = by_scenario[latency.DECODE]
    assert sorted(p.shape.B for p in decode) == [1, 4]
    assert all(p.padded and p.anchor == latency.DENSE and p.mode == "fwd" and p.max_ratio == 1.0 for p in decode)
    (step,) = by_scenario[latency.STEP]
    assert (step.op, step.anchor, step.mode, step.max_ratio) == ("gpcm", "attention_gpcm", latency.TRAIN, 1.2)
    assert (step.shape.B, step.shape.T) == (32, 28)
    assert len({p.key for p in latency.PAIRS}) == len({p.description for p in latency.PAIRS}) == 15
    relpos, decay = (next(p for p in call if p.op == op) for op in ("relpos_attention", "decay_attention"))
    assert (relpos.W, decay.S) == (5, 3)


def test_latency_cases_use_every_fused_backend_of_each_device():
    cases = latency.latency_cases(["cpu", "cuda"])
    assert {(c.device, c.provider) for c in cases} == {("cpu", "tempattn_cpu"), ("cuda", "tempattn_cuda"),
                                                      ("cuda", "tempattn_triton")}
    assert len(cases) == 3 * len(latency.PAIRS) and len({c.id for c in cases}) == len(cases)


def test_decode_padding_pads_a_growing_prefix_of_each_row():
    padding = latency.decode_padding(4, 100)
    assert padding.dtype == torch.bool
    assert [int(row.sum()) for row in padding] == [10, 20, 30, 40]
    assert padding[3, :40].all() and not padding[3, 40:].any()


# ---------------------------------------------------------------------------------------------------------------
# rows, verdicts, report

PAIR_MET = next(p for p in latency.PAIRS if p.scenario == latency.KT and p.op == "relpos_attention"
                and p.mode == "fwd+bwd")
PAIR_MISSED = next(p for p in latency.PAIRS if p.scenario == latency.CALL and p.op == "decay_attention"
                   and p.mode == "fwd+grad")
PAIR_UNSUPPORTED = next(p for p in latency.PAIRS if p.scenario == latency.DECODE and p.shape.B == 4)


def _measured(pair, provider, device, fused_us, anchor_us, rounds=1000):
    info = latency.LatencyCase(pair, provider, device).info()
    info["rounds"] = rounds
    for prefix, us in (("", fused_us), ("anchor_", anchor_us)):
        info.update({f"{prefix}time_p20": 0.9 * us * 1e-6, f"{prefix}time_p50": us * 1e-6,
                     f"{prefix}time_p80": 1.2 * us * 1e-6})
    return {"extra_info": info}


def _raw():
    unsupported = {**latency.LatencyCase(PAIR_UNSUPPORTED, "tempattn_cpu", "cpu").info(), "note": "failed: boom"}
    machine = {"tempattn": {"torch": "2.x", "tempattn_version": "0.1"}}
    return {"datetime": "2026-11-25T00:00:00", "machine_info": machine,
            "benchmarks": [_measured(PAIR_MET, "tempattn_cpu", "cpu", 800.0, 1000.0),
                           _measured(PAIR_MISSED, "tempattn_cpu", "cpu", 30.0, 10.0, rounds=4000),
                           _measured(PAIR_MET, "tempattn_cuda", "cuda", 50.0, 100.0),
                           _measured(PAIR_MET, "tempattn_triton", "cuda", 150.0, 120.0)],
            "tempattn": {"profile": "quick", "unsupported": [unsupported]}}


@pytest.fixture(scope="module")
def rows():
    return convert.rows_from_json(_raw())


@pytest.fixture(scope="module")
def results(rows):
    return Results(rows)


def test_a_pair_gives_two_latency_rows_in_microseconds_naming_each_other(rows):
    pair_rows = [r for r in rows if r.device == "cpu" and r.op == "relpos_attention"]
    assert {r.provider for r in pair_rows} == {"tempattn_cpu", "sdpa_dense"}
    fused = next(r for r in pair_rows if r.provider == "tempattn_cpu")
    anchor = next(r for r in pair_rows if r.provider == "sdpa_dense")
    assert (fused.metric, fused.unit, fused.mode) == (LATENCY, "us", "fwd+bwd")
    assert (fused.B, fused.H, fused.Tq, fused.T, fused.D, fused.W, fused.S) == (32, 4, 28, 28, 16, 5, None)
    assert (fused.value_p50, anchor.value_p50) == (pytest.approx(800.0), pytest.approx(1000.0))
    assert anchor.value_p20 == pytest.approx(900.0) and anchor.value_p80 == pytest.approx(1200.0)
    assert fused.note == partner_note("sdpa_dense", 1000) and anchor.note == partner_note("tempattn_cpu", 1000)
    decode = next(r for r in rows if r.op == "masked_sdpa" and r.B == 4)
    assert (decode.provider, decode.metric, decode.Tq, decode.T, decode.measured) == \
        ("tempattn_cpu", LATENCY, 1, 1024, False)
    assert decode.note == "failed: boom"


def test_partner_notes_round_trip():
    note = partner_note("sdpa", 4000)
    assert (note_partner(note), note_rounds(note)) == ("sdpa", 4000)
    assert note_partner(partner_note("sdpa_causal", 7)) == "sdpa_causal"
    assert note_partner("failed: boom") is None and note_rounds("failed: boom") is None


def test_csv_round_trips_the_query_length(rows, tmp_path):
    path = tmp_path / "results.csv"
    write_csv(rows, path)
    assert read_csv(path) == rows


def test_latency_verdicts_compare_the_medians_of_one_pair(results):
    def verdict(pair, device, provider):
        return LatencyTarget(pair).evaluate(results, device, provider)

    status, figure = verdict(PAIR_MET, "cpu", "tempattn_cpu")
    assert status == MET and "0.800×" in figure and "needs ≤ 1×" in figure and "over 1000 rounds" in figure
    assert "800.0 µs vs 1000.0 µs for sdpa_dense" in figure
    status, figure = verdict(PAIR_MISSED, "cpu", "tempattn_cpu")
    assert status == MISSED and "3.000×" in figure and "needs ≤ 2.5×" in figure
    status, why = verdict(PAIR_UNSUPPORTED, "cpu", "tempattn_cpu")
    assert status == NOT_MEASURED and "boom" in why
    assert verdict(latency.PAIRS[0], "cpu", "tempattn_cpu")[0] == NOT_MEASURED
    # on cuda each backend is compared with the anchor it alternated with, not the other backend's
    status, figure = verdict(PAIR_MET, "cuda", "tempattn_cuda")
    assert status == MET and "50.0 µs vs 100.0 µs" in figure and "0.500×" in figure
    status, figure = verdict(PAIR_MET, "cuda", "tempattn_triton")
    assert status == MISSED and "150.0 µs vs 120.0 µs" in figure and "1.250×" in figure


def test_every_latency_pair_is_a_target_with_its_verdict_line(results):
    latency_targets = [t for t in TARGETS if isinstance(t, LatencyTarget)]
    assert [t.pair for t in latency_targets] == latency.PAIRS
    lines = {v.line() for v in evaluate(results) if v.device == "cpu"}
    assert any(line.startswith("- **met** — knowledge tracing (B=32 H=4 T=28 D=16): relpos_attention W=5 "
                               "fwd+bwd ≤ 1× SDPA with rel_bias gathered") for line in lines)
    assert any(line.startswith("- **missed** — per call (B=1 H=1 Tq=1 Tk=4 D=16): decay_attention S=3 fwd, "
                               "grad on ≤ 2.5× plain SDPA") for line in lines)


def test_report_has_a_latency_table_and_keeps_latency_rows_out_of_the_T_grid(results, tmp_path):
    text = report.render(results, {}, "quick", tmp_path)
    assert "## Per-call latency (host overhead)" in text
    assert "| cpu | knowledge tracing | B=32 H=4 T=28 D=16 | relpos_attention W=5 | fwd+bwd | tempattn_cpu | " \
           "800.0 [720.0–960.0] | sdpa_dense | 1000.0 [900.0–1200.0] | 1000 | 0.80× | ≤ 1× | **met** |" in text
    assert "| cuda | knowledge tracing | B=32 H=4 T=28 D=16 | relpos_attention W=5 | fwd+bwd | tempattn_triton " \
           "| 150.0 [135.0–180.0] | sdpa_dense | 120.0 [108.0–144.0] | 1000 | 1.25× | ≤ 1× | **missed** |" in text
    assert "| tempattn_cpu | unsupported | sdpa_dense | — | — | n/a | ≤ 1× | not measured |" in text
    assert results.variants("cpu") == [] and "### " not in text  # no T-grid section from latency rows
    assert "## Results on" not in text

    small = convert.rows_from_json(convert.load(SMALL_RUN))
    both, alone = Results(small + list(results.rows)), Results(small)
    assert both.variants("cpu") == alone.variants("cpu")
    for variant in alone.variants("cpu"):
        assert both.Ts("cpu", variant) == alone.Ts("cpu", variant)
        assert report.metric_table(both, "cpu", variant, "time") == report.metric_table(alone, "cpu", variant, "time")


def test_old_csv_files_without_a_query_length_column_still_read(tmp_path):
    path = tmp_path / "old.csv"
    write_csv(convert.rows_from_json(convert.load(SMALL_RUN)), path)
    with open(path, newline="") as f:
        table = list(csv.reader(f))
    column = table[0].index("Tq")
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([cell for i, cell in enumerate(line) if i != column] for line in table)
    old = read_csv(path)
    assert len(old) == len(table) - 1 and all(r.Tq is None for r in old)


# ---------------------------------------------------------------------------------------------------------------
# the suite's callables


def _suite():
    spec = importlib.util.spec_from_file_location("benchmark_suite_bench_call_latency", SUITE / "bench_call_latency.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


SUITE_MODULE = _suite()
CPU_CASES = latency.latency_cases(["cpu"])


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("case", [c for c in CPU_CASES if c.pair.exact], ids=lambda c: c.id)
def test_exact_anchors_compute_the_same_attention(case):
    if latency.unsupported_reason(case):
        pytest.skip(latency.unsupported_reason(case))
    fused, anchor = SUITE_MODULE.build_pair(case)
    expected, actual = _as_tuple(anchor()), _as_tuple(fused())
    assert len(actual) == len(expected)
    for want, got in zip(expected, actual):
        torch.testing.assert_close(got, want, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("case", [c for c in CPU_CASES if c.pair.scenario != latency.STEP], ids=lambda c: c.id)
def test_both_sides_run_in_the_pair_mode_on_the_same_inputs(case):
    if latency.unsupported_reason(case):
        pytest.skip(latency.unsupported_reason(case))
    x = SUITE_MODULE.make_inputs(case)
    s = case.pair.shape
    assert x.q.shape == (s.B, s.H, s.Tq, s.D) and x.k.shape == (s.B, s.H, s.T, s.D)
    fused, anchor = SUITE_MODULE.build_pair(case)
    for result in (fused(), anchor()):
        if case.pair.mode == "fwd+bwd":
            assert isinstance(result, tuple) and all(g is not None for g in result)
        else:
            assert result.shape == (s.B, s.H, s.Tq, s.D)
            assert result.requires_grad == (case.pair.mode == "fwd+grad")


@pytest.mark.parametrize("case", [c for c in CPU_CASES if c.pair.scenario == latency.STEP], ids=lambda c: c.id)
def test_model_step_pairs_train_both_models_on_the_case_backend(case, monkeypatch):
    if latency.unsupported_reason(case):
        pytest.skip(latency.unsupported_reason(case))
    models = []
    import tempattn.models as models_package
    create = models_package.create_model

    def recording_create(name, **kw):
        model = create(name, **kw)
        models.append((name, kw.get("backend"), model))
        return model
    monkeypatch.setattr(models_package, "create_model", recording_create)
    model_step, baseline_step = SUITE_MODULE.build_pair(case)
    assert [(name, backend) for name, backend, _ in models] == [("gpcm", case.backend),
                                                                ("attention_gpcm", case.backend)]
    for (_, _, model), step in zip(models, (model_step, baseline_step)):
        before = [p.detach().clone() for p in model.parameters()]
        step()
        assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
