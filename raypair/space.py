"""Search-space files: load, resolve ``base:`` and overrides, and check every searched path.

A searched path must be a field of the resolved run config, must be read under the other
settings (``optim.momentum`` with AdamW is not), and every bound or option must itself validate
(so ``{uniform: [0.5, 1.5]}`` on a field limited to [0, 1] fails before any trial starts).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from pydantic import ValidationError

from raypair.config import (METRICS, ConfigError, ParamSpace, RunConfigBase, SpaceFile, TuneSettings, build_run,
                            deep_merge, field_at, from_validation, parse_override, read_yaml, set_path)


@dataclass
class Sweep:
    name: str
    run_raw: dict[str, Any]  # the base run as a plain dict: base file + run: + --set
    run: RunConfigBase  # the same, validated
    space: dict[str, ParamSpace]
    tune: TuneSettings
    source: Optional[Path] = None

    def trial_run(self, params: dict[str, Any]) -> RunConfigBase:
        """The run config of one trial: the base with the sampled ``{dotted.path: value}`` set."""
        raw = self.run_raw
        for path, value in params.items():
            raw = set_path(raw, path, value)
        return build_run(raw)

    def params(self, config: dict[str, Any]) -> dict[str, Any]:
        """The searched values in a Tune trial's config."""
        return {k: v for k, v in config.items() if k in self.space}

    def resources_per_trial(self) -> dict[str, float]:
        return self.run.scale.resources()


def load_sweep(path: str | Path, overrides: list[str] = (), num_samples: Optional[int] = None,
               name: Optional[str] = None, check: bool = True) -> Sweep:
    """Read and check a search-space file. ``--set tune.x=v`` reaches the tune settings, any other
    ``--set`` path the run config. ``check=False`` skips the space checks (to train the base run)."""
    path = Path(path)
    raw = read_yaml(path)
    for text in overrides:
        key, value = parse_override(text)
        if key.startswith("space."):  # --set space.optim.lr='{uniform: [0.01, 0.1]}'; =null drops it
            raw["space"] = {k: v for k, v in (raw.get("space") or {}).items() if k != key[6:]}
            if value is not None:
                raw["space"][key[6:]] = value
        elif key.split(".")[0] == "tune":
            raw = set_path(raw, key, value)
        else:
            raw = set_path(raw, "run." + key, value)
    if num_samples is not None:
        raw = set_path(raw, "tune.num_samples", num_samples)
    if name is not None:
        raw["name"] = name
    try:
        spec = SpaceFile.model_validate(raw)
    except ValidationError as err:
        e = from_validation(err)
        # run-config errors carry no "run." prefix: users write the same path with --set
        raise ConfigError(e.field.removeprefix("run."), e.message, e.value) from None
    run_raw = spec.run
    if spec.base:
        base_path = (path.parent / spec.base).resolve()
        base = read_yaml(base_path)
        if "base" in base:
            raise ConfigError("base", f"{base_path} has a base: of its own; one level only", base["base"])
        run_raw = deep_merge(base, spec.run)
    run = build_run(run_raw)
    sweep = Sweep(spec.name, run_raw, run, spec.space, spec.tune, path)
    if check:
        check_space(sweep, [k for k, _ in map(parse_override, overrides) if not k.startswith("space.")])
    return sweep


def check_space(sweep: Sweep, fixed: list[str] = ()) -> None:
    t = sweep.tune
    metric_ok = t.metric in METRICS or t.metric.startswith(("val_", "train_", "test_"))
    if not metric_ok:
        raise ConfigError("tune.metric", f"not a reported metric (e.g. {', '.join(METRICS)})", t.metric)
    if t.scheduler.max_t is not None and t.scheduler.max_t > sweep.run.epochs:
        raise ConfigError("tune.scheduler.max_t", f"exceeds epochs={sweep.run.epochs}", t.scheduler.max_t)
    if t.scheduler.name == "asha" and t.scheduler.grace_period > sweep.run.epochs:
        raise ConfigError("tune.scheduler.grace_period", f"exceeds epochs={sweep.run.epochs}",
                          t.scheduler.grace_period)
    for path, ps in sweep.space.items():
        field = f"space.{path}"
        if path in fixed:
            raise ConfigError(field, "is also fixed with --set; drop one of them")
        if ps.kind == "grid" and t.searcher.name == "optuna":
            raise ConfigError(field, "grid needs tune.searcher.name=random (Optuna samples, it does not grid)")
        try:
            field_at(sweep.run, path)
        except ConfigError as e:
            raise ConfigError(f"space.{e.field}", e.message, e.value) from None
        for value in ps.probe_values():
            try:
                trial = sweep.trial_run({path: value})
            except ConfigError as e:
                raise ConfigError(field, f"value {value!r} is invalid: {e.message}") from None
            check_read(trial, path, field)


def check_read(run: RunConfigBase, path: str, field: str) -> None:
    """``path`` must be a field that ``run``'s other settings read; else a ConfigError naming ``field``."""
    owner, key = field_at(run, path)
    if key in owner.inactive() or path in run.method.unread_run_fields():
        raise ConfigError(field, "is not read under the other settings, so setting it changes nothing")
