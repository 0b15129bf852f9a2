"""The report of a sweep: the best trials and their parameters (and, beside the sweep's metric, the
last accuracy of every other evaluation head the trials report: both VPL branches), and each
parameter's importance by Optuna's fANOVA over the finished trials. Written as ``report.md``, ``report.csv``,
``importance.png`` (when there is an estimate) and ``curves.png`` (the best trials' learning curves)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from raypair.report import plots
from raypair.report.cells import num, short, write_csv
from raypair.tracking.read import Child, Parent

SEARCH_TAG = "raypair.search."


@dataclass
class Trial:
    """One child run of the sweep, as the report shows it."""

    trial: str
    status: str
    epochs: str
    best: Optional[float]  # best value of the sweep's metric over the trial's epochs
    last: Optional[float]  # the last reported value (what the sweep's Optuna study recorded)
    params: dict[str, Any]
    child: Child


def _tag_value(text: str) -> Any:
    """Searched values are tagged as JSON, strings as they are."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def trials_of(children: list[Child], metric: str, mode: str) -> list[Trial]:
    """Each child run as a ``Trial``: its searched parameters and its best and last ``metric``."""
    trials = []
    for c in children:
        params = {k.removeprefix(SEARCH_TAG): _tag_value(v) for k, v in c.tags.items()
                  if k.startswith(SEARCH_TAG) and k != SEARCH_TAG + "infeasible"}
        curve = (c.curves.get(metric) or {}) if c.status == "FINISHED" else {}
        best = (max if mode == "max" else min)(curve.values()) if curve else None
        trials.append(Trial(c.tags.get("raypair.trial_id", c.name), c.status, c.tags.get("raypair.epochs_done", "?"),
                            best, c.final.get(metric), params, c))
    return trials


def head_metrics(children: list[Child], metric: str) -> list[str]:
    """The per-head accuracies the trials report besides ``metric`` (``val_acc``, ``val_acc_cnn``,
    ``val_acc_vit`` ...; top-5 left out), so a two-branch method's report shows both branches."""
    found = {k for c in children for k in c.final if k.startswith("val_acc") and not k.startswith("val_acc5")}
    return sorted(found - {metric}) if len(found) > 1 else []


def _best_table(trials: list[Trial], ranked: list[Trial], parent: Parent, names: list[str], metric: str,
                mode: str, top: int, heads: list[str]) -> list[str]:
    lines = [f"# Sweep `{parent.tags.get('mlflow.runName', '')}`", "",
             f"Parent run `{parent.run_id}`: {len(trials)} trials, {len(ranked)} with a {metric}. "
             f"Ranked by the best {metric} over each trial's epochs ({mode}).", "",
             f"## Best {min(top, len(ranked))} trials", "",
             f"| rank | trial | epochs | best {metric} | last {metric} | "
             + "".join(f"last {h} | " for h in heads) + " | ".join(names) + " |",
             "|---" * (5 + len(heads) + len(names)) + "|"]
    for i, t in enumerate(ranked[:top], 1):
        vals = " | ".join(short(t.params.get(n)) for n in names)
        other = "".join(f"{short(t.child.final.get(h))} | " for h in heads)
        lines.append(f"| {i} | {t.trial} | {t.epochs} | {t.best:.4f} | {short(t.last)} | {other}{vals} |")
    return lines


def _importance_table(importance: dict[str, float], metric: str) -> list[str]:
    lines = ["", "## Parameter importance", ""]
    if not importance:
        return lines + ["Too few finished trials (or no varied parameter) for an importance estimate."]
    return lines + ["Optuna fANOVA over the finished trials, objective: each trial's last reported "
                    f"{metric} (the value the sweep's Optuna study recorded).", "", "| parameter | importance |",
                    "|---|---|"] + [f"| {k} | {v:.3f} |" for k, v in importance.items()]


def _write_csv(path: Path, trials: list[Trial], names: list[str], metric: str, heads: list[str]) -> None:
    write_csv(path, ["trial", "status", "epochs", f"best_{metric}", f"last_{metric}", *(f"last_{h}" for h in heads),
                     *names],
              ([t.trial, t.status, t.epochs, num(t.best), num(t.last), *(num(t.child.final.get(h)) for h in heads),
                *(t.params.get(n, "") for n in names)] for t in trials))


def sweep_report(sweep: dict[str, Any], parent: Parent, children: list[Child], out: Path, top: int) -> list[Path]:
    """Write the sweep's tables and figures into ``out``; ``sweep`` is the parent's ``sweep.yaml``."""
    metric, mode = sweep["tune"]["metric"], sweep["tune"]["mode"]
    trials = trials_of(children, metric, mode)
    ranked = sorted([t for t in trials if t.best is not None], key=lambda t: t.best, reverse=mode == "max")
    importance = param_importance(sweep, trials)
    names, heads = list(sweep.get("space", {})), head_metrics(children, metric)
    lines = _best_table(trials, ranked, parent, names, metric, mode, top, heads) + _importance_table(importance, metric)
    files = [out / "report.md", out / "report.csv"]
    figures = [plots.importance(importance, out / "importance.png")] if importance else []
    figures.append(plots.sweep_curves([t.child for t in ranked[:5]], metric, out / "curves.png"))
    lines += [""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    files[0].write_text("\n".join(lines))
    _write_csv(files[1], trials, names, metric, heads)
    return files + figures


def _distributions(space: dict[str, Any]) -> dict[str, Any]:
    """The Optuna distribution of each searched parameter of a ``sweep.yaml`` space."""
    import optuna

    dists = {}
    for name, spec in space.items():
        kind, args = next(iter(spec.items()))
        dists[name] = {"uniform": lambda: optuna.distributions.FloatDistribution(*args),
                       "loguniform": lambda: optuna.distributions.FloatDistribution(*args, log=True),
                       "int": lambda: optuna.distributions.IntDistribution(*args),
                       "choice": lambda: optuna.distributions.CategoricalDistribution(args),
                       "grid": lambda: optuna.distributions.CategoricalDistribution(args)}[kind]()
    return dists


def param_importance(sweep: dict[str, Any], trials: list[Trial]) -> dict[str, float]:
    """fANOVA importances from an Optuna study rebuilt from the MLflow trials (any tracking URI)."""
    import optuna

    dists = _distributions(sweep.get("space", {}))
    done = [t for t in trials if t.status == "FINISHED" and t.last is not None and math.isfinite(t.last)
            and set(t.params) >= set(dists)]
    varied = [n for n in dists if len({json.dumps(t.params[n]) for t in done}) > 1]
    if len(done) < 3 or not varied:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if sweep["tune"]["mode"] == "max" else "minimize")
    for t in done:
        study.add_trial(optuna.trial.create_trial(params={n: t.params[n] for n in dists}, distributions=dists,
                                                  value=float(t.last)))
    return dict(optuna.importance.get_param_importances(study, params=varied))
