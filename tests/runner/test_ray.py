"""Real local Ray, real MLflow store, real Optuna study, real images (digits; CIFAR-10 where the
shared copy exists): the sweep, data-parallel training, failing and infeasible trials. Killing and
resuming is tested at many instants in test_resume_kills.py."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray
import ray  # noqa: E402
import ray.train  # noqa: E402

from helpers import QUICK, mlflow_runs


def test_quickstart_sweep_lands_in_mlflow(local_ray, tmp_path, capsys):
    from raypair.cli import main

    code = main(["tune", str(QUICK), "--storage", str(tmp_path), "--set", "epochs=4"])
    out = capsys.readouterr().out
    assert code == 0
    assert "best val_acc = " in out
    client, parents, children = mlflow_runs(tmp_path, "quickstart")
    assert len(parents) == 1 and len(children) == 8
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert len({c.data.tags["raypair.trial_id"] for c in children}) == 8
    workers = sorted((tmp_path / "quickstart").glob("trials/*/workers.jsonl"))
    assert len(workers) == 8, workers  # every trial's worker noted where it ran
    pids = {json.loads(f.read_text().splitlines()[0])["pid"] for f in workers}
    assert 1 <= len(pids) < 8, "Tune reuses trial processes (reuse_actors): 2 slots, not a process per trial"
    stopped = [c for c in children if c.data.tags["raypair.stopped_early"] == "true"]
    assert 1 <= len(stopped) < 8, "ASHA should stop some trials and let at least one finish"
    for c in children:
        assert c.info.status == "FINISHED"
        hist = client.get_metric_history(c.info.run_id, "val_acc")
        done = int(c.data.tags["raypair.epochs_done"])
        assert sorted(m.step for m in hist) == list(range(1, done + 1))
        assert c.data.params["method.name"] == "erm" and "optim.lr" in c.data.params
        assert c.data.tags["raypair.git_sha"]
        arts = [a.path for a in client.list_artifacts(c.info.run_id)]
        assert "config.yaml" in arts
    assert "best_val_acc" in parents[0].data.metrics
    # the Optuna study persisted beside the sweep, readable with Optuna's own tools
    import optuna

    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{tmp_path / 'quickstart' / 'optuna.db'}")
    assert len(study.trials) == 8

    # the sweep's report: best trials, parameter importance, figures, logged to the parent run
    capsys.readouterr()
    assert main(["report", "quickstart", "--storage", str(tmp_path), "--top", "3"]) == 0
    folder = tmp_path / "quickstart" / "report"
    md = (folder / "report.md").read_text()
    best = max(max(m.value for m in client.get_metric_history(c.info.run_id, "val_acc")) for c in children)
    assert "## Best 3 trials" in md and "| 1 | " in md and f"| {best:.4f} |" in md.split("| 1 | ")[1].splitlines()[0]
    assert "## Parameter importance" in md
    table = md.split("## Parameter importance")[1]
    assert {"optim.lr", "optim.weight_decay", "method.label_smoothing"} <= {
        ln.split("|")[1].strip() for ln in table.splitlines() if ln.startswith("| ") and "importance" not in ln}
    with open(folder / "report.csv") as f:
        assert len(f.read().strip().splitlines()) == 1 + 8
    logged = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert {"report/report.md", "report/importance.png", "report/curves.png"} <= logged


def test_two_train_workers_are_data_parallel(local_ray, tmp_path):
    """Same global batch on 1 and 2 gloo workers: same losses (no BatchNorm, no augmentation);
    each worker trained on its own half of every batch."""
    from raypair.runner import train
    from raypair.config import build_run

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Recorder runs in the Train controller
    results = {}
    for workers in (1, 2):
        cfg = build_run({"data": {"name": "digits", "image_size": 16, "train_subset": 512},
                         "model": {"name": "tiny_cnn", "kwargs": {"norm": False}},
                         "method": {"name": "erm", "aug": "base"}, "epochs": 2, "batch_size": 64,
                         "optim": {"lr": 0.05}, "schedule": {"name": "constant"},
                         "scale": {"workers": workers, "trainer": "train", "gpus_per_worker": 0}})
        log = tmp_path / f"w{workers}.jsonl"
        train.fit(cfg, f"ddp{workers}", tmp_path, callbacks=[Recorder(str(log))])
        results[workers] = [json.loads(line) for line in log.read_text().splitlines()]
    one, two = results[1], results[2]
    assert len(one) == len(two) == 2  # epochs
    for a, b in zip(one, two):
        assert len(a) == 1 and len(b) == 2  # one metrics dict per worker
        assert b[0]["train_loss"] == b[1]["train_loss"]  # all-reduced: every rank reports the same
        assert a[0]["train_loss"] == pytest.approx(b[0]["train_loss"], rel=1e-4)
        assert a[0]["val_acc"] == pytest.approx(b[0]["val_acc"], abs=1e-9)
        assert a[0]["train_samples"] == b[0]["train_samples"] == 512
        shards = [w["worker"] for w in b]
        assert {s["rank"] for s in shards} == {0, 1}
        assert [s["samples"] for s in shards] == [256, 256]
        assert shards[0]["train_loss"] != shards[1]["train_loss"]  # different data on each rank


class Recorder(ray.train.UserCallback):
    def __init__(self, path: str) -> None:
        self.path = path

    def after_report(self, run_context, metrics, checkpoint) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(metrics) + "\n")


def test_failing_and_diverging_trials_do_not_take_the_sweep_down(local_ray, tmp_path, capsys):
    """Trials asking for more images than exist fail inside Ray; trials whose val_acc stays within
    0.95 of chance from epoch 2 on diverge (``run.diverge``); the one left finishes and lands. The
    exit code is 1 and the counts are printed."""
    from raypair.cli import main

    import yaml

    spec = yaml.safe_load(QUICK.read_text())
    spec["run"]["diverge"] = {"chance_after": 2}
    spec["space"] = {"data.train_subset": {"grid": [128, 99999]}, "diverge.chance_margin": {"grid": [0.0, 0.95]}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    code = main(["tune", str(tmp_path / "s.yaml"), "--storage", str(tmp_path), "--num-samples", "1",
                 "--set", "epochs=2", "--set", "tune.searcher.name=random", "--set", "tune.scheduler.name=none"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "1 finished, 2 failed, 1 diverged" in out and "best val_acc = " in out
    client, parents, children = mlflow_runs(tmp_path, "quickstart")
    by_status = {}
    for c in children:
        by_status.setdefault(c.data.tags["raypair.status"], []).append(
            (c.info.status, c.data.params["data.train_subset"], c.data.params["diverge.chance_margin"]))
    assert sorted(by_status["failed"]) == [("FAILED", "99999", "0.0"), ("FAILED", "99999", "0.95")]
    assert by_status["diverged"] == [("FAILED", "128", "0.95")] and by_status["finished"] == [("FINISHED", "128", "0.0")]
    failed = [c for c in children if c.data.tags["raypair.status"] == "failed"]
    assert all("data.train_subset" in c.data.tags["raypair.error"] for c in failed)
    diverged = [c for c in children if c.data.tags["raypair.status"] == "diverged"][0]
    assert "at chance" in diverged.data.tags["raypair.error"]
    assert [m.step for m in client.get_metric_history(diverged.info.run_id, "val_acc")] == [1, 2]
    assert parents[0].info.status == "FINISHED" and parents[0].data.tags["raypair.trials_diverged"] == "1"


def test_infeasible_points_are_reported_not_crashed(local_ray, tmp_path, capsys):
    """Each searched value is valid alone, but momentum 0 with nesterov is not: that grid point is
    recorded as infeasible (Optuna would see a failed point), the other three train and land."""
    import yaml

    from raypair.cli import main

    spec = yaml.safe_load(QUICK.read_text())
    spec["run"]["optim"]["nesterov"] = False
    spec["space"] = {"optim.momentum": {"grid": [0.0, 0.9]}, "optim.nesterov": {"grid": [True, False]}}
    spec["tune"].update(searcher={"name": "random"}, scheduler={"name": "none"}, num_samples=1)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    code = main(["tune", str(tmp_path / "s.yaml"), "--storage", str(tmp_path), "--set", "epochs=1"])
    out = capsys.readouterr().out
    assert code == 0, out
    table = [ln for ln in out.splitlines() if ln.startswith("  ") and "epochs=" in ln]
    assert [ln.split()[0] for ln in table].count("infeas.") == 1 and len(table) == 4
    client, parents, children = mlflow_runs(tmp_path, "quickstart")
    assert len(children) == 4 and parents[0].data.tags["raypair.trials_infeasible"] == "1"
    bad = [c for c in children if "raypair.infeasible" in c.data.tags]
    assert len(bad) == 1 and "nesterov" in bad[0].data.tags["raypair.infeasible"]
    assert bad[0].data.tags["raypair.search.optim.momentum"] == "0.0"


def _seed_repeats():
    """A third kind of experiment, written here as a user would write it: the base run of the
    quickstart, once per seed. It implements the interface and touches nothing in the runner."""
    from dataclasses import dataclass
    from typing import Any

    from raypair.config import build_run, set_path
    from raypair.experiments.base import Described, Experiment, ListProposer, Trial
    from raypair.experiments.sweep import load_sweep

    @dataclass
    class Repeats(Experiment):
        kind = "repeats"
        name: str
        base_raw: dict
        seeds: list
        metric: str = "val_acc"
        mode: str = "max"
        max_concurrent: int = 2

        def trial_run(self, params: dict[str, Any]):
            return build_run(set_path(self.base_raw, "seed", params["seed"]))

        def proposer(self, exp_dir, known):
            return ListProposer([Trial(f"seed{s}", {"seed": s}) for s in self.seeds], set(known))

        def describe(self, trial):
            return Described(f"seed {trial.params['seed']}", f"seed {trial.params['seed']}", {"raypair.seed": "x"})

        def parent(self):
            return {"raypair.kind": "repeats"}, {"seeds": self.seeds}, {"seeds": self.seeds}

    sweep = load_sweep(QUICK, ["epochs=2"])
    return Repeats("repeats", sweep.base_raw, [0, 1, 2])


def test_a_new_kind_of_experiment_needs_nothing_in_the_runner(local_ray, tmp_path):
    from raypair.runner.run import run_experiment
    from raypair.trials.store import prepare
    from raypair.tracking import Tracker, default_uri

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    exp = _seed_repeats()
    tracker = Tracker(default_uri(tmp_path), exp.name, artifact_root=str(tmp_path / "mlartifacts"))
    known = prepare(exp, tmp_path / exp.name, resume=False)
    parent, records = run_experiment(exp, tmp_path / exp.name, tracker, known, resume=False)
    assert sorted(r.key for r in records) == ["seed0", "seed1", "seed2"]
    assert all(r.status == "finished" and len(r.history) == 2 for r in records)
    assert len({r.history[-1]["val_acc"] for r in records}) > 1  # three seeds, three different runs
    client, parents, children = mlflow_runs(tmp_path, "repeats")
    assert [p.info.run_id for p in parents] == [parent] and parents[0].info.status == "FINISHED"
    assert sorted(c.data.tags["mlflow.runName"] for c in children) == ["seed 0", "seed 1", "seed 2"]
    assert {c.data.params["seed"] for c in children} == {"0", "1", "2"}
    assert "best_val_acc" in parents[0].data.metrics
