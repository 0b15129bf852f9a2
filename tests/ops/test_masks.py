"""The one box-mask primitive and the placements on it (raypair.ops.masks): exact areas, clipping at
the borders, per-sample and several boxes per image, Cutout's odd side, CutMix's rand_bbox, D-Mix's
inside placement (the composed CutMix op on top of them: test_mixing.py). Loops here are references only."""
from __future__ import annotations

import math

import pytest
import torch

from raypair.ops.masks import area_lambda, box_mask, centred_box, cutmix_box, cutout_mask, inside_box
from raypair.ops.mixing import sample_beta

from helpers import gen


def reference_mask(top, left, h, w, height: int, width: int) -> torch.Tensor:
    """A loop per box: zero the clipped rectangle; boxes [B] or [B, N]."""
    t, l_, hh, ww = (v.reshape(v.shape[0], -1) for v in (top, left, h, w))
    keep = torch.ones(t.shape[0], 1, height, width)
    for i in range(t.shape[0]):
        for k in range(t.shape[1]):
            y1, x1 = max(int(t[i, k]), 0), max(int(l_[i, k]), 0)
            y2, x2 = max(int(t[i, k] + hh[i, k]), 0), max(int(l_[i, k] + ww[i, k]), 0)
            keep[i, 0, y1:y2, x1:x2] = 0
    return keep


# ------------------------------------------------------------------------------- the primitive
def test_box_mask_covers_each_sample_its_own_box_with_the_exact_area():
    g, b, height, width = gen(0), 256, 20, 28
    h, w = torch.randint(0, height + 1, (b,), generator=g), torch.randint(0, width + 1, (b,), generator=g)
    top = (torch.rand(b, generator=g) * (height - h + 1)).long().clamp(max=height - h)
    left = (torch.rand(b, generator=g) * (width - w + 1)).long().clamp(max=width - w)
    keep = box_mask(top, left, h, w, height, width)
    assert keep.shape == (b, 1, height, width) and keep.dtype == torch.float32
    assert torch.equal((keep == 0).flatten(1).sum(1), h * w)  # area == the box's area, every sample
    assert torch.equal(keep, reference_mask(top, left, h, w, height, width))
    assert torch.equal(box_mask(top, left, h, w, height, width, dtype=torch.bool), keep.bool())
    assert len({tuple(k.flatten().tolist()) for k in keep}) > b // 2  # per-sample boxes, not one shared


def test_box_mask_clips_a_box_at_every_border():
    # 8 x 8 image; each box reaches past one or two borders: only its part inside is covered
    top, left = torch.tensor([-2, 6, -3, 5, 0]), torch.tensor([6, -1, -3, 5, 0])
    h, w = torch.tensor([5, 4, 20, 9, 0]), torch.tensor([5, 3, 20, 1, 8])
    inside = (box_mask(top, left, h, w, 8, 8) == 0)[:, 0]
    assert inside.flatten(1).sum(1).tolist() == [3 * 2, 2 * 2, 64, 3 * 1, 0]
    assert inside[0, :3, 6:].all() and inside[1, 6:, :2].all() and inside[3, 5:, 5].all()
    assert torch.equal(box_mask(top, left, h, w, 8, 8), reference_mask(top, left, h, w, 8, 8))


def test_centred_box_clips_and_keeps_or_trims_an_odd_side():
    cy, cx = torch.tensor([0, 4, 7]), torch.tensor([7, 4, 0])
    assert [t.tolist() for t in centred_box(cy, cx, 6, 6, 8, 8)] == [[0, 1, 4], [4, 1, 0], [3, 6, 4], [4, 6, 3]]
    # odd side 5: Cutout's [c - 2, c + 2) covers 4; kept, [c - 2, c + 3) covers 5 (then clipped)
    assert [t.tolist() for t in centred_box(cy, cx, 5, 5, 8, 8)] == [[0, 2, 5], [5, 2, 0], [2, 4, 3], [3, 4, 2]]
    assert [t.tolist() for t in centred_box(cy, cx, 5, 5, 8, 8, trim_odd=False)] == [
        [0, 2, 5], [5, 2, 0], [3, 5, 3], [3, 5, 3]]
    top, left, h, w = centred_box(cy, cx, 5, 5, 8, 8, trim_odd=False)
    assert torch.equal((box_mask(top, left, h, w, 8, 8) == 0).flatten(1).sum(1), h * w)


def test_box_mask_unions_several_boxes_per_sample():
    top, left = torch.tensor([[0, 2], [0, 4]]), torch.tensor([[0, 2], [0, 4]])
    h = w = torch.tensor([[4, 4], [4, 4]])  # overlapping 2 x 2 in sample 0, touching corners in sample 1
    keep = box_mask(top, left, h, w, 8, 8)
    assert (keep == 0).flatten(1).sum(1).tolist() == [16 + 16 - 4, 32]
    assert torch.equal(keep, reference_mask(top, left, h, w, 8, 8))
    none = torch.zeros(3, 0, dtype=torch.long)  # no box at all (Cutout with n_holes = 0)
    assert torch.equal(box_mask(none, none, none, none, 4, 5), torch.ones(3, 1, 4, 5))


# ---------------------------------------------------------------------------------- placements
def reference_cutout(b: int, h: int, w: int, n: int, length: int, seed: int) -> torch.Tensor:
    """uoguelph-mlrg Cutout, a loop per hole: centre y then x, square [c - L//2, c + L//2) clipped."""
    g = gen(seed)
    cy, cx = torch.randint(h, (b, n), generator=g), torch.randint(w, (b, n), generator=g)
    keep = torch.ones(b, 1, h, w)
    for i in range(b):
        for k in range(n):
            y1, y2 = max(int(cy[i, k]) - length // 2, 0), min(int(cy[i, k]) + length // 2, h)
            x1, x2 = max(int(cx[i, k]) - length // 2, 0), min(int(cx[i, k]) + length // 2, w)
            keep[i, 0, y1:y2, x1:x2] = 0
    return keep


@pytest.mark.parametrize("n_holes, length", [(1, 16), (1, 8), (2, 8), (3, 5), (1, 0), (0, 16)])
def test_cutout_mask_is_the_clipped_squares_union(n_holes, length):
    b, h, w = 64, 32, 24
    keep = cutout_mask(b, h, w, n_holes, length, gen(5))
    assert torch.equal(keep, reference_cutout(b, h, w, n_holes, length, 5))
    side = 2 * (length // 2)  # an odd length cuts one pixel less, as the reference
    holes = (1 - keep).flatten(1).sum(1)
    assert (holes <= n_holes * side * side).all()
    if n_holes == 1 and length == 16:
        cut = (keep[:, 0] == 0)
        for i in range(b):  # one hole: a full rectangle, its area the clipped square's
            rows, cols = cut[i].any(1).nonzero(), cut[i].any(0).nonzero()
            assert holes[i] == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert (holes == side * side).any()  # unclipped squares occur, at full size


def test_cutout_mask_keeping_odd_sides_is_d_mask():
    # the same centres; an odd side: 13 x 13 where unclipped (Cutout: 12 x 12); an even side: one mask
    kept, trimmed = cutout_mask(256, 32, 32, 1, 13, gen(3), trim_odd=False), cutout_mask(256, 32, 32, 1, 13, gen(3))
    area_kept, area_trim = (kept == 0).flatten(1).sum(1), (trimmed == 0).flatten(1).sum(1)
    assert area_kept.max() == 169 and area_trim.max() == 144 and (area_kept >= area_trim).all()
    assert torch.equal(cutout_mask(8, 32, 32, 2, 16, gen(3), trim_odd=False), cutout_mask(8, 32, 32, 2, 16, gen(3)))


def test_cutmix_box_is_the_reference_rand_bbox():
    # clovaai rand_bbox: cut = int(W * sqrt(1 - lam)), centre U{0..W-1}, [c - cut//2, c + cut//2) clipped
    h, w = 28, 36
    lam = sample_beta(0.7, 64, gen(0))
    top, left, bh, bw = cutmix_box(1.0 - lam.double(), h, w, gen(1))  # area = 1 - lam
    replay = gen(1)
    cx = torch.randint(w, (64,), generator=replay)
    cy = torch.randint(h, (64,), generator=replay)
    for i in range(64):
        r = math.sqrt(1.0 - float(lam[i]))
        cut_w, cut_h = int(w * r), int(h * r)
        x1, x2 = min(max(int(cx[i]) - cut_w // 2, 0), w), min(max(int(cx[i]) + cut_w // 2, 0), w)
        y1, y2 = min(max(int(cy[i]) - cut_h // 2, 0), h), min(max(int(cy[i]) + cut_h // 2, 0), h)
        assert (int(top[i]), int(left[i]), int(bh[i]), int(bw[i])) == (y1, x1, y2 - y1, x2 - x1)


def test_inside_box_is_fully_inside_with_exact_area():
    g = gen(2)
    h, w = 32, 24
    for _ in range(20):
        size = (torch.randint(0, h + 1, (64,), generator=g), torch.randint(0, w + 1, (64,), generator=g))
        top, left, bh, bw = inside_box(size, h, w, g)
        assert torch.equal(bh, size[0]) and torch.equal(bw, size[1])
        assert ((top >= 0) & (top + bh <= h) & (left >= 0) & (left + bw <= w)).all()
        assert torch.equal((1 - box_mask(top, left, bh, bw, h, w)).flatten(1).sum(1).long(), bh * bw)
    top, _, _, _ = inside_box((torch.full((4000,), 30), torch.full((4000,), 4)), h, w, g)
    assert set(top.tolist()) == {0, 1, 2}  # every position, corners included


def test_area_lambda_counts_kept_pixels():
    bh, bw = torch.tensor([0, 4, 8, 3]), torch.tensor([0, 4, 8, 5])
    assert torch.equal(area_lambda(bh, bw, 8, 8), torch.tensor([1.0, 0.75, 0.0, 1 - 15 / 64]))
