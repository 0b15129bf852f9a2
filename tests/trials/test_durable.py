"""Crash consistency of the trial store, proven the way file-system research proves it (ALICE,
OSDI 2014): record the durable operations of a real (short) sweep through the store, then for every
crash point rebuild the disk from only what was durable before it (and, for an append, a crash
half-way through its write), resume, and require every result present once and unchanged.
Also: every write in raypair goes through ``raypair.trials.durable``; temp names are unique per
host and process; a trial process of an earlier driver may not write (fencing)."""
from __future__ import annotations

import ast
import os
import socket
from pathlib import Path

import pytest
import torch

from raypair.experiments.base import Trial
from raypair.experiments.sweep import load_sweep
from raypair.trials import durable
from raypair.trials.store import STATE_FILE, Fenced, TrialStore, new_token, prepare, read_records, write_json

from helpers import QUICK, ROOT

KEYS, EPOCHS = ("t0000", "t0001"), 2

# writes that are not the trial store's, each with why: (module, call) -> how many
NOT_THE_STORE = {
    ("raypair/report/ablation.py", "write_text"): 1,  # a report the user asked for, rebuilt from the store
    ("raypair/report/sweep.py", "write_text"): 1,
    ("raypair/report/cells.py", "open"): 1,  # the report's CSV
    ("raypair/report/sequential.py", "write_text"): 1,  # a sequential ablation's report.md
    ("raypair/experiments/base.py", "write_text"): 1,  # notes.json for status (temp + rename; remade every start)
    ("raypair/data/sources/base.py", "os.replace"): 1,  # the decoded-data cache (rebuilt if lost)
    ("raypair/data/sources/base.py", "open"): 2,  # its temp file and its lock file
    ("raypair/tracking/store.py", "open"): 1,  # MLflow's lock file
    ("raypair/runner/cluster.py", "write_text"): 1,  # the shared-storage probe (removed at once)
    ("raypair/runner/cluster.py", "open"): 1,  # the Ray token file, created 0600 (not the store)
    ("raypair/trials/provenance.py", "open"): 1,  # a node's write probe (fsynced, read back, removed)
    ("raypair/runner/adapters.py", "write_text"): 1,  # Tune's empty checkpoint: resume reads the store
    ("raypair/loop/__init__.py", "torch.save"): 1,  # into a temp folder; the store copies it in durably
    ("raypair/trials/store.py", "open"): 2,  # the experiment's lock file and its fence (flock; no content)
    ("raypair/data/prepare/__init__.py", "write_text"): 1,  # a prepared dataset's record, in its temp folder
    ("raypair/data/prepare/__init__.py", "os.rename"): 1,  # the temp folder renamed onto the dataset's name
    ("raypair/data/prepare/writer.py", "os.replace"): 1,  # a shard's final name (of N), in the temp folder
    ("raypair/data/stream.py", "write_text"): 1,  # data.trace: a rank's epoch order, a debugging aid
}


def _writes(tree: ast.AST) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or ast.unparse(node.func).startswith("durable."):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
        if name in ("write_text", "write_bytes", "rename", "symlink_to", "hardlink_to") or \
                (owner, name) in (("torch", "save"), ("os", "replace"), ("os", "rename"), ("os", "link")) or \
                (owner == "shutil" and name.startswith(("copy", "move"))):
            out.append(f"{owner}.{name}" if owner in ("torch", "os") else name)
        elif name == "open" and owner in ("", "os"):
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
            if owner == "os" or (isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax+")):
                out.append("open")
    return out


def test_every_write_in_raypair_goes_through_the_durable_module():
    found: dict[tuple[str, str], int] = {}
    for path in sorted((ROOT / "raypair").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "raypair/trials/durable.py":
            continue
        for call in _writes(ast.parse(path.read_text())):
            found[(rel, call)] = found.get((rel, call), 0) + 1
    assert found == NOT_THE_STORE, "a write that bypasses raypair.trials.durable (or a listed one is gone)"


def test_temp_names_are_unique_per_host_and_process_and_none_is_left(tmp_path):
    a, b = durable._tmp(tmp_path / "end.json"), durable._tmp(tmp_path / "end.json")
    assert a != b and socket.gethostname() in a.name and f".{os.getpid()}." in a.name
    durable.write_bytes(tmp_path / "x", b"1")
    assert durable.create(tmp_path / "y", b"2") and not durable.create(tmp_path / "y", b"3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x", "y"] and (tmp_path / "y").read_bytes() == b"2"


def test_a_trial_process_of_an_earlier_driver_may_not_write(tmp_path):
    exp_dir = tmp_path / "q"
    exp_dir.mkdir()
    write_json(exp_dir / STATE_FILE, {"parent_run_id": "p"})
    new_token(exp_dir)
    TrialStore(exp_dir / "trials" / "t0000").create(Trial("t0000", {}), None)
    old = TrialStore.attach(exp_dir / "trials" / "t0000")  # a trial process of the first start
    assert old.append({"epoch": 1, "val_acc": 0.1})
    new_token(exp_dir)  # a second driver starts (the first one's trial process lives on)
    TrialStore(exp_dir / "trials" / "t0000").create(Trial("t0000", {}), None)
    for write in (lambda: old.append({"epoch": 2, "val_acc": 0.9}), lambda: old.finish("finished", epochs=2),
                  lambda: old.note_worker({"rank": 0}), lambda: old.save_state(_ckpt(tmp_path / "c", 2))):
        with pytest.raises(Fenced, match="a newer driver"):
            write()
    new = TrialStore.attach(exp_dir / "trials" / "t0000")
    assert new.append({"epoch": 2, "val_acc": 0.2}) and new.finish("finished", epochs=2)
    assert [(r["epoch"], r["val_acc"]) for r in read_records(exp_dir)["t0000"].history] == [(1, 0.1), (2, 0.2)]


def _ckpt(folder: Path, epoch: int) -> Path:
    folder.mkdir(exist_ok=True)
    torch.save({"epoch": epoch, "w": torch.full((3,), float(epoch))}, folder / "state.pt")
    return folder


def _sweep():
    return load_sweep(QUICK, [f"epochs={EPOCHS}", "tune.searcher.name=random"], num_samples=len(KEYS), check=False)


def drive(exp_dir: Path, attempt: int) -> None:
    """A start (``attempt`` 0) or a ``--resume`` (1, 2, ...) through the store as the runner and the
    trial body use it: prepare, the experiment's state and token, then each trial not done: opened,
    continued from its checkpoint (recorded epochs replayed, not recorded again), ended. An epoch's
    value tells which attempt trained it."""
    sweep = _sweep()
    known = prepare(sweep, exp_dir, resume=attempt > 0)
    if not (exp_dir / STATE_FILE).exists():
        write_json(exp_dir / STATE_FILE, {"kind": "sweep", "name": "q", "parent_run_id": "p",
                                          "fingerprint": sweep.fingerprint()})
    write_json(exp_dir / "plan.json", {"planned": len(KEYS), "epochs": EPOCHS})
    new_token(exp_dir)
    for key in KEYS:
        if key in known and sweep.done(known[key]):
            continue
        TrialStore(exp_dir / "trials" / key).create(Trial(key, {"optim.lr": 0.1}), None)
        trial = TrialStore.attach(exp_dir / "trials" / key)
        state = trial.state()
        trial.note_worker({"rank": 0, "resumed_from": state and state["epoch"]})
        for e in range((state or {"epoch": 0})["epoch"] + 1, EPOCHS + 1):
            trial.append({"epoch": e, "val_acc": e + attempt / 10})
            trial.save_state(_ckpt(exp_dir.parent / f"ck{attempt}", e))
        trial.finish("finished", epochs=EPOCHS)


def test_every_crash_point_of_a_sweep_resumes_to_every_result_once(tmp_path):
    """2 trials x 2 epochs. For each prefix of the durable operations (and each append torn half-way)
    the resumed sweep ends with each trial finished, epochs [1, 2] once each, an epoch recorded
    before the crash keeping its value, and its end's copy in the history."""
    base = tmp_path / "run" / "q"
    with durable.recording() as ops:
        drive(base, 0)
    assert {k: [(r["epoch"], r["val_acc"]) for r in rec.history] for k, rec in read_records(base).items()} == \
        {k: [(1, 1.0), (2, 2.0)] for k in KEYS}
    states = [(k, False) for k in range(len(ops) + 1)] + [(k + 1, True) for k, op in enumerate(ops) if op[0] == "append"]
    for n, (k, torn) in enumerate(states):
        exp_dir = tmp_path / f"crash{n}" / "q"
        exp_dir.mkdir(parents=True)
        durable.replay(ops[:k], base, exp_dir, torn)
        before = {key: [(r["epoch"], r["val_acc"]) for r in rec.history] for key, rec in read_records(exp_dir).items()}
        drive(exp_dir, 1)
        after = read_records(exp_dir)
        assert sorted(after) == list(KEYS), (k, torn, ops[k - 1][:2] if k else None)
        for key, rec in after.items():
            got = [(r["epoch"], r["val_acc"]) for r in rec.history]
            assert [e for e, _ in got] == [1, 2] and rec.status == "finished", (k, torn, key, got)
            assert got[:len(before.get(key, []))] == before.get(key, []), "a recorded result changed"
    assert len(states) >= 30, f"{len(ops)} operations, {len(states)} crash states"
    print(f"{len(ops)} durable operations; {len(states)} crash states resumed; 0 results lost")


def test_a_token_change_waits_for_a_trial_write_in_flight_and_fences_the_next(tmp_path):
    """The fence's check and its write are one step: a start that takes the experiment over while
    an earlier start's trial is between its check and the end of its write waits for that write,
    and every later write of that trial is refused (no write of the old start after the change)."""
    import threading

    exp_dir = tmp_path / "q"
    exp_dir.mkdir()
    write_json(exp_dir / STATE_FILE, {"parent_run_id": "p"})
    new_token(exp_dir)
    TrialStore(exp_dir / "trials" / "t0000").create(Trial("t0000", {}), None)
    old = TrialStore.attach(exp_dir / "trials" / "t0000")
    inside, release, order = threading.Event(), threading.Event(), []

    def pause(op):  # called by the durable write, inside the trial's fenced step
        if op[0] == "append" and op[1].name == "history.jsonl":
            order.append("old write")
            inside.set()
            release.wait(10)

    durable._recorders.append(pause)
    try:
        writer = threading.Thread(target=old.append, args=({"epoch": 1, "val_acc": 0.1},))
        writer.start()
        assert inside.wait(10)
        taker = threading.Thread(target=lambda: (new_token(exp_dir), order.append("token changed")))
        taker.start()
        taker.join(0.5)
        assert taker.is_alive(), "the token changed while the old start's write was in flight"
        release.set()
        writer.join(10)
        taker.join(10)
    finally:
        durable._recorders.remove(pause)
    assert order == ["old write", "token changed"]
    with pytest.raises(Fenced, match="a newer driver"):
        old.append({"epoch": 2, "val_acc": 0.2})
