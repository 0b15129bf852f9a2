"""CIFAR classification nets of the papers' tables, registered into timm's model registry.

Reference implementations, transcribed layer for layer (same layers, same parameter counts):

- ``lenet_cifar``: ``kuangliu/pytorch-cifar`` ``models/lenet.py`` ``LeNet`` (P3, methods.md §1.2).
  conv5(6) relu pool, conv5(16) relu pool, fc 400-120-84-K. 62,006 parameters (K=10, RGB).
- ``densenet_cifar``: ``kuangliu/pytorch-cifar`` ``models/densenet.py`` ``densenet_cifar()`` =
  ``DenseNet(Bottleneck, [6, 12, 24, 16], growth_rate=12)``, reduction 0.5. 1,000,618 parameters.
- ``vgg16_cifar``: ``kuangliu/pytorch-cifar`` ``models/vgg.py`` ``VGG('VGG16')``: 13 conv3x3 (with
  bias) + BN + ReLU, 5 max-pools, linear 512-K. 14,728,266 parameters.
- ``convnet_bc``: the 11-layer ConvNet of Tokozume et al. (BC learning), ``mil-tokyo/bc_learning_image``
  ``models/convnet.py`` + ``models/convbnrelu.py`` (Chainer): 8 conv3x3 (no bias) + BN + ReLU
  [64, 64 | 128, 128 | 256 x 4] with a max-pool after each group, fc 4096-1024 ReLU dropout(0.5),
  fc 1024-1024 ReLU dropout(0.5), fc 1024-K (no BN in the fc layers). Init as the original: He-normal
  convs, U(+-1/sqrt(fan_in)) fc weights, zero fc biases; Chainer's BN (eps 1e-5, decay 0.9) is torch's
  default BatchNorm2d. 7,582,154 parameters.

Checked (counts for 10 classes, RGB): the state dict of each reference (for the ConvNet a literal torch
transcription of the Chainer code) loads into the net here in order, and both give the same logits.

timm interface (see ``raypair.models.head.PooledHead``): ``forward_features`` returns the last conv map
(DenseNet: after its final BN-ReLU); ``forward_head(x, pre_logits=True)`` returns the input of the
last Linear, whose width is ``num_features`` (LeNet 84, ConvNet 1024, DenseNet 384, VGG 512);
``get_classifier`` is that Linear. The references' fixed 3 input channels become ``in_chans``, their
fixed 10 classes ``num_classes``; ``drop_rate`` (default 0, none in the references) adds a dropout
before the classifier.

Input sizes: all four reproduce their reference exactly on 32x32. DenseNet's ``avg_pool2d(4)`` is a
global average pool here, so it also takes 16x16. VGG's 512-d flatten of a 1x1 map is a global
average pool here too: it takes any size >= 32 but not 16x16 (five 2x2 pools). The ConvNet's
fc4 reads a 4x4 map through ``AdaptiveAvgPool2d(4)`` (the identity on 32x32); on 16x16 it
replicates the 2x2 map to 4x4. LeNet requires 32x32 (fc1 reads the 16x5x5 map).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from timm.models import register_model
from torch import Tensor, nn

from raypair.models.head import PooledHead, drop_timm_args, no_weights


class LeNetCifar(PooledHead):
    """kuangliu's LeNet; features [B, 16, 5, 5], pre-logits the 84-d output of fc2 + ReLU."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.num_features = num_classes, 84
        self.features = nn.Sequential(nn.Conv2d(in_chans, 6, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                      nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.hidden = nn.Sequential(nn.Linear(16 * 5 * 5, 120), nn.ReLU(inplace=True),
                                    nn.Linear(120, 84), nn.ReLU(inplace=True))
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(84, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """``[B, C, 32, 32]`` to ``[B, 16, 5, 5]``."""
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """``[B, 16, 5, 5]`` to ``[B, K]`` logits (or the ``[B, 84]`` output of fc2 + ReLU)."""
        if x.shape[-2:] != (5, 5):
            raise ValueError(f"lenet_cifar needs 32x32 inputs (a 5x5 feature map), got a map of {tuple(x.shape)}")
        x = self.drop(self.hidden(x.flatten(1)))
        return x if pre_logits else self.fc(x)


class _Bottleneck(nn.Module):
    """BN-ReLU-conv1x1(4g)-BN-ReLU-conv3x3(g), output concatenated in front of the input."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` to ``[B, C + g, H, W]``."""
        out = self.conv2(torch.relu(self.bn2(self.conv1(torch.relu(self.bn1(x))))))
        return torch.cat([out, x], 1)


class _Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.AvgPool2d(2))


class DenseNetCifar(PooledHead):
    """kuangliu's DenseNet: 3x3 stem to 2g channels, dense blocks with transitions (floor(C * reduction)
    channels, avg-pool 2) between them, final BN-ReLU in ``forward_features``, global pool, linear."""

    def __init__(self, blocks: tuple[int, ...] = (6, 12, 24, 16), growth_rate: int = 12, reduction: float = 0.5,
                 num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0) -> None:
        super().__init__()
        c = 2 * growth_rate
        layers: list[nn.Module] = [nn.Conv2d(in_chans, c, 3, padding=1, bias=False)]
        for i, n in enumerate(blocks):
            for _b in range(n):
                layers.append(_Bottleneck(c, growth_rate))
                c += growth_rate
            if i < len(blocks) - 1:
                out = int(math.floor(c * reduction))
                layers.append(_Transition(c, out))
                c = out
        layers += [nn.BatchNorm2d(c), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.num_classes, self.num_features = num_classes, c
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(c, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` to ``[B, 384, H / 8, W / 8]`` after the final BN-ReLU."""
        return self.features(x)


VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                    512, 512, 512, "M", 512, 512, 512, "M")


class VggCifar(PooledHead):
    """kuangliu's VGG: conv3x3 (bias) + BN + ReLU per number in ``cfg``, max-pool 2 per "M"; the
    512-d map is pooled globally (1x1 on 32x32 input, where this is the reference's flatten)."""

    def __init__(self, cfg: tuple[int | str, ...] = VGG16_CFG, num_classes: int = 10, in_chans: int = 3,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_chans
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.num_classes, self.num_features = num_classes, c
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(c, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` to ``[B, 512, H / 32, W / 32]``."""
        return self.features(x)


class ConvNetBC(PooledHead):
    """Tokozume et al.'s 11-layer ConvNet; features [B, 256, 4, 4], pre-logits the 1024-d output of
    fc5 + ReLU + dropout. ``hidden_drop_rate`` is the original's dropout(0.5) after fc4 and fc5."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0,
                 hidden_drop_rate: float = 0.5) -> None:
        super().__init__()

        def cbr(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout, eps=1e-5),
                    nn.ReLU(inplace=True)]

        self.features = nn.Sequential(*cbr(in_chans, 64), *cbr(64, 64), nn.MaxPool2d(2),
                                      *cbr(64, 128), *cbr(128, 128), nn.MaxPool2d(2),
                                      *cbr(128, 256), *cbr(256, 256), *cbr(256, 256), *cbr(256, 256),
                                      nn.MaxPool2d(2))
        self.pool = nn.AdaptiveAvgPool2d(4)
        p = hidden_drop_rate
        self.hidden = nn.Sequential(nn.Linear(256 * 4 * 4, 1024), nn.ReLU(inplace=True), nn.Dropout(p),
                                    nn.Linear(1024, 1024), nn.ReLU(inplace=True), nn.Dropout(p))
        self.num_classes, self.num_features = num_classes, 1024
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(1024, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # Chainer HeNormal: N(0, 2 / fan_in)
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.Linear):  # Uniform(1 / sqrt(fan_in)) weights (torch's default), zero bias
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` to ``[B, 256, H / 8, W / 8]``."""
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """``[B, 256, h, w]`` (pooled to 4x4) to ``[B, K]`` logits (or the ``[B, 1024]`` pre-logits)."""
        x = self.drop(self.hidden(self.pool(x).flatten(1)))
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh last Linear with zero bias, as the original initialises it."""
        super().reset_classifier(num_classes)
        nn.init.zeros_(self.fc.bias)


@register_model
def lenet_cifar(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """kuangliu's LeNet for 32x32 inputs (62,006 parameters for 10 classes)."""
    no_weights(pretrained, "lenet_cifar")
    return LeNetCifar(**drop_timm_args(kwargs))


@register_model
def densenet_cifar(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """kuangliu's ``densenet_cifar``: DenseNet-BC blocks (6, 12, 24, 16), growth 12 (1.0 M parameters)."""
    no_weights(pretrained, "densenet_cifar")
    return DenseNetCifar(**drop_timm_args(kwargs))


@register_model
def vgg16_cifar(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """kuangliu's VGG('VGG16') with BatchNorm and a single 512-K linear (14.7 M parameters)."""
    no_weights(pretrained, "vgg16_cifar")
    return VggCifar(**drop_timm_args(kwargs))


@register_model
def convnet_bc(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Tokozume et al.'s 11-layer ConvNet of BC learning (7.6 M parameters)."""
    no_weights(pretrained, "convnet_bc")
    return ConvNetBC(**drop_timm_args(kwargs))
