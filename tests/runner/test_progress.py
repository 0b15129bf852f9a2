"""The progress view's logic, driven by Tune's callback calls (stand-in trial objects, a real sweep
and trial store, a fake clock): bounded output in a log, per-epoch lines only with --verbose, the
counts, the best so far and an honest trial-epoch total."""
from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest

import ray  # noqa: E402,F401  (a declared dependency: missing, the file fails instead of skipping)

from raypair.experiments.base import Record, Trial  # noqa: E402
from raypair.experiments.sweep import load_sweep  # noqa: E402
from raypair.trials.book import Book  # noqa: E402
from raypair.runner.progress import Progress  # noqa: E402

from helpers import QUICK


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _drive(tmp_path: Path, verbose: bool, n: int = 16, epochs: int = 8, known: tuple = ()) -> tuple[str, Progress]:
    """n trials of ``epochs`` epochs, two at a time, one second per epoch; trial 3 diverges at epoch 2."""
    sweep = load_sweep(QUICK, ["epochs=%d" % epochs], num_samples=n)
    book = Book(sweep, tmp_path, tracker=None, parent="p", proposer=None)  # type: ignore[arg-type]
    out, clock = io.StringIO(), Clock()
    prog = Progress(book, known, verbose=verbose, every_s=60, out=out, clock=clock)
    for i in range(len(known), n):
        key = f"t{i:04d}"
        trial = SimpleNamespace(config={"key": key, "params": {"optim.lr": 0.01 * (i + 1)}}, last_result=None,
                                error_file=None)
        book.store(key).create(Trial(key, trial.config["params"]), None)
        prog.on_trial_start(0, [], trial)
        last = 2 if i == 3 else epochs
        for e in range(1, last + 1):
            clock.t += 1
            trial.last_result = {"epoch": e, "val_acc": i / 100 + e / 1000, "epoch_time_s": 1.0}
            prog.on_trial_result(0, [], trial, trial.last_result)
        book.store(key).finish("diverged" if i == 3 else "finished", epochs=last)
        prog.on_trial_complete(0, [], trial)
    prog.on_experiment_end([])
    return out.getvalue(), prog


def test_a_log_gets_a_line_per_ended_trial_and_a_status_now_and_then(tmp_path):
    text, prog = _drive(tmp_path, verbose=False)
    lines = text.splitlines()
    assert not [ln for ln in lines if " epoch 1:" in ln], "no per-epoch lines"
    ended = [ln for ln in lines if "ended]" in ln]
    assert len(ended) == 16 and ended[-1].endswith("[16/16 ended]")
    assert "t0003" in ended[3] and "diverged after epoch 2" in ended[3]
    # 122 s of epochs at one block a minute (two), plus the last one: a bounded view
    blocks = [ln for ln in lines if ln.startswith("[")]
    assert len(blocks) == 3, blocks
    assert len(lines) < 16 + 3 * 4
    final = text.split("\n[")[-1]
    assert final.startswith("02:02] 16/16 trials ended (15 finished, 1 diverged), 0 running, "
                            "122/128 trial-epochs (95%)"), final
    assert "ETA" not in final.splitlines()[0]  # the 6 epochs the diverged trial left are not to come
    assert "best val_acc=0.1580" in final and "t0015" in final


def test_verbose_keeps_the_per_epoch_lines(tmp_path):
    text, _ = _drive(tmp_path, verbose=True)
    assert len([ln for ln in text.splitlines() if ": val_acc=" in ln and " epoch " in ln]) == 15 * 8 + 2


def test_the_view_pickles_as_tune_saves_its_callbacks(tmp_path):
    import sys

    from ray import cloudpickle as pickle  # what Tune uses

    sweep = load_sweep(QUICK, ["epochs=2"], num_samples=2)
    book = Book(sweep, tmp_path, tracker=None, parent="p", proposer=None)  # type: ignore[arg-type]
    old, sys.stdout = sys.stdout, io.TextIOWrapper(io.BytesIO())  # does not pickle, like pytest's capture
    try:
        prog = Progress(book)
        assert pickle.loads(pickle.dumps(prog)).every_s == 60.0
    finally:
        sys.stdout = old


def test_a_status_block_shows_the_running_trials_and_an_eta(tmp_path):
    sweep = load_sweep(QUICK, ["epochs=10"], num_samples=4)
    book = Book(sweep, tmp_path, tracker=None, parent="p", proposer=None)  # type: ignore[arg-type]
    out, clock = io.StringIO(), Clock()
    prog = Progress(book, verbose=False, every_s=60, out=out, clock=clock)
    for k in ("t0000", "t0001"):
        trial = SimpleNamespace(config={"key": k, "params": {}}, last_result=None, error_file=None)
        prog.on_trial_start(0, [], trial)
        clock.t += 5
        prog.on_trial_result(0, [], trial, {"epoch": 1, "val_acc": 0.5 if k == "t0000" else 0.25})
    status = prog.status()
    assert status.splitlines()[0] == "[00:10] 0/4 trials ended, 2 running, 2/40 trial-epochs (5%), ETA <= 03:10"
    assert "running  t0000  epoch 1  val_acc=0.5" in status and "running  t0001  epoch 1  val_acc=0.25" in status
    assert "best val_acc=0.5000" in status
    # t0000 stopped early after its first epoch: its other 9 epochs leave the ETA (2 epochs in 10 s)
    prog.book.store("t0000").create(Trial("t0000", {}), None)
    prog.book.store("t0000").finish("stopped", epochs=1)
    prog.on_trial_complete(0, [], SimpleNamespace(config={"key": "t0000", "params": {}},
                                                  last_result={"epoch": 1, "val_acc": 0.5}, error_file=None))
    assert prog.status().splitlines()[0] == ("[00:10] 1/4 trials ended (1 stopped), 1 running, 2/40 trial-epochs (5%), "
                                             "ETA <= 02:25")


def test_a_resume_counts_what_earlier_attempts_did(tmp_path):
    done = [Record(f"t{i:04d}", {}, None, [{"epoch": e, "val_acc": 0.1} for e in range(1, 9)],
                   {"status": "finished"}) for i in range(4)]
    text, prog = _drive(tmp_path, verbose=False, known=tuple(done))
    assert "[16/16 ended]" in text and "[5/16 ended]" in text.splitlines()[0]
    assert prog.ended["finished"] == 16  # trial 3, which diverges in a fresh run, was done before
    assert prog.epochs_done == 128 and prog.trained == 12 * 8


def test_status_reads_where_an_experiment_stands_from_its_store(tmp_path, capsys):
    """``raypair status``: ended trials by status, the cut-off one and its epoch, the trials left
    to start, the best so far; "running now" while a driver holds the folder."""
    import json

    from raypair.cli import main
    from raypair.trials.store import _hold, _HELD, TrialStore

    exp_dir = tmp_path / "runs" / "sw"
    for key, epochs, end in (("t0000", 5, "finished"), ("t0001", 2, "stopped"), ("t0002", 2, None)):
        store = TrialStore(exp_dir / "trials" / key)
        store.create(Trial(key, {"optim.lr": 0.1}), None)
        for e in range(1, epochs + 1):
            store.append({"epoch": e, "val_acc": 0.1 * e + (0.05 if key == "t0001" else 0)})
        if end:
            store.finish(end, epochs=epochs)
    (exp_dir / "experiment.json").write_text(json.dumps({"kind": "sweep", "name": "sw"}))
    (exp_dir / "plan.json").write_text(json.dumps({"planned": 5, "epochs": 5, "metric": "val_acc", "mode": "max"}))
    assert main(["status", "sw", "--storage", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("sweep 'sw': interrupted; 2/5 trials ended (1 finished, 1 stopped), 1 cut off or running, "
                      "9/25 trial-epochs")
    assert out[-2] == "best val_acc = 0.5000 (t0000)"
    assert out[-1] == "--resume continues: t0002 (from epoch 2), 2 more trials to start"
    _hold(exp_dir)
    try:
        assert main(["status", "--storage", str(tmp_path / "runs")]) == 0
        assert capsys.readouterr().out.startswith("sweep 'sw': running now;")
    finally:
        _HELD.pop(exp_dir.resolve()).close()
    assert main(["status", "nope", "--storage", str(tmp_path / "runs")]) == 2


def test_a_terminal_gets_the_live_view(tmp_path):
    """Under a pseudo-terminal: the bar, the counts, a row per running trial with its knobs, epoch and
    metric, the best so far, the ended lines above it; no status blocks; the final block at the end."""
    import fcntl
    import os
    import pty
    import struct
    import termios
    import threading

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    out = os.fdopen(slave, "w")
    sweep = load_sweep(QUICK, ["epochs=4"], num_samples=3)
    book = Book(sweep, tmp_path, tracker=None, parent="p", proposer=None)  # type: ignore[arg-type]
    prog = Progress(book, out=out)
    assert prog.live and not prog.verbose
    trials = []
    for i in range(2):
        key = f"t{i:04d}"
        trial = SimpleNamespace(config={"key": key, "params": {"optim.lr": 0.01 * (i + 1)}}, last_result=None,
                                error_file=None)
        book.store(key).create(Trial(key, trial.config["params"]), None)
        book.describe(Trial(key, trial.config["params"]))
        prog.on_trial_start(0, [], trial)
        trials.append(trial)
    for e in (1, 2):
        for i, trial in enumerate(trials):
            trial.last_result = {"epoch": e, "val_acc": 0.5 + i / 10 + e / 100, "epoch_time_s": 1.0}
            prog.on_trial_result(0, [], trial, trial.last_result)
    import time

    time.sleep(1.2)  # two redraws
    book.store("t0000").finish("stopped", epochs=2)
    prog.on_trial_complete(0, [], trials[0])
    time.sleep(0.6)
    prog.on_experiment_end([])
    out.flush()
    time.sleep(0.3)
    out.close()
    reader.join(5)
    os.close(master)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert "━" in screen and "4/12 trial-epochs (33%)" in screen and "ETA <=" in screen
    assert "0 finished · 0 stopped · 0 failed · 0 diverged · 2 running of 3" in screen
    assert "running trial" in screen and "2/4" in screen and "t0000 lr=0.01" in screen
    assert "best val_acc=0.6200" in screen
    assert "stopped after epoch 2" in screen and "[1/3 ended]" in screen
    assert "\x1b[" in screen  # drawn in place with escape codes
    assert screen.count("trials ended") == 1  # only the final block, no periodic ones


def test_epochs_the_store_holds_beyond_tunes_last_result_count(tmp_path):
    """A Ray Train trial can end before its last report reaches Tune's callbacks: the trial store's
    rows after it count (the ended line, the trial-epochs, the best)."""
    sweep = load_sweep(QUICK, ["epochs=2"], num_samples=1)
    book = Book(sweep, tmp_path, tracker=None, parent="p", proposer=None)  # type: ignore[arg-type]
    out = io.StringIO()
    prog = Progress(book, verbose=False, every_s=60, out=out, clock=Clock())
    trial = SimpleNamespace(config={"key": "t0000", "params": {}}, last_result=None, error_file=None)
    store = book.store("t0000")
    store.create(Trial("t0000", {}), None)
    prog.on_trial_start(0, [], trial)
    for e, acc in ((1, 0.25), (2, 0.5)):
        store.append({"epoch": e, "val_acc": acc})
    trial.last_result = {"epoch": 1, "val_acc": 0.25}
    prog.on_trial_result(0, [], trial, trial.last_result)  # epoch 2 never reaches Tune
    store.finish("finished", epochs=2)
    prog.on_trial_complete(0, [], trial)
    assert "t0000 finished after epoch 2, val_acc=0.5 [1/1 ended]" in out.getvalue()
    assert prog.epochs_done == 2 and prog.best == (0.5, "t0000")
    assert prog.status().splitlines()[0] == "[00:00] 1/1 trials ended (1 finished), 0 running, 2/2 trial-epochs (100%)"


def test_a_proposers_decisions_are_shown_as_they_are_taken(tmp_path):
    """A sequential ablation's comparisons: each line printed once when it first appears (an open
    one as it is, a decided one as "decided: ..."), and all of them in the live view."""
    from raypair.runner.live import render

    sweep = load_sweep(QUICK, ["epochs=1"], num_samples=3)
    proposer = SimpleNamespace(notes=[])
    book = Book(sweep, tmp_path, tracker=None, parent="p", proposer=proposer)  # type: ignore[arg-type]
    out = io.StringIO()
    prog = Progress(book, (), out=out, clock=Clock(), live=False)
    looks = [["b: open at 3 seeds, difference +0.01 in [-0.02, 0.04]"],
             ["b: open at 3 seeds, difference +0.01 in [-0.02, 0.04]"],
             ["b: better at 5 seeds, difference +0.03 in [0.01, 0.05]"]]
    for i, notes in enumerate(looks):
        proposer.notes = notes
        prog.on_trial_start(0, [], SimpleNamespace(config={"key": f"t{i:04d}", "params": {}}, last_result=None))
    lines = [ln.strip() for ln in out.getvalue().splitlines() if "b: " in ln]
    assert lines == ["b: open at 3 seeds, difference +0.01 in [-0.02, 0.04]",
                     "decided: b: better at 5 seeds, difference +0.03 in [0.01, 0.05]"]
    from rich.console import Console

    console = Console(file=io.StringIO(), width=120)
    console.print(render(prog))
    assert "b: better at 5 seeds" in console.file.getvalue()
