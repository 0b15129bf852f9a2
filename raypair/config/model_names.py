"""Model names checked without importing torch or timm where possible: the nets raypair registers
into timm (``raypair/models/``) are listed here, so a run on one of them is validated without
building it; any other name is looked up in timm's registry (importing timm, ~3 s).
``tests/data/test_validate_fast.py`` checks that this list is exactly what ``raypair/models/`` registers,
and that each of these nets builds under every input a config can give it.

``ALIASES``: the seeds' model names as their papers write them -> ``model.name`` (matched without
regard to case, resolved when the config is read, so an ablation file can say ``model.name: ResNet50_vd``;
the run then records ``resnet50d``). ``REFUSED``: paper names no library or raypair net reproduces,
each with why, refused in one line when the config is read.

| paper | its name | model.name | from |
|---|---|---|---|
| P0 PairTraining | AlexNet | alexnet_tv | torchvision ``alexnet`` (raypair-registered) |
| P0 | VGG16 | vgg16 | timm (torchvision's VGG-16, no BN, as Paddle's) |
| P0 | DenseNet121 | densenet121 | timm |
| P0 | GoogLeNet | googlenet_tv | torchvision ``googlenet``, no aux heads (raypair-registered) |
| P0 | Xception41 | xception41 | timm (aligned Xception-41, as PaddleClas') |
| P0 | ResNet50 / ResNet101 | resnet50 / resnet101 | timm |
| P0 | ResNet50_vd / ResNet101_vd | resnet50d / resnet101d | timm (ResNet-D: deep stem, avg-pool shortcut) |
| P0 | MobileNetV3 | mobilenetv3_large_100 | timm; ASSUMPTION: PaddleClas' default MobileNetV3_large_x1_0 |
| P0 | ShuffleNetV2 | shufflenet_v2_tv | torchvision ``shufflenet_v2_x1_0`` (raypair-registered) |
| P2 BC | ResNeXt-29 8x64d | resnext29_8x64d_cifar | raypair (Xie et al. 2017, CIFAR) |
| P2 | Shake-Shake-26 2x96d | shake_shake26_2x96d_cifar | raypair (Gastaldi 2017) |
| P2 | DenseNet-BC (L=100, k=12) | densenet_bc100_cifar | raypair (Huang et al. 2017, CIFAR) |
| P2 | ResNeXt-101 (ImageNet) | resnext101_64x4d | timm; the 64x4d of Xie et al. Table 5 (20.4% top-1 error, BC's baseline) |
| P4 VPL | ResNet-50 | resnet50 | timm |
| P4 | ViT-S/16 | vit_small_patch16_224 | timm |
| P4 | ViT-B/16 | vit_base_patch16_224 | timm |
| P4 | RegNetY-16GF | regnety_160 | timm |
"""
from __future__ import annotations

from raypair.registry import Registry

# models of other packages: each entry point of ``raypair.models`` names a module (or a model
# function in it) that registers its nets into timm's registry when imported
MODEL_PLUGINS: Registry[object] = Registry("model", group="raypair.models")

OWN_MODELS = frozenset({"alexnet_tv", "convnet_bc", "densenet_bc100_cifar", "densenet_cifar", "googlenet_tv",
                        "lenet_cifar", "resnet18_cifar", "resnet34_cifar", "resnet56_cifar", "resnext29_8x64d_cifar",
                        "shake_shake26_2x96d_cifar", "shufflenet_v2_tv", "tiny_cnn", "tiny_vit", "tiny_vit_w48",
                        "vgg16_cifar", "vit_cifar_d4"})

ALIASES = {
    # P0 PairTraining (PaddleClas names)
    "AlexNet": "alexnet_tv", "VGG16": "vgg16", "DenseNet121": "densenet121", "GoogLeNet": "googlenet_tv",
    "Xception41": "xception41", "ResNet50": "resnet50", "ResNet101": "resnet101", "ResNet50_vd": "resnet50d",
    "ResNet101_vd": "resnet101d", "MobileNetV3": "mobilenetv3_large_100", "ShuffleNetV2": "shufflenet_v2_tv",
    # P2 BC learning
    "ResNeXt-29 8x64d": "resnext29_8x64d_cifar", "Shake-Shake-26 2x96d": "shake_shake26_2x96d_cifar",
    "DenseNet-BC": "densenet_bc100_cifar", "ResNeXt-101": "resnext101_64x4d",
    # P4 VPL
    "ResNet-50": "resnet50", "ViT-S/16": "vit_small_patch16_224", "ViT-S": "vit_small_patch16_224",
    "ViT-B/16": "vit_base_patch16_224", "ViT-B": "vit_base_patch16_224", "RegNetY-16GF": "regnety_160",
}
REFUSED = {
    "ResNet-29": "BC's CIFAR ResNet-29 is not recovered (its rows are UNKNOWN in the method spec); "
                 "resnext29_8x64d_cifar is the ResNeXt-29 of the same table",
}
_BY_KEY = {k.lower(): v for k, v in ALIASES.items()}
_REFUSED_KEY = {k.lower(): v for k, v in REFUSED.items()}


def resolve(name: str) -> str:
    """``name``, or the ``model.name`` its paper alias stands for; ValueError for a refused name."""
    key = name.lower()
    if key in _REFUSED_KEY:
        raise ValueError(f"{name} cannot be had: {_REFUSED_KEY[key]}")
    return _BY_KEY.get(key, name)


def is_model(name: str) -> bool:
    """Whether ``timm.create_model(name)`` knows ``name`` once raypair's nets are registered."""
    if name in OWN_MODELS:
        return True
    import timm

    if not timm.is_model(name):
        MODEL_PLUGINS.plug_in()  # a plug-in's net is in timm's registry once its module is imported
    return bool(timm.is_model(name))
