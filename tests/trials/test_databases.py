"""``--resume`` refuses, in one line and before Ray starts, an experiment whose records no longer
belong together: an empty or damaged ``experiment.json``, a lost ``experiment.json`` beside
recorded trials, another ``--tracking-uri`` than the one it started with, a lost or swapped MLflow
store, a lost or swapped Optuna study. And a finished trial is never reopened by the Book."""
from __future__ import annotations

import json

import pytest

from raypair.config import ConfigError
from raypair.experiments.base import Trial
from raypair.experiments.sweep import load_sweep
from raypair.tracking import Tracker, default_uri
from raypair.trials import databases
from raypair.trials.book import Book
from raypair.trials.store import STATE_FILE, TrialStore, read_records

from helpers import QUICK


def _started(tmp_path, trials: int = 2):
    """A sweep as a first start leaves it: its parent run, experiment.json, trials and their study."""
    import optuna

    sweep = load_sweep(QUICK)
    exp_dir = tmp_path / "quickstart"
    exp_dir.mkdir(parents=True)
    tracker = Tracker(default_uri(tmp_path), "quickstart")
    parent, _ = tracker.start(f"sweep/{exp_dir}", "quickstart")
    (exp_dir / STATE_FILE).write_text(json.dumps({"kind": "sweep", "name": "quickstart", "parent_run_id": parent,
                                                  "fingerprint": sweep.fingerprint(), "tracking_uri": tracker.uri}))
    study = optuna.create_study(storage=f"sqlite:///{exp_dir / 'optuna.db'}", study_name="quickstart")
    for i in range(trials):
        study.ask()
        store = TrialStore(exp_dir / "trials" / f"t{i:04d}")
        store.create(Trial(f"t{i:04d}", {"optim.lr": 0.1 + i}), None)
        store.append({"epoch": 1, "val_acc": 0.5})
    TrialStore(exp_dir / "trials" / "t0000").finish("finished", epochs=1)
    return sweep, exp_dir, tracker


@pytest.mark.parametrize("text", ["", "{", "[]", '{"kind": "sweep"}'])
def test_an_empty_or_damaged_experiment_json_is_one_line_naming_it(tmp_path, text):
    (tmp_path / STATE_FILE).write_text(text)
    with pytest.raises(ConfigError) as e:
        databases.read_state(tmp_path)
    assert e.value.field == STATE_FILE and str(tmp_path / STATE_FILE) in str(e.value)
    assert "\n" not in str(e.value)


def test_resume_keeps_the_tracking_uri_it_started_with(tmp_path):
    sweep, exp_dir, tracker = _started(tmp_path)
    assert databases.tracking_uri(exp_dir, None) == tracker.uri  # reused when not given
    assert databases.tracking_uri(exp_dir, tracker.uri) == tracker.uri
    with pytest.raises(ConfigError) as e:
        databases.tracking_uri(exp_dir, f"sqlite:///{tmp_path / 'other.db'}")
    assert e.value.field == "--tracking-uri" and tracker.uri in str(e.value)
    assert databases.tracking_uri(tmp_path / "new", "sqlite:///x.db") == "sqlite:///x.db"  # nothing recorded


def test_the_store_under_storage_moves_with_the_folder(tmp_path):
    """A run on the default store keeps no path: the folder copied or moved elsewhere resumes
    against the store beside it, and another --tracking-uri is still refused."""
    sweep, exp_dir, tracker = _started(tmp_path)
    assert databases.kept_uri(tracker.uri, exp_dir) is None
    assert databases.kept_uri("http://127.0.0.1:5000", exp_dir) == "http://127.0.0.1:5000"
    state = json.loads((exp_dir / STATE_FILE).read_text()) | {"tracking_uri": None}
    moved = tmp_path / "moved" / "quickstart"
    moved.mkdir(parents=True)
    (moved / STATE_FILE).write_text(json.dumps(state))
    assert databases.tracking_uri(moved, None) is None  # the CLI then uses the store under the new --storage
    assert databases.tracking_uri(moved, default_uri(tmp_path / "moved")) == default_uri(tmp_path / "moved")
    with pytest.raises(ConfigError, match="--resume keeps that store"):
        databases.tracking_uri(moved, tracker.uri)  # the old folder's store is another store now


def test_the_records_that_belong_together_pass(tmp_path):
    sweep, exp_dir, tracker = _started(tmp_path)
    databases.check(sweep, exp_dir, read_records(exp_dir), tracker)


def test_a_lost_or_swapped_mlflow_store_is_refused(tmp_path):
    sweep, exp_dir, tracker = _started(tmp_path)
    known = read_records(exp_dir)
    other = Tracker(default_uri(tmp_path / "elsewhere"), "quickstart")  # a store without the parent run
    other.start("sweep/x", "x")
    with pytest.raises(ConfigError, match="holds no run"):
        databases.check(sweep, exp_dir, known, other)
    (tmp_path / "mlflow.db").rename(tmp_path / "moved.db")
    with pytest.raises(ConfigError, match="is missing") as e:
        databases.check(sweep, exp_dir, known, Tracker(default_uri(tmp_path), "quickstart"))
    assert not (tmp_path / "mlflow.db").exists(), "the check must not create an empty store in its place"
    assert e.value.field == "--tracking-uri"


def test_a_lost_or_swapped_optuna_study_is_refused(tmp_path):
    import optuna

    sweep, exp_dir, tracker = _started(tmp_path)
    known = read_records(exp_dir)
    (exp_dir / "optuna.db").rename(exp_dir / "kept.db")
    with pytest.raises(ConfigError, match="is missing") as e:
        databases.check(sweep, exp_dir, known, tracker)
    assert e.value.field == "optuna.db"
    optuna.create_study(storage=f"sqlite:///{exp_dir / 'optuna.db'}", study_name="quickstart").ask()
    with pytest.raises(ConfigError, match="holds 1 trials"):  # a younger study: t0001 would be proposed again
        databases.check(sweep, exp_dir, known, tracker)


def test_a_lost_experiment_json_beside_recorded_trials_is_refused(tmp_path):
    sweep, exp_dir, tracker = _started(tmp_path)
    (exp_dir / STATE_FILE).unlink()
    with pytest.raises(ConfigError, match="is missing but 2 trials are recorded"):
        databases.check(sweep, exp_dir, read_records(exp_dir), tracker)


def test_the_book_never_reopens_a_finished_trial_or_a_trial_with_other_params(tmp_path):
    sweep, exp_dir, tracker = _started(tmp_path)
    parent = json.loads((exp_dir / STATE_FILE).read_text())["parent_run_id"]
    book = Book(sweep, exp_dir, tracker, parent, proposer=None)
    for trial in (Trial("t0000", {"optim.lr": 0.1}), Trial("t0001", {"optim.lr": 0.7})):
        with pytest.raises(ConfigError, match="proposed again"):
            book.open(trial)
    assert TrialStore(exp_dir / "trials" / "t0000").end()["status"] == "finished"  # its end kept
    assert len(TrialStore(exp_dir / "trials" / "t0001").history()) == 1


def test_the_command_line_refuses_in_one_line_before_ray_starts(tmp_path, capsys):
    import ray

    from raypair.cli import main

    sweep, exp_dir, tracker = _started(tmp_path)
    cmd = ["tune", str(QUICK), "--storage", str(tmp_path), "--resume"]
    assert main([*cmd, "--tracking-uri", f"sqlite:///{tmp_path / 'other.db'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raypair: error: --tracking-uri: ") and err.count("\n") == 1 and tracker.uri in err
    (exp_dir / "optuna.db").unlink()
    assert main(cmd) == 2
    err = capsys.readouterr().err
    assert err.startswith("raypair: error: optuna.db: ") and err.count("\n") == 1
    (exp_dir / STATE_FILE).write_text("")
    assert main(cmd) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"raypair: error: {STATE_FILE}: ") and err.count("\n") == 1
    assert not ray.is_initialized()
    assert TrialStore(exp_dir / "trials" / "t0000").end()["status"] == "finished"  # nothing reopened
