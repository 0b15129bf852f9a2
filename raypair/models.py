"""Models: everything goes through ``timm.create_model``.

raypair registers into timm's registry the CIFAR-style nets the papers use and tiny nets for
tests, so ``model.name: resnet18_cifar`` and ``model.name: resnet50`` are looked up the same way.

- ``resnet18_cifar`` / ``resnet34_cifar``: kuangliu-style CIFAR ResNets (P3, PairTraining CIFAR
  runs): timm's ResNet with a 3x3 stride-1 stem conv and no max-pool.
- ``resnet56_cifar``: He et al.'s CIFAR ResNet-56 (P1's recipe): 16/32/64 channels, option-A shortcuts.
- ``lenet_cifar``: kuangliu pytorch-cifar's LeNet (P3), in ``raypair.cifar_nets`` like the next three.
- ``densenet_cifar``: kuangliu's ``densenet_cifar`` (P3): DenseNet-BC, blocks 6/12/24/16, growth 12.
- ``vgg16_cifar``: kuangliu's VGG16 with BatchNorm and one 512-K linear (P3).
- ``convnet_bc``: Tokozume et al.'s 11-layer ConvNet of BC learning (``mil-tokyo/bc_learning_image``).
- ``tiny_cnn``: two conv blocks and a linear head (``norm=False`` drops BatchNorm, which makes a
  DDP run with split batches match a single worker exactly).
- ``tiny_vit``: a one-block ViT for tests of two-branch methods.
Every model keeps timm's interface: ``forward_features``, ``forward_head(pre_logits=True)``,
``num_features``, ``get_classifier``.
"""
from __future__ import annotations

from typing import Any

import timm
import torch
from timm.models import register_model
from torch import Tensor, nn

from raypair.config import ConfigError, ModelConfig

_TIMM_CFG_KEYS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def _drop_timm_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k not in _TIMM_CFG_KEYS}


def _cifar_resnet(layers: list[int], pretrained: bool, **kwargs: Any) -> nn.Module:
    from timm.models.resnet import BasicBlock, ResNet

    if pretrained:
        raise ValueError("CIFAR ResNets have no pretrained weights")
    kwargs = _drop_timm_args(kwargs)
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
    return _cifar_resnet([3, 4, 6, 3], pretrained, **kwargs)


class _PooledHead(nn.Module):
    """timm's head interface over ``forward_features``: global average pool, dropout, ``fc``."""

    num_features: int
    drop: nn.Module
    fc: nn.Linear

    def forward_features(self, x: Tensor) -> Tensor:  # pragma: no cover - each net defines it
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.drop(x.mean((2, 3)))
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)


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
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        short = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.pad:
            short = nn.functional.pad(short, (0, 0, 0, 0, 0, self.pad))
        return torch.relu(out + short)


class CifarResNet(_PooledHead):
    """The CIFAR ResNet of He et al. 2016 §4.2 (P1's ResNet-56): 3x3 stem conv (16), three stages of
    ``(depth - 2) / 6`` BasicBlocks at 16/32/64 channels (stride 2 entering stages 2 and 3), global
    average pool, linear. 32x32 in -> 8x8x64 features. timm interface as TinyCnn."""

    def __init__(self, depth: int = 56, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0,
                 **_: Any) -> None:
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
        return self.layers(torch.relu(self.bn1(self.conv1(x))))



@register_model
def resnet56_cifar(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ResNet-56 for 32x32 inputs (P1's recipe, methods.md §4.5): 27 BasicBlocks, 0.85 M parameters."""
    if pretrained:
        raise ValueError("CIFAR ResNets have no pretrained weights")
    return CifarResNet(depth=56, **_drop_timm_args(kwargs))


class TinyCnn(_PooledHead):
    """conv(3x3) -> [BN] -> ReLU -> pool, twice; global average pool; linear. For tests and CPU sweeps."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: int = 16, norm: bool = True,
                 drop_rate: float = 0.0, **_: Any) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=not norm),
                    nn.BatchNorm2d(cout) if norm else nn.Identity(), nn.ReLU(inplace=True), nn.MaxPool2d(2)]

        self.num_classes, self.num_features = num_classes, 2 * width
        self.features = nn.Sequential(*block(in_chans, width), *block(width, 2 * width))
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)



@register_model
def tiny_cnn(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    return TinyCnn(**_drop_timm_args(kwargs))


def _tiny_vit(width: int, kwargs: dict[str, Any]) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    args = dict(img_size=32, patch_size=4, embed_dim=width, depth=1, num_heads=2, mlp_ratio=2.0)
    args.update(_drop_timm_args(kwargs))
    return VisionTransformer(**args)


@register_model
def tiny_vit(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """One-block ViT (patch 4, width 32, 2 heads) on timm's VisionTransformer."""
    return _tiny_vit(32, kwargs)


@register_model
def tiny_vit_w48(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """The same at width 48: VPL's CPU default transformer. Its embedding width differs from
    tiny_cnn's 32 (and resnet18_cifar's 512), so VPL's affine layer is built."""
    return _tiny_vit(48, kwargs)


def check_model_name(name: str) -> None:
    if not timm.is_model(name):
        near = timm.list_models(f"*{name.split('_')[0]}*")[:5]
        hint = f" (similar: {', '.join(near)})" if near else ""
        raise ConfigError("model.name", f"unknown timm model{hint}", name)


def build_model(cfg: ModelConfig, num_classes: int, in_chans: int, image_size: int | None = None) -> nn.Module:
    """``timm.create_model`` with the data's classes and channels; no pretrained weights are fetched."""
    check_model_name(cfg.name)
    kwargs: dict[str, Any] = dict(num_classes=num_classes, in_chans=in_chans, drop_rate=cfg.drop_rate)
    if image_size is not None and _takes_img_size(cfg.name):
        kwargs["img_size"] = image_size
    kwargs.update(cfg.kwargs)
    try:
        return timm.create_model(cfg.name, pretrained=False, **kwargs)
    except TypeError as e:
        raise ConfigError("model.kwargs", f"{cfg.name} rejects them: {e}", cfg.kwargs) from None


def _takes_img_size(name: str) -> bool:
    # ViT-like timm models build their patch grid from img_size; CNNs do not take the argument.
    return any(k in name for k in ("vit", "deit", "swin", "beit", "eva", "cait", "xcit"))


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# last: cifar_nets builds on _PooledHead and _drop_timm_args above; importing it registers its nets
from raypair import cifar_nets  # noqa: E402, F401
