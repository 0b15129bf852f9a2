"""PairTraining helpers (methods.md §5.3): stage and progress from beta, the alpha / area / theta
schedules and the batched disturbances RF and D-Mix (the composed CutMix op
with a box fully inside). D-Mask is Cutout's mask keeping odd sides: ``masks.cutout_mask(trim_odd=False)``.

Pure: tensors in, tensors out; the device comes from the inputs, randomness from a
``torch.Generator``; bad arguments raise ValueError with the received value.
"""
from __future__ import annotations

import math
from typing import Union

import torch
from torch import Tensor

from raypair.ops.augment import pad_crop_flip
from raypair.ops.losses import one_hot
from raypair.ops.masks import side_for_area
from raypair.ops.mixing import cutmix, partner


# --------------------------------------------------------------------------------- schedules
def stage_of(beta: float, t1: float, t2: float) -> tuple[int, float]:
    """``(stage, q)``: stage 3 iff ``beta >= t2``, 2 iff ``t1 <= beta < t2``, else 1; ``q`` the
    progress inside the stage, ``beta/t1``, ``(beta-t1)/(t2-t1)`` or ``(beta-t2)/(1-t2)``, in [0, 1]."""
    if not 0.0 < t1 < t2 < 1.0:
        raise ValueError(f"need 0 < t1 < t2 < 1, got t1={t1} t2={t2}")
    if beta >= t2:
        stage, q = 3, (beta - t2) / (1.0 - t2)
    elif beta >= t1:
        stage, q = 2, (beta - t1) / (t2 - t1)
    else:
        stage, q = 1, beta / t1
    return stage, min(max(q, 0.0), 1.0)


def alpha_of(mode: str, beta: float, q: float) -> float:
    """Pair-gate probability: ``ramp`` alpha = q, ``beta`` alpha = beta, ``one`` alpha = 1."""
    if mode == "ramp":
        return q
    if mode == "beta":
        return min(max(beta, 0.0), 1.0)
    if mode == "one":
        return 1.0
    raise ValueError(f"alpha_mode must be ramp, beta or one, got {mode!r}")


def lerp(low: float, high: float, q: float) -> float:
    """``low + q (high - low)``: D-Mask's area ``a`` and D-Mix's ``theta`` at progress ``q``."""
    return low + q * (high - low)


def dmask_schedule(q: float, a_min: float, a_max: float, n_max: int, size: int) -> tuple[int, int, float]:
    """``(n, L, a)``: ``a = a_min + q (a_max - a_min)``, ``n = 1 + floor(q (n_max - 1))`` holes of
    side ``L = round(sqrt(a) size)`` (``size = min(H, W)``). ``n`` reaches ``n_max`` only at q = 1."""
    if not 0.0 <= q <= 1.0 or n_max < 1:
        raise ValueError(f"need q in [0, 1] and n_max >= 1, got q={q} n_max={n_max}")
    a = lerp(a_min, a_max, q)
    return 1 + math.floor(q * (n_max - 1)), int(side_for_area(a, size)), a


def rf_pad(height: int, width: int) -> int:
    """RF's padding: 4 px at 32 px (CIFAR), the same 1/8 of the side at other sizes (2 at 16 px)."""
    return max(1, round(min(height, width) / 8))


# ------------------------------------------------------------------------------ disturbances
def rf(x: Tensor, generator: torch.Generator, fill: Union[float, Tensor] = 0.0) -> Tensor:
    """Random crop + flip ("RF", methods.md §0) of a ``[B, C, H, W]`` batch, padding with ``fill``
    (per channel ``[C]``; for normalised inputs the normalised black ``-mean/std`` matches the loader)."""
    return pad_crop_flip(x, rf_pad(x.shape[2], x.shape[3]), generator, fill)


def dmix(x: Tensor, y: Tensor, theta: Union[float, Tensor], num_classes: int, generator: torch.Generator,
         soft: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """D-Mix: the composed CutMix op with a box of sides ``round(sqrt(theta) H) x round(sqrt(theta) W)``
    placed uniformly fully inside the image, from a ``diffclass`` partner ``j``: ``x_p = M x + (1 - M) x[j]``.
    Returns ``(x_p [B, C, H, W], T_p [B, K], lam [B])`` with ``lam = 1 - theta_eff``, ``theta_eff = h w / (H W)``
    (0 for rows whose batch has no other class: nothing pasted), and ``T_p = lam Y + (1 - lam) Y[j]``
    (``soft``) or ``Y`` (hard). Draws: the partner, then the box's corner."""
    if not isinstance(theta, Tensor) and not 0.0 <= theta <= 1.0:  # a 0-d tensor (a compiled step's input): unchecked
        raise ValueError(f"theta must lie in [0, 1], got {theta}")
    j, ok = partner(y, "diffclass", generator)
    target = one_hot(y, num_classes)
    x_p, mixed, lam = cutmix(x, target, j, ok.to(x.device, torch.float64) * theta, generator, inside=True,
                             check=False)  # theta checked above
    return x_p, mixed if soft else target, lam
