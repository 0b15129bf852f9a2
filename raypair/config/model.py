"""The ``model`` part of the run config: a timm model name (or a seed paper's name of one, see
``model_names.py``), and its keyword arguments. Torch-free."""
from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from raypair.config.base import Strict

# model.kwargs keys that the data or the other model fields decide
_RESERVED_KWARGS = {"num_classes": "set by the data", "in_chans": "set by the data and the method",
                    "pretrained": "raypair trains from scratch", "pretrained_cfg": "raypair trains from scratch",
                    "pretrained_cfg_overlay": "raypair trains from scratch", "checkpoint_path": "use --resume"}


class ModelConfig(Strict):
    """Any ``timm.create_model`` name, or a paper's name of one (``config/model_names.py`` ALIASES,
    resolved here); raypair registers its CIFAR nets, torchvision-only nets and tiny test nets there."""

    name: str = "resnet18_cifar"
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0)
    kwargs: dict[str, Any] = Field(default_factory=dict)  # more keyword arguments of the timm model

    @field_validator("name")
    @classmethod
    def _resolve(cls, value: str) -> str:
        from raypair.config.model_names import resolve

        return resolve(value)

    @field_validator("kwargs")
    @classmethod
    def _own_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key in _RESERVED_KWARGS:
                raise ValueError(f"{key}: not a model.kwargs key: {_RESERVED_KWARGS[key]}")
        return value

    def inactive(self) -> set[str]:
        return {"drop_rate"} if "drop_rate" in self.kwargs else set()  # kwargs.drop_rate wins
