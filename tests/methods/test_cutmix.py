"""CutMix, the method (raypair/methods/cutmix.py): the pasted fraction of the chosen partner in the
target, the probability gate, and the gate's draw on the method generator. The op's own tests
(cutmix, cutmix_beta) are in tests/ops/test_mixing.py, its box in tests/ops/test_masks.py."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from raypair.ops.mixing import cutmix_beta

from helpers import CIFAR_8, MIX_B as B, MIX_ONE_HOT as ONE_HOT, MIX_S as S, MIX_Y as Y
from helpers import gen, method_of, mix_images as images, mix_method as build, mix_partner_of as partner_of
from helpers import next_draw


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


def gated(prob: float):
    """CutMix at ``cutmix_prob=prob`` on CIFAR-10 8 x 8 (a tiny CNN with norm), generator seed 9."""
    return method_of({"name": "cutmix", "cutmix_prob": prob}, CIFAR_8,
                     model={"name": "tiny_cnn", "kwargs": {"norm": True}}, generator_seed=9)


def test_cutmix_gate_is_strictly_below_the_probability_on_the_method_generator():
    x, y = torch.randn(4, 3, 8, 8, generator=gen(0)), torch.tensor([0, 1, 2, 3])
    u = float(torch.rand((), generator=gen(9)))
    torch.manual_seed(123)  # the global RNG must not be the one drawn from
    off = gated(u).mix(x, y)  # u < u is False: not mixed
    assert torch.equal(off.x, x) and float(off.logs["cutmix_frac"]) == 0.0
    m = gated(min(1.0, u + 1e-6))
    on = m.mix(x, y)
    ref = gen(9)
    torch.rand((), generator=ref)
    xm, tm, lam = cutmix_beta(x, torch.eye(10)[y], y, 1.0, "perm", ref)
    assert torch.equal(on.x, xm) and torch.equal(on.target, tm) and float(on.logs["lam"]) == float(lam[0])
    assert next_draw(m.generator) == next_draw(ref)
