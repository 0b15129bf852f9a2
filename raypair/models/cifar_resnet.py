"""CIFAR ResNets registered into timm.

- ``resnet18_cifar`` / ``resnet34_cifar``: kuangliu-style CIFAR ResNets (P3, PairTraining CIFAR
  runs): timm's ResNet with a 3x3 stride-1 stem conv and no max-pool.
- ``resnet56_cifar``: He et al.'s CIFAR ResNet-56 (P1's recipe): 16/32/64 channels, option-A shortcuts.

(The file is not called ``resnet.py``: timm files registered models under their module's last
name, and ``resnet`` is timm's own module.)
"""
from __future__ import annotations

from typing import Any

import torch
from timm.models import register_model
from torch import Tensor, nn

from raypair.models.head import PooledHead, drop_timm_args


def _cifar_resnet(layers: list[int], pretrained: bool, **kwargs: Any) -> nn.Module:
    from timm.models.resnet import BasicBlock, ResNet

    if pretrained:
        raise ValueError("CIFAR ResNets have no pretrained weights")
    kwargs = drop_timm_args(kwargs)
    in_chans = kwargs.get("in_chans", 3)
    model = ResNet(block=BasicBlock, layers=layers, **kwargs)
    model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ResNet-18 for 32x32 inputs: 3x3 stem, stride 1, no max-pool (11.2 M parameters)."""
    return _cifar_resnet([2, 2, 2, 2], pretrained, **kwargs)


@register_model
def resnet34_cifar(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ResNet-34 for 32x32 inputs, the same stem as ``resnet18_cifar``."""
    return _cifar_resnet([3, 4, 6, 3], pretrained, **kwargs)


class _CifarBasicBlock(nn.Module):
    """He et al. 2016 §4.2 block: two 3x3 convs with BN; option-A shortcut (stride-2 subsampling and
    zero-padded channels, no parameters) where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.pad = stride, cout - cin

    def forward(self, x: Tensor) -> Tensor:
        """``[B, cin, H, W]`` to ``[B, cout, H / stride, W / stride]``."""
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        short = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.pad:
            short = nn.functional.pad(short, (0, 0, 0, 0, 0, self.pad))
        return torch.relu(out + short)


class CifarResNet(PooledHead):
    """The CIFAR ResNet of He et al. 2016 §4.2 (P1's ResNet-56): 3x3 stem conv (16), three stages of
    ``(depth - 2) / 6`` BasicBlocks at 16/32/64 channels (stride 2 entering stages 2 and 3), global
    average pool, linear. 32x32 in -> 8x8x64 features. timm interface as TinyCnn."""

    def __init__(self, depth: int = 56, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1, got {depth}")
        n, widths = (depth - 2) // 6, (16, 32, 64)
        self.num_classes, self.num_features = num_classes, widths[-1]
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            for b in range(n):
                blocks.append(_CifarBasicBlock(cin, w, 2 if i > 0 and b == 0 else 1))
                cin = w
        self.layers = nn.Sequential(*blocks)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: Tensor) -> Tensor:
        """``[B, C, 32, 32]`` to ``[B, 64, 8, 8]``."""
        return self.layers(torch.relu(self.bn1(self.conv1(x))))


@register_model
def resnet56_cifar(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ResNet-56 for 32x32 inputs (P1's recipe, methods.md §4.5): 27 BasicBlocks, 0.85 M parameters."""
    if pretrained:
        raise ValueError("CIFAR ResNets have no pretrained weights")
    return CifarResNet(depth=56, **drop_timm_args(kwargs))
