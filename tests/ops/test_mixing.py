"""Exact-property tests of the mixing primitives (raypair/ops/mixing.py), after torchvision's
``TestCutMixMixUp``: unique labels, pixel counts, hand-computed values, seeds, and the received
value in every error."""
from __future__ import annotations

import math

import pytest
import torch

from raypair.ops.losses import one_hot
from raypair.ops.masks import area_lambda, box_mask, cutmix_box, cutout_mask, inside_box
from raypair.ops.mixing import (bc_mix, check_unit, cutmix, cutmix_beta, image_std, mix, partner, paste,
                                sample_beta, sample_uniform)

from helpers import gen, next_draw


def cutmix_batch(x: torch.Tensor, y: torch.Tensor, lam: torch.Tensor, rule: str, g: torch.Generator):
    """CutMix with a box per sample through the composed op, and the keep mask its draws imply
    (the same box drawn again from the same generator state, made pixels by ``box_mask``)."""
    _, _, h, w = x.shape
    target = one_hot(y, int(y.max()) + 1)
    j, _ = partner(y, rule, g)
    state = g.get_state()
    out, t, lam_eff = cutmix(x, target, j, 1.0 - lam.double(), g)
    box = cutmix_box(1.0 - lam.double(), h, w, g.set_state(state))
    keep = box_mask(*box, h, w)
    assert torch.equal(lam_eff, area_lambda(box[2], box[3], h, w))
    return out, t, keep, j


# ----------------------------------------------------------------------------------- CutMix
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("rule", ["roll", "flip", "perm"])
def test_cutmix_target_weights_are_the_pixel_fractions(seed, rule):
    b, h, w = 16, 32, 32  # H*W a power of two: pixel fractions are exact floats
    g = gen(seed)
    y = torch.randperm(b, generator=g)  # unique labels: one class per sample
    x = torch.arange(b, dtype=torch.float32).reshape(b, 1, 1, 1).expand(b, 3, h, w).contiguous()
    lam = torch.cat([torch.tensor([1.0, 0.0, 0.5]), sample_beta(1.0, b - 3, g)])
    out, t, keep, j = cutmix_batch(x, y, lam, rule, g)
    assert torch.equal(t.sum(1), torch.ones(b))
    for i in range(b):
        if j[i] == i:  # a perm fixed point pastes onto itself: one class, weight 1
            assert torch.equal(out[i], x[i]) and t[i, y[i]] == 1 and (t[i] > 0).sum() == 1
            continue
        kept = (out[i] == i).all(0).float().mean()  # count the pixels of image i that were kept
        assert torch.equal(kept, keep[i].mean())
        assert torch.equal(out[i][out[i] != i], x[j[i]][out[i] != i])  # the rest came from the partner
        assert t[i, y[i]] == kept and t[i, y[j[i]]] == 1 - kept
        assert (t[i] > 0).sum() == int(kept > 0) + int(kept < 1)


def test_cutmix_weights_match_pixel_counts_on_odd_sizes():
    b, h, w = 32, 24, 40
    g = gen(7)
    y = torch.arange(b)
    lam = sample_beta(1.0, b, g)
    x = torch.arange(b, dtype=torch.float32).reshape(b, 1, 1, 1).expand(b, 1, h, w)
    out, t, keep, j = cutmix_batch(x, y, lam, "roll", g)
    kept_px = torch.stack([(out[i] == i).sum() for i in range(b)])
    assert torch.equal(kept_px, keep.flatten(1).sum(1).long())
    assert torch.equal(torch.round(t[torch.arange(b), y] * h * w).long(), kept_px)
    assert torch.allclose(t[torch.arange(b), y[j]], 1 - kept_px / (h * w), atol=1e-6, rtol=0)


def test_lambda_one_is_the_identity():
    g = gen(0)
    a, b = torch.randn(6, 3, 8, 8, generator=g), torch.randn(6, 3, 8, 8, generator=g)
    assert torch.equal(mix(a, b, 1.0), a) and torch.equal(mix(a, b, torch.ones(6)), a)
    assert torch.equal(mix(a, b, 0.0), b)
    top, left, bh, bw = cutmix_box(torch.zeros(6), 8, 8, g)  # area 0: lam 1
    assert torch.equal(bh * bw, torch.zeros(6, dtype=torch.long))
    keep = box_mask(top, left, bh, bw, 8, 8)
    assert torch.equal(keep, torch.ones(6, 1, 8, 8))
    assert torch.equal(paste(a, b, keep), a) and torch.equal(area_lambda(bh, bw, 8, 8), torch.ones(6))
    assert torch.equal(bc_mix(a, b, torch.ones(6), plus=False), a)


@pytest.mark.parametrize("lam", ["scalar", "per_sample"])
def test_mixed_pixels_lie_between_their_sources(lam):
    g = gen(3)
    a, b = torch.randn(32, 3, 16, 16, generator=g), torch.randn(32, 3, 16, 16, generator=g)
    assert (a != b).all()  # equal sources can round to 1 ulp off their common value
    ratio = torch.rand(32, generator=g) if lam == "per_sample" else 0.37
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    for out in (mix(a, b, ratio), paste(a, b, (torch.rand(32, 1, 16, 16, generator=g) < 0.5).float())):
        assert ((lo <= out) & (out <= hi)).all()


# ---------------------------------------------------------------------------------- partners
def test_partner_index_rules():
    y = torch.tensor([3, 1, 4, 1, 5, 9, 2])
    x = torch.arange(7.0)
    j, ok = partner(y, "flip", gen(0))
    assert torch.equal(j, torch.tensor([6, 5, 4, 3, 2, 1, 0])) and ok.all()
    j, ok = partner(y, "roll", gen(0))
    assert torch.equal(x[j], x.roll(1, 0)) and torch.equal(j, torch.tensor([6, 0, 1, 2, 3, 4, 5])) and ok.all()
    j, ok = partner(y, "perm", gen(0))
    assert torch.equal(j.sort().values, torch.arange(7)) and ok.all()


def test_diffclass_partners_always_differ_and_ok_marks_rows_without_one():
    g = gen(0)
    for _ in range(200):
        y = torch.randint(0, 3, (int(torch.randint(1, 9, (), generator=g)),), generator=g)
        j, ok = partner(y, "diffclass", g)
        assert torch.equal(ok, (y[:, None] != y[None, :]).any(1))
        assert (y[j][ok] != y[ok]).all()
    j, ok = partner(torch.full((5,), 2), "diffclass", g)
    assert not ok.any()


def test_diffclass_partner_is_uniform_among_other_labels():
    y = torch.tensor([0, 0, 1, 1, 2])
    g = gen(1)
    counts = torch.zeros(5, 5)
    for _ in range(1500):
        j, _ = partner(y, "diffclass", g)
        counts[torch.arange(5), j] += 1
    allowed = (y[:, None] != y[None, :]).float()
    assert torch.equal(counts > 0, allowed > 0)
    expect = allowed / allowed.sum(1, keepdim=True)
    assert torch.allclose(counts / 1500, expect, atol=0.05)  # 4 sigma at 1500 draws


# ------------------------------------------------------------------------------------- BC/BC+
def test_bc_plus_matches_its_formula_on_hand_computed_images():
    # x1: offset 5, +-1 (std 1); x2: offset -3, +-2 (std 2). s1/s2 = 1/2.
    x1 = torch.tensor([[6.0, 4.0], [4.0, 6.0]]).reshape(1, 1, 2, 2).repeat(2, 1, 1, 1)
    x2 = torch.tensor([[-1.0, -1.0], [-5.0, -5.0]]).reshape(1, 1, 2, 2).repeat(2, 1, 1, 1)
    assert torch.equal(image_std(x1), torch.ones(2)) and torch.equal(image_std(x2), torch.full((2,), 2.0))
    r = torch.tensor([0.5, 0.8])
    # r=0.5: p = 1/(1 + 1/2) = 2/3, sqrt(p^2 + (1-p)^2) = sqrt(5)/3 -> (2 x1 + x2) / sqrt(5)
    # r=0.8: p = 1/(1 + 1/2 * 1/4) = 8/9, norm sqrt(65)/9      -> (8 x1 + x2) / sqrt(65)
    expect = torch.stack([torch.tensor([[11.0, 7.0], [3.0, 7.0]]) / math.sqrt(5),
                          torch.tensor([[47.0, 31.0], [27.0, 43.0]]) / math.sqrt(65)])[:, None]
    assert torch.allclose(bc_mix(x1, x2, r, plus=True), expect, atol=1e-6, rtol=0)
    assert torch.allclose(bc_mix(x1, x2, r, plus=False), torch.stack([0.5 * x1[0] + 0.5 * x2[0],
                                                                      0.8 * x1[1] + 0.2 * x2[1]]), atol=1e-6)


@pytest.mark.parametrize("plus", [True, False])
def test_bc_mix_is_symmetric_and_r_one_returns_x1(plus):
    g = gen(4)
    x1, x2 = torch.randn(16, 3, 8, 8, generator=g) * 2, torch.randn(16, 3, 8, 8, generator=g) * 0.5
    r = torch.rand(16, generator=g).clamp(1e-3, 1 - 1e-3)
    assert torch.allclose(bc_mix(x1, x2, r, plus), bc_mix(x2, x1, 1 - r, plus), atol=1e-5, rtol=1e-5)
    assert torch.equal(bc_mix(x1, x2, torch.ones(16), plus), x1)  # BC+: p = 1 exactly


# -------------------------------------------------------------------------------- randomness
@pytest.mark.parametrize("draw", [
    lambda g: sample_beta(0.4, 32, g),
    lambda g: sample_uniform(-1.0, 2.0, 32, g),
    lambda g: partner(torch.arange(32) % 4, "perm", g)[0],
    lambda g: partner(torch.arange(32) % 4, "diffclass", g)[0],
    lambda g: torch.stack(cutmix_box(torch.full((32,), 0.5), 32, 32, g)),
    lambda g: torch.stack(inside_box((torch.full((32,), 8), torch.full((32,), 8)), 32, 32, g)),
    lambda g: cutout_mask(8, 32, 32, 1, 16, g),
], ids=["sample_beta", "sample_uniform", "perm", "diffclass", "cutmix_box", "inside_box", "cutout_mask"])
def test_same_seed_same_draw_other_seed_other_draw(draw):
    assert torch.equal(draw(gen(11)), draw(gen(11)))
    assert not torch.equal(draw(gen(11)), draw(gen(12)))


def test_sample_ranges():
    v = sample_beta(0.2, 10000, gen(0))
    assert v.dtype == torch.float32 and ((v >= 0) & (v <= 1)).all()
    assert abs(v.mean().item() - 0.5) < 0.02  # symmetric Beta
    u = sample_uniform(0.25, 0.75, 10000, gen(0))
    assert ((u >= 0.25) & (u <= 0.75)).all() and torch.equal(sample_uniform(0.5, 0.5, 3, gen(0)), torch.full((3,), 0.5))


# ----------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("call, match", [
    (lambda: sample_beta(0.0, 4, gen(0)), "got 0.0"),
    (lambda: sample_beta(-1.5, 4, gen(0)), "got -1.5"),
    (lambda: sample_uniform(2.0, 1.0, 4, gen(0)), r"got \[2.0, 1.0\]"),
    (lambda: partner(torch.arange(4), "shuffle", gen(0)), "'shuffle'"),
    (lambda: cutmix_box(torch.tensor([0.5, 1.5]), 8, 8, gen(0)), "max 1.5"),
    (lambda: cutmix_box(torch.tensor([-0.25]), 8, 8, gen(0)), "min -0.25"),
    (lambda: inside_box((torch.tensor([40]), torch.tensor([4])), 32, 32, gen(0)), r"h \[40\]"),
    (lambda: cutout_mask(2, 8, 8, -1, 4, gen(0)), "n_holes=-1"),
    (lambda: cutout_mask(2, 8, 8, 1, -3, gen(0)), "length=-3"),
    (lambda: mix(torch.zeros(2, 3), torch.zeros(2, 4), 0.5), r"\(2, 3\) and \(2, 4\)"),
    (lambda: mix(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(3)), r"got \(3,\)"),
    (lambda: bc_mix(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0.0, 0.5]), True), "min 0.0"),
    (lambda: bc_mix(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0.5, 1.5]), False), "max 1.5"),
    (lambda: check_unit("theta", 1.25), r"theta must lie in \[0, 1\], got 1.25"),
    (lambda: check_unit("theta", float("nan")), "got nan"),
])
def test_value_errors_carry_the_received_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# -------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    g = gen(0)
    a, b = torch.randn(16, 3, 32, 32, generator=g), torch.randn(16, 3, 32, 32, generator=g)
    r = torch.rand(16, generator=g).clamp(1e-3, 1)
    top, left, bh, bw = cutmix_box(torch.rand(16, generator=g), 32, 32, g)
    keep = box_mask(top, left, bh, bw, 32, 32)
    cu = [t.cuda() for t in (a, b, r, top, left, bh, bw)]
    assert torch.equal(box_mask(*cu[3:], 32, 32).cpu(), keep)
    assert torch.equal(area_lambda(cu[5], cu[6], 32, 32).cpu(), area_lambda(bh, bw, 32, 32))
    assert torch.equal(paste(cu[0], cu[1], keep.cuda()).cpu(), paste(a, b, keep))
    assert torch.allclose(mix(cu[0], cu[1], cu[2]).cpu(), mix(a, b, r), atol=1e-6, rtol=0)
    for plus in (False, True):
        assert torch.allclose(bc_mix(cu[0], cu[1], cu[2], plus).cpu(), bc_mix(a, b, r, plus), atol=1e-5, rtol=1e-5)
    # random ops on a CUDA generator stay on the device and keep their exact properties
    gc = gen(0, "cuda")
    x = torch.arange(16, dtype=torch.float32, device="cuda").reshape(16, 1, 1, 1).expand(16, 3, 32, 32)
    out, t, keep_c, j = cutmix_batch(x, torch.arange(16, device="cuda"), sample_beta(1.0, 16, gc), "roll", gc)
    assert out.is_cuda and t.is_cuda and keep_c.is_cuda
    assert torch.equal(t[torch.arange(16, device="cuda"), torch.arange(16, device="cuda")], keep_c.flatten(1).mean(1))
    assert cutout_mask(4, 32, 32, 2, 8, gc).is_cuda
    assert partner(torch.arange(8, device="cuda") % 3, "diffclass", gc)[0].is_cuda


def test_cycle_partners_pair_every_sample_with_another_once_by_seed():
    from raypair.ops.pairing import cycle_partners

    for n, seed in [(2, 0), (7, 1), (100, 3)]:
        pi = cycle_partners(n, seed)
        assert sorted(pi.tolist()) == list(range(n))  # each sample is the partner of exactly one other
        assert not bool((pi == torch.arange(n)).any())  # never itself
        seen, i = {0}, int(pi[0])
        while i != 0:  # one n-cycle
            seen.add(i)
            i = int(pi[i])
        assert len(seen) == n
        assert torch.equal(pi, cycle_partners(n, seed))
    assert not torch.equal(cycle_partners(100, 3), cycle_partners(100, 4))
    with pytest.raises(ValueError, match="at least 2 samples, got 1"):
        cycle_partners(1, 0)


# --------------------------------------------- CutMix's composed op (from tests of masks and mutation survivors)
def test_cutmix_inside_pastes_the_rounded_box_and_weighs_it_exactly():
    # D-Mix's placement: sides round(sqrt(a) H) x round(sqrt(a) W), fully inside; a = 0 pastes nothing
    b, h, w = 8, 32, 16
    x = (torch.arange(b, dtype=torch.float32) + 1).view(b, 1, 1, 1).expand(b, 2, h, w)
    j = torch.arange(b).roll(1)
    area = torch.tensor([0.3, 0.5, 0.0, 1.0, 0.3, 0.1, 0.6, 0.25], dtype=torch.float64)
    out, t, lam = cutmix(x, one_hot(torch.arange(b), b), j, area, gen(4), inside=True)
    pasted = (out != x).all(1)
    sides = [(round(math.sqrt(a) * h), round(math.sqrt(a) * w)) for a in area.tolist()]
    assert pasted.flatten(1).sum(1).tolist() == [sh * sw for sh, sw in sides]
    assert torch.equal(out[pasted[:, None].expand_as(out)], x[j][pasted[:, None].expand_as(out)])
    assert torch.equal(lam, 1 - pasted.flatten(1).float().mean(1))
    assert torch.equal(t[torch.arange(b), torch.arange(b)], lam) and torch.equal(t[torch.arange(b), j], 1 - lam)
    assert torch.equal(out[2], x[2]) and t[2, 2] == 1  # area 0: image and label unchanged


def test_cutmix_one_box_for_the_batch():
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 8, 8)
    out, t, lam = cutmix(x, one_hot(torch.arange(4), 4), torch.arange(4).flip(0), torch.tensor([0.5]), gen(1))
    pasted = (out != x).all(1)
    assert lam.shape == (1,) and all(torch.equal(pasted[0], p) for p in pasted)  # the same box in every row
    assert torch.equal(t.diagonal(), lam.expand(4)) and 1 - lam == pasted[0].float().mean()


def test_cutmix_beta_pastes_one_box_of_area_one_minus_lam():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    y = torch.tensor([0, 1])
    target = torch.eye(2)
    for seed in range(4):
        ref = gen(seed)
        lam = sample_beta(1.0, 1, ref)
        j, _ = partner(y, "perm", ref)
        expect = cutmix(x, target, j, 1.0 - lam.double(), ref)
        g = gen(seed)
        got = cutmix_beta(x, target, y, 1.0, "perm", g)
        assert all(torch.equal(a, b) for a, b in zip(got, expect))
        assert next_draw(g) == next_draw(ref)


@pytest.mark.parametrize("inside", [False, True])
def test_cutmix_checks_its_area_unless_told_not_to(inside):
    x, t, j = torch.zeros(2, 1, 4, 4), torch.eye(2), torch.tensor([1, 0])
    with pytest.raises(ValueError, match="area must lie in \\[0, 1\\]|box sides must fit in 4x4"):
        cutmix(x, t, j, torch.tensor([1.5, 0.2], dtype=torch.float64), gen(0), inside=inside)
    with pytest.raises(ValueError):
        cutmix(x, t, j, torch.tensor([1.5, 0.2], dtype=torch.float64), gen(0), inside=inside, check=True)


def test_cutmix_keeps_the_image_dtype():
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4).bfloat16()
    out, _, _ = cutmix(x, torch.eye(2), torch.tensor([1, 0]), torch.tensor([0.25, 0.25]), gen(0))
    assert out.dtype == torch.bfloat16
