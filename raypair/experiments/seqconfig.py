"""The settings of a seeds-until-decided ablation (``sequential:`` in an ablation file) and their
checks: every bad value is a one-line :class:`~raypair.config.ConfigError` naming ``sequential.<field>``
and the value, raised before anything runs.

```yaml
sequential:
  delta: 0.5          # smallest difference that matters (metric units, e.g. accuracy points); > 0
  alpha: 0.05         # family-wise error rate, in (0, 0.5)
  min_seeds: 3        # seeds at the first look (>= 2: a paired t needs two)
  max_seeds: 20       # never more seeds than this per variant
  batch: 2            # seeds added between looks
  comparisons: [[cutmix, base], [mixup, base]]   # (variant, reference) pairs; default: each vs the reference
```
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from raypair.config import ConfigError

MAX_LOOKS = 64  # a plan's looks (each costs a boundary computation)
FIELDS = ("delta", "alpha", "min_seeds", "max_seeds", "batch", "comparisons")


def comparison_name(variant: str, reference: str) -> str:
    """The key of a comparison in :func:`~raypair.experiments.sequential.decide`'s input and output."""
    return f"{variant} vs {reference}"


def _number(field: str, value: Any, integer: bool) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        raise ConfigError(f"sequential.{field}", "must be an integer" if integer else "must be a finite number", value)


@dataclass(frozen=True)
class SequentialConfig:
    """Checked on construction; ``comparisons`` are (variant, reference) pairs, the difference
    taken is ``variant - reference``. Names are checked against the file by :func:`check_comparisons`."""
    delta: float
    alpha: float = 0.05
    min_seeds: int = 3
    max_seeds: int = 20
    batch: int = 2
    comparisons: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for field in FIELDS[:5]:
            _number(field, getattr(self, field), integer=field not in ("delta", "alpha"))
        if self.delta <= 0:
            raise ConfigError("sequential.delta", "must be > 0", self.delta)
        if not 0 < self.alpha < 0.5:
            raise ConfigError("sequential.alpha", "must be in (0, 0.5)", self.alpha)
        if self.min_seeds < 2:
            raise ConfigError("sequential.min_seeds", "must be >= 2 (a paired t needs two seeds)", self.min_seeds)
        if self.max_seeds < self.min_seeds:
            raise ConfigError("sequential.max_seeds", f"must be >= min_seeds ({self.min_seeds})", self.max_seeds)
        if self.batch < 1:
            raise ConfigError("sequential.batch", "must be >= 1", self.batch)
        if len(self.looks) > MAX_LOOKS:
            raise ConfigError("sequential.batch", f"gives {len(self.looks)} looks from min_seeds to max_seeds, "
                              f"at most {MAX_LOOKS}", self.batch)
        _check_pairs(self.comparisons)

    @property
    def looks(self) -> tuple[int, ...]:
        """Seeds at each planned look: min_seeds, every batch after, and max_seeds last."""
        plan = list(range(self.min_seeds, self.max_seeds, self.batch))
        return tuple(plan + [self.max_seeds])


def _check_pairs(pairs: Any) -> None:
    if not isinstance(pairs, tuple) or not pairs:
        raise ConfigError("sequential.comparisons", "must name at least one (variant, reference) pair", pairs)
    seen = set()
    for i, pair in enumerate(pairs):
        field = f"sequential.comparisons[{i}]"
        if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(v, str) and v for v in pair)):
            raise ConfigError(field, "must be a pair of variant names [variant, reference]", pair)
        if pair[0] == pair[1]:
            raise ConfigError(field, "compares a variant with itself", list(pair))
        if frozenset(pair) in seen:
            raise ConfigError(field, "repeats an earlier comparison", list(pair))
        seen.add(frozenset(pair))


def check_comparisons(cfg: SequentialConfig, variants: Sequence[str]) -> None:
    """Every comparison names variants of the file."""
    for i, pair in enumerate(cfg.comparisons):
        for v in pair:
            if v not in variants:
                raise ConfigError(f"sequential.comparisons[{i}]", f"names unknown variant {v!r}; "
                                  f"variants: {sorted(variants)}", v)


def sequential_config(raw: Mapping[str, Any], variants: Sequence[str],
                      reference: str | None = None) -> SequentialConfig:
    """The checked settings from an ablation file's ``sequential:`` mapping; without ``comparisons``
    each variant is compared with ``reference``."""
    if not isinstance(raw, Mapping):
        raise ConfigError("sequential", "must be a mapping", raw)
    if extra := sorted(set(raw) - set(FIELDS), key=str):
        raise ConfigError(f"sequential.{extra[0]}", f"unknown key; known: {list(FIELDS)}", raw[extra[0]])
    if "delta" not in raw:
        raise ConfigError("sequential.delta", "is required (the smallest difference that matters)")
    pairs = raw.get("comparisons")
    if pairs is None:
        if reference is None:
            raise ConfigError("sequential.comparisons", "needed: the file names no reference variant")
        pairs = [(v, reference) for v in variants if v != reference]
    if not isinstance(pairs, (list, tuple)):
        raise ConfigError("sequential.comparisons", "must be a list of [variant, reference] pairs", pairs)
    pairs = tuple(tuple(p) if isinstance(p, (list, tuple)) else p for p in pairs)
    cfg = SequentialConfig(**{**dict(raw), "comparisons": pairs})
    check_comparisons(cfg, variants)
    return cfg
