"""``raypair report EXPERIMENT``: tables and figures from MLflow, for ablations and sweeps.

Reads any tracking URI through ``raypair.tracking.read`` (the newest raypair parent run of the
experiment, its ``ablation.yaml`` or ``sweep.yaml`` artifact and its child runs) and writes into
one folder, then logs the same files under ``report/`` of the parent run:

- ablation (``ablation.py``): ``report.md`` and ``report.csv`` (per variant and metric: n seeds,
  mean ± 95% CI (Student t), the difference to the reference variant with its interval (paired
  over seeds when both ran the same seeds, else Welch), the paper's number beside ours),
  ``bars.png`` (means with their intervals, the paper's numbers as markers) and ``curves.png``
  (per-epoch mean and interval band of every variant).
- sweep (``sweep.py``): ``report.md`` and ``report.csv`` (the best trials and their parameters,
  each parameter's importance by Optuna's fANOVA over the finished trials), ``importance.png``
  and ``curves.png`` (the best trials' learning curves).

``stats.py`` holds the intervals, ``plots.py`` the figures, ``cells.py`` the number formats. No
module here imports MLflow.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from raypair.config import ConfigError
from raypair.experiments.ablation import from_plain
from raypair.report.ablation import ablation_report
from raypair.report.plots import CURVES
from raypair.report.sweep import sweep_report
from raypair.tracking.read import RunReader

KINDS = ("ablation", "sweep")


def report(uri: str, experiment: str, out: Path, top: int = 10, log: bool = True) -> list[Path]:
    """Write the report of the newest ablation or sweep of ``experiment`` at ``uri`` into ``out``
    (``top`` best trials for a sweep); with ``log``, also log the files to its parent run."""
    reader = RunReader(uri)
    exp_id = reader.experiment_id(experiment)
    if exp_id is None:
        raise ConfigError("experiment", f"no MLflow experiment of that name at {uri}", experiment)
    parent = reader.newest_parent(exp_id, KINDS)
    if parent is None:
        raise ConfigError("experiment", "holds no raypair ablation or sweep run", experiment)
    out.mkdir(parents=True, exist_ok=True)
    sweep_metric = [] if parent.kind == "ablation" else [str(parent.params.get("tune.metric", "val_acc"))]
    children = reader.children(exp_id, parent.run_id, [*CURVES, *sweep_metric])
    if parent.kind == "ablation":
        ab = from_plain(yaml.safe_load(reader.artifact_text(parent.run_id, "ablation.yaml")))
        files = ablation_report(ab, parent, children, out)
    else:
        sweep = yaml.safe_load(reader.artifact_text(parent.run_id, "sweep.yaml"))
        files = sweep_report(sweep, parent, children, out, top)
    if log:
        reader.log_files(parent.run_id, files, "report")
    return files


__all__ = ["report"]
