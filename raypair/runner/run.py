"""Run any :class:`~raypair.experiments.base.Experiment` on Ray Tune: the one runner.

Each call is a fresh ``Tuner`` (``<exp>/tune-N/``) fed by the experiment's proposer; nothing is
restored from Tune's own state. What ran before is read from the trial store
(``raypair.trials.store``): ended trials are settled and skipped, the others continue from their
checkpoints. Per-trial resources come from each trial's resolved run (``scale.resources()``:
fractional GPUs pack trials on one device; several workers or a GPU run a trial under Ray Train).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import ray

from ray import tune

from raypair.experiments.base import Experiment, Record
from raypair.runner.adapters import Recorder, TrialSearcher
from raypair.runner.cluster import check_nodes, fit_concurrency, pins, start_ray
from raypair.runner.progress import Progress
from raypair.runner.stop import Stop, stopping
from raypair.runner.trial import trial_body
from raypair.tracking import Tracker
from raypair.trials import provenance
from raypair.trials.databases import kept_uri
from raypair.trials.book import Book
from raypair.trials.faults import StorageFault, storage_fault
from raypair.trials.store import PLAN_FILE, STATE_FILE, new_token, read_records, write_json


def run_experiment(exp: Experiment, exp_dir: Path, tracker: Tracker, known: dict[str, Record], *,
                   resume: bool, address: Optional[str] = None, verbose: bool = False) -> tuple[str, list[Record]]:
    """Run (or resume) ``exp`` in ``exp_dir``; ``known`` is what :func:`raypair.trials.store.prepare`
    found. Returns the MLflow parent run id and every trial's record. A signal at any instant
    raises KeyboardInterrupt, a storage fault :class:`StorageFault`, each after the trials cut off
    are marked interrupted and the Ray this driver started is shut down."""
    with stopping() as stop:
        try:
            return _run(exp, exp_dir, tracker, known, stop, resume, address, verbose)
        except BaseException as e:
            fault = storage_fault(e) or (stop.book.fault if stop.book else None)
            if fault is None and not stop.signal and not isinstance(e, (KeyboardInterrupt, SystemExit)):
                _wind_down(tracker, exp_dir, stop, shutdown=stop.own_ray)
                raise
            stop.phase = "after"  # a signal from now on waits for the wind-down; a second one exits
            _wind_down(tracker, exp_dir, stop)
            if fault:
                raise StorageFault(f"storage fault ({fault}); the experiment is paused: free or fix the "
                                   "storage, then --resume continues it") from None
            raise KeyboardInterrupt(f"stopped by {stop.signal or 'SIGTERM'}; --resume continues") from None


def _run(exp: Experiment, exp_dir: Path, tracker: Tracker, known: dict[str, Record], stop: Stop,
         resume: bool, address: Optional[str], verbose: bool) -> tuple[str, list[Record]]:
    stop.own_ray = not ray.is_initialized()
    start_ray(address, exp.resource_runs())
    stop.install()  # ray.init set a SIGTERM handler of its own
    check_nodes(exp_dir, shared=bool(address))
    exp.pin(pins(exp.base_run))
    parent = _open_parent(exp, exp_dir, tracker, resume, stop)
    new_token(exp_dir)  # this driver's trials may write the store; an earlier start's may not
    _save_view(exp, tracker)
    write_json(exp_dir / PLAN_FILE, {"planned": exp.planned_trials(), "epochs": exp.base_run.epochs,
                                     "metric": exp.metric, "mode": exp.mode})
    stop.book = book = Book(exp, exp_dir, tracker, parent, exp.proposer(exp_dir, known))
    book.reconcile(known)
    todo = sum(1 for r in known.values() if not exp.done(r))
    print(f"{exp.kind} {exp.name!r}: {sum(exp.done(r) for r in known.values())} trials done earlier"
          + (f", {todo} to continue" if todo else ""), flush=True)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no experiment banner: Progress prints the lines
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # the trial store and MLflow hold the results
    stop.phase = "tune"
    _tuner(exp, exp_dir, book, Progress(book, known.values(), verbose=verbose)).fit()
    stop.phase = "after"
    records = _after_tune(exp, tracker, parent, book, stop)
    if stop.signal or book.fault:
        raise KeyboardInterrupt(stop.signal)  # run_experiment winds down and names it
    return parent, records


def _wind_down(tracker: Tracker, exp_dir: Path, stop: Stop, shutdown: bool = True) -> None:
    """Best effort, as the storage may be what failed: every trial with no end and the parent
    marked interrupted (MLflow KILLED), then the Ray this driver started shut down."""
    try:
        if stop.book is not None:
            for rec in read_records(exp_dir).values():
                if rec.end is None:
                    stop.book.interrupted(rec)
        if stop.parent and tracker.status(stop.parent) == "RUNNING":
            tracker.set_tags(stop.parent, {"raypair.status": "interrupted"})
            tracker.end(stop.parent, "KILLED")
    except Exception as e:  # noqa: BLE001 - the wind-down never hides why the driver stops
        print(f"raypair: could not mark the runs interrupted ({type(e).__name__}: {e})", file=sys.stderr)
    finally:
        if shutdown:
            ray.shutdown()  # the Ray this driver started goes with it: no process is left behind


def _save_view(exp: Experiment, tracker: Tracker) -> None:
    """The MLflow run table shows what tells the trials apart and the metric, best first."""
    keys = exp.view_keys()
    tracker.save_view(f"{exp.kind} {exp.name}: {'trials' if keys else 'runs'} by {exp.metric}",
                      keys + [("metrics", exp.metric)], ("metrics", exp.metric), ascending=exp.mode == "min")


def _after_tune(exp: Experiment, tracker: Tracker, parent: str, book: Book, stop: Stop) -> list[Record]:
    """After Tune returns: every trial's MLflow run in line with its record, the parent's summary."""
    records = list(read_records(book.exp_dir).values())
    for rec in records:
        if rec.key not in book.closed and rec.end is not None:
            book.settle(rec)
        elif rec.end is None:  # not run to its end this time (interrupted, or not in this --variants)
            book.interrupted(rec)
    tags, metrics = exp.summary(records)
    tracker.set_tags(parent, tags)
    if metrics:
        tracker.log_metrics(parent, metrics, step=1, dedupe=False)
    ok = any(r.status in ("finished", "stopped") for r in records)
    tracker.end(parent, "KILLED" if stop.signal or book.fault else "FINISHED" if ok else "FAILED")
    return records


def _open_parent(exp: Experiment, exp_dir: Path, tracker: Tracker, resume: bool, stop: Stop) -> str:
    tags, params, doc = exp.parent()
    state = exp_dir / STATE_FILE
    if resume and state.exists():
        stop.parent = parent = json.loads(state.read_text())["parent_run_id"]
        tracker.client.update_run(parent, status="RUNNING")
        tracker.set_tags(parent, provenance.tags())  # the code of this attempt
    else:
        exp_dir.mkdir(parents=True, exist_ok=True)
        parent, _ = tracker.start(f"{exp.kind}/{exp_dir}", exp.name, tags=tags | provenance.tags())
        stop.parent = parent  # a signal from here on marks it interrupted
        tracker.log_params(parent, params)
        write_json(state, {"kind": exp.kind, "name": exp.name, "parent_run_id": parent,
                           "fingerprint": exp.fingerprint(), "tracking_uri": kept_uri(tracker.uri, exp_dir)})
    tracker.log_yaml(parent, doc, f"{exp.kind}.yaml")  # again on a resume: seeds may have been added
    return parent


def _resources(exp: Experiment) -> Any:
    base = exp.base_run.scale.resources().tune

    def of(config: dict[str, Any]) -> dict[str, float]:
        run = config["resolved"].run
        # an infeasible point reports NaN at once: the base's share is enough
        return base if run is None else run.scale.resources().tune

    return of


def _scheduler(exp: Experiment) -> Any:
    s = exp.scheduler()
    if s is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    # max_t defaults to the run's epochs, so the rungs fall before any fine-tuning phase after them
    # (MethodConfig.extra_epochs); a trial that reaches it then runs its own remaining epochs
    return ASHAScheduler(time_attr="epoch", max_t=s.max_t or exp.base_run.epochs, grace_period=s.grace_period,
                         reduction_factor=s.reduction_factor, stop_last_trials=s.max_t is not None)


def _tuner(exp: Experiment, exp_dir: Path, book: Book, progress: Progress) -> tune.Tuner:
    attempt = 1 + sum(1 for _ in exp_dir.glob("tune-*"))
    trainable = tune.with_resources(tune.with_parameters(trial_body, experiment=exp, exp_dir=str(exp_dir)),
                                    _resources(exp))
    return tune.Tuner(
        trainable,
        # metric and mode only for the scheduler: Tune would insist every result carries the metric
        tune_config=tune.TuneConfig(metric=exp.metric if exp.scheduler() else None,
                                    mode=exp.mode if exp.scheduler() else None, num_samples=-1,
                                    max_concurrent_trials=fit_concurrency(exp.max_concurrent, exp.resource_runs()),
                                    # a trial process (imports, decoded data, torch threads) serves the
                                    # next trial of the same resources instead of a new one per trial;
                                    # not for trials that drive a Ray Train controller (a reused trainable
                                    # lost a Train trial's last epoch in a concurrent-sweep test)
                                    reuse_actors=not any(r.scale.resources().train
                                                         for r in exp.resource_runs()),
                                    search_alg=TrialSearcher(book), scheduler=_scheduler(exp)),
        run_config=tune.RunConfig(name=f"tune-{attempt}", storage_path=str(exp_dir), verbose=0,
                                  callbacks=[Recorder(book), progress],
                                  failure_config=tune.FailureConfig(max_failures=exp.max_failures)),
    )
