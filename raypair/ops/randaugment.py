"""RandAugment (Cubuk et al. 2020, arXiv 1909.13719) on a uint8 batch, every sample its own ops.

torchvision's ``transforms.RandAugment`` defaults (0.29): ``num_ops=2`` ops per image, each drawn
uniformly from its 14-op space (Identity and AutoAugment's ops less Invert), at magnitude bin 9 of
31, nearest interpolation, fill 0; a signed op's magnitude is negated on a coin. Per sample ``i``
(drawn in this order on the generator's device by :func:`draw_ra`): ``op [i, 0:2] ~ U{0..13}`` then
``sign [i, 0:2] ~ U{0, 1}``; step ``k`` applies ``RA_OPS[op[i, k]]``, negated for a signed op where
``sign[i, k] == 1`` (torchvision draws that coin only for a signed op; drawing it for every step
keeps the batch's draw count fixed). The ops are AutoAugment's batched ``apply_op``.
"""
from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from raypair.ops import image_ops as I
from raypair.ops.autoaugment import OPS, SIGNED, apply_op

RA_OPS = ("Identity",) + OPS[:13]  # torchvision's RandAugment space, in its order
NUM_OPS, MAGNITUDE, RA_BINS = 2, 9, 31


@lru_cache(maxsize=64)
def ra_tables(height: int, width: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """``(index into OPS [14] (-1: Identity), magnitude [14] float64, signed [14])`` on ``device``:
    torchvision's ``_augmentation_space(31, (H, W))`` at bin 9 (float32 values)."""
    lin = lambda hi: torch.linspace(0.0, hi, RA_BINS)[MAGNITUDE]  # noqa: E731
    rows = {"ShearX": lin(0.3), "ShearY": lin(0.3), "TranslateX": lin(150.0 / 331.0 * width),
            "TranslateY": lin(150.0 / 331.0 * height), "Rotate": lin(30.0), "Brightness": lin(0.9),
            "Color": lin(0.9), "Contrast": lin(0.9), "Sharpness": lin(0.9),
            "Posterize": (8 - (torch.arange(RA_BINS) / ((RA_BINS - 1) / 4)).round().int())[MAGNITUDE].float(),
            "Solarize": torch.linspace(255.0, 0.0, RA_BINS)[MAGNITUDE]}
    mags = torch.stack([rows.get(op, torch.tensor(0.0)) for op in RA_OPS]).double()
    index = torch.tensor([OPS.index(op) if op in OPS else -1 for op in RA_OPS])
    signed = torch.tensor([op in SIGNED for op in RA_OPS])
    return index.to(device), mags.to(device), signed.to(device)


def draw_ra(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(op [n, 2] into RA_OPS, sign [n, 2])`` on the generator's device, in that order."""
    g, dev = generator, generator.device
    return (torch.randint(len(RA_OPS), (n, NUM_OPS), generator=g, device=dev),
            torch.randint(2, (n, NUM_OPS), generator=g, device=dev))


def randaugment(x: Tensor, generator: torch.Generator) -> Tensor:
    """``x [B, C, H, W]`` uint8 (C = 1 or 3, H, W > 2) -> RandAugmented ``[B, C, H, W]`` uint8."""
    op, sign = draw_ra(x.shape[0], generator)
    return apply_ra(x, op.to(x.device), sign.to(x.device))


def apply_ra(x: Tensor, op: Tensor, sign: Tensor) -> Tensor:
    """Sample ``i`` gets the ops ``RA_OPS[op[i, k]]`` in order, signed by ``sign[i, k]``."""
    I._check(x)
    if x.shape[1] not in (1, 3) or min(x.shape[-2:]) <= 2:
        raise ValueError(f"RandAugment needs 1 or 3 channels and H, W > 2, got {tuple(x.shape)}")
    index, mags, signed = ra_tables(x.shape[-2], x.shape[-1], x.device)
    for k in range(op.shape[1]):
        o = op[:, k]
        mag = torch.where(signed[o] & (sign[:, k] == 1), -mags[o], mags[o])
        x = apply_op(x, index[o].clamp_min(0), mag, index[o] >= 0)
    return x
