"""Learned encodings of time: Time2Vec and a calendar-aware composite encoding."""
import math
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from . import _heads

SECONDS_PER_DAY = 86400
CALENDAR_FIELDS = ("second_of_day", "day_of_week", "day_of_month", "day_of_year")
"""The ``(..., 4)`` fields accepted by :class:`CompositeTimeEncoding`, in this order:
second of day in ``[0, 86400)``, day of week ``0..6`` (Monday = 0), day of month ``1..31``,
day of year ``1..366``."""


class TimeEncoding(nn.Module):
    """Time2Vec: ``t (...) -> (..., dim)``, one linear channel and ``dim - 1`` sine channels.

    ``out[..., 0] = w_0 t + b_0`` and ``out[..., i] = sin(w_i t + b_i)`` for ``i >= 1``, with
    learned ``weight, bias (dim,)``, initialised ``N(0, 1)`` and ``U(-pi, pi)``. Scale ``t``
    to order one (e.g. days, or a fraction of a period) before encoding.
    """

    def __init__(self, dim: int, *, device=None, dtype=None) -> None:
        super().__init__()
        _heads.check_positive_int("TimeEncoding", "dim", dim, "dim=1 keeps only the linear channel")
        self.dim = dim
        self.weight = nn.Parameter(torch.empty(dim, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)
        nn.init.uniform_(self.bias, -math.pi, math.pi)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def forward(self, t: Tensor) -> Tensor:
        """t: ``(...)`` float times. Returns ``(..., dim)`` in the parameters' dtype."""
        if not isinstance(t, Tensor) or t.dtype.is_complex or t.dtype == torch.bool:
            _heads.fail("TimeEncoding", "t", "a real tensor of times (...)", _heads.describe(t),
                        "convert it with torch.as_tensor", TypeError)
        phase = t.to(self.weight.dtype).unsqueeze(-1) * self.weight + self.bias
        return torch.cat([phase[..., :1], torch.sin(phase[..., 1:])], dim=-1)


def calendar_fields(seconds: Tensor) -> Tensor:
    """UTC calendar fields ``(..., 4)`` (see ``CALENDAR_FIELDS``) of seconds since the Unix epoch ``(...)``.

    Integer seconds are exact; float seconds are floored in float64. Dates follow the proleptic
    Gregorian calendar (H. Hinnant's ``civil_from_days``).
    """
    seconds = seconds.to(torch.float64).floor().to(torch.int64) if seconds.is_floating_point() else seconds.long()
    days = torch.div(seconds, SECONDS_PER_DAY, rounding_mode="floor")
    second_of_day = seconds - days * SECONDS_PER_DAY
    day_of_week = (days + 3) % 7  # 1970-01-01 was a Thursday
    year, month, day = _civil_from_days(days)
    day_of_year = days - _days_from_civil_jan1(year) + 1
    return torch.stack([second_of_day, day_of_week, day, day_of_year], dim=-1)


def _floor_div(a: Tensor, b: int) -> Tensor:
    return torch.div(a, b, rounding_mode="floor")


def _civil_from_days(days: Tensor):
    """(year, month 1..12, day 1..31) of days since 1970-01-01."""
    z = days + 719468
    era = _floor_div(z, 146097)
    day_of_era = z - era * 146097
    year_of_era = _floor_div(day_of_era - _floor_div(day_of_era, 1460) + _floor_div(day_of_era, 36524)
                             - _floor_div(day_of_era, 146096), 365)
    day_of_march_year = day_of_era - (365 * year_of_era + _floor_div(year_of_era, 4) - _floor_div(year_of_era, 100))
    month_from_march = _floor_div(5 * day_of_march_year + 2, 153)
    day = day_of_march_year - _floor_div(153 * month_from_march + 2, 5) + 1
    month = torch.where(month_from_march < 10, month_from_march + 3, month_from_march - 9)
    year = year_of_era + era * 400 + (month <= 2).long()
    return year, month, day


def _days_from_civil_jan1(year: Tensor) -> Tensor:
    """Days since 1970-01-01 of January 1st of ``year``."""
    y = year - 1  # January counts in the previous March-based year
    era = _floor_div(y, 400)
    year_of_era = y - era * 400
    day_of_era = 365 * year_of_era + _floor_div(year_of_era, 4) - _floor_div(year_of_era, 100) + 306
    return era * 146097 + day_of_era - 719468


class CompositeTimeEncoding(nn.Module):
    """Calendar encoding of timestamps, projected to ``d_model``.

    Features: time of day as Fourier features ``sin(k phi), cos(k phi)`` for the integer
    harmonics ``k = 1..n_harmonics`` (``phi = 2 pi second_of_day / 86400``); a learned
    day-of-week embedding ``(7, dow_dim)``; Time2Vec of day of month (``(day - 1) / 31``) and
    of day of year (``(day - 1) / 366``). A linear layer maps their concatenation to ``d_model``.

    Args:
        d_model: output width. n_harmonics, dow_dim, dom_dim, doy_dim: feature sizes.

    Input (exactly one): ``seconds (...)`` since the Unix epoch, UTC (int64 or float64 for
    exactness; float32 cannot resolve seconds at current dates), or ``fields (..., 4)`` as
    listed in ``CALENDAR_FIELDS`` (for local time, or data that is already split).
    Output ``(..., d_model)``.
    """

    def __init__(self, d_model: int, *, n_harmonics: int = 4, dow_dim: int = 4, dom_dim: int = 4,
                 doy_dim: int = 4, device=None, dtype=None) -> None:
        super().__init__()
        layer = type(self).__name__
        for name, value in (("d_model", d_model), ("n_harmonics", n_harmonics), ("dow_dim", dow_dim),
                            ("dom_dim", dom_dim), ("doy_dim", doy_dim)):
            _heads.check_positive_int(layer, name, value, "every feature group needs at least one channel")
        factory = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.n_harmonics = n_harmonics
        harmonics = torch.arange(1, n_harmonics + 1, device=device, dtype=dtype or torch.get_default_dtype())
        self.register_buffer("harmonics", harmonics, persistent=False)
        self.day_of_week = nn.Embedding(7, dow_dim, **factory)
        self.day_of_month = TimeEncoding(dom_dim, **factory)
        self.day_of_year = TimeEncoding(doy_dim, **factory)
        self.proj = nn.Linear(2 * n_harmonics + dow_dim + dom_dim + doy_dim, d_model, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in (self.day_of_week, self.day_of_month, self.day_of_year, self.proj):
            module.reset_parameters()

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_harmonics={self.n_harmonics}"

    def forward(self, seconds: Optional[Tensor] = None, *, fields: Optional[Tensor] = None) -> Tensor:
        """seconds: ``(...)`` since the epoch, or fields: ``(..., 4)``. Returns ``(..., d_model)``."""
        layer = type(self).__name__
        if (seconds is None) == (fields is None):
            _heads.fail(layer, "seconds/fields", "exactly one given", "both" if seconds is not None else "neither",
                        "pass epoch seconds positionally, or fields=(..., 4)")
        if fields is None:
            if not isinstance(seconds, Tensor):
                _heads.fail(layer, "seconds", "a tensor of epoch seconds (...)", _heads.describe(seconds),
                            "convert it with torch.as_tensor(..., dtype=torch.int64)", TypeError)
            fields = calendar_fields(seconds)
        elif not isinstance(fields, Tensor) or fields.dim() < 1 or fields.shape[-1] != len(CALENDAR_FIELDS):
            _heads.fail(layer, "fields", f"a tensor (..., {len(CALENDAR_FIELDS)}) of {CALENDAR_FIELDS}",
                        _heads.describe(fields), "or pass epoch seconds instead")
        return self.proj(self._features(fields))

    def _features(self, fields: Tensor) -> Tensor:
        dtype = self.proj.weight.dtype
        phase = (2 * math.pi / SECONDS_PER_DAY) * fields[..., 0:1].to(dtype) * self.harmonics
        return torch.cat([
            torch.sin(phase), torch.cos(phase),
            self.day_of_week(fields[..., 1].long()),
            self.day_of_month((fields[..., 2].to(dtype) - 1) / 31),
            self.day_of_year((fields[..., 3].to(dtype) - 1) / 366),
        ], dim=-1)
