"""``raypair report EXPERIMENT``: tables and figures from MLflow, for ablations and sweeps.

Reads any tracking URI through ``MlflowClient`` (the newest raypair parent run of the experiment,
its ``ablation.yaml`` or ``sweep.yaml`` artifact and its child runs) and writes into one folder,
then logs the same files under ``report/`` of the parent run:

- ablation: ``report.md`` and ``report.csv`` (per variant and metric: n seeds, mean ± 95% CI
  (Student t), the difference to the reference variant with its interval (paired over seeds
  when both ran the same seeds, else Welch), the paper's number beside ours), ``bars.png``
  (means with their intervals, the paper's numbers as markers) and ``curves.png`` (per-epoch
  mean and interval band of every variant).
- sweep: ``report.md`` and ``report.csv`` (the best trials and their parameters, each
  parameter's importance by Optuna's fANOVA over the finished trials), ``importance.png`` and
  ``curves.png`` (the best trials' learning curves).
"""
from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from raypair import report_plots
from raypair.ablation import Ablation, from_plain
from raypair.config import ConfigError
from raypair.stats import Interval, diff_ci, mean_ci

CURVES = ("val_acc", "train_loss")


@dataclass
class Child:
    name: str
    status: str
    tags: dict[str, str]
    final: dict[str, float]  # last logged value of every metric
    curves: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> step -> value


def report(uri: str, experiment: str, out: Path, top: int = 10, log: bool = True) -> list[Path]:
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ConfigError("experiment", f"no MLflow experiment of that name at {uri}", experiment)
    parents = [r for kind in ("ablation", "sweep")
               for r in client.search_runs([exp.experiment_id], filter_string=f"tags.`raypair.kind` = '{kind}'",
                                           order_by=["attributes.start_time DESC"], max_results=1)]
    if not parents:
        raise ConfigError("experiment", "holds no raypair ablation or sweep run", experiment)
    parent = max(parents, key=lambda r: r.info.start_time)  # the newest
    out.mkdir(parents=True, exist_ok=True)
    kind = parent.data.tags["raypair.kind"]
    sweep_metric = [] if kind == "ablation" else [str(parent.data.params.get("tune.metric", "val_acc"))]
    children = _children(client, exp.experiment_id, parent.info.run_id, [*CURVES, *sweep_metric])
    if kind == "ablation":
        ab = from_plain(yaml.safe_load(_artifact(client, parent.info.run_id, "ablation.yaml")))
        files = ablation_report(ab, parent, children, out)
    else:
        sweep = yaml.safe_load(_artifact(client, parent.info.run_id, "sweep.yaml"))
        files = sweep_report(sweep, parent, children, out, top)
    if log:
        for f in files:
            client.log_artifact(parent.info.run_id, str(f), "report")
    return files


def _artifact(client: Any, run_id: str, path: str) -> str:
    with tempfile.TemporaryDirectory() as d:
        return Path(client.download_artifacts(run_id, path, d)).read_text()


def _children(client: Any, exp_id: str, parent: str, curves: list[str]) -> list[Child]:
    runs = client.search_runs([exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'", max_results=10000)
    out = []
    for r in runs:
        c = Child(r.info.run_name, r.info.status, dict(r.data.tags), dict(r.data.metrics))
        if r.info.status == "FINISHED":
            for m in dict.fromkeys(curves):
                c.curves[m] = {h.step: h.value for h in client.get_metric_history(r.info.run_id, m)}
        out.append(c)
    return out


# ----------------------------------------------------------------------------------- ablation
def _sha(sha: str) -> str:
    return sha[:12] + ("-dirty" if sha.endswith("-dirty") else "")


def _scale(metric: str) -> float:
    """Accuracies are shown in percent, like the papers; losses as they are."""
    return 100.0 if "acc" in metric else 1.0


@dataclass
class Row:
    variant: str
    metric: str
    values: dict[int, float]  # seed -> final value (in the shown unit)
    ci: Optional[Interval]
    reference: Optional[str] = None
    diff: Optional[Interval] = None
    paper: Optional[tuple[float, Optional[float]]] = None
    paper_diff: Optional[float] = None


def ablation_rows(ab: Ablation, children: list[Child]) -> list[Row]:
    """One row per (metric, variant): our interval, the difference to the reference, the paper."""
    per: dict[str, dict[str, dict[int, float]]] = {m: {v: {} for v in ab.variants} for m in ab.metrics}
    for c in children:
        v, seed = c.tags.get("raypair.variant"), c.tags.get("raypair.seed")
        if c.status != "FINISHED" or v not in ab.variants or seed is None:
            continue
        for m in ab.metrics:
            if m in c.final and math.isfinite(c.final[m]):
                per[m][v][int(seed)] = c.final[m] * _scale(m)
    rows = []
    for m in ab.metrics:
        for v in ab.variants:
            vals = per[m][v]
            ref = ab.reference_of(v)
            row = Row(v, m, vals, mean_ci(list(vals.values())) if vals else None, ref)
            if ref is not None and ref in per[m]:
                row.diff = diff_ci(vals, per[m][ref])
            row.paper = ab.paper_value(v, m)
            if ab.paper and row.paper:
                if ab.paper.kind == "delta":
                    row.paper_diff, row.paper = row.paper[0], None
                elif ref is not None and ab.paper_value(ref, m):
                    row.paper_diff = row.paper[0] - ab.paper_value(ref, m)[0]  # type: ignore[index]
            rows.append(row)
    return rows


def _pm(iv: Optional[Interval], digits: int = 2) -> str:
    if iv is None:
        return "–"
    if not math.isfinite(iv.half):
        return f"{iv.mean:.{digits}f} (n=1)"
    return f"{iv.mean:.{digits}f} ± {iv.half:.{digits}f}"


def _diff(iv: Optional[Interval]) -> str:
    if iv is None:
        return "–"
    star = " *" if iv.excludes_zero() else ""
    if not math.isfinite(iv.half):
        return f"{iv.mean:+.2f}"
    return f"{iv.mean:+.2f} [{iv.low:+.2f}, {iv.high:+.2f}]{star}"


def _paper(p: Optional[tuple[float, Optional[float]]]) -> str:
    if p is None:
        return "–"
    return f"{p[0]:.2f}" + (f" ± {p[1]:.2f}" if p[1] is not None else "")


def ablation_report(ab: Ablation, parent: Any, children: list[Child], out: Path) -> list[Path]:
    rows = ablation_rows(ab, children)
    done = sum(c.status == "FINISHED" for c in children)
    shas = sorted({_sha(c.tags.get("raypair.git_sha", "?")) for c in children})
    lines = [f"# {ab.title or ab.name}", "",
             f"Experiment `{ab.name}`, parent run `{parent.info.run_id}`: {done} of {len(ab.pairs())} "
             f"(variant, seed) runs finished, seeds {ab.seeds}, code {', '.join(shas)}."
             + (" Quick profile: a small CPU setting, not comparable with the paper's numbers." if ab.quick else ""),
             "", "Mean ± 95% confidence interval over seeds (Student t). Δ: difference to the reference "
             "variant with its 95% interval, paired over seeds when both ran the same seeds (else Welch); "
             "* marks an interval that excludes 0."]
    if ab.paper:
        lines += ["", f"Paper: {ab.paper.source}." + (f" {ab.paper.note}" if ab.paper.note else "")]
    for m in ab.metrics:
        unit = " (%)" if _scale(m) == 100 else ""
        lines += ["", f"## {m}{unit}", "", "| variant | n | mean ± 95% CI | Δ vs reference [95% CI] | paper | paper Δ |",
                  "|---|---|---|---|---|---|"]
        for r in (r for r in rows if r.metric == m):
            ref = "reference" if r.reference is None else _diff(r.diff) + f" vs {r.reference}"
            pd = "–" if r.paper_diff is None else f"{r.paper_diff:+.2f}"
            lines.append(f"| {r.variant} | {len(r.values)} | {_pm(r.ci)} | {ref} | {_paper(r.paper)} | {pd} |")
        lines += _pivot(ab, [r for r in rows if r.metric == m])
    failed = [c for c in children if c.status != "FINISHED"]
    if failed:
        lines += ["", "Runs not finished: " + ", ".join(f"{c.name} ({c.status})" for c in failed)]
    files = [out / "report.md", out / "report.csv"]
    bars = report_plots.bars(ab, [r for r in rows if r.metric == ab.metrics[0]], out / "bars.png")
    curves = report_plots.ablation_curves(ab, children, out / "curves.png")
    lines += ["", f"![{ab.metrics[0]} per variant]({bars.name})", "", f"![learning curves]({curves.name})", ""]
    files[0].write_text("\n".join(lines))
    _write_csv(files[1], ab, rows)
    return files + [bars, curves]


def _pivot(ab: Ablation, rows: list[Row]) -> list[str]:
    """With two or more factors, the paper's layout: the last factor across, the others down."""
    factors = list(next(iter(ab.variants.values())).levels)
    if len(factors) < 2:
        return []
    cols: list[str] = []
    for v in ab.variants.values():
        if v.levels[factors[-1]] not in cols:
            cols.append(v.levels[factors[-1]])
    cells: dict[str, dict[str, str]] = {}
    for r in rows:
        lv = ab.variants[r.variant].levels
        key = " / ".join(lv[f] for f in factors[:-1])
        ours = _pm(r.ci)
        cells.setdefault(key, {})[lv[factors[-1]]] = ours + (f" ({r.paper[0]:.2f})" if r.paper else "")
    out = ["", f"{' / '.join(factors[:-1])} × {factors[-1]} (paper in brackets):", "",
           "| " + " / ".join(factors[:-1]) + " | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for key, row in cells.items():
        out.append(f"| {key} | " + " | ".join(row.get(c, "–") for c in cols) + " |")
    return out


def _write_csv(path: Path, ab: Ablation, rows: list[Row]) -> None:
    factors = [f for f in next(iter(ab.variants.values())).levels if f != "variant"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", *factors, "metric", "n", "seeds", "mean", "sd", "ci95_half", "ci95_low", "ci95_high",
                    "reference", "diff", "diff_ci95_low", "diff_ci95_high", "diff_method", "paper", "paper_ci",
                    "paper_diff"])
        for r in rows:
            ci, d = r.ci, r.diff
            w.writerow([r.variant, *(ab.variants[r.variant].levels[x] for x in factors), r.metric, len(r.values),
                        " ".join(map(str, sorted(r.values))),
                        *(_num(x) for x in ((ci.mean, ci.sd, ci.half, ci.low, ci.high) if ci else (None,) * 5)),
                        r.reference or "",
                        *(_num(x) for x in ((d.mean, d.low, d.high) if d else (None,) * 3)), d.method if d else "",
                        _num(r.paper[0] if r.paper else None), _num(r.paper[1] if r.paper else None),
                        _num(r.paper_diff)])


def _num(x: Optional[float]) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:.6g}"


# -------------------------------------------------------------------------------------- sweep
def sweep_report(sweep: dict[str, Any], parent: Any, children: list[Child], out: Path, top: int) -> list[Path]:
    metric, mode = sweep["tune"]["metric"], sweep["tune"]["mode"]
    trials = []
    for c in children:
        params = {k.removeprefix("raypair.search."): _tag_value(v) for k, v in c.tags.items()
                  if k.startswith("raypair.search.") and k != "raypair.search.infeasible"}
        curve = {}
        if c.status == "FINISHED":
            curve = c.curves.get(metric) or {}
        best = (max if mode == "max" else min)(curve.values()) if curve else None
        trials.append({"trial": c.tags.get("raypair.trial_id", c.name), "status": c.status,
                       "epochs": c.tags.get("raypair.epochs_done", "?"), "best": best, "last": c.final.get(metric),
                       "params": params, "child": c})
    ranked = sorted([t for t in trials if t["best"] is not None], key=lambda t: t["best"], reverse=mode == "max")
    importance = param_importance(sweep, trials)
    names = list(sweep.get("space", {}))
    lines = [f"# Sweep `{parent.data.tags.get('mlflow.runName', '')}`", "",
             f"Parent run `{parent.info.run_id}`: {len(trials)} trials, {len(ranked)} with a {metric}. "
             f"Ranked by the best {metric} over each trial's epochs ({mode}).", "",
             f"## Best {min(top, len(ranked))} trials", "",
             f"| rank | trial | epochs | best {metric} | last {metric} | " + " | ".join(names) + " |",
             "|---" * (5 + len(names)) + "|"]
    for i, t in enumerate(ranked[:top], 1):
        vals = " | ".join(_short(t["params"].get(n)) for n in names)
        lines.append(f"| {i} | {t['trial']} | {t['epochs']} | {t['best']:.4f} | {_short(t['last'])} | {vals} |")
    lines += ["", "## Parameter importance", ""]
    if importance:
        lines += ["Optuna fANOVA over the finished trials, objective: each trial's last reported "
                  f"{metric} (the value the sweep's Optuna study recorded).", "", "| parameter | importance |",
                  "|---|---|"] + [f"| {k} | {v:.3f} |" for k, v in importance.items()]
    else:
        lines.append("Too few finished trials (or no varied parameter) for an importance estimate.")
    files = [out / "report.md", out / "report.csv"]
    plots = [report_plots.importance(importance, out / "importance.png")] if importance else []
    plots.append(report_plots.sweep_curves([t["child"] for t in ranked[:5]], metric, out / "curves.png"))
    lines += [""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    files[0].write_text("\n".join(lines))
    with open(files[1], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", "status", "epochs", f"best_{metric}", f"last_{metric}", *names])
        for t in trials:
            w.writerow([t["trial"], t["status"], t["epochs"], _num(t["best"]), _num(t["last"]),
                        *(t["params"].get(n, "") for n in names)])
    return files + plots


def _tag_value(text: str) -> Any:
    """Searched values are tagged as JSON, strings as they are."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _short(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def param_importance(sweep: dict[str, Any], trials: list[dict[str, Any]]) -> dict[str, float]:
    """fANOVA importances from an Optuna study rebuilt from the MLflow trials (any tracking URI)."""
    import optuna

    dists = {}
    for name, spec in sweep.get("space", {}).items():
        kind, args = next(iter(spec.items()))
        dists[name] = {"uniform": lambda: optuna.distributions.FloatDistribution(*args),
                       "loguniform": lambda: optuna.distributions.FloatDistribution(*args, log=True),
                       "int": lambda: optuna.distributions.IntDistribution(*args),
                       "choice": lambda: optuna.distributions.CategoricalDistribution(args),
                       "grid": lambda: optuna.distributions.CategoricalDistribution(args)}[kind]()
    done = [t for t in trials if t["status"] == "FINISHED" and t["last"] is not None and math.isfinite(t["last"])
            and set(t["params"]) >= set(dists)]
    varied = [n for n in dists if len({json.dumps(t["params"][n]) for t in done}) > 1]
    if len(done) < 3 or not varied:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if sweep["tune"]["mode"] == "max" else "minimize")
    for t in done:
        study.add_trial(optuna.trial.create_trial(params={n: t["params"][n] for n in dists}, distributions=dists,
                                                  value=float(t["last"])))
    return dict(optuna.importance.get_param_importances(study, params=varied))
