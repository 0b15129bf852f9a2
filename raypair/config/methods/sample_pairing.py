"""The config of SamplePairing (methods.md §2): :class:`raypair.methods.sample_pairing.SamplePairing`.
Torch-free: a file is validated without importing torch."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from raypair.config.method import MethodConfig
from raypair.config.methods import CONFIGS


@CONFIGS.register("sample_pairing")
class SamplePairingConfig(MethodConfig):
    name: Literal["sample_pairing"] = "sample_pairing"
    pairing: Literal["dataset", "batch"] = "dataset"
    warmup_frac: float = Field(0.5, ge=0.0, lt=1.0)  # SP: 100 epochs (CIFAR); here 100 of 200
    on_frac: float = Field(0.04, gt=0.0, le=1.0)  # SP: 8 epochs on
    off_frac: float = Field(0.01, gt=0.0, le=1.0)  # SP: 2 epochs off
    final_off_frac: float = Field(0.15, ge=0.0, lt=1.0)  # ASSUMPTION (§4.6)

    @model_validator(mode="after")
    def _check(self) -> "SamplePairingConfig":
        if self.warmup_frac + self.final_off_frac >= 1.0:
            raise ValueError(f"final_off_frac: with warmup_frac={self.warmup_frac} SP would never be on, "
                             f"got {self.final_off_frac}")
        return self
