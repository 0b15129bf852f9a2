"""Targets and losses shared by every method (methods.md §0).

Targets are soft ``[B, K]`` rows everywhere, so one soft-target loss serves all methods.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def one_hot(y: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """``[B]`` int64 -> ``[B, K]`` float rows: ``1 - eps + eps/K`` on the label, ``eps/K`` elsewhere."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must lie in [0, 1), got {smoothing}")
    off = smoothing / num_classes
    out = torch.full((y.shape[0], num_classes), off, device=y.device, dtype=torch.float32)
    return out.scatter_(1, y[:, None], 1.0 - smoothing + off)


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """``sce(z, T) = -(T * log_softmax(z)).sum(1).mean()`` for logits ``[B, K]`` and rows ``T [B, K]``."""
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def kl_loss(logits: Tensor, target: Tensor) -> Tensor:
    """``KL(T || softmax(z))`` averaged over the batch; finite where T has zeros (uses ``kl_div``)."""
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
    return F.kl_div(F.log_softmax(logits.float(), dim=1), target.float(), reduction="batchmean")
