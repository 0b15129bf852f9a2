"""The driver's bookkeeping of trials, without Ray: each trial's run resolved once, its store, its
MLflow run, the searcher told. ``raypair.runner.adapters`` calls it from Tune's callback and searcher.

Order, for every trial: its store is written first (``trial.json`` before it starts, ``end.json``
before it is reported finished), then MLflow (one child run per trial key, found again on a
resume; each epoch logged once), then the searcher (Optuna is told last). A driver killed between
any two steps leaves a record that the next start completes (:meth:`Book.reconcile`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from raypair.config import ConfigError, flatten, to_plain
from raypair.experiments.base import Described, Experiment, Proposer, Record, ResolvedRun, Trial
from raypair.tracking import Tracker
from raypair.trials import provenance
from raypair.trials.store import TrialStore


class Book:
    def __init__(self, exp: Experiment, exp_dir: Path, tracker: Tracker, parent: str, proposer: Proposer) -> None:
        self.exp, self.exp_dir, self.tracker, self.parent, self.proposer = exp, exp_dir, tracker, parent, proposer
        self.runs: dict[str, str] = {}  # trial key -> MLflow run id
        self.resolved: dict[str, ResolvedRun] = {}  # trial key -> its run, validated once
        self.shown: dict[str, Described] = {}
        self.closed: set[str] = set()
        self.stopping = False  # the driver was told to stop (SIGINT / SIGTERM, a storage fault)
        self.fault: Optional[str] = None  # the storage fault that paused the experiment

    def store(self, key: str) -> TrialStore:
        return TrialStore(self.exp_dir / "trials" / key)

    def describe(self, trial: Trial) -> Described:
        if trial.key not in self.shown:
            self.shown[trial.key] = self.exp.describe(trial)
        return self.shown[trial.key]

    def resolve(self, trial: Trial) -> ResolvedRun:
        """The trial's run, validated the first time it is asked for in this driver (when the trial
        is opened), then this same object: for its store, MLflow, its resources, its end, and the
        trial process and Train workers it is sent to."""
        if trial.key not in self.resolved:
            self.resolved[trial.key] = self.exp.resolve(trial)
        return self.resolved[trial.key]

    def open(self, trial: Trial) -> ResolvedRun:
        """Before the trial starts: its run resolved, its ``trial.json``, then its MLflow run
        (created, or reopened). Returns what the trial is sent."""
        rec = self.store(trial.key).record()
        if rec is not None and ((rec.end is not None and self.exp.done(rec))
                                or (rec.rows and rec.params != json.loads(json.dumps(trial.params, default=str)))):
            raise ConfigError("--resume", f"trial {trial.key} was proposed again with other params, or after it ended: "
                              "the searcher's study does not match the trial store", trial.key)
        resolved = self.resolve(trial)
        self.store(trial.key).create(trial, resolved.config_hash)
        self.closed.discard(trial.key)
        self._start(trial)
        return resolved

    def _start(self, trial: Trial) -> str:
        """The trial's MLflow run, set RUNNING; its params and ``config.yaml`` unless logged already."""
        resolved = self.resolve(trial)
        if resolved.run is not None:
            plain: Optional[dict[str, Any]] = to_plain(resolved.run)
            extra = {"raypair.config_hash": resolved.config_hash}
        else:
            plain, extra = None, {"raypair.infeasible": resolved.infeasible}
        d = self.describe(trial)
        tags = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (d.tags | extra | provenance.tags()).items()}
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
            run = self.resolve(trial).run
            full = run is not None and epoch >= run.total_epochs
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
