"""Ray Tune + Optuna adapter: one Tune function per trial that runs the loop under Ray Train
(or, with ``scale.trainer: direct``, in the trial process itself), Optuna TPE with its study in
``<storage>/<name>/optuna.db``, ASHA, and an MLflow callback in the driver: one parent run per sweep
and exactly one child run per trial (found again by the trial id when a sweep is resumed).

Logging from the driver means trials on remote nodes never need to reach the tracking store.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import ray
from ray import tune
from ray.tune.experiment import Trial

from raypair.config import ConfigError, RunConfigBase, flatten, to_plain
from raypair.space import Sweep
from raypair.tracking import Tracker

STATE_FILE = "raypair_sweep.json"
DRIVER_RESOURCES = {"cpu": 0, "memory": 128 * 2**20}  # a Train-backed trial only waits on its workers


# ------------------------------------------------------------------------------ trial body
def trial_fn(params: dict[str, Any], sweep: Sweep, train_storage: str) -> None:
    try:
        cfg = sweep.trial_run(sweep.params(params))
    except ConfigError as e:
        # a sampled point that breaks a cross-field constraint: infeasible, not a crash. NaN makes
        # Optuna record the point as failed, so TPE learns nothing from it and moves on.
        tune.report({sweep.tune.metric: float("nan"), "epoch": 0, "infeasible": str(e)})
        return
    trial_id = tune.get_context().get_trial_id()
    if not cfg.scale.uses_train():
        _direct(cfg)
        return
    from ray.tune.integration.ray_train import TuneReportCallback

    from raypair import train

    train.fit(cfg, name=f"trial-{trial_id}", storage=Path(train_storage), callbacks=[TuneReportCallback()])


def _direct(cfg: Any) -> None:
    from raypair.loop import load_checkpoint, run_trial

    resume = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            resume = load_checkpoint(Path(d))

    def report(metrics: dict[str, float], folder: Optional[Path]) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(folder)) if folder else None)

    run_trial(cfg, report, resume=resume)


# --------------------------------------------------------------------------- MLflow callback
class MlflowTrials(tune.Callback):
    """Driver-side: a child run per trial under the parent run, per-epoch metrics, final status.
    Subclasses say what a trial is (:meth:`describe`); this one describes sweep trials."""

    def __init__(self, tracker: Tracker, parent: str, sweep: Sweep) -> None:
        self.tracker, self.parent, self.sweep = tracker, parent, sweep
        self.runs: dict[str, str] = {}
        self.epochs: dict[str, int] = {}

    def describe(self, trial: Trial) -> dict[str, Any]:
        """``key`` (the run is found again by it), ``name``, ``plain`` (the resolved run config,
        None if it does not build), ``epochs`` and ``tags`` of a trial's run."""
        searched = self.sweep.params(trial.config)
        try:
            plain: Optional[dict[str, Any]] = to_plain(self.sweep.trial_run(searched))
        except ConfigError as e:
            plain, searched = None, searched | {"infeasible": str(e)}
        return {"key": f"{self.parent}/{trial.trial_id}", "name": f"{self.sweep.name}-{trial.trial_id}",
                "plain": plain, "epochs": self.sweep.run.epochs,
                "tags": {"raypair.trial_id": trial.trial_id, "raypair.method": self.sweep.run.method.name}
                | {f"raypair.search.{k}": v for k, v in searched.items()}}

    def _run(self, trial: Trial) -> str:
        if trial.trial_id not in self.runs:
            d = self.describe(trial)
            tags = {k: v if isinstance(v, str) else json.dumps(v) for k, v in d["tags"].items()}
            run_id, existed = self.tracker.start(d["key"], d["name"], parent=self.parent, tags=tags)
            if not existed and d["plain"] is not None:
                self.tracker.log_params(run_id, flatten(d["plain"]))
                self.tracker.log_yaml(run_id, d["plain"], "config.yaml")
            self.runs[trial.trial_id], self.epochs[trial.trial_id] = run_id, d["epochs"]
        return self.runs[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        self._run(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Trial, result: dict, **info: Any) -> None:
        if "epoch" in result:
            self.tracker.log_metrics(self._run(trial), result, step=int(result["epoch"]))

    def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        run_id = self._run(trial)
        last = trial.last_result or {}
        done = int(last.get("epoch", 0))
        self.tracker.set_tags(run_id, {"raypair.epochs_done": done,
                                       "raypair.stopped_early": done < self.epochs[trial.trial_id]})
        self.tracker.end(run_id, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        run_id = self._run(trial)
        self.tracker.set_tags(run_id, {"raypair.error": _last_line(trial), "raypair.error_file": trial.error_file})
        self.tracker.end(run_id, "FAILED")


class Progress(tune.Callback):
    """One short line per finished epoch and per trial end, instead of Ray's status tables."""

    def __init__(self, metric: str, label: Optional[Any] = None) -> None:
        self.metric = metric
        self.label = label or (lambda trial: f"trial {trial.trial_id}")

    def on_trial_result(self, iteration: int, trials: list, trial: Trial, result: dict, **info: Any) -> None:
        key = self.metric if self.metric in result else "val_acc"  # test_acc comes with the last epoch only
        value = result.get(key)
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"  {self.label(trial)} epoch {result.get('epoch')}: {key}={shown} "
              f"({result.get('epoch_time_s', 0):.2f} s/epoch)", flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        print(f"  {self.label(trial)} ended after epoch {(trial.last_result or {}).get('epoch')}", flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        print(f"  {self.label(trial)} FAILED: {_last_line(trial)} (log: {trial.error_file})", flush=True)


def _last_line(trial: Trial) -> str:
    try:
        lines = [ln for ln in Path(trial.error_file).read_text().splitlines() if ln.strip()]
        return lines[-1][:200] if lines else "?"
    except (OSError, TypeError):
        return "?"


# ------------------------------------------------------------------------------- the sweep
def domains(sweep: Sweep) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, ps in sweep.space.items():
        a = ps.args
        out[path] = {"uniform": lambda: tune.uniform(*a), "loguniform": lambda: tune.loguniform(*a),
                     "int": lambda: tune.randint(a[0], a[1] + 1), "choice": lambda: tune.choice(a),
                     "grid": lambda: tune.grid_search(a)}[ps.kind]()
    return out


def searcher(sweep: Sweep, exp_dir: Path) -> Any:
    s = sweep.tune.searcher
    if s.name != "optuna":
        return None
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    sampler = (optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=s.n_startup_trials)
               if s.sampler == "tpe" else optuna.samplers.RandomSampler(seed=s.seed))
    storage = optuna.storages.RDBStorage(f"sqlite:///{exp_dir / 'optuna.db'}")
    return OptunaSearch(sampler=sampler, study_name=sweep.name, storage=storage)


def scheduler(sweep: Sweep) -> Any:
    s = sweep.tune.scheduler
    if s.name == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="epoch", max_t=s.max_t or sweep.run.epochs, grace_period=s.grace_period,
                         reduction_factor=s.reduction_factor)


def trial_resources(run: RunConfigBase) -> dict[str, float]:
    """What the Tune trial itself holds: its workers' share, or nothing when Train's workers hold it."""
    return DRIVER_RESOURCES if run.scale.uses_train() else run.scale.resources()


def concurrency(sweep: Sweep) -> int:
    return fit_concurrency(sweep.tune.max_concurrent_trials, sweep.resources_per_trial())


def fit_concurrency(want: int, need: dict[str, float]) -> int:
    """``want`` concurrent trials, lowered to what the cluster can run at once: more Train-backed
    trials than there are CPUs for their workers would wait on each other forever."""
    have = ray.cluster_resources()
    fit = int(have.get("CPU", 0) // need["cpu"]) if need["cpu"] else want
    if need["gpu"]:
        fit = min(fit, int(have.get("GPU", 0) // need["gpu"]))
    if fit < 1:
        raise ConfigError("scale", f"one trial needs {need['cpu']} CPU and {need['gpu']} GPU; the cluster has "
                          f"{have.get('CPU', 0)} CPU and {have.get('GPU', 0)} GPU")
    return min(want, fit)


def run_sweep(sweep: Sweep, exp_dir: Path, tracker: Tracker, resume: bool) -> Any:
    """Run (or resume) the sweep in ``exp_dir``; returns Ray's ResultGrid."""
    parent, created = tracker.open_parent(exp_dir / STATE_FILE, f"sweep/{exp_dir}", sweep.name,
                                          {"raypair.kind": "sweep"}, resume)
    if created:
        tracker.log_params(parent, {f"space.{k}": f"{v.kind} {v.args}" for k, v in sweep.space.items()}
                           | {f"tune.{k}": v for k, v in flatten(sweep.tune.model_dump(mode="json")).items()})
        tracker.log_yaml(parent, {"run": to_plain(sweep.run), "space": {k: v.model_dump(exclude_none=True)
                                  for k, v in sweep.space.items()}, "tune": sweep.tune.model_dump(mode="json")},
                         "sweep.yaml")
    trainable = tune.with_resources(
        tune.with_parameters(trial_fn, sweep=sweep, train_storage=str(exp_dir / "train")), trial_resources(sweep.run))
    if resume:  # the pickled run config brings its MlflowTrials back; runs are found again by key
        tuner = tune.Tuner.restore(str(exp_dir / "tune"), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True, param_space=domains(sweep))
    else:
        t = sweep.tune
        tuner = tune.Tuner(
            trainable, param_space=domains(sweep),
            tune_config=tune.TuneConfig(metric=t.metric, mode=t.mode, num_samples=t.num_samples,
                                        max_concurrent_trials=concurrency(sweep),
                                        search_alg=searcher(sweep, exp_dir), scheduler=scheduler(sweep)),
            run_config=tune.RunConfig(name="tune", storage_path=str(exp_dir),
                                      callbacks=[MlflowTrials(tracker, parent, sweep), Progress(t.metric)],
                                      failure_config=tune.FailureConfig(max_failures=t.max_failures),
                                      verbose=0),
        )
    grid = tuner.fit()
    _finish_parent(tracker, parent, grid, sweep)
    return grid


def _finish_parent(tracker: Tracker, parent: str, grid: Any, sweep: Sweep) -> None:
    metric, mode = sweep.tune.metric, sweep.tune.mode
    ok = [r for r in grid if r.error is None and math.isfinite(float((r.metrics or {}).get(metric, "nan")))]
    tracker.set_tags(parent, {"raypair.trials": len(grid), "raypair.trials_failed": sum(r.error is not None for r in grid),
                              "raypair.trials_infeasible": sum("infeasible" in (r.metrics or {}) for r in grid)})
    if ok:
        best = grid.get_best_result(metric, mode, scope="all")
        history = best.metrics_dataframe[metric]
        tracker.log_metrics(parent, {f"best_{metric}": float(history.max() if mode == "max" else history.min())}, step=1)
        tracker.set_tags(parent, {"raypair.best_trial": best.metrics.get("trial_id", "")}
                         | {f"raypair.best.{k}": v for k, v in sweep.params(best.config).items()})
    tracker.end(parent, "FINISHED" if ok else "FAILED")
