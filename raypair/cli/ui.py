"""``raypair ui``: the MLflow UI of a store and, for a sweep, the Optuna dashboard of its study
(read-only, ``dashboard.py``), both on 127.0.0.1 unless ``--host`` says otherwise (then with a
warning). Each server runs in its own process group, and
Ctrl-C or SIGTERM stops both groups whole (MLflow's UI starts helper processes that outlive a
plain kill of its main process), so nothing is left running."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from raypair.cli.dashboard import LOOPBACK
from raypair.config import ConfigError


def study_db(storage: Path, name: Optional[str]) -> Optional[Path]:
    """The Optuna study to show: ``--study NAME``'s, else the newest sweep's (None if no sweep)."""
    if name is not None:
        db = storage / name / "optuna.db"
        if not db.is_file():
            there = ", ".join(sorted(p.parent.name for p in storage.glob("*/optuna.db"))) or "none"
            raise ConfigError("--study", f"no Optuna study of that name under {storage} (there: {there})", name)
        return db
    dbs = sorted(storage.glob("*/optuna.db"), key=lambda p: p.stat().st_mtime)
    return dbs[-1] if dbs else None


def _dashboard() -> Optional[list[str]]:
    """The command that serves a study read-only (``raypair.cli.dashboard``), if optuna-dashboard is
    installed."""
    import importlib.util

    if importlib.util.find_spec("optuna_dashboard") is None:
        return None
    return [sys.executable, "-m", "raypair.cli.dashboard"]


def check_port(host: str, port: int) -> None:
    """A port taken, or not this machine's address: one line now, not the server's traceback later."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise ConfigError("--port", f"cannot listen on {host}:{port}: {e.strerror or e}", port) from None


def serve(uri: str, storage: Path, args: argparse.Namespace) -> int:
    if args.host not in LOOPBACK:
        print(f"raypair: warning: --host {args.host}: the runs are served to every machine that can reach this "
              "one, with no login (the default 127.0.0.1 serves this machine only)", file=sys.stderr, flush=True)
    servers = _start(uri, storage, args)
    for what, _ in servers:
        print(what, flush=True)
    print("Ctrl-C stops them.", flush=True)
    stop, died = _watch(servers)
    if stop:
        return 0
    print(f"raypair: error: ui: a server stopped: {died[0].split(' on ')[0]} (is the port taken?)", file=sys.stderr)
    return 1


def _start(uri: str, storage: Path, args: argparse.Namespace) -> list[tuple[str, subprocess.Popen]]:
    """The ports checked, then the MLflow UI and (a sweep's study, optuna-dashboard installed) the
    dashboard started, each in a process group of its own: ``[(what and where, process)]``."""
    db = study_db(storage, args.study)
    exe = _dashboard() if db is not None else None
    dash_port = args.port + 1 if args.port < 65535 else args.port - 1
    check_port(args.host, args.port)
    if exe is not None:
        check_port(args.host, dash_port)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # browsing needs no job runners
    servers: list[tuple[str, subprocess.Popen]] = []
    mlflow = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
              "--port", str(args.port)]
    servers.append((f"MLflow UI on http://{args.host}:{args.port} for {uri}",
                    subprocess.Popen(mlflow, env=env, start_new_session=True)))
    if db is not None:
        servers += _start_dashboard(db, exe, args.host, dash_port, env)
    return servers


def _start_dashboard(db: Path, exe: Optional[list[str]], host: str, port: int,
                     env: dict[str, str]) -> list[tuple[str, subprocess.Popen]]:
    """The Optuna dashboard of the study ``db``; none, and how to get it, without optuna-dashboard."""
    if exe is None:
        print(f"Optuna study {db}: pip install 'raypair[dashboard]' (optuna-dashboard) to browse it here",
              flush=True)
        return []
    cmd = [*exe, str(db), host, str(port)]
    return [(f"Optuna dashboard on http://{host}:{port} (read-only) for the study of sweep {db.parent.name!r}",
             subprocess.Popen(cmd, env=env, start_new_session=True))]


def _watch(servers: list[tuple[str, subprocess.Popen]]) -> tuple[list[str], list[str]]:
    """Wait for SIGINT or SIGTERM or a server that exits, then stop every server's group:
    ``(the signals received, the servers that exited)``."""
    stop: list[str] = []

    def handler(signum: int, frame: Any) -> None:
        stop.append(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    died: list[str] = []
    try:
        while not stop and not died:
            died = [what for what, p in servers if p.poll() is not None]
            time.sleep(0.2)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for _, p in servers:
            _stop_group(p)
    return stop, died


def _stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the server's whole process group, SIGKILL to what is left after ``grace_s``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
    proc.poll()
