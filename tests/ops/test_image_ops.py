"""Each batched image op against torchvision's functional op sample by sample, at chosen magnitudes
and edge values (the inputs where a near-miss formula would still agree are avoided on purpose)."""
from __future__ import annotations

import warnings

import pytest
import torch
from torchvision.transforms import _functional_tensor as TF
from torchvision.transforms import functional as F

from raypair.ops import image_ops as I


def rand_u8(*shape, seed=0):
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_inverse_affine_with_every_term_nonzero_is_torchvisions():
    # rotation, both shears, translation and centre all at once: every term of the matrix matters
    angle = torch.tensor([17.0, -33.0, 5.5], dtype=torch.float64)
    tx, ty = torch.tensor([3.0, -2.0, 0.5], dtype=torch.float64), torch.tensor([-4.0, 1.5, 2.0], dtype=torch.float64)
    sx, sy = torch.tensor([12.0, -8.0, 25.0], dtype=torch.float64), torch.tensor([-21.0, 9.0, 14.0], dtype=torch.float64)
    cx, cy = torch.tensor([-2.5, 1.0, 3.0], dtype=torch.float64), torch.tensor([4.0, -3.5, 0.0], dtype=torch.float64)
    theta = I.inverse_affine(angle, tx, ty, sx, sy, cx, cy)
    for i in range(3):
        want = F._get_inverse_affine_matrix([float(cx[i]), float(cy[i])], float(angle[i]),
                                            [float(tx[i]), float(ty[i])], 1.0, [float(sx[i]), float(sy[i])])
        assert torch.allclose(theta[i].flatten(), torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)


def test_affine_does_not_warn_and_ignores_the_default_dtype():
    x = rand_u8(2, 3, 7, 9, seed=1)
    z = torch.zeros(2, dtype=torch.float64)
    theta = I.inverse_affine(torch.tensor([30.0, -45.0], dtype=torch.float64), z + 1, z - 2, z, z, z, z)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        want = I.affine(x, theta)
    for i, a in enumerate((30.0, -45.0)):
        ref = TF.affine(x[i], F._get_inverse_affine_matrix([0.0, 0.0], a, [1.0, -2.0], 1.0, [0.0, 0.0]),
                        interpolation="nearest", fill=None)
        assert torch.equal(want[i], ref)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert torch.equal(I.affine(x, theta), want)
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("size", [(3, 3), (3, 5), (4, 3), (6, 7)])
def test_blurred_is_torchvisions_degenerate_image_from_side_three(size):
    x = rand_u8(4, 3, *size, seed=2)
    out = I.blurred(x)
    for i in range(4):
        assert torch.equal(out[i], TF._blurred_degenerate_image(x[i]))
    assert not torch.equal(out, x)  # a 3x3 image has one inner pixel, and it is smoothed


def test_blend_depends_only_on_the_ratio_value():
    x, d = rand_u8(3, 3, 5, 5, seed=3), rand_u8(3, 3, 5, 5, seed=4).float()
    r16 = torch.tensor([0.1, 1.3, 1.7], dtype=torch.float16)
    assert torch.equal(I.blend(x, d, r16), I.blend(x, d, r16.double()))
    for i, r in enumerate(r16.double().tolist()):
        assert torch.equal(I.blend(x, d, r16)[i], TF._blend(x[i], d[i], r))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.float64])
def test_posterize_per_bits_of_any_dtype_is_torchvisions(dtype):
    x = rand_u8(9, 3, 4, 4, seed=5)
    bits = torch.arange(9).to(dtype)  # 0..8, both ends included
    out = I.posterize(x, bits)
    for i in range(9):
        assert torch.equal(out[i], F.posterize(x[i], i))
    assert not out[0].any() and torch.equal(out[8], x[8])


def test_autocontrast_leaves_constant_channels_exactly_alone():
    x = rand_u8(2, 3, 4, 4, seed=6)
    x[0, 1] = 100  # one constant channel next to stretched ones
    x[1, 2] = 0
    out = I.autocontrast(x)
    for i in range(2):
        assert torch.equal(out[i], F.autocontrast(x[i]))
    assert (out[0, 1] == 100).all() and (out[1, 2] == 0).all()


@pytest.mark.parametrize("size", [(32, 32), (23, 29)])
def test_equalize_of_images_large_enough_to_equalize_is_torchvisions(size):
    # over 510 pixels a channel has step >= 2, so the rounding term (step // 2) matters
    x = rand_u8(3, 3, *size, seed=7) // 4 * 3  # 64 occupied levels, uneven counts
    x[2, 0] = (rand_u8(*size, seed=8) // 128) * 200  # two levels only
    out = I.equalize(x)
    for i in range(3):
        assert torch.equal(out[i], F.equalize(x[i]))
    assert not torch.equal(out, x)


def test_shear_angle_is_float64_whatever_the_magnitude_dtype():
    m = torch.tensor([0.1, -0.3, 0.27], dtype=torch.float32)
    out = I.shear_angle(m)
    assert out.dtype == torch.float64 and torch.equal(out, torch.rad2deg(torch.atan(m.double())))
