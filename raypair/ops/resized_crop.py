"""The ImageNet-style pipeline as batched tensor ops: RandomResizedCrop + flip for training, resize +
centre crop for evaluation. Randomness from an explicit generator, no per-sample Python loop.

Boxes follow torchvision's ``RandomResizedCrop.get_params`` rule, vectorised: per sample 10 tries of
``area = A * U(scale)`` and ``ratio = exp(U(log ratio))``, ``w = round(sqrt(area * ratio))``,
``h = round(sqrt(area / ratio))``; the first try with ``0 < w <= W`` and ``0 < h <= H`` is taken,
its corner ``top ~ U{0..H-h}``, ``left ~ U{0..W-w}``; a sample with no valid try takes the
centre crop of the whole image clamped to the ratio range. All tries are drawn at once, so the
draw order is fixed (:func:`rrc_boxes`). The crop-and-resize of the whole batch is one
``grid_sample`` with per-sample sampling points equal to ``interpolate``'s (bilinear,
``align_corners=False``, no antialias, each crop's edge pixels repeated), i.e.
``torchvision.transforms.v2.functional.resized_crop(..., antialias=False)`` per sample.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

TRIES = 10  # torchvision's get_params


def _check_range(name: str, pair: Sequence[float], low_open: bool) -> tuple[float, float]:
    lo, hi = float(pair[0]), float(pair[1])
    if len(pair) != 2 or not lo <= hi or lo <= 0 or (low_open and hi > 1):
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high{' <= 1' if low_open else ''}, "
                         f"got {tuple(pair)}")
    return lo, hi


def boxes_from_uniforms(u_area: Tensor, u_ratio: Tensor, u_top: Tensor, u_left: Tensor, height: int, width: int,
                        scale: Sequence[float], ratio: Sequence[float]) -> Tensor:
    """The boxes ``[B, 4]`` (top, left, h, w; int64) that ``get_params``' rule picks from uniform
    draws in [0, 1): ``u_area, u_ratio [B, TRIES]`` and ``u_top, u_left [B]`` (float64 on one device).
    A try's ``U(a, b)`` is ``a + u (b - a)``; the corner is ``floor(u * (H - h + 1))``."""
    s_lo, s_hi = _check_range("scale", scale, True)
    r_lo, r_hi = _check_range("ratio", ratio, False)
    area = height * width * (s_lo + u_area * (s_hi - s_lo))
    log_lo, log_hi = math.log(r_lo), math.log(r_hi)
    aspect = torch.exp(log_lo + u_ratio * (log_hi - log_lo))
    w = torch.sqrt(area * aspect).round().long()
    h = torch.sqrt(area / aspect).round().long()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(ok.any(1), ok.long().argmax(1), 0)  # the first valid try
    w, h = w.gather(1, first[:, None])[:, 0], h.gather(1, first[:, None])[:, 0]
    top = (u_top * (height - h + 1)).floor().long().clamp(max=height - h)
    left = (u_left * (width - w + 1)).floor().long().clamp(max=width - w)
    fh, fw = _fallback(height, width, r_lo, r_hi)
    found = ok.any(1)
    h, w = torch.where(found, h, fh), torch.where(found, w, fw)
    top = torch.where(found, top, (height - fh) // 2)
    left = torch.where(found, left, (width - fw) // 2)
    return torch.stack([top, left, h, w], 1)


def _fallback(height: int, width: int, r_lo: float, r_hi: float) -> tuple[int, int]:
    """get_params' fallback ``(h, w)``: the whole image, clamped to the ratio range."""
    in_ratio = width / height
    if in_ratio < r_lo:
        return int(round(width / r_lo)), width
    if in_ratio > r_hi:
        return height, int(round(height * r_hi))
    return height, width


def rrc_boxes(n: int, height: int, width: int, scale: Sequence[float], ratio: Sequence[float],
              generator: torch.Generator) -> Tensor:
    """``n`` RandomResizedCrop boxes ``[n, 4]`` (top, left, h, w) on the generator's device. Draws,
    float64 in this order: ``u_area [n, 10]``, ``u_ratio [n, 10]``, ``u_top [n]``, ``u_left [n]``."""
    dev = generator.device
    draws = [torch.rand(shape, generator=generator, device=dev, dtype=torch.float64)
             for shape in ((n, TRIES), (n, TRIES), (n,), (n,))]
    return boxes_from_uniforms(*draws, height, width, scale, ratio)


def _axis(start: Tensor, length: Tensor, out: int, full: int) -> Tensor:
    """``interpolate``'s source coordinates ``[B, out]`` of a crop ``[start, start + length)``,
    clamped to the crop, as ``grid_sample``'s normalised coordinates over ``full`` pixels."""
    j = torch.arange(out, device=start.device, dtype=torch.float64)
    src = (j[None] + 0.5) * (length[:, None].double() / out) - 0.5
    src = torch.minimum(src.clamp_min(0), (length[:, None] - 1).double()) + start[:, None].double()
    return ((2 * src + 1) / full - 1).float()


def resized_crop(x: Tensor, boxes: Tensor, size: int, flip: Optional[Tensor] = None) -> Tensor:
    """Crop box ``boxes[i]`` (top, left, h, w) of ``x[i]`` and resize it to ``size x size``
    (bilinear, align_corners=False, no antialias), columns reversed where ``flip[i]``.
    ``x [B, C, H, W]`` -> ``[B, C, size, size]``, same dtype (uint8: rounded, as torchvision)."""
    if x.dim() != 4 or boxes.shape != (len(x), 4):
        raise ValueError(f"need x [B, C, H, W] and boxes [B, 4], got {tuple(x.shape)} and {tuple(boxes.shape)}")
    b, _, height, width = x.shape
    boxes = boxes.to(x.device)
    gy = _axis(boxes[:, 0], boxes[:, 2], size, height)  # [B, size]
    gx = _axis(boxes[:, 1], boxes[:, 3], size, width)
    if flip is not None:
        gx = torch.where(flip.to(x.device)[:, None], gx.flip(1), gx)
    grid = torch.stack([gx[:, None, :].expand(b, size, size), gy[:, :, None].expand(b, size, size)], -1)
    src = x if x.is_floating_point() else x.float()
    out = F.grid_sample(src, grid.to(src.dtype), mode="bilinear", padding_mode="border", align_corners=False)
    return out if x.is_floating_point() else out.round_().clamp_(0, 255).to(x.dtype)


def random_resized_crop_flip(x: Tensor, size: int, scale: Sequence[float], ratio: Sequence[float],
                             generator: torch.Generator) -> Tensor:
    """RandomResizedCrop to ``size`` then a left-right flip with p=0.5, per sample. Draws: the
    boxes (:func:`rrc_boxes`), then ``flip [B] = rand < 0.5``, on ``generator``'s device."""
    boxes = rrc_boxes(len(x), x.shape[2], x.shape[3], scale, ratio, generator)
    flip = torch.rand(len(x), generator=generator, device=generator.device) < 0.5
    return resized_crop(x, boxes, size, flip)


def resize_center_crop(x: Tensor, resize_size: int, crop_size: int) -> Tensor:
    """torchvision's ``Resize(resize_size)`` (shorter side, bilinear, antialias) then
    ``CenterCrop(crop_size)`` of a whole batch at once: ``[B, C, H, W]`` -> ``[B, C, crop, crop]``."""
    from torchvision.transforms.v2 import functional as TF

    if crop_size > resize_size:
        raise ValueError(f"crop_size must be <= resize_size, got {crop_size} > {resize_size}")
    return TF.center_crop(TF.resize(x, [resize_size], antialias=True), [crop_size, crop_size])
