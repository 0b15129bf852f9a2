"""A real sweep on a real local Ray (2 trials x 2 epochs of the offline digits, direct), every
durable operation of every process logged (``RAYPAIR_DURABLE_LOG``, the trial processes
included): replaying them all rebuilds the store byte for byte (no process wrote a store file any
other way), they come in the order the store promises, and every crash point (each prefix) reads
back, repaired, as a prefix of the final results: nothing recorded is lost or changed."""
from __future__ import annotations

import io
import os
import shutil

import pytest
import torch

from raypair.trials import durable
from raypair.trials.check import repair_experiment
from raypair.trials.store import read_records

from helpers import QUICK

pytestmark = pytest.mark.ray

SKIP = (".lock", "optuna.db")


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


def test_a_real_sweep_writes_only_durably_in_order_and_every_crash_point_reads_back(log_env, local_ray, tmp_path):
    from raypair.cli import main

    code = main(["tune", str(QUICK), "--storage", str(tmp_path), "--set", "epochs=2",
                 "--set", "tune.num_samples=2", "--set", "tune.scheduler.name=none"])
    assert code == 0
    exp_dir = tmp_path / "quickstart"
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
