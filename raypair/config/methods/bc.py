"""The config of BC / BC+ (methods.md §3): :class:`raypair.methods.bc.Bc`.
Torch-free: a file is validated without importing torch."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from raypair.config.method import MethodConfig
from raypair.config.methods import CONFIGS


@CONFIGS.register("bc")
class BcConfig(MethodConfig):
    name: Literal["bc"] = "bc"
    variant: Literal["bc", "bc+"] = "bc+"
    label_mode: Literal["ratio", "major"] = "ratio"  # ratio: P2 (KL); major: P2s (hard label, CE)
    r_low: float = Field(0.0, ge=0.0, lt=1.0)  # r ~ U(r_low, 1); P2s uses 0.5
    pairing: Literal["dataset", "batch"] = "dataset"
    r_eps: float = Field(1e-6, gt=0.0, lt=0.5)  # ASSUMPTION: clamp of r
    plus_stats: Literal["paper", "derived"] = "paper"  # ASSUMPTION for datasets outside P2's table
    train_set: Literal["mixed", "clean_and_mixed"] = "mixed"  # clean_and_mixed: P2s's expanded set

    def inactive(self) -> set[str]:
        return {"plus_stats"} if self.variant == "bc" else set()
