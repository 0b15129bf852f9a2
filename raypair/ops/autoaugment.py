"""AutoAugment (Cubuk et al. 2019, arXiv 1805.09501) on a uint8 batch, every sample its own sub-policy.

The policies, magnitude bins and op semantics are torchvision's ``transforms.AutoAugment`` (0.29;
``AutoAugmentPolicy.CIFAR10`` / ``IMAGENET``, 10 magnitude bins, nearest interpolation, fill 0).
Per sample ``i`` (drawn in this order on the generator's device by :func:`draw`): a sub-policy
``s[i] ~ U{0..24}``, two uniforms ``u[i, 0:2]`` and two signs ``sign[i, 0:2] ~ U{0, 1}``. Its two
(op, p, bin) steps are applied in order, step ``k`` when ``u[i, k] <= p``, with the bin's magnitude
negated for a signed op when ``sign[i, k] == 0``: torchvision's ``AutoAugment.forward`` for one
image, sample by sample. Batched (:func:`apply_subpolicies`): per step, one affine warp carries
every geometric op (each sample its own matrix, identity for the others), one blend every
colour-balance op, and posterize / solarize / autocontrast / equalize / invert are computed over the
batch and selected per sample with ``torch.where``: no per-sample Python loop, no host sync.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional

import torch
from torch import Tensor

from raypair.ops import image_ops as I

OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
       "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert")
SIGNED = frozenset(OPS[:9])
_N = None  # an op without a magnitude

POLICIES: dict[str, list[tuple[tuple[str, float, Optional[int]], tuple[str, float, Optional[int]]]]] = {
    "imagenet": [
        (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)), (("Solarize", 0.6, 5), ("AutoContrast", 0.6, _N)),
        (("Equalize", 0.8, _N), ("Equalize", 0.6, _N)), (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
        (("Equalize", 0.4, _N), ("Solarize", 0.2, 4)), (("Equalize", 0.4, _N), ("Rotate", 0.8, 8)),
        (("Solarize", 0.6, 3), ("Equalize", 0.6, _N)), (("Posterize", 0.8, 5), ("Equalize", 1.0, _N)),
        (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)), (("Equalize", 0.6, _N), ("Posterize", 0.4, 6)),
        (("Rotate", 0.8, 8), ("Color", 0.4, 0)), (("Rotate", 0.4, 9), ("Equalize", 0.6, _N)),
        (("Equalize", 0.0, _N), ("Equalize", 0.8, _N)), (("Invert", 0.6, _N), ("Equalize", 1.0, _N)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)), (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
        (("Color", 0.8, 8), ("Solarize", 0.8, 7)), (("Sharpness", 0.4, 7), ("Invert", 0.6, _N)),
        (("ShearX", 0.6, 5), ("Equalize", 1.0, _N)), (("Color", 0.4, 0), ("Equalize", 0.6, _N)),
        (("Equalize", 0.4, _N), ("Solarize", 0.2, 4)), (("Solarize", 0.6, 5), ("AutoContrast", 0.6, _N)),
        (("Invert", 0.6, _N), ("Equalize", 1.0, _N)), (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Equalize", 0.8, _N), ("Equalize", 0.6, _N)),
    ],
    "cifar10": [
        (("Invert", 0.1, _N), ("Contrast", 0.2, 6)), (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
        (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)), (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.5, _N), ("Equalize", 0.9, _N)), (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
        (("Color", 0.4, 3), ("Brightness", 0.6, 7)), (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
        (("Equalize", 0.6, _N), ("Equalize", 0.5, _N)), (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
        (("Color", 0.7, 7), ("TranslateX", 0.5, 8)), (("Equalize", 0.3, _N), ("AutoContrast", 0.4, _N)),
        (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)), (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
        (("Solarize", 0.5, 2), ("Invert", 0.0, _N)), (("Equalize", 0.2, _N), ("AutoContrast", 0.6, _N)),
        (("Equalize", 0.2, _N), ("Equalize", 0.6, _N)), (("Color", 0.9, 9), ("Equalize", 0.6, _N)),
        (("AutoContrast", 0.8, _N), ("Solarize", 0.2, 8)), (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
        (("Solarize", 0.4, 5), ("AutoContrast", 0.9, _N)), (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.9, _N), ("Solarize", 0.8, 3)), (("Equalize", 0.8, _N), ("Invert", 0.1, _N)),
        (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, _N)),
    ],
}
BINS = 10


def magnitudes(height: int, width: int) -> Tensor:
    """``[len(OPS), BINS]`` float64: torchvision's ``_augmentation_space(10, (H, W))`` (float32 bins)."""
    lin = lambda hi: torch.linspace(0.0, hi, BINS)  # noqa: E731
    rows = {"ShearX": lin(0.3), "ShearY": lin(0.3), "TranslateX": lin(150.0 / 331.0 * width),
            "TranslateY": lin(150.0 / 331.0 * height), "Rotate": lin(30.0), "Brightness": lin(0.9),
            "Color": lin(0.9), "Contrast": lin(0.9), "Sharpness": lin(0.9),
            "Posterize": (8 - (torch.arange(BINS) / ((BINS - 1) / 4)).round().int()).float(),
            "Solarize": torch.linspace(255.0, 0.0, BINS)}
    return torch.stack([rows.get(op, torch.zeros(BINS)) for op in OPS]).double()


@lru_cache(maxsize=None)
def policy_table(policy: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(op [S, 2] int64 index into OPS, p [S, 2] float32, bin [S, 2] int64, 0 where none)``."""
    if policy not in POLICIES:
        raise ValueError(f"unknown AutoAugment policy {policy!r} (valid: {', '.join(POLICIES)})")
    steps = POLICIES[policy]
    op = torch.tensor([[OPS.index(s[0]) for s in sub] for sub in steps])
    p = torch.tensor([[s[1] for s in sub] for sub in steps], dtype=torch.float32)
    b = torch.tensor([[s[2] or 0 for s in sub] for sub in steps])
    return op, p, b


@lru_cache(maxsize=64)
def _tables(policy: str, height: int, width: int, device: torch.device) -> tuple[Tensor, ...]:
    """The policy table, magnitudes and signed mask on ``device``, copied there once (no per-batch copy)."""
    signed = torch.tensor([o in SIGNED for o in OPS])
    return tuple(t.to(device) for t in (*policy_table(policy), magnitudes(height, width), signed))


def warm(policy: str, height: int, width: int, device: torch.device) -> None:
    """Copy the tables of ``policy`` at that size to ``device`` now (a loader's construction), not in
    its first training step."""
    _tables(policy, height, width, torch.device(device))


def draw(n: int, n_policies: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """``(sub-policy [n], u [n, 2], sign [n, 2])`` on the generator's device, in that order."""
    g, dev = generator, generator.device
    sub = torch.randint(n_policies, (n,), generator=g, device=dev)
    u = torch.rand(n, 2, generator=g, device=dev)
    sign = torch.randint(2, (n, 2), generator=g, device=dev)
    return sub, u, sign


def autoaugment(x: Tensor, policy: str, generator: torch.Generator) -> Tensor:
    """``x [B, C, H, W]`` uint8 (C = 1 or 3, H, W > 2) -> AutoAugmented ``[B, C, H, W]`` uint8."""
    op, _, _ = policy_table(policy)
    sub, u, sign = draw(x.shape[0], op.shape[0], generator)
    return apply_subpolicies(x, policy, sub.to(x.device), u.to(x.device), sign.to(x.device))


def apply_subpolicies(x: Tensor, policy: str, sub: Tensor, u: Tensor, sign: Tensor) -> Tensor:
    """Sample ``i`` gets sub-policy ``sub[i]`` of ``policy`` with uniforms ``u[i]`` and signs ``sign[i]``."""
    I._check(x)
    if x.shape[1] not in (1, 3) or min(x.shape[-2:]) <= 2:
        raise ValueError(f"AutoAugment needs 1 or 3 channels and H, W > 2, got {tuple(x.shape)}")
    op_t, p_t, bin_t, mags, signed = _tables(policy, x.shape[-2], x.shape[-1], x.device)
    for k in range(2):
        op, p, b = op_t[sub, k], p_t[sub, k], bin_t[sub, k]
        mag = mags[op, b]
        mag = torch.where(signed[op] & (sign[:, k] == 0), -mag, mag)
        x = apply_op(x, op, mag, u[:, k] <= p)
    return x


def apply_op(x: Tensor, op: Tensor, mag: Tensor, on: Tensor) -> Tensor:
    """Apply op ``OPS[op[i]]`` at magnitude ``mag[i]`` (float64) to the samples where ``on [B]``."""
    b, c, h, w = x.shape
    is_op = lambda name: (op == OPS.index(name)) & on  # noqa: E731
    zero = torch.zeros_like(mag)
    shear_x, shear_y = is_op("ShearX"), is_op("ShearY")
    sheared = shear_x | shear_y  # torchvision shears about the top-left corner (center=[0, 0])
    theta = I.inverse_affine(
        angle=torch.where(is_op("Rotate"), -mag, zero),  # F.rotate passes -angle to the matrix
        tx=torch.where(is_op("TranslateX"), mag.trunc(), zero), ty=torch.where(is_op("TranslateY"), mag.trunc(), zero),
        shear_x=torch.where(shear_x, I.shear_angle(mag), zero), shear_y=torch.where(shear_y, I.shear_angle(mag), zero),
        cx=torch.where(sheared, -w * 0.5, 0.0).double(), cy=torch.where(sheared, -h * 0.5, 0.0).double())
    geo = shear_x | shear_y | is_op("TranslateX") | is_op("TranslateY") | is_op("Rotate")
    color = is_op("Color") if c == 3 else torch.zeros_like(on)  # saturation leaves grey images alone
    gray = I.grayscale(x).float()
    degenerate = torch.where(_c(is_op("Brightness")), 0.0,
                             torch.where(_c(color), gray,
                                         torch.where(_c(is_op("Contrast")), I.contrast_mean(x), I.blurred(x).float())))
    balance = is_op("Brightness") | color | is_op("Contrast") | is_op("Sharpness")
    out = torch.where(_c(geo), I.affine(x, theta), x)
    out = torch.where(_c(balance), I.blend(x, degenerate, 1.0 + mag), out)
    out = torch.where(_c(is_op("Posterize")), I.posterize(x, mag.long()), out)
    out = torch.where(_c(is_op("Solarize")), I.solarize(x, mag.float()), out)
    out = torch.where(_c(is_op("AutoContrast")), I.autocontrast(x), out)
    out = torch.where(_c(is_op("Equalize")), I.equalize(x), out)
    return torch.where(_c(is_op("Invert")), I.invert(x), out)


def _c(mask: Tensor) -> Tensor:
    return mask.reshape(-1, 1, 1, 1)
