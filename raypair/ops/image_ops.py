"""Batched uint8 image ops with a per-sample magnitude, the building blocks of AutoAugment.

Each op maps ``x [B, C, H, W]`` uint8 and a per-sample magnitude ``[B]`` to ``[B, C, H, W]`` uint8
on ``x``'s device, with no per-sample Python loop and no host sync. Each reproduces the
tensor path of torchvision's functional op (``torchvision/transforms/_functional_tensor.py``,
0.29) pixel for pixel, sample by sample (tests/test_autoaugment.py compares them):
- ``affine``: torchvision's inverse affine matrix (``_get_inverse_affine_matrix``) per sample, one
  ``grid_sample`` (nearest, zero padding, align_corners=False) over the batch; float32 grid as there.
- ``blend``: ``(r x + (1 - r) d).clamp(0, 255)`` truncated to uint8 (torchvision's ``_blend``),
  with the degenerate image ``d`` of brightness (0), colour (grey), contrast (grey mean) or
  sharpness (3x3 smoothing inside a 1-pixel border).
- ``posterize`` (keep ``bits`` high bits), ``solarize`` (invert pixels >= threshold), ``autocontrast``
  (per channel min-max stretch), ``equalize`` (per channel histogram equalisation, PIL's rule),
  ``invert``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check(x: Tensor) -> None:
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"x must be uint8 [B, C, H, W], got {x.dtype} {tuple(x.shape)}")


def _col(v: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    return v.to(dtype).reshape(-1, 1, 1, 1)


# ------------------------------------------------------------------------------------ geometry
def inverse_affine(angle: Tensor, tx: Tensor, ty: Tensor, shear_x: Tensor, shear_y: Tensor,
                   cx: Tensor, cy: Tensor) -> Tensor:
    """torchvision's ``_get_inverse_affine_matrix`` (scale 1) per sample: angles and shears in
    degrees, translation and centre in pixels (centre relative to the image centre), all ``[B]``
    float64 -> ``theta [B, 2, 3]`` float64, mapping output pixel coordinates to input ones."""
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear_x), torch.deg2rad(shear_y)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -torch.cos(rot - sy) * torch.tan(sx) / torch.cos(sy) - torch.sin(rot)
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = -torch.sin(rot - sy) * torch.tan(sx) / torch.cos(sy) + torch.cos(rot)
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = m0 * (-cx - tx) + m1 * (-cy - ty) + cx
    m5 = m3 * (-cx - tx) + m4 * (-cy - ty) + cy
    return torch.stack([m0, m1, m2, m3, m4, m5], 1).reshape(-1, 2, 3)


def affine(x: Tensor, theta: Tensor) -> Tensor:
    """Warp each sample by its inverse matrix ``theta [B, 2, 3]`` (nearest neighbour; outside
    pixels are 0), as torchvision's tensor ``affine`` / ``rotate`` without ``expand``."""
    _check(x)
    b, _, h, w = x.shape
    dev = x.device
    base = torch.empty(1, h, w, 3, dtype=torch.float32, device=dev)
    base[..., 0].copy_(torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, steps=w, device=dev))
    base[..., 1].copy_(torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, steps=h, device=dev).unsqueeze(-1))
    base[..., 2].fill_(1)
    t = theta.to(dev, torch.float32).transpose(1, 2)  # [B, 3, 2]; columns / (w/2, h/2), no tensor from host data
    scaled = torch.stack([t[..., 0] / (0.5 * w), t[..., 1] / (0.5 * h)], -1)
    grid = base.view(1, h * w, 3).expand(b, -1, -1).bmm(scaled).view(b, h, w, 2)
    out = F.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.round().to(torch.uint8)


# --------------------------------------------------------------------------------------- colour
def grayscale(x: Tensor) -> Tensor:
    """``[B, 3, H, W]`` -> ``[B, 1, H, W]`` uint8 (ITU-R 601-2 luma, truncated; 1 channel: a copy)."""
    if x.shape[1] == 1:
        return x.clone()
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).to(torch.uint8).unsqueeze(1)


def blurred(x: Tensor) -> Tensor:
    """Sharpness's degenerate image: the 3x3 kernel [[1,1,1],[1,5,1],[1,1,1]] / 13 inside a
    1-pixel border, rounded; the border is ``x`` (an image of side <= 2 is all border). Computed
    as an integer sum S (9 shifted views + 4 x centre): S / 13 is never a half, so
    ``(2 S + 13) // 26`` is torchvision's rounded float conv exactly (and 5x faster on a CPU)."""
    h, w = x.shape[-2:]
    out = x.clone()
    if min(h, w) <= 2:
        return out
    xi = x.to(torch.int32)
    centre = xi[..., 1:-1, 1:-1]
    s = 4 * centre
    for i in range(3):  # the 9 offsets of the kernel, not a loop over samples
        for j in range(3):
            s = s + xi[..., i:i + h - 2, j:j + w - 2]
    out[..., 1:-1, 1:-1] = ((2 * s + 13) // 26).to(torch.uint8)
    return out


def blend(x: Tensor, degenerate: Tensor, ratio: Tensor) -> Tensor:
    """``(ratio x + (1 - ratio) degenerate).clamp(0, 255)`` truncated to uint8; ``ratio [B]``
    (float64: ``1 - ratio`` is formed before the float32 cast, as torchvision's Python float is)."""
    r = ratio.to(torch.float64)
    return (_col(r) * x + _col(1.0 - r) * degenerate).clamp(0, 255).to(torch.uint8)


def contrast_mean(x: Tensor) -> Tensor:
    """Contrast's degenerate image: each sample's mean grey level ``[B, 1, 1, 1]`` float32."""
    return grayscale(x).float().mean(dim=(-3, -2, -1), keepdim=True)


def posterize(x: Tensor, bits: Tensor) -> Tensor:
    """Keep the ``bits [B]`` (0..8) most significant bits of every pixel."""
    _check(x)
    keep = (256 - torch.pow(2, 8 - bits.to(x.device, torch.int64))).to(torch.uint8)
    return x & keep.reshape(-1, 1, 1, 1)


def solarize(x: Tensor, threshold: Tensor) -> Tensor:
    """Invert every pixel ``>= threshold [B]``."""
    _check(x)
    return torch.where(x >= _col(threshold.to(x.device)), 255 - x, x)


def invert(x: Tensor) -> Tensor:
    _check(x)
    return 255 - x


def autocontrast(x: Tensor) -> Tensor:
    """Stretch each channel of each sample to [0, 255] (a constant channel is left as it is)."""
    _check(x)
    lo = x.amin(dim=(-2, -1), keepdim=True).float()
    hi = x.amax(dim=(-2, -1), keepdim=True).float()
    flat = hi == lo
    scale = torch.where(flat, 1.0, 255.0 / (hi - lo))
    lo = torch.where(flat, 0.0, lo)
    return ((x - lo) * scale).clamp(0, 255).to(torch.uint8)


def equalize(x: Tensor) -> Tensor:
    """Histogram equalisation of each channel of each sample (PIL's rule, as torchvision):
    ``step = (n - count of the highest occupied level) // 255``; level v maps to
    ``(cumcount(< v) + step // 2) // step``; a channel with ``step = 0`` is left as it is."""
    _check(x)
    b, c, h, w = x.shape
    flat = x.reshape(b * c, h * w).long()
    hist = torch.zeros(b * c, 256, dtype=torch.int64, device=x.device).scatter_add_(1, flat, torch.ones_like(flat))
    top = (torch.arange(256, device=x.device) * (hist > 0)).argmax(1, keepdim=True)  # highest occupied level
    step = (h * w - hist.gather(1, top)) // 255  # [B*C, 1]
    safe = step.clamp(min=1)
    lut = (hist.cumsum(1) + safe // 2) // safe
    lut = F.pad(lut, [1, 0])[:, :-1].clamp(0, 255)
    out = torch.where(step > 0, lut.gather(1, flat), flat)
    return out.to(torch.uint8).reshape(b, c, h, w)


def shear_angle(magnitude: Tensor) -> Tensor:
    """AutoAugment's shear: torchvision passes ``degrees(atan(m))``, so the shear factor is ``m``."""
    return torch.rad2deg(torch.atan(magnitude.to(torch.float64)))

