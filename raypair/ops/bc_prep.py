"""Between-class learning helpers (methods.md §3): BC+'s zero-mean preprocessing and BC targets.

Pure tensor functions: the device comes from the inputs, bad arguments raise ValueError with the
received value. Raypair's batches arrive normalised as ``(p / 255 - mean) / std``; BC+ wants
``(p - mean_i(p) - m_c) / s_c`` on the 0-255 scale, with ``mean_i`` the mean over all C x H x W
values of image i (P2 code ``zero_mean``). The conversion between the two is exact and batched.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from raypair.ops.losses import one_hot
from raypair.ops.mixing import mix

# P2 code (mil-tokyo/bc_learning_image), BC+ preprocessing constants m, s on the 0-255 scale
BC_PLUS_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((4.60, 2.24, -6.84), (55.9, 53.7, 56.5)),
    "cifar100": ((7.37, 2.13, -9.50), (57.6, 54.0, 58.5)),
}
PLUS_STATS = ("paper", "derived")
LABEL_MODES = ("ratio", "major")


def bc_plus_constants(name: str, mean: Sequence[float], std: Sequence[float],
                      source: str = "paper") -> tuple[Tensor, Tensor]:
    """BC+ constants ``(m [C], s [C])`` on the 0-255 scale, float32.

    ``paper``: P2's table for CIFAR-10/100, ``derived`` for any other dataset. ``derived``:
    ``m_c = 255 (mean_c - mean over c of mean_c)``, the expected channel offset left after the
    per-image mean is removed (exact for CIFAR-10: 4.57, 2.27, -6.83 against the table's 4.60,
    2.24, -6.84), and ``s_c = 255 std_c`` (an upper bound: removing the per-image mean lowers the
    spread, CIFAR-10 63.0 -> 55.9)."""
    if source not in PLUS_STATS:
        raise ValueError(f"unknown BC+ constants source {source!r} (valid: {', '.join(PLUS_STATS)})")
    if len(mean) != len(std):
        raise ValueError(f"mean and std need the same number of channels, got {tuple(mean)} and {tuple(std)}")
    if source == "paper" and name in BC_PLUS_STATS:
        m, s = BC_PLUS_STATS[name]
        if len(m) != len(mean):
            raise ValueError(f"{name}'s BC+ table has {len(m)} channels, got mean {tuple(mean)}")
        return torch.tensor(m), torch.tensor(s)
    mean255 = 255 * torch.tensor(mean, dtype=torch.float64)
    return (mean255 - mean255.mean()).float(), (255 * torch.tensor(std, dtype=torch.float64)).float()


def zero_mean(x: Tensor, mean: Tensor, std: Tensor, m: Tensor, s: Tensor) -> Tensor:
    """BC+ input from a standard-normalised batch: ``x [B, C, H, W] = (p / 255 - mean) / std`` ->
    ``(p - mean_i(p) - m_c) / s_c`` with pixels ``p = 255 (x std + mean)`` and ``mean_i`` the mean
    of image i over all C x H x W values. ``mean, std`` in [0, 1] units and ``m, s`` on the 0-255
    scale, each ``[C]`` (or broadcastable ``[1, C, 1, 1]``)."""
    if x.dim() != 4:
        raise ValueError(f"need x [B, C, H, W], got shape {tuple(x.shape)}")

    def per_channel(v: Tensor) -> Tensor:
        v = v.to(device=x.device, dtype=x.dtype).reshape(1, -1, 1, 1)
        if v.shape[1] != x.shape[1]:
            raise ValueError(f"need {x.shape[1]} per-channel values, got {v.flatten().tolist()}")
        return v

    p = (x * per_channel(std) + per_channel(mean)) * 255
    p = p - p.mean(dim=(1, 2, 3), keepdim=True)
    return (p - per_channel(m)) / per_channel(s)


def bc_target(y1: Tensor, y2: Tensor, r: Tensor, num_classes: int, mode: str = "ratio") -> Tensor:
    """BC label rows ``[B, K]``. ratio (P2): ``r Y1 + (1 - r) Y2``; major (P2s): the one-hot label
    of the larger-ratio image, ``y1`` where ``r >= 0.5`` (ties go to the first image), else ``y2``."""
    if mode == "ratio":
        return mix(one_hot(y1, num_classes), one_hot(y2, num_classes), r)
    if mode == "major":
        return one_hot(torch.where(r >= 0.5, y1, y2), num_classes)
    raise ValueError(f"unknown label mode {mode!r} (valid: {', '.join(LABEL_MODES)})")
