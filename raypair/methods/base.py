"""The Method contract: a small ``nn.Module`` that owns its network(s) and turns a batch into a loss.

Built in one call, ``build_method(run, info, device=..., rank=..., pool=...)``: it builds the run's
model with the input channels the method's config asks for, the method around it, moves both to the
device and hands the method its random stream and its pool. Nothing is set on a method afterwards.

The contract is the config class, six methods and ``parts``; everything else on a subclass is its own:
- ``Config``: the method's pydantic config. A config whose network input stacks several images
  along channels declares it in ``images_per_input`` (a ClassVar; mixup-C: 2, so the model is built
  with a 2C-channel stem); 1 otherwise.
- ``forward(x, y) -> StepOut(loss, logits, logs, labels)``: ``x [B, C, H, W]`` normalised (and,
  with ``aug: base+``, already pad-crop-flipped by the loader), ``y [B]`` int64. The loop's train
  top-1 compares ``logits.argmax(1)`` with ``labels`` (default ``y``; a mixing method passes its
  target's argmax). ``logs`` are floats or 0-d tensors the loop averages over the epoch.
- ``parts`` (an int, default 1) and ``forward(x, y, part)``: a method whose batch is several
  optimiser steps in turn (VPL's alternating DML: one branch, then the other against the first's
  updated outputs) sets ``parts`` at build time. The loop then steps the optimiser after each part
  and calls part k >= 1 as ``forward(carry, y, k)`` with the previous part's ``StepOut.carry`` (its
  already-mixed input), so a part's loss sees every earlier part's update. A part's gradient-free
  parameters keep ``grad = None``, so the optimiser leaves them as they are.
- ``mix(x, y) -> Mixed(x, target, logs)``: the batch transform alone (what ``raypair preview`` and
  the benchmarks show); the default ``forward`` is ``sce(model(mixed.x), mixed.target)``.
- ``on_epoch_start(epoch, epochs, stats) -> Optional[float]``: ``stats`` holds what the loop
  measured in the previous epoch (``train_acc``, ``train_loss``; all-reduced across workers).
  Schedules that switch a method on or off live here, never in the loop. The return value is the
  epoch's learning rate: None follows the run's schedule; a float is a constant lr for every group
  during this epoch (the fine-tuning phase of mixup and mixup-C).
- ``eval_logits(x) -> {name: logits}``: the first entry is the primary prediction (``val_acc``);
  every other entry ``k`` is reported as ``val_acc_k`` too.
- ``eval_pairs(x, y, xp, yp, generator) -> {name: [B] per-pair values}``: metrics of two different
  evaluation images classified in one pass (P1's two-sample tests). The loop pairs the split once by
  the run's seed (``ops.pairing.cycle_partners``: every image is once the first and once the second
  of a pair), hands a fresh ``generator`` seeded by the run's seed to every evaluation (so each one
  sees the same pairs and ratios) and reports the split's mean of each entry as ``val_<name>`` /
  ``test_<name>``. Only a method that overrides it has its split paired.
- ``optim_groups() -> [{"params": ..., "lr"?: ..., "weight_decay"?: ...}]``: the optimiser's groups
  (default: one group of every trainable parameter under ``optim.*``). A group's own ``lr`` replaces
  ``optim.lr`` for it (VPL's per-branch rates); the schedule scales every group's lr alike.

Attributes a method reads, all given by ``build_method``: ``cfg``, ``model``, ``info`` (the data's
classes, shape and normalisation), ``generator`` (its random stream, on the device: seeded by the
``method`` stream of ``(run.seed, rank)``, one per worker, as the loop trains) and ``pool`` (the
training split or None, for methods that pair with the dataset: ``pool.draw(n, generator,
avoid=labels)``).
A method never logs, reports, checkpoints or reads a global flag.

Why this shape: what one method alone needed is data, not extra hooks (``eval_pairs`` serves two:
mixup's test-time top-2 and mixup-C's two-image heads). The stem width is a
config ClassVar read once at build time (``in_chans``); a phase's constant lr is the epoch hook's
return value, so the loop reads no method state per step; per-branch lrs are plain torch
param-group keys in ``optim_groups``, which the loop's schedule already scales group by group.
Alternating updates are a count (``parts``, fixed at build time, so DDP knows that a part leaves
parameters unused) and a tensor handed back (``carry``), not a hook: the loop owns every optimiser step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, Union

import torch
from torch import Tensor, nn

from raypair.config import MethodConfig, RunConfigBase
from raypair.models import build_model
from raypair.ops.losses import one_hot, soft_cross_entropy
from raypair.ops.sampling import stream_key
from raypair.registry import Registry

def _adopt(name: str, config: Any) -> None:
    """A ``raypair.methods`` plug-in names its torch-free config class; the config names its torch
    code as ``implementation = "package.module:Class"``, imported here (not when a file is validated)."""
    import importlib

    if name in METHODS:
        return
    where = getattr(config, "implementation", None)
    if not isinstance(where, str) or ":" not in where:
        raise ValueError(f"its config {getattr(config, '__name__', config)} names no implementation "
                         "(implementation: ClassVar[str] = 'package.module:Class')")
    module, _, attr = where.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if name not in METHODS:  # (importing the module may have registered it)
        METHODS.register(name)(cls)


METHODS: Registry[type["Method"]] = Registry("method", group="raypair.methods", adopt=_adopt)
Logs = dict[str, Union[float, Tensor]]


@dataclass
class StepOut:
    loss: Tensor
    logits: Tensor
    logs: Logs = field(default_factory=dict)
    labels: Optional[Tensor] = None  # what train top-1 is measured against; None: the batch's y
    carry: Optional[Tensor] = None  # the next part's input (a method with parts > 1)


@dataclass
class Mixed:
    x: Tensor  # [B, C', H, W] the network input
    target: Tensor  # [B, K] soft rows
    logs: Logs = field(default_factory=dict)


class Method(nn.Module):
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    generator: torch.Generator  # given by build_method
    pool: Any  # given by build_method
    parts: int = 1  # optimiser steps per batch (forward's part 0 .. parts - 1)

    def __init__(self, cfg: MethodConfig, model: nn.Module, info: Any) -> None:
        super().__init__()
        self.cfg, self.model, self.info = cfg, model, info

    def optim_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups; a group may set its own ``lr`` / ``weight_decay`` (VPL's
        branches), else ``optim.*`` applies. The schedule scales every group's lr alike."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def mix(self, x: Tensor, y: Tensor) -> Mixed:
        return Mixed(x, one_hot(y, self.info.num_classes))

    def forward(self, x: Tensor, y: Tensor) -> StepOut:
        m = self.mix(x, y)
        logits = self.model(m.x)
        return StepOut(soft_cross_entropy(logits, m.target), logits, m.logs, labels=m.target.argmax(1))

    def on_epoch_start(self, epoch: int, epochs: int, stats: dict[str, Any]) -> Optional[float]:
        """Per-epoch schedule; returns this epoch's constant lr, or None for the run's schedule."""
        return None

    @torch.no_grad()
    def eval_logits(self, x: Tensor) -> dict[str, Tensor]:
        return {"": self.model(x)}

    @torch.no_grad()
    def eval_pairs(self, x: Tensor, y: Tensor, xp: Tensor, yp: Tensor,
                   generator: torch.Generator) -> dict[str, Tensor]:
        """Per-pair metrics ``{name: [B]}`` of images ``x`` paired with ``xp`` (labels ``y``, ``yp``)."""
        return {}


def finetune_lr(epoch: int, epochs: int, ft_epochs: int, ft_lr: float) -> Optional[float]:
    """The fine-tuning phase after mixup-type training (P1 §5.5) follows the run's ``epochs`` mixing
    epochs (``MethodConfig.extra_epochs``: the loop trains ``epochs + ft_epochs``): its constant lr
    ``ft_lr`` from epoch ``epochs`` on (what ``on_epoch_start`` returns), None before."""
    return ft_lr if ft_epochs > 0 and epoch >= epochs else None


def in_chans(cfg: Union[MethodConfig, type[MethodConfig]], channels: int) -> int:
    """The model's input channels for images of ``channels``: times the config's ``images_per_input``."""
    return channels * cfg.images_per_input


def build_method(run: RunConfigBase, info: Any, *, device: Union[torch.device, str] = "cpu", rank: int = 0,
                 pool: Any = None, generator_seed: Optional[int] = None) -> Method:
    """The method of ``run`` ready to train: ``run.model`` built for ``info`` (classes, input
    channels ``in_chans``, image size ``(H, W)``: a transformer of a non-square dataset gets its grid)
    from the torch RNG as it stands (seed it first for a fixed init), the method around it on
    ``device``, its generator on ``device`` seeded ``generator_seed`` (default: the ``method`` stream of
    ``(run.seed, rank)``, one per worker, see :data:`raypair.ops.sampling.STREAMS`) and ``pool`` (the
    training split)."""
    cfg, c, size = run.method, info.image_shape[0], tuple(info.image_shape[1:3])  # size (H, W)
    model = build_model(run.model, info.num_classes, in_chans(cfg, c), size)
    method = METHODS.get(cfg.name)(cfg, model, info).to(device)
    seed = stream_key("method", run.seed, rank) if generator_seed is None else generator_seed
    method.generator, method.pool = torch.Generator(device).manual_seed(seed), pool
    return method
