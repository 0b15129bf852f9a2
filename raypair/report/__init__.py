"""``raypair report EXPERIMENT``: tables and figures from MLflow, for ablations and sweeps.

Reads any tracking URI through ``raypair.tracking.read`` (the newest raypair parent run of the
experiment, its ``ablation.yaml`` or ``sweep.yaml`` artifact and its child runs) and writes into
one folder, then logs the same files under ``report/`` of the parent run:

- ablation (``ablation.py``): ``report.md`` and ``report.csv`` (per variant and metric: n seeds,
  mean ± 95% CI (Student t), the difference to the reference variant with its interval (paired
  over seeds when both ran the same seeds, else Welch), the paper's number beside ours),
  ``bars.png`` (means with their intervals, the paper's numbers as markers) and ``curves.png``
  (per-epoch mean and interval band of every variant).
- sequential (``sequential.py``): the ablation's files, and per comparison its path (seeds,
  estimate, interval and state at each look), when it was decided, the seeds spent against the
  fixed design (``sequential.csv``, ``path.png``).
- sweep (``sweep.py``): ``report.md`` and ``report.csv`` (the best trials and their parameters,
  each parameter's importance by Optuna's fANOVA over the finished trials), ``importance.png``
  and ``curves.png`` (the best trials' learning curves).

``stats.py`` holds the intervals, ``plots.py`` the figures, ``cells.py`` the number formats. No
module here imports MLflow.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from raypair.config import ConfigError
from raypair.config.yamlio import MAX_BYTES, YamlProblem, load_text
from raypair.experiments.ablation import from_plain
from raypair.experiments.seqkind import sequential_from_plain
from raypair.registry import Registry
from raypair.report.ablation import ablation_report
from raypair.report.plots import CURVES
from raypair.report.sequential import sequential_report
from raypair.report.sweep import sweep_report
from raypair.tracking.read import Child, Parent, RunReader


@dataclass(frozen=True)
class ReportKind:
    """How the report of one kind of experiment is made: the metrics whose per-epoch history its
    child runs are read with (beyond ``CURVES``), and the writer of its files."""

    metrics: Callable[[Parent], list[str]]
    write: Callable[[RunReader, Parent, list[Child], Path, int], list[Path]]


# the kinds of experiment a report is written for, by their parent run's ``raypair.kind`` tag
REPORTS: Registry[ReportKind] = Registry("report kind")
REPORTS.register("ablation")(ReportKind(
    metrics=lambda parent: [],
    write=lambda reader, parent, children, out, top: ablation_report(
        from_plain(logged_yaml(reader, parent, "ablation.yaml")), parent, children, out)))
REPORTS.register("sequential")(ReportKind(
    metrics=lambda parent: [],
    write=lambda reader, parent, children, out, top: sequential_report(
        sequential_from_plain(logged_yaml(reader, parent, "sequential.yaml")), parent, children, out)))
REPORTS.register("sweep")(ReportKind(
    metrics=lambda parent: [str(parent.params.get("tune.metric", "val_acc"))],
    write=lambda reader, parent, children, out, top: sweep_report(
        logged_yaml(reader, parent, "sweep.yaml"), parent, children, out, top)))


def logged_yaml(reader: RunReader, parent: Parent, name: str) -> Any:
    """The YAML document the parent run logged as ``name``, read with the limits of a config file
    (size, depth, aliases, duplicate keys): a store is not trusted more than a file given on the
    command line. Anything else is a ConfigError naming the run and the artifact."""
    try:
        return load_text(reader.artifact_text(parent.run_id, name, limit=MAX_BYTES))
    except YamlProblem as e:
        raise ConfigError("experiment", f"its parent run {parent.run_id} logged a {name} that cannot be read: {e}",
                          parent.run_id) from None


def report(uri: str, experiment: str, out: Path, top: int = 10, log: bool = True) -> list[Path]:
    """Write the report of the newest reported experiment (ablation, sweep: ``REPORTS``) of
    ``experiment`` at ``uri`` into ``out`` (``top`` best trials for a sweep); with ``log``, also
    log the files to its parent run."""
    reader = RunReader(uri)
    exp_id = reader.experiment_id(experiment)
    if exp_id is None:
        raise ConfigError("experiment", f"no MLflow experiment of that name at {uri}", experiment)
    parent = reader.newest_parent(exp_id, REPORTS.names())
    if parent is None:
        raise ConfigError("experiment", f"holds no raypair {' or '.join(REPORTS.names())} run", experiment)
    kind = REPORTS.get(parent.kind)
    out.mkdir(parents=True, exist_ok=True)
    children = reader.children(exp_id, parent.run_id, [*CURVES, *kind.metrics(parent)])
    files = kind.write(reader, parent, children, out, top)
    if log:
        reader.log_files(parent.run_id, files, "report")
    return files


__all__ = ["REPORTS", "ReportKind", "logged_yaml", "report"]
