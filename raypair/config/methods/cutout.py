"""The config of Cutout (methods.md §1.1): :class:`raypair.methods.cutout.Cutout`.
Torch-free: a file is validated without importing torch."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from raypair.config.method import MethodConfig
from raypair.config.methods import CONFIGS


@CONFIGS.register("cutout")
class CutoutConfig(MethodConfig):
    name: Literal["cutout"] = "cutout"
    n_holes: int = Field(1, ge=0, le=64)  # 0 cuts nothing (ERM on the same stream)
    length: int = Field(16, ge=1, le=1024)  # square side in pixels: 16 for CIFAR-10, 8 for CIFAR-100

    def inactive(self) -> set[str]:
        return {"length"} if self.n_holes == 0 else set()
