"""The one training loop. It imports torch and raypair only: never Ray, MLflow or the CLI.

``run_trial(run, report)`` trains ``run.total_epochs`` epochs and calls ``report(metrics, ckpt_dir)``
once per epoch on every worker (``ckpt_dir`` is a temporary folder, valid during the call, on
rank 0 at checkpoint epochs, else None). Ray Train, Ray Tune, benchmarks and tests all drive
this same function through their own ``report``.

DDP-aware: when ``torch.distributed`` is initialised with ``world_size > 1`` the method is wrapped
in DDP, each rank trains on its shard of every global batch and evaluates its part of the
validation split, and every reported metric is all-reduced, so all ranks see the same numbers.
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from raypair.config import DivergenceConfig, OptimConfig, RunConfigBase, ScheduleConfig, loader_aug, loader_views
from raypair.data import DeviceLoader, load_splits, pipeline_kwargs
from raypair.loop.epoch import Dist, add_logs, all_reduce, evaluate, train_epoch, train_step
from raypair.methods import Method, build_method

__all__ = ["CKPT_FILE", "Dist", "TrialDiverged", "add_logs", "all_reduce", "build_optimizer", "divergence", "fine_tune_groups",
           "evaluate", "group_lr", "load_checkpoint", "lr_factor", "pick_device", "restore", "run_trial",
           "save_checkpoint", "setup", "train_epoch", "train_step", "trial_optimizer"]

Report = Callable[[dict[str, float], Optional[Path]], None]
CKPT_FILE = "state.pt"


class TrialDiverged(RuntimeError):
    """The trial diverged (a non-finite loss, or a rule of ``run.diverge``); it stops, the sweep goes on."""


def divergence(rule: DivergenceConfig, first_loss: float, metrics: dict[str, Any], classes: int) -> Optional[str]:
    """Why an epoch's ``metrics`` count as diverged under ``rule``, or None. ``first_loss`` is the
    train loss of the run's first epoch."""
    loss, epoch = metrics["train_loss"], int(metrics["epoch"])
    if rule.loss_factor is not None and loss > rule.loss_factor * first_loss:
        return f"train_loss {loss:.4g} at epoch {epoch} exceeds {rule.loss_factor:g} x epoch 1's {first_loss:.4g}"
    chance = 1.0 / classes
    if rule.chance_after is not None and epoch >= rule.chance_after and metrics["val_acc"] < chance + rule.chance_margin:
        return f"val_acc {metrics['val_acc']:.4f} at epoch {epoch} is at chance ({chance:.4f} + {rule.chance_margin:g})"
    return None


def pick_device(gpu: bool) -> torch.device:
    """CUDA's current device where the run may use a GPU and torch sees one, else the CPU."""
    if gpu and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ------------------------------------------------------------------------------ optimisation
def build_optimizer(optim: OptimConfig, params: Any) -> torch.optim.Optimizer:
    """The optimiser of ``optim``; its groups start at ``optim.lr`` unless a method's group sets its
    own, and each keeps that as its ``initial_lr`` (PyTorch's param-group key for the lr a schedule
    scales, as its LR schedulers set it)."""
    if optim.name == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum,
                                                     nesterov=optim.nesterov, weight_decay=optim.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    return opt


def trial_optimizer(run: RunConfigBase, method: nn.Module) -> torch.optim.Optimizer:
    """A trial's optimiser: the method's parameter groups, split for fine-tuning, under ``run.optim``."""
    return build_optimizer(run.optim, fine_tune_groups(method, method.optim_groups(), run.optim))


def fine_tune_groups(method: nn.Module, groups: list[dict[str, Any]], optim: OptimConfig) -> list[dict[str, Any]]:
    """``groups`` with each split in two when ``optim.backbone_lr_scale`` < 1: its backbone
    parameters (those of every model in ``method``, a module with timm's ``get_classifier()``, but
    its classifier's) at the group's lr x the scale, the rest (classifiers, a method's own heads) at
    the group's lr. The schedule then scales both alike."""
    scale = optim.backbone_lr_scale
    if scale == 1.0:
        return groups
    backbone: set[int] = set()
    for m in method.modules():
        if hasattr(m, "get_classifier"):
            head = m.get_classifier()
            head_ids = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
            backbone |= {id(p) for p in m.parameters()} - head_ids
    out = []
    for g in groups:
        lr, params = g.get("lr", optim.lr), list(g["params"])
        head, body = [p for p in params if id(p) not in backbone], [p for p in params if id(p) in backbone]
        out += [{**g, "params": part, "lr": at} for part, at in ((head, lr), (body, lr * scale)) if part]
    return out


def lr_factor(schedule: ScheduleConfig, step: int, steps_per_epoch: int, epochs: int, lr: float = 1.0) -> float:
    """Multiplier of a group's initial lr at optimiser step ``step`` (0-based): warm-up, then the
    schedule. Cosine decays from 1 to ``min_lr / lr``, ``lr`` being the run's ``optim.lr`` (timm's
    and PyTorch's ``eta_min``: ``optim.lr`` ends at ``min_lr``; a group with another initial lr
    ends at the same fraction of it)."""
    epoch = step / steps_per_epoch  # fractional epochs done
    if schedule.warmup_epochs > 0 and epoch < schedule.warmup_epochs:
        return (step + 1) / (schedule.warmup_epochs * steps_per_epoch)
    if schedule.name == "constant":
        return 1.0
    if schedule.name == "multistep":
        scale = epochs if schedule.milestone_unit == "fraction" else 1
        return schedule.gamma ** sum(epoch >= m * scale for m in schedule.milestones)
    t = (epoch - schedule.warmup_epochs) / max(epochs - schedule.warmup_epochs, 1e-9)
    floor = schedule.min_lr / lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def group_lr(schedule: ScheduleConfig, steps_per_epoch: int, epochs: int,
             fixed: Optional[float], lr: float = 1.0) -> Callable[[float, int], float]:
    """``lr(initial_lr, step)`` of a parameter group during one epoch: the schedule scales every
    group's own initial lr (PyTorch's param-group key ``initial_lr``, as its LR schedulers use it),
    unless the method's ``on_epoch_start`` returned a constant ``fixed``. ``lr``: the run's ``optim.lr``."""
    if fixed is not None:
        return lambda initial, step: fixed
    return lambda initial, step: initial * lr_factor(schedule, step, steps_per_epoch, epochs, lr)


# ------------------------------------------------------------------------------ checkpoints
def save_checkpoint(folder: Path, method: Method, opt: torch.optim.Optimizer, epoch: int, step: int,
                    stats: dict[str, float], first_loss: float = math.nan) -> Path:
    state = {"method": method.state_dict(), "optim": opt.state_dict(), "epoch": epoch, "step": step,
             "stats": stats, "generator": method.generator.get_state(), "first_loss": first_loss}
    torch.save(state, folder / CKPT_FILE)
    return folder


def load_checkpoint(folder: Path) -> dict[str, Any]:
    return torch.load(Path(folder) / CKPT_FILE, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------------ trial
def setup(run: RunConfigBase, device: torch.device, dist: Dist) -> tuple[Method, Any, Any, Any, Optional[Any]]:
    """Data on the device (or streamed, by ``data.mode``) and the method built around it: everything a trial trains."""
    from raypair.data.mode import decide

    torch.manual_seed(run.seed)  # same init on every rank (DDP also broadcasts it)
    stream = decide(run.data)[0] == "stream"
    info, train, val, test = _stream_loaders(run, device, dist) if stream else _device_loaders(run, device, dist)
    method = build_method(run, info, device=device, rank=dist.rank, pool=train)
    if device.type == "cuda":
        method = method.to(memory_format=torch.channels_last)
    return method, info, train, val, test


def _device_loaders(run: RunConfigBase, device: torch.device, dist: Dist) -> tuple[Any, Any, Any, Any]:
    """The splits decoded whole and kept on the device (``DeviceLoader``)."""
    splits = load_splits(run.data)
    info = splits.info
    norm = dict(mean=info.mean, std=info.std, device=device, rank=dist.rank, world_size=dist.world_size,
                channels_last=device.type == "cuda", **pipeline_kwargs(run.data, info))
    crop_flip, policy = loader_aug(run.method, info.pipeline)
    train = DeviceLoader(splits.train_x, splits.train_y, batch_size=run.batch_size, train=True, augment=crop_flip,
                         autoaugment=policy, pad=run.data.pad, seed=run.seed,
                         rf_view=loader_views(run.method, info.pipeline), **norm)
    val = DeviceLoader(splits.val_x, splits.val_y, batch_size=run.eval_batch_size, train=False, **norm)
    test = None
    if splits.test_x is not None:
        test = DeviceLoader(splits.test_x, splits.test_y, batch_size=run.eval_batch_size, train=False, **norm)
    return info, train, val, test


def _stream_loaders(run: RunConfigBase, device: torch.device, dist: Dist) -> tuple[Any, Any, Any, Any]:
    """The splits streamed from their files (``raypair.data.stream.StreamLoader``), each rank its own part."""
    from raypair.data.stream import StreamLoader, stream_kwargs
    from raypair.data.stream_splits import stream_splits

    s = stream_splits(run.data)
    info = s.info
    norm = dict(mean=info.mean, std=info.std, device=device, rank=dist.rank, world_size=dist.world_size,
                channels_last=device.type == "cuda", **pipeline_kwargs(run.data, info),
                **stream_kwargs(run.data, run.scale.resources().threads))
    crop_flip, policy = loader_aug(run.method, info.pipeline)
    train = StreamLoader(s.train, batch_size=run.batch_size, train=True, augment=crop_flip, autoaugment=policy,
                         pad=run.data.pad, seed=run.seed, rf_view=loader_views(run.method, info.pipeline), **norm)
    val = StreamLoader(s.val, batch_size=run.eval_batch_size, train=False, **norm)
    test = None if s.test is None else StreamLoader(s.test, batch_size=run.eval_batch_size, train=False, **norm)
    return info, train, val, test


def restore(method: Method, opt: torch.optim.Optimizer, resume: Optional[dict[str, Any]]
            ) -> tuple[int, int, dict[str, Any], float]:
    """Load a checkpoint into the method, optimiser and generator; (epochs done, optimiser steps,
    last epoch's stats, epoch 1's train loss), or a fresh start's."""
    if resume is None:
        return 0, 0, {}, math.nan
    method.load_state_dict(resume["method"])
    opt.load_state_dict(resume["optim"])
    method.generator.set_state(resume["generator"])
    return resume["epoch"], resume["step"], dict(resume["stats"]), float(resume.get("first_loss", math.nan))


def run_trial(run: RunConfigBase, report: Report, *, resume: Optional[dict[str, Any]] = None,
              dist: Dist = Dist(), device: Optional[torch.device] = None) -> dict[str, float]:
    """Train ``run`` and return the last epoch's metrics. ``resume`` is a loaded checkpoint."""
    # over 30 lines: the epoch, in the order it happens (schedule, step, time, evaluate, checkpoint and
    # report, divergence), reads top to bottom; its parts are the helpers around it
    res = run.scale.resources()
    device = device or pick_device(res.may_use_gpu)
    torch.set_num_threads(res.threads)
    method, info, train, val, test = setup(run, device, dist)
    opt = trial_optimizer(run, method)
    start, step, stats, first_loss = restore(method, opt, resume)
    net, amp = _wrap(method, run, device, dist), device.type == "cuda"
    metrics: dict[str, float] = {}
    for epoch in range(start, run.total_epochs):
        lr = group_lr(run.schedule, len(train), run.epochs, method.on_epoch_start(epoch, run.epochs, stats),
                      run.optim.lr)
        t0 = time.perf_counter()
        stats, step = train_epoch(net, method, train.epoch(epoch), opt, lr, step, amp, dist)
        if amp:
            torch.cuda.synchronize(device)
        t1 = time.perf_counter()
        if not math.isfinite(stats["train_loss"]):
            raise TrialDiverged(f"train_loss is {stats['train_loss']} at epoch {epoch + 1}")
        first_loss = stats["train_loss"] if epoch == 0 else first_loss
        metrics = {"epoch": epoch + 1, **stats, **evaluate(method, val, amp, dist, seed=run.seed), **_skipped(train, dist),
                   "lr": opt.param_groups[0]["lr"], "epoch_time_s": t1 - t0, "eval_time_s": time.perf_counter() - t1}
        metrics.update(_test_metrics(run, epoch, metrics, method, test, info.eval_split, amp, dist))
        if (epoch + 1) % run.checkpoint_every == 0 or epoch + 1 == run.total_epochs:
            with tempfile.TemporaryDirectory(prefix="raypair-ckpt-") as d:  # rank 0 writes the checkpoint
                report(metrics, save_checkpoint(Path(d), method, opt, epoch + 1, step, stats, first_loss)
                       if dist.rank == 0 else None)
        else:
            report(metrics, None)
        reason = divergence(run.diverge, first_loss, metrics, info.num_classes)  # recorded, then stopped
        if reason:
            raise TrialDiverged(reason)
    return metrics


def _skipped(train: Any, dist: Dist) -> dict[str, float]:
    """A streamed run's ``data_skipped``: training images that did not decode so far, summed over
    the ranks (``data.on_corrupt: skip``); nothing on the device path."""
    if not hasattr(train, "skipped"):
        return {}
    return {"data_skipped": all_reduce(torch.tensor([float(train.skipped)], device=train.device), dist).item()}


def _wrap(method: Method, run: RunConfigBase, device: torch.device, dist: Dist) -> nn.Module:
    """What the training step calls: the method, in DDP across workers, compiled if asked."""
    net: nn.Module = method
    if dist.world_size > 1:
        # a part steps one branch: the other's parameters get no gradient in it (left None, not reduced)
        net = nn.parallel.DistributedDataParallel(method, find_unused_parameters=method.parts > 1)
    if run.scale.compile:
        net = torch.compile(net, mode="reduce-overhead" if device.type == "cuda" else "default")
    return net


def _test_metrics(run: RunConfigBase, epoch: int, metrics: dict[str, float], method: Method,
                  test: Optional[DeviceLoader], eval_split: str, amp: bool, dist: Dist) -> dict[str, float]:
    """The test split's metrics at the last epoch (with ``val_fraction`` 0, val is the test split:
    its metrics are copied), and at the end of the run's ``epochs`` when the method trains more
    after them, the state those extra epochs start from (``*_pre_ft``)."""
    out: dict[str, float] = {}
    if epoch + 1 == run.total_epochs and test is not None:
        out = evaluate(method, test, amp, dist, prefix="test", seed=run.seed)
    elif epoch + 1 == run.total_epochs and eval_split == "test":
        out = {"test" + k[3:]: v for k, v in metrics.items() if k.startswith("val_")}
    if epoch + 1 == run.epochs < run.total_epochs:
        pre = {k: v for k, v in metrics.items() if k.startswith("val_")}
        if test is not None:
            pre.update(evaluate(method, test, amp, dist, prefix="test", seed=run.seed))
        elif eval_split == "test":
            pre.update({"test" + k[3:]: v for k, v in list(pre.items())})
        out.update({f"{k}_pre_ft": v for k, v in pre.items()})
    return out
