"""The CIFAR nets of raypair.models.cifar_nets: reference parameter counts, timm's head interface, build_model."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from raypair.config import ConfigError, ModelConfig
from raypair.models import build_model, check_model_name, param_count

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Parameter counts of the reference implementations for 10 classes and RGB input, counted on literal
# transcriptions of kuangliu/pytorch-cifar models/{lenet,densenet,vgg}.py and of mil-tokyo/bc_learning_image
# models/convnet.py (whose state dicts also load into these nets and give the same logits).
PARAMS = {"lenet_cifar": 62_006, "densenet_cifar": 1_000_618, "vgg16_cifar": 14_728_266, "convnet_bc": 7_582_154}
FEATURES = {"lenet_cifar": 84, "densenet_cifar": 384, "vgg16_cifar": 512, "convnet_bc": 1024}
NAMES = list(PARAMS)




def make(name: str, **kwargs):
    torch.manual_seed(0)
    return timm.create_model(name, **{"num_classes": 10, **kwargs})


@pytest.mark.parametrize("name", NAMES)
def test_reference_parameter_count_and_heads(name):
    model = make(name).eval()
    assert param_count(model) == PARAMS[name]
    assert model.num_features == FEATURES[name]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        h = model.forward_head(feats, pre_logits=True)
        assert logits.shape == (2, 10)
        assert h.shape == (2, model.num_features)
        assert torch.allclose(model.get_classifier()(h), logits, atol=1e-5)
        model.reset_classifier(5)
        assert model.get_classifier().out_features == 5
        assert model.forward_head(feats).shape == (2, 5)


@pytest.mark.parametrize("name", NAMES)
def test_build_model_and_six_channel_stem(name):
    check_model_name(name)
    model = build_model(ModelConfig(name=name), 10, 3, 32)
    assert param_count(model) == PARAMS[name]
    wide = build_model(ModelConfig(name=name, drop_rate=0.1), 7, 6, 32).eval()
    stem = next(m for m in wide.modules() if isinstance(m, torch.nn.Conv2d))
    assert stem.in_channels == 6  # mixup_c's 2C stem
    with torch.no_grad():
        assert wide(torch.randn(2, 6, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("name", NAMES)
def test_pretrained_weights_refused(name):
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model(name, pretrained=True)


@pytest.mark.parametrize("name", ["densenet_cifar", "convnet_bc"])
def test_sixteen_pixel_inputs(name):
    with torch.no_grad():
        assert make(name).eval()(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_lenet_needs_32_pixels():
    with pytest.raises(ValueError, match="32x32"):
        make("lenet_cifar")(torch.randn(2, 3, 16, 16))


def test_convnet_dropout_is_the_originals():
    model = make("convnet_bc")
    drops = [m.p for m in model.hidden if isinstance(m, torch.nn.Dropout)]
    assert drops == [0.5, 0.5] and model.drop.p == 0.0
    assert not any(m.bias.detach().any() for m in model.modules() if isinstance(m, torch.nn.Linear))
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # no dropout in eval


def test_lenet_one_sgd_step_lowers_the_loss():
    model = make("lenet_cifar")
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    before = F.cross_entropy(model(x), y)
    before.backward()
    opt.step()
    with torch.no_grad():
        assert F.cross_entropy(model(x), y) < before


def test_unknown_name_still_refused():
    with pytest.raises(ConfigError, match=r"^model\.name: unknown timm model .*\(got 'lenet_cifar_nope'\)$"):
        check_model_name("lenet_cifar_nope")
