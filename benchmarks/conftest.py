"""Shared parametrisation and measurement for the benchmark suites.

Each ``bench_*.py`` module defines ``cases(profile, devices)``; every test takes the
``case`` it is parametrised with and hands it to ``run_benchmark`` with a factory of
the callable to time. Cases that cannot run here (backend unavailable, out of memory,
no CPU backward for flex, or a failure during a real run) are skipped with the reason
and recorded in the raw JSON under ``tempattn.unsupported``. With
``--benchmark-disable`` (CI) every case runs once at tiny shapes, and failures fail.
The per-call latency suite (``bench_call_latency.py``) hands ``run_latency`` a factory of
the pair of callables (tempattn, anchor) to time alternately; its shapes are fixed, and
with ``--benchmark-disable`` each pair runs a few rounds.
"""
import pytest
import torch

from tempattn.bench import cases as C
from tempattn.bench import latency, machine
from tempattn.bench.measure import measure
from tempattn.bench.memory import available_bytes

UNSUPPORTED = pytest.StashKey[list]()


def _profile(config) -> C.Profile:
    return C.active_profile(bool(config.getoption("benchmark_disable")))


def pytest_configure(config):
    config.stash[UNSUPPORTED] = []


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        cases = metafunc.module.cases(_profile(metafunc.config), C.bench_devices())
        metafunc.parametrize("case", cases, ids=[c.id for c in cases])


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["tempattn"] = machine.describe()


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["tempattn"] = {"profile": _profile(config).name, "unsupported": config.stash[UNSUPPORTED]}


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or "out of memory" in str(exc).lower()


def _failure_reason(exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{'out of memory' if _is_out_of_memory(exc) else 'failed'}: {type(exc).__name__}: {first_line}"


def _measure_or_record(benchmark, config, info, reason, measure_case) -> None:
    """Store ``measure_case()``'s fields with ``info``, or record why the case cannot be measured and skip."""
    if reason is None:
        try:
            measured = measure_case()
            benchmark.extra_info.update(info, **measured)
            return
        except Exception as exc:  # a real run never crashes on one case; CI (disabled) does
            if benchmark.disabled and not _is_out_of_memory(exc):
                raise
            reason = _failure_reason(exc)
    config.stash[UNSUPPORTED].append({**info, "note": reason})
    pytest.skip(reason)


@pytest.fixture
def run_benchmark(benchmark, request):
    """``run(case, make_callable)``: measure the case, or record why it cannot be measured and skip."""
    config = request.config
    profile = _profile(config)

    def run(case: C.Case, make_callable):
        reason = C.unsupported_reason(case, profile, available_bytes(case.device))
        _measure_or_record(benchmark, config, case.info(), reason,
                           lambda: measure(benchmark, make_callable(), case.device, profile, C.needs_warm_up(case)))
    return run


@pytest.fixture
def run_latency(benchmark, request):
    """``run(case, make_pair)``: time tempattn and its anchor alternately (``latency.measure_pair``).

    pytest-benchmark times the whole alternating measurement once (its own statistics for these
    cases are that duration); the per-call figures are in ``extra_info``.
    """
    config = request.config
    profile = _profile(config)

    def measure_case(case: latency.LatencyCase, make_pair):
        fused, anchor = make_pair()
        measured = {}
        benchmark.pedantic(lambda: measured.update(latency.measure_pair(fused, anchor, profile)), rounds=1,
                           iterations=1, warmup_rounds=0)
        return measured if not benchmark.disabled else {"rounds": measured["rounds"]}

    def run(case: latency.LatencyCase, make_pair):
        _measure_or_record(benchmark, config, case.info(), latency.unsupported_reason(case),
                           lambda: measure_case(case, make_pair))
    return run
