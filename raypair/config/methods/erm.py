"""The config of ERM (methods.md §1.1): :class:`raypair.methods.erm.Erm`.
Torch-free: a file is validated without importing torch."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from raypair.config.method import MethodConfig
from raypair.config.methods import CONFIGS


@CONFIGS.register("erm")
class ErmConfig(MethodConfig):
    name: Literal["erm"] = "erm"
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
