"""Every store file x every kind of damage, as ``--resume`` meets it before Ray starts: recovered
with no recorded result lost or changed, or refused with one line naming the file and what to do.

The experiment: a 3-epoch sweep; ``t0000`` finished (history, end, checkpoints, workers),
``t0001`` cut off after epoch 2 (checkpoint at 2, the one before at 1). Each case damages one file,
runs ``prepare(resume=True)`` and checks the outcome its row of ``CASES`` names.
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from raypair.config import ConfigError
from raypair.experiments.base import Trial
from raypair.experiments.sweep import load_sweep
from raypair.trials.store import STATE_FILE, TrialStore, new_token, prepare, read_records, write_json

from helpers import QUICK

DAMAGES = ("truncated", "garbage", "empty", "deleted", "unreadable")
# file (under the experiment) -> what --resume does about each damage: "refused", or how it recovers
FILES = {
    "experiment.json": "refused",
    "plan.json": "removed",  # rewritten by every start before any trial
    "trials/t0000/trial.json": "refused",
    "trials/t0001/trial.json": "refused",
    "trials/t0000/history.jsonl": "refused",  # the end records 3 epochs
    "trials/t0001/history.jsonl": "refused",  # the checkpoint is at epoch 2
    "trials/t0000/end.json": "end restored",  # from its copy in ends.jsonl
    "trials/t0000/ends.jsonl": "copy restored",  # from end.json
    "trials/t0001/state.pt": "from state.prev.pt",
    "trials/t0001/state.prev.pt": "from state.pt",
    "trials/t0001/workers.jsonl": "placement lost",  # where it ran: MLflow tags, no result
}
CASES = [(f, d, FILES[f]) for f in FILES for d in DAMAGES]


def _sweep():
    return load_sweep(QUICK, ["epochs=3", "tune.searcher.name=random"], num_samples=2, check=False)


def _ckpt(tmp, epoch):
    tmp.mkdir(exist_ok=True)
    torch.save({"epoch": epoch, "w": torch.full((4,), float(epoch))}, tmp / "state.pt")
    return tmp


def build(exp_dir):
    """The experiment as a driver and its trials leave it (through the store's own writes)."""
    exp_dir.mkdir(parents=True)
    write_json(exp_dir / STATE_FILE, {"kind": "sweep", "name": "q", "parent_run_id": "p",
                                         "fingerprint": _sweep().fingerprint()})
    write_json(exp_dir / "plan.json", {"planned": 2, "epochs": 3})
    new_token(exp_dir)
    for key, epochs in (("t0000", 3), ("t0001", 2)):
        store = TrialStore(exp_dir / "trials" / key)
        store.create(Trial(key, {"optim.lr": 0.1}), None)
        trial = TrialStore.attach(store.folder)
        trial.note_worker({"rank": 0, "host": "h", "node_id": "n", "pid": 1})
        for e in range(1, epochs + 1):
            trial.append({"epoch": e, "val_acc": e / 10})
            trial.save_state(_ckpt(exp_dir.parent / "ck", e))
        if epochs == 3:
            trial.finish("finished", epochs=3)


def damage(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) * 3 // 5])
    elif how == "garbage":
        path.write_bytes(bytes(range(256)) * 3)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "deleted":
        path.unlink()
    elif how == "unreadable":  # a directory where the file was: every read is an OSError (even for root)
        path.unlink()
        path.mkdir()
    elif how == "bitflip":  # in the content: a checkpoint's tensor data (2.0 as float32), else the middle
        b, at = bytearray(data), data.find(bytes.fromhex("00000040"))
        b[at + 3 if at >= 0 else len(b) // 2] ^= 0x08
        path.write_bytes(bytes(b))


def view(exp_dir):
    return {k: (r.status, r.history) for k, r in read_records(exp_dir).items()}


@pytest.fixture
def pristine(tmp_path):
    build(tmp_path / "q")
    return tmp_path / "q", view(tmp_path / "q")


@pytest.mark.parametrize("name,how,outcome", CASES, ids=[f"{f}-{d}" for f, d, _ in CASES])
def test_a_damaged_store_file_is_recovered_or_refused_by_name(pristine, name, how, outcome):
    exp_dir, before = pristine
    damage(exp_dir / name, how)
    check(exp_dir, before, name, how, outcome)


SPECIAL = [  # (file, damage, outcome): damage inside a file that still parses as a whole
    ("trials/t0000/end.json", "bitflip", "end restored"),  # its checksum tells
    ("trials/t0001/state.pt", "bitflip", "from state.prev.pt"),  # a zip member's CRC tells
    ("trials/t0000/trial.json", "bitflip", "refused"),
    ("experiment.json", "bitflip", "refused"),
    ("trials/t0000/history.jsonl", "middle line", "refused"),  # later rows are never dropped
    ("trials/t0001/history.jsonl", "torn last line", "torn line dropped"),  # a crash mid-append
    ("trials/t0000/trial.json", "another key", "refused"),  # two folders may not hold one trial
]


@pytest.mark.parametrize("name,how,outcome", SPECIAL, ids=[f"{f}-{d}" for f, d, _ in SPECIAL])
def test_damage_inside_a_file_is_told_apart(pristine, name, how, outcome, capsys):
    exp_dir, before = pristine
    path = exp_dir / name
    if how == "middle line":
        lines = path.read_text().splitlines(keepends=True)
        path.write_text(lines[0] + "\x00garbage\n" + "".join(lines[2:]))
    elif how == "torn last line":
        with open(path, "a") as f:
            f.write('{"epoch": 3, "val_')
    elif how == "another key":
        shutil.copyfile(exp_dir / "trials/t0001/trial.json", path)
    else:
        damage(path, how)
    check(exp_dir, before, name, how, outcome)
    assert "weights_only" not in capsys.readouterr().err  # no advice to load a checkpoint unsafely


def check(exp_dir, before, name, how, outcome):
    sweep = _sweep()
    if outcome == "refused":
        with pytest.raises(ConfigError) as e:
            prepare(sweep, exp_dir, resume=True)
        assert str(exp_dir / name) in str(e.value) and "\n" not in str(e.value)
        assert any(w in str(e.value) for w in ("restore it", "--name NEW")), str(e.value)  # what to do
        return
    known = prepare(sweep, exp_dir, resume=True)
    assert {k: (r.status, r.history) for k, r in known.items()} == before  # no result lost or changed
    assert view(exp_dir) == before and prepare(sweep, exp_dir, resume=True).keys() == known.keys()
    t1 = TrialStore(exp_dir / "trials" / "t0001")
    if outcome == "from state.prev.pt":
        assert t1.state()["epoch"] == 1  # continues from the checkpoint before; epoch 2 is replayed
        assert (t1.folder / "state.pt.damaged").exists() == (how != "deleted")  # set aside, not lost
    elif outcome in ("from state.pt", "placement lost", "removed", "torn line dropped"):
        assert t1.state()["epoch"] == 2
        assert (t1.folder / "state.prev.pt.damaged").exists() == (outcome == "from state.pt" and how != "deleted")
    if outcome in ("copy restored", "placement lost"):  # a trial can append to it again
        assert (exp_dir / name).is_file() or not (exp_dir / name).exists()
    if outcome == "copy restored":
        assert json.loads((exp_dir / name).read_text().splitlines()[-1])["end"]["status"] == "finished"
    if outcome == "end restored":
        assert json.loads((exp_dir / name).read_text())["status"] == "finished"
    if outcome == "torn line dropped":
        assert (exp_dir / name).read_bytes().endswith(b"\n") and t1.append({"epoch": 3, "val_acc": 0.3})
        assert [r["epoch"] for r in t1.history()] == [1, 2, 3]


@pytest.mark.parametrize("how", ["garbage"])
def test_a_damaged_end_changes_no_answer_summary_mlflow_optuna_and_status_agree(tmp_path, capsys, how):
    """The finding: a damaged end.json of the best trial read as 'no end' dropped it from the summary
    while Optuna still named it best. Now its end comes back from the history's copy, and the
    summary (the MLflow parent's best), Optuna's best and ``raypair status`` name the same trial."""
    from types import SimpleNamespace

    from raypair.cli.status import cmd_status
    from raypair.tracking import Tracker, default_uri
    from raypair.trials.book import Book

    sweep = load_sweep(QUICK, ["epochs=2"], num_samples=2, check=False)
    exp_dir, tracker = tmp_path / "q", Tracker(default_uri(tmp_path), "q")
    parent, _ = tracker.start("sweep/q", "q")
    exp_dir.mkdir()
    write_json(exp_dir / STATE_FILE, {"kind": "sweep", "name": "q", "parent_run_id": parent,
                                      "fingerprint": sweep.fingerprint()})
    new_token(exp_dir)
    book = Book(sweep, exp_dir, tracker, parent, sweep.proposer(exp_dir, {}))
    for acc in (0.9, 0.5):
        trial = book.proposer.propose()
        book.open(trial)
        store = TrialStore.attach(book.store(trial.key).folder)
        for e in (1, 2):
            store.append({"epoch": e, "val_acc": acc * e / 2})
        store.finish("finished", epochs=2)
        book.close(trial, {"epoch": 2})
    damage(exp_dir / "trials/t0000/end.json", how)
    known = prepare(sweep, exp_dir, resume=True)
    again = Book(sweep, exp_dir, tracker, parent, sweep.proposer(exp_dir, known))
    again.reconcile(known)
    assert again.proposer.propose() is None  # nothing to run again: both ended, as recorded
    tags, metrics = sweep.summary(list(read_records(exp_dir).values()))
    study = again.proposer.study
    assert tags["raypair.best_trial"] == "t0000" == f"t{study.best_trial.number:04d}"
    assert metrics["best_val_acc"] == study.best_value == 0.9 and tags["raypair.trials_finished"] == 2
    assert tracker.status(again.run_id(Trial("t0000", {}))) == "FINISHED"
    cmd_status(SimpleNamespace(storage=tmp_path, name="q"))
    out = capsys.readouterr().out
    assert "best val_acc = 0.9000 (t0000)" in out and "(2 finished)" in out and "--resume continues" not in out


def test_the_cli_stops_before_ray_with_one_line_naming_the_damaged_file(tmp_path, capsys):
    from raypair.cli import main

    build(tmp_path / "q")
    damage(tmp_path / "q" / "trials/t0001/trial.json", "garbage")
    code = main(["tune", str(QUICK), "--storage", str(tmp_path), "--name", "q", "--resume",
                 "--set", "epochs=3", "--set", "tune.searcher.name=random", "--set", "tune.num_samples=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "trials/t0001/trial.json: is damaged" in err[0], err
    assert not (tmp_path / "q" / "tune-1").exists()  # Ray never started
