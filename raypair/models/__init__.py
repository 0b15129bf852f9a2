"""Models: everything goes through ``timm.create_model``.

raypair registers into timm's registry the CIFAR-style nets the papers use and tiny nets for
tests, so ``model.name: resnet18_cifar`` and ``model.name: resnet50`` are looked up the same way.
Importing this package registers them all.

- ``cifar_resnet.py``: ``resnet18_cifar`` / ``resnet34_cifar`` (kuangliu-style, P3 and
  PairTraining's CIFAR runs) and ``resnet56_cifar`` (He et al.'s CIFAR ResNet-56, P1's recipe).
- ``cifar_nets.py``: ``lenet_cifar``, ``densenet_cifar``, ``vgg16_cifar`` (kuangliu pytorch-cifar,
  P3) and ``convnet_bc`` (Tokozume et al.'s 11-layer ConvNet of BC learning).
- ``cifar_bc_nets.py``: BC learning's (P2) ``resnext29_8x64d_cifar``, ``shake_shake26_2x96d_cifar``
  and ``densenet_bc100_cifar``.
- ``torchvision_nets.py``: PairTraining's (P0) ``alexnet_tv``, ``googlenet_tv``, ``shufflenet_v2_tv``
  (torchvision's nets, timm lacks them). The seeds' paper names: ``config/model_names.py`` ALIASES.
- ``weights.py``: ``model.pretrained`` (timm's weights) and ``model.weights`` (a local state dict).
- ``tiny.py``: ``tiny_cnn`` and ``tiny_vit`` / ``tiny_vit_w48`` for tests and CPU sweeps.
- ``head.py``: the pooled-head mixin every CNN here shares; ``build.py``: ``build_model``.

Every model keeps timm's interface: ``forward_features``, ``forward_head(pre_logits=True)``,
``num_features``, ``get_classifier``.
"""
# importing them registers the nets into timm
from raypair.models import cifar_bc_nets, cifar_nets, cifar_resnet, tiny, torchvision_nets  # noqa: F401
from raypair.models.build import build_model, check_model, check_model_name, param_count
from raypair.models.cifar_bc_nets import CifarResNeXt, ShakeShake, shake
from raypair.models.cifar_nets import ConvNetBC, DenseNetCifar, LeNetCifar, VggCifar
from raypair.models.cifar_resnet import CifarResNet
from raypair.models.head import PooledHead
from raypair.models.tiny import TinyCnn

__all__ = ["CifarResNeXt", "CifarResNet", "ConvNetBC", "DenseNetCifar", "LeNetCifar", "PooledHead", "ShakeShake",
           "TinyCnn", "VggCifar", "build_model", "check_model", "check_model_name", "param_count", "shake"]
