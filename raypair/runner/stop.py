"""Stopping the driver at any instant the same way: SIGINT (Ctrl-C) and SIGTERM (``timeout``, a
batch scheduler) before Ray starts, while it starts, between its start and Tune's, while Tune
runs and after it returns.

While Tune runs, a signal stops the running trials the way Tune stops them on SIGUSR1 (the
runner's Tune callback sends it from inside Tune's loop) and Tune returns; before that, it
interrupts the driver at once; after, the bookkeeping (the trials' MLflow runs) finishes first.
Either way the runner then records the trials cut off as interrupted (resumable) and shuts down
the Ray it started. A second signal ends the process at once (exit 130), after killing every
process below it (the Ray a local start made, its workers), so nothing outlives it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stop:
    def __init__(self) -> None:
        self.signal = ""  # the first signal's name
        self.phase = "before"  # before Tune ("before"), in it ("tune"), after it ("after")
        self.book: Optional[Any] = None  # the trials' Book, once there is one
        self.parent: Optional[str] = None  # the MLflow parent run, once opened
        self.own_ray = False  # this driver started (or joined) Ray: it shuts it down when it stops

    def handler(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signal:
            exit_now(f"{name} again", 130)
        self.signal = name
        _say(f"{name}: stopping; the trials cut off are marked interrupted (--resume continues them); "
             f"a second signal exits at once")
        if self.book is not None:
            self.book.stopping = True  # a trial Tune stops from now on was cut off, not stopped by a scheduler
        if self.phase == "before":
            raise KeyboardInterrupt(name)

    def install(self) -> None:
        """Again after ``ray.init``, which sets a SIGTERM handler of its own."""
        for s in SIGNALS:
            signal.signal(s, self.handler)


def exit_now(why: str, code: int) -> None:
    """End the process at once with ``code``, every process below it (the Ray this driver started,
    its workers) killed first, so none outlives it."""
    _say(f"{why}: exiting now")
    for pid in descendants(os.getpid()):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    os._exit(code)


def exit_at_next_signal(code: int) -> None:
    """From now on (the command's outcome ``code`` is decided; the interpreter tears down), SIGINT
    or SIGTERM ends the process at once with ``code``: 130 after a stop says so again."""
    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        exit_now(f"{name} again" if code == 130 else name, code)

    for s in SIGNALS:
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(s, handler)


def _say(line: str) -> None:
    with contextlib.suppress(Exception):  # stderr may already be closed late in the teardown
        print(f"raypair: {line}", file=sys.stderr, flush=True)


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (Linux ``/proc``; none elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            out.append(pid)
            todo.append(pid)
    return out


@contextlib.contextmanager
def stopping() -> Iterator[Stop]:
    stop = Stop()
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    old = {s: signal.getsignal(s) for s in SIGNALS}
    stop.install()
    quiet = _DropTuneRestoreHint()
    loggers = [logging.getLogger(n) for n in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis",
                                              "ray.tune.execution.experiment_state", "ray.tune.execution.tune_controller")]
    for lg in loggers:
        lg.addFilter(quiet)
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for lg in loggers:
            lg.removeFilter(quiet)


class _DropTuneRestoreHint(logging.Filter):
    """Tune's "resume with Tuner.restore(...)" advice is wrong here: raypair resumes with --resume;
    its result files are off (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS), so its end-of-run "failed to
    fetch metrics" for every trial says nothing; its "stop signal received" is the runner's own
    stop, which the runner names; and a storage fault's traceback from Tune's own state files
    repeats what the runner's one line says."""

    def filter(self, record: logging.LogRecord) -> bool:
        from raypair.trials.faults import fault_in_text, storage_fault

        if record.exc_info and storage_fault(record.exc_info[1]) or fault_in_text(record.getMessage()):
            return False  # a Train worker's fault reaches Tune as text: "[Rank 0 Error Snippet]: Traceback ..."
        return not any(m in record.getMessage() for m in ("Tuner.restore", "Failed to fetch metrics",
                                                          "Stop signal received"))
