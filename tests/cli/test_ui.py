"""``raypair ui`` for real: the MLflow UI and the Optuna dashboard of a sweep's study, both on
127.0.0.1, both answering; Ctrl-C stops them and leaves no process behind."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import optuna_dashboard  # noqa: F401  (declared in the test extra: missing, the file fails instead of skipping)

pytestmark = pytest.mark.slow  # servers in subprocesses


def _free_pair() -> int:
    """A port p with p + 1 free too."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            p = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", p + 1))
                    return p
                except OSError:
                    continue
    raise AssertionError("no two free ports")


def _descendants(pid: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.add(k)
            todo.append(k)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


def _status(url: str, method: str = "GET", host: str = "") -> int:
    req = urllib.request.Request(url, method=method, data=b"{}" if method != "GET" else None,
                                 headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _check_the_dashboard_only_reads(port: int) -> None:
    """What writes is refused (deleting the study, telling a trial), and so is a request addressed
    to another host (a DNS-rebinding page); the study is still there afterwards."""
    api = f"http://127.0.0.1:{port}/api/studies"
    assert _status(api, host=f"localhost:{port}") == 200
    assert _status(api, host=f"evil.example:{port}") == 403
    assert _status(f"{api}/0", "DELETE") == 405
    assert _status(f"{api}/0/trials", "POST") == 405
    assert _status(f"http://127.0.0.1:{port}/api/trials/0/tell", "POST") == 405
    assert "sw" in {s["study_name"] for s in json.loads(_get(api))["study_summaries"]}


def test_ui_serves_mlflow_and_the_optuna_study_and_leaves_nothing_behind(tmp_path):
    import optuna
    from mlflow.tracking import MlflowClient

    storage = tmp_path / "runs"
    (storage / "sw").mkdir(parents=True)
    MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}").create_experiment("sw")
    study = optuna.create_study(study_name="sw", storage=f"sqlite:///{storage / 'sw' / 'optuna.db'}")
    study.add_trial(optuna.trial.create_trial(params={"lr": 0.1}, distributions={
        "lr": optuna.distributions.FloatDistribution(0.01, 1.0)}, value=0.5))
    port = _free_pair()
    proc = subprocess.Popen([sys.executable, "-m", "raypair", "ui", "--storage", str(storage), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, up = time.time() + 180, set()
        while len(up) < 2 and time.time() < deadline and proc.poll() is None:
            for name, url in (("mlflow", f"http://127.0.0.1:{port}/health"),
                              ("optuna", f"http://127.0.0.1:{port + 1}/api/studies")):
                try:
                    body = _get(url)
                    up.add(name)
                    if name == "optuna":
                        assert "sw" in {s["study_name"] for s in json.loads(body)["study_summaries"]}
                except OSError:
                    pass
            time.sleep(0.5)
        assert up == {"mlflow", "optuna"}, up
        _check_the_dashboard_only_reads(port + 1)
        servers = _descendants(proc.pid)
        assert len(servers) >= 2
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-2000:]
    assert f"MLflow UI on http://127.0.0.1:{port}" in out and f"Optuna dashboard on http://127.0.0.1:{port + 1}" in out
    deadline = time.time() + 10  # orphans of the servers are reaped by init a moment later
    while time.time() < deadline and any(_alive(p) for p in servers):
        time.sleep(0.2)
    assert not [p for p in servers if _alive(p)], "a server process outlived raypair ui"
    for p in (port, port + 1):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", p)) != 0, f"port {p} still served"
