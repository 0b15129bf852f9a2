"""Batched AutoAugment (raypair/ops/autoaugment.py, image_ops.py): single ops on crafted images give
known pixels; every op at every magnitude bin and sign equals torchvision's per-image op; each sample
gets its own sub-policy, and a whole batch equals torchvision's AutoAugment run image by image with
the same draws. CPU, uint8."""
from __future__ import annotations

import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import autoaugment as TA

from raypair.ops import autoaugment as A
from raypair.ops import image_ops as I


def op1(x, name, mag):
    """One op at one magnitude on every sample."""
    b = x.shape[0]
    return A.apply_op(x, torch.full((b,), A.OPS.index(name)), torch.full((b,), float(mag), dtype=torch.float64),
                      torch.ones(b, dtype=torch.bool))


def img(values, shape):
    return torch.tensor(values, dtype=torch.uint8).reshape(shape)


# ---------------------------------------------------------------------------- crafted images
def test_rotate_90_is_rot90_and_translate_shifts_with_zero_fill():
    x = torch.arange(16, dtype=torch.uint8).reshape(1, 1, 4, 4) + 1
    assert torch.equal(op1(x, "Rotate", 90), torch.rot90(x, 1, dims=(-2, -1)))  # counter-clockwise
    assert torch.equal(op1(x, "Rotate", -90), torch.rot90(x, -1, dims=(-2, -1)))
    shifted = torch.zeros_like(x)
    shifted[..., 1:] = x[..., :-1]
    assert torch.equal(op1(x, "TranslateX", 1.7), shifted)  # int(1.7) = 1 pixel to the right
    up = torch.zeros_like(x)
    up[..., :-2, :] = x[..., 2:, :]
    assert torch.equal(op1(x, "TranslateY", -2), up)


def test_shear_x_about_the_top_left_corner():
    """Shear factor m about the image's top-left corner: out[r, c] = in[r, c + m (r + 1/2) - 1/2 ...];
    with m = 2 the source column of out[r, c] is exactly c + 2r + 1 (pixel centres), 0 outside."""
    h, w = 3, 8
    x = (torch.arange(h * w, dtype=torch.uint8) + 1).reshape(1, 1, h, w)
    expect = torch.zeros_like(x)
    for r in range(h):
        for c in range(w):
            if c + 2 * r + 1 < w:
                expect[0, 0, r, c] = x[0, 0, r, c + 2 * r + 1]
    assert torch.equal(op1(x, "ShearX", 2.0), expect)
    assert torch.equal(op1(x.transpose(-1, -2).contiguous(), "ShearY", 2.0), expect.transpose(-1, -2))


def test_pixel_ops_on_known_values():
    x = img([0, 127, 128, 255], (1, 1, 2, 2))
    assert op1(x, "Posterize", 1).flatten().tolist() == [0, 0, 128, 128]
    assert op1(x, "Posterize", 3).flatten().tolist() == [0, 96, 128, 224]
    assert op1(x, "Solarize", 128).flatten().tolist() == [0, 127, 127, 0]
    assert op1(x, "Invert", 0).flatten().tolist() == [255, 128, 127, 0]
    y = img([50, 100, 150, 100], (1, 1, 2, 2))
    assert op1(y, "AutoContrast", 0).flatten().tolist() == [0, 127, 255, 127]  # (v - 50) * 255 / 100
    assert op1(y, "Brightness", 0.5).flatten().tolist() == [75, 150, 225, 150]  # 1.5 v
    assert op1(y, "Contrast", -0.5).flatten().tolist() == [75, 100, 125, 100]  # mean 100 + 0.5 (v - 100)


def test_equalize_spreads_two_levels_to_the_ends():
    """512 pixels, half 50 and half 100: step = (512 - 256) // 255 = 1, level v -> #pixels below v."""
    x = torch.full((1, 1, 16, 32), 50, dtype=torch.uint8)
    x[..., 8:, :] = 100
    out = op1(x, "Equalize", 0)
    assert torch.equal(out[..., :8, :], torch.zeros_like(out[..., :8, :]))
    assert torch.equal(out[..., 8:, :], torch.full_like(out[..., 8:, :], 255))
    small = torch.arange(16, dtype=torch.uint8).reshape(1, 1, 4, 4)  # step 0: left as it is
    assert torch.equal(op1(small, "Equalize", 0), small)


# ------------------------------------------------------------------------- against torchvision
def test_tables_are_torchvisions():
    for name, enum in (("cifar10", TA.AutoAugmentPolicy.CIFAR10), ("imagenet", TA.AutoAugmentPolicy.IMAGENET)):
        assert [tuple(s) for s in A.POLICIES[name]] == TA.AutoAugment(enum).policies
    space = TA.AutoAugment()._augmentation_space(10, (20, 28))
    mags = A.magnitudes(20, 28)
    for i, op in enumerate(A.OPS):
        assert torch.equal(mags[i], space[op][0].double().expand(10)), op
        assert (op in A.SIGNED) == space[op][1], op


@pytest.mark.parametrize("channels, size", [(3, (12, 16)), (1, (10, 10))])
def test_every_op_bin_and_sign_equals_torchvision_per_sample(channels, size):
    """One batch, each sample its own (op, bin, sign): the batched op equals torchvision's ``_apply_op``
    on that image alone, pixel for pixel."""
    space = TA.AutoAugment()._augmentation_space(10, size)
    cases = [(op, b, s) for op in A.OPS for b in range(10) for s in (0, 1)]
    x = torch.randint(0, 256, (len(cases), channels, *size), generator=torch.Generator().manual_seed(0),
                      dtype=torch.uint8)
    ops, mags, ref = [], [], []
    for xi, (op, b, s) in zip(x, cases):
        values, signed = space[op]
        mag = float(values[b].item()) if values.ndim else 0.0
        mag = -mag if signed and s == 0 else mag
        ops.append(A.OPS.index(op))
        mags.append(mag)
        ref.append(TA._apply_op(xi, op, mag, InterpolationMode.NEAREST, None))
    got = A.apply_op(x, torch.tensor(ops), torch.tensor(mags, dtype=torch.float64), torch.ones(len(x), dtype=torch.bool))
    bad = [cases[i] for i in range(len(x)) if not torch.equal(got[i], ref[i])]
    assert not bad, bad[:5]
    off = A.apply_op(x, torch.tensor(ops), torch.tensor(mags, dtype=torch.float64), torch.zeros(len(x), dtype=torch.bool))
    assert torch.equal(off, x)  # a step whose coin says no leaves the sample alone


@pytest.mark.parametrize("policy, enum, shape", [
    ("cifar10", TA.AutoAugmentPolicy.CIFAR10, (3, 16, 16)),
    ("imagenet", TA.AutoAugmentPolicy.IMAGENET, (3, 16, 16)),
    ("imagenet", TA.AutoAugmentPolicy.IMAGENET, (1, 12, 20)),  # grey, not square: translate per side
])
def test_each_sample_gets_its_own_subpolicy(policy, enum, shape):
    """64 copies of one image: sample i equals torchvision's AutoAugment of that image under
    sample i's own draw (sub-policy, coins, signs), and the draws and outputs differ across samples."""
    g = torch.Generator().manual_seed(5)
    one = torch.randint(0, 256, (1, *shape), generator=g, dtype=torch.uint8)
    x = one.expand(64, -1, -1, -1).contiguous()
    out = A.autoaugment(x, policy, torch.Generator().manual_seed(11))
    sub, u, sign = A.draw(64, 25, torch.Generator().manual_seed(11))
    tv = TA.AutoAugment(enum)
    space = tv._augmentation_space(10, shape[1:])
    for i in range(64):
        ref = one[0]
        for k, (op, p, b) in enumerate(tv.policies[int(sub[i])]):
            if u[i, k] <= p:
                values, signed = space[op]
                mag = float(values[b].item()) if b is not None else 0.0
                ref = TA._apply_op(ref, op, -mag if signed and sign[i, k] == 0 else mag,
                                   InterpolationMode.NEAREST, None)
        assert torch.equal(out[i], ref), (i, tv.policies[int(sub[i])])
    assert len(set(sub.tolist())) >= 15  # 64 draws over 25 sub-policies
    assert len({o.numpy().tobytes() for o in out}) >= 10


def test_images_need_more_than_two_pixels_a_side():
    g = torch.Generator().manual_seed(0)
    A.autoaugment(torch.zeros(2, 3, 3, 3, dtype=torch.uint8), "cifar10", g)  # 3 x 3: allowed
    for shape in ((2, 3, 2, 5), (2, 3, 5, 2)):
        with pytest.raises(ValueError, match="H, W > 2"):
            A.autoaugment(torch.zeros(*shape, dtype=torch.uint8), "cifar10", g)


def test_subpolicies_are_uniform_and_the_generator_decides():
    sub, _, _ = A.draw(5000, 25, torch.Generator().manual_seed(0))
    counts = torch.bincount(sub, minlength=25)
    assert counts.min() > 140 and counts.max() < 260  # 200 expected each
    x = torch.randint(0, 256, (8, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    a = A.autoaugment(x, "imagenet", torch.Generator().manual_seed(3))
    assert torch.equal(a, A.autoaugment(x, "imagenet", torch.Generator().manual_seed(3)))


def test_bad_inputs_fail_loudly():
    g = torch.Generator()
    with pytest.raises(ValueError, match="unknown AutoAugment policy 'svhn'"):
        A.autoaugment(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "svhn", g)
    with pytest.raises(ValueError, match="uint8"):
        A.autoaugment(torch.zeros(1, 3, 8, 8), "cifar10", g)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        A.autoaugment(torch.zeros(1, 2, 8, 8, dtype=torch.uint8), "cifar10", g)
    with pytest.raises(ValueError, match="x must be uint8"):
        I.equalize(torch.zeros(3, 8, 8, dtype=torch.uint8))


def test_loader_applies_it_after_the_crop():
    from raypair.data import DeviceLoader

    x = torch.randint(0, 256, (32, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    kw = dict(batch_size=16, mean=(0, 0, 0), std=(1, 1, 1), train=True, augment=True)
    plain = next(iter(DeviceLoader(x, torch.arange(32), **kw).epoch(0)))[0]
    aa = next(iter(DeviceLoader(x, torch.arange(32), autoaugment="cifar10", **kw).epoch(0)))[0]
    assert not torch.equal(plain, aa)
    with pytest.raises(ValueError, match="autoaugment needs augment=True"):
        DeviceLoader(x, torch.arange(32), **{**kw, "augment": False}, autoaugment="cifar10")


# ------------------------------------------------------------------- exact edges (mutation kills)
def test_warm_fills_the_cache_the_first_batch_reads():
    A._tables.cache_clear()
    A.warm("cifar10", 9, 11, "cpu")
    x = torch.zeros(2, 3, 9, 11, dtype=torch.uint8)
    A.apply_subpolicies(x, "cifar10", torch.tensor([0, 1]), torch.ones(2, 2), torch.ones(2, 2, dtype=torch.int64))
    info = A._tables.cache_info()
    assert info.currsize == 1 and info.hits == 1


def test_translate_x_of_a_wide_image_uses_its_width_and_u_equal_to_p_applies():
    # cifar10 sub-policy 1: (Rotate 0.7 bin 2), (TranslateX 0.3 bin 9); u = (1, 0.3 exactly): only the shift,
    # of int(150 / 331 * W) = 7 pixels for W = 16 (the height, 8, would give 3)
    x = torch.randint(1, 256, (2, 3, 8, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    p = A.policy_table("cifar10")[1][1, 1]
    u = torch.stack([torch.ones(2), p.expand(2)], 1)
    out = A.apply_subpolicies(x, "cifar10", torch.tensor([1, 1]), u, torch.tensor([[1, 1], [1, 0]]))
    assert torch.equal(out[0, ..., 7:], x[0, ..., :9]) and not out[0, ..., :7].any()  # sign 1: +7
    assert torch.equal(out[1, ..., :9], x[1, ..., 7:]) and not out[1, ..., 9:].any()  # sign 0: -7
