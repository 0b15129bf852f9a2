"""The seeds-until-decided kind run for real (tier ray): ``raypair run`` on the offline digits
(tests/data/sequential_digits.yaml: an A/A comparison and a learning rate 50x smaller, one epoch),
once straight through and once with its driver SIGKILLed (with the Ray it started) after a few
pairs ended, then ``--resume``d. Both reach the same decisions; the clear comparison is decided
before max_seeds, the A/A one is not called different; no pair that had ended runs again; the
plan is on the MLflow parent before the first trial and the decisions in its tags at the end."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import SEQUENTIAL, mlflow_runs

pytestmark = pytest.mark.ray
NAME = "digits_seq"
DECIDED = re.compile(r"^(\S+ vs \S+): (\w+) after (\d+) seeds .* difference (\S+) in \[(\S+), (\S+)\]", re.M)


def _launch(storage: Path, log: Path, resume: bool = False, kill_after_ends: int = 0) -> tuple[int, bool]:
    cmd = [sys.executable, "-m", "raypair", "run", str(SEQUENTIAL), "--storage", str(storage)] + (["--resume"] * resume)
    with open(log, "a") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        while proc.poll() is None:
            if kill_after_ends and len(list((storage / NAME).glob("trials/*/end.json"))) >= kill_after_ends:
                os.killpg(proc.pid, signal.SIGKILL)  # the driver and its Ray, at once
                proc.wait()
                time.sleep(3)  # its processes gone (the store is read, not written, from here)
                return proc.returncode, True
            time.sleep(0.05)
    return proc.returncode, False


def _decisions(text: str) -> dict[str, tuple]:
    return {m[0]: (m[1], int(m[2]), float(m[3]), float(m[4]), float(m[5])) for m in DECIDED.findall(text)}


def _started(storage: Path) -> dict[str, int]:
    """Trial -> how many times a worker started it (the trial store's workers.jsonl)."""
    out = {}
    for f in (storage / NAME).glob("trials/*/workers.jsonl"):
        out[f.parent.name] = sum(1 for ln in f.read_text().splitlines() if ln.strip() and json.loads(ln).get("rank", 0) == 0)
    return out


def test_seeds_until_decided_straight_and_killed_reach_the_same_decisions(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    code, _ = _launch(straight, tmp_path / "straight.log")
    text = (tmp_path / "straight.log").read_text()
    assert code == 0, text[-3000:]
    want = _decisions(text)
    aa, clear = want["same_again vs base"], want["slow vs base"]
    assert clear[0] == "worse" and clear[1] < 8 and clear[4] < -0.03  # decided before max_seeds, beyond delta
    assert aa[0] in ("equivalent", "open")  # the A/A comparison is not called different
    shown = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("decided: slow vs base: worse")]
    assert len(shown) == 1, text[-3000:]  # the progress lines told the decision as it was taken

    code, was_killed = _launch(killed, tmp_path / "killed.log", kill_after_ends=5)
    assert was_killed, (tmp_path / "killed.log").read_text()[-3000:]
    ended_before = {p.parent.name for p in (killed / NAME).glob("trials/*/end.json")}
    code, _ = _launch(killed, tmp_path / "resumed.log", resume=True)
    resumed = (tmp_path / "resumed.log").read_text()
    assert code == 0, resumed[-3000:]
    assert _decisions(resumed) == want
    runs = _started(killed)
    assert sorted(runs) == sorted(_started(straight))  # the same pairs, decided the same way
    assert all(runs[k] == 1 for k in ended_before), runs  # none that had ended ran again

    _, parents, children = mlflow_runs(killed, NAME)
    (parent,) = parents
    assert parent.data.params["sequential.delta"] == "0.03" and parent.data.params["sequential.max_seeds"] == "8"
    assert parent.data.tags["raypair.test"].startswith("group-sequential paired t")
    assert parent.data.tags["raypair.seq.slow vs base.decision"] == "worse"
    assert int(parent.data.tags["raypair.seeds_spent"]) == len(children) == len(runs) < 24
