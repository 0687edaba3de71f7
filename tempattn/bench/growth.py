"""Growth exponents: least-squares slope of log(value) against log(T), with R^2."""
import dataclasses
import math
from typing import Optional, Sequence, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class Fit:
    exponent: float
    r2: float
    n_points: int

    def __str__(self) -> str:
        return f"{self.exponent:.2f} (R²={self.r2:.3f})"


def fit_exponent(points: Sequence[Tuple[float, float]]) -> Optional[Fit]:
    """Fit value ~ c * T^exponent over (T, value) points; None with fewer than 2 positive points or one T."""
    usable = [(T, v) for T, v in points if T > 0 and v is not None and v > 0 and math.isfinite(v)]
    if len({T for T, _ in usable}) < 2:
        return None
    x = np.log([T for T, _ in usable])
    y = np.log([v for _, v in usable])
    slope, intercept = np.polyfit(x, y, 1)
    residual = float(np.sum((y - (slope * x + intercept)) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - residual / total if total > 0 else 1.0
    return Fit(float(slope), r2, len(usable))
