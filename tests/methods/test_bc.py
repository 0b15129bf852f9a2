"""BC / BC+ (methods.md §3): exact properties of the pairing, the images, the labels and the loss."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from raypair.ops.bc_prep import bc_plus_constants, bc_target, zero_mean
from raypair.ops.mixing import bc_mix

from helpers import CIFAR_8 as INFO, method_of, uint8_pool


def make(seed: int = 0, info=INFO, pool=None, norm: bool = True, **knobs):
    return method_of({"name": "bc", **knobs}, info, model={"name": "tiny_cnn", "kwargs": {"norm": norm}},
                     generator_seed=seed, pool=pool)


def two_class_batch(b: int = 64):
    """Label 0 images are all 0, label 1 images all 1 (normalised units): a BC image's value
    then gives its ratio back exactly (1 - r for label 0, r for label 1)."""
    y = torch.arange(b) % 2
    return y.float().reshape(-1, 1, 1, 1).expand(b, 3, 8, 8).contiguous(), y


@pytest.mark.parametrize("pairing", ["batch", "dataset"])
def test_partners_always_have_another_label(pairing):
    m = make(pairing=pairing, pool=uint8_pool(40, 4))
    y = torch.tensor([0, 0, 1, 1, 2, 3, 3, 3] * 32)
    x = torch.randn(len(y), 3, 8, 8)
    for _ in range(3):
        x2, y2, ok = m.pair(x, y)
        assert ok.all() and (y2 != y).all()
        assert x2.shape == x.shape
    out = m.mix(x, y)
    assert float(out.logs["no_partner"]) == 0.0


def test_batch_pairing_without_partner_keeps_the_image():
    m = make(pairing="batch", variant="bc")
    x, y = torch.randn(4, 3, 8, 8), torch.full((4,), 3)
    out = m.mix(x, y)
    assert torch.equal(out.x, x) and float(out.logs["no_partner"]) == 1.0 and float(out.logs["r_mean"]) == 1.0
    assert torch.equal(out.target, F.one_hot(y, 10).float())


def test_bc_plus_formula_on_hand_inputs_and_symmetry():
    x1 = torch.tensor([1.0, -1.0, 1.0, -1.0]).reshape(1, 1, 2, 2)  # zero mean, std 1
    x2 = torch.tensor([2.0, 2.0, -2.0, -2.0]).reshape(1, 1, 2, 2)  # zero mean, std 2
    r = torch.tensor([0.5])
    # p = 1 / (1 + 1/2 * 1) = 2/3; (2/3 x1 + 1/3 x2) / sqrt(5/9) = (2 x1 + x2) / sqrt(5)
    expect = torch.tensor([4.0, 0.0, 0.0, -4.0]).reshape(1, 1, 2, 2) / math.sqrt(5)
    assert torch.allclose(bc_mix(x1, x2, r, plus=True), expect, atol=1e-6)
    assert torch.allclose(bc_mix(x1, x2, r, plus=False), 0.5 * x1 + 0.5 * x2)
    a, b = torch.randn(6, 3, 4, 4), torch.randn(6, 3, 4, 4)
    a, b = a - a.mean((1, 2, 3), keepdim=True), b - b.mean((1, 2, 3), keepdim=True)
    rr = torch.rand(6, generator=torch.Generator().manual_seed(3)).clamp(0.01, 0.99)
    assert torch.allclose(bc_mix(a, b, rr, plus=True), bc_mix(b, a, 1 - rr, plus=True), atol=1e-5)


def test_method_bc_plus_image_is_the_formula_on_preprocessed_pair():
    m = make(pairing="batch")  # bc+, ratio; a 2-image batch of 2 labels forces j = [1, 0]
    x, y = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([4, 7])
    out = m.mix(x, y)
    r = out.target[torch.arange(2), y]  # ratio rows carry r exactly
    p = m.prep(x)
    assert torch.allclose(out.x, bc_mix(p, p[[1, 0]], r, plus=True), atol=1e-6)


def test_ratio_labels_sum_to_one_and_equal_r():
    x, y = two_class_batch()
    out = make(seed=2, pairing="batch", variant="bc").mix(x, y)
    r = torch.where(y == 1, out.x[:, 0, 0, 0], 1 - out.x[:, 0, 0, 0])
    assert torch.allclose(out.target.sum(1), torch.ones(len(y)))
    assert torch.allclose(out.target[torch.arange(len(y)), y], r, atol=1e-6)
    assert torch.allclose(out.target[torch.arange(len(y)), 1 - y], 1 - r, atol=1e-6)
    assert (out.target[:, 2:] == 0).all()
    t = bc_target(torch.tensor([1, 2]), torch.tensor([3, 0]), torch.tensor([0.25, 0.75]), 4)
    assert torch.equal(t, torch.tensor([[0.0, 0.25, 0.0, 0.75], [0.25, 0.0, 0.75, 0.0]]))


def test_major_mode_picks_the_larger_ratio_label():
    x, y = two_class_batch(256)
    out = make(seed=4, pairing="batch", variant="bc", label_mode="major").mix(x, y)
    r = torch.where(y == 1, out.x[:, 0, 0, 0], 1 - out.x[:, 0, 0, 0])
    clear = (r - 0.5).abs() > 1e-4
    expect = torch.where(r >= 0.5, y, 1 - y)
    assert torch.equal(out.target.argmax(1)[clear], expect[clear]) and (r < 0.5).any() and (r > 0.5).any()
    assert torch.equal(out.target.sum(1), torch.ones(len(y)))
    t = bc_target(torch.tensor([1, 2]), torch.tensor([3, 0]), torch.tensor([0.25, 0.5]), 4, "major")
    assert torch.equal(t.argmax(1), torch.tensor([3, 2]))


@pytest.mark.parametrize("pairing", ["batch", "dataset"])
def test_r_low_half_keeps_r_at_least_half(pairing):
    m = make(seed=6, pairing=pairing, r_low=0.5, pool=uint8_pool(40, 10))
    y = torch.arange(200) % 10
    out = m.mix(torch.randn(200, 3, 8, 8), y)
    r = out.target[torch.arange(200), y]
    assert (r >= 0.5).all() and (r < 1).all() and r.min() < 0.6


def test_zero_mean_preprocessing_exact_and_applied_at_eval():
    pix = torch.randint(0, 256, (3, 3, 8, 8), generator=torch.Generator().manual_seed(7)).float()
    mean, std = torch.tensor(INFO.mean).view(1, 3, 1, 1), torch.tensor(INFO.std).view(1, 3, 1, 1)
    x = (pix / 255 - mean) / std  # what the loader hands over
    m_c = torch.tensor([4.60, 2.24, -6.84]).view(1, 3, 1, 1)
    s_c = torch.tensor([55.9, 53.7, 56.5]).view(1, 3, 1, 1)
    hand = (pix - pix.mean((1, 2, 3), keepdim=True) - m_c) / s_c
    method = make().eval()
    assert torch.allclose(method.prep(x), hand, atol=1e-4)
    assert torch.allclose(method.eval_logits(x)[""], method.model(hand), atol=1e-4)
    plain = make(variant="bc").eval()
    assert torch.equal(plain.eval_logits(x)[""], plain.model(x))


def test_bc_plus_constants_paper_and_derived():
    m, s = bc_plus_constants("cifar100", INFO.mean, INFO.std)
    assert torch.equal(m, torch.tensor([7.37, 2.13, -9.50])) and torch.equal(s, torch.tensor([57.6, 54.0, 58.5]))
    m, s = bc_plus_constants("cifar10", (0.5, 0.6, 0.7), (0.1, 0.2, 0.3), "derived")
    assert torch.allclose(m, torch.tensor([-25.5, 0.0, 25.5]), atol=1e-4)
    assert torch.allclose(s, torch.tensor([25.5, 51.0, 76.5]), atol=1e-4)
    assert torch.equal(bc_plus_constants("flowers", (0.5,) * 3, (0.1,) * 3)[0], torch.zeros(3))
    with pytest.raises(ValueError, match="source 'nope'"):
        bc_plus_constants("cifar10", INFO.mean, INFO.std, "nope")
    x = torch.zeros(1, 3, 2, 2)
    assert torch.allclose(zero_mean(x, torch.zeros(3), torch.ones(3), torch.zeros(3), torch.ones(3)), x)


def test_kl_loss_finite_with_zero_targets_and_backward():
    m = make(pairing="batch")
    x, y = torch.randn(8, 3, 8, 8), torch.arange(8)
    out = m(x, y)
    target = m.mix(x, y).target
    assert (target == 0).any() and torch.isfinite(out.loss) and out.loss.ndim == 0
    assert out.logits.shape == (8, 10)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_loss_is_kl_in_ratio_mode_and_ce_in_major_mode():
    x, y = torch.randn(8, 3, 8, 8), torch.arange(8)
    for mode in ("ratio", "major"):
        a, b = make(seed=9, pairing="batch", label_mode=mode), make(seed=9, pairing="batch", label_mode=mode)
        out, mixed = a(x, y), b.mix(x, y)
        logp = F.log_softmax(out.logits.float(), 1)
        t = mixed.target
        expect = (t * (t.clamp_min(1e-30).log() - logp)).sum(1).mean() if mode == "ratio" else \
            F.cross_entropy(out.logits, t.argmax(1))
        assert torch.allclose(out.loss, expect, atol=1e-5)
        assert torch.equal(out.labels, t.argmax(1))


def test_no_pool_dataset_pairing_uses_the_batch():
    m = make(pairing="dataset", variant="bc")
    x, y = torch.arange(8.0).reshape(8, 1, 1, 1).expand(8, 3, 8, 8), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    x2, y2, ok = m.pair(x, y)
    assert ok.all() and torch.equal(x2[:, 0, 0, 0].long() >= 4, y2 == 1)


@pytest.mark.parametrize("label_mode", ["ratio", "major"])
def test_clean_and_mixed_trains_the_clean_batch_and_the_mixed_batch(label_mode):
    """P2s's expanded set: the B clean images (hard labels) and the B mixed examples of the same
    draws, in one step; the loss is exactly the mean of the two halves' losses (a net without
    BatchNorm, whose statistics would couple the halves)."""
    x, y = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(8)
    knobs = dict(pairing="batch", label_mode=label_mode, r_low=0.5)
    both = make(seed=3, norm=False, train_set="clean_and_mixed", **knobs)
    only = make(seed=3, norm=False, **knobs)  # the same network and generator seed
    m, ref = both.mix(x, y), only.mix(x, y)
    assert m.x.shape == (16, 3, 8, 8)
    assert torch.equal(m.x[:8], both.prep(x)) and torch.equal(m.target[:8], F.one_hot(y, 10).float())
    assert torch.equal(m.x[8:], ref.x) and torch.equal(m.target[8:], ref.target)
    both.generator.manual_seed(3)
    only.generator.manual_seed(3)
    out, out_mixed = both(x, y), only(x, y)
    clean = F.cross_entropy(both.model(both.prep(x)), y)
    assert torch.allclose(out.loss, (clean + out_mixed.loss) / 2, atol=1e-5)
    assert torch.allclose(out.logits, out_mixed.logits, atol=1e-5) and torch.equal(out.labels, out_mixed.labels)
