"""Ablation files: a base run, named variants (or factors whose levels combine into variants),
seeds, the paper's numbers, and a ``quick`` profile small enough for a CPU.

```yaml
name: p3_table1_c10
base: ../search_spaces/erm_cifar10.yaml     # its run: is the base (or write run: here)
run: {epochs: 200}                          # merged over the base
factors:                                    # or variants: {name: {dotted.path: value}}
  model: {resnet18: {model.name: resnet18_cifar}, lenet: {model.name: lenet_cifar}}
  aug:   {base: {method.aug: base}, cutmix: {method: {name: cutmix, alpha: 1.0}}}
reference: {aug: base}                      # differences are taken to this level, per model
seeds: [0, 1, 2, 3, 4]
metrics: [test_acc, val_acc]
max_concurrent: 4
paper: {source: "P3 Table 1", metric: test_acc, values: {resnet18/base: "88.97±0.73"}}
quick: {variants: [resnet18/base], seeds: [0, 1, 2], set: {epochs: 2, data.train_subset: 1000}}
```

A variant's name joins its levels with ``/`` in factor order. Every variant's run is built and
checked before anything starts: each overridden path must be a field that the variant's settings
read (a knob no code reads is an error), no two variants may train the same run, and the paper's
values, the reference and the quick profile must name variants that exist.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, Field, ValidationError, model_validator

from raypair.config import (ConfigError, Name, RunConfigBase, Strict, build_run, check_name, deep_merge, field_at,
                            from_validation, parse_override, read_yaml, set_path, to_plain)
from raypair.config.run import Seed
from raypair.experiments.base import check_metric
from raypair.experiments.sweep import read_base_run
from raypair.experiments.pairs import (Ablation, Overrides, PaperRef, Variant, check_paper_protocol, from_plain,
                                       parse_paper_number, slug)
from raypair.experiments.sweep import check_read

__all__ = ["Ablation", "AblationFile", "PaperRef", "Variant", "from_plain", "load_ablation", "parse_paper_number",
           "slug"]


class QuickProfile(Strict):
    variants: Optional[list[str]] = Field(None, min_length=1)  # a subset; default all
    seeds: Optional[list[Seed]] = Field(None, min_length=1, max_length=1000)
    set: Overrides = Field(default_factory=dict)  # over the base run  # noqa: A003 - the YAML word
    max_concurrent: Optional[int] = Field(None, ge=1, le=10_000)


class AblationFile(Strict):
    name: Name
    title: str = ""
    base: Optional[str] = None  # a run YAML or a search-space YAML (its run:), relative to this file
    run: dict[str, Any] = Field(default_factory=dict)
    variants: Optional[dict[str, Optional[Overrides]]] = None
    factors: Optional[dict[str, dict[str, Optional[Overrides]]]] = None
    exclude: list[str] = Field(default_factory=list)  # factor combinations not run
    reference: Union[str, dict[str, str], None] = None  # default: the first level of the first factor
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=1, max_length=1000)
    metrics: list[str] = Field(default_factory=lambda: ["test_acc", "val_acc"], min_length=1)
    mode: Literal["max", "min"] = "max"  # whether larger is better for metrics[0]
    max_concurrent: int = Field(4, ge=1, le=10_000)
    paper: Optional[PaperRef] = None
    quick: Optional[QuickProfile] = None

    @model_validator(mode="after")
    def _one_layout(self) -> "AblationFile":
        if (self.variants is None) == (self.factors is None):
            raise ValueError("give exactly one of variants: or factors:")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: repeated seed in {self.seeds}")
        return self


# ------------------------------------------------------------------------------------ loading
def load_ablation(path: str | Path, overrides: list[str] = (), quick: bool = False,
                  seeds: Optional[list[int]] = None, only: Optional[list[str]] = None,
                  name: Optional[str] = None, max_concurrent: Optional[int] = None,
                  raw: Optional[dict[str, Any]] = None) -> Ablation:
    """Read and check an ablation file. ``overrides`` (``--set``) reach the base run; ``quick`` its
    quick profile (the name gains ``-quick``); ``seeds``, ``only`` (a subset of the variants), ``name``
    and ``max_concurrent`` replace the file's; ``raw``: the file, read (seqkind.py takes its keys out)."""
    path = Path(path)
    raw = read_yaml(path) if raw is None else raw
    try:
        spec = AblationFile.model_validate(raw)
    except ValidationError as err:
        raise from_validation(err) from None
    base_raw = deep_merge(read_base_run(path, spec.base), spec.run) if spec.base else spec.run
    chosen_seeds, chosen, max_conc = spec.seeds, None, spec.max_concurrent
    if quick:
        base_raw, chosen_seeds, chosen, max_conc = _quick(path, spec, base_raw)
    if name is not None:
        check_name("--name", name)
    max_conc = _max_concurrent(max_concurrent, max_conc)
    for text in overrides:
        base_raw = set_path(base_raw, *parse_override(text))
    build_run(base_raw)  # the base itself first: its errors name its own fields
    variants, reference = _variants(spec)
    ab = Ablation(name or (spec.name + ("-quick" if quick else "")), spec.title, base_raw,
                  _picked(variants, chosen, only), list(seeds or chosen_seeds), spec.metrics, spec.mode,
                  max_conc, reference, spec.paper, path, quick)
    _check(ab, spec, variants)
    check_paper_protocol(ab)  # a paper's number beside ours: the paper's protocol (pairs.py)
    return ab


def _picked(variants: dict[str, Variant], chosen: Optional[list[str]],
            only: Optional[list[str]]) -> dict[str, Variant]:
    """The variants to run: ``--variants`` (``only``), else the quick profile's subset, else all."""
    for where, names in (("quick.variants", chosen), ("--variants", only)):
        for n in names or []:
            if n not in variants:
                raise ConfigError(where, f"no such variant (have: {', '.join(variants)})", n)
    pick = only or chosen  # --variants replaces the quick profile's subset
    return {n: v for n, v in variants.items() if pick is None or n in pick}


def _max_concurrent(given: Optional[int], default: int) -> int:
    """``--max-concurrent``, checked, or the file's (or its quick profile's)."""
    if given is None:
        return default
    if not 1 <= given <= 10_000:
        raise ConfigError("--max-concurrent", "must lie in [1, 10000]", given)
    return given


def _quick(path: Path, spec: AblationFile, base_raw: dict[str, Any]) -> tuple[dict[str, Any], list[int],
                                                                           Optional[list[str]], int]:
    """The quick profile over the base run: (run, seeds, variant subset, max_concurrent)."""
    if spec.quick is None:
        raise ConfigError("--quick", f"{path} has no quick: profile")
    for key, value in spec.quick.set.items():
        base_raw = set_path(base_raw, key, value, prefix="quick.set.")
    return (base_raw, spec.quick.seeds or spec.seeds, spec.quick.variants,
            spec.quick.max_concurrent or spec.max_concurrent)


def _variants(spec: AblationFile) -> tuple[dict[str, Variant], dict[str, str]]:
    if spec.factors is not None and not spec.factors:
        raise ConfigError("factors", "needs at least one factor", {})
    factors = spec.factors if spec.factors is not None else {"variant": spec.variants or {}}
    for f, levels in factors.items():
        if not levels:
            raise ConfigError("variants" if spec.factors is None else f"factors.{f}", "needs at least one level", {})
        for lv in levels:
            if "/" in lv:
                raise ConfigError(f"factors.{f}.{lv}", "a level name may not contain '/'")
    out: dict[str, Variant] = {}
    for combo in itertools.product(*[list(lv.items()) for lv in factors.values()]):
        name = "/".join(level for level, _ in combo)
        merged: Overrides = {}
        for level, over in combo:
            for k, v in (over or {}).items():
                if k in merged and merged[k] != v:
                    raise ConfigError(f"variants.{name}", f"levels set {k} to two values", [merged[k], v])
                merged[k] = v
        out[name] = Variant(name, dict(zip(factors, (lv for lv, _ in combo))), merged)
    for ex in spec.exclude:
        if ex not in out:
            raise ConfigError("exclude", "no such variant", ex)
        del out[ex]
    if not out:
        raise ConfigError("exclude", "leaves no variant to run", spec.exclude)
    return out, _reference(spec, factors, out)


def _reference(spec: AblationFile, factors: dict[str, dict[str, Optional[Overrides]]],
               out: dict[str, Variant]) -> dict[str, str]:
    """The reference level of each factor: the file's (a variant's levels, or factor -> level), or
    the first level of the first factor."""
    ref = spec.reference
    if ref is None:
        first = next(iter(factors))
        ref = {first: next(iter(factors[first]))}
    elif isinstance(ref, str):
        if ref not in out:  # (an excluded variant cannot be the reference)
            raise ConfigError("reference", f"no such variant (have: {', '.join(out)})", ref)
        ref = dict(out[ref].levels) if spec.factors is not None else {"variant": ref}
    for f, lv in ref.items():
        if f not in factors or lv not in factors[f]:
            raise ConfigError(f"reference.{f}", "no such factor level", lv)
    return ref


def _check_keys(variants: dict[str, Variant]) -> None:
    """Two variants never share a trial key (one folder, one MLflow run for two pairs): keys keep
    letters, digits, ``_``, ``.`` and ``-`` (``base+`` is ``baseplus``, ``mix up`` is ``mix_up``)
    and are compared without case, as some file systems do."""
    owner: dict[str, str] = {}
    for name in variants:
        key = slug(name, 0).lower()
        if key in owner:
            raise ConfigError(f"variants.{name}", f"its trial keys ({slug(name, 0)}, ...) are those of variant "
                              f"{owner[key]!r} too; rename one", name)
        owner[key] = name


def _check(ab: Ablation, spec: AblationFile, all_variants: dict[str, Variant]) -> None:
    _check_keys(all_variants)
    seen: dict[str, str] = {}
    for v in ab.variants.values():
        if "seed" in v.overrides or "name" in v.overrides:
            raise ConfigError(f"variants.{v.name}.seed", "seeds come from seeds:, names from the variant")
        run = _variant_run(ab, v)
        for path, value in v.overrides.items():
            for leaf in _leaves(run, path, value):
                check_read(run, leaf, f"variants.{v.name}.{leaf}")
        key = repr(sorted(to_plain(run).items()))
        if key in seen:
            raise ConfigError(f"variants.{v.name}", f"trains the same run as variant {seen[key]!r}")
        seen[key] = v.name
        ab.runs[v.name] = run
    for m in ab.metrics:
        check_metric("metrics", m, list(ab.runs.values()))
    if spec.paper:
        for n in spec.paper.values:
            if n not in all_variants:
                raise ConfigError(f"paper.values.{n}", f"no such variant (have: {', '.join(all_variants)})")
            value = spec.paper.values[n]
            for v in value.values() if isinstance(value, dict) else [value]:
                try:
                    parse_paper_number(v)
                except ConfigError as e:
                    raise ConfigError(f"paper.values.{n}", e.message, e.value) from None


def _variant_run(ab: Ablation, v: Variant) -> RunConfigBase:
    raw = ab.base_raw
    for path, value in v.overrides.items():
        raw = set_path(raw, path, value, prefix=f"variants.{v.name}.")
    try:
        return build_run(raw)
    except ConfigError as e:
        raise ConfigError(f"variants.{v.name}.{e.field}", e.message, e.value) from None


def _leaves(run: RunConfigBase, path: str, value: Any) -> list[str]:
    """The config fields an override sets: a mapping over a config section counts per key."""
    owner, key = field_at(run, path)
    node = getattr(owner, key)
    if isinstance(value, dict) and isinstance(node, BaseModel):
        return [leaf for k, v in value.items() if k != "name" for leaf in _leaves(run, f"{path}.{k}", v)]
    return [path]

