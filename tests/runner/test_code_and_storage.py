"""On a real local Ray: trials run the driver's raypair (a raypair/ folder in the working folder
never shadows it; a worker that imports another raypair is refused in one line before any trial),
every run is tagged with the code it ran, Ray's token file is the user's only; and a full disk
pauses a sweep (exit 3, runs interrupted, nothing failed, the searcher told nothing) that
``--resume`` finishes after the space is freed, losing nothing."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray
import ray  # noqa: E402

from helpers import QUICK, mlflow_children

from raypair.config import ConfigError
from raypair.trials import provenance

ONE = ["--num-samples", "2", "--set", "epochs=2", "--set", "tune.searcher.name=random",
       "--set", "tune.scheduler.name=none"]


def _plant(folder: Path, poison: bool) -> Path:
    """A raypair/ folder: a poisoned one records that it was imported and breaks; else a copy of the
    driver's raypair with one byte more (it imports, but its source is not the driver's)."""
    pkg = folder / "raypair"
    if poison:
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text(f"open({str(folder / 'IMPORTED')!r}, 'w').close()\n"
                                         "raise ImportError('the planted raypair')\n")
    else:
        shutil.copytree(provenance.package_dir(), pkg, ignore=shutil.ignore_patterns("__pycache__"))
        with open(pkg / "loop" / "epoch.py", "a") as f:
            f.write("\n# planted\n")
    return pkg


def test_a_raypair_folder_in_the_working_folder_never_trains(tmp_path, monkeypatch, capsys):
    from raypair.cli import main

    work = tmp_path / "work"
    _plant(work, poison=True)
    monkeypatch.chdir(work)
    try:
        code = main(["tune", str(QUICK), "--storage", str(tmp_path / "s"), *ONE])
    finally:
        ray.shutdown()
    assert code == 0, capsys.readouterr()
    assert not (work / "IMPORTED").exists(), "a worker imported the planted raypair"
    children = mlflow_children(tmp_path / "s", "quickstart")
    assert len(children) == 2
    for run in children:
        assert run.data.tags["raypair.source_hash"] == provenance.source_hash()
        assert run.data.tags["raypair.version.ray"] == ray.__version__ and run.data.tags["raypair.git_sha"]
    token = Path.home() / ".ray" / "auth_token"
    if token.exists() and token.stat().st_uid == os.getuid():
        assert token.stat().st_mode & 0o777 == 0o600


def test_a_worker_that_imports_another_raypair_is_refused_before_any_trial(tmp_path, monkeypatch):
    from raypair.runner.cluster import check_nodes

    work = tmp_path / "work"
    planted = _plant(work, poison=False)
    (tmp_path / "exp").mkdir()
    monkeypatch.chdir(work)  # a driver that does not pin its code: Ray puts this folder first on the workers' path
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="warning",
             _temp_dir=tempfile.mkdtemp(prefix="rpf", dir="/tmp"))  # short: Ray's socket paths live under it
    try:
        with pytest.raises(ConfigError) as e:
            check_nodes(tmp_path / "exp", shared=False)
    finally:
        ray.shutdown()
    assert e.value.field == "raypair" and str(planted) in str(e.value)
    assert provenance.source_hash() in str(e.value) and "\n" not in str(e.value)
    assert list((tmp_path / "exp").iterdir()) == []  # the probes removed


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MiB tmpfs (root only): a disk that can really be filled."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill_when_trained(exp: Path, filler: Path, done: threading.Event) -> None:
    """Once a first epoch is recorded, the disk is filled to the last byte."""
    while not done.is_set():
        if any(f.stat().st_size for f in exp.glob("trials/*/history.jsonl")):
            try:
                with open(filler, "wb") as f:
                    while True:
                        f.write(b"\0" * (1 << 20))
            except OSError:
                pass
            return
        time.sleep(0.05)


@pytest.mark.parametrize("trainer", ["direct", "train"])
def test_a_full_disk_pauses_the_sweep_and_resume_loses_nothing(small_disk, tmp_path, capsys, trainer):
    """In the trial process (direct) and in a Ray Train worker (train), which write the history and
    the checkpoints."""
    from mlflow.tracking import MlflowClient

    from raypair.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # MLflow elsewhere: the runs can be marked while the disk is full
    n = 3 if trainer == "direct" else 2  # Train starts in ~20 s a trial
    args = ["tune", str(QUICK), "--storage", str(small_disk), "--tracking-uri", uri, "--num-samples", str(n),
            "--set", "epochs=3", "--set", "tune.searcher.name=random", "--set", "tune.scheduler.name=none",
            "--set", "tune.max_concurrent_trials=1", "--set", f"scale.trainer={trainer}",
            "--set", "scale.cpus_per_worker=0.5"]
    exp, filler, done = small_disk / "quickstart", small_disk / "filler", threading.Event()
    watcher = threading.Thread(target=_fill_when_trained, args=(exp, filler, done), daemon=True)
    watcher.start()
    try:
        code = main(args)
    finally:
        done.set()
        ray.shutdown()
    err = capsys.readouterr().err
    assert code == 3, err
    assert "raypair: paused: storage fault" in err and "ENOSPC" in err and "Traceback" not in err
    ends = [json.loads(f.read_text())["status"] for f in exp.glob("trials/*/end.json")]
    assert "failed" not in ends, ends  # the machine's fault is no trial's result
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    assert runs and all(r.info.status != "RUNNING" for r in runs)
    assert all(r.info.status != "FAILED" for r in runs)
    assert any(r.data.tags.get("raypair.status") == "interrupted" for r in runs)

    filler.unlink()  # the fix
    try:
        code = main([*args[:1], str(QUICK), "--resume", *args[2:]])
    finally:
        ray.shutdown()
    assert code == 0, capsys.readouterr()
    for folder in exp.glob("trials/*"):
        epochs = [json.loads(ln)["epoch"] for ln in (folder / "history.jsonl").read_text().splitlines()]
        assert epochs == [1, 2, 3], (folder.name, epochs)  # each epoch once: nothing lost, nothing twice
        assert json.loads((folder / "end.json").read_text())["status"] == "finished"
    runs = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == n and all(r.info.status == "FINISHED" for r in runs)
