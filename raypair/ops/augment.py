"""Batched image augmentation: every op is a tensor function, randomness from an explicit generator.

Anchor: airbench ``airbench/utils.py`` (``batch_crop``, ``batch_flip_lr``): the whole batch is
augmented by gathers, never by a per-sample Python loop.
"""
from __future__ import annotations

from typing import Union

import torch
from torch import Tensor


def pad_crop_flip(x: Tensor, pad: int, generator: torch.Generator, fill: Union[float, Tensor] = 0) -> Tensor:
    """Pad by ``pad`` pixels with ``fill``, crop a random ``H x W`` window, flip it left-right with p=0.5.

    ``x``: ``[B, C, H, W]`` of any dtype -> ``[B, C, H, W]``, same dtype and device. ``fill`` is a
    number or a per-channel ``[C]`` (or 0-d) tensor in ``x``'s units (0 = black for uint8 pixels).
    Per sample ``i``: ``oy[i], ox[i] ~ U{0..2*pad}`` then ``flip[i] ~ Bernoulli(0.5)``, drawn in that
    order on ``generator``'s device, so that
    ``out[i] == padded[i, :, oy:oy+H, ox:ox+W]`` (columns reversed where ``flip[i]``).
    """
    if x.dim() != 4:
        raise ValueError(f"x must be [B, C, H, W], got shape {tuple(x.shape)}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    b, c, h, w = x.shape
    g_dev = generator.device
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=g_dev).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=g_dev).to(x.device)
    flip = (torch.rand(b, generator=generator, device=g_dev) < 0.5).to(x.device)

    if isinstance(fill, Tensor):  # on x's device already (a copy here would wait for the device)
        padded = fill.to(x.device, x.dtype).reshape(1, -1, 1, 1).expand(b, c, h + 2 * pad, w + 2 * pad).clone()
    else:  # a number: a fill kernel, no tensor made from host data
        padded = x.new_full((b, c, h + 2 * pad, w + 2 * pad), fill)
    padded[:, :, pad:pad + h, pad:pad + w] = x

    return _window(padded, oy, ox, flip, h, w)


def crop_flip(x: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """A random ``size x size`` window of each image, flipped left-right with p=0.5 (no padding):
    ``[B, C, H, W]`` -> ``[B, C, size, size]``. Per sample ``oy ~ U{0..H-size}``, ``ox ~ U{0..W-size}``
    then ``flip ~ Bernoulli(0.5)``, in that order on ``generator``'s device (PairTraining's RF at
    224 px: a random 224 crop of the 256-px resize, methods.md §5.3)."""
    if x.dim() != 4 or size > min(x.shape[2:]):
        raise ValueError(f"x must be [B, C, H, W] with H, W >= size, got shape {tuple(x.shape)} and size {size}")
    b, _, h, w = x.shape
    g_dev = generator.device
    oy = torch.randint(0, h - size + 1, (b,), generator=generator, device=g_dev).to(x.device)
    ox = torch.randint(0, w - size + 1, (b,), generator=generator, device=g_dev).to(x.device)
    flip = (torch.rand(b, generator=generator, device=g_dev) < 0.5).to(x.device)
    return _window(x, oy, ox, flip, size, size)


def _window(x: Tensor, oy: Tensor, ox: Tensor, flip: Tensor, h: int, w: int) -> Tensor:
    """``x[i, :, oy:oy+h, ox:ox+w]`` per sample, columns reversed where ``flip[i]``."""
    b, c, _, full_w = x.shape
    rows = oy[:, None] + torch.arange(h, device=x.device)  # [B, h]
    cols = ox[:, None] + torch.arange(w, device=x.device)  # [B, w]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    out = x.gather(2, rows[:, None, :, None].expand(b, c, h, full_w))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))
