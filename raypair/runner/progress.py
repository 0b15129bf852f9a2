"""What the researcher sees while an experiment runs: how far along it is, what runs, what ended
and how, the best so far. Never a line per trial per epoch unless asked (``--verbose``): a sweep
of tens of trials of 200 epochs would print tens of thousands of them.

- A line per trial that ends (its status, epochs, metric, and ``k/N ended``).
- On a terminal, a live view redrawn in place below those lines (``raypair/runner/live.py``): a bar
  of trial-epochs done of the planned total with elapsed time and an upper-bound ETA (ASHA stops
  trials early), the counts by status, a row per running trial (its knobs, or variant and seed;
  its epoch and metric) and the best so far with its knobs.
- In a log (stdout not a terminal), a status block every ``every_s`` seconds (60 s) with the same
  facts instead; the last one is printed at the end in both cases.
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any, Iterable, Optional, TextIO

from ray import tune
from ray.tune.experiment import Trial as TuneTrial

from raypair.experiments.base import STATUSES, Record, fmt_value
from raypair.runner.adapters import key_of, last_line
from raypair.trials.book import Book


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress(tune.Callback):
    def __init__(self, book: Book, known: Iterable[Record] = (), verbose: bool = False,
                 every_s: Optional[float] = None, out: Optional[TextIO] = None, clock: Any = time.monotonic,
                 live: Optional[bool] = None) -> None:
        self.book, self.verbose, self.clock = book, verbose, clock
        self._out = out  # None: sys.stdout when printing (Tune pickles its callbacks; a stream would not pickle)
        tty = bool(getattr(out or sys.stdout, "isatty", lambda: False)())
        self.live = tty if live is None else live  # the rich view; else status blocks
        self._view: Any = None  # made on first use, in the driver; never pickled
        self.every_s = every_s if every_s is not None else (10.0 if tty else 60.0)
        exp = book.exp
        planned = exp.planned_trials()
        self.total_epochs = planned * exp.base_run.epochs if planned else None
        self.planned = planned
        self.running: dict[str, tuple[int, Optional[float]]] = {}  # key -> (epoch, metric)
        self.ended: Counter[str] = Counter()
        self.best: Optional[tuple[float, str]] = None
        self.epochs_done = 0  # trial-epochs, replayed ones included
        self.trained = 0  # trial-epochs trained by this driver (the rate for the ETA)
        self.per_trial = exp.base_run.epochs
        self.cut = 0  # planned trial-epochs that trials which ended early will not train
        self.t0 = self.last = clock()
        self.notes: list[str] = []  # the proposer's decisions as last shown
        for rec in known:  # a resume: what earlier attempts did counts
            if book.exp.done(rec):
                self.ended[rec.status] += 1
                self.cut += max(0, self.per_trial - len(rec.rows))
            self.epochs_done += len(rec.rows)

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_view": None}

    def _print(self, text: str) -> None:
        if self.live:
            if self._view is None:
                self._open_view()
            self._view.print(text)
        else:
            print(text, file=self._out or sys.stdout, flush=True)

    def _close_view(self) -> None:
        if self._view is not None:
            self._view.stop()
            self._view = None

    def _label(self, trial: TuneTrial) -> str:
        return self.book.describe(key_of(trial)).label

    def _metric(self, result: dict[str, Any]) -> tuple[str, Any]:
        metric = self.book.exp.metric
        key = metric if metric in result else "val_acc"  # test_acc comes with the last epoch only
        return key, result.get(key)

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best[0] if self.book.exp.mode == "max" else value < self.best[0]

    # ------------------------------------------------------------------------ Tune's calls
    def on_trial_start(self, iteration: int, trials: list, trial: TuneTrial, **info: Any) -> None:
        self.running.setdefault(key_of(trial).key, (0, None))
        self._new_notes()
        self._maybe_status()

    def on_trial_result(self, iteration: int, trials: list, trial: TuneTrial, result: dict, **info: Any) -> None:
        if "infeasible" in result or "epoch" not in result:
            return
        key = key_of(trial).key
        _, value = self._metric(result)
        self.running[key] = (int(result["epoch"]), value if isinstance(value, (int, float)) else None)
        if not result.get("replayed"):  # replayed epochs were counted from the store at the start
            self.epochs_done += 1
            self.trained += 1
            if self.verbose:
                shown = fmt_value(value)
                self._print(f"  {self._label(trial)} epoch {result['epoch']}: {self._metric(result)[0]}={shown} "
                            f"({result.get('epoch_time_s', 0):.2f} s/epoch)")
        self._note_best(result.get(self.book.exp.metric), trial)
        self._maybe_status()

    def _note_best(self, value: Any, trial: TuneTrial) -> None:
        if isinstance(value, (int, float)) and value == value and self._better(value):
            self.best = (float(value), self._label(trial))

    def on_trial_complete(self, iteration: int, trials: list, trial: TuneTrial, **info: Any) -> None:
        self._ended(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: TuneTrial, **info: Any) -> None:
        self._ended(trial, f"{last_line(trial)} (log: {trial.error_file})")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._new_notes()
        self._close_view()
        print(self.status(), file=self._out or sys.stdout, flush=True)

    # ------------------------------------------------------------------------------ lines
    def _ended(self, trial: TuneTrial, error: Optional[str] = None) -> None:
        key = key_of(trial).key
        self.running.pop(key, None)
        end = self.book.store(key).end() or {}
        status = end.get("status") or ("failed" if error else "ended")
        if self.book.stopping and not end:
            status = "interrupted"
        self.ended[status] += 1
        last = self._catch_up(key, trial, trial.last_result or {})
        epoch = last.get("epoch", 0)
        if status != "interrupted":
            self.cut += max(0, self.per_trial - int(epoch))
        name, value = self._metric(last)
        why = f": {error or end.get('error')}" if status in ("failed", "diverged", "infeasible") else ""
        of = f"/{self.planned}" if self.planned else ""
        self._print(f"  {self._label(trial)} {status} after epoch {epoch}, {name}={fmt_value(value)}"
                    f"{why} [{sum(self.ended.values())}{of} ended]")
        self._maybe_status()

    def _new_notes(self) -> None:
        """The proposer decides as it proposes: its lines that changed, printed as they are taken
        (the live view shows them all under the running trials)."""
        notes = list(getattr(self.book.proposer, "notes", ()))
        for line in notes:
            if line not in self.notes:
                self._print(f"  {line}" if ": open at" in line else f"  decided: {line}")
        self.notes = notes

    def _catch_up(self, key: str, trial: TuneTrial, last: dict[str, Any]) -> dict[str, Any]:
        """The trial store's epochs after the last result Tune passed on (a Ray Train trial's last
        report can end the trial before it reaches the callbacks) count too; returns the last row."""
        rows = [r for r in self.book.store(key).history() if r.get("epoch", 0) > last.get("epoch", 0)]
        for row in rows:
            self.epochs_done, self.trained = self.epochs_done + 1, self.trained + 1
            self._note_best(row.get(self.book.exp.metric), trial)
        return rows[-1] if rows else last

    def _maybe_status(self) -> None:
        if self.live:
            if self._view is None:
                self._open_view()
            return  # the view redraws itself
        now = self.clock()
        if now - self.last >= self.every_s:
            self.last = now
            self._print(self.status())

    def _open_view(self) -> None:
        from raypair.runner.live import View

        self._view = View(self, self._out or sys.stdout)

    clock_text = staticmethod(_clock)

    def timing(self) -> tuple[float, Optional[float]]:
        """Seconds elapsed, and an upper bound of the seconds left (None before a trained epoch)."""
        elapsed = self.clock() - self.t0
        left = (self.total_epochs or 0) - self.epochs_done - self.cut
        return elapsed, (elapsed / self.trained * left if self.trained and left > 0 else None)

    def status(self) -> str:
        elapsed, eta = self.timing()
        counts = ", ".join(f"{self.ended[s]} {s}" for s in (*STATUSES, "interrupted") if self.ended[s])
        of = f"/{self.planned}" if self.planned else ""
        head = f"[{_clock(elapsed)}] {sum(self.ended.values())}{of} trials ended" + (f" ({counts})" if counts else "")
        head += f", {len(self.running)} running"
        if self.total_epochs:
            pct = 100 * min(1.0, self.epochs_done / self.total_epochs)
            head += f", {self.epochs_done}/{self.total_epochs} trial-epochs ({pct:.0f}%)"
            if eta is not None:
                head += f", ETA <= {_clock(eta)}"
        lines = [head]
        if self.best is not None:
            lines.append(f"  best {self.book.exp.metric}={self.best[0]:.4f}  {self.best[1]}")
        for key, (epoch, value) in sorted(self.running.items()):
            label = self.book.shown[key].label if key in self.book.shown else key
            now = f"epoch {epoch}  {self.book.exp.metric}={fmt_value(value)}" if epoch else "starting"
            lines.append(f"  running  {label}  {now}")
        return "\n".join(lines)
