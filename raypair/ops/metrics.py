"""Two-sample metrics of mixed pairs (methods.md §4.1): did the net name both classes of the pair?

Pure tensor functions of logits, labels and ratios; no randomness, the device comes from the inputs.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

Ratio = Union[float, Tensor]


def top2_hits(logits: Tensor, y_a: Tensor, y_b: Tensor, w_a: Ratio,
              tie_a: Optional[Ratio] = None) -> tuple[Tensor, Tensor]:
    """P1's two-sample accuracy of a pair ``(a, b)`` mixed into one input. ``logits [B, K]``, labels
    ``y_a, y_b [B]``, ``w_a`` the label weight of ``a`` (``b`` has ``1 - w_a``; 0-d or ``[B]``) ->
    ``(top2 [B], top2_all [B])`` bool.

    ``top2_all``: the two highest logits are ``{y_a, y_b}``, in either order. ``top2``: also in the
    right order, the first being the sample of larger label weight. A same-label pair is a miss for
    both (P1: it would "inevitably lead to a wrong prediction of one category", so the highest
    accuracy is 1 - 2/N). On a label tie (``w_a == 0.5``: always under mixup-X) P1 does not define
    the order: ``tie_a`` (the image weight of ``a``) decides it the same way, and with no ``tie_a``
    (or a tie there too) either order counts (ASSUMPTION, the methods' ``top2_tie``)."""
    if logits.dim() != 2 or logits.shape[1] < 2 or y_a.shape != logits.shape[:1] or y_b.shape != y_a.shape:
        raise ValueError(f"need logits [B, K>=2] and labels [B], got {tuple(logits.shape)}, "
                         f"{tuple(y_a.shape)} and {tuple(y_b.shape)}")
    pred = logits.topk(2, dim=1).indices
    a_first = (pred[:, 0] == y_a) & (pred[:, 1] == y_b)
    b_first = (pred[:, 0] == y_b) & (pred[:, 1] == y_a)
    differ = y_a != y_b
    key = torch.as_tensor(w_a, dtype=torch.float32, device=logits.device) - 0.5  # > 0: a comes first
    if tie_a is not None:
        key = torch.where(key == 0, torch.as_tensor(tie_a, dtype=torch.float32, device=logits.device) - 0.5, key)
    ordered = differ & ((a_first & (key >= 0)) | (b_first & (key <= 0)))
    return ordered, differ & (a_first | b_first)
