"""The config of CutMix (methods.md §1.1): :class:`raypair.methods.cutmix.Cutmix`.
Torch-free: a file is validated without importing torch."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from raypair.config.method import MethodConfig
from raypair.config.methods import CONFIGS


@CONFIGS.register("cutmix")
class CutmixConfig(MethodConfig):
    name: Literal["cutmix"] = "cutmix"
    alpha: float = Field(1.0, gt=0.0, le=100.0)  # lam ~ Beta(alpha, alpha)
    cutmix_prob: float = Field(1.0, ge=0.0, le=1.0)  # per-batch probability of mixing
    partner: Literal["perm", "flip", "roll"] = "perm"

    def inactive(self) -> set[str]:
        return {"alpha", "partner"} if self.cutmix_prob == 0 else set()
