"""One run, no search (``raypair train``): an experiment of a single trial, so it gets the same
runner, trial store, MLflow layout and ``--resume`` as a sweep."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from raypair.config import RunConfigBase, build_run, flatten, to_plain
from raypair.experiments.base import Described, Experiment, ListProposer, Proposer, Record, Trial


@dataclass
class SingleRun(Experiment):
    kind: ClassVar[str] = "run"
    name: str
    base_raw: dict[str, Any]
    metric: str = "val_acc"
    mode: str = "max"
    max_concurrent: int = 1

    @property
    def experiment_name(self) -> str:
        return "train"  # every single run in one MLflow experiment, each its own parent run

    def trial_run(self, params: dict[str, Any]) -> RunConfigBase:
        return build_run(self.base_raw)

    def planned_trials(self) -> int:
        return 1

    def proposer(self, exp_dir: Path, known: dict[str, Record]) -> Proposer:
        return ListProposer([Trial("run", {})], self.done_keys(known))

    def done(self, record: Record) -> bool:
        return record.status == "finished"

    def describe(self, trial: Trial) -> Described:
        return Described(self.name, self.name, {"raypair.method": self.base_run.method.name})

    def resolved(self) -> dict[str, Any]:
        from raypair.config.pipeline import resolved

        return to_plain(self.base_run) | {"resolved_pipeline": resolved(self.base_run.data)}

    def outcome(self, records: list[Record], where: Any) -> Any:
        from raypair.experiments.outcome import Outcome

        rec = records[0]
        shown = {k: round(v, 4) for k, v in (rec.rows[-1] if rec.rows else {}).items()
                 if k.startswith(("val_", "test_", "train_")) and isinstance(v, float)}
        return Outcome(f"{rec.status} {self.name}: {shown}\nMLflow: {where.uri} (experiment {where.experiment!r}, "
                       f"parent run {self.name!r})", 0 if rec.status == "finished" else 1)

    def parent(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        plain = to_plain(self.base_run)
        return {"raypair.kind": "run"}, flatten(plain), plain
