"""Seeds until decided: the decision rule for paired-by-seed comparisons looked at after each batch
of seeds. Each comparison ``(variant, reference)`` is decided **better**, **worse**, **equivalent**
within +-delta, or left **open**, from the paired differences ``variant - reference`` per seed.

The test: a group-sequential paired t-test with Lan-DeMets O'Brien-Fleming-type alpha spending over
the planned looks (``min_seeds``, then every ``batch`` seeds, then ``max_seeds``), read as repeated
confidence intervals (RCI, Jennison & Turnbull 1989): at look ``k`` with ``n_k`` seeds,
``mean +- b_k(a) * sd / sqrt(n_k)`` where ``b_k(a)`` is the paired-t boundary of
:mod:`raypair.experiments.spending` at two-sided level ``a``. RCIs hold the true difference at every
look simultaneously with probability >= 1 - a, so a claim read off any look stays valid however the
looks are used to stop (optional stopping within the plan).

- better / worse: the RCI at the comparison's level excludes 0 at some look (two-sided test of
  "no difference"; the sign is the first crossing's);
- equivalent: at some look the RCI at twice the level lies inside (-delta, +delta): two one-sided
  tests at the level each (Schuirmann 1987's TOST, run group-sequentially);
- a comparison with both claims is reported better / worse; neither: open.

Why this design: O'Brien-Fleming-type spending keeps the last look's boundary close to the fixed
design's (little power lost at ``max_seeds``) while stopping early when an effect is large; its
boundaries are fixed by the plan alone, so decisions are a pure function of the stored results and a
resumed driver re-decides identically. An anytime-valid confidence sequence (Howard et al. 2021)
would allow unplanned looks but is wider at the handful of seeds an ablation can afford.

Multiplicity: Holm's step-down across the comparisons of one file, run group-sequentially (Ye, Li,
Liu & Yao 2013; Maurer & Bretz 2013): start every comparison at ``alpha / m``; each rejection passes
its alpha on, and the rest are re-checked over all their looks at ``alpha / (m - r)``. It is run
separately for the difference claims (false "better"/"worse": family-wise rate <= alpha, the A/A
guarantee) and for the equivalence claims (false "equivalent": family-wise rate <= alpha).

Approximate: sigma is estimated, so the boundaries are the normal design's nominal levels read off
t with ``n_k - 1`` degrees of freedom (Jennison & Turnbull 2000, section 3.8), not exact sequential-t
boundaries; the measured error rates are in benchmarks/sequential.py. Looks at seeds off the plan
are not used (the data wait for the next planned look).

References: Jennison C., Turnbull B.W. (1989) Interim analyses: the repeated confidence interval
approach, JRSS B 51:305-361. Holm S. (1979) A simple sequentially rejective multiple test procedure,
Scand. J. Statist. 6:65-70. Ye Y., Li A., Liu L., Yao B. (2013) A group sequential Holm procedure
with multiple primary endpoints, Stat. Med. 32:1112-1124. Maurer W., Bretz F. (2013) Multiple
testing in group sequential trials using graphical approaches, Stat. Biopharm. Res. 5:311-320.
Schuirmann D.J. (1987) A comparison of the two one-sided tests procedure and the power approach for
assessing the equivalence of average bioavailability, J. Pharmacokinet. Biopharm. 15:657-680.
Howard S.R., Ramdas A., McAuliffe J., Sekhon J. (2021) Time-uniform, nonparametric, nonasymptotic
confidence sequences, Ann. Statist. 49:1055-1080. Lan & DeMets 1983: see spending.py.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from raypair.config import ConfigError
from raypair.experiments.seqconfig import SequentialConfig, comparison_name
from raypair.experiments.spending import t_bounds

STATES = ("better", "worse", "equivalent", "open")


@dataclass(frozen=True)
class Decision:
    """One comparison's state, its estimate and interval at ``look`` (1-based; 0: no look yet), with
    ``n`` seeds. ``low``/``high``: the RCI the claim was read from (open: at the current Holm level),
    at two-sided level ``level`` (coverage 1 - level over all looks)."""
    state: str
    estimate: float
    low: float
    high: float
    n: int
    look: int
    level: float = float("nan")


@dataclass(frozen=True)
class _Looks:
    n: np.ndarray  # seeds at each look reached
    mean: np.ndarray
    se: np.ndarray


def _looks_of(diffs: np.ndarray, plan: tuple[int, ...]) -> _Looks:
    n = np.array([k for k in plan if k <= diffs.size], dtype=int)
    mean = np.array([diffs[:k].mean() for k in n])
    sd = np.array([diffs[:k].std(ddof=1) for k in n])  # two-pass per look: no cancellation
    return _Looks(n, mean, sd / np.sqrt(n))


def _half(looks: _Looks, level: float, plan: tuple[int, ...]) -> np.ndarray:
    b = t_bounds(float(level), plan)[: looks.n.size]
    return np.where(np.isinf(b), np.inf, b * looks.se)


def _first_difference(looks: _Looks, level: float, plan: tuple[int, ...]) -> int | None:
    half = _half(looks, level, plan)
    hit = np.flatnonzero(np.abs(looks.mean) > half)
    return int(hit[0]) if hit.size else None


def _first_equivalence(looks: _Looks, level: float, plan: tuple[int, ...], delta: float) -> int | None:
    half = _half(looks, 2 * level, plan)
    hit = np.flatnonzero((looks.mean - half > -delta) & (looks.mean + half < delta))
    return int(hit[0]) if hit.size else None


def holm(first: Callable[[str, float], int | None], names: Sequence[str], alpha: float) -> dict[str, tuple[float, int]]:
    """Holm's step-down over ``names``: ``first(name, level)`` gives the first look whose claim holds
    at ``level`` (None: none). Returns the rejected names with their level and that look."""
    out: dict[str, tuple[float, int]] = {}
    while len(out) < len(names):
        level = alpha / (len(names) - len(out))
        new = {k: look for k in names if k not in out and (look := first(k, level)) is not None}
        if not new:
            break
        out.update({k: (level, look) for k, look in new.items()})
    return out


def _paired(diffs_by_comparison: Mapping[str, Sequence[float]], cfg: SequentialConfig) -> dict[str, np.ndarray]:
    names = [comparison_name(a, b) for a, b in cfg.comparisons]
    if unknown := sorted(set(diffs_by_comparison) - set(names)):
        raise ConfigError("sequential.comparisons", f"no comparison named {unknown[0]!r}; known: {names}",
                          unknown[0])
    out = {}
    for name in names:
        d = np.asarray(diffs_by_comparison.get(name, ()), dtype=float).ravel()[: cfg.max_seeds]
        if not np.isfinite(d).all():
            raise ConfigError(f"sequential.diffs.{name}", "a paired difference is not a finite number",
                              d.tolist())
        out[name] = d
    return out


def decide(diffs_by_comparison: Mapping[str, Sequence[float]], cfg: SequentialConfig) -> dict[str, Decision]:
    """Each comparison's :class:`Decision` from its paired differences (variant - reference) in seed
    order (:func:`paired_differences`); differences past ``max_seeds`` are not used. Pure and
    deterministic: the same stored results always give the same decisions."""
    plan, m = cfg.looks, len(cfg.comparisons)
    looks = {k: _looks_of(d, plan) for k, d in _paired(diffs_by_comparison, cfg).items()}
    diff = holm(lambda k, a: _first_difference(looks[k], a, plan), list(looks), cfg.alpha)
    equi = holm(lambda k, a: _first_equivalence(looks[k], a, plan, cfg.delta), list(looks), cfg.alpha)
    rest = cfg.alpha / max(m - len(diff), 1)
    out = {}
    for k, lk in looks.items():
        if k in diff:
            level, i = diff[k]
            state = "better" if lk.mean[i] > 0 else "worse"
        elif k in equi:
            (level, i), state = equi[k], "equivalent"
            level *= 2
        elif lk.n.size:
            level, i, state = rest, lk.n.size - 1, "open"
        else:
            out[k] = Decision("open", float("nan"), -np.inf, np.inf, 0, 0, rest)
            continue
        half = float(_half(lk, level, plan)[i])
        mean = float(lk.mean[i])
        out[k] = Decision(state, mean, mean - half, mean + half, int(lk.n[i]), i + 1, level)
    return out


def paired_differences(finals: Mapping[str, Mapping[int, float]], cfg: SequentialConfig) -> dict[str, list[float]]:
    """Each comparison's ``variant - reference`` over the seeds both arms finished, in seed order
    (``finals``: variant -> seed -> final metric); a seed only one arm has is not used."""
    out = {}
    for a, b in cfg.comparisons:
        va, vb = finals.get(a, {}), finals.get(b, {})
        out[comparison_name(a, b)] = [float(va[s]) - float(vb[s]) for s in sorted(set(va) & set(vb))]
    return out


def next_seeds(decisions: Mapping[str, Decision], have: Mapping[str, int], cfg: SequentialConfig) -> dict[str, int]:
    """How many more seeds each variant needs (only variants in an open comparison): up to the next
    planned look above the comparison's paired seeds, never beyond ``max_seeds``. ``have``: the seeds
    each variant has run, in the same seed order for every variant (seed i pairs with seed i)."""
    want: dict[str, int] = {}
    for a, b in cfg.comparisons:
        name = comparison_name(a, b)
        if name in decisions and decisions[name].state != "open":
            continue
        paired = min(int(have.get(a, 0)), int(have.get(b, 0)))
        later = [k for k in cfg.looks if k > paired]
        if later:
            for v in (a, b):
                want[v] = max(want.get(v, 0), later[0])
    return {v: n - int(have.get(v, 0)) for v, n in sorted(want.items()) if n > int(have.get(v, 0))}
