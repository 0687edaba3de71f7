"""The performance targets of the issues, evaluated on one run's results.

Ratios compare a fused tempattn backend with an anchor at the headline shape
(T=4096), both measured in the same process; exponents are fitted over the T grid.
Per-call latency ratios compare the medians of a pair timed alternately
(:mod:`tempattn.bench.latency`). Each target yields a :class:`Verdict` per fused
backend: met, missed or not measured.
"""
import dataclasses
from typing import List, Optional, Tuple

from .cases import FLOOR, FUSED_BACKENDS, HEADLINE_T, MODES
from .growth import fit_exponent
from .latency import PAIRS, Pair
from .results import Results, Row, VariantKey, note_rounds, variant_label

MET, MISSED, NOT_MEASURED = "met", "missed", "not measured"
RELPOS: VariantKey = ("relpos_attention", 64, None)
DECAY: VariantKey = ("decay_attention", None, 3)
DECAY_WINDOWED: VariantKey = ("decay_attention", 64, 3)
MASKED: VariantKey = ("masked_sdpa", None, None)


@dataclasses.dataclass(frozen=True)
class Verdict:
    status: str
    target: str
    figure: str
    provider: str
    device: str

    def line(self) -> str:
        return f"- **{self.status}** — {self.target} [{self.provider}, {self.device}]: {self.figure}"


@dataclasses.dataclass(frozen=True)
class TimeRatioTarget:
    """time(fused) / time(anchor) <= max_ratio at the headline shape."""
    variant: VariantKey
    mode: str
    anchor: str
    max_ratio: float
    description: str

    def evaluate(self, results: Results, device: str, provider: str) -> Tuple[str, str]:
        fused = results.value(device, self.variant, provider, self.mode, "time", HEADLINE_T)
        anchor = results.value(device, self.variant, self.anchor, self.mode, "time", HEADLINE_T)
        if fused is None or anchor is None:
            missing = provider if fused is None else self.anchor
            return NOT_MEASURED, f"{missing}: {results.note(device, self.variant, missing, self.mode, HEADLINE_T)}"
        ratio = fused / anchor
        speed = f"{1 / ratio:.2f}× faster" if ratio <= 1 else f"{ratio:.2f}× slower"
        figure = f"{ratio:.3f}× the time of {self.anchor} ({speed}), needs ≤ {self.max_ratio:.3g}×"
        return (MET if ratio <= self.max_ratio else MISSED), figure


@dataclasses.dataclass(frozen=True)
class CeilingTarget:
    """GFLOP/s(fused) on admissible pairs >= min_fraction of the measured matmul ceiling."""
    variant: VariantKey
    mode: str
    min_fraction: float
    description: str

    def evaluate(self, results: Results, device: str, provider: str) -> Tuple[str, str]:
        gflops = results.value(device, self.variant, provider, self.mode, "gflops", HEADLINE_T)
        ceiling = results.ceiling_gflops(device)
        if gflops is None or ceiling is None:
            what = "matmul ceiling: not measured" if ceiling is None else \
                f"{provider}: {results.note(device, self.variant, provider, self.mode, HEADLINE_T)}"
            return NOT_MEASURED, what
        fraction = gflops / ceiling
        figure = f"{gflops:.1f} GFLOP/s = {100 * fraction:.1f}% of the {ceiling:.1f} GFLOP/s matmul ceiling, " \
                 f"needs ≥ {100 * self.min_fraction:.0f}%"
        return (MET if fraction >= self.min_fraction else MISSED), figure


@dataclasses.dataclass(frozen=True)
class ExponentTarget:
    """Fitted growth exponent of ``metric`` against T <= max_exponent."""
    variant: VariantKey
    mode: str
    metric: str
    max_exponent: float
    description: str

    def evaluate(self, results: Results, device: str, provider: str) -> Tuple[str, str]:
        points = results.series(device, self.variant, provider, self.mode, self.metric)
        fit = fit_exponent(points)
        if fit is None:
            return NOT_MEASURED, f"needs results at two or more T, got {len(points)}"
        Ts = ", ".join(str(T) for T, _ in points)
        figure = f"exponent {fit} over T = {Ts}, needs ≤ {self.max_exponent}"
        return (MET if fit.exponent <= self.max_exponent else MISSED), figure


@dataclasses.dataclass(frozen=True)
class LatencyTarget:
    """Median per-call latency of tempattn / that of its anchor, timed alternately in one run, <= max_ratio."""
    pair: Pair

    @property
    def description(self) -> str:
        return self.pair.description

    def rows(self, results: Results, device: str, provider: str) -> Tuple[Optional[Row], Optional[Row]]:
        """tempattn's row and the anchor's row timed alternately with it (None where absent)."""
        fused = results.latency(device, self.pair.key, provider)
        anchor = results.latency(device, self.pair.key, self.pair.anchor, partner=provider)
        return fused, anchor

    def evaluate(self, results: Results, device: str, provider: str) -> Tuple[str, str]:
        fused, anchor = self.rows(results, device, provider)
        for name, row in ((provider, fused), (self.pair.anchor, anchor)):
            if row is None or not row.measured:
                return NOT_MEASURED, f"{name}: {row.note if row is not None else 'no latency result in this run'}"
        ratio = fused.value_p50 / anchor.value_p50
        figure = (f"median {fused.value_p50:.1f} µs vs {anchor.value_p50:.1f} µs for {self.pair.anchor}, timed "
                  f"alternately over {note_rounds(fused.note)} rounds: {ratio:.3f}×, needs ≤ {self.pair.max_ratio:g}×")
        return (MET if ratio <= self.pair.max_ratio else MISSED), figure


def _targets() -> list:
    label = variant_label
    ratio_targets = [
        TimeRatioTarget(RELPOS, "fwd", "flex", 0.25, f"{label(RELPOS)} fwd ≥ 4× faster than compiled flex"),
        TimeRatioTarget(RELPOS, "fwd+bwd", FLOOR, 0.25, f"{label(RELPOS)} fwd+bwd ≤ 0.25× plain causal SDPA"),
        TimeRatioTarget(DECAY, "fwd", FLOOR, 1.3, f"{label(DECAY)} fwd ≤ 1.3× plain causal SDPA"),
        TimeRatioTarget(DECAY, "fwd", "flex", 1 / 3, f"{label(DECAY)} fwd ≥ 3× faster than compiled flex"),
        TimeRatioTarget(DECAY, "fwd+bwd", FLOOR, 1.5, f"{label(DECAY)} fwd+bwd ≤ 1.5× plain causal SDPA"),
    ] + [TimeRatioTarget(MASKED, mode, "sdpa_dense", 1.1,
                         f"masked_sdpa causal+padding {mode} ≤ 1.1× SDPA with the same bool mask") for mode in MODES]
    ceiling = [CeilingTarget(RELPOS, "fwd", 0.30, f"{label(RELPOS)} fwd ≥ 30% of the matmul ceiling")]
    memory = [ExponentTarget(v, mode, "memory", 1.05, f"{label(v)} {mode} memory exponent ≤ 1.05")
              for v in (MASKED, RELPOS, DECAY, DECAY_WINDOWED) for mode in MODES]
    time = [ExponentTarget(v, mode, "time", 1.1, f"{label(v)} {mode} time exponent ≤ 1.1")
            for v in (RELPOS, DECAY_WINDOWED) for mode in MODES]
    latency = [LatencyTarget(pair) for pair in PAIRS]
    return ratio_targets + ceiling + memory + time + latency


TARGETS = _targets()


def fused_providers(device: str) -> List[str]:
    return [f"tempattn_{backend}" for backend in FUSED_BACKENDS.get(device, ())]


def evaluate(results: Results, targets: Optional[list] = None) -> List[Verdict]:
    """One verdict per (target, fused backend, device) in the results."""
    verdicts = []
    for device in results.devices():
        for provider in fused_providers(device):
            for target in targets or TARGETS:
                status, figure = target.evaluate(results, device, provider)
                verdicts.append(Verdict(status, target.description, figure, provider, device))
    return verdicts
