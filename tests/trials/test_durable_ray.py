"""A real sweep on a real local Ray (2 trials x 2 epochs of the offline digits, direct), every
durable operation of every process logged (``RAYPAIR_DURABLE_LOG``, the trial processes
included): replaying them all rebuilds the store byte for byte (no process wrote a store file any
other way), they come in the order the store promises, and every crash point (each prefix) reads
back, repaired, as a prefix of the final results: nothing recorded is lost or changed.

And the full ``raypair tune --resume`` from a sample of crash points: each instant the driver made
an operation durable (it is the only writer of MLflow's and Optuna's databases, so their copies
taken then belong to the same instant), plus the end. Each resume finishes every trial, each epoch
once in the store and in MLflow, Optuna's best is the summary's best."""
from __future__ import annotations

import io
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch

from raypair.trials import durable
from raypair.trials.check import repair_experiment
from raypair.trials.store import read_records

from helpers import QUICK

pytestmark = pytest.mark.ray

SKIP = (".lock", ".fence", "optuna.db")  # lock files (no content), and Optuna's own database


@pytest.fixture(scope="module")
def log_env(tmp_path_factory):
    """Set before ``local_ray`` starts, so Ray's worker processes inherit it."""
    log = tmp_path_factory.mktemp("durable") / "ops.jsonl"
    os.environ["RAYPAIR_DURABLE_LOG"] = str(log)
    yield log
    os.environ.pop("RAYPAIR_DURABLE_LOG")


def _store_files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and p.name not in SKIP and not p.relative_to(root).parts[0].startswith(("tune-", "train"))}


ARGS = ["--set", "epochs=2", "--set", "tune.num_samples=2", "--set", "tune.scheduler.name=none"]


class Instants(list):
    """The driver's durable operations (in its own thread); at each, the log's length and copies of
    MLflow's and Optuna's databases: a crash at that instant, whole."""

    def __init__(self, storage: Path, log: Path) -> None:
        super().__init__()
        self.storage, self.log = storage, log
        self.marks: list = []  # (operation, log lines then, folder of the databases' copies)

    def append(self, op) -> None:
        super().append(op)
        snap = self.storage.parent / f"snap{len(self)}"
        snap.mkdir()
        for db in (self.storage / "mlflow.db", self.storage / "quickstart" / "optuna.db"):
            if db.exists():
                with sqlite3.connect(db) as src, sqlite3.connect(snap / db.name) as dst:
                    src.backup(dst)
        text = self.log.read_text()
        self.marks.append((op, text[: text.rfind("\n") + 1].count("\n"), snap))


def test_a_real_sweep_writes_only_durably_in_order_and_every_crash_point_reads_back(log_env, local_ray, tmp_path):
    from raypair.cli import main

    storage = tmp_path / "s"
    with durable.recording(Instants(storage, log_env)) as instants:
        assert main(["tune", str(QUICK), "--storage", str(storage), *ARGS]) == 0
    exp_dir = storage / "quickstart"
    ops = [op for op in durable.read_log(log_env) if op[1].is_relative_to(exp_dir)]
    rebuilt = tmp_path / "rebuilt"
    rebuilt.mkdir()
    durable.replay(ops, exp_dir, rebuilt)
    assert _store_files(rebuilt) == _store_files(exp_dir), "a store file written around raypair.trials.durable"
    for key in ("t0000", "t0001"):  # the order the store promises, per trial
        mine = [(w, p.name, d) for w, p, d in ops if p.parent.name == key]
        names = [(w, n) for w, n, _ in mine]
        assert names.index(("write", "trial.json")) < names.index(("append", "history.jsonl"))
        epochs = [torch.load(io.BytesIO(d), weights_only=True)["epoch"] for w, n, d in mine if n == "state.pt" and w == "write"]
        assert epochs == [1, 2]
        for e in (1, 2):  # each epoch's line is durable before its checkpoint
            line_at = [i for i, (w, n, _) in enumerate(mine) if n == "history.jsonl"][e - 1]
            ckpt_at = [i for i, (w, n, _) in enumerate(mine) if n == "state.pt" and w == "write"][e - 1]
            assert line_at < ckpt_at
        assert names.index(("create", "end.json")) < names.index(("append", "ends.jsonl"))
    final = {k: r.history for k, r in read_records(exp_dir).items()}
    assert sorted(final) == ["t0000", "t0001"] and all(len(h) == 2 for h in final.values())
    for k in range(len(ops) + 1):
        crash = tmp_path / f"crash{k}" / "quickstart"
        crash.mkdir(parents=True)
        durable.replay(ops[:k], exp_dir, crash, torn=k > 0 and ops[k - 1][0] == "append")
        repair_experiment(crash)
        for key, rec in read_records(crash).items():
            assert rec.history == final[key][:len(rec.history)], (k, key)
        shutil.rmtree(crash.parent)
    print(f"{len(ops)} durable operations of a real sweep; {len(ops) + 1} crash points read back")
    sample = [m for m in instants.marks if m[0][1].name == "trial.json"]  # a trial just opened
    assert len(sample) == 2
    for n, (_, upto, snap) in enumerate(sample):
        resume_from(tmp_path / f"resume{n}", [op for op in durable.read_log(log_env)[:upto]
                                              if op[1].is_relative_to(exp_dir)], exp_dir, snap)


def resume_from(storage, ops, exp_dir, snap):
    """``raypair tune --resume`` on the disk a crash left: every trial ends, each epoch once."""
    from raypair.cli import main
    from raypair.experiments.sweep import load_sweep

    (storage / "quickstart").mkdir(parents=True)
    durable.replay(ops, exp_dir, storage / "quickstart")
    shutil.copyfile(snap / "mlflow.db", storage / "mlflow.db")
    if (snap / "optuna.db").exists():
        shutil.copyfile(snap / "optuna.db", storage / "quickstart" / "optuna.db")
    assert main(["tune", str(QUICK), "--storage", str(storage), *ARGS, "--resume"]) == 0
    records = read_records(storage / "quickstart")
    assert sorted(records) == ["t0000", "t0001"]
    assert all([r["epoch"] for r in rec.history] == [1, 2] and rec.status == "finished" for rec in records.values())
    from helpers import mlflow_children

    children = mlflow_children(storage, "quickstart")
    assert sorted(c.data.tags["raypair.trial_id"] for c in children) == ["t0000", "t0001"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    for c in children:
        assert sorted(m.step for m in client.get_metric_history(c.info.run_id, "val_acc")) == [1, 2]
        assert c.info.status == "FINISHED"
    import optuna

    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{storage / 'quickstart' / 'optuna.db'}")
    assert len(study.trials) == 2 and all(t.state.name == "COMPLETE" for t in study.trials)
    tags, _ = load_sweep(QUICK, ARGS[1::2], check=False).summary(list(records.values()))
    assert tags["raypair.best_trial"] == f"t{study.best_trial.number:04d}"
