"""Per-call latency: each operator against SDPA at shapes where host overhead decides, timed alternately.

The targets of the issue "Host overhead per call: tempattn must not lose to SDPA at the model
families' own shapes or in decoding". A :class:`Pair` is one comparison: an operator at a
shape and mode against an SDPA anchor on the same inputs, with the largest allowed ratio
tempattn / anchor of the median per-call latencies.

Scenarios (fp32):

- ``call`` -- B=1, H=1, Tq=1, Tk=4, D=16: a single call is all host overhead. Each operator
  (masked_sdpa causal; relpos_attention W=5, rel_bias (H, 6); decay_attention S=3) with grad
  off (``fwd``: under ``torch.no_grad()``) and grad on (``fwd+grad``: q, k, v and the op's
  parameters require grad and grad mode is on, forward only: the autograd graph is recorded,
  no backward), against plain ``F.scaled_dot_product_attention(q, k, v)`` with the same grad
  setting (at Tq=1 the bottom-right causal mask admits every key, so masked_sdpa computes the
  same thing); target <= 2.5x.
- ``kt`` -- the knowledge-tracing shape B=32, H=4, T=28, D=16: each operator ``fwd`` (no_grad) and
  ``fwd+bwd`` (forward + ``torch.autograd.grad`` for q, k, v and the parameters) against causal
  SDPA (``is_causal=True``); relpos_attention fwd+bwd against SDPA with the equivalent dense float
  bias instead (``sdpa_dense``: the index and the 0/-inf window mask built once, outside the
  clock; ``rel_bias[:, idx] + window_mask`` gathered inside every call, as training must);
  target <= 1.0x.
- ``decode`` -- one decoding step, B=1 and B=4, H=8, Tq=1, Tk=1024, D=64: masked_sdpa with a
  ``key_padding_mask`` (left padding, see :func:`decode_padding`) against SDPA with the same
  padding as a bool ``attn_mask`` of shape (B, 1, 1, Tk), True = attend (``sdpa_dense``), fwd under
  no_grad; target <= 1.0x.
- ``step`` -- one training step of the ``gpcm`` model family (B=32, T=28, lengths 14..28, default
  sizes: H=4, head dim 8; zero_grad, forward, masked NLL, backward, clipping, AdamW:
  ``tempattn.models.common.step_timing.gpcm_step``) against the same step of its plain-attention
  baseline ``attention_gpcm``, both models built with the case's backend; target <= 1.2x.

Timing rule: separate timing loops drift by up to 2x on a shared machine, so the two callables of
a pair are timed alternately, one call each per round, for many rounds (the order swapped every
round), with ``time.perf_counter_ns`` and the garbage collector off; the verdict compares the
medians. A call's result (output, autograd graph) is freed after its clock stops. Probe rounds
(which also warm up: first-call caches, compilation) estimate the round time, which picks the
number of rounds to fill the profile's ``latency_seconds``; a further tenth of that is warm-up.
"""
import dataclasses
import gc
import math
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

import tempattn

from .cases import FLOOR, FUSED_BACKENDS, Profile
from .results import LATENCY  # the metric of the result rows (microseconds), and extra_info["kind"] of a pair

LATENCY_MODES = ("fwd", "fwd+grad", "fwd+bwd")
PLAIN = "sdpa"  # plain F.scaled_dot_product_attention(q, k, v), no mask
DENSE = "sdpa_dense"  # SDPA with the op's semantics as a dense bool mask or float bias
PROBE_ROUNDS = 5
WARM_UP_FRACTION = 0.1
PERCENTILES = (20, 50, 80)

CALL, KT, DECODE, STEP = "call", "kt", "decode", "step"
SCENARIO_TITLES = {CALL: "per call", KT: "knowledge tracing", DECODE: "decoding step", STEP: "model step"}
TRAIN = "train"  # the mode of a model-step pair: one optimiser step
MODE_TEXT = {"fwd": "fwd, grad off", "fwd+grad": "fwd, grad on", "fwd+bwd": "fwd+bwd", TRAIN: "training step"}

# (op, mode, B, H, Tq, T, D, W, S): identifies a pair's result rows (with device and provider)
LatencyKey = Tuple[str, str, int, int, int, int, int, Optional[int], Optional[int]]


@dataclasses.dataclass(frozen=True)
class Shape:
    B: int
    H: int
    Tq: int
    T: int  # keys
    D: int

    def label(self) -> str:
        lengths = f"T={self.T}" if self.Tq == self.T else f"Tq={self.Tq} Tk={self.T}"
        return f"B={self.B} H={self.H} {lengths} D={self.D}"


CALL_SHAPE = Shape(B=1, H=1, Tq=1, T=4, D=16)
KT_SHAPE = Shape(B=32, H=4, Tq=28, T=28, D=16)
DECODE_SHAPES = (Shape(B=1, H=8, Tq=1, T=1024, D=64), Shape(B=4, H=8, Tq=1, T=1024, D=64))
DECODE_PADDED_FRACTION = 0.1
GPCM_STEP_SHAPE = Shape(B=32, H=4, Tq=28, T=28, D=8)  # gpcm's defaults: embed_dim 32, 4 heads


@dataclasses.dataclass(frozen=True)
class Pair:
    """One latency comparison and its target: time(tempattn) / time(anchor) <= max_ratio (medians).

    ``exact``: the anchor computes the same attention as the op (checked in tests/bench/test_latency.py);
    otherwise it is the cheapest SDPA call the op has to beat.
    """
    scenario: str
    op: str
    mode: str
    anchor: str
    shape: Shape
    max_ratio: float
    W: Optional[int] = None
    S: Optional[int] = None
    padded: bool = False
    exact: bool = False

    @property
    def key(self) -> LatencyKey:
        s = self.shape
        return (self.op, self.mode, s.B, s.H, s.Tq, s.T, s.D, self.W, self.S)

    @property
    def causal(self) -> bool:
        """masked_sdpa is causal except in decoding (one query attends every cached key)."""
        return self.scenario != DECODE

    def op_label(self) -> str:
        if self.scenario == STEP:
            return f"{self.op} model"
        if self.op == "masked_sdpa":
            return "masked_sdpa with key_padding_mask" if self.padded else "masked_sdpa causal"
        parts = [self.op] + [f"{name}={value}" for name, value in (("W", self.W), ("S", self.S)) if value is not None]
        return " ".join(parts)

    def anchor_label(self) -> str:
        if self.scenario == STEP:
            return f"its plain-attention baseline {self.anchor}"
        if self.anchor == PLAIN:
            return "plain SDPA"
        if self.anchor == FLOOR:
            return "causal SDPA"
        if self.op == "relpos_attention":
            return "SDPA with rel_bias gathered into a dense bias"
        return "SDPA with the same padding as a bool mask"

    @property
    def description(self) -> str:
        return (f"{SCENARIO_TITLES[self.scenario]} ({self.shape.label()}): {self.op_label()} {MODE_TEXT[self.mode]} "
                f"≤ {self.max_ratio:g}× {self.anchor_label()}")


def _pairs() -> List[Pair]:
    ops = (("masked_sdpa", None, None), ("relpos_attention", 5, None), ("decay_attention", None, 3))
    call = [Pair(CALL, op, mode, PLAIN, CALL_SHAPE, 2.5, W, S, exact=op == "masked_sdpa")
            for op, W, S in ops for mode in ("fwd", "fwd+grad")]
    kt = []
    for op, W, S in ops:
        for mode in ("fwd", "fwd+bwd"):
            dense = op == "relpos_attention" and mode == "fwd+bwd"
            kt.append(Pair(KT, op, mode, DENSE if dense else FLOOR, KT_SHAPE, 1.0, W, S,
                           exact=dense or op == "masked_sdpa"))
    decode = [Pair(DECODE, "masked_sdpa", "fwd", DENSE, shape, 1.0, padded=True, exact=True) for shape in DECODE_SHAPES]
    step = [Pair(STEP, "gpcm", TRAIN, "attention_gpcm", GPCM_STEP_SHAPE, 1.2)]
    return call + kt + decode + step


PAIRS = _pairs()


@dataclasses.dataclass(frozen=True)
class LatencyCase:
    """A pair measured with one fused tempattn backend on one device."""
    pair: Pair
    provider: str  # tempattn_<backend>
    device: str
    dtype: str = "float32"

    @property
    def backend(self) -> str:
        return self.provider[len("tempattn_"):]

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def id(self) -> str:
        p = self.pair
        variant = "".join(f"-{k}{v}" for k, v in (("W", p.W), ("S", p.S)) if v is not None)
        return f"latency-{p.scenario}-{p.op}{variant}-{p.mode}-B{p.shape.B}-{self.provider}-vs-{p.anchor}-{self.device}"

    def info(self) -> Dict:
        """The fields the result rows carry (pytest-benchmark ``extra_info``)."""
        p = self.pair
        return {"kind": LATENCY, "scenario": p.scenario, "op": p.op, "provider": self.provider, "anchor": p.anchor,
                "mode": p.mode, "device": self.device, "dtype": self.dtype, **dataclasses.asdict(p.shape),
                "W": p.W, "S": p.S, "padded": p.padded, "max_ratio": p.max_ratio}


def latency_cases(devices: Sequence[str], pairs: Sequence[Pair] = PAIRS) -> List[LatencyCase]:
    """Every pair with every fused backend of each device (the backends the verdicts are about)."""
    return [LatencyCase(pair, f"tempattn_{backend}", device)
            for device in devices for pair in pairs for backend in FUSED_BACKENDS.get(device, ())]


def unsupported_reason(case: LatencyCase) -> Optional[str]:
    status = tempattn.backends()[case.backend]
    return None if status["available"] else f"backend {case.backend!r} unavailable: {status['reason']}"


def decode_padding(B: int, T: int, device=None) -> torch.Tensor:
    """(B, T) bool key_padding_mask, True = padding: batch row b has its first 10%·(b+1) keys padded (left padding)."""
    padding = torch.zeros(B, T, dtype=torch.bool, device=device)
    for b in range(B):
        padding[b, :int(round(T * DECODE_PADDED_FRACTION * (b + 1)))] = True
    return padding


# ---------------------------------------------------------------------------------------------------------------
# Timing


@dataclasses.dataclass(frozen=True)
class PairSamples:
    """Nanoseconds per call of each side, one sample per round."""
    first: Tuple[int, ...]
    second: Tuple[int, ...]

    def medians(self) -> Tuple[float, float]:
        return float(np.median(self.first)), float(np.median(self.second))


def alternate(first: Callable[[], object], second: Callable[[], object], rounds: int,
              clock: Callable[[], int] = time.perf_counter_ns) -> PairSamples:
    """Time ``first`` and ``second`` alternately, one call each per round, ``rounds`` rounds.

    The order is swapped every round (first, second, second, first, ...), so neither side always
    runs right after the other. A call's result is freed after its clock stops; the garbage
    collector is off during the loop.
    """
    samples: Tuple[List[int], List[int]] = ([], [])
    sides = ((first, samples[0]), (second, samples[1]))
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for i in range(rounds):
            for fn, out in (sides if i % 2 == 0 else sides[::-1]):
                start = clock()
                result = fn()
                out.append(clock() - start)
                del result
    finally:
        if was_enabled:
            gc.enable()
    return PairSamples(tuple(samples[0]), tuple(samples[1]))


def pair_rounds(seconds_per_round: float, profile: Profile) -> int:
    """Rounds filling ``profile.latency_seconds``, within [latency_min_rounds, latency_max_rounds]."""
    wanted = math.ceil(profile.latency_seconds / max(seconds_per_round, 1e-9))
    return int(min(max(wanted, profile.latency_min_rounds), profile.latency_max_rounds))


def _percentiles(nanoseconds: Sequence[int], prefix: str) -> Dict[str, float]:
    values = np.percentile(np.asarray(nanoseconds, dtype=float) * 1e-9, PERCENTILES)
    return {f"{prefix}time_p{p}": float(v) for p, v in zip(PERCENTILES, values)}


def measure_pair(fused: Callable[[], object], anchor: Callable[[], object], profile: Profile,
                 clock: Callable[[], int] = time.perf_counter_ns) -> Dict:
    """Probe (and warm up), warm up further, then time the pair alternately.

    Returns the extra_info fields: ``rounds``, ``time_p20/p50/p80`` (tempattn, seconds per call)
    and ``anchor_time_p20/p50/p80``.
    """
    probe = alternate(fused, anchor, PROBE_ROUNDS, clock)
    rounds = pair_rounds(sum(probe.medians()) * 1e-9, profile)
    alternate(fused, anchor, max(1, int(rounds * WARM_UP_FRACTION)), clock)
    samples = alternate(fused, anchor, rounds, clock)
    return {"rounds": rounds, **_percentiles(samples.first, ""), **_percentiles(samples.second, "anchor_")}
