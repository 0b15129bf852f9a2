"""Model names checked without importing torch or timm where possible: the nets raypair registers
into timm (``raypair/models/``) are listed here, so a run on one of them is validated without
building it; any other name is looked up in timm's registry (importing timm, ~3 s).
``tests/test_validate_fast.py`` checks that this list is exactly what ``raypair/models/`` registers,
and that each of these nets builds under every input a config can give it."""
from __future__ import annotations

from raypair.registry import Registry

# models of other packages: each entry point of ``raypair.models`` names a module (or a model
# function in it) that registers its nets into timm's registry when imported
MODEL_PLUGINS: Registry[object] = Registry("model", group="raypair.models")

OWN_MODELS = frozenset({"convnet_bc", "densenet_cifar", "lenet_cifar", "resnet18_cifar", "resnet34_cifar",
                        "resnet56_cifar", "tiny_cnn", "tiny_vit", "tiny_vit_w48", "vgg16_cifar"})


def is_model(name: str) -> bool:
    """Whether ``timm.create_model(name)`` knows ``name`` once raypair's nets are registered."""
    if name in OWN_MODELS:
        return True
    import timm

    if not timm.is_model(name):
        MODEL_PLUGINS.plug_in()  # a plug-in's net is in timm's registry once its module is imported
    return bool(timm.is_model(name))
