"""What the benchmark suites measure: profiles (T grids), cases, providers, FLOP counts.

A *case* is one (op variant, provider, mode, shape, device). Providers are the
anchors a user would pick instead of tempattn, and tempattn with each backend:

- ``naive``: eager PyTorch materialising the T x T scores, bias and mask;
- ``sdpa_dense``: ``F.scaled_dot_product_attention`` with a dense bool mask or float bias;
- ``flex``: ``flex_attention`` under ``torch.compile`` with the same score_mod + block_mask;
- ``sdpa_causal``: plain causal SDPA without bias or padding, the floor (masked_sdpa suite only);
- ``tempattn_<backend>``: the operator on that backend.
"""
import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch

import tempattn

PROFILE_ENV = "TEMPATTN_BENCH_PROFILE"
MODES = ("fwd", "fwd+bwd")
BACKWARD_FLOP_FACTOR = 2.5
HEADLINE_T = 4096
ANCHORS = ("naive", "sdpa_dense", "flex")
FLOOR = "sdpa_causal"
DENSE_PROVIDERS = ("naive", "sdpa_dense", "tempattn_reference")
PROVIDER_ORDER = (*ANCHORS, FLOOR) + tuple(f"tempattn_{b}" for b in tempattn._dispatch.BACKENDS)
FUSED_BACKENDS = {"cpu": ("cpu",), "cuda": ("cuda", "triton")}
DEVICE_BACKENDS = {"cpu": ("reference", "cpu"), "cuda": ("triton", "cuda")}
PADDED_FRACTION = 0.1
# Peak fp32 elements a dense provider (naive, sdpa_dense, reference) holds per B*H*T*T score,
# rounded up from tempattn.bench.memory at T=1024 (at most 3.9 fwd and 6.5 fwd+bwd, plus the
# S*H*T*T decay terms); used to skip shapes that would not fit instead of crashing the run.
DENSE_ELEMENTS_PER_SCORE = {"fwd": 4.0, "fwd+bwd": 8.0}


@dataclasses.dataclass(frozen=True)
class Profile:
    """A benchmark size: the T grid and how long each case is measured.

    ``latency_*``: the per-call latency pairs (:mod:`tempattn.bench.latency`) are timed alternately
    for rounds filling ``latency_seconds`` (both sides together), within [min, max] rounds.
    """
    name: str
    T_grid: Tuple[int, ...]
    B: int = 2
    H: int = 4
    D: int = 64
    seconds_per_case: float = 1.5
    min_rounds: int = 2
    max_rounds: int = 15
    reference_max_T: int = 1024
    matmul_n: int = 2048
    latency_seconds: float = 2.0
    latency_min_rounds: int = 50
    latency_max_rounds: int = 4000


PROFILES = {
    "tiny": Profile("tiny", (128,), H=2, D=16, seconds_per_case=0.0, min_rounds=1, max_rounds=1,
                    reference_max_T=128, matmul_n=256, latency_seconds=0.0, latency_min_rounds=2,
                    latency_max_rounds=2),
    "quick": Profile("quick", (1024, 2048, HEADLINE_T)),
    "full": Profile("full", (1024, 2048, HEADLINE_T, 8192, 16384), seconds_per_case=5.0, min_rounds=5,
                    max_rounds=30, reference_max_T=2048, latency_seconds=5.0, latency_min_rounds=200,
                    latency_max_rounds=10000),
}


def active_profile(benchmark_disabled: bool) -> Profile:
    """``tiny`` when pytest-benchmark is disabled (CI runs each case once), else ``$TEMPATTN_BENCH_PROFILE``."""
    if benchmark_disabled:
        return PROFILES["tiny"]
    name = os.environ.get(PROFILE_ENV, "quick")
    if name not in PROFILES:
        raise ValueError(f"{PROFILE_ENV} must be one of {sorted(PROFILES)}, got {name!r}")
    return PROFILES[name]


def bench_devices() -> List[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@dataclasses.dataclass(frozen=True)
class Variant:
    """An op configuration: window W, number of decay scales S, padded keys (masked_sdpa)."""
    W: Optional[int] = None
    S: Optional[int] = None
    padded: bool = False


@dataclasses.dataclass(frozen=True)
class Case:
    op: str
    provider: str
    mode: str
    device: str
    B: int
    H: int
    T: int
    D: int
    W: Optional[int] = None
    S: Optional[int] = None
    padded: bool = False
    dtype: str = "float32"

    @property
    def id(self) -> str:
        variant = "".join(f"-{k}{v}" for k, v in (("W", self.W), ("S", self.S)) if v is not None)
        return f"{self.op}{variant}-{self.provider}-{self.mode}-T{self.T}-{self.device}"

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def backend(self) -> Optional[str]:
        """The tempattn backend of a ``tempattn_<backend>`` provider, else None."""
        prefix = "tempattn_"
        return self.provider[len(prefix):] if self.provider.startswith(prefix) else None

    def info(self) -> Dict:
        """The fields every result row carries (pytest-benchmark ``extra_info``)."""
        return {**dataclasses.asdict(self), "flops": flops(self)}


def needs_warm_up(case: Case) -> bool:
    """Cases whose first call compiles or autotunes (the CUDA ones also create their context)."""
    return case.device == "cuda" or case.provider in ("flex", "tempattn_triton")


def provider_order(provider: str) -> int:
    """Anchors, then the floor, then tempattn backends: the column order of the report."""
    return PROVIDER_ORDER.index(provider) if provider in PROVIDER_ORDER else len(PROVIDER_ORDER)


def providers(device: str, with_floor: bool) -> List[str]:
    floor = [FLOOR] if with_floor else []
    return list(ANCHORS) + floor + [f"tempattn_{b}" for b in DEVICE_BACKENDS[device]]


def op_cases(op: str, variants: Sequence[Variant], with_floor: bool, profile: Profile,
             devices: Sequence[str]) -> List[Case]:
    """Every (variant, provider, mode, T, device) of one op for this profile."""
    return [Case(op=op, provider=provider, mode=mode, device=device, B=profile.B, H=profile.H, T=T, D=profile.D,
                 W=variant.W, S=variant.S, padded=variant.padded)
            for device in devices for variant in variants for T in profile.T_grid
            for provider in providers(device, with_floor) for mode in MODES]


def matmul_case(profile: Profile, device: str) -> Case:
    """The fp32 N x N matmul that measures the machine's ceiling (T carries N)."""
    n = profile.matmul_n
    return Case(op="matmul", provider="torch", mode="fwd", device=device, B=1, H=1, T=n, D=n)


def key_valid_mask(case: Case, device=None) -> Optional[torch.Tensor]:
    """(B, T) bool, True = attended: the last 10% of keys are padding in every odd batch row."""
    if not case.padded or case.provider == FLOOR:
        return None
    valid = torch.ones(case.B, case.T, dtype=torch.bool, device=device)
    n_pad = int(round(case.T * PADDED_FRACTION))
    if n_pad:
        valid[1::2, case.T - n_pad:] = False
    return valid


def admissible_pairs(case: Case) -> int:
    """Number of (b, h, i, j) with key j valid and 0 <= i - j (<= W): the work a fused kernel must do."""
    window = None if case.provider == FLOOR else case.W
    valid = key_valid_mask(case)
    valid = torch.ones(case.B, case.T, dtype=torch.bool) if valid is None else valid
    prefix = torch.nn.functional.pad(valid.to(torch.int64).cumsum(dim=1), (1, 0))  # prefix[:, j] = #valid < j
    rows = torch.arange(case.T)
    first = torch.zeros_like(rows) if window is None else (rows - window).clamp_min(0)
    per_row = prefix[:, rows + 1] - prefix[:, first]
    return int(per_row.sum()) * case.H


def flops(case: Case) -> float:
    """4*D FLOPs per admissible pair forward, 2.5x that backward; 2*N^3 for the matmul ceiling."""
    if case.op == "matmul":
        return 2.0 * case.T ** 3
    forward = 4.0 * case.D * admissible_pairs(case)
    return forward * (1.0 + BACKWARD_FLOP_FACTOR) if case.mode == "fwd+bwd" else forward


def dense_bytes_estimate(case: Case) -> int:
    """Rough peak of a provider that materialises (B, H, T, T) scores (plus S decay terms)."""
    scores = case.B * case.H * case.T ** 2
    terms = (case.S or 0) * case.H * case.T ** 2
    return int((DENSE_ELEMENTS_PER_SCORE[case.mode] * scores + terms) * 4)


def unsupported_reason(case: Case, profile: Profile, available_bytes: int) -> Optional[str]:
    """Why this case cannot be measured here (recorded as unsupported), or None."""
    backend = case.backend
    if backend is not None:
        status = tempattn.backends()[backend]
        if not status["available"]:
            return f"backend {backend!r} unavailable: {status['reason']}"
    if backend == "reference" and case.T > profile.reference_max_T:
        return f"the reference backend is O(T^2); measured only up to T={profile.reference_max_T}"
    if case.provider == "flex" and case.mode == "fwd+bwd" and case.device == "cpu":
        return "flex_attention has no CPU backward (NotImplementedError in torch)"
    if case.provider in DENSE_PROVIDERS and dense_bytes_estimate(case) > available_bytes:
        return (f"out of memory: needs ~{dense_bytes_estimate(case) / 2**30:.1f} GiB for dense T x T tensors, "
                f"{available_bytes / 2**30:.1f} GiB available")
    return None
