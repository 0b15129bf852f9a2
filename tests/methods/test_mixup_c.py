"""mixup-C (methods.md §4.2-§4.4): the 2C-channel input and its target, the dual-head loss, the stem
conversion for fine-tuning (exact, idempotent, resume-safe), the fine-tuning lr after the run's epochs,
P1's two-image test protocol, and ResNet-56."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from raypair.config import ModelConfig, run_model
from raypair.data import DeviceLoader
from raypair.loop import Dist, evaluate
from raypair.methods import METHODS, StepOut, build_method
from raypair.models import build_model, param_count
from raypair.ops.losses import one_hot
from raypair.ops.mixing import sample_beta
from raypair.ops.pairing import cycle_partners

from helpers import CIFAR_32 as INFO, method_of

C = 3


def make(model: str = "tiny_cnn", seed: int = 0, **cfg):
    # a 2C-channel stem: MixupCConfig.images_per_input
    return method_of({"name": "mixup_c", **cfg}, INFO, {"epochs": 20}, model={"name": model}, init_seed=seed)


def batch(b: int = 8, size: int = 32):
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, C, size, size, generator=g), torch.arange(b) % 10


def stem(m):
    return m.model.get_submodule(m.stem_name)


def partner_of(x, second, lam):
    """The partner index j for which the second half is exactly (1 - lam) x_j."""
    j = ((second[:, None] - (1 - lam) * x[None]) ** 2).flatten(2).sum(2).argmin(1)
    assert torch.equal(second, (1 - lam) * x[j])
    return j


@pytest.mark.parametrize("lam_mode", ["beta", "range"])
def test_input_is_channel_concat_and_target_is_mixed_exactly(lam_mode):
    m = make(lam=lam_mode, r=0.2)
    x, y = batch()
    out = m.mix(x, y)
    lam = out.logs["lam"]
    assert out.x.shape == (8, 2 * C, 32, 32) and lam.ndim == 0
    assert torch.equal(out.x[:, :C], lam * x)
    j = partner_of(x, out.x[:, C:], lam)
    assert sorted(j.tolist()) == list(range(8))  # a permutation of the batch
    assert torch.equal(out.target, lam * one_hot(y, 10) + (1 - lam) * one_hot(y[j], 10))
    assert torch.allclose(out.target.sum(1), torch.ones(8))
    if lam_mode == "range":
        assert 0.3 <= float(lam) <= 0.7


def test_lam_range_stays_inside_and_beta_varies():
    m = make(lam="range", r=0.1)
    x, y = batch(2, size=2)
    lams = torch.stack([m.mix(x, y).logs["lam"] for _ in range(100)])
    assert lams.min() >= 0.4 and lams.max() <= 0.6 and lams.std() > 0.03
    mb = make()
    lams = torch.stack([mb.mix(x, y).logs["lam"] for _ in range(100)])
    assert lams.min() < 0.1 and lams.max() > 0.9  # Beta(1, 1) = U[0, 1]


def test_single_head_loss_is_soft_ce_with_top2_logs():
    m = make().eval()
    x, y = batch()
    mixed = make().eval().mix(x, y)  # same seeds: the same draw
    out = m(x, y)
    expect = -(mixed.target * F.log_softmax(m.model(mixed.x), 1)).sum(1).mean()
    assert torch.allclose(out.loss, expect, atol=1e-6)
    assert torch.equal(out.labels, mixed.target.argmax(1))
    assert {"lam", "top2", "top2_all"} <= out.logs.keys()
    assert 0 <= float(out.logs["top2"]) <= float(out.logs["top2_all"]) <= 1


@pytest.mark.parametrize("dual_loss", [None, "sum", "weighted"])
def test_dual_head_loss_is_the_sum_of_the_heads_ces_by_default(dual_loss):
    """P1 §4.2: "we directly add the cross-entropy of the output of the two categories"; the
    lambda-weighted form is the ``dual_loss: weighted`` switch."""
    kw = {} if dual_loss is None else {"dual_loss": dual_loss}
    m = make(heads=2, dual_input="lam", **kw).eval()
    x, y = batch()
    mixed = make(heads=2, dual_input="lam").mix(x, y)
    lam = mixed.logs["lam"]
    j = partner_of(x, mixed.x[:, C:], lam)
    out = m(x, y)
    with torch.no_grad():
        f = m.model.forward_head(m.model.forward_features(mixed.x), pre_logits=True)
        h1, h2 = m.model.get_classifier()(f), m.head2(f)
    assert torch.equal(out.logits, h1)
    ce1, ce2 = F.cross_entropy(h1, y), F.cross_entropy(h2, y[j])
    expect = lam * ce1 + (1 - lam) * ce2 if dual_loss == "weighted" else ce1 + ce2
    assert torch.allclose(out.loss, expect, rtol=0, atol=1e-6)
    assert float(out.logs["train_acc_head2"]) == (h2.argmax(1) == y[j]).float().mean().item()
    assert float(out.logs["train_acc_head1"]) == (h1.argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("model", ["tiny_cnn", "resnet18_cifar"])
def test_stem_conversion_reproduces_half_half_input(model):
    m = make(model, ft_epochs=1).eval()
    x, _ = batch(2)
    before = m.eval_logits(x)[""]
    assert torch.equal(before, m.model(torch.cat([0.5 * x, 0.5 * x], 1)))
    assert m.on_epoch_start(9, 10, {}) is None and not m._converted  # the run's last mixing epoch
    m.on_epoch_start(10, 10, {})
    assert m._converted and bool(m.converted)
    assert torch.equal(stem(m).weight[:, C:], torch.zeros_like(stem(m).weight[:, C:]))
    after = m.eval_logits(x)[""]
    assert torch.allclose(after, before, rtol=0, atol=1e-5), (after - before).abs().max()
    assert torch.equal(m.mix(x, torch.tensor([1, 2])).x, torch.cat([x, torch.zeros_like(x)], 1))


def test_after_conversion_zero_half_gets_zero_gradient_and_loss_is_hard_ce():
    m = make(heads=2, ft_epochs=1)
    m.on_epoch_start(10, 10, {})
    x, y = batch()
    out = m(x, y)
    assert out.logs == {} and torch.allclose(out.loss, F.cross_entropy(out.logits, y), atol=1e-6)
    out.loss.backward()
    grad = stem(m).weight.grad
    assert torch.equal(grad[:, C:], torch.zeros_like(grad[:, C:])) and grad[:, :C].abs().sum() > 0
    # head 2 stays in the graph (DDP) but learns nothing: exactly zero gradient
    assert torch.equal(m.head2.weight.grad, torch.zeros_like(m.head2.weight))


def test_conversion_is_idempotent_and_survives_state_dict_round_trip():
    m = make(ft_epochs=2)
    m.on_epoch_start(10, 10, {})
    w = stem(m).weight.detach().clone()
    m.on_epoch_start(11, 10, {})
    m.on_epoch_start(11, 10, {})
    assert torch.equal(stem(m).weight, w)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)  # as the loop's checkpoint does
    buf.seek(0)
    resumed = make(ft_epochs=2, seed=1)  # other init, not converted
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert resumed._converted and torch.equal(stem(resumed).weight, w)
    lr = resumed.on_epoch_start(11, 10, {})  # the loop calls it again after a resume: no second conversion
    assert torch.equal(stem(resumed).weight, w) and lr == 1e-3
    x, _ = batch(2)
    assert torch.equal(resumed.eval().eval_logits(x)[""], m.eval().eval_logits(x)[""])
    fresh = make(ft_epochs=2)  # a checkpoint from the mixing phase stays unconverted
    fresh.load_state_dict(make(ft_epochs=2).state_dict())
    assert not fresh._converted


def test_finetuning_follows_the_runs_epochs_at_ft_lr():
    """P1 §5.5 fine-tunes after mixup-C training: the run's 10 mixing epochs stay, 3 ERM epochs follow."""
    m = make(ft_epochs=3, ft_lr=0.0025)
    seen = [m.on_epoch_start(e, 10, {}) for e in range(13)]  # the epoch's constant lr, None: the schedule
    assert seen == [None] * 10 + [0.0025] * 3
    off = make(ft_epochs=0)
    for e in range(10):
        assert off.on_epoch_start(e, 10, {}) is None and not off._converted
    from raypair.config import build_run

    run = build_run({"method": {"name": "mixup_c", "ft_epochs": 10}, "epochs": 10})
    assert (run.epochs, run.total_epochs) == (10, 20)
    assert build_run({"method": {"name": "mixup_c", "ft_epochs": 0}, "epochs": 10}).total_epochs == 10


def test_eval_logits_keys():
    x, _ = batch(4)
    assert list(make().eval().eval_logits(x)) == [""]
    m = make(heads=2, ft_epochs=1).eval()
    heads = m.eval_logits(x)  # the single-image protocol, under its own name
    assert list(heads) == ["single_head1", "single_head2"] and all(v.shape == (4, 10) for v in heads.values())
    assert not torch.equal(heads["single_head1"], heads["single_head2"])
    m.on_epoch_start(10, 10, {})
    assert list(m.eval_logits(x)) == [""]  # fine-tuned: the single-output net


@pytest.mark.parametrize("heads", [1, 2])
def test_contract_on_a_2c_tiny_cnn(heads):
    m = make(heads=heads, ft_epochs=2)
    x, y = batch(size=16)
    for e in range(10):
        m.on_epoch_start(e, 8, {"train_acc": 0.5, "train_loss": 1.0})
        m.train()
        out = m(x, y)
        assert isinstance(out, StepOut) and out.loss.ndim == 0 and torch.isfinite(out.loss)
        assert out.logits.shape == (8, 10)
        m.zero_grad()
        out.loss.backward()
        assert all(p.grad is not None for p in m.parameters())
        assert next(iter(m.eval().eval_logits(x).values())).shape == (8, 10)


def test_config_bounds_inactive_and_stem_check():
    cfg = run_model().model_validate({"method": {"name": "mixup_c"}, "epochs": 20}).method
    assert cfg.inactive() == {"r", "dual_loss", "dual_input", "random_label"}
    two = {"method": {"name": "mixup_c", "heads": 2}}
    assert run_model().model_validate(two).method.inactive() == {"lam", "alpha", "r", "eval_lam"}  # 50/50, sum
    two["method"]["dual_input"] = "lam"
    assert run_model().model_validate(two).method.inactive() == {"r"}
    assert run_model().model_validate({"method": {"name": "mixup_c", "lam": "range",
                                                  "ft_epochs": 0}}).method.inactive() == {
        "alpha", "ft_lr", "dual_loss", "dual_input", "random_label"}
    for bad in ({"r": 0.6}, {"alpha": 0.0}, {"ft_epochs": -1}, {"ft_lr": 0.0}, {"heads": 3}):
        with pytest.raises(ValidationError, match=rf"method\.mixup_c\.{next(iter(bad))}\n"):
            run_model().model_validate({"method": {"name": "mixup_c", **bad}, "epochs": 20})
    with pytest.raises(ValueError, match=r"stem conv takes 2C = 6 channels \(build_method builds it"):
        METHODS.get("mixup_c")(cfg, build_model(ModelConfig(name="tiny_cnn"), 10, C), INFO)  # a C-channel stem


def test_resnet56_cifar_shapes_and_size():
    m = build_model(ModelConfig(name="resnet56_cifar"), 10, 3).eval()
    assert param_count(m) == 853_018  # He et al.: 0.85 M
    assert sum(isinstance(b, torch.nn.Conv2d) for b in m.modules()) == 55  # stem + 27 blocks x 2
    x = torch.randn(2, 3, 32, 32)
    feats = m.forward_features(x)
    assert feats.shape == (2, 64, 8, 8) and m.num_features == 64
    assert m.forward_head(feats, pre_logits=True).shape == (2, 64)
    assert torch.equal(m(x), m.get_classifier()(m.forward_head(feats, pre_logits=True)))
    m.reset_classifier(5)
    assert m(x).shape == (2, 5)
    assert build_model(ModelConfig(name="resnet56_cifar"), 10, 6).conv1.in_channels == 6


class Decode:
    """Stand-in heads for a 2C input whose images are constant, pixel value ``(label + 1) / 16`` (mean 0,
    std 1: the loader passes ``pixel / 255``): head 1 names the label of the first half, head 2 that of
    the second, or (``blind``) head 2 too reads the first half, a head that ignores its own image."""

    def __init__(self, blind: bool = False) -> None:
        self.blind, self.seen = blind, []

    def __call__(self, x2, both):
        self.seen.append(x2)
        first, second = x2[:, :C].mean((1, 2, 3)), x2[:, C:].mean((1, 2, 3))
        lab = lambda v: one_hot((2 * v * 16 - 1).round().long().clamp(0, 9), 10)  # noqa: E731  (halves: 0.5 x)
        return lab(first), lab(first if self.blind else second)


def decodable(n: int = 40):
    y = torch.arange(n) % 10
    x = ((y + 1) * 255 // 16).to(torch.uint8).view(n, 1, 1, 1).expand(n, C, 4, 4).contiguous()
    return DeviceLoader(x, y, batch_size=16, mean=(0.0,) * C, std=(1.0,) * C, train=False)


def test_two_image_protocol_scores_each_head_against_its_own_image():
    """P1 §5.2's 88.41 / 88.61 %: two different test images in one pass, each head scored against its
    own. A head 2 that ignores its image scores only the same-label pairs there, while the
    single-image protocol (both halves one image) calls it perfect."""
    loader = decodable()
    y = loader.y
    pi = cycle_partners(len(y), 3)
    same = (y == y[pi]).double().mean().item()
    assert 0 < same < 1
    for blind, head2 in [(False, 1.0), (True, same)]:
        m = make(heads=2).eval()
        m._heads = Decode(blind)
        out = evaluate(m, loader, amp=False, dist=Dist(), prefix="test", seed=3)
        assert out["test_acc_head1"] == 1.0 and out["test_acc_head2"] == head2
        assert out["test_acc_single_head1"] == out["test_acc"] == 1.0 and out["test_acc_single_head2"] == 1.0
        first, second = torch.cat([s[:, :C] for s in m._heads.seen[1::2]]), \
            torch.cat([s[:, C:] for s in m._heads.seen[1::2]])
        x = torch.cat([b for b, _ in loader.epoch(0)])
        assert torch.equal(first, 0.5 * x) and torch.equal(second, 0.5 * x[pi])  # eval_lam: half
    m = make(heads=2, eval_lam="train", dual_input="lam").eval()  # one lam per pair, drawn as in training
    m._heads = Decode()
    x, yb = batch(6)
    xp = x.flip(0)
    m.eval_pairs(x, yb, xp, yb.flip(0), torch.Generator().manual_seed(5))
    lam = sample_beta(1.0, 6, torch.Generator().manual_seed(5)).view(-1, 1, 1, 1)
    assert torch.equal(m._heads.seen[0], torch.cat([lam * x, (1 - lam) * xp], 1))
    m.on_epoch_start(10, 10, {})
    assert m.eval_pairs(x, yb, xp, yb.flip(0), torch.Generator()) == {}  # converted: one image per input


def test_single_head_test_top2_on_fixed_pairs():
    m = make().eval()
    m._heads = lambda x2, both: (Decode()(x2, both)[0] + 0.5 * Decode()(x2, both)[1], None)
    out = evaluate(m, decodable(), amp=False, dist=Dist(), prefix="val", seed=3)
    y = decodable().y
    differ = (y != y[cycle_partners(len(y), 3)]).double().mean().item()
    assert out["val_top2"] == out["val_top2_all"] == differ  # a same-label pair is a miss (P1: 1 - 2/N)


def test_dual_head_inputs_are_half_half_by_default():
    """P1 §5.2 (88.41 / 88.61, both heads good) fits fixed 50/50 inputs: [0.5 x_i, 0.5 x_j] whatever lam,
    and the two-image test input is 50/50 too, even under eval_lam: train."""
    m = make(heads=2).eval()
    x, y = batch()
    mixed = m.mix(x, y)
    assert float(mixed.logs["lam"]) != 0.5 and torch.equal(mixed.x[:, :C], 0.5 * x)
    partner_of(x, mixed.x[:, C:], torch.tensor(0.5))
    m = make(heads=2, eval_lam="train").eval()
    m._heads = Decode()
    m.eval_pairs(x, y, x.flip(0), y.flip(0), torch.Generator().manual_seed(5))
    assert torch.equal(m._heads.seen[0], torch.cat([0.5 * x, 0.5 * x.flip(0)], 1))


def test_random_second_label_trains_head_2_on_uniform_random_classes():
    """P1 §5.4: one sample's label random: CE(h1, y_i) + CE(h2, u), u ~ U{0..K-1} drawn after lam and j."""
    x, y = batch(64, size=8)
    m, twin = make(heads=2, random_label="second").eval(), make(heads=2, random_label="second").eval()
    out = m(x, y)
    x2, _, j = twin._draw(x, y)
    u = torch.randint(0, 10, y.shape, generator=twin.generator)
    assert (u != y[j]).any()
    with torch.no_grad():
        f = m.model.forward_head(m.model.forward_features(x2), pre_logits=True)
        h1, h2 = m.model.get_classifier()(f), m.head2(f)
    assert torch.allclose(out.loss, F.cross_entropy(h1, y) + F.cross_entropy(h2, u), rtol=0, atol=1e-6)
    assert float(out.logs["train_acc_head2"]) == (h2.argmax(1) == u).float().mean().item()


def test_single_head_test_top2_under_half_is_the_unordered_set():
    """eval_lam: half gives every test pair the label ratio 0.5, a tie: the order cannot be scored, so
    test_top2 = test_top2_all; a prediction with the two classes swapped still counts."""
    m = make().eval()
    x, y = batch(10)
    yp = (y + 1) % 10
    swapped = 2.0 * one_hot(yp, 10) + one_hot(y, 10)  # first the partner's class, then x's
    m._heads = lambda x2, both: (swapped, None)
    out = m.eval_pairs(x, y, x.flip(0), yp, torch.Generator())
    assert out["top2"].all() and torch.equal(out["top2"], out["top2_all"])
