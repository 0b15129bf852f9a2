"""Exact checks of the ops, methods and method configs of methods.md §1-§6 on hand-computed inputs:
error messages and their boundaries, draws replayed from a reference generator (values and the
generator's state after the call), knob sets, buffers. Pure functions or tiny models on CPU."""
from __future__ import annotations

import argparse
import re

import pytest
import torch

from raypair.config.methods.mixup import MixupConfig
from raypair.config.methods.vpl import VplConfig
from raypair.ops import vpl_ops as V
from raypair.ops.bc_prep import bc_plus_constants, bc_target, zero_mean
from raypair.ops.masks import inside_box, side_for_area
from raypair.ops.mixing import cutmix, partner, sample_beta, sample_uniform
from raypair.ops.pairing import batch_draw, draw_avoiding
from raypair.ops.pairtrain import dmix

from helpers import CIFAR_8 as INFO, gen, method_of, next_draw


def method(name: str, info=INFO, seed: int = 0, pool=None, **knobs):
    return method_of({"name": name, **knobs}, info, model={"name": "tiny_cnn", "kwargs": {"norm": True}},
                     generator_seed=seed, pool=pool)


# ------------------------------------------------------------------------------------ masks
def test_inside_box_corners_are_floor_u_times_free_span_plus_one():
    h, w = torch.tensor([1, 3, 0, 5]), torch.tensor([2, 0, 4, 1])
    height, width = 5, 7
    u = torch.rand(2, 4, generator=gen(11))
    ref = gen(11)
    torch.rand(2, 4, generator=ref)
    g = gen(11)
    top, left, hh, ww = inside_box((h, w), height, width, g)
    assert top.tolist() == [int(u[0, i] * (height - h[i] + 1)) for i in range(4)]
    assert left.tolist() == [int(u[1, i] * (width - w[i] + 1)) for i in range(4)]
    assert hh is h and ww is w
    assert next_draw(g) == next_draw(ref)  # exactly 2 x B values drawn


def test_inside_box_clamps_a_draw_rounded_up_to_the_free_span(monkeypatch):
    # a draw of 1.0 (outside torch.rand's [0, 1) on the CPU, where u * n never rounds up to n; the clamp
    # guards a generator whose draw or product does): floor(1.0 * 3) = 3 must still land inside
    u_max = 1.0
    real_rand = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.full(real_rand(*a, **k).shape, u_max))
    top, left, _, _ = inside_box((torch.tensor([2]), torch.tensor([4])), 4, 6, gen(0))
    assert (top.tolist(), left.tolist()) == ([2], [2])  # floor(3.0) = 3 clamped to H - h = 2, W - w = 2


@pytest.mark.parametrize("h,w", [(5, 1), (1, 8), (-1, 1), (1, -1)])
def test_inside_box_rejects_sides_outside_the_image(h, w):
    with pytest.raises(ValueError, match=re.escape(f"box sides must fit in 4x7, got h [{h}] w [{w}]")):
        inside_box((torch.tensor([h]), torch.tensor([w])), 4, 7, gen(0))


def test_side_for_area_rounds_in_float64():
    # sqrt(0.56249999) * 2 = 1.49999999 (float64) -> 1; in float32 0.56249999 is 0.5625 -> 1.5 -> 2
    assert side_for_area(0.56249999, 2).tolist() == 1
    assert side_for_area(torch.tensor([0.25, 0.56249999], dtype=torch.float64), 2).tolist() == [1, 1]


# ----------------------------------------------------------------------------------- mixing
def test_sample_uniform_is_low_plus_span_times_rand():
    u = torch.rand(3, generator=gen(4))
    assert torch.equal(sample_uniform(0.25, 0.75, 3, gen(4)), 0.25 + 0.5 * u)
    with pytest.raises(ValueError, match=re.escape("need low <= high, got [0.5, 0.25]")):
        sample_uniform(0.5, 0.25, 3, gen(4))


# ---------------------------------------------------------------------------------- pairing
def test_draw_avoiding_default_draws_65_rounds_and_keeps_the_last_when_none_differs():
    y = torch.tensor([0, 0, 1])
    avoid = torch.tensor([0, 1, 2])  # row 2: every label differs; rows 0, 1: a re-draw while equal
    for seed in range(6):
        ref = gen(seed)
        cand = torch.randint(3, (65, 3), generator=ref)
        ok = y[cand] != avoid
        first = [int(ok[:, i].nonzero()[0]) if ok[:, i].any() else 64 for i in range(3)]
        g = gen(seed)
        got = draw_avoiding(y, 3, g, avoid)
        assert got.tolist() == [int(cand[first[i], i]) for i in range(3)]
        assert next_draw(g) == next_draw(ref)
    # a row whose label is in every candidate keeps its last draw (round 64), others their first
    y2 = torch.tensor([0, 0])
    avoid2 = torch.tensor([0, 1])
    for seed in range(6):
        cand = torch.randint(2, (65, 2), generator=gen(seed))
        assert draw_avoiding(y2, 2, gen(seed), avoid2).tolist() == [int(cand[64, 0]), int(cand[0, 1])]


def test_draw_avoiding_and_batch_draw_without_avoid_draw_n_indices():
    y = torch.tensor([3, 4, 5, 6])
    x = torch.arange(4.0)[:, None]
    idx = torch.randint(4, (5,), generator=gen(2))
    assert torch.equal(draw_avoiding(y, 5, gen(2)), idx)
    g, ref = gen(2), gen(2)
    xb, yb = batch_draw(x, y, 5, g, avoid=torch.tensor([3, 3, 3, 3, 3]))
    cand = torch.randint(4, (65, 5), generator=ref)
    assert (yb != 3).all() and next_draw(g) == next_draw(ref)
    assert torch.equal(xb[:, 0], yb.float() - 3)
    with pytest.raises(ValueError, match=re.escape("avoid needs shape [5], got (4,)")):
        batch_draw(x, y, 5, g, avoid=y)
    assert cand.shape == (65, 5)


# -------------------------------------------------------------------------------- pairtrain
def test_dmix_theta_bounds_are_inclusive():
    x, y = torch.randn(4, 3, 8, 8, generator=gen(0)), torch.tensor([0, 1, 0, 1])
    x0, t0, lam0 = dmix(x, y, 0.0, 2, gen(1))
    assert torch.equal(x0, x) and lam0.tolist() == [1.0] * 4
    _, _, lam1 = dmix(x, y, 1.0, 2, gen(1))
    assert lam1.tolist() == [0.0] * 4
    for bad in (1.5, -0.25):
        with pytest.raises(ValueError, match=re.escape(f"theta must lie in [0, 1], got {bad}")):
            dmix(x, y, bad, 2, gen(1))


def test_dmix_area_is_theta_in_float64():
    # 2 px images, theta 0.56249999: side round(sqrt(theta) 2) = round(1.49999999) = 1 in float64, while
    # a float32 area (0.5625) would give round(1.5) = 2
    x, y = torch.randn(4, 1, 2, 2, generator=gen(0)), torch.tensor([0, 1, 0, 1])
    assert dmix(x, y, 0.56249999, 2, gen(3))[2].tolist() == [0.75] * 4
    for theta in (0.140625, 0.3, 0.56249999):
        ref = gen(3)
        j, ok = partner(y, "diffclass", ref)
        expect = cutmix(x, torch.eye(2)[y], j, ok.double() * theta, ref, inside=True)
        got = dmix(x, y, theta, 2, gen(3))
        assert all(torch.equal(a, b) for a, b in zip(got, expect))


# ---------------------------------------------------------------------------------- vpl_ops
def test_contrastive_loss_rejects_bad_shapes_and_tau_zero():
    a = torch.ones(2, 3, 4)
    with pytest.raises(ValueError, match=re.escape("need two [N, D] embeddings of one shape, got (2, 3, 4) and (2, 3, 4)")):
        V.contrastive_loss(a, a, 0.1, True)
    with pytest.raises(ValueError, match=re.escape("need two [N, D] embeddings of one shape, got (2, 3) and (3, 3)")):
        V.contrastive_loss(torch.ones(2, 3), torch.ones(3, 3), 0.1, True)
    with pytest.raises(ValueError, match=re.escape("tau must be > 0, got 0.0")):
        V.contrastive_loss(torch.ones(2, 3), torch.ones(2, 3), 0.0, True)


def test_contrastive_loss_on_orthogonal_pairs_is_hand_computed():
    # N = 2, rows e1, e2 for both views, tau 1, normalised: each row's logits over the 3 others are
    # {1 (its other view), 0, 0}: loss = log(e + 2) - 1
    hc = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    got = V.contrastive_loss(hc, hc.clone(), 1.0, True)
    assert abs(float(got) - (torch.log(torch.tensor(torch.e + 2.0)).item() - 1.0)) < 1e-6
    # unnormalised: row 0 logits {4, 0, 0}, row 1 {9, 0, 0}: mean of log(e^4 + 2) - 4 and log(e^9 + 2) - 9
    t = torch.tensor([4.0, 9.0])
    expect = float((torch.log(torch.exp(t) + 2) - t).mean())
    assert abs(float(V.contrastive_loss(hc, hc.clone(), 1.0, False)) - expect) < 1e-6


def _save(path, obj):
    torch.save(obj, path)
    return path


def test_teacher_state_messages_and_weights_only(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match=re.escape(f"teacher_checkpoint: no checkpoint at {missing}, got {str(missing)!r}")):
        V.teacher_state(missing)
    lst = _save(tmp_path / "list.pt", [1, 2])
    with pytest.raises(ValueError, match=re.escape(f"teacher_checkpoint: {lst} is no raypair checkpoint "
                                                   "(no 'method' state dict)")):
        V.teacher_state(lst)
    keys = {f"head.k{i}": torch.zeros(1) for i in range(7)}
    other = _save(tmp_path / "other.pt", {"method": keys})
    with pytest.raises(ValueError, match=re.escape(f"teacher_checkpoint: {other} has no 'vit.' or 'model.' weights, "
                                                   f"got keys {sorted(keys)[:5]}")):
        V.teacher_state(other)
    # weights_only: a pickled object outside torch's allow-list is refused, not executed
    bad = _save(tmp_path / "bad.pt", {"method": {"vit.w": torch.ones(1)}, "args": argparse.Namespace(a=1)})
    with pytest.raises(Exception, match="[Ww]eights only load failed|weights_only"):
        V.teacher_state(bad)
    good = _save(tmp_path / "good.pt", {"method": {"vit.w": torch.ones(2), "model.v": torch.zeros(1)}})
    assert list(V.teacher_state(good)) == ["w"] and list(V.teacher_state(good, ("model.",))) == ["v"]


# ---------------------------------------------------------------------------------- bc_prep
def test_bc_plus_constants_derived_in_float64_and_messages():
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    m64 = 255 * torch.tensor(mean, dtype=torch.float64)
    m, s = bc_plus_constants("other", mean, std, "derived")
    assert torch.equal(m, (m64 - m64.mean()).float())
    assert torch.equal(s, (255 * torch.tensor(std, dtype=torch.float64)).float())
    assert m.dtype == s.dtype == torch.float32
    with pytest.raises(ValueError, match=re.escape("unknown BC+ constants source 'x' (valid: paper, derived)")):
        bc_plus_constants("cifar10", mean, std, "x")
    with pytest.raises(ValueError, match=re.escape("mean and std need the same number of channels, got "
                                                   "(0.5, 0.5) and (0.2,)")):
        bc_plus_constants("cifar10", (0.5, 0.5), (0.2,))
    with pytest.raises(ValueError, match=re.escape("cifar10's BC+ table has 3 channels, got mean (0.5,)")):
        bc_plus_constants("cifar10", (0.5,), (0.2,))


def test_zero_mean_keeps_a_half_precision_dtype_and_names_the_channel_count():
    x = torch.randn(2, 3, 4, 4, generator=gen(0))
    one = [torch.tensor(v) for v in ((0.5, 0.4, 0.3), (0.2, 0.25, 0.3), (1.0, 2.0, 3.0), (50.0, 55.0, 60.0))]
    out = zero_mean(x.bfloat16(), *one)
    assert out.dtype == torch.bfloat16
    with pytest.raises(ValueError, match=re.escape("need x [B, C, H, W], got shape (3, 4, 4)")):
        zero_mean(x[0], *one)
    with pytest.raises(ValueError, match=re.escape("need 3 per-channel values, got [0.5, 0.5]")):
        zero_mean(x, torch.tensor([0.5, 0.5]), *one[1:])


def test_bc_target_names_the_label_modes():
    y = torch.tensor([0])
    with pytest.raises(ValueError, match=re.escape("unknown label mode 'soft' (valid: ratio, major)")):
        bc_target(y, y, torch.tensor([0.5]), 2, "soft")


# ---------------------------------------------------------------------------------- configs
def test_mixup_top2_tie_is_inactive_in_beta_mode_even_with_a_fixed_label_ratio():
    assert "top2_tie" in MixupConfig(lam="beta", r_l=0.0, r_x=0.5).inactive()
    assert "top2_tie" not in MixupConfig(lam="range", r_l=0.0, r_x=0.5).inactive()


def test_vpl_distill_inactive_knobs_by_student():
    base = {"x", "y", "tau", "cl_normalize", "bidirectional", "affine", "dml_update"}
    cnn = VplConfig(mode="distill", teacher_checkpoint="t", student="cnn")
    assert cnn.inactive() == base | {"vit_seed", "lr_vit", "weight_decay_vit"}
    vit = VplConfig(mode="distill", teacher_checkpoint="t", student="vit", distill_loss="kl", ema=False)
    assert vit.inactive() == base | {"lr_cnn", "weight_decay_cnn", "ema_decay"}
    # P4's DIS loss for a transformer student is L_CL: tau, the similarity and A act, rho does not
    plm = VplConfig(mode="distill", teacher_checkpoint="t", student="vit")
    assert plm.inactive() == {"x", "y", "bidirectional", "dml_update", "rho", "lr_cnn", "weight_decay_cnn"}


@pytest.mark.parametrize("mode,student,wd_cnn,wd_vit,expect", [
    ("vpl", "cnn", None, None, {"optim.lr"}),
    ("vpl", "cnn", 0.1, None, {"optim.lr"}),
    ("vpl", "cnn", None, 0.1, {"optim.lr"}),
    ("vpl", "cnn", 0.1, 0.1, {"optim.lr", "optim.weight_decay"}),
    ("distill", "cnn", 0.1, None, {"optim.lr", "optim.weight_decay"}),
    ("distill", "vit", 0.1, None, {"optim.lr"}),
    ("distill", "vit", None, 0.1, {"optim.lr", "optim.weight_decay"}),
])
def test_vpl_unread_run_fields(mode, student, wd_cnn, wd_vit, expect):
    cfg = VplConfig(mode=mode, student=student, weight_decay_cnn=wd_cnn, weight_decay_vit=wd_vit,
                    teacher_checkpoint="t" if mode == "distill" else None)
    assert cfg.unread_run_fields() == expect


# ------------------------------------------------------------------------------------ BC
def test_bc_batch_pairing_replays_diffclass_then_ratio_clamped_to_r_eps():
    y = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3])
    x = torch.randn(8, 3, 8, 8, generator=gen(1))
    m = method("bc", seed=5, pairing="batch", variant="bc", r_eps=0.3)
    ref = gen(5)
    j, ok = partner(y, "diffclass", ref)
    r = sample_uniform(0.0, 1.0, 8, ref).clamp(0.3, 0.7)
    out = m.mix(x, y)
    assert torch.equal(out.x, r.reshape(-1, 1, 1, 1) * x + (1 - r.reshape(-1, 1, 1, 1)) * x[j])
    assert torch.equal(out.target, bc_target(y, y[j], r, 10))
    assert float(out.logs["r_mean"]) == float(r.mean()) and ok.all()
    assert next_draw(m.generator) == next_draw(ref)


def test_bc_dataset_pairing_keeps_the_batch_dtype_and_uses_derived_constants_when_asked():
    from raypair.data import DeviceLoader
    n = 16
    xs = torch.randint(0, 256, (n, 3, 8, 8), generator=gen(5), dtype=torch.uint8)
    pool = DeviceLoader(xs, torch.arange(n) % 4, batch_size=8, mean=INFO.mean, std=INFO.std, train=True,
                        augment=False, pad=2)
    m = method("bc", pool=pool, plus_stats="derived")
    x2, y2, ok = m.pair(torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 3]))
    assert x2.dtype == torch.float64 and ok.all()
    dm, ds = bc_plus_constants("cifar10", INFO.mean, INFO.std, "derived")
    assert torch.equal(m.plus_m.flatten(), dm) and torch.equal(m.plus_s.flatten(), ds)
    assert not any(k.startswith(("plus_", "norm_")) for k in m.state_dict())  # not in checkpoints


# ------------------------------------------------------------------------------- mixup-C
def test_mixup_c_draws_one_lam_then_a_permutation_and_fine_tunes_on_hard_labels():
    from raypair.methods.mixup_c import MixupC
    x, y = torch.randn(4, 3, 8, 8, generator=gen(0)), torch.tensor([0, 1, 2, 3])
    m = method("mixup_c", seed=3)
    ref = gen(3)
    lam = sample_beta(1.0, 1, ref)[0]
    j, _ = partner(y, "perm", ref)
    out = m.mix(x, y)
    assert torch.equal(out.x, torch.cat([lam * x, (1 - lam) * x[j]], 1))
    assert next_draw(m.generator) == next_draw(ref)
    assert m.state_dict()["converted"].dtype == torch.bool
    m._convert()
    single = m.mix(x, y)
    assert torch.equal(single.target, torch.eye(10)[y]) and torch.equal(single.x[:, 3:], torch.zeros_like(x))
    with pytest.raises(ValueError, match=r"got none in Sequential$"):
        MixupC(m.cfg, torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), INFO)


def test_mixup_c_two_heads_train_acc_head2_scores_the_partner_labels():
    y = torch.arange(32) % 10
    x = torch.randn(32, 3, 8, 8, generator=gen(0))
    m = method("mixup_c", seed=3, heads=2, dual_input="lam").eval()  # random input weights: some rows right
    with torch.no_grad():
        m.head2.weight.normal_(0, 5, generator=gen(1))
        out = m(x, y)
        m.generator.manual_seed(3)  # replay the step's draws
        lam = sample_beta(1.0, 1, gen(3))[0]
        x2 = m.mix(x, y).x
        j = partner(y, "perm", [g := gen(3), sample_beta(1.0, 1, g)][0])[0]
        pred = m._heads(x2, both=True)[1].argmax(1)
    acc = float((pred == y[j]).float().mean())
    assert float(out.logs["train_acc_head2"]) == acc and float(out.logs["lam"]) == float(lam)
    assert acc > 0  # some rows right (an index into the flattened logits would be right on none)


# -------------------------------------------------------------------------- SamplePairing
def test_sample_pairing_schedule_uses_final_off_frac_and_pool_draws_keep_the_dtype():
    from raypair.data import DeviceLoader
    from raypair.methods.sample_pairing import sp_active
    m = method("sample_pairing", final_off_frac=0.4)
    got = []
    for e in range(20):
        m.on_epoch_start(e, 20, {})
        got.append(m.active)
    assert got == [sp_active(e, 20, 0.5, 0.04, 0.01, 0.4) for e in range(20)]
    assert got != [sp_active(e, 20) for e in range(20)]
    xs = torch.randint(0, 256, (8, 3, 8, 8), generator=gen(5), dtype=torch.uint8)
    pool = DeviceLoader(xs, torch.arange(8) % 4, batch_size=8, mean=INFO.mean, std=INFO.std, train=True,
                        augment=False, pad=2)
    sp = method("sample_pairing", pool=pool)
    out = sp.mix(torch.zeros(4, 3, 8, 8, dtype=torch.bfloat16), torch.tensor([0, 1, 2, 3]))
    assert out.x.dtype == torch.bfloat16  # a float32 draw mixed in would promote the batch
