"""PairTraining helpers (methods.md §5.3): stage and progress from beta, the alpha / area / theta
schedules, the stage presets, and the batched disturbances RF, D-Mask and D-Mix.

Pure: tensors in, tensors out; the device comes from the inputs, randomness from a
``torch.Generator``; bad arguments raise ValueError with the received value.
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from torch import Tensor

from raypair.ops.augment import pad_crop_flip
from raypair.ops.losses import one_hot
from raypair.ops.mixing import box_mask, inside_box, mix, partner, paste, side_for_area

STAGE_OPS = ("none", "rf", "cutout", "cutmix", "dmask", "dmix")
# Table 4 of P0: strategy 1 = normal training, 8 = full PairTraining; the paper's map of 2-7 is
# lost, so the controls carry descriptive names, not numbers (methods.md §5.3).
PRESETS: dict[str, tuple[str, str, str]] = {
    "S1": ("none", "none", "none"),
    "S8": ("rf", "dmask", "dmix"),
    **{op: (op, op, op) for op in STAGE_OPS[1:]},
    "rf_dmask_dmask": ("rf", "dmask", "dmask"),
}


def resolve_ops(stage_ops: Union[str, Sequence[str]]) -> tuple[str, str, str]:
    """A preset name (``PRESETS``) or three ops from ``STAGE_OPS`` -> the op of stages 1, 2, 3."""
    ops = PRESETS.get(stage_ops) if isinstance(stage_ops, str) else tuple(stage_ops)
    if ops is None or len(ops) != 3 or any(op not in STAGE_OPS for op in ops):
        raise ValueError(f"stage_ops must be a preset ({', '.join(PRESETS)}) or 3 ops from "
                         f"{', '.join(STAGE_OPS)}, got {stage_ops!r}")
    return ops  # type: ignore[return-value]


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


def square_mask(batch: int, height: int, width: int, n_holes: int, length: int,
                generator: torch.Generator) -> Tensor:
    """D-Mask holes, float ``[B, 1, H, W]`` (1 = keep): per hole a centre ``(cy, cx)`` uniform over
    the image, the square ``[c - L//2, c - L//2 + L)`` clipped to the image. Same draws and the same
    mask as ``cutout_mask`` for even ``L``; for odd ``L`` the side stays ``L`` (Cutout's is ``L - 1``)."""
    if n_holes < 0 or length < 0:
        raise ValueError(f"need n_holes >= 0 and length >= 0, got n_holes={n_holes} length={length}")
    dev = generator.device
    cy = torch.randint(height, (batch, n_holes), generator=generator, device=dev)
    cx = torch.randint(width, (batch, n_holes), generator=generator, device=dev)
    y1, x1 = cy - length // 2, cx - length // 2
    yy = torch.arange(height, device=dev)[None, None, :, None]
    xx = torch.arange(width, device=dev)[None, None, None, :]
    inside = ((yy >= y1[..., None, None]) & (yy < (y1 + length)[..., None, None])
              & (xx >= x1[..., None, None]) & (xx < (x1 + length)[..., None, None])).any(1)
    return (~inside).float()[:, None]


def dmix(x: Tensor, y: Tensor, theta: float, num_classes: int, generator: torch.Generator,
         soft: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """D-Mix: paste a box of sides ``round(sqrt(theta) H) x round(sqrt(theta) W)``, placed uniformly
    fully inside the image, from a ``diffclass`` partner ``j``: ``x_p = M x + (1 - M) x[j]``.
    Returns ``(x_p [B, C, H, W], T_p [B, K], theta_eff [B])`` with ``theta_eff = h w / (H W)`` (0 for
    rows whose batch has no other class: nothing pasted) and ``T_p = (1 - theta_eff) Y + theta_eff Y[j]``
    (``soft``) or ``Y`` (hard)."""
    if not 0.0 <= theta <= 1.0:
        raise ValueError(f"theta must lie in [0, 1], got {theta}")
    b, _, height, width = x.shape
    j, ok = partner(y, "diffclass", generator)
    zero = torch.zeros((), dtype=torch.long, device=x.device)
    h = torch.where(ok, side_for_area(theta, height).to(x.device), zero)
    w = torch.where(ok, side_for_area(theta, width).to(x.device), zero)
    top, left, h, w = inside_box((h, w), height, width, generator)
    keep = box_mask(top, left, h, w, height, width).to(x.dtype)
    theta_eff = (h * w).float() / (height * width)
    target = one_hot(y, num_classes)
    if soft:
        target = mix(target[j], target, theta_eff)
    return paste(x, x[j], keep), target, theta_eff
