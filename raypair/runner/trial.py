"""The one trial body, for every kind of experiment and both trainer paths.

A Tune trial is ``{"key", "params", "resolved"}``: ``resolved`` is the trial's run, validated once
on the driver (:class:`~raypair.experiments.base.ResolvedRun`), which this process only unpickles.
The body records an infeasible point as such (reported as NaN, not raised), replays the epochs its
store already holds (so a resumed trial's MLflow run, the scheduler and the searcher see its whole
history), then trains the rest in this process (``direct``) or under a Ray Train ``TorchTrainer``,
and records the end in the store before it returns.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ray import tune

from raypair.config import RunConfigBase
from raypair.experiments.base import Experiment, ResolvedRun
from raypair.trials.faults import MARK, error_chain, storage_fault
from raypair.trials.store import TrialStore, store_report


def trial_body(config: dict[str, Any], experiment: Experiment, exp_dir: str) -> None:
    """A storage fault (a full or read-only store, an I/O error) is reported, not raised: the
    driver pauses the experiment, and the trial is neither failed nor told to the searcher."""
    try:
        _body(config, experiment, exp_dir)
    except Exception as e:
        fault = storage_fault(e)
        if fault is None:
            raise
        tune.report({experiment.metric: float("nan"), "epoch": 0, MARK: fault})


def _body(config: dict[str, Any], experiment: Experiment, exp_dir: str) -> None:
    key, resolved = config["key"], config["resolved"]
    assert isinstance(resolved, ResolvedRun), type(resolved)
    store = TrialStore.attach(Path(exp_dir) / "trials" / key)  # fenced: writes only while its driver is current
    run = resolved.run
    if run is None:
        # a sampled point that breaks a cross-field constraint: infeasible, not a crash. NaN makes
        # the searcher record the point as failed, so TPE learns nothing from it and moves on.
        store.finish("infeasible", error=resolved.infeasible)
        tune.report({experiment.metric: float("nan"), "epoch": 0, "infeasible": resolved.infeasible})
        return
    for row in store.history():
        tune.report({**row, "replayed": 1})
    try:
        _train(run, store, key, exp_dir)
    except Exception as e:
        reason = diverged(e)
        if reason is None:
            raise
        store.finish("diverged", error=reason)  # the trial ends here; the sweep goes on
        return
    store.finish("finished", epochs=run.total_epochs)


def _train(run: RunConfigBase, store: TrialStore, key: str, exp_dir: str) -> None:
    if run.scale.resources().train:
        from ray.tune.integration.ray_train import TuneReportCallback

        from raypair.runner import train

        train.fit(run, name=key, storage=Path(exp_dir) / "train", store=store.folder,
                  callbacks=[TuneReportCallback()], token=store.token)
    else:
        from raypair.loop import run_trial
        from raypair.runner.cluster import training_device, where

        if run.scale.compile:  # a reused trial process: the last trial's graphs count against Dynamo's cache limit
            import torch._dynamo

            torch._dynamo.reset()
        resume = store.state()
        store.note_worker(where(0, resume))
        run_trial(run, store_report(store, tune.report), resume=resume, device=training_device(run))


def diverged(error: BaseException) -> Optional[str]:
    """The loop's ``TrialDiverged`` message if ``error`` is one, or wraps one (Ray Train raises a
    worker group error that holds each worker's exception)."""
    from raypair.loop import TrialDiverged

    return next((str(e) for e in error_chain(error) if isinstance(e, TrialDiverged)), None)
