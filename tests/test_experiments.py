"""The experiment interface without Ray: proposers (a seeded list, an Optuna study that survives a
killed driver), the trial store and the checks ``--resume`` makes before Ray starts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from raypair.config import ConfigError
from raypair.experiments.ablation import load_ablation
from raypair.experiments.base import Record, Trial, config_hash
from raypair.experiments.proposers import OptunaProposer, random_points
from raypair.experiments.sweep import load_sweep
from raypair.trials.store import STATE_FILE, TrialStore, prepare, read_records, store_report

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "search_spaces" / "quickstart.yaml"
DIGITS = ROOT / "tests" / "data" / "ablation_digits.yaml"


def test_random_points_are_the_same_on_every_resume_and_cover_the_grid():
    sweep = load_sweep(QUICK, ["tune.searcher.name=random",
                               "space.optim.nesterov={grid: [true, false]}"], num_samples=3)
    a = random_points(sweep.space, 3, seed=0)
    assert a == random_points(sweep.space, 3, seed=0) and a != random_points(sweep.space, 3, seed=1)
    assert len(a) == 6 and [p["optim.nesterov"] for p in a] == [True, False] * 3
    assert len({p["optim.lr"] for p in a}) == 6  # random paths drawn afresh for every point
    assert all(0.005 <= p["optim.lr"] <= 0.5 for p in a)
    assert random_points(sweep.space, 4, seed=0)[:6] == a[:4] + random_points(sweep.space, 4, seed=0)[4:6]


def test_optuna_study_is_settled_from_the_store_after_a_kill(tmp_path):
    """A driver killed after asking: one trial ended (its store says so) but Optuna never heard;
    one never ended. The next start tells the first and proposes the second again, same params."""
    from optuna.trial import TrialState

    sweep = load_sweep(QUICK, num_samples=4)
    first = OptunaProposer(sweep, tmp_path / "optuna.db", {})
    t0, t1 = first.propose(), first.propose()
    assert (t0.key, t1.key) == ("t0000", "t0001")
    ended = Record("t0000", t0.params, history=[{"epoch": 1, "val_acc": 0.5}], end={"status": "finished"})
    again = OptunaProposer(sweep, tmp_path / "optuna.db", {"t0000": ended})
    states = [t.state for t in again.study.trials]
    assert states == [TrialState.COMPLETE, TrialState.RUNNING] and again.study.trials[0].value == 0.5
    t = again.propose()
    assert t.key == "t0001" and t.params == t1.params  # continued, not asked afresh
    assert [again.propose().key, again.propose().key, again.propose()] == ["t0002", "t0003", None]
    again.tell("t0001", None, "diverged")
    assert again.study.trials[1].state == TrialState.FAIL
    assert again.study.trials[1].user_attrs == {"raypair.status": "diverged"}


def test_choices_that_optuna_cannot_store_round_trip_by_index(tmp_path):
    sweep = load_sweep(QUICK, ["space.optim.betas={choice: [[0.9, 0.99], [0.8, 0.9]]}", "optim.name=adamw",
                               "space.optim.momentum=null"], num_samples=2, check=False)
    p = OptunaProposer(sweep, tmp_path / "optuna.db", {})
    assert p.propose().params["optim.betas"] in ([0.9, 0.99], [0.8, 0.9])


def test_trial_store_records_each_epoch_once_history_before_checkpoint(tmp_path):
    store = TrialStore(tmp_path / "trials" / "t0000")
    store.create(Trial("t0000", {"a": 1}), "h")
    seen = []
    report = store_report(store, seen.append)
    report({"epoch": 1, "val_acc": 0.1}, None)
    report({"epoch": 1, "val_acc": 0.2}, None)  # an epoch trained again after a resume
    report({"epoch": 2, "val_acc": 0.3, "worker": {"rank": 0}}, None)
    assert [r["epoch"] for r in store.history()] == [1, 2] and store.history()[0]["val_acc"] == 0.1
    assert [m.get("replayed") for m in seen] == [None, 1, None]
    assert "worker" not in store.history()[1]  # only plain values are recorded
    with open(store.folder / "history.jsonl", "a") as f:
        f.write('{"epoch": 3, "val_')  # a line cut off by a kill
    again = TrialStore(store.folder)
    assert [r["epoch"] for r in again.history()] == [1, 2]
    store_report(again, seen.append)({"epoch": 3, "val_acc": 0.3}, None)  # the torn line is dropped first
    assert [r["epoch"] for r in again.history()] == [1, 2, 3]
    with open(store.folder / "history.jsonl", "a") as f:
        f.write('{"epoch": 4, "val_acc": 0.2}')  # whole, but killed before its newline
    again = TrialStore(store.folder)
    store_report(again, seen.append)({"epoch": 5, "val_acc": 0.2}, None)
    assert [r["epoch"] for r in again.history()] == [1, 2, 3, 4, 5]
    assert store.finish("finished", epochs=5) and not store.finish("stopped", epochs=2)  # the first end stands
    rec = store.record()
    assert rec.status == "finished" and rec.final("val_acc") == 0.2 and rec.best("val_acc", "min") == 0.1
    store.create(Trial("t0000", {"a": 1}), "h")  # proposed again (a failed pair): the end is gone
    assert store.record().status == "unfinished"
    assert list(read_records(tmp_path)) == ["t0000"]


def test_records_of_failed_and_infeasible_trials_tell_the_searcher_nothing():
    for status in ("failed", "infeasible"):
        assert Record("k", {}, history=[{"epoch": 1, "val_acc": 0.5}], end={"status": status}).final("val_acc") is None
    assert Record("k", {}, end={"status": "finished"}).final("val_acc") is None  # no epoch at all


def test_prepare_refuses_a_resume_under_another_config(tmp_path):
    ab = load_ablation(DIGITS, seeds=[0])
    exp_dir = tmp_path / ab.name
    with pytest.raises(ConfigError, match="no ablation to resume"):
        prepare(ab, exp_dir, resume=True)
    assert prepare(ab, exp_dir, resume=False) == {}
    trial = Trial("base__s0", {"variant": "base", "seed": 0})
    store = TrialStore(exp_dir / "trials" / trial.key)
    store.create(trial, config_hash(ab.trial_run(trial.params)))
    store.finish("finished", epochs=3)
    (exp_dir / STATE_FILE).write_text(json.dumps({"parent_run_id": "p"}))
    with pytest.raises(ConfigError, match="holds an earlier ablation"):
        prepare(ab, exp_dir, resume=False)
    assert list(prepare(ab, exp_dir, resume=True)) == ["base__s0"]
    changed = load_ablation(DIGITS, ["optim.lr=0.01"], seeds=[0])
    with pytest.raises(ConfigError, match="finished under another config") as e:
        prepare(changed, exp_dir, resume=True)
    assert e.value.field == "--resume"
    subset = load_ablation(DIGITS, ["optim.lr=0.01"], seeds=[0], only=["cutmix"])
    assert list(prepare(subset, exp_dir, resume=True)) == ["base__s0"]  # not a variant of this call
    cut = TrialStore(exp_dir / "trials" / "cutmix__s0")  # cut off after one epoch: also refused
    cut.create(Trial("cutmix__s0", {"variant": "cutmix", "seed": 0}), "an-older-config")
    cut.append({"epoch": 1, "val_acc": 0.1})
    with pytest.raises(ConfigError, match="trial cutmix__s0 started under another config"):
        prepare(subset, exp_dir, resume=True)


def test_a_sweep_resumed_with_another_space_is_refused(tmp_path):
    sweep = load_sweep(QUICK)
    exp_dir = tmp_path / sweep.name
    exp_dir.mkdir()
    (exp_dir / STATE_FILE).write_text(json.dumps({"parent_run_id": "p", "fingerprint": sweep.fingerprint()}))
    assert prepare(sweep, exp_dir, resume=True) == {}
    assert prepare(load_sweep(QUICK, num_samples=20), exp_dir, resume=True) == {}  # more samples: fine
    wider = load_sweep(QUICK, ["space.optim.lr={loguniform: [0.001, 0.5]}"])
    with pytest.raises(ConfigError, match="search settings changed"):
        prepare(wider, exp_dir, resume=True)


def test_ablation_counts_only_finished_pairs_as_done():
    ab = load_ablation(DIGITS, seeds=[0, 1])
    done = {k: Record(k, {}, end={"status": s}) for k, s in
            [("base__s0", "finished"), ("base__s1", "failed"), ("cutmix__s0", "stopped")]}
    todo = ab.proposer(Path("."), done)
    keys = []
    while (t := todo.propose()) is not None:
        keys.append(t.key)
    assert keys == ["base__s1", "baseplus__s0", "baseplus__s1", "cutmix__s0", "cutmix__s1"]
    tags, _ = ab.summary([Record("base__s0", {}, end={"status": "finished"})])
    assert tags["raypair.pairs"] == 6 and tags["raypair.pairs_finished"] == 1 and tags["raypair.pairs_failed"] == 5


def test_divergence_rules_are_exact():
    from raypair.config import DivergenceConfig
    from raypair.loop import divergence

    rule = DivergenceConfig(loss_factor=1000.0, chance_after=3, chance_margin=0.125)  # 4 classes: chance 0.25
    row = {"epoch": 2, "train_loss": 2000.0, "val_acc": 0.12}
    assert divergence(rule, 2.0, row, 4) is None  # 2000 = 1000 x 2: not above; epoch 2: no chance rule yet
    assert "exceeds 1000 x epoch 1's 2" in divergence(rule, 2.0, row | {"train_loss": 2000.5}, 4)
    assert divergence(rule, 2.0, row | {"train_loss": 2e11}, 4).startswith("train_loss 2e+11 at epoch 2")
    assert divergence(rule, 2.0, row | {"epoch": 3, "val_acc": 0.37}, 4).startswith("val_acc 0.3700 at epoch 3")
    assert divergence(rule, 2.0, row | {"epoch": 3, "val_acc": 0.375}, 4) is None  # 1/4 + 0.125: not below
    assert divergence(DivergenceConfig(loss_factor=None), 2.0, row | {"train_loss": 1e30}, 4) is None
    assert divergence(rule, float("nan"), row | {"train_loss": 1e30}, 4) is None  # no first epoch (old checkpoint)


def test_a_divergence_inside_ray_train_is_found_in_the_worker_errors():
    from raypair.loop import TrialDiverged
    from raypair.runner.trial import diverged

    class WorkerGroupError(RuntimeError):
        def __init__(self, failures):
            super().__init__("a worker failed")
            self.worker_failures = failures

    assert diverged(WorkerGroupError({0: ValueError("x"), 1: TrialDiverged("loss 1e9")})) == "loss 1e9"
    try:
        try:
            raise TrialDiverged("nan")
        except TrialDiverged as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert diverged(outer) == "nan"
    assert diverged(WorkerGroupError({0: ValueError("x")})) is None


def test_a_trial_stopped_while_its_history_replays_keeps_what_it_trained(tmp_path):
    """ASHA may stop a resumed trial at epoch 2 while it replays a history that reached epoch 3 or
    its last epoch: the end records what it trained, and MLflow gets exactly those epochs."""
    from raypair.trials.book import Book
    from raypair.tracking import Tracker, default_uri

    sweep = load_sweep(QUICK, ["epochs=4", "tune.searcher.name=random"], num_samples=2, check=False)
    tracker = Tracker(default_uri(tmp_path), "q")
    parent, _ = tracker.start("sweep/q", "q")
    (tmp_path / "q").mkdir()
    book = Book(sweep, tmp_path / "q", tracker, parent, sweep.proposer(tmp_path / "q", {}))
    for key, trained in (("t0000", 3), ("t0001", 4)):
        trial = Trial(key, {"optim.lr": 0.1})
        book.open(trial)
        for e in range(1, trained + 1):
            book.store(key).append({"epoch": e, "val_acc": e / 10})
        book.close(trial, {"epoch": 2, "val_acc": 0.2})
        rec = book.store(key).record()
        run = tracker.client.get_run(book.run_id(trial))
        steps = [m.step for m in tracker.client.get_metric_history(run.info.run_id, "val_acc")]
        assert steps == list(range(1, trained + 1)) and run.data.tags["raypair.epochs_done"] == str(trained)
        assert rec.status == ("stopped" if trained < 4 else "finished") and rec.final("val_acc") == trained / 10


def test_the_best_trial_is_one_that_ended_well():
    """A diverged or failed trial's early epochs are not a result: the best is picked among
    finished and stopped trials only (None if there are none)."""
    from raypair.experiments.base import best_record

    rows = lambda *accs: [{"epoch": i + 1, "val_acc": a} for i, a in enumerate(accs)]  # noqa: E731
    recs = [Record("t0", {}, None, rows(0.9), {"status": "diverged"}),
            Record("t1", {}, None, rows(0.5, 0.6), {"status": "finished"}),
            Record("t2", {}, None, rows(0.7), {"status": "stopped", "epochs": 1}),
            Record("t3", {}, None, rows(0.95), {"status": "failed"}),
            Record("t4", {}, None, rows(0.99))]  # still running
    assert best_record(recs, "val_acc", "max").key == "t2"
    assert best_record(recs, "val_acc", "min").key == "t1"
    assert best_record(recs[:1] + recs[3:], "val_acc", "max") is None
