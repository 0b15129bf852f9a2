"""The config of mixup-C (methods.md §4.3): :class:`raypair.methods.mixup_c.MixupC`.
Torch-free: a file is validated without importing torch."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from raypair.config.method import MethodConfig
from raypair.config.methods import CONFIGS


@CONFIGS.register("mixup_c")
class MixupCConfig(MethodConfig):
    name: Literal["mixup_c"] = "mixup_c"
    alpha: float = Field(1.0, gt=0.0, le=100.0)  # Beta(alpha, alpha); 1 = U[0, 1]
    lam: Literal["beta", "range"] = "beta"
    r: float = Field(0.5, ge=0.0, le=0.5)  # lam ~ U[0.5 - r, 0.5 + r] with lam: range
    heads: Literal[1, 2] = 1  # 2 = the dual-input / dual-output net of §4.3
    dual_loss: Literal["sum", "weighted"] = "sum"  # heads=2: CE1 + CE2 (P1) or lam CE1 + (1 - lam) CE2
    # heads=2: the input weights, fixed [0.5 x_i, 0.5 x_j] (P1 §5.2: both heads good) or [lam x_i, (1 - lam) x_j]
    # (random lam_x: with dual_loss sum, P1 §5.3's "only lam_x" case that leaves one head near chance)
    dual_input: Literal["half", "lam"] = "half"
    # heads=2: P1 §5.4, "one sample's label random": head 2 trains on a uniformly random class, not y_j
    random_label: Literal["none", "second"] = "none"
    ft_epochs: int = Field(10, ge=0, le=1000)  # fine-tuning epochs after the run's epochs
    ft_lr: float = Field(1e-3, gt=0.0, le=10.0)
    eval_lam: Literal["half", "train"] = Field(  # the ratio of the two-image test input
        "half", json_schema_extra={"tested_in": "tests/test_mixup_c.py::test_two_image_protocol_scores_each_head_"
                                                "against_its_own_image"})
    images_per_input: ClassVar[int] = 2  # [lam x_i, (1 - lam) x_j]: build_method builds a 2C-channel stem

    def extra_epochs(self) -> int:
        return self.ft_epochs

    def eval_heads(self) -> tuple[str, ...]:
        # before the fine-tuning conversion only: both heads on one image (P1's pairs: eval_pair_metrics)
        return ("", "single_head1", "single_head2") if self.heads == 2 else ("",)

    def eval_pair_metrics(self) -> set[str]:
        return {"acc_head1", "acc_head2"} if self.heads == 2 else {"top2", "top2_all"}

    def inactive(self) -> set[str]:
        off = {"r"} if self.lam == "beta" else {"alpha"}
        off |= {"dual_loss", "dual_input", "random_label"} if self.heads == 1 else set()
        if self.heads == 2 and self.dual_input == "half" and self.dual_loss == "sum":
            off |= {"lam", "alpha", "r", "eval_lam"}  # no lam is read: fixed inputs (train and test), unweighted losses
        return off | ({"ft_lr"} if self.ft_epochs == 0 else set())
