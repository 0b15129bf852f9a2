"""Group-sequential boundaries for a two-sided test looked at after each batch of seeds: the
Lan-DeMets O'Brien-Fleming-type alpha-spending function, the z boundaries it gives over planned
looks (the Armitage-McPherson-Rowe recursion), and their translation to paired-t boundaries.

- :func:`side_spent`: the alpha one side has spent by information fraction ``t``,
  ``2 - 2 Phi(z_{1 - a/2} / sqrt t)`` with ``a = alpha / 2`` (Lan & DeMets 1983, the O'Brien-Fleming
  type; each side of the symmetric two-sided test spends half of alpha, as gsDesign's ``sfLDOF``
  and ldbounds do). Two-sided alpha spent by ``t`` is twice that, and exactly alpha at ``t = 1``.
- :func:`z_bounds`: the symmetric boundaries ``c_k`` such that a standard Brownian motion observed
  at the fractions ``t_1 < ... < t_K`` first leaves ``|Z_k| < c_k`` at look ``k`` with probability
  ``2 (side_spent(t_k) - side_spent(t_{k-1}))``. The joint density of the score ``Z_k sqrt(t_k)``
  over the continuation region is carried from look to look on a Simpson grid (Armitage, McPherson
  & Rowe 1969; Jennison & Turnbull 2000, ch. 19). Deterministic (no Monte Carlo), cached.
- :func:`t_bounds`: the same nominal two-sided significance level at each look, read off Student's
  t with ``n_k - 1`` degrees of freedom (Jennison & Turnbull 2000, section 3.8; Pocock 1977). This
  is the approximate part: with sigma estimated the looks' t statistics are not exactly the normal
  canonical process, so the error rate is close to, not exactly, alpha (measured in
  benchmarks/sequential.py).

References: Lan K.K.G., DeMets D.L. (1983) Discrete sequential boundaries for clinical trials,
Biometrika 70:659-663. O'Brien P.C., Fleming T.R. (1979) A multiple testing procedure for clinical
trials, Biometrics 35:549-556. Armitage P., McPherson C.K., Rowe B.C. (1969) Repeated significance
tests on accumulating data, JRSS A 132:235-244. Jennison C., Turnbull B.W. (2000) Group Sequential
Methods with Applications to Clinical Trials, Chapman & Hall. Pocock S.J. (1977) Group sequential
methods in the design and analysis of clinical trials, Biometrika 64:191-199.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import optimize, stats

GRID = 401  # Simpson points over each look's continuation region (odd)
_WIDE = 10.0  # a look that spends nothing (c = inf) still carries the density over |Z| < 10


def side_spent(alpha: float, t: np.ndarray | float) -> np.ndarray:
    """Alpha one side of the two-sided test has spent by information fraction ``t`` in (0, 1]."""
    t = np.asarray(t, dtype=float)
    z = stats.norm.isf(alpha / 4)  # z_{1 - a/2} with a = alpha / 2, the one side's share
    return 2 * stats.norm.sf(z / np.sqrt(t))


def _simpson(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(lo, hi, GRID)
    w = np.ones(GRID)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return x, w * (x[1] - x[0]) / 3


def _exit_mass(c: float, t: float, x: np.ndarray, mass: np.ndarray, step: float) -> float:
    """P(|Z| >= c at fraction t and no earlier exit), from the carried density ``mass`` (weights in)."""
    b, s = c * np.sqrt(t), np.sqrt(step)
    return float(mass @ (stats.norm.cdf((-b - x) / s) + stats.norm.sf((b - x) / s)))


@lru_cache(maxsize=512)
def z_bounds(alpha: float, fractions: tuple[float, ...]) -> tuple[float, ...]:
    """Two-sided symmetric z boundaries at the information fractions (increasing, the last 1)."""
    spent = 2 * side_spent(alpha, np.array(fractions))
    bounds: list[float] = []
    x = mass = None
    before, t0 = 0.0, 0.0
    for t, total in zip(fractions, spent):
        want = float(total - before)
        if x is None:
            c = float(stats.norm.isf(want / 2)) if want > 0 else np.inf
        elif want <= 0:
            c = np.inf  # nothing to spend at this look
        else:
            c = optimize.brentq(lambda c: _exit_mass(c, t, x, mass, t - t0) - want, 0.0, 60.0, xtol=1e-12)
        b = min(c, _WIDE) * np.sqrt(t)
        grid, w = _simpson(-b, b)
        if x is None:
            dens = stats.norm.pdf(grid / np.sqrt(t)) / np.sqrt(t)
        else:
            s = np.sqrt(t - t0)
            dens = (stats.norm.pdf((grid[:, None] - x[None, :]) / s) / s) @ mass
        x, mass, before, t0 = grid, dens * w, before + want, t
        bounds.append(c)
    return tuple(bounds)


def fractions_of(looks: tuple[int, ...]) -> tuple[float, ...]:
    """Information fractions of the looks (seeds at each look over the last look's)."""
    return tuple(n / looks[-1] for n in looks)


@lru_cache(maxsize=512)
def t_bounds(alpha: float, looks: tuple[int, ...]) -> np.ndarray:
    """Paired-t boundaries at the looks (seeds ``n_k``, ``n_k - 1`` degrees of freedom): the z
    boundaries' nominal two-sided levels read off Student's t; ``inf`` where a look spends nothing."""
    z = np.array(z_bounds(float(alpha), fractions_of(looks)))
    nominal = 2 * stats.norm.sf(z)
    out = stats.t.isf(nominal / 2, np.array(looks) - 1)
    out = np.where(nominal > 0, out, np.inf)
    out.setflags(write=False)
    return out
