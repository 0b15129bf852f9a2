"""The seeds' models (issue 21 item 6): BC's CIFAR nets (ResNeXt-29 8x64d, Shake-Shake-26 2x96d,
DenseNet-BC) and PairTraining's torchvision-only CNNs registered into timm, the paper-name alias
table, and the Shake-Shake mixing rule. Parameter counts are built on the meta device and compared
with the figures the papers print (or torchvision's published counts), each within one unit of the
last digit printed (papers round or truncate); shapes are checked on small inputs and reduced widths."""
from __future__ import annotations

import pytest
import timm
import torch

from raypair.config import ConfigError, ModelConfig, build_run
from raypair.config.model_names import ALIASES, OWN_MODELS, REFUSED
from raypair.models import param_count
from raypair.models.cifar_bc_nets import ShakeShake, shake

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# (model.name, classes, figure in millions as printed, where it is printed)
PAPER_PARAMS = [
    ("resnext29_8x64d_cifar", 10, "34.4", "Xie et al. 2017, Table 7 (ResNeXt-29, 8x64d: 34.4M)"),
    ("shake_shake26_2x96d_cifar", 10, "26.2", "Gastaldi 2017, Table 1 (26 2x96d: 26.2M)"),
    ("densenet_bc100_cifar", 10, "0.8", "Huang et al. 2017, Table 2 (DenseNet-BC L=100, k=12: 0.8M)"),
    ("vgg16", 1000, "138", "Simonyan & Zisserman 2015, Table 2 (D: 138M)"),
    ("resnet50", 1000, "25.6", "He et al. 2016 / torchvision (25.6M)"),
    ("resnet101", 1000, "44.5", "torchvision's ResNet-101 (44.5M)"),
    ("densenet121", 1000, "8.0", "Huang et al. 2017 ImageNet DenseNet-121 (8.0M)"),
    ("mobilenetv3_large_100", 1000, "5.4", "Howard et al. 2019, Table 3 (MobileNetV3-Large 1.0: 5.4M)"),
    ("vit_small_patch16_224", 1000, "22", "Touvron et al. 2021 (DeiT), Table 1 (ViT-S: 22M)"),
    ("vit_base_patch16_224", 1000, "86", "Dosovitskiy et al. 2021, Table 1 (ViT-Base: 86M)"),
    ("regnety_160", 1000, "83.6", "Radosavovic et al. 2020, Table 3 of the appendix (RegNetY-16GF: 83.6M)"),
]
# torchvision's published counts (its models table / weights meta) for the nets wrapped here
TORCHVISION_PARAMS = {"alexnet_tv": 61_100_840, "googlenet_tv": 6_624_904, "shufflenet_v2_tv": 2_278_604}




def _meta_count(name: str, classes: int) -> int:
    with torch.device("meta"):
        return param_count(timm.create_model(name, num_classes=classes))


@pytest.mark.parametrize("name, classes, printed, where", PAPER_PARAMS, ids=[p[0] for p in PAPER_PARAMS])
def test_parameter_count_matches_the_paper(name: str, classes: int, printed: str, where: str) -> None:
    unit = 10.0 ** -len(printed.partition(".")[2])  # one unit of the last printed digit, in millions
    got = _meta_count(name, classes) / 1e6
    assert abs(got - float(printed)) <= unit, f"{name}: {got:.3f}M vs {printed}M ({where})"


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_torchvision_nets_keep_torchvisions_parameters_and_keys(name: str) -> None:
    import torchvision

    tv_name = {"alexnet_tv": "alexnet", "googlenet_tv": "googlenet", "shufflenet_v2_tv": "shufflenet_v2_x1_0"}[name]
    with torch.device("meta"):
        ours = timm.create_model(name, num_classes=1000)
        theirs = torchvision.models.get_model(tv_name, num_classes=1000, **(
            {"aux_logits": False, "init_weights": True} if tv_name == "googlenet" else {}))
    assert param_count(ours) == TORCHVISION_PARAMS[name]
    # a torchvision weights file loads as is: same keys, same shapes
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


# reduced widths where the test is about shapes (full width on 32x32 where cheap)
SMALL = {"resnext29_8x64d_cifar": dict(depth=11, cardinality=2, base_width=4),
         "shake_shake26_2x96d_cifar": dict(depth=8, base_width=8), "densenet_bc100_cifar": {},
         "alexnet_tv": {}, "googlenet_tv": {}, "shufflenet_v2_tv": {}}
FEATURES = {"resnext29_8x64d_cifar": 1024, "shake_shake26_2x96d_cifar": 32, "densenet_bc100_cifar": 342,
            "alexnet_tv": 4096, "googlenet_tv": 1024, "shufflenet_v2_tv": 1024}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_timm_interface_on_small_inputs(name: str) -> None:
    torch.manual_seed(0)
    side = 64 if name.endswith("_tv") else 16  # AlexNet's pools need >= 63 px
    model = timm.create_model(name, num_classes=7, in_chans=6, drop_rate=0.0, **SMALL[name]).eval()
    x = torch.randn(2, 6, side, side)
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        logits = model(x)
        assert feats.ndim == 4 and pre.shape == (2, model.num_features) and logits.shape == (2, 7)
        assert model.num_features == FEATURES[name]
        assert torch.allclose(model.get_classifier()(pre), logits, atol=1e-5)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3) and model.get_classifier().out_features == 3


def test_the_depth_rules_are_refused_in_one_line() -> None:
    from raypair.models import check_model

    for name, kwargs in (("resnext29_8x64d_cifar", {"depth": 30}), ("shake_shake26_2x96d_cifar", {"depth": 25})):
        with pytest.raises(ConfigError, match=r"^model\.kwargs: .*depth must be"):
            check_model(ModelConfig(name=name, kwargs=kwargs), 10, 3, (32, 32))


def test_shake_forward_mixes_by_alpha_backward_splits_by_beta() -> None:
    g = torch.Generator().manual_seed(1)
    b1, b2 = (torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    alpha, beta = torch.rand(4, 1, 1, 1, generator=g, dtype=torch.float64), torch.rand(4, 1, 1, 1, generator=g,
                                                                                        dtype=torch.float64)
    out = shake(b1, b2, alpha, beta)
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64)
    out.backward(grad)
    assert torch.allclose(out, alpha * b1 + (1 - alpha) * b2, rtol=0, atol=1e-12)
    assert torch.allclose(b1.grad, beta * grad, rtol=0, atol=1e-12)
    assert torch.allclose(b2.grad, (1 - beta) * grad, rtol=0, atol=1e-12)


def _block_with_branch_outputs():
    net = ShakeShake(depth=8, base_width=4, num_classes=3).double()
    block = net.blocks[1]  # 4 -> 8 channels at stride 2: the two-flow shortcut too
    outs: list[torch.Tensor] = []

    def keep(_m, _i, o):
        o.retain_grad()
        outs.append(o)

    for branch in block.branches:
        branch.register_forward_hook(keep)
    return block, outs


def test_shake_block_draws_alpha_and_beta_per_sample_in_training() -> None:
    block, outs = _block_with_branch_outputs()
    x = torch.randn(5, 4, 8, 8, dtype=torch.float64)
    torch.manual_seed(7)
    out = block.train()(x)
    torch.manual_seed(7)  # the block's two draws, in its order: alpha, then beta
    alpha, beta = torch.rand(5, 1, 1, 1, dtype=torch.float64), torch.rand(5, 1, 1, 1, dtype=torch.float64)
    b1, b2 = outs
    short = block.shortcut(x)
    assert torch.allclose(out, alpha * b1 + (1 - alpha) * b2 + short, rtol=0, atol=1e-12)
    grad = torch.randn(out.shape, dtype=torch.float64)
    out.backward(grad)
    assert torch.allclose(b1.grad, beta * grad, rtol=0, atol=1e-12)
    assert torch.allclose(b2.grad, (1 - beta) * grad, rtol=0, atol=1e-12)
    assert len(set(alpha.flatten().tolist())) == 5 and not torch.equal(alpha, beta)  # per sample, independent


def test_shake_block_evaluates_at_one_half() -> None:
    block, outs = _block_with_branch_outputs()
    x = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    block.eval()
    first, second = block(x), block(x)
    b1, b2 = outs[:2]
    assert torch.equal(first, second)
    assert torch.allclose(first, 0.5 * b1 + 0.5 * b2 + block.shortcut(x), rtol=0, atol=1e-12)


def test_every_alias_names_a_model_and_hijacks_no_timm_name() -> None:
    for paper, name in ALIASES.items():
        assert name in OWN_MODELS or timm.is_model(name), (paper, name)
        assert ModelConfig(name=paper).name == name
        assert ModelConfig(name=paper.upper()).name == name  # without regard to case
        # a paper name that is also a timm name must stand for that same model
        assert not timm.is_model(paper.lower()) or paper.lower() == name, paper


def test_the_seeds_names_resolve() -> None:
    # P0 as PaddleClas writes them, the _vd ResNets as timm's ResNet-D; P4's partners
    want = {"ResNet50_vd": "resnet50d", "ResNet101_vd": "resnet101d", "AlexNet": "alexnet_tv",
            "GoogLeNet": "googlenet_tv", "ShuffleNetV2": "shufflenet_v2_tv", "Xception41": "xception41",
            "ViT-S/16": "vit_small_patch16_224", "ViT-B/16": "vit_base_patch16_224", "RegNetY-16GF": "regnety_160"}
    for paper, name in want.items():
        assert ModelConfig(name=paper).name == name
    run = build_run({"method": {"name": "erm"}, "model": {"name": "ResNet50_vd"}})
    assert run.model.name == "resnet50d"


@pytest.mark.parametrize("name", sorted(REFUSED) + ["resnext29_nosuch"])
def test_what_cannot_be_had_is_one_line(name: str) -> None:
    from raypair.models import check_model_name

    with pytest.raises(ConfigError) as err:
        check_model_name(build_run({"method": {"name": "erm"}, "model": {"name": name}}).model.name)
    line = str(err.value)
    assert line.startswith("model.name: ") and name in line and "\n" not in line
    if name in REFUSED:
        assert "cannot be had" in line
    else:
        assert "similar: " in line and "resnext29_8x64d_cifar" in line


def test_an_ablation_file_names_the_papers_models(tmp_path, capsys) -> None:
    """P0's CNNs by their paper names as ablation variants: validated (each built on the meta device),
    and a weights file of another architecture in one variant is one line naming that variant."""
    import yaml

    from raypair.cli import main

    ab = {"name": "p0_models", "run": {"data": {"name": "digits", "image_size": 64}, "model": {"name": "AlexNet"},
                                      "method": {"name": "erm"}, "epochs": 1, "batch_size": 16},
          "variants": {"alexnet": {}, "googlenet": {"model.name": "GoogLeNet"},
                       "resnet50_vd": {"model.name": "ResNet50_vd"}, "shufflenet": {"model.name": "ShuffleNetV2"}},
          "reference": "alexnet", "seeds": [0], "metrics": ["val_acc"]}
    path = tmp_path / "ab.yaml"
    path.write_text(yaml.safe_dump(ab))
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    torch.save(timm.create_model("tiny_cnn", num_classes=10).state_dict(), tmp_path / "tiny.pt")
    ab["variants"]["googlenet"]["model.weights"] = str(tmp_path / "tiny.pt")
    path.write_text(yaml.safe_dump(ab))
    assert main(["validate", str(path)]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "variants.googlenet.model.weights: does not fit googlenet_tv" in line, line
