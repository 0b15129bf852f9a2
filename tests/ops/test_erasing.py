"""Random Erasing replayed draw by draw: a per-sample reference (timm's loop over attempts, the
candidate box of torchvision's / timm's ``RandomErasing`` math) fed the same draws, in the order
the docstring of :func:`random_erasing` names, must give the batched op's output bit for bit."""
from __future__ import annotations

import math

import pytest
import torch

from raypair.ops.erasing import random_erasing

from helpers import gen


def reference(x, p, g, mode="pixel", area=(0.02, 1 / 3), aspect=(0.3, 1 / 0.3), attempts=10):
    """One image at a time, one attempt at a time (Python ints for the box, the op's float32 maths)."""
    b, c, height, width = x.shape
    do = torch.rand(b, generator=g)
    u_area = torch.rand(b, attempts, generator=g)
    u_aspect = torch.rand(b, attempts, generator=g)
    corner = torch.rand(2, b, generator=g)
    fill = {"pixel": lambda: torch.randn(b, c, height, width, generator=g, dtype=torch.float32),
            "rand": lambda: torch.randn(b, c, 1, 1, generator=g, dtype=torch.float32).expand(b, c, height, width),
            "const": lambda: torch.zeros(b, c, height, width)}[mode]()
    out, erased = x.clone(), torch.zeros(b, dtype=torch.bool)
    lo, hi = math.log(aspect[0]), math.log(aspect[1])
    for i in range(b):
        if not do[i] < p:
            continue
        for k in range(attempts):
            target = (area[0] + (area[1] - area[0]) * u_area[i, k]) * height * width
            ratio = torch.exp(lo + (hi - lo) * u_aspect[i, k])
            h, w = int(torch.round(torch.sqrt(target * ratio))), int(torch.round(torch.sqrt(target / ratio)))
            if 1 <= h < height and 1 <= w < width:
                top = min(int(corner[0, i] * (height - h + 1)), height - h)
                left = min(int(corner[1, i] * (width - w + 1)), width - w)
                out[i, :, top:top + h, left:left + w] = fill[i, :, top:top + h, left:left + w].to(x.dtype)
                erased[i] = True
                break
    return out, erased


def check(x, p, seed, **kw):
    out, erased = random_erasing(x, p, gen(seed), **kw)
    want, want_erased = reference(x, p, gen(seed), **kw)
    assert out.dtype == x.dtype and erased.dtype == torch.bool
    assert torch.equal(erased, want_erased)
    assert torch.equal(out, want)
    return out, erased


@pytest.mark.parametrize("mode", ["pixel", "rand", "const"])
def test_defaults_replayed_per_sample(mode):
    x = torch.rand(64, 3, 8, 8, generator=gen(1))
    out, erased = check(x, 0.5, 2, mode=mode)
    assert 10 < erased.sum() < 54 and torch.equal((out != x).flatten(1).any(1), erased)


@pytest.mark.parametrize("mode", ["pixel", "rand", "const"])
def test_wide_bounds_hit_every_side_limit(mode):
    # tiny images with areas up to the whole image and very long aspects: candidates of side 0, 1,
    # H - 1 and H (and W) all occur, so every fit bound decides some image's first box
    x = torch.rand(256, 2, 4, 5, generator=gen(3))
    out, erased = check(x, 1.0, 4, mode=mode, area=(0.01, 1.0), aspect=(0.05, 20.0), attempts=3)
    assert 0 < erased.sum() < 256  # some images find no fitting candidate and stay unchanged
    assert torch.equal(out[~erased], x[~erased])


def test_each_side_bound_is_exercised_by_the_wide_case():
    g, b, a = gen(4), 256, 3
    torch.rand(b, generator=g)
    target = (0.01 + 0.99 * torch.rand(b, a, generator=g)) * 20
    ratio = torch.exp(math.log(0.05) + (math.log(20.0) - math.log(0.05)) * torch.rand(b, a, generator=g))
    hh, ww = torch.round(torch.sqrt(target * ratio)).long(), torch.round(torch.sqrt(target / ratio)).long()
    for side, n in ((hh, 4), (ww, 5)):
        for v in (0, 1, n - 1, n):
            assert (side == v).any()


def test_the_first_fitting_attempt_differs_between_images_and_no_fit_is_per_image():
    # one image whose every candidate is too big next to images that fit: the fallback is per image
    x = torch.rand(32, 1, 6, 6, generator=gen(5))
    out, erased = check(x, 1.0, 6, mode="const", area=(0.5, 1.0), aspect=(0.5, 2.0), attempts=2)
    assert 0 < erased.sum() < 32


def test_probability_is_strict_and_p_one_erases_whenever_a_box_fits():
    x = torch.rand(16, 3, 8, 8, generator=gen(7))
    u = torch.rand(16, generator=gen(8))
    p = float(u[3])  # image 3's draw equals p exactly: u < p is False, it stays unchanged
    out, erased = check(x, p, 8)
    assert not erased[3] and torch.equal(erased, u < p)
    _, erased = check(x, 1.0, 8)
    assert erased.all()
    out, erased = check(x, 0.0, 8)
    assert not erased.any() and torch.equal(out, x)


def test_equal_bounds_one_attempt_and_whole_area_are_accepted():
    x = torch.rand(32, 3, 10, 10, generator=gen(9))
    out, erased = check(x, 1.0, 10, mode="const", area=(0.25, 0.25), aspect=(1.0, 1.0), attempts=1)
    assert erased.all() and torch.equal((out == 0).all(1).sum((1, 2)), torch.full((32,), 25))
    check(x, 1.0, 11, area=(0.5, 1.0), attempts=1)


def test_default_attempts_are_ten_and_x_is_not_modified():
    x = torch.rand(8, 3, 6, 6, generator=gen(12))
    copy = x.clone()
    out, _ = random_erasing(x, 1.0, gen(13), mode="rand")
    assert torch.equal(out, reference(x, 1.0, gen(13), mode="rand", attempts=10)[0]) and torch.equal(x, copy)


def test_fill_draws_are_float32_whatever_the_default_dtype():
    x = torch.rand(8, 3, 6, 6, generator=gen(14)).double()
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        check(x, 1.0, 15, mode="pixel")
        check(x, 1.0, 15, mode="rand")
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_output_keeps_the_input_dtype(dtype):
    x = torch.rand(8, 3, 6, 6, generator=gen(16)).to(dtype)
    for mode in ("pixel", "rand", "const"):
        check(x, 1.0, 17, mode=mode)


@pytest.mark.parametrize("kw, match", [
    (dict(x=torch.zeros(3, 4, 4)), r"x must be \[B, C, H, W\], got shape \(3, 4, 4\)"),
    (dict(p=1.5), r"p must lie in \[0, 1\], got 1.5"),
    (dict(p=-0.1), r"p must lie in \[0, 1\], got -0.1"),
    (dict(mode="PIXEL"), r"unknown erase mode 'PIXEL' \(valid: pixel, rand, const\)"),
    (dict(area=(0.0, 0.5)), r"got area=\(0.0, 0.5\) aspect=.* attempts=10"),
    (dict(area=(-0.1, 0.5)), r"0 < area lo <= hi <= 1"),
    (dict(area=(0.6, 0.5)), r"area=\(0.6, 0.5\)"),
    (dict(area=(0.5, 1.5)), r"area=\(0.5, 1.5\)"),
    (dict(aspect=(0.0, 1.0)), r"aspect=\(0.0, 1.0\)"),
    (dict(aspect=(-1.0, 1.0)), r"aspect=\(-1.0, 1.0\)"),
    (dict(aspect=(2.0, 1.0)), r"aspect=\(2.0, 1.0\)"),
    (dict(attempts=0), r"attempts >= 1, got .*attempts=0"),
])
def test_bad_arguments_fail_in_one_line_naming_the_value(kw, match):
    args = dict(x=torch.zeros(2, 3, 8, 8), p=0.5, generator=gen(0)) | kw
    with pytest.raises(ValueError, match=match):
        random_erasing(**args)
