"""Confidence intervals over seeds (Student t), for the report. Pure functions of numbers.

- ``mean_ci``: mean ± t_{0.975, n-1} · s / sqrt(n), s the sample standard deviation (n - 1): the
  interval of the mean.
- ``run_spread``: 1.96 · s, the spread of single runs that P3's "±" is (its ``整合.py``:
  ``bias = 1.96 * s``; methods.md §1.3). Printed beside a paper's "±", never as an interval of the
  mean: for 5 runs the t-interval of the mean is 2.776 / sqrt(5) = 1.24 · s, 37 % narrower.
- ``diff_ci``: the difference of two variants' means. Paired over seeds when both ran the same
  seeds (the same seed gives the same initial weights, data order and split, so per-seed
  differences remove that shared noise): mean of d_i ± t_{0.975, n-1} · s_d / sqrt(n). Otherwise
  Welch's interval with the Welch–Satterthwaite degrees of freedom.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class Interval:
    """A mean and the half-width of its interval, over ``n`` values."""

    mean: float
    half: float  # half-width of the interval; NaN with fewer than two values
    n: int
    sd: float = math.nan
    method: str = ""  # "t", "paired t", "Welch t"

    @property
    def low(self) -> float:
        """The interval's lower end."""
        return self.mean - self.half

    @property
    def high(self) -> float:
        """The interval's upper end."""
        return self.mean + self.half

    def excludes_zero(self) -> bool:
        """True when the interval is finite and lies wholly above or below 0."""
        return math.isfinite(self.half) and (self.low > 0 or self.high < 0)


def t_quantile(df: float, level: float = 0.95) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return mean, sd


def mean_ci(values: Sequence[float], level: float = 0.95) -> Interval:
    """The mean of ``values`` with its Student t interval (half-width NaN for a single value)."""
    if not values:
        raise ValueError("mean_ci of no values")
    n = len(values)
    mean, sd = _mean_sd(values)
    half = t_quantile(n - 1, level) * sd / math.sqrt(n) if n > 1 else math.nan
    return Interval(mean, half, n, sd, "t")


def run_spread(values: Sequence[float], z: float = 1.96) -> float:
    """``z`` times the sample standard deviation (n - 1) of ``values``: the quantity behind P3's
    "mean ± 1.96 s" (NaN for fewer than two values)."""
    if len(values) < 2:
        return math.nan
    return z * _mean_sd(values)[1]


def diff_ci(a: dict[int, float], b: dict[int, float], level: float = 0.95) -> Optional[Interval]:
    """Interval for mean(a) - mean(b); ``a`` and ``b`` map seed -> value. None without values."""
    if not a or not b:
        return None
    if a.keys() == b.keys() and len(a) > 1:
        d = mean_ci([a[s] - b[s] for s in sorted(a)], level)
        return Interval(d.mean, d.half, d.n, d.sd, "paired t")
    ma, sa = _mean_sd(list(a.values()))
    mb, sb = _mean_sd(list(b.values()))
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return Interval(ma - mb, math.nan, min(na, nb), math.nan, "Welch t")
    va, vb = sa ** 2 / na, sb ** 2 / nb
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(ma - mb, 0.0, min(na, nb), 0.0, "Welch t")
    df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    return Interval(ma - mb, t_quantile(df, level) * se, min(na, nb), se, "Welch t")
