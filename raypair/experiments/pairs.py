"""An ablation as an :class:`~raypair.experiments.base.Experiment`: every (variant, seed) pair is
one trial, keyed ``<variant>__s<seed>``; a pair counts as done only when it finished all its
epochs, so ``--resume`` runs failed and cut-off pairs again (from their checkpoints) and adds
new seeds. The file format and its checks are in ``ablation.py``."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import Field

from raypair.config import ConfigError, RunConfigBase, Strict, build_run, flatten, set_path
from raypair.experiments.base import Described, Experiment, ListProposer, Proposer, Record, Trial

Overrides = dict[str, Any]
_PM = re.compile(r"^\s*([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*(?:±|\+-|\+/-)\s*([0-9.]+(?:[eE][-+]?[0-9]+)?)\s*$")


class PaperRef(Strict):
    """The published numbers a variant is compared with, in the paper's unit."""

    source: str  # e.g. "P3 Table 1: test accuracy %, mean ± 95% CI over 5 runs"
    metric: str = "test_acc"  # our metric the numbers sit beside
    kind: Literal["absolute", "delta"] = "absolute"  # delta: a difference to the reference
    scale: float = Field(100.0, gt=0.0)  # paper unit per unit of our metric (100: percent)
    note: str = ""  # how the paper's setting differs from ours
    # variant -> "95.90±0.28" | 95.9 | {metric: "..."}
    values: dict[str, Union[float, str, dict[str, Union[float, str]]]] = Field(default_factory=dict)


@dataclass
class Variant:
    name: str
    levels: dict[str, str]  # factor -> level
    overrides: Overrides


@dataclass
class Ablation(Experiment):
    kind: ClassVar[str] = "ablation"
    name: str
    title: str
    base_raw: dict[str, Any]  # the base run: base file + run: + quick set + --set
    variants: dict[str, Variant]
    seeds: list[int]
    metrics: list[str]
    mode: str
    max_concurrent: int
    reference: dict[str, str]  # factor -> reference level
    paper: Optional[PaperRef]
    source: Optional[Path] = None
    quick: bool = False
    runs: dict[str, RunConfigBase] = field(default_factory=dict)  # variant -> run (seed of the base)

    def trial_run(self, params: dict[str, Any]) -> RunConfigBase:
        """The run config of one (variant, seed) pair: ``params`` is ``{"variant": ..., "seed": ...}``."""
        variant = params.get("variant")
        if variant not in self.variants:
            raise ConfigError("--variants", "not a variant of this invocation", variant)
        seed = int(params["seed"])
        raw = self.base_raw
        for path, value in self.variants[variant].overrides.items():
            raw = set_path(raw, path, value)
        raw = set_path(set_path(raw, "seed", seed), "name", f"{self.name}-{variant}-s{seed}")
        return build_run(raw)

    def pairs(self) -> list[tuple[str, int]]:
        return [(v, s) for v in self.variants for s in self.seeds]

    # ---------------------------------------------------------------------------- Experiment
    @property
    def metric(self) -> str:  # type: ignore[override]
        return self.metrics[0]

    def planned_trials(self) -> int:
        return len(self.pairs())

    def proposer(self, exp_dir: Path, known: dict[str, Record]) -> Proposer:
        trials = [Trial(slug(v, s), {"variant": v, "seed": s}) for v, s in self.pairs()]
        return ListProposer(trials, self.done_keys(known))

    def done(self, record: Record) -> bool:
        """A pair is done when it trained all its epochs; failed and cut-off pairs run again."""
        return record.status == "finished"

    def describe(self, trial: Trial) -> Described:
        variant, seed = trial.params["variant"], int(trial.params["seed"])
        return Described(f"{variant} s{seed}", f"{variant} seed {seed}",
                         {"raypair.kind": "ablation_run", "raypair.variant": variant, "raypair.seed": str(seed)}
                         | {f"raypair.level.{f}": lv for f, lv in self.variants[variant].levels.items()})

    def parent(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        params = {"seeds": self.seeds, "variants": list(self.variants), "metrics": self.metrics,
                  "quick": self.quick} | {f"run.{k}": v for k, v in flatten(self.base_raw).items()}
        return {"raypair.kind": "ablation", "raypair.title": self.title}, params, self.plain()

    def resource_runs(self) -> list[RunConfigBase]:
        return list(self.runs.values())

    def view_keys(self) -> list[tuple[str, str]]:
        return [("tags", "raypair.variant"), ("tags", "raypair.seed")]

    def checked_runs(self) -> dict[str, RunConfigBase]:
        return {f"variants.{n}.": r for n, r in self.runs.items()}

    def resolved(self) -> dict[str, Any]:
        return self.plain() | {"pairs": len(self.pairs())}

    def outcome(self, records: list[Record], where: Any) -> Any:
        from raypair.experiments.outcome import Outcome

        tags, _ = self.summary(records)
        finished, failed = tags["raypair.pairs_finished"], tags["raypair.pairs_failed"]
        return Outcome(f"{finished} of {tags['raypair.pairs']} pairs finished, {failed} failed\n"
                       f"MLflow: {where.uri} (experiment {self.name!r}; its run table: raypair ui, then "
                       f"http://127.0.0.1:5000/{where.route})\n"
                       f"report: raypair report {self.name} --storage {where.storage}", 0 if failed == 0 else 1)

    def pin(self, values: dict[str, Any]) -> None:
        super().pin(values)
        self.runs = {v: self.trial_run({"variant": v, "seed": self.seeds[0]}) for v in self.variants}

    def summary(self, records: list[Record]) -> tuple[dict[str, Any], dict[str, float]]:
        tags, metrics = super().summary(records)
        wanted = {slug(v, s) for v, s in self.pairs()}
        finished = sum(r.status == "finished" for r in records if r.key in wanted)
        return tags | {"raypair.pairs": len(wanted), "raypair.pairs_finished": finished,
                       "raypair.pairs_failed": len(wanted) - finished}, metrics

    def reference_of(self, variant: str) -> Optional[str]:
        """The variant this one is compared with: the same levels, the reference factor's level swapped."""
        levels = dict(self.variants[variant].levels)
        levels.update(self.reference)
        if levels == self.variants[variant].levels:
            return None
        return next((v.name for v in self.variants.values() if v.levels == levels), None)

    def paper_value(self, variant: str, metric: str) -> Optional[tuple[float, Optional[float]]]:
        """(value, ±interval) from the paper, in the paper's unit, or None."""
        if self.paper is None or variant not in self.paper.values:
            return None
        v = self.paper.values[variant]
        if isinstance(v, dict):
            v = v.get(metric)
        elif metric != self.paper.metric:
            return None
        return None if v is None else parse_paper_number(v)

    def plain(self) -> dict[str, Any]:
        """The resolved ablation, as logged to MLflow (``ablation.yaml``) and read by the report."""
        return {"name": self.name, "title": self.title, "run": self.base_raw, "seeds": self.seeds,
                "metrics": self.metrics, "mode": self.mode, "max_concurrent": self.max_concurrent,
                "reference": self.reference, "quick": self.quick,
                "variants": {v.name: {"levels": v.levels, "overrides": v.overrides} for v in self.variants.values()},
                "paper": self.paper.model_dump() if self.paper else None}


def check_paper_protocol(ab: Ablation) -> None:
    """An ablation that prints a paper's numbers (``paper.values``) trains as the papers did: on the
    whole training set, tested once at the end (``data.val_fraction: 0``: the loop then evaluates
    on the test split and reports the last epoch's as ``test_*``). Holding out a validation split
    would put a number from 80% of the data beside the paper's; validation splits are for tuning
    sweeps. Raises a one-line ConfigError naming the field otherwise."""
    if ab.paper is None or not ab.paper.values:
        return
    for name, run in ab.runs.items():
        if run.data.val_fraction > 0:
            raise ConfigError("data.val_fraction", f"must be 0 in an ablation that quotes paper numbers "
                              f"(paper.values): the papers train on the whole training set and test at the "
                              f"end; validation splits are for tuning sweeps (variant {name!r})",
                              run.data.val_fraction)


def slug(variant: str, seed: int) -> str:
    """A pair's trial key (and folder name): ``cutmix/s1`` -> ``cutmix__s1``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", variant.replace("+", "plus").replace("/", "__")) + f"__s{seed}"


def parse_paper_number(v: Union[float, str]) -> tuple[float, Optional[float]]:
    if isinstance(v, (int, float)):
        return float(v), None
    m = _PM.match(v)
    if m:
        return float(m.group(1)), float(m.group(2))
    try:
        return float(v), None
    except ValueError:
        raise ConfigError("paper.values", "expected a number or 'mean±ci'", v) from None


def from_plain(d: dict[str, Any]) -> Ablation:
    """An Ablation from :meth:`Ablation.plain` (what the report reads back from MLflow)."""
    variants = {n: Variant(n, dict(v["levels"]), dict(v["overrides"])) for n, v in d["variants"].items()}
    paper = PaperRef.model_validate(d["paper"]) if d.get("paper") else None
    return Ablation(d["name"], d.get("title", ""), d["run"], variants, list(d["seeds"]), list(d["metrics"]),
                    d.get("mode", "max"), d.get("max_concurrent", 1), dict(d["reference"]), paper,
                    quick=bool(d.get("quick")))


