"""PairTraining (methods.md §5): stage/q at the thresholds, the alpha gate, D-Mask and D-Mix
exactness, omega's exact scaling, the two forward modes, and beta shared by two gloo ranks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from raypair.config import run_model
from raypair.config.methods.pair_training import resolve_ops
from raypair.ops import pairtrain as pt
from raypair.ops.losses import one_hot, soft_cross_entropy
from raypair.ops.masks import cutout_mask

from helpers import CIFAR_32 as INFO, method_of


def cfg_of(**knobs):
    return run_model().model_validate({"method": {"name": "pair_training", **knobs}}).method


def make(beta: float = 0.0, seed: int = 0, norm: bool = True, **knobs):
    """A PairTraining method at ``beta``; every call builds the same tiny CNN (init seed 0)."""
    m = method_of({"name": "pair_training", **knobs}, INFO, model={"name": "tiny_cnn", "kwargs": {"norm": norm}},
                  generator_seed=seed)
    m.on_epoch_start(1, 10, {"train_acc": beta})
    return m


def replay(m, x, y, seed: int):
    """The pair batch a pair step with generator ``seed`` builds (the gate draws on its host stream)."""
    m.generator.manual_seed(seed)
    return m.mix(x, y)


def gate_rows(seed: int, epoch: int, b: int, alpha: float) -> np.ndarray:
    """The rows the per_sample gate pairs in the first step of an epoch: its host stream's first draw
    (the ``gate`` stream of (the method generator's seed, epoch), pinned in tests/ops/test_streams.py)."""
    from raypair.ops.sampling import stream_key
    return np.random.default_rng(stream_key("gate", seed, epoch)).random(b) < alpha


@pytest.mark.parametrize("beta, stage, q", [(0.0, 1, 0.0), (0.2499, 1, 0.9996), (0.25, 2, 0.0), (0.5, 2, 0.5),
                                             (0.7499, 2, 0.9998), (0.75, 3, 0.0), (1.0, 3, 1.0)])
def test_stage_and_q_at_and_around_the_thresholds(beta, stage, q):
    assert pt.stage_of(beta, 0.25, 0.75)[0] == stage
    assert pt.stage_of(beta, 0.25, 0.75)[1] == pytest.approx(q, abs=1e-12)
    logs = make(beta).logs
    assert logs["stage"] == stage and logs["q"] == pytest.approx(q, abs=1e-12) and logs["beta"] == beta
    assert logs["alpha"] == pytest.approx(q, abs=1e-12)  # ramp
    assert ("mask_area" in logs) == (stage == 2) and ("theta" in logs) == (stage == 3)


def test_first_epoch_beta_is_zero_and_alpha_modes():
    m = make()
    m.on_epoch_start(0, 10, {})
    assert (m.beta, m.stage, m.q, m.alpha) == (0.0, 1, 0.0, 0.0)
    assert make(0.5, alpha_mode="beta").alpha == 0.5 and make(0.5, alpha_mode="one").alpha == 1.0
    assert make(0.5, stage_ops=["rf", "none", "dmix"], alpha_mode="one").alpha == 0.0  # op none: no pairs


def test_config_checks_name_the_field():
    with pytest.raises(ValidationError, match=r"t2: must exceed t1=0.5, got 0.4"):
        cfg_of(t1=0.5, t2=0.4)
    with pytest.raises(ValidationError, match=r"theta_max: must be >= theta_min=0.5, got 0.4"):
        cfg_of(theta_min=0.5, theta_max=0.4)
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        cfg_of(theta_max=1.2)
    with pytest.raises(ValidationError, match="omega: must be <= 1 with omega_convex"):
        cfg_of(omega=2.0, omega_convex=True)
    for bad in ("S9", ["rf", "dmask"], ["rf", "dmask", "mixup"]):
        with pytest.raises(ValidationError, match="must be a preset"):
            cfg_of(stage_ops=bad)
    assert cfg_of().aug == "base+" and resolve_ops(cfg_of().stage_ops) == ("rf", "dmask", "dmix")
    assert cfg_of(stage_ops=["none", "dmask", "dmask"]).inactive() == {"theta_min", "theta_max", "dmix_label"}
    assert cfg_of(stage_ops="S1").inactive() >= {"omega", "alpha_mode", "t1", "theta_min", "a_min"}
    assert cfg_of(stage_ops="cutout").inactive() == {"cumulative_rf", "a_min", "a_max", "n_max", "theta_min",
                                                       "theta_max", "dmix_label", "rf_of"}  # no op crops


@pytest.mark.parametrize("gate", ["per_batch", "per_sample"])
def test_pair_fraction_matches_alpha(gate):
    m = make(0.075, stage_ops="rf", gate=gate)  # stage 1, q = alpha = 0.3
    x, y = torch.randn(4, 3, 8, 8), torch.arange(4)
    n = 400
    with torch.no_grad():
        pairs = sum(float(m(x, y).logs["pair"]) for _ in range(n))
    rows = n if gate == "per_batch" else 4 * n
    pairs *= rows / n
    assert abs(pairs - 0.3 * rows) <= 4 * math.sqrt(rows * 0.3 * 0.7)


def test_dmask_holes_follow_the_schedule_exactly():
    m = make(0.5, cumulative_rf=False)  # stage 2, q = 0.5: a = 0.15625, L = round(sqrt(a) 32) = 13 (odd)
    assert pt.dmask_schedule(0.5, 0.0625, 0.25, 1, 32) == (1, 13, 0.15625) and m.logs["mask_area"] == 0.15625
    x = torch.ones(64, 3, 32, 32)
    zero = (m.mix(x, torch.arange(64) % 10).x == 0).all(1)  # [B, H, W]
    rows, cols = zero.any(2), zero.any(1)
    hh, ww = rows.sum(1), cols.sum(1)
    assert torch.equal(zero.sum((1, 2)), hh * ww)  # one rectangle per image
    clipped_h, clipped_w = rows[:, 0] | rows[:, -1], cols[:, 0] | cols[:, -1]
    assert ((hh == 13) | (clipped_h & (hh < 13))).all() and ((ww == 13) | (clipped_w & (ww < 13))).all()
    assert ((hh == 13) & (ww == 13)).any()
    # n_max: n = 1 + floor(q (n_max - 1)); two holes of 13 cover more than one 13x13 somewhere
    assert pt.dmask_schedule(0.5, 0.0625, 0.25, 3, 32)[0] == 2 and pt.dmask_schedule(0.99, 0.0625, 0.25, 2, 32)[0] == 1
    two = (make(0.5, cumulative_rf=False, n_max=3).mix(x, torch.arange(64) % 10).x == 0).all(1).sum((1, 2))
    assert two.max() > 169 and two.max() <= 2 * 169
    # even L: the same mask as Cutout from the same generator state
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(cutout_mask(8, 32, 32, 2, 16, g1, trim_odd=False), cutout_mask(8, 32, 32, 2, 16, g2))


def test_dmix_pastes_exactly_theta_from_another_class_and_label_weighs_it():
    m = make(0.75, cumulative_rf=False)  # stage 3, q = 0: theta = 0.3, box 18 x 18 = 324 px
    b = 8
    x = (torch.arange(b, dtype=torch.float32) + 1).view(b, 1, 1, 1).expand(b, 3, 32, 32).contiguous()
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    out = m.mix(x, y)
    pasted = (out.x != x).all(1)
    assert m.logs["theta"] == pytest.approx(0.3) and torch.equal(pasted.sum((1, 2)), torch.full((b,), 324))
    assert torch.equal(pasted.any(2).sum(1), torch.full((b,), 18))  # an 18 x 18 box
    j = torch.where(pasted, out.x[:, 0], 0.0).amax((1, 2)).long() - 1  # the partner's constant
    assert (y[j] != y).all()
    theta = 324 / 1024
    assert torch.equal(out.target, (1 - theta) * one_hot(y, 10) + theta * one_hot(y[j], 10))
    assert torch.equal(make(0.75, cumulative_rf=False, dmix_label="hard").mix(x, y).target, one_hot(y, 10))
    same = make(0.75, cumulative_rf=False).mix(x, torch.zeros(b, dtype=torch.long))  # no other class: no paste
    assert torch.equal(same.x, x) and torch.equal(same.target, one_hot(torch.zeros(b, dtype=torch.long), 10))


def test_rf_pads_with_normalised_black_and_preview_stage():
    m = make(0.1)  # stage 1: rf
    x = torch.full((32, 3, 32, 32), 5.0)
    out = m.mix(x, torch.arange(32) % 10).x
    black = -torch.tensor(INFO.mean) / torch.tensor(INFO.std)
    is_black = torch.isclose(out, black.view(1, 3, 1, 1).expand_as(out))
    assert ((out == 5.0) | is_black).all() and is_black.any()
    s1 = make(0.9, stage_ops="S1").mix(x, torch.arange(32) % 10)
    assert torch.equal(s1.x, x) and torch.equal(s1.target, one_hot(torch.arange(32) % 10, 10))


def test_cutout_and_cutmix_controls():
    x, y = torch.ones(8, 3, 32, 32), torch.arange(8)
    cut = make(0.5, stage_ops="cutout").mix(x, y)
    zero = (cut.x == 0).all(1)
    assert (zero.any(2).sum(1) <= 16).all() and (zero.any(1).sum(1) <= 16).all() and zero.any()
    assert torch.equal(cut.target, one_hot(y, 10))
    xs = (torch.arange(8, dtype=torch.float32) + 1).view(8, 1, 1, 1).expand(8, 3, 32, 32)
    mixed = make(0.5, stage_ops="cutmix").mix(xs, y)
    own = (mixed.x == xs).all(1).float().mean((1, 2))  # kept fraction; 1 where the partner is the row itself
    pasted = torch.where(mixed.x != xs, mixed.x, 0.0).flatten(1).amax(1)
    j = torch.where(own < 1, pasted.long() - 1, y)
    assert (own < 1).any()
    assert torch.allclose(mixed.target, own[:, None] * one_hot(y, 10) + (1 - own[:, None]) * one_hot(y[j], 10))


@pytest.mark.parametrize("knobs", [{}, {"gate": "per_sample", "alpha_mode": "ramp"}])
def test_omega_scales_the_pair_loss_exactly(knobs):
    x, y = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.arange(8)
    base = {"alpha_mode": "one", **knobs}
    m0 = make(0.9, seed=5, omega=0.0, **base)
    m1 = make(0.9, seed=5, omega=0.7, **base)  # the same network as m0's
    l0, l1 = m0(x, y).loss, m1(x, y).loss
    if knobs:  # per_sample: the mask, then the whole batch disturbed; the sum over paired rows / B
        rows = torch.from_numpy(gate_rows(5, 1, 8, m1.alpha))  # alpha = q = 0.6; make() starts epoch 1
        assert 0 < rows.sum() < 8
        p = replay(m1, x, y, 5)
        lp = soft_cross_entropy(m1.model(p.x[rows]), p.target[rows]) * rows.sum() / 8
    else:
        p = replay(m1, x, y, 5)
        lp = soft_cross_entropy(m1.model(p.x), p.target)
    assert torch.allclose(l1 - l0, 0.7 * lp, atol=1e-5)


def test_both_gates_weigh_the_pair_loss_alpha_omega():
    """With every logit 0 each row's loss is exactly log K, so (loss - log K) / log K is the pair
    loss's weight: per_batch omega or 0, per_sample omega k / B exactly (k paired rows of B). Both
    average alpha omega (alpha = 0.1 here); a mean over the paired rows would give per_sample omega
    whenever one row is paired (about 0.65 omega at B = 10)."""
    b, n, log_k, omega = 10, 300, math.log(10), 0.5
    x, y = torch.randn(b, 3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(b)
    weights = {}
    for gate in ("per_batch", "per_sample"):
        m = make(0.025, stage_ops="rf", gate=gate, omega=omega)  # stage 1, q = alpha = 0.1
        assert m.alpha == pytest.approx(0.1)
        with torch.no_grad():
            for p in m.parameters():
                p.zero_()
            ws = []
            for seed in range(n):
                m.generator.manual_seed(seed)
                out = m(x, y)
                w = (float(out.loss) - log_k) / log_k
                if gate == "per_sample":  # the gate's own draw (its host stream): k rows of b
                    k = int(gate_rows(0, 1, b * n, m.alpha)[seed * b:(seed + 1) * b].sum())
                    assert w == pytest.approx(omega * k / b, abs=1e-6) and float(out.logs["pair"]) == pytest.approx(k / b)
                else:
                    assert w == pytest.approx(omega, abs=1e-6) or w == pytest.approx(0.0, abs=1e-6)
                ws.append(w)
        weights[gate] = sum(ws) / n
    # the per-draw weights are exact; their means sit within 4 sigma of alpha omega
    assert abs(weights["per_batch"] - 0.1 * omega) <= 4 * omega * math.sqrt(0.1 * 0.9 / n)
    assert abs(weights["per_sample"] - 0.1 * omega) <= 4 * omega * math.sqrt(0.1 * 0.9 / (n * b))


def test_omega_mode_beta_and_convex():
    x, y = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.arange(8)
    mb = make(0.8, seed=5, omega_mode="beta", omega=0.5, alpha_mode="one")
    assert mb.omega == pytest.approx(0.4) and float(mb(x, y).logs["omega"]) == pytest.approx(0.4)
    mc = make(0.8, seed=5, omega_convex=True, omega=0.25, alpha_mode="one")
    out = mc(x, y)
    p = replay(mc, x, y, 5)
    expect = 0.75 * F.cross_entropy(mc.model(x), y) + 0.25 * soft_cross_entropy(mc.model(p.x), p.target)
    assert torch.allclose(out.loss, expect, atol=1e-5) and out.labels is None


def test_two_pass_and_joint_both_return_the_x_z_logits():
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8)
    for norm in (False, True):
        two = make(0.9, seed=2, norm=norm, alpha_mode="one")
        joint = make(0.9, seed=2, norm=norm, alpha_mode="one", forward="joint")  # the same network
        out_two, out_joint = two(x, y), joint(x, y)
        p = replay(joint, x, y, 2)
        assert torch.allclose(out_two.logits, two.model(x), atol=1e-5)
        assert torch.allclose(out_joint.logits, joint.model(torch.cat([x, p.x]))[:8], atol=1e-5)
        if not norm:  # without BatchNorm the two modes agree exactly
            assert torch.allclose(out_two.logits, out_joint.logits, atol=1e-5)
            assert torch.allclose(out_two.loss, out_joint.loss, atol=1e-5)


def _rank(rank: int, world: int, init: str, out: str) -> None:
    from raypair.loop import Dist, run_trial

    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    cfg = run_model().model_validate({
        "data": {"name": "digits", "image_size": 16}, "model": {"name": "tiny_cnn"},
        "method": {"name": "pair_training"}, "epochs": 2, "batch_size": 64, "optim": {"lr": 0.05},
        "scale": {"workers": world, "gpus_per_worker": 0}})
    history: list = []
    run_trial(cfg, lambda metrics, ckpt: history.append(metrics), dist=Dist(rank, world), device=torch.device("cpu"))
    torch.save(history, f"{out}/{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_share_beta_the_all_reduced_train_acc(tmp_path):
    torch.multiprocessing.spawn(_rank, args=(2, f"file://{tmp_path}/init", str(tmp_path)), nprocs=2)
    h0, h1 = (torch.load(tmp_path / f"{r}.pt", weights_only=False) for r in (0, 1))
    assert h0[0]["worker"]["train_acc"] != h1[0]["worker"]["train_acc"]  # different shards
    assert h0[0]["train_acc"] == h1[0]["train_acc"] and h0[0]["beta"] == 0.0
    for h in (h0, h1):
        assert h[1]["beta"] == pytest.approx(h0[0]["train_acc"], rel=1e-9)


@pytest.mark.parametrize("rf_of", ["original", "x_z"])
def test_rf_crops_the_original_so_x_p_lies_within_pad_of_it(rf_of):
    """P0's RF is a random crop + flip of the ORIGINAL image: with rf_of original x_p's row offset from
    the original is at most pad (4 px at 32 px); rf_of x_z crops the loader's crop again (up to 8)."""
    from raypair.ops.augment import pad_crop_flip
    from helpers import data_info

    cfg = cfg_of(stage_ops="rf", alpha_mode="one", rf_of=rf_of)
    assert cfg.crops_itself() == (rf_of == "original")  # loop.setup: the loader then leaves the crop to it
    m = method_of({"name": "pair_training", "stage_ops": "rf", "alpha_mode": "one", "rf_of": rf_of},
                  data_info(32, name="cifar10", pipeline="cifar"))
    m.on_epoch_start(1, 10, {"train_acc": 0.1})
    b, s, pad = 256, 32, 4
    x = torch.arange(s * s, dtype=torch.float32).reshape(1, 1, s, s) + 1.0  # each pixel: 1 + its index
    x = x.expand(b, 3, s, s).clone()
    if rf_of == "x_z":  # the loader's pad-crop-flip (padding -1, told apart from every pixel)
        x = pad_crop_flip(x, pad, torch.Generator().manual_seed(1), fill=-1.0)
    seen = []
    hook = m.model.register_forward_pre_hook(lambda _mod, args: seen.append(args[0].detach().clone()))
    m(x, torch.arange(b) % 10)
    hook.remove()
    xz, xp = seen  # two_pass: x_z, then x_p
    rows = [((t[:, 0, s // 2, s // 2] - 1) // s - s // 2).abs() for t in (xz, xp)]  # |row offset| of the centre
    assert int(rows[0].max()) == pad  # x_z: one crop of the original (base+), by the loader or the method
    if rf_of == "original":
        assert int(rows[1].max()) == pad and not torch.equal(xz, xp)  # within pad, and reaching it
    else:
        assert int(rows[1].max()) > pad  # the two crops compound


def test_on_the_imagenet_pipeline_x_p_is_the_loaders_rf_view():
    """224 px: the loader's batch is [x_z | RF of the un-augmented image] (config.loader_views): x_z
    goes to the network as given (normal training's RandomResizedCrop), and the RF stage's x_p is the
    RF view as given (no second crop on top); D-Mask masks that view; a 3-channel batch is refused."""
    from helpers import data_info
    from raypair.config import loader_views

    cfg = cfg_of(stage_ops="rf", alpha_mode="one")
    assert loader_views(cfg, "imagenet") and not loader_views(cfg, "cifar")
    assert not loader_views(cfg_of(stage_ops="rf", alpha_mode="one", rf_of="x_z"), "imagenet")
    info = data_info(224, name="imagenette", pipeline="imagenet")
    b, s = 8, 224
    xz = torch.full((b, 3, s, s), -7.0)  # stands for the RandomResizedCrop
    rfv = torch.randn(b, 3, s, s, generator=torch.Generator().manual_seed(0))
    for ops, stats in (("rf", 0.1), ("rf_dmask_dmask", 0.5)):
        m = method_of({"name": "pair_training", "stage_ops": ops, "alpha_mode": "one"}, info)
        m.on_epoch_start(1, 10, {"train_acc": stats})
        seen = []
        hook = m.model.register_forward_pre_hook(lambda _mod, args: seen.append(args[0].detach().clone()))
        m(torch.cat([xz, rfv], 1), torch.arange(b) % 10)
        hook.remove()
        got_z, got_p = seen
        assert torch.equal(got_z, xz)
        if m.op == "rf":
            assert torch.equal(got_p, rfv)
        else:  # dmask after RF: the RF view with square holes of zeros, nothing else changed
            assert m.op == "dmask"
            kept = got_p != 0
            assert torch.equal(got_p[kept], rfv[kept]) and (~kept).any()
    with pytest.raises(ValueError, match="RF view"):
        m(xz, torch.arange(b) % 10)
