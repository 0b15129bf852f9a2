"""Cutout, mixup (with P1's variants and fine-tuning) and CutMix: exact per-method properties on a
tiny CNN, the top-2 metrics on hand-made logits, and a short real run of each through the loop."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import yaml

from raypair.config import ConfigError, build_run, run_model
from raypair.loop import run_trial
from raypair.methods import build_method
from raypair.ops.losses import one_hot
from raypair.ops.metrics import top2_hits
from raypair.ops.masks import cutout_mask
from raypair.ops.mixing import mix
from raypair.experiments.sweep import load_sweep

K, B, S = 10, 8, 16  # classes, batch, side: 16 x 16 = 256 pixels, so pixel fractions are exact floats
INFO = SimpleNamespace(num_classes=K, image_shape=(3, S, S), mean=(0.5,) * 3, std=(0.25,) * 3)


def build(name: str, seed: int = 0, **cfg):
    torch.manual_seed(0)
    run = run_model().model_validate({"method": {"name": name, **cfg}, "model": {"name": "tiny_cnn"}, "epochs": 5})
    return build_method(run, INFO, generator_seed=seed)


def images(seed: int = 0) -> torch.Tensor:
    return torch.randn(B, 3, S, S, generator=torch.Generator().manual_seed(seed))


Y = torch.arange(B)  # unique labels: class c is sample c, so a target row names its partner
ONE_HOT = one_hot(Y, K)


def partner_of(target: torch.Tensor) -> torch.Tensor:
    """The partner j of every row, read off a unique-label target (a row with one class: itself)."""
    other = target.clone()
    other[torch.arange(B), Y] = 0
    return torch.where(other.max(1).values > 0, other.argmax(1), Y)


# -------------------------------------------------------------------------------------- mixup
def test_mixup_zero_ranges_give_the_exact_half_half_average():
    m = build("mixup", lam="range", r_x=0.0, r_l=0.0)
    for seed in range(5):
        x = images(seed)
        out = m.mix(x, Y)
        j = partner_of(out.target)
        assert torch.equal(j.sort().values, Y)  # perm
        assert torch.equal(out.x, (x + x[j]) / 2)
        assert torch.equal(out.target, (ONE_HOT + ONE_HOT[j]) / 2)


def test_mixup_L_averages_the_image_exactly_while_the_label_ratio_varies():
    m = build("mixup", lam="range", r_x=0.0, r_l=0.5)
    lams = []
    for seed in range(6):
        x = images(seed)
        out = m.mix(x, Y)
        j = partner_of(out.target)
        assert torch.equal(out.x, (x + x[j]) / 2) and out.logs["lam_x"] == 0.5
        assert torch.equal(out.target, mix(ONE_HOT, ONE_HOT[j], out.logs["lam_l"]))
        lams.append(float(out.logs["lam_l"]))
    assert len(set(lams)) == 6 and all(0 <= v <= 1 for v in lams)


def test_mixup_X_keeps_the_label_half_half_while_the_image_ratio_varies():
    m = build("mixup", lam="range", r_x=0.3, r_l=0.0)
    lams = []
    for seed in range(6):
        x = images(seed)
        out = m.mix(x, Y)
        j = partner_of(out.target)
        assert torch.equal(out.target, (ONE_HOT + ONE_HOT[j]) / 2) and out.logs["lam_l"] == 0.5
        assert torch.equal(out.x, mix(x, x[j], out.logs["lam_x"]))
        lams.append(float(out.logs["lam_x"]))
    assert len(set(lams)) == 6 and all(0.2 <= v <= 0.8 for v in lams)


def test_original_mixup_shares_one_beta_lambda_and_its_loss_is_the_mixup_criterion():
    m = build("mixup")  # lam: beta, alpha 1
    x = images()
    state = m.generator.get_state()
    mixed = m.mix(x, Y)
    m.generator.set_state(state)
    out = m(x, Y)
    lam, j = mixed.logs["lam_x"], partner_of(mixed.target)
    assert torch.equal(mixed.logs["lam_l"], lam) and torch.equal(mixed.x, mix(x, x[j], lam))
    expect = lam * F.cross_entropy(out.logits, Y) + (1 - lam) * F.cross_entropy(out.logits, Y[j])
    assert torch.allclose(out.loss, expect, atol=1e-6)
    assert torch.equal(out.labels, mixed.target.argmax(1))
    top2, top2_all = top2_hits(out.logits, mixed.target)
    assert out.logs["top2"] == top2.float().mean() and out.logs["top2_all"] == top2_all.float().mean()


@pytest.mark.parametrize("shared", [True, False])
def test_shared_couples_the_two_ratios(shared):
    m = build("mixup", lam="range", r_x=0.5, r_l=0.2, shared=shared)
    u = []
    for seed in range(5):
        logs = m.mix(images(seed), Y).logs
        u.append(((logs["lam_x"] - 0.5) / 0.5, (logs["lam_l"] - 0.5) / 0.2))
    coupled = [abs(a - b) < 1e-5 for a, b in u]
    assert all(coupled) if shared else not any(coupled)


@pytest.mark.parametrize("rule, expect", [("flip", Y.flip(0)), ("roll", (Y - 1) % B)])
def test_mixup_partner_rules(rule, expect):
    assert torch.equal(partner_of(build("mixup", partner=rule).mix(images(), Y).target), expect)


def test_mixup_inactive_knobs():
    cfg = lambda **kw: run_model().model_validate({"method": {"name": "mixup", **kw}, "epochs": 9}).method  # noqa: E731
    assert cfg().inactive() == {"r_x", "r_l", "shared", "ft_lr"}
    assert cfg(lam="range").inactive() == {"alpha", "ft_lr"}
    assert cfg(lam="range", r_x=0.0).inactive() == {"alpha", "shared", "ft_lr"}
    assert cfg(lam="range", ft_epochs=5).inactive() == {"alpha"}


@pytest.mark.parametrize("method, space, bad", [
    ({"name": "mixup", "lam": "range"}, {"method.alpha": {"uniform": [0.1, 2.0]}}, "space.method.alpha"),
    ({"name": "mixup"}, {"method.r_x": {"choice": [0.0, 0.5]}}, "space.method.r_x"),
    ({"name": "mixup", "ft_epochs": 0}, {"method.ft_lr": {"loguniform": [1e-4, 1e-2]}}, "space.method.ft_lr"),
    ({"name": "cutmix", "cutmix_prob": 0.0}, {"method.alpha": {"choice": [0.5, 1.0]}}, "space.method.alpha"),
    ({"name": "mixup", "lam": "range", "ft_epochs": 10},
     {"method.r_x": {"choice": [0.0, 0.5]}, "method.ft_lr": {"loguniform": [1e-4, 1e-2]}}, None),
])
def test_sweeping_a_knob_the_mode_does_not_read_is_refused(tmp_path, method, space, bad):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"name": "s", "run": {"data": {"name": "digits"}, "model": {"name": "tiny_cnn"},
                                                      "method": method, "epochs": 20}, "space": space}))
    if bad is None:
        load_sweep(p)
        return
    with pytest.raises(ConfigError, match=f"^{bad}: is not read"):
        load_sweep(p)


def test_top2_hits_on_hand_made_logits():
    t = torch.zeros(6, 4)
    t[0, 0], t[0, 2] = 0.7, 0.3  # first 0, then 2
    t[1, 0], t[1, 2] = 0.7, 0.3
    t[2, 0], t[2, 2] = 0.7, 0.3
    t[3, 1], t[3, 3] = 0.5, 0.5  # a tie: either order is right
    t[4, 1] = 1.0  # one class (the partner shares the label): top-1
    t[5, 1] = 1.0
    z = torch.tensor([[5.0, 0, 4, 1],  # 0 then 2: both
                      [4.0, 0, 5, 1],  # 2 then 0: set only
                      [5.0, 4, 0, 1],  # 0 then 1: neither
                      [0.0, 4, 1, 5],  # 3 then 1 on a tie: both
                      [0.0, 5, 1, 4],  # top-1 is 1: both
                      [5.0, 4, 1, 0]])  # top-1 is 0: neither
    top2, top2_all = top2_hits(z, t)
    assert top2.tolist() == [True, False, False, True, True, False]
    assert top2_all.tolist() == [True, True, False, True, True, False]
    with pytest.raises(ValueError, match=r"\(6, 4\) and \(6, 3\)"):
        top2_hits(z, t[:, :3])


def test_finetuning_is_hard_label_ce_at_ft_lr_for_exactly_the_last_epochs():
    m = build("mixup", ft_epochs=2, ft_lr=0.01)
    x = images()
    for epoch in range(5):
        lr = m.on_epoch_start(epoch, 5, {})  # the epoch's constant lr, None: the run's schedule
        out = m(x, Y)
        if epoch < 3:
            assert lr is None and out.logs["ft"] == 0.0 and "top2" in out.logs
            assert not torch.allclose(out.loss, F.cross_entropy(out.logits, Y))
        else:
            assert lr == 0.01 and out.logs == {"ft": 1.0} and out.labels is None
            assert torch.equal(m.mix(x, Y).x, x) and torch.equal(m.mix(x, Y).target, ONE_HOT)
            assert torch.equal(out.loss, F.cross_entropy(out.logits, Y))
    plain = build("mixup", ft_lr=0.01)  # ft_epochs 0: never
    for epoch in range(5):
        assert plain.on_epoch_start(epoch, 5, {}) is None


# ------------------------------------------------------------------------------------- cutmix
def test_cutmix_target_weights_equal_the_pasted_fraction_of_the_chosen_partner():
    m = build("cutmix")  # cutmix_prob 1, alpha 1, perm
    x = torch.arange(B, dtype=torch.float32).reshape(B, 1, 1, 1).expand(B, 3, S, S)  # image i is all i
    for _ in range(8):
        out = m.mix(x, Y)
        j = partner_of(out.target)
        assert out.logs["cutmix_frac"] == 1.0 and torch.equal(out.target.sum(1), torch.ones(B))
        pasted = None
        for i in range(B):
            kept = (out.x[i] == i).all(0)
            if j[i] == i:  # kept everything (a perm fixed point, or an empty box)
                assert kept.all() and out.target[i, i] == 1
                continue
            assert torch.equal(out.x[i][:, ~kept], torch.full((3, int((~kept).sum())), float(j[i])))
            assert out.target[i, i] == kept.float().mean() == out.logs["lam"]
            assert out.target[i, j[i]] == 1 - kept.float().mean()
            pasted = ~kept if pasted is None else pasted
            assert torch.equal(~kept, pasted)  # one box for the whole batch


def test_cutmix_prob_zero_is_plain_ce_and_the_gate_follows_the_probability():
    m = build("cutmix", cutmix_prob=0.0)
    x = images()
    mixed = m.mix(x, Y)
    assert torch.equal(mixed.x, x) and torch.equal(mixed.target, ONE_HOT)
    assert mixed.logs == {"cutmix_frac": 0.0, "lam": 1.0}
    out = m(x, Y)
    assert torch.allclose(out.loss, F.cross_entropy(out.logits, Y), atol=1e-6)
    assert torch.equal(out.labels, Y)
    half = build("cutmix", cutmix_prob=0.3)
    frac = sum(half.mix(x, Y).logs["cutmix_frac"] for _ in range(400)) / 400
    assert abs(frac - 0.3) < 0.08  # 3.5 sigma


# ------------------------------------------------------------------------------------- cutout
@pytest.mark.parametrize("n_holes, length", [(1, 16), (2, 8), (1, 5)])
def test_cutout_zeroes_exactly_the_masked_pixels_and_keeps_labels(n_holes, length):
    m = build("cutout", n_holes=n_holes, length=length)
    x = torch.rand(B, 3, S, S, generator=torch.Generator().manual_seed(0)) + 0.5  # no zero anywhere
    state = m.generator.get_state()
    out = m.mix(x, Y)
    keep = cutout_mask(B, S, S, n_holes, length, torch.Generator().set_state(state)).expand_as(x)
    assert torch.equal(out.x == 0, keep == 0) and torch.equal(out.x[keep == 1], x[keep == 1])
    assert (keep == 0).any()
    assert torch.equal(out.target, ONE_HOT) and torch.isclose(out.logs["cut_frac"], 1 - keep.mean())
    step = m(x, Y)
    assert torch.equal(step.labels, Y) and torch.allclose(step.loss, F.cross_entropy(step.logits, Y), atol=1e-6)


# ------------------------------------------------------------------------------ config, loop
@pytest.mark.parametrize("method, field", [
    ({"name": "cutout", "length": -1}, "method.length"),
    ({"name": "cutout", "n_holes": 1.5}, "method.n_holes"),
    ({"name": "mixup", "r_x": 0.6}, "method.r_x"),
    ({"name": "mixup", "lam": "gauss"}, "method.lam"),
    ({"name": "mixup", "partner": "diffclass"}, "method.partner"),
    ({"name": "mixup", "ft_epochs": -1}, "method.ft_epochs"),
    ({"name": "cutmix", "cutmix_prob": 1.5}, "method.cutmix_prob"),
    ({"name": "cutmix", "alpha": 0}, "method.alpha"),
    ({"name": "mixup", "ft_epochs": 4}, "method.ft_epochs"),  # epochs=4: no mixup epoch left
])
def test_bad_method_values_name_their_field(method, field):
    with pytest.raises(ConfigError, match=f"^{field}:"):
        build_run({"method": method, "epochs": 4})
    assert build_run({"method": {"name": "mixup", "ft_epochs": 3}, "epochs": 4}).method.ft_epochs == 3


@pytest.mark.parametrize("method, logs", [
    ({"name": "cutout", "length": 8}, {"cut_frac"}),
    ({"name": "cutmix", "cutmix_prob": 0.5}, {"cutmix_frac", "lam"}),
    ({"name": "mixup", "ft_epochs": 1, "ft_lr": 0.01}, {"lam_x", "lam_l", "top2", "top2_all", "ft"}),
])
def test_each_method_trains_through_the_loop(method, logs):
    cfg = build_run({"data": {"name": "digits", "image_size": 16, "val_fraction": 0.2, "pad": 2},
                     "model": {"name": "tiny_cnn"}, "method": method, "optim": {"lr": 0.2},
                     "schedule": {"name": "cosine"}, "epochs": 2, "batch_size": 64,
                     "scale": {"gpus_per_worker": 0}})
    seen: list[dict] = []
    run_trial(cfg, lambda metrics, folder: seen.append(dict(metrics)))
    assert logs <= set(seen[0]) and all(0.0 <= seen[0][k] <= 1.0 for k in logs)
    assert seen[-1]["val_acc"] > 0.1
    if method["name"] == "mixup":  # the last epoch fine-tunes: hard labels at ft_lr
        assert seen[0]["ft"] == 0.0 and seen[0]["lr"] != 0.01
        assert seen[1]["ft"] == 1.0 and seen[1]["lr"] == 0.01 and "top2" not in seen[1]
