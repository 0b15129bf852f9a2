"""The one interface every kind of experiment implements, and the records the runner keeps.

An experiment says *what* to run; ``raypair.runner`` (the only Ray code) says *how*. A sweep
(``sweep.py``), an ablation (``ablation.py``) and a single run (``single.py``) each implement
:class:`Experiment`; a new kind (say, seeds until a difference is significant) is one new file
that implements it and registers a ``Kind`` in the table of kinds (``kinds.py``, or from another
package through the entry-point group ``raypair.kinds``): nothing in the runner or the CLI changes,
for they ask the experiment (its view columns, the runs to check, what ``validate`` prints, what a
command prints at the end) and the table (how a file is recognised and loaded) what they need.

A trial is ``(key, params)``: ``key`` names it for good (its folder, its MLflow run, its Optuna
trial) and ``params`` is what :meth:`Experiment.trial_run` turns into its run config. Trials come
from a :class:`Proposer`, which the runner asks for the next trial and tells each result.

One name per thing: ``base_raw`` is the base run as a plain dict, ``base_run`` the same validated
(once, again only when :meth:`Experiment.pin` changes it), ``trial_run`` one trial's run, and
:meth:`Experiment.resolve` that run validated once on the driver with its config hash
(:class:`ResolvedRun`), the object the trial process and every Train worker receive.
"""
from __future__ import annotations

import abc
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from raypair.config import ConfigError, RunConfigBase, SchedulerConfig, build_run, reported_metrics, set_path, to_plain
from raypair.experiments.outcome import STATUSES, best_record, fmt_value, trial_table  # (re-exported)


FAILED = ("failed", "diverged", "infeasible")  # no result to tell a searcher


@dataclass
class Trial:
    key: str  # stable across resumes: the folder under <exp>/trials/ and the MLflow run's key
    params: dict[str, Any]


@dataclass(frozen=True)
class ResolvedRun:
    """A trial's run, validated once on the driver (:meth:`Experiment.resolve`), with its config
    hash; ``run`` is None for a point a cross-field rule refuses, and ``infeasible`` says why. Ray
    pickles it to the trial process and to every Train worker, which only restore it."""

    run: Optional[RunConfigBase]
    config_hash: Optional[str]
    infeasible: Optional[str] = None

    def __str__(self) -> str:  # Tune writes every config value into the trial's folder name
        return self.config_hash or "infeasible"


@dataclass
class Record:
    """What the trial store holds for one trial (see ``raypair.trials.store``)."""

    key: str
    params: dict[str, Any]
    config_hash: Optional[str] = None
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch, in order
    end: Optional[dict[str, Any]] = None  # {"status": one of STATUSES but unfinished, ...}

    @property
    def status(self) -> str:
        return self.end["status"] if self.end else "unfinished"

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The epochs that count: a stopped trial's history up to the epoch it was stopped at (its
        process may have recorded one more before it died)."""
        stop = (self.end or {}).get("epochs") if self.status == "stopped" else None
        return self.history if stop is None else [r for r in self.history if int(r["epoch"]) <= stop]

    def final(self, metric: str) -> Optional[float]:
        """What a trial tells the searcher: ``metric`` at its last epoch (Ray's convention), None
        if it failed or was infeasible."""
        if self.status in FAILED or not self.rows:
            return None
        value = self.rows[-1].get(metric)
        return float(value) if isinstance(value, (int, float)) else None

    def best(self, metric: str, mode: str) -> Optional[float]:
        values = [float(r[metric]) for r in self.rows if isinstance(r.get(metric), (int, float))]
        values = [v for v in values if v == v]
        if not values:
            return None
        return max(values) if mode == "max" else min(values)


@dataclass
class Described:
    """How a trial shows up in MLflow and in progress lines."""

    name: str  # the MLflow run name
    label: str  # a short human label ("lr=0.01 wd=1e-4", "cutmix seed 2")
    tags: dict[str, Any]


class Proposer(abc.ABC):
    """Hands out trials one at a time and hears how each ended. ``notes``: lines on what it has
    decided so far (a sequential ablation's comparisons), which the live view and the progress
    lines show as they change."""

    notes: list[str] = []

    @abc.abstractmethod
    def propose(self) -> Optional[Trial]:
        """The next trial to run; None when there are no more; :data:`WAIT` when none now, but more
        may come once a running trial ends (:meth:`tell`): a proposer that decides from results."""

    def tell(self, key: str, value: Optional[float], status: str = "finished") -> None:
        """``value`` of the experiment's metric for a trial that ended (None: no result; ``status``
        says why: failed, diverged, infeasible)."""


WAIT = Trial("", {})  # Proposer.propose: "not now, ask again after the next tell"
NOTES_FILE = "notes.json"  # lines a proposer leaves for ``raypair status`` (say, the open comparisons)


def write_notes(exp_dir: Optional[Path], lines: list[str]) -> None:
    """Replace the experiment's notes for ``raypair status`` (atomically: a reader never sees half)."""
    if exp_dir is None:
        return
    tmp = Path(exp_dir) / (NOTES_FILE + ".tmp")
    tmp.write_text(json.dumps({"lines": lines}))
    tmp.replace(Path(exp_dir) / NOTES_FILE)


class ListProposer(Proposer):
    """A fixed list of trials (an ablation's pairs, a random or grid sweep's points), minus those
    already done."""

    def __init__(self, trials: list[Trial], done: set[str]) -> None:
        self.todo = [t for t in trials if t.key not in done]

    def propose(self) -> Optional[Trial]:
        return self.todo.pop(0) if self.todo else None


class Experiment(abc.ABC):
    """A sweep, an ablation, a run: anything the runner can run as trials."""

    kind: ClassVar[str]
    name: str
    base_raw: dict[str, Any]  # the base run as a plain dict, pinned by the runner before trials start
    metric: str
    mode: str
    max_concurrent: int
    max_failures: int = 0

    @property
    def experiment_name(self) -> str:
        """The MLflow experiment its runs go to (default: its name)."""
        return self.name

    # ------------------------------------------------------------------ what the runner asks
    @abc.abstractmethod
    def trial_run(self, params: dict[str, Any]) -> RunConfigBase:
        """The run config of one trial, validated (ConfigError: the point is infeasible)."""

    def resolve(self, trial: Trial) -> ResolvedRun:
        """The trial's run, validated once, with its hash; an infeasible point is no error here."""
        try:
            run = self.trial_run(trial.params)
        except ConfigError as e:
            return ResolvedRun(None, None, str(e))
        return ResolvedRun(run, config_hash(run))

    @abc.abstractmethod
    def proposer(self, exp_dir: Path, known: dict[str, Record]) -> Proposer:
        """Where trials come from; ``known`` are the trials recorded by earlier attempts."""

    @abc.abstractmethod
    def describe(self, trial: Trial) -> Described:
        """MLflow name, progress label and tags of a trial."""

    @abc.abstractmethod
    def parent(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The parent run's (tags, params, document): the document is logged as ``<kind>.yaml``."""

    def planned_trials(self) -> Optional[int]:
        """How many trials it runs in all, if known (the progress view's denominator)."""
        return None

    def done(self, record: Record) -> bool:
        """Whether a recorded trial needs no more running (default: it ended in any way)."""
        return record.end is not None

    def fingerprint(self) -> Optional[str]:
        """What may not change between a start and its ``--resume`` beyond each trial's run (a
        sweep's space and searcher); None: nothing."""
        return None

    def done_keys(self, known: dict[str, Record]) -> set[str]:
        return {k for k, r in known.items() if self.done(r)}

    def scheduler(self) -> Optional[SchedulerConfig]:
        """An early-stopping scheduler (ASHA) over the trials, or None."""
        return None

    def view_keys(self) -> list[tuple[str, str]]:
        """What tells its trials apart in the MLflow run table, as ``(params|tags, key)`` columns."""
        return []

    def checked_runs(self) -> dict[str, RunConfigBase]:
        """The distinct runs whose model and data are checked before anything starts, each under the
        prefix its errors carry (default: the base run, errors as its own fields)."""
        return {"": self.base_run}

    def resolved(self) -> dict[str, Any]:
        """What ``raypair validate`` prints of it (default: its name and its resolved base run)."""
        return {"name": self.name, "run": to_plain(self.base_run)}

    def outcome(self, records: list[Record], where: Any) -> Any:
        """What the command that ran it prints (an ``outcome.Outcome``), told where the results
        are (an ``outcome.Where``); default: a line per trial, the counts, the best, the MLflow store."""
        out = trial_table(self, records)
        out.text += (f"\nMLflow: {where.uri} (experiment {where.experiment!r}); browse: raypair ui --storage "
                     f"{where.storage}, then http://127.0.0.1:5000/{where.route}")
        return out

    def resource_runs(self) -> list[RunConfigBase]:
        """Runs whose resources bound how many trials fit at once (default: the base run)."""
        return [self.base_run]

    def summary(self, records: list[Record]) -> tuple[dict[str, Any], dict[str, float]]:
        """The parent run's (tags, metrics) once the trials ended: counts and the best trial."""
        tags: dict[str, Any] = {"raypair.trials": len(records)}
        for status in STATUSES:
            tags[f"raypair.trials_{status}"] = sum(r.status == status for r in records)
        best = best_record(records, self.metric, self.mode)
        if best is None:
            return tags, {}
        tags |= {"raypair.best_trial": best.key} | {f"raypair.best.{k}": v for k, v in best.params.items()}
        return tags, {f"best_{self.metric}": best.best(self.metric, self.mode)}  # type: ignore[dict-item]

    # ----------------------------------------------------------------------------- helpers
    @functools.cached_property
    def base_run(self) -> RunConfigBase:
        """``base_raw`` validated, once (:meth:`pin` drops it, so the next read validates the pinned one)."""
        return build_run(self.base_raw)

    def pin(self, values: dict[str, Any]) -> None:
        """Settle fields the driver's surroundings decide (absolute data paths, ``auto`` GPUs)."""
        for path, value in values.items():
            self.base_raw = set_path(self.base_raw, path, value)
        self.__dict__.pop("base_run", None)


def check_metric(field: str, name: str, runs: list[RunConfigBase]) -> None:
    """``name`` must be a metric that (at least one of) ``runs`` report, as their methods declare
    (``MethodConfig.eval_heads`` / ``train_metrics``): else a one-line ConfigError naming ``field``."""
    reported = set().union(*(reported_metrics(r.method) for r in runs))
    if name not in reported:
        names = sorted({r.method.name for r in runs})
        who = f"method {names[0]} reports" if len(names) == 1 else f"methods {', '.join(names)} report"
        shown = sorted(m for m in reported if m.startswith("val_acc") and not m.startswith("val_acc5")
                       or m in ("train_loss", "test_acc"))
        raise ConfigError(field, f"not a metric that {who} (e.g. {', '.join(shown)})", name)


def config_hash(run: RunConfigBase) -> str:
    """What decides a trial's result: the run minus its name, data location and resources."""
    plain = to_plain(run)
    plain.pop("name")
    plain.pop("scale")
    plain["data"] = {k: v for k, v in plain["data"].items() if k not in ("root", "cache_dir")}
    return hashlib.sha1(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]
