"""Search-space files: the searched knobs (:class:`ParamSpace`), the searcher and scheduler
settings, and the file that names a base run, overrides and the space (:class:`SpaceFile`)."""
from __future__ import annotations

import builtins
from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from raypair.config.base import Name, Strict

SPACE_KINDS = ("uniform", "loguniform", "int", "choice", "grid")


class ParamSpace(Strict):
    """One searched knob, written ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``,
    ``{int: [lo, hi]}``, ``{choice: [a, b, ...]}`` or ``{grid: [a, b, ...]}``."""

    uniform: Optional[tuple[float, float]] = None
    loguniform: Optional[tuple[float, float]] = None
    int: Optional[tuple[builtins.int, builtins.int]] = None  # noqa: A003 - the YAML word
    choice: Optional[list[Any]] = Field(None, max_length=1000)
    grid: Optional[list[Any]] = Field(None, max_length=1000)

    @model_validator(mode="after")
    def _one(self) -> "ParamSpace":
        given = [k for k in SPACE_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(SPACE_KINDS)}; got {given or 'none'}")
        kind = given[0]
        args = getattr(self, kind)
        if kind in ("uniform", "loguniform", "int") and not all(abs(a) <= 1e18 for a in args):
            raise ValueError(f"{kind} bounds must lie within ±1e18")
        if kind in ("uniform", "loguniform", "int") and not args[0] < args[1]:
            raise ValueError(f"{kind} needs low < high, got {list(args)}")
        if kind == "loguniform" and args[0] <= 0:
            raise ValueError(f"loguniform needs low > 0, got {list(args)}")
        if kind in ("choice", "grid") and not args:
            raise ValueError(f"{kind} needs at least one value")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in SPACE_KINDS if getattr(self, k) is not None)

    @property
    def args(self) -> Any:
        return getattr(self, self.kind)

    def probe_values(self) -> list[Any]:
        """Values that must all validate: the bounds of a range, every listed option."""
        return list(self.args)


class SearcherConfig(Strict):
    name: Literal["optuna", "random"] = "optuna"  # random = Ray's variant generator (grid allowed)
    sampler: Literal["tpe", "random"] = "tpe"
    seed: Optional[int] = Field(0, ge=0, le=2**32 - 1)
    n_startup_trials: int = Field(4, ge=1, le=100_000)  # TPE's random start


class SchedulerConfig(Strict):
    name: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, ge=1, le=10000)  # epochs before ASHA may stop a trial
    reduction_factor: float = Field(2.0, gt=1.0, le=1000)
    max_t: Optional[int] = Field(None, ge=1, le=10000)  # default: the run's epochs


class TuneSettings(Strict):
    metric: str = "val_acc"
    mode: Literal["max", "min"] = "max"
    num_samples: int = Field(8, ge=1, le=100_000)
    max_concurrent_trials: int = Field(2, ge=1, le=10_000)
    searcher: SearcherConfig = Field(default_factory=SearcherConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    max_failures: int = Field(0, ge=0, le=100)  # retries of a crashed trial (from its last checkpoint)


class SpaceFile(Strict):
    name: Name
    base: Optional[str] = None  # a run YAML, relative to this file; one level only
    run: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, ParamSpace] = Field(default_factory=dict)
    tune: TuneSettings = Field(default_factory=TuneSettings)
