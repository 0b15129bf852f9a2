"""The ``model`` part of the run config: a timm model name (or a seed paper's name of one, see
``model_names.py``), its keyword arguments, and its initial weights. Torch-free: the weights file is
only named here; ``raypair/models/weights.py`` reads and checks it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pydantic import Field, field_validator, model_validator

from raypair.config.base import Strict

# model.kwargs keys that the data or the other model fields decide
_RESERVED_KWARGS = {"num_classes": "set by the data", "in_chans": "set by the data and the method",
                    "pretrained": "use model.pretrained: true (timm's weights) or model.weights: PATH",
                    "pretrained_cfg": "use model.weights: PATH for other weights",
                    "pretrained_cfg_overlay": "use model.weights: PATH for other weights",
                    "checkpoint_path": "use model.weights: PATH (or --resume to continue a run)"}
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


class ModelConfig(Strict):
    """Any ``timm.create_model`` name, or a paper's name of one (``config/model_names.py`` ALIASES,
    resolved here); raypair registers its CIFAR nets, torchvision-only nets and tiny test nets there.
    ``pretrained``: timm's own weights (Hugging Face hub or its cache); ``weights``: a local state dict
    (.pt/.pth/.bin or .safetensors). Either way a classifier of another class count is re-initialised
    and a stem of other input channels adapted (timm's ``adapt_input_conv``), see ``models/weights.py``."""

    name: str = "resnet18_cifar"
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0)
    pretrained: bool = False
    weights: Optional[str] = None  # a local state dict file
    kwargs: dict[str, Any] = Field(default_factory=dict)  # more keyword arguments of the timm model

    @field_validator("name")
    @classmethod
    def _resolve(cls, value: str) -> str:
        from raypair.config.model_names import resolve

        return resolve(value)

    @field_validator("weights")
    @classmethod
    def _weights_file(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.lower().endswith(WEIGHT_SUFFIXES):
            raise ValueError(f"not a state dict file ({', '.join(WEIGHT_SUFFIXES)})")
        if value is None:
            return None
        try:  # absolute now: a trial process may run in another folder than the one the file was named from
            return str(Path(value).expanduser().absolute())
        except RuntimeError:  # "~nosuchuser/w.pt"
            raise ValueError("its ~user has no home folder here") from None

    @field_validator("kwargs")
    @classmethod
    def _own_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key in _RESERVED_KWARGS:
                raise ValueError(f"{key}: not a model.kwargs key: {_RESERVED_KWARGS[key]}")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> "ModelConfig":
        from raypair.config.model_names import OWN_MODELS

        if self.pretrained and self.weights is not None:
            raise ValueError(f"weights: set model.pretrained or model.weights, not both (got {self.weights!r} "
                             "with pretrained: true)")
        if self.pretrained and self.name in OWN_MODELS:
            raise ValueError(f"pretrained: {self.name} is one of raypair's nets, which timm has no weights for; "
                             "set model.weights: PATH to a local state dict")
        return self

    def inactive(self) -> set[str]:
        from raypair.config.model_names import OWN_MODELS

        off = {"drop_rate"} if "drop_rate" in self.kwargs else set()  # kwargs.drop_rate wins
        return off | ({"pretrained"} if self.name in OWN_MODELS else set())  # can only be false there
