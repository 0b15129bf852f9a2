"""The config of Vision Pair Learning (methods.md §6): :class:`raypair.methods.vpl.Vpl`.
Torch-free: a file is validated without importing torch."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, ValidationError, model_validator

from raypair.config.method import MethodConfig
from raypair.config.model_names import is_model
from raypair.config.methods import CONFIGS


@CONFIGS.register("vpl")
class VplConfig(MethodConfig):
    name: Literal["vpl"] = "vpl"
    mode: Literal["vpl", "independent", "dml", "distill"] = "vpl"
    vit_model: str = Field("tiny_vit_w48", examples=["tiny_vit", "vit_small_patch16_224", "vit_base_patch16_224"])
    vit_seed: Optional[int] = Field(None, ge=0)  # None: the torch RNG after the CNN's init
    # the transformer's initial weights, a local state dict as model.weights (transfer from ImageNet, P4 Table 5)
    vit_weights: Optional[str] = Field(None, json_schema_extra={
        "tested_in": "tests/methods/test_vpl.py::test_vit_weights_load_into_the_transformer_branch"})
    affine: Literal["vit", "cnn"] = "vit"
    x: int = Field(20, ge=0, le=100)  # % of epochs of stage 1 (CL only)
    y: int = Field(20, ge=0, le=100)  # % of epochs of stage 3 (KL only)
    tau: float = Field(0.1, gt=0.0, le=1000.0)
    cl_normalize: bool = True
    rho: float = Field(1.0, gt=0.0, le=100.0)
    bidirectional: bool = False
    dml_update: Literal["cnn_first", "vit_first", "joint"] = "cnn_first"  # mode dml only
    lr_cnn: float = Field(1e-3, gt=0.0, le=10.0)
    lr_vit: float = Field(4e-4, gt=0.0, le=10.0)
    weight_decay_cnn: Optional[float] = Field(None, ge=0.0, le=1.0)
    weight_decay_vit: Optional[float] = Field(None, ge=0.0, le=1.0)
    ema: bool = False
    ema_decay: float = Field(0.9999, gt=0.0, lt=1.0)
    random_erasing: float = Field(0.25, ge=0.0, le=1.0)
    erase_mode: Literal["pixel", "rand", "const"] = "pixel"
    student: Literal["cnn", "vit"] = Field(  # distill only, which needs a checkpoint: tested by hand
        "cnn", json_schema_extra={"tested_in": "tests/test_vpl.py::test_distill_into_a_transformer_student"})
    teacher_checkpoint: Optional[str] = Field(  # a path: the generic knob test cannot make one
        None, json_schema_extra={"tested_in": "tests/test_vpl.py::test_distill_loads_the_teacher_and_keeps_it_frozen"})

    @model_validator(mode="after")
    def _check(self) -> "VplConfig":
        if self.x + self.y > 100:
            raise ValueError(f"y: x + y must be <= 100, got x={self.x}, y={self.y}")
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
            off |= {"teacher_checkpoint", "student"}
        else:  # the frozen teacher's branch trains nothing (a ViT teacher's init is overwritten)
            off |= {"vit_seed", "lr_vit", "weight_decay_vit"} if self.student == "cnn" else {"lr_cnn", "weight_decay_cnn"}
        off |= set() if self.ema else {"ema_decay"}
        return off | ({"erase_mode"} if self.random_erasing == 0 else set())
