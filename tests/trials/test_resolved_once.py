"""A trial's run config is validated once, on the driver, when the trial is opened; the trial
process and every Ray Train worker only unpickle that object. Counted by instrumenting the run
config's pydantic validator (every validation of a run config goes through it, ``model_validate``
and ``__init__`` alike; unpickling and ``model_copy`` do not): in this process for the driver, and
in every Ray worker process through Ray's ``worker_process_setup_hook``."""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest

from helpers import DIGITS, QUICK
from raypair.experiments.sweep import load_sweep



class Counting:
    """A run config class's validator that notes each validation (this process's pid, in ``log``)."""

    def __init__(self, real: Any, log: str) -> None:
        self.real, self.log = real, log

    def _note(self) -> None:
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")

    def validate_python(self, *args: Any, **kwargs: Any) -> Any:
        self._note()
        return self.real.validate_python(*args, **kwargs)

    def validate_json(self, *args: Any, **kwargs: Any) -> Any:
        self._note()
        return self.real.validate_json(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name == "real":
            raise AttributeError(name)
        return getattr(self.real, name)


@contextlib.contextmanager
def counting(log: Path) -> Iterator[Any]:
    """Every run config validated in this process while inside notes a line in ``log``."""
    from raypair.config.run import run_model

    cls = run_model()
    real = cls.__pydantic_validator__
    cls.__pydantic_validator__ = Counting(real, str(log))
    log.touch()
    try:
        yield lambda: len(log.read_text().splitlines())
    finally:
        cls.__pydantic_validator__ = real


def small_sweep(n: int, *sets: str) -> Any:
    return load_sweep(QUICK, ["epochs=1", "tune.searcher.name=random", "scale.gpus_per_worker=0", *sets],
                      num_samples=n, check=False)


def test_a_trial_run_is_validated_once_on_the_driver_and_never_in_its_process(tmp_path, monkeypatch):
    """Direct path, in this process: the searcher opens each trial (its run resolved), Tune asks its
    resources, the trial body gets its config through a pickle round trip as Ray sends it and trains,
    the callback ends it (one trial stopped by the scheduler before its end); the live view redraws.
    1 validation per trial in all; 0 in the trial bodies; the base run is validated once."""
    from ray import tune

    from raypair.runner import cluster, live, progress, run as runner
    from raypair.runner.adapters import Recorder, TrialSearcher
    from raypair.runner.trial import trial_body
    from raypair.tracking import Tracker, default_uri
    from raypair.trials.book import Book

    reported: list[dict[str, Any]] = []
    monkeypatch.setattr(tune, "report", lambda metrics: reported.append(metrics))
    monkeypatch.setattr(cluster, "where", lambda rank, resume: {"rank": rank, "pid": os.getpid(), "node_id": "n",
                                                                "host": "h"})
    n, exp_dir = 3, tmp_path / "q"
    sweep = small_sweep(n)
    with counting(tmp_path / "driver.log") as validations:
        tracker = Tracker(default_uri(tmp_path), "q")
        book = Book(sweep, exp_dir, tracker, tracker.start("sweep/q", "q")[0], sweep.proposer(exp_dir, {}))
        view = progress.Progress(book, out=open(os.devnull, "w"), live=False)
        searcher, resources, recorder = TrialSearcher(book), runner._resources(sweep), Recorder(book)
        configs = [searcher.suggest(f"id{i}") for i in range(n)]
        assert validations() == n, "one validation per trial, when it is opened"
        for i, config in enumerate(configs):
            assert resources(config) == {"cpu": 1.0, "gpu": 0.0}
            stand_in = SimpleNamespace(config=config, last_result={"epoch": 1}, error_file=None)
            view.on_trial_start(0, [], stand_in)
            live.render(view)
            if i == 0:  # the scheduler stops it before its process recorded an end
                recorder.on_trial_complete(0, [], stand_in)
                continue
            from ray import cloudpickle  # what Ray serialises a trial's config with

            sent = cloudpickle.loads(cloudpickle.dumps(config))  # what the trial process receives
            assert sent["resolved"] == config["resolved"] and sent["resolved"] is not config["resolved"]
            before = validations()
            trial_body(sent, experiment=cloudpickle.loads(cloudpickle.dumps(sweep)), exp_dir=str(exp_dir))
            assert validations() == before, "the trial process validates nothing"
            recorder.on_trial_complete(0, [], stand_in)
            live.render(view)
        assert validations() == n
    assert [book.store(f"t{i:04d}").record().status for i in range(n)] == ["finished"] * n  # 1 epoch of 1
    assert [r["epoch"] for r in reported] == [1, 1]


def test_the_base_run_is_validated_once_until_pinned(tmp_path):
    from raypair.experiments.ablation import load_ablation
    from raypair.experiments.single import SingleRun

    sweep = small_sweep(2)
    ablation = load_ablation(DIGITS)
    for exp in (sweep, SingleRun("one", sweep.base_raw), ablation):
        with counting(tmp_path / f"{exp.kind}.log") as validations:
            epochs = {exp.base_run.epochs for _ in range(100)}  # the live view, redrawn
            assert validations() <= 1 and epochs == {exp.base_run.epochs}
            exp.pin({"epochs": 2})  # (an ablation's pin also validates each variant's run)
            pinned = validations()
            assert {exp.base_run.epochs for _ in range(100)} == {2}
            assert validations() == pinned + 1, "the pinned base, validated once"


@pytest.fixture(scope="module")
def counted_ray(tmp_path_factory):
    """A local Ray whose every worker process counts its run-config validations in ``workers.log``
    (and notes in ``hooked.log`` that it does)."""
    import ray

    folder = tmp_path_factory.mktemp("counts")
    log, hooked = str(folder / "workers.log"), str(folder / "hooked.log")

    def hook() -> None:
        from raypair.config.run import run_model

        cls = run_model()
        cls.__pydantic_validator__ = Counting(cls.__pydantic_validator__, log)
        with open(hooked, "a") as f:
            f.write(f"{os.getpid()}\n")

    if ray.is_initialized():  # another module's Ray: this one must start with the hook
        ray.shutdown()
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
             logging_level="warning", log_to_driver=False, runtime_env={"worker_process_setup_hook": hook})
    yield folder
    ray.shutdown()


@pytest.mark.ray
def test_train_workers_and_trial_processes_validate_nothing(counted_ray, tmp_path):
    """Under real Ray, a direct sweep and a Ray Train sweep (2 workers a trial): the driver validates
    each trial's run once (and the base once more, when the runner pins it); no trial process and no
    Train worker validates any."""
    from raypair.runner.run import run_experiment
    from raypair.tracking import Tracker, default_uri
    from raypair.trials.store import prepare

    n = 2
    for label, sets in (("direct", ["scale.trainer=direct"]), ("train", ["scale.workers=2", "scale.trainer=train"])):
        sweep = small_sweep(n, "tune.scheduler.name=none", *sets)
        exp_dir = tmp_path / label
        tracker = Tracker(default_uri(tmp_path), label, artifact_root=str(tmp_path / "mlartifacts"))
        with counting(tmp_path / f"{label}.log") as validations:
            known = prepare(sweep, exp_dir, resume=False)
            _, records = run_experiment(sweep, exp_dir, tracker, known, resume=False)
            assert validations() == n + 1, "one per trial, and the pinned base"
        assert sorted(r.status for r in records) == ["finished"] * n
        pids = {json.loads(line)["pid"] for f in exp_dir.glob("trials/*/workers.jsonl")
                for line in f.read_text().splitlines()}
        assert len(pids) == (n if label == "direct" else 2 * n)  # every process that ran the loop
        hooked = {int(p) for p in (counted_ray / "hooked.log").read_text().split()}
        assert pids <= hooked, "the count ran in every process that trained"
    log = counted_ray / "workers.log"
    assert not log.exists() or not log.read_text(), "a worker process validated a run config"
