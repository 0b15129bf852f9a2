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
import ray  # noqa: E402,F401  (a declared dependency: missing, the file fails instead of skipping)

from helpers import QUICK, free_port


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
        assert len(children) == n and all(r.info.status == "FINISHED" for r in runs), \
            (name, [(r.info.run_name, r.info.status, r.data.metrics.get("epoch")) for r in runs], outs[name][-3000:])
    assert list((storage / "train_sweep" / "train").iterdir()), "the Train-backed sweep ran TorchTrainers"


def _serve(server_dir: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{server_dir / 'mlflow.db'}",
                             "--artifacts-destination", str(server_dir / "artifacts"), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    import urllib.request

    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    raise AssertionError("mlflow server did not come up")


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)
    deadline = time.time() + 30  # its children (uvicorn workers) go a moment later
    while time.time() < deadline:
        try:
            os.killpg(proc.pid, 0)
            time.sleep(0.2)
        except ProcessLookupError:
            return


def test_a_sweep_against_a_real_tracking_server_restarted_mid_sweep(tmp_path):
    """``mlflow server`` on 127.0.0.1 (started here, stopped here): the sweep's runs, metrics and
    config artifacts go through the server, artifacts into its proxied store, not the driver's disk.
    The server is stopped once the first epoch is logged and started again 10 s later: the sweep
    waits for it (MLflow's client retries) and nothing is lost or logged twice."""
    from mlflow.tracking import MlflowClient

    port = free_port()
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    server = _serve(server_dir, port)
    uri = f"http://127.0.0.1:{port}"
    client = MlflowClient(tracking_uri=uri)
    storage = tmp_path / "runs"
    sweep = subprocess.Popen([sys.executable, "-m", "raypair", "tune", str(QUICK), "--storage", str(storage),
                              "--tracking-uri", uri, "--num-samples", "3", "--set", "epochs=4"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 300
        logged = False
        while not logged and time.time() < deadline and sweep.poll() is None:
            exp = client.get_experiment_by_name("quickstart")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            logged = any("val_acc" in r.data.metrics for r in runs)
            time.sleep(0.3)
        assert logged, "an epoch reached the server"
        _stop(server)
        assert sweep.poll() is None, "the sweep was still running when its server went away"
        time.sleep(10)
        server = _serve(server_dir, port)
        out, _ = sweep.communicate(timeout=600)
        assert sweep.returncode == 0, out[-3000:]
        exp = client.get_experiment_by_name("quickstart")
        assert exp.artifact_location.startswith("mlflow-artifacts:"), exp.artifact_location
        children = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
        assert len(children) == 3 and all(r.info.status == "FINISHED" for r in children)
        for c in children:
            assert [a.path for a in client.list_artifacts(c.info.run_id)] == ["config.yaml"]
            done = int(c.data.tags["raypair.epochs_done"])
            steps = sorted(m.step for m in client.get_metric_history(c.info.run_id, "val_acc"))
            assert steps == list(range(1, done + 1)), (c.data.tags["raypair.trial_id"], steps)
        assert list((server_dir / "artifacts").rglob("config.yaml")), "artifacts are on the server's side"
        assert not (storage / "mlartifacts").exists() and not (storage / "mlflow.db").exists()
        rep = subprocess.run([sys.executable, "-m", "raypair", "report", "quickstart", "--storage", str(storage),
                              "--tracking-uri", uri], capture_output=True, text=True, timeout=300)
        assert rep.returncode == 0, rep.stdout[-2000:] + rep.stderr[-2000:]
        parent = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags][0]
        assert "report/report.md" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, 9)
        _stop(server)
