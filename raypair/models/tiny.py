"""Tiny registered nets that make every method testable on CPU in milliseconds.

- ``tiny_cnn``: two conv blocks and a linear head (``norm=False`` drops BatchNorm, which makes a
  DDP run with split batches match a single worker exactly).
- ``tiny_vit`` / ``tiny_vit_w48``: a one-block ViT for tests of two-branch methods.
- ``vit_cifar_d4``: a four-block ViT at 32 px (patch 4, width 96): VPL's CIFAR-scale transformer,
  deep enough to overtake a small CNN partner within a run (P4's regime, methods.md §6.1).
"""
from __future__ import annotations

from typing import Any

from timm.models import register_model
from torch import Tensor, nn

from raypair.models.head import PooledHead, drop_timm_args


class TinyCnn(PooledHead):
    """conv(3x3) -> [BN] -> ReLU -> pool, twice; global average pool; linear. For tests and CPU sweeps."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: int = 16, norm: bool = True,
                 drop_rate: float = 0.0) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=not norm),
                    nn.BatchNorm2d(cout) if norm else nn.Identity(), nn.ReLU(inplace=True), nn.MaxPool2d(2)]

        self.num_classes, self.num_features = num_classes, 2 * width
        self.features = nn.Sequential(*block(in_chans, width), *block(width, 2 * width))
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` to ``[B, 2 * width, H / 4, W / 4]``."""
        return self.features(x)


@register_model
def tiny_cnn(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``TinyCnn`` (width 16: 32 features)."""
    return TinyCnn(**drop_timm_args(kwargs))


def _tiny_vit(width: int, kwargs: dict[str, Any], depth: int = 1, heads: int = 2) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    args = dict(img_size=32, patch_size=4, embed_dim=width, depth=depth, num_heads=heads, mlp_ratio=2.0)
    args.update(drop_timm_args(kwargs))
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


@register_model
def vit_cifar_d4(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Four-block ViT at 32 px (patch 4: 64 tokens + CLS, width 96, 3 heads, MLP ratio 2; ~0.3M
    parameters): the transformer of VPL's CIFAR-scale pairs, which overtakes ``tiny_cnn``."""
    return _tiny_vit(96, kwargs, depth=4, heads=3)
