"""Ray Tune's side of the driver's bookkeeping (:class:`raypair.trials.book.Book`): the one MLflow
callback and the searcher that asks the experiment for trials, each opened in the Book (its run
resolved once) before Tune starts it."""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any, Optional

from ray import tune
from ray.tune.experiment import Trial as TuneTrial
from ray.tune.search import Searcher

from raypair.experiments.base import WAIT, Trial
from raypair.trials.book import Book
from raypair.trials.faults import MARK, fault_in_text


def key_of(trial: TuneTrial) -> Trial:
    return Trial(trial.config["key"], trial.config["params"])


class Recorder(tune.Callback):
    """The one MLflow callback: per-epoch metrics, and the end of each trial through the Book."""

    def __init__(self, book: Book) -> None:
        self.book = book
        self.sent = False

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        """A stop asked for (a signal, a storage fault) reaches Tune from inside its loop, once its
        own SIGUSR1 handler is in place: running trials are stopped and ``fit`` returns."""
        if self.book.stopping and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGUSR1)

    def on_trial_result(self, iteration: int, trials: list, trial: TuneTrial, result: dict, **info: Any) -> None:
        if result.get(MARK):
            return self.pause(trial, result[MARK])
        self.book.log(key_of(trial), result)

    def pause(self, trial: TuneTrial, fault: str) -> None:
        """A storage fault: every trial stops with no end recorded (resumable), nothing told to the searcher."""
        self.book.fault = self.book.fault or f"trial {trial.config['key']}: {fault}"
        self.book.stopping = True

    def on_trial_complete(self, iteration: int, trials: list, trial: TuneTrial, **info: Any) -> None:
        self.book.close(key_of(trial), trial.last_result)

    def on_trial_error(self, iteration: int, trials: list, trial: TuneTrial, **info: Any) -> None:
        fault = fault_in_text(last_line(trial))
        if fault:
            return self.pause(trial, fault)
        self.book.close(key_of(trial), trial.last_result, error=last_line(trial))

    def on_trial_recover(self, iteration: int, trials: list, trial: TuneTrial, **info: Any) -> None:
        """A crashed trial Tune retries (``tune.max_failures``): it continues from its store."""
        self.book.tracker.set_tags(self.book.run_id(key_of(trial)),
                                   {"raypair.retries": trial.num_failures, "raypair.last_error": last_line(trial)})


class TrialSearcher(Searcher):
    """Tune's searcher over the experiment's :class:`Proposer`; each trial is opened in the Book
    (its run resolved, store, MLflow) before Tune starts it, and carries its resolved run."""

    def __init__(self, book: Book) -> None:
        super().__init__()
        self.book = book

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec: Any) -> bool:
        return True

    def suggest(self, trial_id: str) -> Any:
        trial = self.book.proposer.propose()
        if trial is None:
            return Searcher.FINISHED
        if trial is WAIT:
            return None  # Tune's "no trial now": it asks again once a running trial has ended
        return {"key": trial.key, "params": trial.params, "resolved": self.book.open(trial)}

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        return None  # the Book tells the proposer, after the end is recorded

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text("{}")  # resume reads the trial store, not Tune's state

    def restore(self, checkpoint_path: str) -> None:
        return None


def last_line(trial: TuneTrial) -> str:
    try:
        lines = [ln for ln in Path(trial.error_file).read_text().splitlines() if ln.strip()]
        return lines[-1][:200] if lines else "?"
    except (OSError, TypeError):
        return "?"
