"""The Method contract over the registry, the ERM family, the shared losses and the models."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from raypair.config import ModelConfig, run_model
from raypair.methods import METHODS, StepOut, build_method
from raypair.models import build_model, check_model_name, param_count
from raypair.ops.losses import kl_loss, one_hot, soft_cross_entropy
from raypair.registry import Registry

from helpers import data_info, method_of

INFO = data_info(16, mean=(0.5,) * 3, std=(0.25,) * 3)


def tiny():
    torch.manual_seed(0)
    return build_model(ModelConfig(name="tiny_cnn"), 10, 3)


def make(method: dict, **run):
    """A method on a tiny CNN (init seed 0) with generator seed 0, built as the loop builds it."""
    return method_of(method, INFO, run, model={"name": "tiny_cnn", "kwargs": {"norm": True}})


def test_one_hot_and_smoothing_exact():
    y = torch.tensor([0, 3])
    t = one_hot(y, 4, smoothing=0.2)
    assert torch.equal(t, torch.tensor([[0.85, 0.05, 0.05, 0.05], [0.05, 0.05, 0.05, 0.85]]))
    assert torch.allclose(t.sum(1), torch.ones(2))
    with pytest.raises(ValueError, match="got 1.0"):
        one_hot(y, 4, smoothing=1.0)


def test_soft_cross_entropy_equals_mixed_ce():
    z = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    ya, yb, lam = torch.tensor([0, 1, 2, 3, 4, 0]), torch.tensor([1, 2, 3, 4, 0, 0]), 0.3
    t = lam * one_hot(ya, 5) + (1 - lam) * one_hot(yb, 5)
    expect = lam * F.cross_entropy(z, ya) + (1 - lam) * F.cross_entropy(z, yb)
    assert torch.allclose(soft_cross_entropy(z, t), expect, atol=1e-6)


def test_kl_loss_finite_with_zero_targets_and_exact():
    z = torch.zeros(2, 4)  # uniform prediction: KL(onehot || U) = log 4
    t = one_hot(torch.tensor([1, 2]), 4)
    assert math.isclose(kl_loss(z, t).item(), math.log(4), rel_tol=1e-6)
    z.requires_grad_(True)
    kl_loss(z * 3, t).backward()
    assert torch.isfinite(z.grad).all()


def test_registry_refuses_duplicates_and_lists_names():
    r: Registry[int] = Registry("thing")
    r.register("a")(1)
    with pytest.raises(ValueError, match="twice"):
        r.register("a")(2)
    with pytest.raises(KeyError, match=r"valid: a"):
        r.get("b")


@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract(name):
    method = make({"name": name}, epochs=12)
    x, y = torch.randn(8, 3, 16, 16), torch.arange(8) % 10
    method.on_epoch_start(0, 12, {"train_acc": 0.5, "train_loss": 1.0})
    out = method(x, y)
    assert isinstance(out, StepOut) and out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.logits.shape == (8, 10)
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.parameters())
    heads = method.eval_logits(x)
    assert next(iter(heads.values())).shape == (8, 10)


def test_build_method_hands_the_method_everything():
    pool = object()
    m = make({"name": "mixup_c"}, epochs=12, seed=3)
    assert m.pool is None and m.model.get_submodule(m.stem_name).in_channels == 6  # 2C: images_per_input
    torch.manual_seed(0)
    run = run_model().model_validate({"method": {"name": "erm"}, "model": {"name": "tiny_cnn"}, "seed": 3})
    erm = build_method(run, INFO, device="cpu", rank=2, pool=pool)
    assert erm.pool is pool and erm.generator.device == torch.device("cpu")
    from raypair.ops.sampling import stream_key  # its keys are pinned in tests/ops/test_streams.py
    assert torch.equal(erm.generator.get_state(), torch.Generator().manual_seed(stream_key("method", 3, 2)).get_state())
    other = build_method(run, INFO, device="cpu", rank=1, pool=pool)
    assert other.generator.initial_seed() != erm.generator.initial_seed()  # one stream per worker
    assert next(mod for mod in erm.model.modules() if isinstance(mod, torch.nn.Conv2d)).in_channels == 3
    assert [len(g["params"]) for g in erm.optim_groups()] == [len(list(erm.parameters()))]


def test_erm_loss_is_cross_entropy_and_smoothing_is_soft_ce():
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([1, 2, 3, 4])
    m = make({"name": "erm"}).eval()
    out = m(x, y)
    assert torch.allclose(out.loss, F.cross_entropy(out.logits, y))
    ms = make({"name": "erm", "label_smoothing": 0.1}).eval()
    out = ms(x, y)
    assert torch.allclose(out.loss, soft_cross_entropy(out.logits, one_hot(y, 10, 0.1)), atol=1e-6)


def test_cifar_resnet18_has_cifar_stem():
    m = build_model(ModelConfig(name="resnet18_cifar"), 10, 3)
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert isinstance(m.maxpool, torch.nn.Identity)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # 32x32 in -> 4x4 feature map out: three stride-2 stages after a stride-1 stem
    assert m.forward_features(torch.randn(1, 3, 32, 32)).shape[-2:] == (4, 4)
    assert 11_000_000 < param_count(m) < 11_300_000


def test_tiny_models_and_timm_lookup():
    assert tiny()(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    vit = build_model(ModelConfig(name="tiny_vit"), 10, 3, image_size=16)
    assert vit(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    assert build_model(ModelConfig(name="resnet18"), 7, 3)(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    from raypair.config import ConfigError

    with pytest.raises(ConfigError, match="^model.name: unknown timm model"):
        check_model_name("resnet18_nosuch")
