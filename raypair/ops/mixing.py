"""Mixing primitives (methods.md §0-§5): ratios, partners, image/label mixing, the composed CutMix
op (box + paste + area-corrected ratio; CutMix and D-Mix both call it), BC/BC+. Boxes and masks
live in :mod:`raypair.ops.masks`.

Pure tensor functions: the device comes from the inputs, randomness from an explicit
``torch.Generator`` (which must live on that device), and bad arguments raise ValueError with the
received value. Order follows timm's ``mixup.py``: small helpers first, methods build on them.
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch
from torch import Tensor

from raypair.ops.masks import area_lambda, box_mask, cutmix_box, inside_box, side_for_area

Ratio = Union[float, Tensor]  # a scalar, or one value per sample [B]
PARTNER_RULES = ("perm", "flip", "roll", "diffclass")


# ------------------------------------------------------------------------------------ ratios
def sample_beta(alpha: float, n: int, generator: torch.Generator) -> Tensor:
    """``n`` draws of Beta(alpha, alpha) as float32 ``[n]`` on the generator's device.

    The first coordinate of a Dirichlet(alpha, alpha) draw (``torch.distributions.Beta``'s sampler,
    which takes a generator here), drawn on the device: no value is read on the host, so a step
    never waits for the device (a numpy draw needed a seed read off the device every batch)."""
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    conc = torch.full((n, 2), float(alpha), dtype=torch.float32, device=generator.device)
    return torch._sample_dirichlet(conc, generator=generator)[:, 0]


def sample_uniform(low: float, high: float, n: int, generator: torch.Generator) -> Tensor:
    """``n`` draws of U[low, high] as float32 ``[n]`` on the generator's device."""
    if not low <= high:
        raise ValueError(f"need low <= high, got [{low}, {high}]")
    return low + (high - low) * torch.rand(n, generator=generator, device=generator.device)


def _per_sample(lam: Ratio, like: Tensor) -> Tensor:
    """A 0-d or ``[B]`` ratio tensor shaped to broadcast against ``like`` ([B, ...])."""
    lam = lam.to(like.dtype)
    if lam.dim() == 0:
        return lam
    if lam.shape != like.shape[:1]:
        raise ValueError(f"a per-sample ratio needs shape [{like.shape[0]}], got {tuple(lam.shape)}")
    return lam.reshape(-1, *([1] * (like.dim() - 1)))


# ---------------------------------------------------------------------------------- partners
def partner(y: Tensor, rule: str, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Partner index ``j [B]`` of every sample and ``ok [B]`` (False: no valid partner).

    perm: a random permutation (mixup-cifar10, CutMix-PyTorch); flip: ``j = B-1-i`` (timm);
    roll: ``j = i-1`` (torchvision v2); diffclass: uniform among the batch's samples of another
    label (BC, D-Mix), ``ok`` False where the batch has none."""
    b = y.shape[0]
    idx = torch.arange(b, device=y.device)
    if rule == "perm":
        j = torch.randperm(b, generator=generator, device=generator.device).to(y.device)
    elif rule == "flip":
        j = idx.flip(0)
    elif rule == "roll":
        j = (idx - 1) % b
    elif rule == "diffclass":
        score = torch.rand(b, b, generator=generator, device=generator.device).to(y.device)
        score.masked_fill_(y[:, None] == y[None, :], -1.0)
        best, j = score.max(1)
        return j, best >= 0
    else:
        raise ValueError(f"unknown partner rule {rule!r} (valid: {', '.join(PARTNER_RULES)})")
    return j, torch.ones(b, dtype=torch.bool, device=y.device)


# ----------------------------------------------------------------------------------- mixing
def mix(a: Tensor, b: Tensor, lam: Ratio) -> Tensor:
    """``lam a + (1 - lam) b`` for images ``[B, C, H, W]`` or targets ``[B, K]``; ``lam`` scalar or ``[B]``."""
    if a.shape != b.shape:
        raise ValueError(f"cannot mix shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if not isinstance(lam, Tensor):  # a number stays one (a tensor made of it is a copy to the device)
        lam32 = np.float32(lam)  # the weights a float32 tensor ratio would give
        return float(lam32) * a + float(np.float32(1) - lam32) * b
    lam = _per_sample(lam, a)
    return lam * a + (1 - lam) * b


def paste(a: Tensor, b: Tensor, keep: Tensor) -> Tensor:
    """``keep a + (1 - keep) b`` with a mask ``keep [B, 1, H, W]`` (1 keeps ``a``)."""
    return keep * a + (1 - keep) * b


def cutmix(x: Tensor, target: Tensor, j: Tensor, area: Tensor, generator: torch.Generator,
           inside: bool = False, check: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """CutMix composed: a box of about ``area`` of the image pasted from partner ``j``, the labels
    mixed by the exact kept fraction. ``x [B, C, H, W]``, ``target [B, K]`` soft rows, ``j [B]``,
    ``area`` float in [0, 1], ``[B]`` (a box per image) or ``[1]`` (one box for the batch, as CutMix's
    reference). Placement: ``cutmix_box`` (sides ``int(W sqrt(area))``, centre uniform, clipped) or,
    with ``inside`` (D-Mix), sides ``round(sqrt(area) H)`` placed fully inside by ``inside_box``.
    Returns ``(M x + (1 - M) x[j] [B, C, H, W], lam T + (1 - lam) T[j] [B, K], lam)``, ``lam = 1 - h w / (H W)``
    shaped like ``area`` (a row with an empty box keeps its image and target exactly). ``check=False``
    skips the box checks that read values on the host (callers whose areas are valid by construction)."""
    _, _, height, width = x.shape
    if inside:
        box = inside_box((side_for_area(area, height), side_for_area(area, width)), height, width, generator, check)
    else:
        box = cutmix_box(area, height, width, generator, check)
    keep = box_mask(*box, height, width).to(x.device, x.dtype)  # [B or 1, 1, H, W]
    lam = area_lambda(box[2], box[3], height, width)
    ratio = lam[0] if lam.shape[0] == 1 else lam  # one box: one ratio for every row
    return paste(x, x[j], keep), mix(target, target[j], ratio), lam


def cutmix_beta(x: Tensor, target: Tensor, y: Tensor, alpha: float, rule: str,
                generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """CutMix as its reference draws it (clovaai; the CutMix method and PairTraining's ``cutmix``
    control): ``lam ~ Beta(alpha, alpha)``, the partner by ``rule``, then one box for the whole
    batch covering ``1 - lam``. Shapes as :func:`cutmix`; the returned ``lam [1]`` is area-corrected."""
    lam = sample_beta(alpha, 1, generator)
    j, _ = partner(y, rule, generator)
    return cutmix(x, target, j, 1.0 - lam.double(), generator, check=False)  # lam in [0, 1]


def image_std(x: Tensor) -> Tensor:
    """Population std over all ``C x H x W`` values of each image: ``[B, C, H, W] -> [B]``."""
    return x.flatten(1).std(1, unbiased=False)


def bc_mix(x1: Tensor, x2: Tensor, r: Tensor, plus: bool, check: bool = True) -> Tensor:
    """Between-class mixing (P2). BC: ``r x1 + (1-r) x2``. BC+: ``p = 1 / (1 + s1/s2 (1-r)/r)``,
    ``(p x1 + (1-p) x2) / sqrt(p^2 + (1-p)^2)`` with ``s_i`` the per-image std (the inputs are
    expected zero-mean per image). ``r [B]`` in (0, 1]; BC+ is symmetric under
    ``(x1, x2, r) <-> (x2, x1, 1-r)``. ``check=False`` skips the range check (it reads a value on
    the host: a training step passes ratios valid by construction)."""
    if check and ((r <= 0) | (r > 1)).any():
        raise ValueError(f"r must lie in (0, 1], got min {r.min().item()} max {r.max().item()}")
    if not plus:
        return mix(x1, x2, r)
    s1, s2 = image_std(x1).clamp_min(1e-8), image_std(x2).clamp_min(1e-8)
    p = 1.0 / (1.0 + s1 / s2 * (1.0 - r) / r)
    return mix(x1, x2, p) / _per_sample(torch.sqrt(p**2 + (1 - p) ** 2), x1)


def check_unit(name: str, value: float) -> None:
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
