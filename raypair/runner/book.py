"""The driver's bookkeeping of trials: the one MLflow callback, the searcher that asks the
experiment for trials, and the progress lines.

Order, for every trial: its store is written first (``trial.json`` before it starts, ``end.json``
before it is reported finished), then MLflow (one child run per trial key, found again on a
resume; each epoch logged once), then the searcher (Optuna is told last). A driver killed between
any two steps leaves a record that the next start completes (:meth:`Book.reconcile`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from ray import tune
from ray.tune.experiment import Trial as TuneTrial
from ray.tune.search import Searcher

from raypair.config import ConfigError, flatten, to_plain
from raypair.experiments.base import Described, Experiment, Proposer, Record, Trial, config_hash
from raypair.runner.store import TrialStore
from raypair.tracking import Tracker


class Book:
    def __init__(self, exp: Experiment, exp_dir: Path, tracker: Tracker, parent: str, proposer: Proposer) -> None:
        self.exp, self.exp_dir, self.tracker, self.parent, self.proposer = exp, exp_dir, tracker, parent, proposer
        self.runs: dict[str, str] = {}  # trial key -> MLflow run id
        self.shown: dict[str, Described] = {}
        self.closed: set[str] = set()
        self.stopping = False  # the driver was told to stop (SIGINT / SIGTERM)

    def store(self, key: str) -> TrialStore:
        return TrialStore(self.exp_dir / "trials" / key)

    def describe(self, trial: Trial) -> Described:
        if trial.key not in self.shown:
            self.shown[trial.key] = self.exp.describe(trial)
        return self.shown[trial.key]

    def open(self, trial: Trial) -> None:
        """Before the trial starts: its ``trial.json``, then its MLflow run (created, or reopened)."""
        try:
            hash_: Optional[str] = config_hash(self.exp.run_of(trial.params))
        except ConfigError:
            hash_ = None
        self.store(trial.key).create(trial, hash_)
        self.closed.discard(trial.key)
        self._start(trial)

    def _start(self, trial: Trial) -> str:
        """The trial's MLflow run, set RUNNING; its params and ``config.yaml`` unless logged already."""
        try:
            run = self.exp.run_of(trial.params)
            plain: Optional[dict[str, Any]] = to_plain(run)
            extra = {"raypair.config_hash": config_hash(run)}
        except ConfigError as e:
            plain, extra = None, {"raypair.infeasible": str(e)}
        d = self.describe(trial)
        tags = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (d.tags | extra).items()}
        run_id, existed = self.tracker.start(f"{self.parent}/{trial.key}", d.name, parent=self.parent, tags=tags)
        if plain is not None and not (existed and self.tracker.has_params(run_id)):  # a kill may come between
            self.tracker.log_params(run_id, flatten(plain))
            self.tracker.log_yaml(run_id, plain, "config.yaml")
        self.runs[trial.key] = run_id
        return run_id

    def run_id(self, trial: Trial) -> str:
        """The trial's MLflow run, found by its key (never reopened here)."""
        if trial.key not in self.runs:
            run_id = self.tracker.find(f"{self.parent}/{trial.key}")
            if run_id is None:  # the driver died between trial.json and the MLflow run
                run_id = self._start(trial)
            self.runs[trial.key] = run_id
        return self.runs[trial.key]

    def interrupted(self, rec: Record) -> None:
        """A trial with no end after this attempt: its MLflow run KILLED (``--resume`` continues it)."""
        run_id = self.tracker.find(f"{self.parent}/{rec.key}")
        if run_id is not None and self.tracker.status(run_id) == "RUNNING":
            self.tracker.set_tags(run_id, {"raypair.status": "interrupted"})
            self.tracker.end(run_id, "KILLED")

    def log(self, trial: Trial, result: dict[str, Any]) -> None:
        if "epoch" in result and "infeasible" not in result:
            metrics = {k: v for k, v in result.items() if k != "replayed"}
            self.tracker.log_metrics(self.run_id(trial), metrics, step=int(result["epoch"]))

    def close(self, trial: Trial, last: Optional[dict[str, Any]], error: Optional[str] = None) -> None:
        """The trial ended: its end record, then MLflow, then the searcher. Idempotent."""
        if trial.key in self.closed:
            return
        store = self.store(trial.key)
        if self.stopping and error is None and store.end() is None:
            return  # cut off by the stop: no end, so --resume continues it
        if error is not None:
            store.finish("failed", error=error)
        elif store.end() is None:  # the scheduler stopped it, maybe at its last epoch (ASHA's max_t)
            # what it trained: its last result, or more if an earlier attempt got further (a
            # resumed trial that ASHA stops while its history is replayed)
            history = store.history()
            epoch = max(int((last or {}).get("epoch", 0)), int(history[-1]["epoch"]) if history else 0)
            try:
                full = epoch >= self.exp.run_of(trial.params).total_epochs
            except ConfigError:
                full = False
            store.finish("finished" if full else "stopped", epochs=epoch)
        rec = store.record()
        assert rec is not None, f"trial {trial.key} has no trial.json"
        self.settle(rec)

    def settle(self, rec: Record) -> None:
        """MLflow and the searcher in line with an ended record: each recorded epoch logged once,
        the run ended (left alone if an earlier attempt already ended it), the searcher told."""
        run_id = self.run_id(Trial(rec.key, rec.params))
        for row in rec.rows:
            self.tracker.log_metrics(run_id, row, step=int(row["epoch"]))
        want = "FAILED" if rec.status in ("failed", "diverged") else "FINISHED"
        if self.tracker.status(run_id) != want:
            done = int(rec.rows[-1]["epoch"]) if rec.rows else 0
            tags = {"raypair.status": rec.status, "raypair.epochs_done": done,
                    "raypair.stopped_early": rec.status == "stopped", **self._placement(rec.key)}
            if rec.status in ("failed", "diverged", "infeasible"):
                tags["raypair.error"] = (rec.end or {}).get("error", "?")
            self.tracker.set_tags(run_id, tags)
            self.tracker.end(run_id, want)
        self.proposer.tell(rec.key, rec.final(self.exp.metric), rec.status)
        self.closed.add(rec.key)

    def _placement(self, key: str) -> dict[str, Any]:
        """Where the trial ran: its Ray nodes and hosts, and how many attempts it took."""
        workers = self.store(key).workers()
        if not workers:
            return {}
        return {"raypair.nodes": ",".join(sorted({w["node_id"] for w in workers})),
                "raypair.hosts": ",".join(sorted({w["host"] for w in workers})),
                "raypair.attempts": len({(w.get("pid"), w.get("node_id")) for w in workers if w.get("rank") == 0})}

    def reconcile(self, known: dict[str, Record]) -> None:
        """On a resume, before any trial starts: every trial that ended in an earlier attempt is
        settled (the driver may have died between its end record and MLflow or the searcher)."""
        for rec in known.values():
            if rec.end is not None and self.exp.done(rec):
                self.settle(rec)


def key_of(trial: TuneTrial) -> Trial:
    return Trial(trial.config["key"], trial.config["params"])


class Recorder(tune.Callback):
    """The one MLflow callback: per-epoch metrics, and the end of each trial through the Book."""

    def __init__(self, book: Book) -> None:
        self.book = book

    def on_trial_result(self, iteration: int, trials: list, trial: TuneTrial, result: dict, **info: Any) -> None:
        self.book.log(key_of(trial), result)

    def on_trial_complete(self, iteration: int, trials: list, trial: TuneTrial, **info: Any) -> None:
        self.book.close(key_of(trial), trial.last_result)

    def on_trial_error(self, iteration: int, trials: list, trial: TuneTrial, **info: Any) -> None:
        self.book.close(key_of(trial), trial.last_result, error=last_line(trial))

    def on_trial_recover(self, iteration: int, trials: list, trial: TuneTrial, **info: Any) -> None:
        """A crashed trial Tune retries (``tune.max_failures``): it continues from its store."""
        self.book.tracker.set_tags(self.book.run_id(key_of(trial)),
                                   {"raypair.retries": trial.num_failures, "raypair.last_error": last_line(trial)})


class TrialSearcher(Searcher):
    """Tune's searcher over the experiment's :class:`Proposer`; each trial is opened in the Book
    (store, MLflow) before Tune starts it."""

    def __init__(self, book: Book) -> None:
        super().__init__()
        self.book = book

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec: Any) -> bool:
        return True

    def suggest(self, trial_id: str) -> Any:
        trial = self.book.proposer.propose()
        if trial is None:
            return Searcher.FINISHED
        self.book.open(trial)
        return {"key": trial.key, "params": trial.params}

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        return None  # the Book tells the proposer, after the end is recorded

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text("{}")  # resume reads the trial store, not Tune's state

    def restore(self, checkpoint_path: str) -> None:
        return None


def last_line(trial: TuneTrial) -> str:
    try:
        lines = [ln for ln in Path(trial.error_file).read_text().splitlines() if ln.strip()]
        return lines[-1][:200] if lines else "?"
    except (OSError, TypeError):
        return "?"
