"""PairTraining's (P0) ImageNet CNNs that timm lacks, from torchvision, registered into timm's registry.

- ``alexnet_tv``: torchvision ``AlexNet`` (61,100,840 parameters for 1000 classes). Its 6x6
  adaptive pool and three max-pools need inputs of at least 63x63 (CIFAR is resized for it).
- ``googlenet_tv``: torchvision ``GoogLeNet`` without the two auxiliary heads (``aux_logits=False``:
  the training step takes one logit tensor) and without ``transform_input`` (raypair normalises
  the images itself): 6,624,904 parameters, as torchvision lists for its weights.
- ``shufflenet_v2_tv``: torchvision ``shufflenet_v2_x1_0`` (2,278,604 parameters).

The state-dict keys are torchvision's own, so a torchvision weights file loads through
``model.weights: PATH`` as it is (GoogLeNet's ``aux1.*`` / ``aux2.*`` entries are skipped:
``unused_weights``). ``model.pretrained: true`` is not offered (the weights live on torchvision's
server, not timm's hub): ``models/weights.py`` says to set ``model.weights``.

timm interface: ``forward_features`` returns the last conv map, ``forward_head(x, pre_logits=True)``
the input of the last Linear (``num_features`` wide: 4096, 1024, 1024), ``get_classifier`` that
Linear, ``reset_classifier`` a fresh one. ``in_chans`` replaces the first conv; ``drop_rate`` adds a
dropout before the last Linear (torchvision's own dropouts stay, ``model.kwargs.dropout``).
"""
from __future__ import annotations

from typing import Any

import torch
from timm.models import register_model
from torch import Tensor, nn
from torchvision import models as tvm
from torchvision.models.googlenet import BasicConv2d

from raypair.models.head import drop_timm_args, no_weights


class _TimmHead:
    """timm's head interface over a torchvision net whose last Linear is ``self._last()``."""

    num_classes: int
    num_features: int
    head_drop: nn.Module
    unused_weights: tuple[str, ...] = ()  # key prefixes of torchvision's files that the net here lacks

    def _pool(self, x: Tensor) -> Tensor:
        return torch.flatten(self.avgpool(x), 1)  # type: ignore[attr-defined]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature map ``[B, F', h, w]`` to logits ``[B, K]`` (or the ``[B, num_features]`` pre-logits)."""
        x = self.head_drop(self._pool(x))
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` images to ``[B, K]`` logits."""
        return self.forward_head(self.forward_features(x))  # type: ignore[attr-defined]

    def get_classifier(self) -> nn.Linear:
        """The last Linear."""
        raise NotImplementedError

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh last Linear for ``num_classes`` classes."""
        self.num_classes = num_classes
        self._set_classifier(nn.Linear(self.num_features, num_classes))

    def _set_classifier(self, fc: nn.Linear) -> None:
        self.fc = fc


class AlexNetTv(_TimmHead, tvm.AlexNet):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0, dropout: float = 0.5) -> None:
        super().__init__(num_classes=num_classes, dropout=dropout)
        self.features[0] = nn.Conv2d(in_chans, 64, kernel_size=11, stride=4, padding=2)
        self.num_classes, self.num_features, self.head_drop = num_classes, 4096, nn.Dropout(drop_rate)

    def forward_features(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` to ``[B, 256, h, w]``."""
        return self.features(x)

    def _pool(self, x: Tensor) -> Tensor:
        return self.classifier[:-1](torch.flatten(self.avgpool(x), 1))  # up to the last Linear's input

    def get_classifier(self) -> nn.Linear:
        return self.classifier[-1]

    def _set_classifier(self, fc: nn.Linear) -> None:
        self.classifier[-1] = fc


class GoogLeNetTv(_TimmHead, tvm.GoogLeNet):
    unused_weights = ("aux1.", "aux2.")

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0, dropout: float = 0.2) -> None:
        super().__init__(num_classes=num_classes, aux_logits=False, transform_input=False, init_weights=True,
                         dropout=dropout)
        self.conv1 = BasicConv2d(in_chans, 64, kernel_size=7, stride=2, padding=3)
        nn.init.trunc_normal_(self.conv1.conv.weight, mean=0.0, std=0.01, a=-2, b=2)  # as torchvision's init
        self.num_classes, self.num_features, self.head_drop = num_classes, 1024, nn.Dropout(drop_rate)

    def forward_features(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` to ``[B, 1024, H / 32, W / 32]`` (torchvision's forward up to inception5b)."""
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        for block in (self.inception4a, self.inception4b, self.inception4c, self.inception4d, self.inception4e):
            x = block(x)
        return self.inception5b(self.inception5a(self.maxpool4(x)))

    def _pool(self, x: Tensor) -> Tensor:
        return self.dropout(torch.flatten(self.avgpool(x), 1))

    def get_classifier(self) -> nn.Linear:
        return self.fc


class ShuffleNetV2Tv(_TimmHead, tvm.ShuffleNetV2):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0) -> None:
        super().__init__([4, 8, 4], [24, 116, 232, 464, 1024], num_classes=num_classes)
        self.conv1[0] = nn.Conv2d(in_chans, 24, 3, 2, 1, bias=False)
        self.num_classes, self.num_features, self.head_drop = num_classes, 1024, nn.Dropout(drop_rate)

    def forward_features(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` to ``[B, 1024, H / 32, W / 32]``."""
        return self.conv5(self.stage4(self.stage3(self.stage2(self.maxpool(self.conv1(x))))))

    def _pool(self, x: Tensor) -> Tensor:
        return x.mean((2, 3))

    def get_classifier(self) -> nn.Linear:
        return self.fc


@register_model
def alexnet_tv(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """torchvision's AlexNet with timm's interface (61.1 M parameters)."""
    no_weights(pretrained, "alexnet_tv")
    return AlexNetTv(**drop_timm_args(kwargs))


@register_model
def googlenet_tv(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """torchvision's GoogLeNet (no auxiliary heads) with timm's interface (6.6 M parameters)."""
    no_weights(pretrained, "googlenet_tv")
    return GoogLeNetTv(**drop_timm_args(kwargs))


@register_model
def shufflenet_v2_tv(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """torchvision's ShuffleNetV2 x1.0 with timm's interface (2.3 M parameters)."""
    no_weights(pretrained, "shufflenet_v2_tv")
    return ShuffleNetV2Tv(**drop_timm_args(kwargs))
