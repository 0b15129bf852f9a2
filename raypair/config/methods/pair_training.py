"""The config of PairTraining (methods.md §5): :class:`raypair.methods.pair_training.PairTraining`.
Torch-free: a file is validated without importing torch."""
from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from raypair.config.method import MethodConfig
from raypair.config.methods import CONFIGS

STAGE_OPS = ("none", "rf", "cutout", "cutmix", "dmask", "dmix")
# Table 4 of P0: strategy 1 = normal training, 8 = full PairTraining; the paper's map of 2-7 is
# lost, so the controls carry descriptive names, not numbers (methods.md §5.3).
PRESETS: dict[str, tuple[str, str, str]] = {
    "S1": ("none", "none", "none"),
    "S8": ("rf", "dmask", "dmix"),
    **{op: (op, op, op) for op in STAGE_OPS[1:]},
    "rf_dmask_dmask": ("rf", "dmask", "dmask"),
}
Op = Literal["none", "rf", "cutout", "cutmix", "dmask", "dmix"]
Preset = Literal["S8", "S1", "rf", "cutout", "cutmix", "dmask", "dmix", "rf_dmask_dmask"]
PAIR_KNOBS = {"t1", "t2", "alpha_mode", "gate", "omega", "omega_mode", "omega_convex", "forward"}


def resolve_ops(stage_ops: Union[str, Sequence[str]]) -> tuple[str, str, str]:
    """A preset name (``PRESETS``) or three ops from ``STAGE_OPS`` -> the op of stages 1, 2, 3."""
    ops = PRESETS.get(stage_ops) if isinstance(stage_ops, str) else tuple(stage_ops)
    if ops is None or len(ops) != 3 or any(op not in STAGE_OPS for op in ops):
        raise ValueError(f"stage_ops must be a preset ({', '.join(PRESETS)}) or 3 ops from "
                         f"{', '.join(STAGE_OPS)}, got {stage_ops!r}")
    return ops  # type: ignore[return-value]


@CONFIGS.register("pair_training")
class PairTrainingConfig(MethodConfig):
    name: Literal["pair_training"] = "pair_training"
    aug: Literal["base", "base+"] = "base+"  # x_z is augmented as in normal training (P0: RF "has little effect")
    stage_ops: Union[Preset, tuple[Op, Op, Op]] = "S8"  # a preset or the ops of stages 1, 2, 3
    t1: float = Field(0.25, gt=0.0, lt=1.0)
    t2: float = Field(0.75, gt=0.0, lt=1.0)
    alpha_mode: Literal["ramp", "beta", "one"] = "ramp"
    gate: Literal["per_batch", "per_sample"] = "per_batch"
    cumulative_rf: bool = True
    # RF (and the RF before D-Mask / D-Mix) crops and flips the ORIGINAL image (P0), not the loader's
    # already cropped x_z: under aug base+ the method then crops x_z itself from the same original
    rf_of: Literal["original", "x_z"] = Field("original", json_schema_extra={
        "tested_in": "tests/test_pair_training.py::test_rf_crops_the_original_so_x_p_lies_within_pad_of_it"})
    a_min: float = Field(0.0625, ge=0.0, le=1.0)
    a_max: float = Field(0.25, ge=0.0, le=1.0)
    n_max: int = Field(1, ge=1, le=16)
    theta_min: float = Field(0.3, ge=0.0, le=1.0)
    theta_max: float = Field(0.6, ge=0.0, le=1.0)
    dmix_label: Literal["soft", "hard"] = "soft"
    omega: float = Field(1.0, ge=0.0, le=10.0)
    omega_mode: Literal["const", "beta"] = "const"
    omega_convex: bool = False
    forward: Literal["two_pass", "joint"] = "two_pass"

    @field_validator("stage_ops", mode="before")
    @classmethod
    def _ops(cls, v: Any) -> Any:
        try:  # one readable error instead of the union's two
            resolve_ops(v if isinstance(v, (str, list, tuple)) else "?")
        except ValueError:
            raise ValueError(f"must be a preset ({', '.join(PRESETS)}) or 3 ops from "
                             f"{', '.join(STAGE_OPS)}") from None
        return v

    @model_validator(mode="after")
    def _check(self) -> "PairTrainingConfig":
        if self.t2 <= self.t1:
            raise ValueError(f"t2: must exceed t1={self.t1}, got {self.t2}")
        if self.a_max < self.a_min:
            raise ValueError(f"a_max: must be >= a_min={self.a_min}, got {self.a_max}")
        if self.theta_max < self.theta_min:
            raise ValueError(f"theta_max: must be >= theta_min={self.theta_min}, got {self.theta_max}")
        if self.omega_convex and self.omega > 1:
            raise ValueError(f"omega: must be <= 1 with omega_convex, got {self.omega}")
        return self

    def _rf_ops(self) -> bool:
        ops = set(resolve_ops(self.stage_ops))
        return "rf" in ops or bool(self.cumulative_rf and ops & {"dmask", "dmix"})

    def crops_itself(self) -> bool:
        return self.aug == "base+" and self.rf_of == "original" and self._rf_ops()

    def inactive(self) -> set[str]:
        ops = set(resolve_ops(self.stage_ops))
        off = set() if ops - {"none"} else set(PAIR_KNOBS)
        if self.alpha_mode == "one":
            off.add("gate")  # alpha 1: both gates pair every row of every batch
        if not ops & {"dmask", "dmix"}:
            off.add("cumulative_rf")
        if self.aug != "base+" or not self._rf_ops():
            off.add("rf_of")  # base: x_z is the original; or no op crops
        if "dmask" not in ops:
            off |= {"a_min", "a_max", "n_max"}
        if "dmix" not in ops:
            off |= {"theta_min", "theta_max", "dmix_label"}
        return off
