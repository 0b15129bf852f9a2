"""The config of Vision Pair Learning (methods.md §6): :class:`raypair.methods.vpl.Vpl`.
Torch-free: a file is validated without importing torch."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, ValidationError, field_validator, model_validator

from raypair.config.method import MethodConfig
from raypair.config.model_names import is_model
from raypair.config.methods import CONFIGS


@CONFIGS.register("vpl")
class VplConfig(MethodConfig):
    name: Literal["vpl"] = "vpl"
    # P4's recipe (§4, methods.md §6.1) "AutoAugment + Random Erasing" and "EMA": on by default; P4's
    # AutoAugment is ImageNet's policy (the CIFAR files use base+aa_cifar10 at 32 px)
    aug: Literal["base", "base+", "base+aa_cifar10", "base+aa_imagenet", "base+ra"] = "base+aa_imagenet"
    mode: Literal["vpl", "independent", "dml", "distill"] = "vpl"
    vit_model: str = Field("tiny_vit_w48", examples=["tiny_vit", "vit_small_patch16_224", "vit_base_patch16_224"])
    vit_seed: Optional[int] = Field(None, ge=0)  # None: the torch RNG after the CNN's init
    # the transformer's initial weights, a local state dict as model.weights (transfer from ImageNet, P4 Table 5)
    vit_weights: Optional[str] = Field(None, json_schema_extra={
        "tested_in": "tests/methods/test_vpl.py::test_vit_weights_load_into_the_transformer_branch"})
    affine: Literal["vit", "cnn"] = "vit"
    x: int = Field(20, ge=0, le=100)  # % of epochs of stage 1 (CL only)
    # % of epochs of stage 3 (KL only); None (default): y = x, tied as in P4 ("x = y = 20", Table 8)
    y: Optional[int] = Field(None, ge=0, le=100)
    tau: float = Field(0.1, gt=0.0, le=1000.0)
    cl_normalize: bool = True
    rho: float = Field(1.0, gt=0.0, le=100.0)
    bidirectional: bool = False
    dml_update: Literal["cnn_first", "vit_first", "joint"] = "cnn_first"  # mode dml only
    lr_cnn: float = Field(1e-3, gt=0.0, le=10.0)
    lr_vit: float = Field(4e-4, gt=0.0, le=10.0)
    weight_decay_cnn: Optional[float] = Field(None, ge=0.0, le=1.0)
    weight_decay_vit: Optional[float] = Field(None, ge=0.0, le=1.0)
    ema: bool = True
    ema_decay: float = Field(0.9999, gt=0.0, lt=1.0)
    random_erasing: float = Field(0.25, ge=0.0, le=1.0)
    erase_mode: Literal["pixel", "rand", "const"] = "pixel"
    distill_loss: Literal["plm", "kl"] = Field(  # distill only, which needs a checkpoint: tested by hand
        "plm", json_schema_extra={"tested_in": "tests/methods/test_vpl.py::test_distill_plm_loss_of_a_transformer_student"})
    student: Literal["cnn", "vit"] = Field(  # distill only, which needs a checkpoint: tested by hand
        "cnn", json_schema_extra={"tested_in": "tests/test_vpl.py::test_distill_into_a_transformer_student"})
    teacher_checkpoint: Optional[str] = Field(  # a path: the generic knob test cannot make one
        None, json_schema_extra={"tested_in": "tests/test_vpl.py::test_distill_loads_the_teacher_and_keeps_it_frozen"})

    @field_validator("teacher_checkpoint")
    @classmethod
    def _absolute(cls, value: Optional[str]) -> Optional[str]:
        """Absolute now (as ``model.weights``): a trial process may run in another folder."""
        if value is None:
            return None
        try:
            return str(Path(value).expanduser().absolute())
        except RuntimeError:  # "~nosuchuser/state.pt"
            raise ValueError("its ~user has no home folder here") from None

    @model_validator(mode="after")
    def _check(self) -> "VplConfig":
        if self.x + self.y_percent() > 100:
            raise ValueError(f"{'x' if self.y is None else 'y'}: x + y must be <= 100, got x={self.x}, y={self.y_percent()}"
                             f"{' (y tied to x)' if self.y is None else ''}")
        if self.mode == "distill" and not self.teacher_checkpoint:
            raise ValueError(f"teacher_checkpoint: mode distill needs a trained {'CNN' if self.student == 'vit' else 'transformer'}"
                             "'s checkpoint, got None")
        if not is_model(self.vit_model):
            raise ValueError(f"vit_model: unknown timm model, got {self.vit_model!r}")
        if self.vit_weights is not None:
            from raypair.config.model import ModelConfig

            try:  # the checks of model.weights: a state dict's suffix, an absolute path
                self.vit_weights = ModelConfig(name=self.vit_model, weights=self.vit_weights).weights
            except ValidationError as e:
                raise ValueError(f"vit_weights: {e.errors()[0]['msg'].removeprefix('Value error, ')}") from None
        return self

    def networks(self) -> tuple[str, ...]:
        return (self.vit_model,)

    def y_percent(self) -> int:
        """Stage 3's share of the epochs: ``y``, or ``x`` where y is tied to it (None)."""
        return self.x if self.y is None else self.y

    def stage_starts(self, epochs: int) -> list[int]:
        """Where stages 2 and 3 start (0-based; ``round`` with halves up, as ``ops.vpl_ops.vpl_stage``)."""
        if self.mode != "vpl":
            return []
        first, last = (math.floor(p * epochs / 100 + 0.5) for p in (self.x, self.y_percent()))
        return sorted({s for s in (first, epochs - last) if 0 < s < epochs})

    def distill_cl(self) -> bool:
        """distill with P4's DIS loss for a transformer student: CE + L_CL toward the frozen CNN."""
        return self.mode == "distill" and self.student == "vit" and self.distill_loss == "plm"

    def eval_heads(self) -> tuple[str, ...]:
        """eval_logits' keys: both branches, raw then EMA (distill's frozen teacher has no EMA copy)."""
        trained = (self.student,) if self.mode == "distill" else ("cnn", "vit")
        ema = tuple(f"{b}_ema" for b in ("cnn", "vit") if b in trained) if self.ema else ()
        return ("cnn", "vit", *ema)

    def search_range(self, field: str) -> Optional[tuple[float, float, str]]:
        if field != "tau":
            return None
        if self.cl_normalize:
            return 0.01, 10.0, "cosine similarities lie in [-1, 1]"
        return 1.0, 1000.0, "raw dot products reach ~160 at init (resnet18_cifar + tiny_vit): tau < 1 saturates"

    def train_metrics(self) -> set[str]:
        return {"train_acc_cnn", "train_acc_vit"}

    def unread_run_fields(self) -> set[str]:
        unread = {"optim.lr"}  # lr_cnn / lr_vit are the groups' absolute learning rates
        trained = (self.student,) if self.mode == "distill" else ("cnn", "vit")
        if all(getattr(self, f"weight_decay_{b}") is not None for b in trained):
            unread.add("optim.weight_decay")
        return unread

    def inactive(self) -> set[str]:
        off = set() if self.mode == "vpl" else {"x", "y", "tau", "cl_normalize", "bidirectional", "affine"}
        off |= set() if self.mode == "dml" else {"dml_update"}
        if self.mode == "independent":
            off.add("rho")
        if self.mode != "distill":
            off |= {"teacher_checkpoint", "student", "distill_loss"}
        else:  # the frozen teacher's branch trains nothing (a ViT teacher's init is overwritten)
            off |= {"vit_seed", "lr_vit", "weight_decay_vit"} if self.student == "cnn" else {"lr_cnn", "weight_decay_cnn"}
        if self.distill_cl():  # a transformer student learns L_CL (tau, the similarity, A), not L_KL
            off = (off - {"tau", "cl_normalize", "affine"}) | {"rho"}
        off |= set() if self.ema else {"ema_decay"}
        return off | ({"erase_mode"} if self.random_erasing == 0 else set())
