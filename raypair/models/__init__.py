"""Models: everything goes through ``timm.create_model``.

raypair registers into timm's registry the CIFAR-style nets the papers use and tiny nets for
tests, so ``model.name: resnet18_cifar`` and ``model.name: resnet50`` are looked up the same way.
Importing this package registers them all.

- ``cifar_resnet.py``: ``resnet18_cifar`` / ``resnet34_cifar`` (kuangliu-style, P3 and
  PairTraining's CIFAR runs) and ``resnet56_cifar`` (He et al.'s CIFAR ResNet-56, P1's recipe).
- ``cifar_nets.py``: ``lenet_cifar``, ``densenet_cifar``, ``vgg16_cifar`` (kuangliu pytorch-cifar,
  P3) and ``convnet_bc`` (Tokozume et al.'s 11-layer ConvNet of BC learning).
- ``tiny.py``: ``tiny_cnn`` and ``tiny_vit`` / ``tiny_vit_w48`` for tests and CPU sweeps.
- ``head.py``: the pooled-head mixin every CNN here shares; ``build.py``: ``build_model``.

Every model keeps timm's interface: ``forward_features``, ``forward_head(pre_logits=True)``,
``num_features``, ``get_classifier``.
"""
from raypair.models import cifar_nets, cifar_resnet, tiny  # noqa: F401  (registers the nets into timm)
from raypair.models.build import build_model, check_model, check_model_name, param_count
from raypair.models.cifar_nets import ConvNetBC, DenseNetCifar, LeNetCifar, VggCifar
from raypair.models.cifar_resnet import CifarResNet
from raypair.models.head import PooledHead
from raypair.models.tiny import TinyCnn

__all__ = ["CifarResNet", "ConvNetBC", "DenseNetCifar", "LeNetCifar", "PooledHead", "TinyCnn", "VggCifar",
           "build_model", "check_model", "check_model_name", "param_count"]
