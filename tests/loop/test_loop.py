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


def test_without_a_hold_out_the_test_split_is_reported_at_the_end():
    """val_fraction 0 (the papers' protocol): the evaluation split is the test split, and the last
    epoch's numbers are reported as test_* too (an ablation's test_acc); none before the end."""
    rec = Recorder()
    run_trial(digits_run(data={"name": "digits", "image_size": 16, "val_fraction": 0.0, "pad": 2}, epochs=2), rec)
    first, last = rec.metrics
    assert not any(k.startswith("test_") for k in first)
    assert last["test_acc"] == last["val_acc"] and last["test_loss"] == last["val_loss"]
    held = Recorder()
    run_trial(digits_run(epochs=1), held)  # a hold-out: test_* is the separate test split's
    assert "test_acc" in held.metrics[-1] and held.metrics[-1]["test_loss"] != held.metrics[-1]["val_loss"]


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
    floor = ScheduleConfig(name="cosine", min_lr=0.025)  # base lr 0.1: the factor decays from 1 to 0.25
    assert [lr_factor(floor, s, 10, 2, lr=0.1) for s in (0, 10, 20)] == pytest.approx([1.0, 0.625, 0.25])


def test_the_cosine_floor_is_the_lr_a_run_ends_at():
    """``schedule.min_lr`` is read: the last step's lr is the floor (it was 0 whatever min_lr said)."""
    from raypair.loop import group_lr

    cfg = ScheduleConfig(name="cosine", min_lr=0.05)
    lr = group_lr(cfg, steps_per_epoch=10, epochs=3, fixed=None, lr=0.2)
    assert lr(0.2, 0) == pytest.approx(0.2) and lr(0.2, 30) == pytest.approx(0.05)
    assert lr(0.4, 30) == pytest.approx(0.1)  # another group ends at the same fraction of its own lr


def test_method_aug_reaches_the_loader():
    from raypair.loop import Dist, setup

    first, policies = {}, {}
    for aug in ("base", "base+", "base+aa_cifar10", "base+aa_imagenet", "base+ra"):
        _, _, train, _, _ = setup(digits_run(method={"name": "erm", "aug": aug}), torch.device("cpu"), Dist())
        first[aug], policies[aug] = next(iter(train.epoch(0))), train.autoaugment
    assert torch.equal(first["base"][1], first["base+"][1])  # same samples
    assert not torch.equal(first["base"][0], first["base+"][0])  # padded, cropped, flipped
    assert policies == {"base": None, "base+": None, "base+aa_cifar10": "cifar10", "base+aa_imagenet": "imagenet",
                        "base+ra": "ra"}
    for aa in ("base+aa_cifar10", "base+aa_imagenet", "base+ra"):  # the same crop and flip, then AA / RA
        assert torch.equal(first[aa][1], first["base+"][1]) and not torch.equal(first[aa][0], first["base+"][0])


def test_finetuning_follows_the_runs_epochs_and_records_the_state_it_starts_from():
    """P1 §5.5 fine-tunes after mixup training: the fine-tuned run is the original run (same mixing
    epochs, same lr schedule) plus ERM epochs from its final state, whose metrics it keeps as ``*_pre_ft``."""
    sched = {"name": "multistep", "milestones": [0.5], "milestone_unit": "fraction", "gamma": 0.1}
    runs = {}
    for ft in (0, 2):
        rec = Recorder()
        run_trial(digits_run(method={"name": "mixup", "ft_epochs": ft, "ft_lr": 0.003}, schedule=sched,
                             epochs=2), rec)
        runs[ft] = rec.metrics
    original, tuned = runs[0], runs[2]
    assert [r["epoch"] for r in original] == [1, 2] and [r["epoch"] for r in tuned] == [1, 2, 3, 4]
    keys = ("train_loss", "val_acc", "val_top2", "lr", "ft")
    for a, b in zip(original, tuned[:2]):  # the mixing epochs are the original run's, lr included
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    assert [r["lr"] for r in tuned] == [0.2, 0.2 * 0.1, 0.003, 0.003] and [r["ft"] for r in tuned] == [0, 0, 1, 1]
    assert tuned[1]["val_acc_pre_ft"] == original[1]["val_acc"]
    assert tuned[1]["val_top2_pre_ft"] == original[1]["val_top2"]
    assert tuned[1]["test_acc_pre_ft"] == original[1]["test_acc"]  # the original's result, within the tuned run
    assert "test_acc" not in tuned[1] and "test_acc" in tuned[3] and "test_acc_pre_ft" not in tuned[3]


@pytest.mark.parametrize("method", [{"name": "erm"}, {"name": "vpl"}])
def test_fine_tuning_starts_the_backbone_at_a_scaled_lr_and_every_head_at_lr(method):
    """optim.backbone_lr_scale: each model's parameters but its classifier's (named by hand below:
    tiny_cnn's ``fc``, timm's ViT ``head``) at lr x scale; the classifiers and a method's own heads
    (VPL's projections) at the group's lr; every parameter once; scale 1 leaves the groups alone."""
    from helpers import CIFAR_32, method_of

    from raypair.config import OptimConfig
    from raypair.loop import build_optimizer, fine_tune_groups

    m = method_of(method, CIFAR_32)
    optim = OptimConfig(lr=0.2, backbone_lr_scale=0.1)
    groups = m.optim_groups()
    assert fine_tune_groups(m, groups, OptimConfig(lr=0.2)) is groups
    opt = build_optimizer(optim, fine_tune_groups(m, groups, optim))
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert sorted(lr_of) == sorted(id(p) for g in groups for p in g["params"])  # each once
    heads = {n for n, _ in m.named_parameters() if n.split(".")[-2] in ("fc", "head")}
    models = [mod for mod in m.modules() if hasattr(mod, "get_classifier")]
    in_models = {id(p) for mod in models for p in mod.parameters()}
    base = {id(p): g.get("lr", 0.2) for g in groups for p in g["params"]}
    for name, p in m.named_parameters():
        if id(p) not in base:  # not trained (VPL's EMA copies)
            continue
        want = base[id(p)] if name in heads or id(p) not in in_models else base[id(p)] * 0.1
        assert lr_of[id(p)] == pytest.approx(want), name
        assert opt.param_groups[[i for i, g in enumerate(opt.param_groups) if any(q is p for q in g["params"])][0]][
            "initial_lr"] == pytest.approx(want)
    assert heads and any(v == pytest.approx(base[k] * 0.1) for k, v in lr_of.items())
