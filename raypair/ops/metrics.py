"""Training-time metrics of mixed batches (methods.md §4.1): did the net name both mixed classes?

Pure tensor functions of logits and soft targets; no randomness, the device comes from the inputs.
"""
from __future__ import annotations

import torch
from torch import Tensor


def top2_hits(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """P1's two-sample train accuracy. ``logits [B, K]``, ``target [B, K]`` soft rows with at most two
    non-zero weights -> ``(top2 [B], top2_all [B])`` bool.

    ``top2_all``: the two highest logits are the two target classes, in either order. ``top2``: also
    in the right order, the first being the class of larger weight (methods.md ASSUMPTION); on a tie
    (lam_l = 0.5) either order counts, so there ``top2 == top2_all``. A row with a single non-zero
    weight (the partner shares the label, or lam_l is 0 or 1) has no second class to name: both
    metrics are then top-1 against that class (ASSUMPTION)."""
    if logits.shape != target.shape or logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"need logits and target of one shape [B, K>=2], got {tuple(logits.shape)} "
                         f"and {tuple(target.shape)}")
    w, cls = target.float().topk(2, dim=1)  # w[:, 0] >= w[:, 1]
    pred = logits.topk(2, dim=1).indices
    single = w[:, 1] <= 0
    same = (pred[:, 0] == cls[:, 0]) & (pred[:, 1] == cls[:, 1])
    swapped = (pred[:, 0] == cls[:, 1]) & (pred[:, 1] == cls[:, 0])
    top1 = pred[:, 0] == cls[:, 0]
    either = torch.where(single, top1, same | swapped)
    ordered = torch.where(single, top1, same | (swapped & (w[:, 0] == w[:, 1])))
    return ordered, either
