"""``raypair ablate`` on a real local Ray into a real MLflow store (digits, offline): a run killed
mid-way and resumed re-runs no finished (variant, seed) pair and doubles no MLflow run, and
``raypair report`` turns the store into tables and figures logged to the parent run."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray
import ray  # noqa: E402,F401  (a declared dependency: missing, the file fails instead of skipping)

from helpers import DIGITS, mlflow_children

PAIRS = {(v, s) for v in ("base", "base+", "cutmix") for s in (0, 1, 2, 3)}  # seed 3 added by the resume


def _client(storage: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")


def _finished(storage: Path) -> dict[tuple[str, int], int]:
    """(variant, seed) -> end time of its FINISHED run."""
    try:
        runs = mlflow_children(storage, "digits_aug")
    except Exception:  # the store is being created by the driver
        return {}
    return {(r.data.tags["raypair.variant"], int(r.data.tags["raypair.seed"])): r.info.end_time
            for r in runs if r.info.status == "FINISHED"}


def _started_pairs(exp: Path, since: float) -> set[tuple[str, int]]:
    """(variant, seed) of the pairs a worker started at or after ``since`` (the trial store's
    workers.jsonl: a line per worker and attempt, with its start time)."""
    out = set()
    for f in exp.glob("trials/*/workers.jsonl"):
        lines = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        assert all("time" in w for w in lines), f  # else nothing could count as run again
        if any(w["time"] >= since for w in lines):
            pair = json.loads((f.parent / "trial.json").read_text())["params"]
            out.add((pair["variant"], pair["seed"]))
    return out


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """Start an ablation, SIGKILL it (driver and its Ray) after two pairs finished, resume it
    with one more seed."""
    storage = tmp_path_factory.mktemp("ablate")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "raypair", "ablate", str(DIGITS), "--storage", str(storage)]
    with open(storage / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline, before = time.time() + 300, {}
        try:
            while time.time() < deadline and proc.poll() is None and len(before) < 2:
                time.sleep(0.3)
                before = _finished(storage)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    before = _finished(storage)  # what had finished when the kill landed
    exp = storage / "digits_aug"
    history = {p.parent.name: p.read_text() for p in exp.glob("trials/*/history.jsonl")}
    done = set()  # pairs whose store recorded their end as finished when the kill landed
    for p in exp.glob("trials/*/end.json"):
        if json.loads(p.read_text())["status"] == "finished":
            params = json.loads((p.parent / "trial.json").read_text())["params"]
            done.add((params["variant"], params["seed"]))
    t_resume = time.time()
    out = subprocess.run(cmd + ["--resume", "--seeds", "0,1,2,3"], capture_output=True, text=True, env=env, timeout=500)
    return {"storage": storage, "before": before, "history": history, "out": out, "done": done, "t_resume": t_resume,
            "first_log": (storage / "first.log").read_text()}


def test_resume_reruns_no_finished_pair_and_doubles_no_run(resumed):
    storage, before, out = resumed["storage"], resumed["before"], resumed["out"]
    assert 2 <= len(before) < 9, resumed["first_log"][-3000:]
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # the store may hold an end that MLflow had not heard of when the kill landed: it is done too
    done = resumed["done"]
    assert f"ablation 'digits_aug': {len(done)} trials done earlier" in out.stdout
    assert set(before) <= done
    exp = storage / "digits_aug"
    rerun = _started_pairs(exp, resumed["t_resume"])
    assert not (rerun & done), "a finished pair was run again"
    assert rerun == PAIRS - done
    runs = mlflow_children(storage, "digits_aug")
    keys = [(r.data.tags["raypair.variant"], int(r.data.tags["raypair.seed"])) for r in runs]
    assert sorted(keys) == sorted(PAIRS), "exactly one MLflow run per (variant, seed)"
    client = _client(storage)
    after = _finished(storage)
    for r in runs:
        assert r.info.status == "FINISHED"
        for metric in ("val_acc", "train_loss"):
            steps = [m.step for m in client.get_metric_history(r.info.run_id, metric)]
            assert sorted(steps) == [1, 2, 3], (keys, metric, steps)
    for pair, end in before.items():
        assert after[pair] == end, f"finished pair {pair} was touched by the resume"
    for name, text in resumed["history"].items():  # every pair's epochs are recorded once
        final = (exp / "trials" / name / "history.jsonl").read_text()
        assert final.startswith(text)
        assert [json.loads(ln)["epoch"] for ln in final.splitlines()] == [1, 2, 3]
    parent = [r for r in client.search_runs([runs[0].info.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert parent[0].data.tags["raypair.pairs_finished"] == "12"


def test_report_of_the_ablation(resumed, capsys):
    from raypair.cli import main

    storage = resumed["storage"]
    assert main(["report", "digits_aug", "--storage", str(storage)]) == 0
    folder = storage / "digits_aug" / "report"
    assert {p.name for p in folder.iterdir()} == {"report.md", "report.csv", "bars.png", "curves.png"}
    # the table's numbers are the Student t intervals of what MLflow holds, computed here by hand:
    # mean ± t_{0.975, 3} s / sqrt(4), s the sample standard deviation (n - 1), t_{0.975, 3} = 3.182446
    finals: dict[str, list[float]] = {}
    for r in mlflow_children(storage, "digits_aug"):
        finals.setdefault(r.data.tags["raypair.variant"], []).append(100 * r.data.metrics["val_acc"])
    assert {v: len(vals) for v, vals in finals.items()} == {"base": 4, "base+": 4, "cutmix": 4}
    md = (folder / "report.md").read_text()
    for variant, values in finals.items():
        mean = sum(values) / 4
        half = 3.1824463052837078 * math.sqrt(sum((v - mean) ** 2 for v in values) / 3) / 2
        assert f"| {variant} | 4 | {mean:.2f} ± {half:.2f} |" in md, (variant, values, md)
    client = _client(storage)
    exp = client.get_experiment_by_name("digits_aug")
    parent = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags][0]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert logged == {f"report/{n}" for n in ("report.md", "report.csv", "bars.png", "curves.png")}


def test_a_failing_pair_does_not_take_the_ablation_down(tmp_path):
    """A variant that fails inside Ray fails alone: a drop-path rate of 1.5 passes to timm's ViT,
    which builds, then fails at its first training forward (what the driver checks before Ray
    starts cannot see it). Both pairs run under Ray Train (as on GPU nodes), whose controller
    records each pair's epochs."""
    import yaml

    raw = yaml.safe_load(DIGITS.read_text())
    raw["variants"] = {"base": {}, "broken": {"model.name": "tiny_vit",
                                              "model.kwargs": {"depth": 2, "drop_path_rate": 1.5}}}
    raw.update(seeds=[0], paper=None, quick=None)
    raw["run"]["epochs"] = 1
    raw["run"]["scale"]["trainer"] = "train"
    path = tmp_path / "failing.yaml"
    path.write_text(yaml.safe_dump(raw))
    storage = tmp_path / "runs"
    out = subprocess.run([sys.executable, "-m", "raypair", "ablate", str(path), "--storage", str(storage)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "1 of 2 pairs finished, 1 failed" in out.stdout
    runs = {r.data.tags["raypair.variant"]: r for r in mlflow_children(storage, "digits_aug")}
    assert runs["base"].info.status == "FINISHED" and runs["broken"].info.status == "FAILED"
    assert "bernoulli" in runs["broken"].data.tags["raypair.error"]
    assert list((storage / "digits_aug" / "train").glob("base__s0-*"))  # a TorchTrainer ran it
    history = (storage / "digits_aug" / "trials" / "base__s0" / "history.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in history] == [1]
    from raypair.cli import main

    assert main(["report", "digits_aug", "--storage", str(storage), "--no-log"]) == 0
    md = (storage / "digits_aug" / "report" / "report.md").read_text()
    assert "Runs not finished: broken s0 (FAILED)" in md and "| base | 1 |" in md


def test_resume_under_a_changed_config_is_refused(resumed, capsys):
    from raypair.cli import main

    code = main(["ablate", str(DIGITS), "--storage", str(resumed["storage"]), "--resume", "--set", "optim.lr=0.01"])
    err = capsys.readouterr().err
    assert code == 2 and "finished under another config (the file or --set changed since)" in err, err
    assert err.startswith("raypair: error: --resume: trial ") and len(err.strip().splitlines()) == 1
