"""The Method contract: a small ``nn.Module`` that owns its network(s) and turns a batch into a loss.

- ``forward(x, y) -> StepOut(loss, logits, logs, labels)``: ``x [B, C, H, W]`` normalised (and,
  with ``aug: base+``, already pad-crop-flipped by the loader), ``y [B]`` int64. The loop's train
  top-1 compares ``logits.argmax(1)`` with ``labels`` (default ``y``; a mixing method passes its
  target's argmax). ``logs`` are floats or 0-d tensors the loop averages over the epoch.
- ``mix(x, y) -> Mixed(x, target, logs)``: the batch transform alone (what ``raypair preview`` and
  the benchmarks show); the default ``forward`` is ``sce(model(mixed.x), mixed.target)``.
- ``param_groups()``: the optimiser's groups (default: every trainable parameter, ``optim.*``).
- ``on_epoch_start(epoch, epochs, stats)``: ``stats`` holds what the loop measured in the
  previous epoch (``train_acc``, ``train_loss``; all-reduced across workers). Schedules that
  switch a method on or off live here, never in the loop; a phase with its own constant learning
  rate (fine-tuning) sets ``self.lr_override``.
- ``eval_logits(x) -> {name: logits}``: the first entry is the primary prediction (``val_acc``);
  every other entry ``k`` is reported as ``val_acc_k`` too.

Set by the loop: ``generator`` (the method's random stream, seeded per worker, on the device) and
``pool`` (the training split, for methods that pair with the dataset: ``pool.draw(n, generator,
avoid=labels)``). ``in_chans_factor`` lets a method ask for a wider stem (mixup-C: 2C channels).
A method never logs, reports, checkpoints or reads a global flag.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, Union

import torch
from torch import Tensor, nn

from raypair.config import MethodConfig
from raypair.ops.losses import one_hot, soft_cross_entropy
from raypair.registry import Registry

METHODS: Registry[type["Method"]] = Registry("method")
Logs = dict[str, Union[float, Tensor]]


@dataclass
class StepOut:
    loss: Tensor
    logits: Tensor
    logs: Logs = field(default_factory=dict)
    labels: Optional[Tensor] = None  # what train top-1 is measured against; None: the batch's y


@dataclass
class Mixed:
    x: Tensor  # [B, C', H, W] the network input
    target: Tensor  # [B, K] soft rows
    logs: Logs = field(default_factory=dict)


class Method(nn.Module):
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    in_chans_factor: ClassVar[int] = 1

    def __init__(self, cfg: MethodConfig, model: nn.Module, info: Any) -> None:
        super().__init__()
        self.cfg, self.model, self.info = cfg, model, info
        self.generator = torch.Generator()
        self.pool: Any = None
        self.lr_override: Optional[float] = None

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups; a group may set its own ``lr`` / ``weight_decay`` (VPL's
        branches), else ``optim.*`` applies. The schedule scales every group's lr alike."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def mix(self, x: Tensor, y: Tensor) -> Mixed:
        return Mixed(x, one_hot(y, self.info.num_classes))

    def forward(self, x: Tensor, y: Tensor) -> StepOut:
        m = self.mix(x, y)
        logits = self.model(m.x)
        return StepOut(soft_cross_entropy(logits, m.target), logits, m.logs, labels=m.target.argmax(1))

    def on_epoch_start(self, epoch: int, epochs: int, stats: dict[str, Any]) -> None:
        return None

    @torch.no_grad()
    def eval_logits(self, x: Tensor) -> dict[str, Tensor]:
        return {"": self.model(x)}


def finetune_lr(epoch: int, epochs: int, ft_epochs: int, ft_lr: float) -> Optional[float]:
    """The fine-tuning phase after mixup-type training (P1 §5.5) is the last ``ft_epochs`` of the
    run: its constant lr ``ft_lr`` there (for ``Method.lr_override``), None before."""
    return ft_lr if ft_epochs > 0 and epoch >= epochs - ft_epochs else None


def check_finetune(ft_epochs: int, epochs: int, what: str) -> None:
    """A fine-tuning phase must leave at least one ``what`` epoch in the run (no silent capping)."""
    if ft_epochs >= epochs:
        raise ValueError(f"ft_epochs: {ft_epochs} fine-tuning epochs leave no {what} epoch in "
                         f"epochs={epochs}; lower it (0 = no fine-tuning)")


def build_method(cfg: MethodConfig, model: nn.Module, info: Any) -> Method:
    return METHODS.get(cfg.name)(cfg, model, info)
