"""The config of mixup and mixup-X/L/XL (methods.md §1.1, §4): :class:`raypair.methods.mixup.Mixup`.
Torch-free: a file is validated without importing torch."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from raypair.config.method import MethodConfig
from raypair.config.methods import CONFIGS

TESTS = "tests/test_mixing_methods.py::"


@CONFIGS.register("mixup")
class MixupConfig(MethodConfig):
    name: Literal["mixup"] = "mixup"
    lam: Literal["beta", "range"] = "beta"
    alpha: float = Field(1.0, gt=0.0, le=100.0)  # beta mode: Beta(alpha, alpha)
    r_x: float = Field(0.5, ge=0.0, le=0.5)  # range mode: lam_x in [0.5 - r_x, 0.5 + r_x]
    r_l: float = Field(0.5, ge=0.0, le=0.5)  # range mode: lam_l in [0.5 - r_l, 0.5 + r_l]
    shared: bool = True  # range mode: one draw for both ratios (false: mixup-XL)
    partner: Literal["perm", "flip", "roll"] = "perm"
    ft_epochs: int = Field(0, ge=0, le=1000)  # fine-tuning epochs after the run's epochs
    ft_lr: float = Field(1e-3, gt=0.0, le=10.0)
    top2_tie: Literal["image", "either"] = Field(  # top2's order on a label tie (mixup-X)
        "image", json_schema_extra={"tested_in": TESTS + "test_top2_order_on_a_label_tie_follows_top2_tie"})
    eval_lam: Literal["train", "half"] = Field(  # the ratios of the test pairs behind val_/test_top2
        "train", json_schema_extra={"tested_in": TESTS + "test_mixup_test_top2_on_fixed_pairs"})

    def extra_epochs(self) -> int:
        return self.ft_epochs

    def eval_pair_metrics(self) -> set[str]:
        return {"top2", "top2_all"}

    def inactive(self) -> set[str]:
        off = {"r_x", "r_l", "shared"} if self.lam == "beta" else {"alpha"}
        if self.lam == "range" and (self.r_x == 0 or self.r_l == 0):
            off.add("shared")  # a constant ratio has nothing to share
        if self.lam == "beta" or self.r_l > 0 or self.r_x == 0:
            off.add("top2_tie")  # no label tie, or the image ties too
        if self.ft_epochs == 0:
            off.add("ft_lr")
        return off
