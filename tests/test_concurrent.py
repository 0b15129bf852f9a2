"""Two raypair sweeps at once on one host and one new ``--storage``, one of them Train-backed with
ASHA stopping trials (Ray Train's clean-up then asks the state API, which must reach this sweep's
own Ray, not "the" local one): both finish, each into its own MLflow experiment, none hangs; and
two drivers on the same experiment name are refused rather than mixed."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray
pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "search_spaces" / "quickstart.yaml"


def test_two_sweeps_at_once_on_one_new_storage(tmp_path):
    from mlflow.tracking import MlflowClient

    storage = tmp_path / "runs"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    base = [sys.executable, "-m", "raypair", "tune", str(QUICK), "--storage", str(storage), "--set", "epochs=2"]
    cmds = {"train_sweep": base + ["--name", "train_sweep", "--num-samples", "3", "--set", "scale.trainer=train"],
            "direct_sweep": base + ["--name", "direct_sweep", "--num-samples", "4"]}
    procs = {n: subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                 start_new_session=True) for n, c in cmds.items()}
    deadline = time.time() + 120
    while not (storage / "direct_sweep" / "experiment.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    # a second driver on a running sweep (here: --resume of it) is refused before it touches anything
    same = subprocess.run(cmds["direct_sweep"] + ["--resume"], capture_output=True, text=True, env=env, timeout=120)
    outs = {}
    try:
        for name, proc in procs.items():
            outs[name], _ = proc.communicate(timeout=600)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
    for name, proc in procs.items():
        assert proc.returncode == 0, (name, outs[name][-3000:])
    assert same.returncode == 2, same.stdout[-2000:] + same.stderr[-2000:]
    assert same.stderr.startswith("raypair: error: name: another raypair process is running")
    assert len(same.stderr.strip().splitlines()) == 1
    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    for name, n in (("train_sweep", 3), ("direct_sweep", 4)):
        runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert len(children) == n and all(r.info.status == "FINISHED" for r in runs), name
    assert list((storage / "train_sweep" / "train").iterdir()), "the Train-backed sweep ran TorchTrainers"
