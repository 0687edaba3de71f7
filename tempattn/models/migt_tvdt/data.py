"""Series, forecast windows, a seasonal VAR(1) with known conditional quantiles, and the index data.

A :class:`Series` is one multivariate time series on real timestamps: ``values (N, V)`` float32
(NaN where a step is missing), ``timestamps (N,)`` int64 epoch seconds and ``valid (N,)`` bool.
:func:`make_windows` cuts forecast windows from it: the context ends at an *origin* step, the
targets are the ``horizon`` steps after it. A context never contains a step after its origin,
and a step before the start of the series or a missing step is padding
(``key_padding_mask`` True = ignore).

:func:`contiguous_split` places train, validation and test origins in three consecutive blocks
of the series such that every target of a window lies in its own block: no validation or test
target is ever a training target (a context may reach back into an earlier block — that past is
known at forecast time).

Datasets (:data:`DATASETS`):

- ``"sp500_nasdaq"``: S&P 500 and NASDAQ Composite daily prices 1999–2018 (5031 trading days,
  weekends and holidays are real gaps between timestamps) from the ``arch==8.0.0`` wheel. Four
  variables: each index's daily log return in percent and its log volume. Two NASDAQ days report
  volume 0 (a data error); those steps are marked missing. Values are standardised with the mean
  and standard deviation of the training block only.
- ``"synthetic"``: :class:`SeasonalVAR` simulated on business days, with known noise.
"""
import dataclasses
import datetime
import gzip
import math
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ...data import DataUnavailable, Package, extract_members
from ...nn import calendar_fields

__all__ = ["DATASETS", "Series", "Windows", "ForecastData", "SeasonalVAR", "make_windows", "contiguous_split",
           "standardise", "load_dataset", "load_sp500_nasdaq"]

DATASETS = ("sp500_nasdaq", "synthetic")
SECONDS_PER_DAY = 86400
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()

# The wheel pip picks for CPython 3.11 on manylinux x86_64 (arch ships platform wheels only).
_ARCH = Package("arch", "8.0.0", "wheel", "975ec3bdf7926335742ac362251fafe32b448b8f194dead062f22a00beef772d")
_INDEX_FILES = ("arch/data/sp500/sp500.csv.gz", "arch/data/nasdaq/nasdaq.csv.gz")


@dataclasses.dataclass(frozen=True)
class Series:
    """values ``(N, V)`` float32 (NaN where missing), timestamps ``(N,)`` int64 epoch seconds, valid ``(N,)`` bool."""
    values: Tensor
    timestamps: Tensor
    valid: Tensor
    names: Tuple[str, ...]

    def __len__(self) -> int:
        return self.values.shape[0]


@dataclasses.dataclass(frozen=True)
class Windows:
    """A batch of forecast windows.

    x ``(B, T, V)`` context values (NaN at padding), timestamps ``(B, T)`` int64 (0 before the
    series start), key_padding_mask ``(B, T)`` bool (True = padding, ignored), targets
    ``(B, H, V)`` the values at origin + 1..H (NaN where missing), target_mask ``(B, H)`` bool
    (True = observed, scored), origins ``(B,)`` the origin step of each window in the series.
    """
    x: Tensor
    timestamps: Tensor
    key_padding_mask: Tensor
    targets: Tensor
    target_mask: Tensor
    origins: Tensor

    def to(self, device) -> "Windows":
        return Windows(*(getattr(self, field.name).to(device) for field in dataclasses.fields(self)))


def make_windows(series: Series, origins: Tensor, context: int, horizon: int) -> Windows:
    """Windows whose context is the ``context`` steps up to and including each origin ``(B,)``."""
    if origins.numel() and (int(origins.min()) < 0 or int(origins.max()) + horizon >= len(series)):
        raise ValueError(f"make_windows: `origins` must lie in [0, {len(series) - 1 - horizon}] so that all "
                         f"{horizon} targets exist, got range [{int(origins.min())}, {int(origins.max())}]; "
                         "hint: use contiguous_split to choose origins")
    steps = origins[:, None] + torch.arange(1 - context, 1)  # (B, T), may reach before step 0
    before_start = steps < 0
    steps = steps.clamp_min(0)
    padding = before_start | ~series.valid[steps]
    x = series.values[steps].masked_fill(padding[..., None], float("nan"))
    timestamps = series.timestamps[steps].masked_fill(before_start, 0)
    target_steps = origins[:, None] + torch.arange(1, horizon + 1)  # (B, H)
    return Windows(x, timestamps, padding, series.values[target_steps], series.valid[target_steps], origins)


def contiguous_split(series: Series, horizon: int, min_history: int,
                     fractions: Tuple[float, float] = (0.7, 0.15)) -> Dict[str, Tensor]:
    """Valid origins ``{"train", "val", "test"}`` (1-D int64) of three consecutive blocks.

    The blocks are the first ``fractions[0]``, the next ``fractions[1]`` and the rest of the
    steps. An origin belongs to a block when all its ``horizon`` targets lie inside the block
    (the origin itself may be the last step of the previous block); origins need
    ``min_history`` earlier steps.
    """
    n = len(series)
    train_end = int(n * fractions[0])
    val_end = int(n * (fractions[0] + fractions[1]))
    blocks = {"train": (0, train_end), "val": (train_end, val_end), "test": (val_end, n)}
    origins = {}
    for name, (start, end) in blocks.items():
        candidates = torch.arange(max(start - 1, min_history), end - horizon)
        origins[name] = candidates[series.valid[candidates]]
        if origins[name].numel() == 0:
            raise ValueError(f"contiguous_split: the {name} block [{start}, {end}) has no origin with "
                             f"{horizon} targets inside; hint: use a longer series or a shorter horizon")
    return origins


def standardise(series: Series, rows: int) -> Series:
    """The series with each variable shifted and scaled by the mean and std of its first ``rows`` valid steps."""
    head = series.values[:rows][series.valid[:rows]].double()
    mean, std = head.mean(0), head.std(0)
    values = ((series.values.double() - mean) / std).float()
    return dataclasses.replace(series, values=values)


@dataclasses.dataclass(frozen=True)
class ForecastData:
    """A series, its split origins, and the generating process when it is known (synthetic data)."""
    series: Series
    origins: Dict[str, Tensor]
    process: Optional["SeasonalVAR"] = None


# ---- synthetic ground truth ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SeasonalVAR:
    """A seasonal VAR(1) on business days with Gaussian noise: every conditional quantile is known.

    ``y_t = level + s(dow_t) + d_t`` with ``d_t = A d_{t-1} + eps_t``, ``eps_t ~ N(0, Sigma)``,
    ``Sigma = diag(noise_std) R diag(noise_std)`` (``R``: unit diagonal, ``noise_corr`` elsewhere),
    and the weekday profile ``s_v(dow) = amplitude_v sin(2 pi dow / 5 + phase_v)``
    (Monday = 0 .. Friday = 4). Given ``y_o``, ``y_{o+h}`` is Gaussian with mean
    ``level + s(dow_{o+h}) + A^h d_o`` and covariance ``sum_{i<h} A^i Sigma A^i^T``.
    """
    transition: Tuple[Tuple[float, ...], ...] = ((0.6, 0.3, 0.0), (0.0, 0.5, 0.3), (0.25, 0.0, 0.4))
    noise_std: Tuple[float, ...] = (1.0, 0.6, 1.5)
    noise_corr: float = 0.5
    level: Tuple[float, ...] = (0.0, 3.0, -2.0)
    amplitude: Tuple[float, ...] = (1.0, 0.5, 1.2)
    phase: Tuple[float, ...] = (0.0, 1.0, 2.0)
    missing_rate: float = 0.03

    @property
    def n_vars(self) -> int:
        return len(self.level)

    def _tensor(self, values) -> Tensor:
        return torch.tensor(values, dtype=torch.float64)

    def noise_cov(self) -> Tensor:
        std = self._tensor(self.noise_std)
        corr = torch.full((self.n_vars, self.n_vars), self.noise_corr, dtype=torch.float64)
        corr.fill_diagonal_(1.0)
        return std[:, None] * corr * std[None, :]

    def seasonal(self, timestamps: Tensor) -> Tensor:
        """``(...)`` epoch seconds on weekdays -> ``(..., V)`` the weekday profile."""
        day_of_week = calendar_fields(timestamps)[..., 1].double()
        angle = 2 * math.pi * day_of_week[..., None] / 5 + self._tensor(self.phase)
        return self._tensor(self.amplitude) * torch.sin(angle)

    def simulate(self, n_steps: int, seed: int) -> Series:
        """``n_steps`` consecutive business days from Monday 2001-01-01; missing steps hold NaN."""
        generator = torch.Generator().manual_seed(seed)
        burn_in = 100
        noise = torch.randn(burn_in + n_steps, self.n_vars, generator=generator, dtype=torch.float64)
        noise = noise @ torch.linalg.cholesky(self.noise_cov()).T
        transition = self._tensor(self.transition)
        deviation = torch.zeros(self.n_vars, dtype=torch.float64)
        deviations = []
        for eps in noise:
            deviation = transition @ deviation + eps
            deviations.append(deviation)
        step = torch.arange(n_steps)
        days = datetime.date(2001, 1, 1).toordinal() - _EPOCH_ORDINAL + 7 * (step // 5) + step % 5
        timestamps = days * SECONDS_PER_DAY
        values = self._tensor(self.level) + self.seasonal(timestamps) + torch.stack(deviations[burn_in:])
        valid = torch.rand(n_steps, generator=generator) >= self.missing_rate
        values = values.float().masked_fill(~valid[:, None], float("nan"))
        return Series(values, timestamps, valid, tuple(f"y{v}" for v in range(self.n_vars)))

    def conditional_quantiles(self, series: Series, origins: Tensor, horizon: int,
                              quantiles: Sequence[float]) -> Tensor:
        """The true quantiles ``(B, H, V, Q)`` of ``y_{o+h}`` given ``y_o`` at valid origins ``(B,)``."""
        level, transition = self._tensor(self.level), self._tensor(self.transition)
        deviation = series.values[origins].double() - level - self.seasonal(series.timestamps[origins])
        means, stds = [], []
        power = torch.eye(self.n_vars, dtype=torch.float64)  # A^(h-1)
        cov = torch.zeros_like(power)
        for h in range(1, horizon + 1):
            cov = cov + power @ self.noise_cov() @ power.T
            power = transition @ power
            future = self.seasonal(series.timestamps[origins + h])
            means.append(level + future + deviation @ power.T)
            stds.append(cov.diagonal().sqrt())
        z = torch.special.ndtri(self._tensor(list(quantiles)))
        mean, std = torch.stack(means, 1), torch.stack(stds)  # (B, H, V), (H, V)
        return (mean[..., None] + std[..., None] * z).float()


# ---- real data ----------------------------------------------------------------------------------

def _read_index(path) -> Tuple[list, Tensor, Tensor]:
    """(dates as 'M/D/YYYY' strings, close (N,) float64, volume (N,) float64) of one arch CSV."""
    rows = gzip.decompress(path.read_bytes()).decode().splitlines()
    header = rows[0].split(",")
    close, volume = header.index("Close"), header.index("Volume")
    fields = [row.split(",") for row in rows[1:]]
    return ([f[0] for f in fields], torch.tensor([float(f[close]) for f in fields], dtype=torch.float64),
            torch.tensor([float(f[volume]) for f in fields], dtype=torch.float64))


def _epoch_seconds(date: str) -> int:
    month, day, year = (int(part) for part in date.split("/"))
    return (datetime.date(year, month, day).toordinal() - _EPOCH_ORDINAL) * SECONDS_PER_DAY


def load_sp500_nasdaq() -> Series:
    """Daily log returns (percent) and log volumes of the S&P 500 and NASDAQ, 1999-01-05 .. 2018-12-31.

    Raw (unstandardised) values ``(5030, 4)``; a step with zero reported volume is missing.
    Raises :class:`DataUnavailable` when the wheel cannot be fetched or the two files disagree on dates.
    """
    (sp_dates, sp_close, sp_volume), (nq_dates, nq_close, nq_volume) = (
        _read_index(p) for p in extract_members(_ARCH, list(_INDEX_FILES)))
    if sp_dates != nq_dates:
        raise DataUnavailable("arch sp500.csv.gz and nasdaq.csv.gz list different dates; the files changed")
    returns = 100 * torch.stack([sp_close, nq_close], 1).log().diff(dim=0)
    volume = torch.stack([sp_volume, nq_volume], 1)[1:]
    valid = (volume > 0).all(1)
    values = torch.cat([returns, volume.log()], 1).float().masked_fill(~valid[:, None], float("nan"))
    timestamps = torch.tensor([_epoch_seconds(d) for d in sp_dates[1:]], dtype=torch.int64)
    names = ("sp500_return_pct", "nasdaq_return_pct", "sp500_log_volume", "nasdaq_log_volume")
    return Series(values, timestamps, valid, names)


def load_dataset(name: str, *, horizon: int, min_history: int, synthetic_steps: int = 20_000,
                 seed: int = 0) -> ForecastData:
    """``name`` in :data:`DATASETS` split into train/val/test origins (see :func:`contiguous_split`)."""
    if name == "synthetic":
        process = SeasonalVAR()
        series = process.simulate(synthetic_steps, seed)
        return ForecastData(series, contiguous_split(series, horizon, min_history), process)
    if name == "sp500_nasdaq":
        series = load_sp500_nasdaq()
        origins = contiguous_split(series, horizon, min_history)
        train_rows = int(origins["train"].max()) + horizon + 1
        return ForecastData(standardise(series, train_rows), origins)
    raise ValueError(f"load_dataset: `name` must be one of {DATASETS}, got {name!r}; "
                     "hint: 'synthetic' needs no download")
