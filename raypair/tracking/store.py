"""MLflow, and only here. Everything goes through ``MlflowClient`` with explicit run ids (no global
active run), so the same object works in the Tune driver, in a Ray Train controller and in tests.

Default store: ``sqlite:///<storage>/mlflow.db`` with artifacts in ``<storage>/mlartifacts`` (MLflow 3
refuses the old file store). A run is found again by its ``raypair.key`` tag, so a resumed sweep
reuses each trial's run instead of opening a second one.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml

from raypair.tracking.read import PARENT_TAG, tag_equals

KEY_TAG = "raypair.key"
# MLflow's UI (3.15+) lists experiment tags with this prefix as saved views of the run table
# (JSON {name, createdAt, updatedAt, state}); ?viewStateShareKey=<id> opens one
VIEW_TAG, VIEW_ID = "mlflow.sharedViewState.", "raypair"


def view_route(experiment_id: str, view_id: str = VIEW_ID) -> str:
    """The UI route of an experiment's run table in saved view ``view_id``."""
    return f"#/experiments/{experiment_id}/runs?viewStateShareKey={view_id}"


def default_uri(storage: Path) -> str:
    return f"sqlite:///{Path(storage).resolve() / 'mlflow.db'}"


def git_sha() -> str:
    """The commit of the raypair checkout that runs, with ``-dirty`` if it has local changes."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


class Tracker:
    """One MLflow experiment. Picklable: the client is made lazily in whichever process logs."""

    def __init__(self, uri: str, experiment: str, artifact_root: Optional[str] = None) -> None:
        if artifact_root is None and uri.startswith("sqlite:///"):  # beside the store, never ./mlruns in the cwd
            artifact_root = str(Path(uri[len("sqlite:///"):]).parent / "mlartifacts")
        self.uri, self.experiment, self.artifact_root = uri, experiment, artifact_root
        self._client: Any = None
        self._exp_id: Optional[str] = None
        self._last_step: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri, "experiment": self.experiment, "artifact_root": self.artifact_root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    @property
    def client(self) -> Any:
        if self._client is None:
            import logging

            from mlflow.tracking import MlflowClient

            logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial ... tables"

            with _sqlite_lock(self.uri):  # two sweeps starting on one new store: one creates the tables
                client = MlflowClient(tracking_uri=self.uri)
                client.search_experiments(max_results=1)
            self._client = client
        return self._client

    @property
    def experiment_id(self) -> str:
        if self._exp_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                loc = None
                if self.artifact_root:
                    loc = (Path(self.artifact_root).resolve() / self.experiment).as_uri()
                # MLflow 3's UI opens an experiment of this kind in its model-training view
                self._exp_id = self.client.create_experiment(self.experiment, artifact_location=loc,
                                                             tags={"mlflow.experimentKind": "custom_model_development"})
            else:
                self._exp_id = exp.experiment_id
        return self._exp_id

    # -------------------------------------------------------------------------------- runs
    def find(self, key: str) -> Optional[str]:
        runs = self.client.search_runs([self.experiment_id], filter_string=tag_equals(KEY_TAG, key),
                                       max_results=2)
        return runs[0].info.run_id if runs else None

    def start(self, key: str, name: str, parent: Optional[str] = None,
              tags: Optional[dict[str, str]] = None) -> tuple[str, bool]:
        """The run tagged ``key``: reopened if it exists (returns ``(id, True)``), else created."""
        run_id = self.find(key)
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            return run_id, True
        all_tags = {KEY_TAG: key, "mlflow.runName": name, "raypair.git_sha": git_sha(), **(tags or {})}
        all_tags["mlflow.source.git.commit"] = all_tags["raypair.git_sha"].removesuffix("-dirty")
        if parent:
            all_tags[PARENT_TAG] = parent
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        return run.info.run_id, False

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k[:250], _param_text(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i: i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, Any], step: int, dedupe: bool = True) -> bool:
        """Log the numeric, finite values at ``step``; with ``dedupe``, a step already logged for
        this run is skipped (a resumed trial replays the epochs it had reported)."""
        from mlflow.entities import Metric

        if dedupe and run_id not in self._last_step:
            hist = self.client.get_metric_history(run_id, "epoch")
            self._last_step[run_id] = max((m.step for m in hist), default=0)
        if dedupe and step <= self._last_step[run_id]:
            return False
        now = _now_ms()
        items = [Metric(k, float(v), now, step) for k, v in sorted(metrics.items())
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        for i in range(0, len(items), 200):
            self.client.log_batch(run_id, metrics=items[i: i + 200])
        if dedupe:
            self._last_step[run_id] = step
        return True

    def log_yaml(self, run_id: str, obj: Any, filename: str) -> None:
        self.client.log_text(run_id, yaml.safe_dump(obj, sort_keys=False), filename)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, _param_text(v))

    def save_view(self, name: str, columns: list[tuple[str, str]], order_by: Optional[tuple[str, str]] = None,
                  ascending: bool = False, view_id: str = VIEW_ID) -> str:
        """A saved view of the experiment's run table (MLflow >= 3.15: the Runs page's "Views" menu,
        stored as the experiment tag ``mlflow.sharedViewState.<view_id>``): these ``(kind, key)``
        columns (kind ``params``, ``metrics``, ``tags`` or ``attributes``), sorted by ``order_by``.
        Returns the UI's route that opens it (after ``http://HOST:PORT/``)."""
        col = [f"{kind}.`{key}`" for kind, key in columns]
        state: dict[str, Any] = {"selectedColumns": col}
        if order_by is not None:
            state |= {"orderByKey": f"{order_by[0]}.`{order_by[1]}`", "orderByAsc": ascending}
        now = int(time.time() * 1000)
        envelope = {"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
        self.client.set_experiment_tag(self.experiment_id, VIEW_TAG + view_id, json.dumps(envelope))
        return view_route(self.experiment_id, view_id)

    def store_path(self) -> Optional[Path]:
        """The file of a local (sqlite) store, which opening it would create if it were missing."""
        return Path(self.uri[len("sqlite:///"):]) if self.uri.startswith("sqlite:///") else None

    def run_exists(self, run_id: str) -> bool:
        """Whether this store holds run ``run_id`` in this experiment (not deleted)."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return False
        return run.info.experiment_id == self.experiment_id and run.info.lifecycle_stage == "active"

    def has_params(self, run_id: str) -> bool:
        return bool(self.client.get_run(run_id).data.params)

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)


@contextlib.contextmanager
def _sqlite_lock(uri: str) -> Iterator[None]:
    """An exclusive lock beside a SQLite store while MLflow creates or migrates its tables (MLflow
    does not guard that: a second process dies with ``duplicate column name``)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _param_text(v: Any) -> str:
    return (v if isinstance(v, str) else json.dumps(v))[:6000]


def _now_ms() -> int:
    return int(time.time() * 1000)
