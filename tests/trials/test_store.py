"""The trial store and its book, without Ray: each epoch recorded once (history before checkpoint,
a line torn by a kill dropped), the first end standing, the checks ``--resume`` makes before Ray
starts, and what a trial stopped mid-replay keeps (its store and MLflow)."""
from __future__ import annotations

import json

import pytest

from raypair.config import ConfigError
from raypair.experiments.ablation import load_ablation
from raypair.experiments.base import Trial, config_hash
from raypair.experiments.sweep import load_sweep
from raypair.trials.store import STATE_FILE, TrialStore, prepare, read_records, store_report

from helpers import DIGITS, QUICK


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


def test_prepare_refuses_a_resume_under_another_config(tmp_path):
    ab = load_ablation(DIGITS, seeds=[0])
    exp_dir = tmp_path / ab.name
    with pytest.raises(ConfigError, match="no ablation to resume"):
        prepare(ab, exp_dir, resume=True)
    assert prepare(ab, exp_dir, resume=False) == {}
    trial = Trial("base__s0", {"variant": "base", "seed": 0})
    store = TrialStore(exp_dir / "trials" / trial.key)
    store.create(trial, config_hash(ab.trial_run(trial.params)))
    for e in (1, 2, 3):
        store.append({"epoch": e, "val_acc": e / 10})
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
