"""Every provider of every benchmark suite computes the same attention as tempattn's reference backend.

The suites' op specs live in benchmarks/bench_*.py; this loads them by path and runs each
provider's benchmark callable once at a tiny shape (the callables return the output in
``fwd`` mode and the gradients in ``fwd+bwd`` mode).
"""
import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from tempattn.bench import cases as C
from tempattn.bench.anchors import build_callable

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.jit._script")  # from flex's tracing
SUITE = Path(__file__).resolve().parents[2] / "benchmarks"
SPEC_MODULES = ("bench_cpu_masked_sdpa", "bench_cpu_relpos_attention", "bench_cpu_decay_attention")
PROFILE = C.PROFILES["tiny"]


def _spec(name):
    spec = importlib.util.spec_from_file_location(f"benchmark_suite_{name}", SUITE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # torch.compile resolves the score_mod's globals through it
    spec.loader.exec_module(module)
    return module.SPEC


SPECS = [_spec(name) for name in SPEC_MODULES]
CASES = [(spec, case) for spec in SPECS for case in C.op_cases(spec.name, spec.variants, False, PROFILE, ["cpu"])
         if case.provider != "tempattn_reference" and C.unsupported_reason(case, PROFILE, 2 ** 40) is None]


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("spec,case", CASES, ids=[case.id for _, case in CASES])
def test_provider_matches_the_reference_backend(spec, case):
    reference = dataclasses.replace(case, provider="tempattn_reference")
    expected, actual = _as_tuple(build_callable(spec, reference)()), _as_tuple(build_callable(spec, case)())
    assert len(actual) == len(expected)
    for want, got in zip(expected, actual):
        torch.testing.assert_close(got, want, rtol=2e-4, atol=2e-5)
