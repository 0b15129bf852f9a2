"""The CIFAR nets of BC learning's table (P2) that no library has, registered into timm.

- ``resnext29_8x64d_cifar``: Xie et al. 2017 §5 (CIFAR), as ``facebookresearch/ResNeXt`` and its
  PyTorch port ``prlz77/ResNeXt.pytorch`` (``CifarResNeXt``): a 3x3 stem conv (64), three stages of
  ``(depth - 2) / 9`` bottleneck blocks with outputs 256/512/1024 (stride 2 entering stages 2 and 3),
  each conv1x1 -> grouped conv3x3 (cardinality 8, width 8 x 64 x 2^stage) -> conv1x1 with BN, a
  conv1x1 + BN shortcut where the shape changes; global average pool, linear. 34.4 M parameters
  (the paper's Table 7), 34,426,698 for 10 classes.
- ``shake_shake26_2x96d_cifar``: Gastaldi 2017 §2, as ``xgastaldi/shake-shake`` and its port
  ``hysts/pytorch_shake_shake``: a 3x3 stem conv (16) + BN, three stages of ``(depth - 2) / 6``
  blocks at 96/192/384 channels, each two residual branches ReLU-conv3x3-BN-ReLU-conv3x3-BN mixed by
  :func:`shake`; where the shape changes the shortcut is two flows (ReLU, 1x1 average pool of
  stride s, conv1x1 to half the width; the second flow shifted one pixel right and down)
  concatenated then BN. Final ReLU, global average pool, linear. 26.2 M parameters (the paper's
  Table 1). ``depth: 8`` (``model.kwargs``) is P2s' small Shake-Shake.
- ``densenet_bc100_cifar``: Huang et al. 2017 DenseNet-BC L=100, k=12: three dense blocks of 16
  bottleneck layers (BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k)), compression 0.5, a 3x3 stem conv to 2k;
  ``cifar_nets.DenseNetCifar`` with blocks (16, 16, 16). 0.8 M parameters (the paper's Table 2).

Shake-Shake's rule (Gastaldi §2.1, "Shake-Shake-Image"): in training each sample draws its own
alpha ~ U(0, 1) for the forward mix ``alpha * b1 + (1 - alpha) * b2`` and an independent
beta ~ U(0, 1) that splits the backward gradient (``beta * g`` to b1, ``(1 - beta) * g`` to b2); in
evaluation both are 0.5. The draws come from torch's global generator, like dropout's.
"""
from __future__ import annotations

from typing import Any

import torch
from timm.models import register_model
from torch import Tensor, nn

from raypair.models.cifar_nets import DenseNetCifar
from raypair.models.head import PooledHead, drop_timm_args, no_weights


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class _ResNeXtBlock(nn.Module):
    """conv1x1(D)-BN-ReLU, grouped conv3x3(D, stride)-BN-ReLU, conv1x1(cout)-BN; plus the shortcut, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, width: int, cardinality: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(*_conv_bn(cin, width, 1), nn.ReLU(inplace=True),
                                    *_conv_bn(width, width, 3, stride, cardinality), nn.ReLU(inplace=True),
                                    *_conv_bn(width, cout, 1))
        self.shortcut = nn.Sequential(*_conv_bn(cin, cout, 1, stride)) if stride > 1 or cin != cout \
            else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """``[B, cin, H, W]`` to ``[B, cout, H / stride, W / stride]``."""
        return torch.relu(self.branch(x) + self.shortcut(x))


class CifarResNeXt(PooledHead):
    """ResNeXt-``depth`` (``cardinality`` x ``base_width``d) for 32x32 inputs; 1024 features."""

    def __init__(self, depth: int = 29, cardinality: int = 8, base_width: int = 64, num_classes: int = 10,
                 in_chans: int = 3, drop_rate: float = 0.0) -> None:
        super().__init__()
        if depth < 11 or (depth - 2) % 9:
            raise ValueError(f"depth must be 9n + 2 with n >= 1, got {depth}")
        n, blocks, cin = (depth - 2) // 9, [], 64
        for stage in range(3):
            cout, width = 256 << stage, cardinality * base_width << stage
            for b in range(n):
                blocks.append(_ResNeXtBlock(cin, cout, 2 if stage and not b else 1, width, cardinality))
                cin = cout
        self.stem = nn.Sequential(*_conv_bn(in_chans, 64, 3), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*blocks)
        self.num_classes, self.num_features = num_classes, cin
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` to ``[B, 1024, H / 4, W / 4]``."""
        return self.blocks(self.stem(x))


def shake(b1: Tensor, b2: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
    """``alpha * b1 + (1 - alpha) * b2`` forward; backward sends ``beta * g`` to b1 and
    ``(1 - beta) * g`` to b2. ``alpha``, ``beta`` broadcast against ``b1`` (``[B, 1, 1, 1]`` per sample)."""
    return beta * b1 + (1 - beta) * b2 + ((alpha - beta) * (b1 - b2)).detach()


class _ShakeBlock(nn.Module):
    """Two residual branches ReLU-conv3x3(stride)-BN-ReLU-conv3x3-BN mixed by :func:`shake`, plus the shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.ReLU(), *_conv_bn(cin, cout, 3, stride), nn.ReLU(inplace=True), *_conv_bn(cout, cout, 3))
            for _ in range(2))
        self.shortcut = _ShakeShortcut(cin, cout, stride) if stride > 1 or cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """``[B, cin, H, W]`` to ``[B, cout, H / stride, W / stride]``."""
        b1, b2 = (branch(x) for branch in self.branches)
        if self.training:
            alpha = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=b1.dtype)
            beta = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=b1.dtype)
            mixed = shake(b1, b2, alpha, beta)
        else:
            mixed = 0.5 * (b1 + b2)
        return mixed + self.shortcut(x)


class _ShakeShortcut(nn.Module):
    """Two flows (ReLU, avg-pool 1x1 stride s, conv1x1 to cout / 2; the second shifted by one pixel), concat, BN."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(cin, cout // 2, 1, bias=False)
        self.conv2 = nn.Conv2d(cin, cout - cout // 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, cin, H, W]`` to ``[B, cout, H / stride, W / stride]``."""
        x = torch.relu(x)
        shifted = nn.functional.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        s = self.stride
        return self.bn(torch.cat([self.conv1(x[:, :, ::s, ::s]), self.conv2(shifted[:, :, ::s, ::s])], 1))


class ShakeShake(PooledHead):
    """Shake-Shake-``depth`` 2 x ``base_width``d for 32x32 inputs; ``4 * base_width`` features."""

    def __init__(self, depth: int = 26, base_width: int = 96, num_classes: int = 10, in_chans: int = 3,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1, got {depth}")
        n, blocks, cin = (depth - 2) // 6, [], 16
        for stage in range(3):
            for b in range(n):
                blocks.append(_ShakeBlock(cin, base_width << stage, 2 if stage and not b else 1))
                cin = base_width << stage
        self.stem = nn.Sequential(*_conv_bn(in_chans, 16, 3))
        self.blocks = nn.Sequential(*blocks, nn.ReLU())
        self.num_classes, self.num_features = num_classes, cin
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` to ``[B, 4 * base_width, H / 4, W / 4]`` (after the final ReLU)."""
        return self.blocks(self.stem(x))


@register_model
def resnext29_8x64d_cifar(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ResNeXt-29 8x64d for CIFAR (Xie et al. 2017; 34.4 M parameters)."""
    no_weights(pretrained, "resnext29_8x64d_cifar")
    return CifarResNeXt(**drop_timm_args(kwargs))


@register_model
def shake_shake26_2x96d_cifar(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Shake-Shake-26 2x96d for CIFAR (Gastaldi 2017; 26.2 M parameters)."""
    no_weights(pretrained, "shake_shake26_2x96d_cifar")
    return ShakeShake(**drop_timm_args(kwargs))


@register_model
def densenet_bc100_cifar(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """DenseNet-BC L=100, k=12 for CIFAR (Huang et al. 2017; 0.8 M parameters)."""
    no_weights(pretrained, "densenet_bc100_cifar")
    return DenseNetCifar(**{"blocks": (16, 16, 16), "growth_rate": 12, **drop_timm_args(kwargs)})
