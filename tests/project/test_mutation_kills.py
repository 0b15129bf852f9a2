"""Exact tests that kill the mutants the other unit tests let live (docs/mutation_survivors.md):
distribution shapes against their law (Kolmogorov-Smirnov / chi-square, fixed seeds, enough
samples), Cutout's exact hole areas with clipping, the EMA copies after a method step, and the
disturbance switches of PairTraining replayed draw by draw."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from raypair.config import run_model
from raypair.methods import build_method
from raypair.ops import pairtrain as pt
from raypair.ops.masks import centred_box, cutout_mask
from raypair.ops.mixing import partner, sample_beta, sample_uniform

from helpers import CIFAR_32 as INFO, data_info, gen, method_of

N = 20_000  # at this size a shape error of ~1.5 % of the CDF is rejected; p > 1e-3 keeps false alarms rare


# ------------------------------------------------------------------------ distribution shapes
def chi2_beta(v, a: float, b: float, bins: int = 20) -> float:
    """Chi-square p-value of ``v`` in ``bins`` cells of equal Beta(a, b) probability. Cells, not KS:
    float32 rounds Beta(0.2, 0.2)'s 1.9 % of mass within 6e-8 of 1 onto 1, which KS sees at 1e-6."""
    edges = stats.beta(a, b).ppf(torch.linspace(0, 1, bins + 1).double().numpy())
    counts, _ = np.histogram(v, edges)
    return stats.chisquare(counts).pvalue


@pytest.mark.parametrize("alpha", [0.2, 1.0, 2.0])
def test_sample_beta_has_the_beta_law(alpha):
    v = sample_beta(alpha, N, gen(0)).double().numpy()
    assert chi2_beta(v, alpha, alpha) > 1e-3
    # and not a neighbouring law: Beta(2 alpha, alpha) (a mutated concentration) is rejected
    assert chi2_beta(v, 2 * alpha, alpha) < 1e-6 and chi2_beta(v, 1.5 * alpha, 1.5 * alpha) < 1e-6


def test_sample_uniform_has_the_uniform_law_on_its_interval():
    u = sample_uniform(0.25, 0.75, N, gen(1)).double().numpy()
    assert stats.kstest(u, stats.uniform(0.25, 0.5).cdf).pvalue > 1e-3
    assert u.min() < 0.2502 and u.max() > 0.7498  # it fills the whole interval


def chi2_uniform(counts: torch.Tensor) -> float:
    """The chi-square test's p-value of ``counts`` against equal cells."""
    return stats.chisquare(counts.double().numpy()).pvalue


def test_cutout_centres_are_uniform_over_the_image():
    # one 2x2 hole per image (length 2: [c-1, c+1)); its bottom-right pixel is the centre (cy, cx)
    b, h, w = 8000, 10, 7
    cut = cutout_mask(b, h, w, 1, 2, gen(2))[:, 0] == 0
    rows, cols = cut.any(2), cut.any(1)
    cy = h - 1 - rows.flip(1).float().argmax(1)  # last cut row
    cx = w - 1 - cols.flip(1).float().argmax(1)
    assert chi2_uniform(torch.bincount(cy, minlength=h)) > 1e-3 and chi2_uniform(torch.bincount(cx, minlength=w)) > 1e-3
    assert cy.min() == 0 and cy.max() == h - 1 and cx.max() == w - 1


def test_perm_partner_is_a_uniform_permutation():
    # the partner of sample 0 over many draws: uniform over the 6 positions, itself included
    firsts = torch.stack([partner(torch.arange(6), "perm", gen(s))[0][0] for s in range(3000)])
    assert chi2_uniform(torch.bincount(firsts, minlength=6)) > 1e-3


# ----------------------------------------------------------------------- Cutout's exact holes
@pytest.mark.parametrize("cy, cx, length, area", [
    (16, 16, 16, 16 * 16),  # inside: the full square
    (0, 0, 16, 8 * 8),  # a corner: a quarter
    (31, 5, 16, 9 * 13),  # rows [23, 32) (clipped below at 32), cols [0, 13) (clipped at 0)
    (3, 30, 8, 7 * 6),  # rows [-1, 7) -> [0, 7), cols [26, 34) -> [26, 32)
    (10, 10, 13, 12 * 12),  # odd side: Cutout's reference cuts 12
])
def test_cutout_hole_area_is_the_clipped_square(cy, cx, length, area):
    box = centred_box(torch.tensor([cy]), torch.tensor([cx]), length, length, 32, 32)
    assert int(box[2] * box[3]) == area
    g = gen(0)
    # find a seed whose first draw is that centre: replay cutout_mask's draws (cy then cx)
    for seed in range(20000):
        g.manual_seed(seed)
        if int(torch.randint(32, (1, 1), generator=g)) == cy and int(torch.randint(32, (1, 1), generator=g)) == cx:
            break
    else:
        pytest.skip("no seed draws that centre")
    keep = cutout_mask(1, 32, 32, 1, length, gen(seed))
    assert int((keep == 0).sum()) == area


def test_cutout_mean_hole_area_is_the_clipped_expectation():
    # E[area] of one side-16 hole on 32x32 with a uniform centre, computed exactly: per axis the mean
    # clipped extent over c = 0..31 of min(c + 8, 32) - max(c - 8, 0)
    ext = sum(min(c + 8, 32) - max(c - 8, 0) for c in range(32)) / 32
    keep = cutout_mask(20000, 32, 32, 1, 16, gen(4))
    area = (keep == 0).flatten(1).sum(1).double()
    assert abs(area.mean().item() - ext * ext) < 4 * area.std().item() / math.sqrt(len(area))


# ------------------------------------------------------------------ PairTraining's switches
def pair_method(beta: float, **knobs):
    m = method_of({"name": "pair_training", **knobs}, INFO)
    m.on_epoch_start(1, 10, {"train_acc": beta})
    return m


BLACK = -torch.tensor(INFO.mean) / torch.tensor(INFO.std)  # the loader's zero pixel, normalised


def rf_by_hand(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RF as methods.md §0 defines it, written out sample by sample (not with the op under test):
    pad by P = 4 (CIFAR's 32 px) with the normalised black, offsets oy then ox ~ U{0..2P}, then
    flip ~ Bernoulli(0.5), all drawn on ``g`` in that order; crop H x W at (oy, ox), reverse columns."""
    b, c, h, w = x.shape
    p = 4
    oy = torch.randint(0, 2 * p + 1, (b,), generator=g)
    ox = torch.randint(0, 2 * p + 1, (b,), generator=g)
    flip = torch.rand(b, generator=g) < 0.5
    out = torch.empty_like(x)
    for i in range(b):
        padded = BLACK.reshape(c, 1, 1).repeat(1, h + 2 * p, w + 2 * p)
        padded[:, p:p + h, p:p + w] = x[i]
        crop = padded[:, int(oy[i]):int(oy[i]) + h, int(ox[i]):int(ox[i]) + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


def holes_by_hand(x: torch.Tensor, side: int, g: torch.Generator) -> torch.Tensor:
    """D-Mask's one zero square per image: centre cy then cx uniform over the image, the square
    [c - side//2, c - side//2 + side) clipped to the image (the side kept for an odd side)."""
    b, _, h, w = x.shape
    cy = torch.randint(h, (b, 1), generator=g)
    cx = torch.randint(w, (b, 1), generator=g)
    out = x.clone()
    for i in range(b):
        y0, x0 = int(cy[i, 0]) - side // 2, int(cx[i, 0]) - side // 2
        out[i, :, max(y0, 0):max(y0 + side, 0), max(x0, 0):max(x0 + side, 0)] = 0.0
    return out


def dmix_by_hand(x: torch.Tensor, y: torch.Tensor, theta: float, k: int, g: torch.Generator):
    """D-Mix as methods.md §3 defines it, sample by sample: a ``diffclass`` partner (scores
    U[0, 1) [B, B], same-label entries -1, the best one), then a box of sides round(sqrt(theta) H) x
    round(sqrt(theta) W) with its corner uniform fully inside (one U[0, 1) [2, B] draw), pasted from
    the partner; soft label (1 - theta_eff) Y + theta_eff Y[j], theta_eff = h w / (H W)."""
    b, _, h, w = x.shape
    score = torch.rand(b, b, generator=g)
    score[y[:, None] == y[None, :]] = -1.0
    j = score.argmax(1)
    ok = score.max(1).values >= 0
    u = torch.rand(2, b, generator=g)
    out, target = x.clone(), torch.zeros(b, k)
    for i in range(b):
        bh, bw = (round(math.sqrt(theta) * h), round(math.sqrt(theta) * w)) if ok[i] else (0, 0)
        top, left = int(u[0, i] * (h - bh + 1)), int(u[1, i] * (w - bw + 1))
        out[i, :, top:top + bh, left:left + bw] = x[j[i], :, top:top + bh, left:left + bw]
        lam = torch.tensor(1.0 - bh * bw / (h * w), dtype=torch.float32)
        target[i, y[i]] += lam
        target[i, y[j[i]]] += 1 - lam
    return out, target


@pytest.mark.parametrize("cumulative", [True, False])
def test_cumulative_rf_crops_and_flips_before_the_dmask_holes(cumulative):
    m = pair_method(0.5, cumulative_rf=cumulative)  # stage 2 (dmask), q = 0.5: one hole of side 13
    x = torch.randn(16, 3, 32, 32, generator=gen(5))
    y = torch.arange(16) % 10
    m.generator.manual_seed(7)
    out = m.mix(x, y).x
    g = gen(7)
    base = rf_by_hand(x, g) if cumulative else x
    assert torch.equal(out, holes_by_hand(base, 13, g))
    if cumulative:  # RF moved the pixels: not the holes on the un-cropped batch
        assert not torch.equal(out, holes_by_hand(x, 13, gen(7)))


@pytest.mark.parametrize("cumulative", [True, False])
def test_cumulative_rf_crops_and_flips_before_the_dmix_paste(cumulative):
    m = pair_method(0.75, cumulative_rf=cumulative)  # stage 3 (dmix), q = 0: theta 0.3
    x = torch.randn(16, 3, 32, 32, generator=gen(5))
    y = torch.arange(16) % 10
    m.generator.manual_seed(9)
    out = m.mix(x, y)
    g = gen(9)
    base = rf_by_hand(x, g) if cumulative else x
    xp, tp = dmix_by_hand(base, y, 0.3, 10, g)
    assert torch.equal(out.x, xp) and torch.equal(out.target, tp)
    assert not torch.equal(out.x, base) and (out.target.max(1).values < 1).all()  # a box was pasted into every row


def test_rf_pads_by_an_eighth_of_the_side_with_black():
    """The op itself against the hand-written RF: at 32 px the pad is 4 (a crop may show up to 4
    black rows or columns, never 5)."""
    x = torch.randn(64, 3, 32, 32, generator=gen(11))
    assert torch.equal(pt.rf(x, gen(12), BLACK), rf_by_hand(x, gen(12)))
    black_rows = [(pt.rf(x, gen(s), BLACK)[:, 0] == BLACK[0]).all(2).sum(1).max().item() for s in range(20)]
    assert max(black_rows) == 4


# ------------------------------------------------------------------------------ VPL's EMA copies
def test_both_ema_copies_follow_the_formula_step_after_step():
    run = run_model().model_validate({"method": {"name": "vpl", "vit_model": "tiny_vit", "ema": True},
                                      "model": {"name": "tiny_cnn"}, "epochs": 10})
    torch.manual_seed(0)
    info = data_info(16, name="cifar10")
    m = build_method(run, info, generator_seed=0).train()
    x, y = torch.randn(8, 3, 16, 16, generator=gen(3)), torch.arange(8) % 10
    pairs = ((m.cnn_ema, m.model), (m.vit_ema, m.vit))
    for t in range(3):  # update t uses decay min(0.9999, (1 + t) / (10 + t)) on the weights before step t
        with torch.no_grad():
            for p in [*m.model.parameters(), *m.vit.parameters()]:
                p.add_(0.5 * (t + 1))  # as if an optimiser step moved every weight
        old = [[e.clone() for e in ema.state_dict().values()] for ema, _ in pairs]
        raw_old = [[r.clone() for r in raw.state_dict().values()] for _, raw in pairs]  # BN stats move in forward
        m(x, y)
        d = (1 + t) / (10 + t)
        for (ema, _), before, raw_before in zip(pairs, old, raw_old):
            for (name, e), o, r in zip(ema.state_dict().items(), before, raw_before):
                if e.is_floating_point():
                    assert torch.allclose(e, d * o + (1 - d) * r, atol=1e-5), (t, name)
                else:  # BatchNorm's counter is copied
                    assert torch.equal(e, r), name
        assert int(m.ema_step) == t + 1


# ------------------------------------------------------------------ which knobs act, which metrics
def method_cfg(**knobs):
    return run_model().model_validate({"method": knobs}).method


@pytest.mark.parametrize("knobs, off", [
    ({"name": "cutout", "n_holes": 0}, {"length"}),
    ({"name": "cutout", "n_holes": 1}, set()),
    ({"name": "cutmix", "cutmix_prob": 0}, {"alpha", "partner"}),
    ({"name": "cutmix", "cutmix_prob": 0.5}, set()),
    ({"name": "bc", "variant": "bc"}, {"plus_stats"}),
    ({"name": "bc", "variant": "bc+"}, set()),
    ({"name": "mixup"}, {"r_x", "r_l", "shared", "top2_tie", "ft_lr"}),
    ({"name": "mixup", "lam": "range", "r_x": 0, "r_l": 0}, {"alpha", "shared", "top2_tie", "ft_lr"}),
    ({"name": "mixup", "lam": "range", "r_x": 0.2, "r_l": 0}, {"alpha", "shared", "ft_lr"}),
    ({"name": "mixup", "lam": "range", "r_x": 0.2, "r_l": 0.1, "ft_epochs": 2}, {"alpha", "top2_tie"}),
    ({"name": "pair_training", "alpha_mode": "one", "stage_ops": "dmix"}, {"gate", "a_min", "a_max", "n_max"}),
    ({"name": "pair_training", "stage_ops": "dmask"}, {"theta_min", "theta_max", "dmix_label"}),
    ({"name": "pair_training", "stage_ops": "rf"}, {"cumulative_rf", "a_min", "a_max", "n_max", "theta_min",
                                                    "theta_max", "dmix_label"}),
])
def test_inactive_knobs_exactly(knobs, off):
    assert method_cfg(**knobs).inactive() == off


def test_metric_declarations_exactly():
    assert method_cfg(name="mixup").eval_pair_metrics() == {"top2", "top2_all"}
    assert method_cfg(name="mixup_c", heads=2).eval_heads() == ("", "single_head1", "single_head2")
    assert method_cfg(name="mixup_c", heads=1).eval_heads() == ("",)
    assert method_cfg(name="mixup_c", heads=2).eval_pair_metrics() == {"acc_head1", "acc_head2"}
    assert method_cfg(name="mixup_c", heads=1).eval_pair_metrics() == {"top2", "top2_all"}


# ------------------------------------------------------------------------- boundaries and errors
def test_unit_interval_check_accepts_both_ends():
    from raypair.ops.mixing import check_unit

    for v in (0.0, 0.5, 1.0):
        check_unit("theta", v)  # no error
    for v in (-1e-9, 1 + 1e-9, float("nan")):
        with pytest.raises(ValueError, match="theta must lie in"):
            check_unit("theta", v)


def test_dmask_schedule_accepts_q_one_and_refuses_outside():
    assert pt.dmask_schedule(1.0, 0.0625, 0.25, 3, 32) == (3, 16, 0.25)
    for q, n_max in ((1.5, 1), (-0.1, 1), (0.5, 0)):
        with pytest.raises(ValueError, match=f"got q={q} n_max={n_max}"):
            pt.dmask_schedule(q, 0.0625, 0.25, n_max, 32)


def test_vpl_stage_bounds_and_percent_rounding():
    from raypair.ops import vpl_ops as V

    assert V.percent_of(50, 201) == 101 and V.percent_of(50, 200) == 100 and V.percent_of(25, 10) == 3
    assert [V.vpl_stage(e, 10, 60, 40) for e in range(10)] == [1] * 6 + [3] * 4  # x + y = 100 is allowed
    for x, y in ((-1, 0), (0, -1), (60, 41), (101, 0)):
        with pytest.raises(ValueError, match=f"got x={x}, y={y}"):
            V.vpl_stage(0, 10, x, y)
    with pytest.raises(ValueError, match="got 4"):
        V.stage_weights(4)


def test_batch_draw_checks_and_is_seeded():
    from raypair.ops.pairing import batch_draw, draw_avoiding

    x, y = torch.arange(1.0, 2.0)[:, None], torch.tensor([3])
    assert torch.equal(batch_draw(x, y, 4, gen(0))[1], torch.tensor([3, 3, 3, 3]))  # a batch of one
    with pytest.raises(ValueError, match=r"got \(0, 1\) and \(0,\)"):
        batch_draw(torch.zeros(0, 1), torch.zeros(0, dtype=torch.long), 2, gen(0))
    with pytest.raises(ValueError, match=r"got \(2, 1\) and \(3,\)"):
        batch_draw(torch.zeros(2, 1), torch.zeros(3, dtype=torch.long), 2, gen(0))
    with pytest.raises(ValueError, match=r"avoid needs shape \[2\], got \(3,\)"):
        batch_draw(torch.zeros(3, 1), torch.zeros(3, dtype=torch.long), 2, gen(0), avoid=torch.zeros(3))
    y = torch.arange(10) % 2
    a = draw_avoiding(y, 64, gen(4), avoid=torch.zeros(64, dtype=torch.long))
    assert torch.equal(a, draw_avoiding(y, 64, gen(4), avoid=torch.zeros(64, dtype=torch.long)))  # the generator's
    assert (y[a] == 1).all()
    # max_rounds reaches the draw: with 0 rounds a row keeps its first candidate, label or not
    g = gen(5)
    first = torch.randint(10, (1, 64), generator=g)[0]
    b = batch_draw(torch.arange(10.0)[:, None], y, 64, gen(5), avoid=torch.zeros(64, dtype=torch.long),
                   max_rounds=0)[1]
    assert torch.equal(b, y[first])


# ------------------------------------------------------------------------------- SamplePairing
def test_sp_schedule_with_an_odd_cycle_and_its_errors():
    from raypair.methods.sample_pairing import sp_active, sp_phases

    # warm-up 1, on 2, off 1 (cycle 3), final from 9: on at 1, 2, 4, 5, 7, 8
    assert sp_phases(10, 0.1, 0.2, 0.1, 0.1) == (1, 2, 1, 9)
    assert [sp_active(e, 10, 0.1, 0.2, 0.1, 0.1) for e in range(10)] == [
        False, True, True, False, True, True, False, True, True, False]
    assert sp_phases(1, 0.0, 1.0, 1.0, 1.0) == (0, 1, 1, 0)  # one epoch, every fraction at 1: allowed
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        sp_phases(0, 0.5, 0.04, 0.01, 0.15)
    for i, key in enumerate(("warmup_frac", "on_frac", "off_frac", "final_off_frac")):
        fr = [0.1, 0.1, 0.1, 0.1]
        fr[i] = 1.5
        with pytest.raises(ValueError, match=f"^{key} must lie in \\[0, 1\\], got 1.5"):
            sp_phases(10, *fr)


def test_sample_pairing_follows_its_own_schedule_epoch_by_epoch():
    from raypair.methods.sample_pairing import sp_active

    knobs = {"warmup_frac": 0.1, "on_frac": 0.2, "off_frac": 0.1, "final_off_frac": 0.2, "pairing": "batch"}
    run = run_model().model_validate({"method": {"name": "sample_pairing", **knobs}, "model": {"name": "tiny_cnn"}})
    m = build_method(run, INFO, generator_seed=0)
    x, y = torch.randn(8, 3, 32, 32, generator=gen(1)), torch.arange(8)
    seen = []
    for e in range(10):
        m.on_epoch_start(e, 10, {})
        out = m.mix(x, y)
        seen.append(out.logs["sp_on"] == 1.0)
        assert (m.active is True) == seen[-1] and torch.equal(out.x, x) != seen[-1]
    assert seen == [sp_active(e, 10, 0.1, 0.2, 0.1, 0.2) for e in range(10)]
    assert seen == [False, True, True, False, True, True, False, True, False, False]


# ------------------------------------------------------------------------------- ERM and mixup
def test_erm_mix_is_the_batch_and_its_one_hot_labels():
    from raypair.ops.losses import one_hot

    run = run_model().model_validate({"method": {"name": "erm"}, "model": {"name": "tiny_cnn"}})
    m = build_method(run, INFO, generator_seed=0)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 9, 3])
    out = m.mix(x, y)
    assert out.x is x and torch.equal(out.target, one_hot(y, 10)) and out.target.shape == (4, 10)


def test_mixup_logs_whether_it_fine_tunes():
    run = run_model().model_validate({"method": {"name": "mixup", "ft_epochs": 1}, "model": {"name": "tiny_cnn"},
                                      "epochs": 2})
    m = build_method(run, INFO, generator_seed=0)
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4)
    m.on_epoch_start(1, 2, {})  # the run's 2 mixing epochs, then 1 fine-tuning epoch
    assert m.mix(x, y).logs["ft"] == 0.0
    m.on_epoch_start(2, 2, {})
    out = m.mix(x, y)
    assert out.logs == {"ft": 1.0} and out.x is x


# ---------------------------------------------------------------------------------- BC's logs
def test_bc_step_logs_its_ratio_and_partnerless_share():
    run = run_model().model_validate({"method": {"name": "bc", "pairing": "batch"}, "model": {"name": "tiny_cnn"}})
    m = build_method(run, INFO, generator_seed=0)
    x, y = torch.randn(8, 3, 32, 32, generator=gen(2)), torch.tensor([0, 0, 0, 0, 0, 0, 0, 1])
    out = m(x, y)
    assert set(out.logs) == {"r_mean", "no_partner"} and float(out.logs["no_partner"]) == 0.0
    assert 0.0 < float(out.logs["r_mean"]) < 1.0


# -------------------------------------------------------------------------------- AutoAugment
def test_autoaugment_draw_order_and_shapes():
    from raypair.ops import autoaugment as A

    sub, u, sign = A.draw(6, 25, gen(8))
    g = gen(8)
    assert torch.equal(sub, torch.randint(25, (6,), generator=g))
    assert torch.equal(u, torch.rand(6, 2, generator=g))
    assert torch.equal(sign, torch.randint(2, (6, 2), generator=g))
