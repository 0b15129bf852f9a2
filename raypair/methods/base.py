"""The Method contract: a small ``nn.Module`` that owns its network(s) and turns a batch into a loss.

- ``forward(x, y) -> StepOut(loss, logits, logs)``: ``x [B, C, H, W]`` normalised (and, with
  ``aug: base+``, already pad-crop-flipped by the loader), ``y [B]`` int64. ``logits [B, K]`` are
  those of the images whose labels are ``y`` (the loop's train top-1 uses them). ``logs`` are
  floats or 0-d tensors the loop averages over the epoch and reports.
- ``on_epoch_start(epoch, epochs, stats)``: ``stats`` holds what the loop measured in the
  previous epoch (``train_acc``, ``train_loss``; all-reduced across workers). Schedules that
  switch a method on or off live here, never in the loop.
- ``eval_logits(x) -> {name: logits}``: the first entry is the primary prediction (``val_acc``);
  every other entry ``k`` is reported as ``val_acc_k`` too.
- ``generator``: the method's own random stream, set by the loop (seeded per worker).

A method never logs, reports, checkpoints or reads a global flag.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

import torch
from torch import Tensor, nn

from raypair.config import MethodConfig
from raypair.registry import Registry

METHODS: Registry[type["Method"]] = Registry("method")


@dataclass
class StepOut:
    loss: Tensor
    logits: Tensor
    logs: dict[str, Union[float, Tensor]] = field(default_factory=dict)


class Method(nn.Module):
    Config: ClassVar[type[MethodConfig]] = MethodConfig

    def __init__(self, cfg: MethodConfig, model: nn.Module, info: Any) -> None:
        super().__init__()
        self.cfg, self.model, self.info = cfg, model, info
        self.generator = torch.Generator()

    def forward(self, x: Tensor, y: Tensor) -> StepOut:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_epoch_start(self, epoch: int, epochs: int, stats: dict[str, float]) -> None:
        return None

    @torch.no_grad()
    def eval_logits(self, x: Tensor) -> dict[str, Tensor]:
        return {"": self.model(x)}


def build_method(cfg: MethodConfig, model: nn.Module, info: Any) -> Method:
    return METHODS.get(cfg.name)(cfg, model, info)
