"""Resume truth under fire: the driver (and the Ray it started) is SIGKILLed at many instants of a
sweep and of an ablation, on both trainer paths, and resumed after each kill. Over all kill
instants: no trial that had ended is run again, no MLflow step is logged twice, no run is left
RUNNING, every trial's history holds each epoch once, and the Optuna study counts exactly the
trials that ran, none of them RUNNING.

Kill instants are events read from the trial store while the driver runs (start-up, a trial
asked for, an epoch recorded, a trial's last epoch recorded but not yet ended, an end recorded),
so they land at different points of the same chain. Two sizes of each chain: the CI one (tier
``ray``: 3 kills on the direct path, 2 under Ray Train, a smaller sweep) and the long one (tier
``soak``, opt-in: ``pytest -m soak``; 10 and 4 kills, every event above). ``RAYPAIR_KILLS=N`` sets how
many kills per chain for both.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

import ray  # noqa: F401  (a declared dependency: missing, the file fails instead of skipping)

from helpers import DIGITS, QUICK

# (trainer, kills, sweep trials, first events): the CI chain in tier ray, the long chain in tier soak
# (opt-in). The CI chains are short, so they put "an end recorded" early: a trial that ended before a
# kill is what the no-rerun check needs to check anything.
CI_EVENTS = ("first epoch recorded", "an end recorded", "a last epoch recorded")
CHAINS = [pytest.param("direct", 3, 4, CI_EVENTS, id="direct", marks=pytest.mark.ray),
          pytest.param("train", 2, 2, CI_EVENTS, id="train", marks=pytest.mark.ray),
          pytest.param("direct", 10, 10, (), id="direct-soak", marks=pytest.mark.soak),
          pytest.param("train", 4, 3, (), id="train-soak", marks=pytest.mark.soak)]


def _state(exp: Path, epochs: int) -> dict[str, int]:
    """Counts read from the trial store: trials asked, epochs recorded, last epochs, ends."""
    out = {"trials": 0, "rows": 0, "last": 0, "ends": 0}
    for folder in exp.glob("trials/*"):
        out["trials"] += (folder / "trial.json").exists()
        out["ends"] += (folder / "end.json").exists()
        try:
            rows = [json.loads(ln) for ln in (folder / "history.jsonl").read_text().splitlines() if ln.strip()]
        except (OSError, json.JSONDecodeError):
            rows = []
        out["rows"] += len(rows)
        out["last"] += any(r.get("epoch") == epochs for r in rows)
    return out


# (name, event): the driver is killed when the event has happened since this launch started
EVENTS: list[tuple[str, Callable[[dict, dict, float], bool]]] = [
    ("start-up", lambda s0, s, t: t > 4.0),
    ("first epoch recorded", lambda s0, s, t: s["rows"] > s0["rows"]),
    ("a last epoch recorded", lambda s0, s, t: s["last"] > s0["last"]),
    ("an end recorded", lambda s0, s, t: s["ends"] > s0["ends"]),
    ("a trial asked", lambda s0, s, t: s["trials"] > s0["trials"]),
    ("two epochs recorded", lambda s0, s, t: s["rows"] >= s0["rows"] + 2),
    ("a last epoch recorded", lambda s0, s, t: s["last"] > s0["last"]),
    ("an end recorded", lambda s0, s, t: s["ends"] > s0["ends"]),
    ("three epochs recorded", lambda s0, s, t: s["rows"] >= s0["rows"] + 3),
    ("a trial asked", lambda s0, s, t: s["trials"] > s0["trials"]),
]


def _started_keys(exp: Path, since: float) -> set[str]:
    """Trials a worker started at or after ``since`` (the trial store's workers.jsonl: a line per
    worker and attempt, with its start time)."""
    keys = set()
    for f in exp.glob("trials/*/workers.jsonl"):
        lines = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        assert all("time" in w for w in lines), f  # else nothing could count as run again
        if any(w["time"] >= since for w in lines):
            keys.add(f.parent.name)
    return keys


def _ended(exp: Path) -> set[str]:
    return {p.parent.name for p in exp.glob("trials/*/end.json")
            if json.loads(p.read_text())["status"] != "failed"}


def kill_chain(cmd: list[str], exp: Path, epochs: int, kills: int, log: Path, first: tuple = ()) -> list[dict]:
    """Launch, kill at the next event, resume, ...; then resume to the end. One entry per launch.
    The events are ``first`` (names of EVENTS), then EVENTS in order."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    order = [next(e for e in EVENTS if e[0] == name) for name in first] + EVENTS
    launches = []
    for i in range(kills + 1):
        name, event = order[i % len(order)] if i < kills else ("none", lambda *a: False)
        s0, started = _state(exp, epochs), time.time()
        before = {p.name for p in exp.glob("tune-*")}
        with open(log, "a") as f:
            f.write(f"\n===== launch {i} (kill at: {name})\n")
            f.flush()
            resume = ["--resume"] if exp.exists() else []  # a start killed before it made its folder: start again
            proc = subprocess.Popen(cmd + resume, stdout=f, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
            killed = False
            while proc.poll() is None and time.time() - started < 600:
                if event(s0, _state(exp, epochs), time.time() - started):
                    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started, at once
                    killed = True
                    break
                time.sleep(0.02)
            else:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _wait_for_orphans(proc.pid)
        new = sorted({p.name for p in exp.glob("tune-*")} - before)
        launches.append({"event": name, "killed": killed, "code": proc.returncode, "ended": _ended(exp),
                         "tune": new, "t0": started})
        if not killed and proc.returncode == 0:
            break
    assert launches[-1]["code"] == 0, log.read_text()[-4000:]
    return launches


def _enough_kills(launches: list[dict], out: dict, kills: Any) -> None:
    """The planned kills happened; or the sweep finished before the next planned instant could come
    (say "a last epoch recorded" when the one trial left had recorded its last epoch before it was
    killed): then at least two did."""
    finished_first = launches[-1]["event"] != "none"
    assert out["kills"] >= (2 if finished_first else min(_kills(kills), 3)), launches


def _an_end_was_protected(launches: list[dict], out: dict) -> None:
    """A chain that planned a kill at "an end recorded" made it, after a trial had ended: so the
    no-rerun check had a finished trial to protect."""
    if "an end recorded" in [lc["event"] for lc in launches]:
        assert any(lc["killed"] for lc in launches if lc["event"] == "an end recorded"), launches
        assert out["ended_before_a_kill"] >= 1, out


def _wait_for_orphans(pgid: int) -> None:
    """Nothing of the killed process group may live on (it would write into the store)."""
    import psutil

    deadline = time.time() + 30
    while time.time() < deadline:
        alive = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == pgid]
        if not alive:
            return
        time.sleep(0.2)
    raise AssertionError(f"processes of the killed driver survive: {alive}")


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return -1


def check(storage: Path, experiment: str, launches: list[dict], epochs: int, optuna_db: Path | None) -> dict:
    from mlflow.tracking import MlflowClient

    exp = storage / experiment
    rerun = 0
    for i, launch in enumerate(launches[:-1]):  # a trial ended before a kill is never started again
        later = _started_keys(exp, launches[i + 1]["t0"])  # every process of launch i was gone by then
        rerun += len(launch["ended"] & later)
    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    eid = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([eid], max_results=1000)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    dup_steps = running = 0
    for r in runs:
        running += r.info.status == "RUNNING"
    for c in children:
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "val_acc")]
        dup_steps += len(steps) - len(set(steps))
        assert sorted(set(steps)) == list(range(1, int(c.data.tags["raypair.epochs_done"]) + 1)), steps
    trained = 0
    for hist in exp.glob("trials/*/history.jsonl"):
        got = [json.loads(ln)["epoch"] for ln in hist.read_text().splitlines()]
        assert got == list(range(1, len(got) + 1)), (hist, got)
        if got:  # a trial that trained noted its worker: else a rerun of it would go unseen above
            workers = hist.parent / "workers.jsonl"
            assert workers.is_file() and workers.read_text().strip(), f"{hist.parent.name}: no workers.jsonl"
            trained += 1
    stores = len(list(exp.glob("trials/*/trial.json")))
    assert trained >= 1, "no trial recorded an epoch"
    out = {"kills": sum(lc["killed"] for lc in launches), "rerun": rerun, "dup_steps": dup_steps,
           "running": running, "trials": stores, "mlflow_children": len(children),
           "ended_before_a_kill": len(set().union(*(lc["ended"] for lc in launches[:-1])))}
    if optuna_db is not None:
        import optuna

        study = optuna.load_study(study_name=experiment, storage=f"sqlite:///{optuna_db}")
        out["optuna_trials"] = len(study.trials)
        out["optuna_running"] = sum(t.state.name in ("RUNNING", "WAITING") for t in study.trials)
    print(f"{experiment}: {out} events={[lc['event'] for lc in launches if lc['killed']]}")
    assert out["rerun"] == 0 and out["dup_steps"] == 0 and out["running"] == 0
    assert out["mlflow_children"] == stores
    if optuna_db is not None:
        assert out["optuna_trials"] == stores and out["optuna_running"] == 0
    return out


def _kills(default: int) -> int:
    return int(os.environ.get("RAYPAIR_KILLS", default))


@pytest.mark.parametrize("trainer,kills,trials,first", CHAINS)
def test_sweep_survives_kills_at_many_instants(tmp_path, trainer, kills, trials, first):
    spec = yaml.safe_load(QUICK.read_text())
    epochs = 4
    spec["run"]["epochs"] = epochs
    spec["tune"].update(num_samples=trials, max_concurrent_trials=2)
    spec["tune"]["scheduler"]["grace_period"] = 2  # ASHA stops some trials: "stopped" ends are resumed too
    spec["run"]["scale"]["trainer"] = trainer
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(spec))
    storage = tmp_path / "runs"
    cmd = [sys.executable, "-m", "raypair", "tune", str(tmp_path / "space.yaml"), "--storage", str(storage)]
    launches = kill_chain(cmd, storage / "quickstart", epochs, _kills(kills), tmp_path / "log.txt", first)
    out = check(storage, "quickstart", launches, epochs, storage / "quickstart" / "optuna.db")
    _enough_kills(launches, out, kills)
    _an_end_was_protected(launches, out)
    assert out["trials"] == spec["tune"]["num_samples"]


@pytest.mark.parametrize("trainer,kills,trials,first", CHAINS)
def test_ablation_survives_kills_at_many_instants(tmp_path, trainer, kills, trials, first):
    storage = tmp_path / "runs"
    seeds = "0,1,2" if trainer == "direct" and trials > 4 else "0"
    cmd = [sys.executable, "-m", "raypair", "ablate", str(DIGITS), "--storage", str(storage), "--seeds", seeds,
           "--set", f"scale.trainer={trainer}"]
    launches = kill_chain(cmd, storage / "digits_aug", 3, _kills(kills), tmp_path / "log.txt", first)
    out = check(storage, "digits_aug", launches, 3, None)
    _enough_kills(launches, out, kills)
    _an_end_was_protected(launches, out)
    assert out["trials"] == 3 * len(seeds.split(","))


@pytest.mark.ray
@pytest.mark.parametrize("how", ["SIGTERM to the driver", "SIGINT to the group"])
def test_a_stopped_driver_leaves_no_process_and_no_running_run(tmp_path, how):
    """``timeout`` sends SIGTERM to the driver; Ctrl-C sends SIGINT to the whole foreground group.
    Either way the driver stops its trials, records the cut-off ones KILLED (parent too), shuts its
    Ray down and exits 130; nothing of its process group survives; ``--resume`` finishes the sweep."""
    from mlflow.tracking import MlflowClient

    spec = yaml.safe_load(QUICK.read_text())
    spec["run"]["epochs"] = 4
    spec["tune"].update(num_samples=4, scheduler={"name": "none"})
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(spec))
    storage = tmp_path / "runs"
    cmd = [sys.executable, "-m", "raypair", "tune", str(tmp_path / "space.yaml"), "--storage", str(storage)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    deadline = time.time() + 240
    while _state(storage / "quickstart", 4)["rows"] < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    sig = signal.SIGTERM if how.startswith("SIGTERM") else signal.SIGINT
    if how.endswith("group"):
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    assert f"raypair: interrupted (stopped by {sig.name}; --resume continues)" in out
    _wait_for_orphans(proc.pid)
    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    statuses = sorted(r.info.status for r in runs)
    assert "RUNNING" not in statuses and "KILLED" in statuses, statuses
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags][0]
    assert parent.info.status == "KILLED"
    ended_before = _ended(storage / "quickstart")
    again = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=400)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    runs = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 5
    assert len(ended_before) < 4 and _ended(storage / "quickstart") == {"t0000", "t0001", "t0002", "t0003"}


@pytest.mark.ray
@pytest.mark.parametrize("when", ["before Ray", "between Ray and Tune", "twice during Tune"])
def test_a_signal_at_any_instant_stops_the_same_way(tmp_path, when):
    """SIGTERM once the experiment's folder is held (before Ray starts), or after Ray started but
    before Tune (``experiment.json`` is written then, no trial yet): the same clean stop, exit 130,
    no run left RUNNING, nothing left. A second SIGTERM while the first
    stop runs ends the driver at once (within seconds), and nothing of its group survives either."""
    from mlflow.tracking import MlflowClient

    storage = tmp_path / "runs"
    cmd = [sys.executable, "-m", "raypair", "tune", str(QUICK), "--storage", str(storage), "--set", "epochs=3",
           "--num-samples", "2", "--set", "tune.scheduler.name=none"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    exp, deadline = storage / "quickstart", time.time() + 240
    ready = {"before Ray": lambda: (exp / ".lock").exists(),
             "between Ray and Tune": lambda: (exp / "experiment.json").exists()}.get(
        when, lambda: _state(exp, 3)["rows"] >= 1)
    while not ready() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None and _state(exp, 3)["trials"] == 0 or not when.startswith("between")
    proc.send_signal(signal.SIGTERM)
    if when.startswith("twice"):  # the second lands in the stop, in ray.shutdown or in the teardown
        time.sleep(0.5)
        ended = proc.poll() is not None  # the whole stop was quicker: nothing to signal again
        proc.send_signal(signal.SIGTERM)
        t0 = time.time()
        out, _ = proc.communicate(timeout=60)
        # not ended: the second lands in the stop ("again: exiting now") or, rarely, in the instant
        # between the stop's end and the teardown's handler, where the CLI's own handler says
        # "interrupted"; both exit 130 at once
        again = ["raypair: interrupted (stopped by SIGTERM"] + ([] if ended else ["SIGTERM again: exiting now"])
        assert time.time() - t0 < 15 and any(a in out for a in again), (proc.returncode, out[-2000:])
    else:
        out, _ = proc.communicate(timeout=120)
        assert "raypair: interrupted (stopped by SIGTERM; --resume continues)" in out, out[-3000:]
        client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
        mlexp = client.get_experiment_by_name("quickstart")
        runs = client.search_runs([mlexp.experiment_id]) if mlexp else []
        assert all(r.info.status == "KILLED" for r in runs), [r.info.status for r in runs]
        assert runs or when == "before Ray"
    assert proc.returncode == 130, out[-3000:]
    _wait_for_orphans(proc.pid)
