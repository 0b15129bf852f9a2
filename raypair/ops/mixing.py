"""Mixing primitives (methods.md §0-§4): ratios, partners, boxes and masks, image/label mixing, BC/BC+.

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

Ratio = Union[float, Tensor]  # a scalar, or one value per sample [B]
PARTNER_RULES = ("perm", "flip", "roll", "diffclass")


# ------------------------------------------------------------------------------------ ratios
def sample_beta(alpha: float, n: int, generator: torch.Generator) -> Tensor:
    """``n`` draws of Beta(alpha, alpha) as float32 ``[n]`` on the generator's device.

    torch's Beta sampler takes no generator, so numpy draws them from a seed taken off
    ``generator``: the same generator state gives the same values on every device."""
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    values = np.random.default_rng(seed).beta(alpha, alpha, size=n).astype(np.float32)
    return torch.from_numpy(values).to(generator.device)


def sample_uniform(low: float, high: float, n: int, generator: torch.Generator) -> Tensor:
    """``n`` draws of U[low, high] as float32 ``[n]`` on the generator's device."""
    if not low <= high:
        raise ValueError(f"need low <= high, got [{low}, {high}]")
    return low + (high - low) * torch.rand(n, generator=generator, device=generator.device)


def _per_sample(lam: Ratio, like: Tensor) -> Tensor:
    """A scalar or ``[B]`` ratio shaped to broadcast against ``like`` ([B, ...])."""
    lam = torch.as_tensor(lam, dtype=like.dtype, device=like.device)
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


# ------------------------------------------------------------------------------ boxes, masks
def box_mask(top: Tensor, left: Tensor, h: Tensor, w: Tensor, height: int, width: int) -> Tensor:
    """float ``[B, 1, H, W]``: 0 inside box ``[top, top+h) x [left, left+w)``, 1 outside (keep)."""
    yy = torch.arange(height, device=top.device)[None, :, None]
    xx = torch.arange(width, device=top.device)[None, None, :]
    t, l_, hh, ww = (v.reshape(-1, 1, 1) for v in (top, left, h, w))
    inside = (yy >= t) & (yy < t + hh) & (xx >= l_) & (xx < l_ + ww)
    return (~inside).float()[:, None]


def cutmix_box(lam: Tensor, height: int, width: int, generator: torch.Generator) -> tuple[Tensor, ...]:
    """CutMix's box per sample (clovaai ``rand_bbox``): cut ratio ``sqrt(1 - lam)``, sides
    ``int(W r)`` x ``int(H r)``, centre uniform, corners clipped to the image.
    ``lam [B]`` -> ``(top, left, h, w)``, int64 ``[B]`` each."""
    if ((lam < 0) | (lam > 1)).any():
        raise ValueError(f"lam must lie in [0, 1], got min {lam.min().item()} max {lam.max().item()}")
    dev = lam.device
    r = torch.sqrt(1.0 - lam.double())
    cut_w, cut_h = (width * r).long(), (height * r).long()  # int() truncation, as in the reference
    cx = torch.randint(width, lam.shape, generator=generator, device=generator.device).to(dev)
    cy = torch.randint(height, lam.shape, generator=generator, device=generator.device).to(dev)
    x1, x2 = (cx - cut_w // 2).clamp(0, width), (cx + cut_w // 2).clamp(0, width)
    y1, y2 = (cy - cut_h // 2).clamp(0, height), (cy + cut_h // 2).clamp(0, height)
    return y1, x1, y2 - y1, x2 - x1


def inside_box(size: Tensor, height: int, width: int, generator: torch.Generator) -> tuple[Tensor, ...]:
    """A box of ``size = (h [B], w [B])`` placed uniformly fully inside the image (D-Mix):
    ``(top, left, h, w)``, int64 ``[B]`` each."""
    h, w = size
    if ((h < 0) | (h > height) | (w < 0) | (w > width)).any():
        raise ValueError(f"box sides must fit in {height}x{width}, got h {h.tolist()} w {w.tolist()}")
    u = torch.rand(2, h.shape[0], generator=generator, device=generator.device).to(h.device)
    top = (u[0] * (height - h + 1)).long().clamp(max=height - h)
    left = (u[1] * (width - w + 1)).long().clamp(max=width - w)
    return top, left, h, w


def area_lambda(h: Tensor, w: Tensor, height: int, width: int) -> Tensor:
    """The area-corrected ratio ``1 - h w / (H W)`` of the pixels kept, float32 ``[B]``."""
    return 1.0 - (h * w).float() / (height * width)


def cutout_mask(batch: int, height: int, width: int, n_holes: int, length: int,
                generator: torch.Generator) -> Tensor:
    """Cutout (uoguelph-mlrg): per hole a centre ``(cy, cx)`` uniform over the image, the square
    ``[c - L//2, c + L//2)`` clipped and zeroed. float ``[B, 1, H, W]``, 1 = keep."""
    if n_holes < 0 or length < 0:
        raise ValueError(f"need n_holes >= 0 and length >= 0, got n_holes={n_holes} length={length}")
    dev = generator.device
    cy = torch.randint(height, (batch, n_holes), generator=generator, device=dev)
    cx = torch.randint(width, (batch, n_holes), generator=generator, device=dev)
    y1, y2 = (cy - length // 2).clamp(0, height), (cy + length // 2).clamp(0, height)
    x1, x2 = (cx - length // 2).clamp(0, width), (cx + length // 2).clamp(0, width)
    yy = torch.arange(height, device=dev)[None, None, :, None]
    xx = torch.arange(width, device=dev)[None, None, None, :]
    inside = ((yy >= y1[..., None, None]) & (yy < y2[..., None, None])
              & (xx >= x1[..., None, None]) & (xx < x2[..., None, None])).any(1)
    return (~inside).float()[:, None]


# ----------------------------------------------------------------------------------- mixing
def mix(a: Tensor, b: Tensor, lam: Ratio) -> Tensor:
    """``lam a + (1 - lam) b`` for images ``[B, C, H, W]`` or targets ``[B, K]``; ``lam`` scalar or ``[B]``."""
    if a.shape != b.shape:
        raise ValueError(f"cannot mix shapes {tuple(a.shape)} and {tuple(b.shape)}")
    lam = _per_sample(lam, a)
    return lam * a + (1 - lam) * b


def paste(a: Tensor, b: Tensor, keep: Tensor) -> Tensor:
    """``keep a + (1 - keep) b`` with a mask ``keep [B, 1, H, W]`` (1 keeps ``a``)."""
    return keep * a + (1 - keep) * b


def image_std(x: Tensor) -> Tensor:
    """Population std over all ``C x H x W`` values of each image: ``[B, C, H, W] -> [B]``."""
    return x.flatten(1).std(1, unbiased=False)


def bc_mix(x1: Tensor, x2: Tensor, r: Tensor, plus: bool) -> Tensor:
    """Between-class mixing (P2). BC: ``r x1 + (1-r) x2``. BC+: ``p = 1 / (1 + s1/s2 (1-r)/r)``,
    ``(p x1 + (1-p) x2) / sqrt(p^2 + (1-p)^2)`` with ``s_i`` the per-image std (the inputs are
    expected zero-mean per image). ``r [B]`` in (0, 1]; BC+ is symmetric under
    ``(x1, x2, r) <-> (x2, x1, 1-r)``."""
    if ((r <= 0) | (r > 1)).any():
        raise ValueError(f"r must lie in (0, 1], got min {r.min().item()} max {r.max().item()}")
    if not plus:
        return mix(x1, x2, r)
    s1, s2 = image_std(x1).clamp_min(1e-8), image_std(x2).clamp_min(1e-8)
    p = 1.0 / (1.0 + s1 / s2 * (1.0 - r) / r)
    return mix(x1, x2, p) / _per_sample(torch.sqrt(p**2 + (1 - p) ** 2), x1)


def side_for_area(fraction: Union[float, Tensor], size: int) -> Tensor:
    """``round(sqrt(fraction) * size)``: the side of a square (or box) covering that area fraction."""
    return torch.round(torch.sqrt(torch.as_tensor(fraction, dtype=torch.float64)) * size).long()


def check_unit(name: str, value: float) -> None:
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
