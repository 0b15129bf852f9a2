"""Random Erasing (Zhong et al. 2017, arXiv 1708.04896) as one batched op on normalised images.

Follows timm's ``RandomErasing`` (``timm/data/random_erasing.py``, one box per image) sample for
sample, without its per-sample Python loop: per image, with probability ``p``, up to ``attempts``
candidate boxes of area ``U[area] * H * W`` and aspect ratio ``exp(U[log aspect])``, sides
``h = round(sqrt(a * r))``, ``w = round(sqrt(a / r))``; the first candidate with ``1 <= h < H`` and
``1 <= w < W`` is placed uniformly (``top ~ U{0..H-h}``, ``left ~ U{0..W-w}``) and filled; an image
none of whose candidates fits stays unchanged (timm: 10 failed attempts, no erasing). timm accepts
``h = 0`` (an empty box); here such a candidate is skipped, so every erased image changes.
Fill modes (timm's words; the inputs are normalised, so N(0, 1) is the data's scale):
``pixel`` per-pixel N(0, 1) noise (DeiT: ``--remode pixel``), ``rand`` one N(0, 1) colour per box,
``const`` zeros (the mean colour).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from raypair.ops.masks import box_mask, inside_box

ERASE_MODES = ("pixel", "rand", "const")


def random_erasing(x: Tensor, p: float, generator: torch.Generator, mode: str = "pixel",
                   area: tuple[float, float] = (0.02, 1 / 3), aspect: tuple[float, float] = (0.3, 1 / 0.3),
                   attempts: int = 10) -> tuple[Tensor, Tensor]:
    """``x [B, C, H, W]`` -> ``(out [B, C, H, W], erased [B] bool)``; ``x`` is not modified.

    Draws, in this order on ``generator``'s device: ``do [B]``, areas ``[B, attempts]``, log
    aspect ratios ``[B, attempts]``, the corner ``[2, B]``, then the fill (``pixel``: ``[B, C, H, W]``,
    ``rand``: ``[B, C, 1, 1]``), so the same generator state gives the same output."""
    _check_args(x, p, mode, area, aspect, attempts)
    b, c, height, width = x.shape
    g, dev = generator, generator.device
    do = torch.rand(b, generator=g, device=dev) < p
    h, w, any_fits = _first_fit(b, height, width, area, aspect, attempts, g)
    erased = do & any_fits
    size = (torch.where(erased, h, 0), torch.where(erased, w, 0))  # an image left alone: an empty box
    box = inside_box(size, height, width, g, check=False)  # the sides fit by construction
    keep = box_mask(*box, height, width, dtype=torch.bool)  # [B, 1, H, W]
    if mode == "pixel":
        fill = torch.randn(b, c, height, width, generator=g, device=dev, dtype=torch.float32)
    elif mode == "rand":
        fill = torch.randn(b, c, 1, 1, generator=g, device=dev, dtype=torch.float32)
    else:
        fill = torch.zeros((), device=dev)
    out = torch.where(keep.to(x.device), x, fill.to(device=x.device, dtype=x.dtype))
    return out, erased.to(x.device)


def _check_args(x: Tensor, p: float, mode: str, area: tuple[float, float], aspect: tuple[float, float],
                attempts: int) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be [B, C, H, W], got shape {tuple(x.shape)}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must lie in [0, 1], got {p}")
    if mode not in ERASE_MODES:
        raise ValueError(f"unknown erase mode {mode!r} (valid: {', '.join(ERASE_MODES)})")
    if not (0.0 < area[0] <= area[1] <= 1.0 and 0.0 < aspect[0] <= aspect[1] and attempts >= 1):
        raise ValueError(f"need 0 < area lo <= hi <= 1, 0 < aspect lo <= hi, attempts >= 1, "
                         f"got area={area} aspect={aspect} attempts={attempts}")


def _first_fit(b: int, height: int, width: int, area: tuple[float, float], aspect: tuple[float, float],
               attempts: int, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Draws the candidates' areas ``[B, attempts]``, then their log aspect ratios; returns each
    image's first fitting candidate's sides ``(h [B], w [B])`` (attempt 0's where none fits) and
    whether any fits ``[B]``."""
    dev = g.device
    target = (area[0] + (area[1] - area[0]) * torch.rand(b, attempts, generator=g, device=dev)) * height * width
    lo, hi = math.log(aspect[0]), math.log(aspect[1])
    ratio = torch.exp(lo + (hi - lo) * torch.rand(b, attempts, generator=g, device=dev))
    hh = torch.round(torch.sqrt(target * ratio)).long()
    ww = torch.round(torch.sqrt(target / ratio)).long()
    fits = (hh >= 1) & (hh < height) & (ww >= 1) & (ww < width)
    first = fits.int().argmax(1, keepdim=True)  # the first fitting attempt (0 where none fits)
    return hh.gather(1, first)[:, 0], ww.gather(1, first)[:, 0], fits.any(1)
