"""The training loop on real images: learning, exact schedules, exact resume, divergence."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from raypair.config import ScheduleConfig, build_run
from raypair.loop import TrialDiverged, load_checkpoint, lr_factor, run_trial


def digits_run(**over):
    raw = {"data": {"name": "digits", "image_size": 16, "val_fraction": 0.2, "pad": 2},
           "model": {"name": "tiny_cnn"}, "method": {"name": "erm", "aug": "base+"},
           "optim": {"lr": 0.2}, "schedule": {"name": "cosine"}, "epochs": 3, "batch_size": 64,
           "scale": {"gpus_per_worker": 0}}
    raw.update(over)
    return build_run(raw)


class Recorder:
    def __init__(self, keep: Path | None = None) -> None:
        self.metrics: list[dict] = []
        self.keep = keep

    def __call__(self, metrics, folder):
        self.metrics.append(dict(metrics))
        if folder is not None and self.keep is not None:
            shutil.copytree(folder, self.keep / f"epoch{metrics['epoch']}")


def test_trains_and_reports_every_epoch(tmp_path):
    rec = Recorder(tmp_path)
    final = run_trial(digits_run(), rec)
    assert [m["epoch"] for m in rec.metrics] == [1, 2, 3]
    assert rec.metrics[-1]["train_loss"] < rec.metrics[0]["train_loss"]
    assert final["val_acc"] > 0.5  # 10 classes: chance is 0.1
    for key in ("train_loss", "train_acc", "val_acc", "val_acc5", "val_loss", "lr", "epoch_time_s"):
        assert key in final and math.isfinite(final[key])
    assert "test_acc" in final and "test_acc" not in rec.metrics[0]  # held-out val: test once, at the end
    assert final["train_samples"] == 1088  # 1437 train - 20% val = 1150, 17 full batches of 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch1", "epoch2", "epoch3"]


def test_resume_from_a_checkpoint_reproduces_the_uninterrupted_run(tmp_path):
    full = Recorder(tmp_path)
    run_trial(digits_run(), full)
    resumed = Recorder()
    run_trial(digits_run(), resumed, resume=load_checkpoint(tmp_path / "epoch1"))
    assert [m["epoch"] for m in resumed.metrics] == [2, 3]
    for a, b in zip(full.metrics[1:], resumed.metrics):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert a["val_acc"] == b["val_acc"]


def test_checkpoint_loads_with_weights_only(tmp_path):
    run_trial(digits_run(epochs=1), Recorder(tmp_path))
    state = torch.load(tmp_path / "epoch1" / "state.pt", weights_only=True)
    assert state["epoch"] == 1 and "model.fc.weight" in state["method"]


def test_divergence_stops_the_trial(monkeypatch):
    # a real net on real data that blows up in its second epoch: logits become NaN from then on
    from raypair.models import TinyCnn

    calls = {"n": 0}
    forward = TinyCnn.forward

    def blows_up(self, x):
        calls["n"] += self.training
        out = forward(self, x)
        return out * float("nan") if calls["n"] > 17 else out  # 17 batches in epoch 1

    monkeypatch.setattr(TinyCnn, "forward", blows_up)
    rec = Recorder()
    with pytest.raises(TrialDiverged, match="train_loss is nan at epoch 2"):
        run_trial(digits_run(epochs=3), rec)
    assert [m["epoch"] for m in rec.metrics] == [1]  # epoch 1 was reported before the stop


def test_checkpoint_every_reports_without_checkpoint_between():
    seen = []
    run_trial(digits_run(epochs=3, checkpoint_every=2), lambda m, f: seen.append((m["epoch"], f is not None)))
    assert seen == [(1, False), (2, True), (3, True)]


def test_lr_schedules_exact():
    ms = ScheduleConfig(name="multistep", milestones=[2, 4], gamma=0.1)
    assert [lr_factor(ms, s, 10, 6) for s in (0, 19, 20, 39, 40, 59)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    frac = ScheduleConfig(name="multistep", milestones=[0.5], milestone_unit="fraction", gamma=0.2)
    assert lr_factor(frac, 49, 10, 10) == 1 and lr_factor(frac, 50, 10, 10) == pytest.approx(0.2)
    warm = ScheduleConfig(name="constant", warmup_epochs=1)
    assert [lr_factor(warm, s, 4, 3) for s in (0, 1, 3, 4)] == [0.25, 0.5, 1.0, 1.0]
    cos = ScheduleConfig(name="cosine")
    assert lr_factor(cos, 0, 10, 2) == 1.0 and lr_factor(cos, 10, 10, 2) == pytest.approx(0.5)
    assert lr_factor(cos, 20, 10, 2) == pytest.approx(0.0, abs=1e-12)


def test_method_aug_reaches_the_loader():
    from raypair.loop import Dist, setup

    first, policies = {}, {}
    for aug in ("base", "base+", "base+aa_cifar10", "base+aa_imagenet"):
        _, _, train, _, _ = setup(digits_run(method={"name": "erm", "aug": aug}), torch.device("cpu"), Dist())
        first[aug], policies[aug] = next(iter(train.epoch(0))), train.autoaugment
    assert torch.equal(first["base"][1], first["base+"][1])  # same samples
    assert not torch.equal(first["base"][0], first["base+"][0])  # padded, cropped, flipped
    assert policies == {"base": None, "base+": None, "base+aa_cifar10": "cifar10", "base+aa_imagenet": "imagenet"}
    for aa in ("base+aa_cifar10", "base+aa_imagenet"):  # the same crop and flip, then AutoAugment
        assert torch.equal(first[aa][1], first["base+"][1]) and not torch.equal(first[aa][0], first["base+"][0])
