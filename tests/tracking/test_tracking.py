"""MLflow tracking on a real SQLite store, and the MLflow UI bound to 127.0.0.1."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from raypair.tracking import Tracker, default_uri, git_sha

from helpers import free_port


@pytest.fixture
def tracker(tmp_path):
    return Tracker(default_uri(tmp_path), "exp", artifact_root=str(tmp_path / "mlartifacts"))


def test_runs_are_found_again_by_key(tracker):
    parent, existed = tracker.start("sweep/x", "x")
    assert not existed
    child, existed = tracker.start("x/t1", "x-t1", parent=parent, tags={"raypair.trial_id": "t1"})
    again, existed = tracker.start("x/t1", "x-t1", parent=parent)
    assert existed and again == child
    assert tracker.find("x/t1") == child and tracker.find("sweep/x") == parent
    tags = tracker.client.get_run(child).data.tags
    assert tags["mlflow.parentRunId"] == parent and tags["raypair.trial_id"] == "t1"
    assert tags["raypair.git_sha"] == git_sha() != ""


def test_metrics_once_per_step_and_only_numbers(tracker):
    run, _ = tracker.start("k", "r")
    assert tracker.log_metrics(run, {"epoch": 1, "val_acc": 0.5, "note": "x", "nan": float("nan"),
                                     "worker": {"rank": 0}}, step=1)
    assert tracker.log_metrics(run, {"epoch": 2, "val_acc": 0.6}, step=2)
    assert not tracker.log_metrics(run, {"epoch": 2, "val_acc": 0.9}, step=2)  # a resumed trial re-reports
    fresh = Tracker(tracker.uri, "exp")  # a new driver process after --resume
    assert not fresh.log_metrics(run, {"epoch": 1, "val_acc": 0.1}, step=1)
    hist = tracker.client.get_metric_history(run, "val_acc")
    assert [(m.step, m.value) for m in hist] == [(1, 0.5), (2, 0.6)]
    assert set(tracker.client.get_run(run).data.metrics) == {"epoch", "val_acc"}


def test_params_in_batches_and_yaml_artifact(tracker, tmp_path):
    run, _ = tracker.start("k", "r")
    tracker.log_params(run, {f"p{i:03d}": i for i in range(250)} | {"list": [60, 120], "none": None})
    params = tracker.client.get_run(run).data.params
    assert len(params) == 252 and params["p007"] == "7" and params["list"] == "[60, 120]" and params["none"] == "null"
    tracker.log_yaml(run, {"a": {"b": 1}}, "config.yaml")
    assert [a.path for a in tracker.client.list_artifacts(run)] == ["config.yaml"]
    assert (tmp_path / "mlartifacts" / "exp").is_dir()  # artifacts beside the store, not in the cwd


def test_tracker_pickles_without_its_client(tracker):
    import pickle

    tracker.experiment_id  # opens a client
    copy = pickle.loads(pickle.dumps(tracker))
    assert copy._client is None and copy.uri == tracker.uri and copy.experiment_id == tracker.experiment_id


@pytest.mark.slow
def test_ui_serves_the_store_on_loopback_only(tracker, tmp_path):
    tracker.start("k", "r")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "raypair", "ui", "--storage", str(tmp_path), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, body = time.time() + 90, None
        while time.time() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search"
                                            "?max_results=10", timeout=2) as r:
                    body = r.read().decode()
            except OSError:
                time.sleep(0.5)
        assert body is not None and '"exp"' in body
        import psutil  # declared in the test extra (no system binary such as ss is assumed)

        listening = {c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port}
        assert listening == {"127.0.0.1"}, listening
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_ui_without_a_store_is_a_clear_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "raypair", "ui", "--storage", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("raypair: error: --storage: no MLflow store")


def test_a_sqlite_store_keeps_its_artifacts_beside_it(tmp_path, monkeypatch):
    """No artifact root given: the artifacts go beside the database, never to ./mlruns in the cwd."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    t = Tracker(default_uri(tmp_path / "store"), "bare")
    (tmp_path / "store").mkdir()
    run_id, _ = t.start("k", "bare-run")
    t.log_yaml(run_id, {"a": 1}, "config.yaml")
    assert list((tmp_path / "store" / "mlartifacts").rglob("config.yaml"))
    assert not any(cwd.iterdir())


def test_the_run_table_view_is_a_saved_view_the_ui_reads(tracker):
    """The experiment carries a saved view of its run table (the searched params and the metric as
    columns, best first) in the envelope MLflow's UI parses, under the tag prefix and URL key that
    the installed UI reads (checked in its bundle, so an MLflow that drops them fails here)."""
    import json
    from pathlib import Path

    import mlflow

    route = tracker.save_view("sweep s: trials by val_acc", [("params", "optim.lr"), ("metrics", "val_acc")],
                              ("metrics", "val_acc"))
    exp = tracker.client.get_experiment(tracker.experiment_id)
    assert route == f"#/experiments/{exp.experiment_id}/runs?viewStateShareKey=raypair"
    envelope = json.loads(exp.tags["mlflow.sharedViewState.raypair"])
    assert isinstance(envelope["name"], str) and isinstance(envelope["createdAt"], int)
    state = json.loads(envelope["state"])  # a string in the envelope, as the UI's parser requires
    assert state == {"selectedColumns": ["params.`optim.lr`", "metrics.`val_acc`"],
                     "orderByKey": "metrics.`val_acc`", "orderByAsc": False}
    bundle = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    text = "".join(f.read_text(errors="ignore") for f in bundle.glob("*.js"))
    assert '"mlflow.sharedViewState."' in text and '"viewStateShareKey"' in text and '"selectedColumns"' in text
