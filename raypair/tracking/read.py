"""What ``raypair report`` reads back from MLflow, as plain data: the experiment, the newest
raypair parent run (``Parent``), its child runs with their final metrics and histories (``Child``),
an artifact's text; and the one write a report makes, its files logged under the parent run.

Filter strings are built by ``tag_equals`` only: MLflow's filter parser strips the quotes around
a value and unescapes nothing, so a value is quoted with the quote character it does not hold
(``"it's"``), and a value that cannot be written unambiguously (both quote characters, or a
trailing backslash that sqlparse reads as escaping the closing quote) is refused with a
``ValueError`` instead of being searched for as some other string.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

PARENT_TAG = "mlflow.parentRunId"  # how MLflow links a child run to its parent

KIND_TAG = "raypair.kind"


@dataclass
class Child:
    """One child run (a trial, or one (variant, seed) pair of an ablation)."""

    name: str
    status: str
    tags: dict[str, str]
    final: dict[str, float]  # last logged value of every metric
    curves: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> step -> value


@dataclass(frozen=True)
class Parent:
    """The parent run of a sweep or an ablation."""

    run_id: str
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    start_time: int = 0  # ms since the epoch

    @property
    def kind(self) -> str:
        """``ablation`` or ``sweep``: the run's ``raypair.kind`` tag."""
        return self.tags[KIND_TAG]


def filter_value(value: str) -> str:
    """``value`` as a string literal of an MLflow search filter that MLflow reads back as ``value``."""
    if value.endswith("\\"):
        raise ValueError(f"an MLflow filter cannot hold a value ending in a backslash: {value!r}")
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    raise ValueError(f"an MLflow filter cannot hold a value with both quote characters: {value!r}")


def tag_equals(key: str, value: str) -> str:
    """The filter ``tags.`key` = 'value'``, with ``value`` quoted by ``filter_value``."""
    if "`" in key:
        raise ValueError(f"a tag key in an MLflow filter cannot hold a backtick: {key!r}")
    return f"tags.`{key}` = {filter_value(value)}"


class RunReader:
    """Reads one tracking URI through ``MlflowClient`` (made on first use: importing this is cheap)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The ``MlflowClient`` of ``uri``; artifact downloads print no progress bar."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def experiment_id(self, name: str) -> Optional[str]:
        """The id of the experiment called ``name``; None if there is none."""
        exp = self.client.get_experiment_by_name(name)
        return None if exp is None else str(exp.experiment_id)

    def newest_parent(self, experiment_id: str, kinds: Sequence[str]) -> Optional[Parent]:
        """The newest run of the experiment tagged ``raypair.kind`` one of ``kinds``; None if none is."""
        runs = [r for kind in kinds
                for r in self.client.search_runs([experiment_id], filter_string=tag_equals(KIND_TAG, kind),
                                                 order_by=["attributes.start_time DESC"], max_results=1)]
        if not runs:
            return None
        r = max(runs, key=lambda r: r.info.start_time)
        return Parent(r.info.run_id, dict(r.data.tags), dict(r.data.params), dict(r.data.metrics),
                      int(r.info.start_time))

    def children(self, experiment_id: str, parent_id: str, curves: Sequence[str]) -> list[Child]:
        """The child runs of ``parent_id``, with the history of each metric in ``curves`` (by step) for
        the finished ones."""
        runs = self.client.search_runs([experiment_id], filter_string=tag_equals(PARENT_TAG, parent_id),
                                       max_results=10000)
        out = []
        for r in runs:
            c = Child(r.info.run_name, r.info.status, dict(r.data.tags), dict(r.data.metrics))
            if r.info.status == "FINISHED":
                for m in dict.fromkeys(curves):
                    c.curves[m] = {h.step: h.value for h in self.client.get_metric_history(r.info.run_id, m)}
            out.append(c)
        return out

    def artifact_text(self, run_id: str, path: str, limit: int = 1 << 20) -> str:
        """The text of the artifact at ``path`` of run ``run_id``: its first ``limit`` + 1 characters
        at most (a reader that asks for ``limit`` finds a longer file too long, not a truncated one)."""
        with tempfile.TemporaryDirectory() as d:
            with open(self.client.download_artifacts(run_id, path, d), encoding="utf-8", errors="replace") as f:
                return f.read(limit + 1)

    def log_files(self, run_id: str, files: Sequence[Path], folder: str) -> None:
        """Log each of ``files`` as an artifact of ``run_id`` under ``folder``."""
        for f in files:
            self.client.log_artifact(run_id, str(f), folder)
