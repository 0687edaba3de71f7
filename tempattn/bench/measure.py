"""Time and peak memory of one case through pytest-benchmark.

A warm-up call where the first call compiles or autotunes (flex, Triton, anything on
CUDA), then one profiled call (peak memory, first touch of the pages, and the time
estimate that picks the number of rounds) run before ``benchmark.pedantic`` times the
measured rounds, so none of that is in the statistics.
"""
import math
from typing import Callable, Dict

import numpy as np

from .cases import Profile
from .memory import peak_extra_bytes

PERCENTILES = (20, 50, 80)


def rounds_for(seconds_per_call: float, profile: Profile) -> int:
    """Enough rounds to fill ``profile.seconds_per_case``, within [min_rounds, max_rounds]."""
    wanted = math.ceil(profile.seconds_per_case / max(seconds_per_call, 1e-6))
    return int(min(max(wanted, profile.min_rounds), profile.max_rounds))


def time_percentiles(round_seconds) -> Dict[str, float]:
    p20, p50, p80 = np.percentile(np.asarray(round_seconds, dtype=float), PERCENTILES)
    return {"time_p20": float(p20), "time_p50": float(p50), "time_p80": float(p80)}


def measure(benchmark, fn: Callable[[], object], device: str, profile: Profile, warm_up: bool) -> Dict:
    """Warm up, measure peak memory, time the rounds; returns the extra_info fields it measured."""
    if warm_up:
        fn()
    peak_bytes, seconds = peak_extra_bytes(fn, device)
    rounds = rounds_for(seconds, profile)
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
    info = {"peak_bytes": int(peak_bytes), "rounds": rounds}
    if not benchmark.disabled:
        info.update(time_percentiles(benchmark.stats.stats.data))
    return info
