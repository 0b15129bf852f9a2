"""Search-space files: load, resolve ``base:`` and overrides, and check every searched path.

A searched path must be a field of the resolved run config, must be read under the other
settings (``optim.momentum`` with AdamW is not), and every bound or option must itself validate
(so ``{uniform: [0.5, 1.5]}`` on a field limited to [0, 1] fails before any trial starts).
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

from pydantic import ValidationError

from raypair.config import (NOT_SEARCHABLE, ConfigError, ParamSpace, RunConfigBase, SchedulerConfig, SpaceFile, TuneSettings,
                            build_run, deep_merge, field_at, flatten, from_validation, parse_override, read_yaml,
                            set_path, to_plain)
from raypair.config.base import short
from raypair.experiments.base import (Described, Experiment, ListProposer, Proposer, Record, Trial, check_metric,
                                      fmt_value)


@dataclass
class Sweep(Experiment):
    """A search space over one base run: Optuna (TPE or random, its study in ``<exp>/optuna.db``)
    or a seeded random / grid list of points; optionally ASHA over the trials' epochs."""

    kind: ClassVar[str] = "sweep"
    name: str
    base_raw: dict[str, Any]  # the base run as a plain dict: base file + run: + --set
    space: dict[str, ParamSpace]
    tune: TuneSettings
    source: Optional[Path] = None

    # the runner's questions, answered by the tune settings
    metric = property(lambda self: self.tune.metric)  # type: ignore[assignment]
    mode = property(lambda self: self.tune.mode)  # type: ignore[assignment]
    max_concurrent = property(lambda self: self.tune.max_concurrent_trials)  # type: ignore[assignment]
    max_failures = property(lambda self: self.tune.max_failures)  # type: ignore[assignment]

    def trial_run(self, params: dict[str, Any]) -> RunConfigBase:
        """The run config of one trial: the base with the sampled ``{dotted.path: value}`` set."""
        raw = self.base_raw
        for path, value in params.items():
            raw = set_path(raw, path, value)
        return build_run(raw)

    def params(self, config: dict[str, Any]) -> dict[str, Any]:
        """The searched values in a trial's params."""
        return {k: v for k, v in config.items() if k in self.space}

    def planned_trials(self) -> int:
        return self.tune.num_samples

    def proposer(self, exp_dir: Path, known: dict[str, Record]) -> Proposer:
        from raypair.experiments import proposers

        if self.tune.searcher.name == "optuna":
            return proposers.OptunaProposer(self, exp_dir / "optuna.db", known)
        points = proposers.random_points(self.space, self.tune.num_samples, self.tune.searcher.seed)
        return ListProposer([Trial(f"t{i:04d}", p) for i, p in enumerate(points)], self.done_keys(known))

    def describe(self, trial: Trial) -> Described:
        shown = " ".join(f"{k.split('.')[-1]}={fmt_value(v)}" for k, v in sorted(trial.params.items()))
        return Described(f"{self.name}-{trial.key}", f"{trial.key} {shown}".strip(),
                         {"raypair.trial_id": trial.key, "raypair.method": self.base_run.method.name}
                         | {f"raypair.search.{k}": v for k, v in trial.params.items()})

    def parent(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        tune = self.tune.model_dump(mode="json")
        params = ({f"space.{k}": f"{v.kind} {v.args}" for k, v in self.space.items()}
                  | {f"tune.{k}": v for k, v in flatten(tune).items()})
        doc = {"run": to_plain(self.base_run), "space": {k: v.model_dump(exclude_none=True) for k, v in self.space.items()},
               "tune": tune}
        return {"raypair.kind": "sweep"}, params, doc

    def fingerprint(self) -> Optional[str]:
        space = {k: v.model_dump(exclude_none=True) for k, v in sorted(self.space.items())}
        return hashlib.sha1(json.dumps([space, self.tune.searcher.model_dump(mode="json")], sort_keys=True,
                                       default=str).encode()).hexdigest()[:16]

    def scheduler(self) -> Optional[SchedulerConfig]:
        return self.tune.scheduler if self.tune.scheduler.name != "none" else None

    def view_keys(self) -> list[tuple[str, str]]:
        return [("params", k) for k in self.space]

    def resolved(self) -> dict[str, Any]:
        return {"name": self.name, "run": to_plain(self.base_run),
                "space": {k: {v.kind: list(v.args)} for k, v in self.space.items()},
                "tune": self.tune.model_dump(mode="json"), "resources_per_trial": self.base_run.scale.resources().total}


def read_base_run(path: Path, base: str) -> dict[str, Any]:
    """The run a file's ``base:`` names, relative to the file: a run file (one level: it may not
    have a ``base:`` of its own) or a search-space file, whose resolved base run is taken.
    Every error about the file itself names the field ``base``."""
    try:
        base_path = (path.parent / base).resolve()
    except (OSError, ValueError, RuntimeError) as e:
        raise ConfigError("base", f"not a usable path: {e}", base) from None
    raw = read_yaml(base_path, field="base")
    if "variants" in raw or "factors" in raw:
        raise ConfigError("base", f"{base_path} is an ablation file; base: names a run or search-space file", base)
    if "base" in raw:  # (a file naming itself would recurse forever)
        raise ConfigError("base", f"{base_path} has a base: of its own; one level only", raw["base"])
    if "space" in raw or "tune" in raw or "run" in raw:
        return load_sweep(base_path, check=False).base_raw
    return raw


def load_sweep(path: str | Path, overrides: list[str] = (), num_samples: Optional[int] = None,
               name: Optional[str] = None, check: bool = True) -> Sweep:
    """Read and check a search-space file. ``--set tune.x=v`` reaches the tune settings, ``--set
    space.PATH=...`` the space (``null`` drops it), any other ``--set`` path the run config (its errors
    name that path, as written). ``check=False`` skips the space checks (to train the base run)."""
    path = Path(path)
    raw = read_yaml(path)
    for key in ("run", "space", "tune"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise ConfigError(key, "must be a mapping", raw[key])
    raw, fixed = _overridden(raw, overrides)
    if num_samples is not None:
        raw = set_path(raw, "tune.num_samples", num_samples)
    if name is not None:
        raw["name"] = name
    try:
        spec = SpaceFile.model_validate(raw)
    except ValidationError as err:
        e = from_validation(err)
        # run-config errors carry no "run." prefix: users write the same path with --set
        field = e.field.removeprefix("run.")
        field = {"tune.num_samples": "--num-samples" if num_samples is not None else field,
                 "name": "--name" if name is not None else field}.get(field, field)
        raise ConfigError(field, e.message, e.value) from None
    base_raw = deep_merge(read_base_run(path, spec.base), spec.run) if spec.base else spec.run
    sweep = Sweep(spec.name, base_raw, spec.space, spec.tune, path)
    sweep.base_run  # noqa: B018 - validated here: its errors come before the space's
    if check:
        check_space(sweep, fixed)
    return sweep


def _overridden(raw: dict[str, Any], overrides: list[str]) -> tuple[dict[str, Any], list[str]]:
    """A search-space file's mapping with the ``--set`` overrides applied, and the run paths they fix."""
    fixed = []
    for text in overrides:
        key, value = parse_override(text)
        if key.split(".")[0] == "space":  # --set space.optim.lr='{uniform: [0.01, 0.1]}'; =null drops it
            if key == "space":
                raise ConfigError("--set", "set one searched path: space.PATH=...", text)
            space = {k: v for k, v in (raw.get("space") or {}).items() if k != key[6:]}
            raw["space"] = space | ({} if value is None else {key[6:]: value})
        elif key.split(".")[0] == "tune":
            raw = set_path(raw, key, value)
        else:
            raw["run"] = set_path(raw.get("run") or {}, key, value)
            fixed.append(key)
    return raw, fixed


def check_space(sweep: Sweep, fixed: list[str] = ()) -> None:
    t = sweep.tune
    _check_tune(sweep)
    if not sweep.space:
        raise ConfigError("space", "a search-space file needs at least one searched path (to train its run "
                          "alone: raypair train)", {})
    for path, ps in sweep.space.items():
        field = f"space.{path}"
        if path in fixed:
            raise ConfigError(field, "is also fixed with --set; drop one of them")
        if ps.kind == "grid" and t.searcher.name == "optuna":
            raise ConfigError(field, "grid needs tune.searcher.name=random (Optuna samples, it does not grid)")
        try:
            field_at(sweep.base_run, path)
        except ConfigError as e:
            raise ConfigError(f"space.{e.field}", e.message, e.value) from None
        runs, errors = [], []
        for value in ps.probe_values():
            try:
                runs.append(feasible_run(sweep, path, value))
            except ConfigError as e:
                errors.append((value, e))
        if errors:  # a value outside its own field's range first (θ_max U[0.2, 1.4]: 1.4), then the rest
            value, e = min(errors, key=lambda t: t[1].cross)
            where = "" if e.field == path else f"{e.field}: "
            raise ConfigError(field, f"value {short(value)} is invalid: {where}{e.message}")
        for probed in runs:
            check_read(probed, path, field)
    check_ranges(sweep)
    check_rungs(sweep)


def check_rungs(sweep: Sweep, tries: int = 4096) -> None:
    """ASHA's first rung (``grace_period``, in epochs) must come after the last epoch-scheduled stage
    of every probed point of the space has started (``MethodConfig.stage_starts``: VPL's stage 3 at
    ``E - round(y% E)``): an earlier rung judges, and stops, trials on a stage they have not run."""
    g = sweep.tune.scheduler
    if g.name != "asha":
        return
    # the int ranges vary fastest, so the first ``tries`` points cover them (VPL's x, y) in full
    paths = sorted(sweep.space, key=lambda p: sweep.space[p].kind == "int")
    combos = itertools.product(*[_every_value(sweep.space[p]) for p in paths])
    latest, where = -1, {}
    for combo in itertools.chain(itertools.islice(combos, tries), [()]):
        point = dict(zip(paths, combo))
        try:
            run = sweep.trial_run(point)
        except ConfigError:
            continue  # infeasible: recorded as such when proposed
        starts = run.method.stage_starts(run.epochs)
        if starts and starts[-1] > latest:
            latest, where = starts[-1], point
    if latest >= g.grace_period:
        at = ", ".join(f"{k}={fmt_value(v)}" for k, v in where.items()) or "the base run"
        raise ConfigError("tune.scheduler.grace_period", f"ASHA's first rung (epoch {g.grace_period}) comes before "
                          f"the last training stage has run (at {at} it starts in epoch {latest + 1}): set it to at "
                          f"least {latest + 1} or tune.scheduler.name=none", g.grace_period)


def _check_tune(sweep: Sweep) -> None:
    """The tune settings against the base run: its metric, and ASHA within its epochs."""
    t = sweep.tune
    check_metric("tune.metric", t.metric, [sweep.base_run])
    if t.scheduler.name == "asha" and t.metric.startswith("test_"):
        raise ConfigError("tune.metric", "test_ metrics come with the last epoch only, so ASHA cannot stop on "
                          "them; use a val_ metric or tune.scheduler.name=none", t.metric)
    if t.scheduler.max_t is not None and t.scheduler.max_t > sweep.base_run.epochs:
        raise ConfigError("tune.scheduler.max_t", f"exceeds epochs={sweep.base_run.epochs}", t.scheduler.max_t)
    if t.scheduler.name == "asha" and t.scheduler.grace_period > sweep.base_run.epochs:
        raise ConfigError("tune.scheduler.grace_period", f"exceeds epochs={sweep.base_run.epochs}",
                          t.scheduler.grace_period)


def check_ranges(sweep: Sweep) -> None:
    """Each searched method knob stays within ``MethodConfig.search_range`` under the base settings
    and under every value of the space's other searched choices (VPL's tau: normalised similarities
    and raw dot products need different ranges, so one range cannot serve a space over both)."""
    choices = [{p: v} for p, ps in sweep.space.items() if ps.kind in ("choice", "grid") for v in ps.args]
    for path, ps in sweep.space.items():
        values = [v for v in ps.probe_values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not path.startswith("method.") or not values:
            continue
        for extra in [{}] + [c for c in choices if path not in c]:
            try:
                run = sweep.trial_run(extra)
            except ConfigError:
                continue  # an infeasible combination: recorded as such when proposed
            rng = run.method.search_range(path.split(".", 1)[1])
            if rng is not None and not rng[0] <= min(values) <= max(values) <= rng[1]:
                under = "".join(f" with {k}={fmt_value(v)}" for k, v in extra.items())
                raise ConfigError(f"space.{path}", f"must lie within [{rng[0]:g}, {rng[1]:g}]{under} ({rng[2]})",
                                  list(ps.args))


def _every_value(ps: ParamSpace) -> list[Any]:
    """Every value of a small int range (a stage starts latest at its smallest nonzero percentage),
    else the probe values (bounds, options)."""
    lo, hi = ps.args if ps.kind == "int" else (0, -1)
    return list(range(lo, hi + 1)) if ps.kind == "int" and hi - lo <= 100 else ps.probe_values()


def feasible_run(sweep: Sweep, path: str, value: Any, tries: int = 512) -> RunConfigBase:
    """A trial run with ``path=value``: over the base, or, when a cross-field rule (t1 < t2, θ_min <=
    θ_max) refuses that, with some combination of the other searched paths' bounds and options (so
    θ_min U[0.1, 0.7] with θ_max U[0.7, 0.9] is valid). Raises the base's error when none validates:
    a bound that no point of the space can use, or a value outside its own field's range."""
    try:
        return sweep.trial_run({path: value})
    except ConfigError as e:
        if not e.cross:
            raise
        first = e
    others = [p for p in sweep.space if p != path]
    for combo in itertools.islice(itertools.product(*[sweep.space[p].probe_values() for p in others]), tries):
        try:
            return sweep.trial_run({path: value, **dict(zip(others, combo))})
        except ConfigError:
            continue
    raise first


def check_read(run: RunConfigBase, path: str, field: str) -> None:
    """``path`` must be a field that ``run``'s other settings read and that changes the result;
    else a ConfigError naming ``field``."""
    field_at(run, path)
    why = run.unread().get(path)
    if why is None:
        return
    if path in NOT_SEARCHABLE:
        raise ConfigError(field, f"changes no result ({why}), so it cannot be searched or ablated")
    detail = f" ({why})" if why else ""
    raise ConfigError(field, f"is not read under the other settings{detail}, so setting it changes nothing")
