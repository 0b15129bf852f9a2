"""Exact tests written against mutation survivors of raypair.ops (docs/mutation_survivors.md, "Real gaps
killed"): every expected value comes from a hand computation, a per-sample loop or the equation of
methods.md, never from the function under test. Pure functions on the CPU."""
from __future__ import annotations

import re

import pytest
import torch

from raypair.ops import pairtrain as pt
from raypair.ops import vpl_ops as V
from raypair.ops.augment import pad_crop_flip
from raypair.ops.losses import kl_loss, soft_cross_entropy
from raypair.ops.masks import centred_box
from raypair.ops.metrics import top2_hits
from raypair.ops.mixing import mix, partner
from raypair.ops.pairing import cycle_partners
from raypair.ops.sampling import HoldoutError, holdout_mask, seeded_generator, stream_key

from helpers import gen

# ------------------------------------------------------------------------------- error texts
def test_soft_losses_name_both_shapes():
    z, t = torch.zeros(2, 3), torch.zeros(2, 4)
    for fn in (soft_cross_entropy, kl_loss):
        with pytest.raises(ValueError, match=re.escape("logits (2, 3) and target (2, 4) differ in shape")):
            fn(z, t)


@pytest.mark.parametrize("rho", [0.0, -1.0])
def test_kl_toward_refuses_a_temperature_that_is_not_positive(rho):
    with pytest.raises(ValueError, match=re.escape(f"rho must be > 0, got {rho}")):
        V.kl_toward(torch.zeros(2, 3), torch.zeros(2, 3), rho)


def test_alpha_of_names_the_bad_mode():
    with pytest.raises(ValueError, match=re.escape("alpha_mode must be ramp, beta or one, got 'half'")):
        pt.alpha_of("half", 0.5, 0.5)


@pytest.mark.parametrize("t1,t2", [(0.0, 0.5), (0.5, 0.5), (0.6, 0.5), (0.25, 1.0)])
def test_stage_of_needs_strictly_increasing_thresholds_inside_0_1(t1, t2):
    with pytest.raises(ValueError, match=re.escape(f"need 0 < t1 < t2 < 1, got t1={t1} t2={t2}")):
        pt.stage_of(0.5, t1, t2)


# ------------------------------------------------------------------------------------- rf
@pytest.mark.parametrize("hw,pad", [((32, 32), 4), ((16, 16), 2), ((8, 8), 1), ((4, 4), 1), ((224, 224), 28),
                                    ((8, 32), 1), ((32, 8), 1), ((40, 48), 5)])
def test_rf_pad_is_an_eighth_of_the_shorter_side_at_least_1(hw, pad):
    assert pt.rf_pad(*hw) == pad  # min(H, W) / 8: 4 px at 32 px (methods.md §5.3), 28 px at 224 px


def crop_flip_ref(x: torch.Tensor, pad: int, g: torch.Generator, fill) -> torch.Tensor:
    """airbench's crop + flip by a per-sample loop: oy, ox ~ U{0..2 pad}, flip ~ Bernoulli(0.5)."""
    b, c, h, w = x.shape
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    flip = torch.rand(b, generator=g) < 0.5
    out = torch.empty_like(x)
    for i in range(b):
        p = torch.empty(c, h + 2 * pad, w + 2 * pad, dtype=x.dtype)
        p[:] = torch.as_tensor(fill).to(x.dtype).reshape(-1, 1, 1)
        p[:, pad:pad + h, pad:pad + w] = x[i]
        win = p[:, int(oy[i]):int(oy[i]) + h, int(ox[i]):int(ox[i]) + w]
        out[i] = win.flip(-1) if flip[i] else win
    return out


def test_rf_pads_black_zero_by_default_by_an_eighth_of_the_shorter_side():
    x = torch.rand(5, 2, 8, 32, generator=gen(0)) + 1.0  # non-square: pad 1 (from 8), not 4 (from 32)
    assert torch.equal(pt.rf(x, gen(1)), crop_flip_ref(x, 1, gen(1), 0.0))


def test_pad_crop_flip_keeps_uint8_with_a_per_channel_tensor_fill():
    x = torch.randint(0, 256, (4, 3, 5, 5), generator=gen(2), dtype=torch.uint8)
    fill = torch.tensor([7.0, 8.0, 9.0])
    out = pad_crop_flip(x, 2, gen(3), fill)
    assert out.dtype == torch.uint8
    assert torch.equal(out, crop_flip_ref(x, 2, gen(3), fill))


# ------------------------------------------------------------------------------------ boxes
@pytest.mark.parametrize("cy,cx,sh,sw,trim,want", [
    (0, 0, 1, 4, True, (0, 0, 0, 2)),     # an odd side 1 trims to 0 rows: [0, 0)
    (0, 3, 1, 4, True, (0, 1, 0, 4)),
    (0, 3, 0, 4, False, (0, 1, 0, 4)),    # side 0 kept as 0
    (9, 2, 4, 2, True, (6, 1, 0, 2)),    # centre below the 6-row image: rows [7, 11) -> empty at 6
    (3, 12, 2, 2, True, (2, 8, 2, 0)),    # centre right of the 8-column image: empty at 8
    (-3, -2, 4, 6, True, (0, 0, 0, 1)),   # centre above / left: rows [-5, -1) empty, cols [-5, 1)
    (2, 5, 5, 5, False, (0, 3, 5, 5)),    # odd side kept: [c - 2, c + 3)
    (0, -5, 2, 4, True, (0, 0, 1, 0)),    # cols [-7, -3): empty at 0
    (2, 0, 4, 1, True, (0, 0, 4, 0)),     # an odd side 1 trims to 0 columns: [0, 0)
])
def test_centred_box_is_the_clipped_interval_by_hand(cy, cx, sh, sw, trim, want):
    top, left, h, w = centred_box(torch.tensor([cy]), torch.tensor([cx]), sh, sw, 6, 8, trim)
    assert (int(top), int(left), int(h), int(w)) == want


# ----------------------------------------------------------------------------------- top-2
def test_top2_with_two_classes_by_hand():
    logits = torch.tensor([[0.2, 0.9], [0.9, 0.2], [0.9, 0.2]])
    y_a, y_b = torch.tensor([0, 0, 1]), torch.tensor([1, 1, 1])
    top2, top2_all = top2_hits(logits, y_a, y_b, 0.3)  # b weighs 0.7: b first
    assert top2.tolist() == [True, False, False] and top2_all.tolist() == [True, True, False]


def test_top2_b_first_needs_both_places():
    # class 1 (= y_b) first but class 2 (not y_a) second: not a hit in any order
    logits = torch.tensor([[0.0, 3.0, 2.0, 1.0]])
    top2, top2_all = top2_hits(logits, torch.tensor([0]), torch.tensor([1]), 0.3)
    assert top2.tolist() == [False] and top2_all.tolist() == [False]


@pytest.mark.parametrize("shape_l,shape_a,shape_b", [((3, 1), (3,), (3,)), ((3, 4, 1), (3,), (3,)),
                                                     ((3, 4), (4,), (4,)), ((3, 4), (3,), (2,))])
def test_top2_refuses_bad_shapes_with_their_sizes(shape_l, shape_a, shape_b):
    want = f"need logits [B, K>=2] and labels [B], got {shape_l}, {shape_a} and {shape_b}"
    with pytest.raises(ValueError, match=re.escape(want)):
        top2_hits(torch.zeros(shape_l), torch.zeros(shape_a, dtype=torch.long), torch.zeros(shape_b, dtype=torch.long),
                  0.5)


# ----------------------------------------------------------------------------------- mixing
def test_mix_keeps_float32_with_a_float64_per_sample_ratio():
    a, b = torch.ones(2, 3), torch.zeros(2, 3)
    lam = torch.tensor([1 / 3, 0.25], dtype=torch.float64)
    out = mix(a, b, lam)
    assert out.dtype == torch.float32
    assert torch.equal(out[:, 0], torch.tensor([1 / 3, 0.25], dtype=torch.float32))


def test_diffclass_partner_with_a_zero_score_is_still_valid(monkeypatch):
    # the scores are U[0, 1): a draw of exactly 0.0 is a valid partner of another class (best >= 0)
    real = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.zeros(real(*a, **k).shape))
    j, ok = partner(torch.tensor([0, 1, 1]), "diffclass", gen(0))
    assert ok.tolist() == [True, True, True] and j.tolist() == [1, 0, 0]


@pytest.mark.parametrize("rule", ["perm", "flip", "roll"])
def test_partner_ok_is_bool(rule):
    _, ok = partner(torch.tensor([0, 1, 2]), rule, gen(0))
    assert ok.dtype == torch.bool and ok.tolist() == [True] * 3


# --------------------------------------------------------------------------------- pairing
@pytest.mark.parametrize("n,seed", [(2, 0), (7, 3), (10, 11)])
def test_cycle_partners_follow_their_seeded_permutation_forward(n, seed):
    # docstring: pi[p[k]] = p[(k + 1) % n] for p = randperm(n) on the eval.partners stream of seed
    p = torch.randperm(n, generator=torch.Generator().manual_seed(stream_key("eval.partners", seed))).tolist()
    pi = cycle_partners(n, seed)
    assert pi.dtype == torch.int64
    pi = pi.tolist()
    assert all(pi[p[k]] == p[(k + 1) % n] for k in range(n))


# -------------------------------------------------------------------------------- sampling
def test_holdout_takes_round_half_up_at_least_one_per_class_and_skips_absent_classes():
    # class 1 has no sample (no error); class 0: 10 x 0.27 = 2.7 -> 3; class 2: 3 x 0.27 = 0.81 -> 1;
    # class 3: 4 x 0.27 = 1.08 -> 1; class 4: 2 x 0.27 = 0.54 -> 1 (of 2, one left)
    y = torch.tensor([0] * 10 + [2] * 3 + [3] * 4 + [4] * 2)
    mask = holdout_mask(y, 0.27, gen(0))
    assert [int(mask[y == c].sum()) for c in (0, 2, 3, 4)] == [3, 1, 1, 1]
    y = torch.tensor([0] * 8 + [2] * 20)  # 8 x 0.0625 = 0.5 -> 1 (half up); 20 x 0.0625 = 1.25 -> 1
    mask = holdout_mask(y, 0.0625, gen(1))
    assert [int(mask[y == c].sum()) for c in (0, 2)] == [1, 1]


def test_holdout_of_a_single_sample_class_raises():
    with pytest.raises(HoldoutError, match="holds out all 1 samples of class 1"):
        holdout_mask(torch.tensor([0, 0, 0, 1]), 0.1, gen(0))


def test_unknown_stream_error_lists_every_stream():
    with pytest.raises(ValueError) as e:
        stream_key("shuffle", 0)
    assert str(e.value) == ("unknown random stream 'shuffle'; one of data.shuffle, data.augment, split.holdout, "
                            "split.train_subset, split.val_subset, split.test_subset, digits.test, method, "
                            "eval.partners, eval.draws, gate, data.crop, split.norm_sample, prepare.mini_split, "
                            "prepare.standin, data.rf")


# ------------------------------------------------------------------------------ pad_crop_flip
# (tests/data/test_data.py covers it through the loader but is not in mutmut's selection)
@pytest.mark.parametrize("pad", [0, 1, 3])
def test_pad_crop_flip_pads_zero_by_default_per_sample_loop(pad):
    x = torch.rand(6, 2, 5, 7, generator=gen(4)) + 1.0
    assert torch.equal(pad_crop_flip(x, pad, gen(5)), crop_flip_ref(x, pad, gen(5), 0.0))


def test_pad_crop_flip_flips_only_below_one_half(monkeypatch):
    real = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.full(real(*a, **k).shape, 0.5))
    x = torch.arange(2 * 9, dtype=torch.float32).reshape(2, 1, 3, 3)
    assert torch.equal(pad_crop_flip(x, 0, gen(0)), x)  # u = 0.5 is not < 0.5: no flip


def test_pad_crop_flip_errors_name_the_bad_value():
    with pytest.raises(ValueError, match=re.escape("x must be [B, C, H, W], got shape (3, 4, 4)")):
        pad_crop_flip(torch.zeros(3, 4, 4), 1, gen(0))
    with pytest.raises(ValueError, match=re.escape("pad must be >= 0, got -1")):
        pad_crop_flip(torch.zeros(1, 3, 4, 4), -1, gen(0))
