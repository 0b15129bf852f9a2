"""What every raypair net shares: timm's head interface over ``forward_features`` and the
handling of the keyword arguments timm's ``create_model`` adds for pretrained configs."""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

_TIMM_CFG_KEYS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def drop_timm_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` without the pretrained-config keys timm passes to every model entry point."""
    return {k: v for k, v in kwargs.items() if k not in _TIMM_CFG_KEYS}


def no_weights(pretrained: bool, name: str) -> None:
    """raypair's nets are trained from scratch: asking for weights is an error, not a silent no-op."""
    if pretrained:
        raise ValueError(f"{name} has no pretrained weights")


class PooledHead(nn.Module):
    """timm's head interface over ``forward_features``: global average pool, dropout, ``fc``."""

    num_features: int
    drop: nn.Module
    fc: nn.Linear

    def forward_features(self, x: Tensor) -> Tensor:  # pragma: no cover - each net defines it
        """``[B, C, H, W]`` images to the last feature map."""
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature map ``[B, F, h, w]`` to logits ``[B, K]`` (or the ``[B, F]`` pooled features)."""
        x = self.drop(x.mean((2, 3)))
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` images to ``[B, K]`` logits."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The last Linear, whose input is ``forward_head(..., pre_logits=True)``."""
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh last Linear for ``num_classes`` classes."""
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)
