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

    rows = oy[:, None] + torch.arange(h, device=x.device)  # [B, H]
    cols = ox[:, None] + torch.arange(w, device=x.device)  # [B, W]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * pad))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))
