"""Boxes and masks (methods.md §1-§6): the one box-mask primitive and the box placements built on it.

``box_mask`` is the only place a box becomes pixels; Cutout, CutMix, D-Mask, D-Mix and Random
Erasing all call it. The placements differ only in how they draw a box, and those differences are
parameters here, not copies:

- ``centred_box``: centre given, ``[c - s//2, c + s//2)`` (Cutout's and CutMix's reference code: an
  odd side ``s`` covers ``s - 1``; ``trim_odd=False`` keeps ``s``, D-Mask), clipped to the image;
- ``cutmix_box``: clovaai's ``rand_bbox``, sides ``int(W sqrt(area))``, centre uniform, clipped;
- ``inside_box``: given sides placed uniformly fully inside (D-Mix, Random Erasing's corner rule);
- ``cutout_mask``: ``n`` centred squares per image, centres uniform (Cutout, D-Mask).

Pure tensor functions: the device comes from the inputs, randomness from an explicit
``torch.Generator`` (which must live on that device), and bad arguments raise ValueError with the
received value.
"""
from __future__ import annotations

from typing import Union

import torch
from torch import Tensor

Box = tuple[Tensor, Tensor, Tensor, Tensor]  # (top, left, h, w), int64, each [B] or [B, N]


def box_mask(top: Tensor, left: Tensor, h: Tensor, w: Tensor, height: int, width: int,
             dtype: torch.dtype = torch.float32) -> Tensor:
    """``keep [B, 1, H, W]`` in ``dtype``: 0 (False) inside a box ``[top, top+h) x [left, left+w)``,
    1 (True) elsewhere. Boxes ``[B]`` (one per image) or ``[B, N]`` (N per image, their union; N may
    be 0). A box reaching past the border covers only its part inside the image; ``h = 0`` covers
    nothing. One broadcast comparison, no per-sample loop."""
    t, l_, hh, ww = (v if v.dim() == 2 else v[:, None] for v in (top, left, h, w))
    yy = torch.arange(height, device=top.device)[:, None]  # [H, 1]
    xx = torch.arange(width, device=top.device)[None, :]  # [1, W]
    t, l_, hh, ww = (v[..., None, None] for v in (t, l_, hh, ww))  # [B, N, 1, 1]
    inside = ((yy >= t) & (yy < t + hh) & (xx >= l_) & (xx < l_ + ww)).any(1, keepdim=True)
    return (~inside).to(dtype)


def centred_box(cy: Tensor, cx: Tensor, side_h: Union[int, Tensor], side_w: Union[int, Tensor], height: int,
                width: int, trim_odd: bool = True) -> Box:
    """The box of sides ``side_h x side_w`` around centres ``(cy, cx)`` (any shape), clipped to the
    image: ``[c - s//2, c + s//2)`` with ``trim_odd`` (Cutout's and CutMix's reference code, an odd
    side loses one pixel), else ``[c - s//2, c - s//2 + s)``. Returns ``(top, left, h, w)`` like ``cy``."""
    y1, x1 = cy - side_h // 2, cx - side_w // 2
    y2, x2 = (cy + side_h // 2, cx + side_w // 2) if trim_odd else (y1 + side_h, x1 + side_w)
    y1, y2 = y1.clamp(0, height), y2.clamp(0, height)
    x1, x2 = x1.clamp(0, width), x2.clamp(0, width)
    return y1, x1, y2 - y1, x2 - x1


def side_for_area(fraction: Union[float, Tensor], size: int) -> Tensor:
    """``round(sqrt(fraction) * size)`` in float64: the side of a square (or box) covering that area fraction."""
    return torch.round(torch.sqrt(torch.as_tensor(fraction, dtype=torch.float64)) * size).long()


def area_lambda(h: Tensor, w: Tensor, height: int, width: int) -> Tensor:
    """The area-corrected ratio ``1 - h w / (H W)`` of the pixels kept, float32 like ``h``."""
    return 1.0 - (h * w).float() / (height * width)


def cutmix_box(area: Tensor, height: int, width: int, generator: torch.Generator, check: bool = True) -> Box:
    """CutMix's box per entry of ``area`` (clovaai ``rand_bbox``, whose cut ratio is
    ``sqrt(1 - lam) = sqrt(area)``): sides ``int(W sqrt(area))`` x ``int(H sqrt(area))`` (truncated,
    as the reference), centre ``cx`` then ``cy`` uniform over the image, corners clipped, so the box
    may be smaller at a border. ``area [B]`` float in [0, 1] -> ``(top, left, h, w)``, int64 ``[B]``.
    ``check=False`` skips the range check, which reads a value on the host (a training step's areas
    are valid by construction)."""
    if check and ((area < 0) | (area > 1)).any():
        raise ValueError(f"area must lie in [0, 1], got min {area.min().item()} max {area.max().item()}")
    dev = area.device
    r = torch.sqrt(area.double())
    cut_w, cut_h = (width * r).long(), (height * r).long()
    cx = torch.randint(width, area.shape, generator=generator, device=generator.device).to(dev)
    cy = torch.randint(height, area.shape, generator=generator, device=generator.device).to(dev)
    return centred_box(cy, cx, cut_h, cut_w, height, width)


def inside_box(size: tuple[Tensor, Tensor], height: int, width: int, generator: torch.Generator,
               check: bool = True) -> Box:
    """A box of ``size = (h [B], w [B])`` placed uniformly fully inside the image (D-Mix; timm's
    Random Erasing): one ``U[0, 1) [2, B]`` draw, ``top = floor(u0 (H - h + 1))``, likewise ``left``.
    Returns ``(top, left, h, w)``, int64 ``[B]`` each. ``check=False``: as ``cutmix_box``."""
    h, w = size
    if check and ((h < 0) | (h > height) | (w < 0) | (w > width)).any():
        raise ValueError(f"box sides must fit in {height}x{width}, got h {h.tolist()} w {w.tolist()}")
    u = torch.rand(2, h.shape[0], generator=generator, device=generator.device).to(h.device)
    top = (u[0] * (height - h + 1)).long().clamp(max=height - h)  # clamp: u * (n + 1) may round up to n + 1
    left = (u[1] * (width - w + 1)).long().clamp(max=width - w)
    return top, left, h, w


def cutout_mask(batch: int, height: int, width: int, n_holes: int, length: Union[int, Tensor],
                generator: torch.Generator, trim_odd: bool = True) -> Tensor:
    """Cutout (uoguelph-mlrg) holes, float ``[B, 1, H, W]`` (1 = keep): per hole a centre, ``cy [B, n]``
    then ``cx [B, n]`` uniform over the image, and the square ``centred_box`` of side ``length``
    around it, clipped. ``trim_odd`` (Cutout's reference): an odd length cuts ``length - 1``; D-Mask
    passes False to keep the side ``length``. Both give the same mask for an even length. ``length``
    may be a 0-d int64 tensor (D-Mask's scheduled side, so a compiled step does not specialise on it)."""
    if n_holes < 0 or (not isinstance(length, Tensor) and length < 0):  # a 0-d tensor length: unchecked
        raise ValueError(f"need n_holes >= 0 and length >= 0, got n_holes={n_holes} length={length}")
    dev = generator.device
    cy = torch.randint(height, (batch, n_holes), generator=generator, device=dev)
    cx = torch.randint(width, (batch, n_holes), generator=generator, device=dev)
    return box_mask(*centred_box(cy, cx, length, length, height, width, trim_odd), height, width)
