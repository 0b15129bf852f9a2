"""The run config: one schema per part (data, model, optim, schedule, scale, method), the run
that holds them, and its loading from YAML with ``--set dotted.path=value`` overrides.

One name per concept: the YAML key, the schema field, the op's keyword and the MLflow param are
the same dotted path (``optim.lr``, ``method.aug``). Method configs live in ``raypair/config/methods/``
(one module per method, torch-free) and are gathered into the ``method`` field's tagged union by
:func:`run_model`. Data sources register themselves in ``raypair/data/sources/``, which checks
``data.source`` against its registry where it resolves the data (config imports no data code).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, ValidationError, create_model, model_validator

from raypair.config.base import Name, Strict, from_validation, parse_override, read_yaml, set_path
from raypair.config.method import MethodConfig, aug_parts, loader_aug, loader_views, reported_metrics  # noqa: F401  (re-exported)
from raypair.config.scale import ScaleConfig
from raypair.config.model import ModelConfig  # noqa: F401  (re-exported)

METRICS = ("val_acc", "val_acc5", "val_loss", "train_loss", "train_acc", "test_acc")
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # numpy's and every generator's range
# how a run is computed or stored, not what it computes: searching or ablating one changes no result
NOT_SEARCHABLE = {"name": "names the run", "eval_batch_size": "only splits the evaluation into batches",
                  "checkpoint_every": "only sets how often a checkpoint is written",
                  "data.root": "only says where the files are", "data.cache_dir": "only says where the cache is",
                  "data.download": "only fetches the files", "scale.threads": "only sets CPU threads",
                  "scale.trainer": "only picks the runner", "scale.cpus_per_worker": "only reserves CPUs",
                  "scale.gpus_per_worker": "only places the trial on a device",
                  "scale.compile": "only compiles the same step", "data.source": "only picks the reader of the files",
                  "data.mode": "only picks how the images reach the device", "data.device_budget_gb": "only picks "
                  "data.mode under auto", "data.workers": "only sets the decoding processes", "data.prefetch": "only "
                  "sets how far decoding runs ahead", "data.on_corrupt": "only says what an undecodable image does",
                  "data.trace": "only records the order of the images"}


class DataConfig(Strict):
    """Where the images come from and how they are split. See ``raypair/data/``."""

    name: Name = "digits"  # one folder under the data root
    source: str = "auto"  # "auto" or a registered source (raypair/data/sources/)
    root: Optional[str] = None  # default: $RAYPAIR_DATA, else ./data
    download: bool = False  # torchvision CIFAR download, only when allowed and online
    image_size: Optional[int] = Field(None, ge=8, le=1024)  # resize (digits, ImageFolder)
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0)  # held out of train; 0 = evaluate on test
    train_subset: Optional[int] = Field(None, ge=1, le=10**9)  # class-balanced subset, by split_seed
    test_subset: Optional[int] = Field(None, ge=1, le=10**9)
    split_seed: Seed = 0
    # auto: per dataset (raypair/config/pipeline.py); cifar: CIFAR-10's moments for cifar10, CIFAR-100's
    # for cifar100; cifar10: CIFAR-10's for any data (P3's code on CIFAR-100)
    normalize: Literal["auto", "cifar", "cifar10", "computed", "imagenet"] = "auto"
    pad: int = Field(4, ge=0, le=64)  # zero padding of base+ pad-crop
    cache_dir: Optional[str] = None  # default: $RAYPAIR_CACHE, else ~/.cache/raypair
    # the image pipeline: cifar (pad-crop-flip) or imagenet (RRC + flip; resize + centre crop), per
    # dataset under auto; the table of defaults and the ASSUMPTION of `store`: raypair/config/pipeline.py
    pipeline: Literal["auto", "cifar", "imagenet"] = "auto"
    crop_size: int = Field(224, ge=8, le=1024)  # imagenet: the network's input side
    resize_size: int = Field(256, ge=8, le=1024)  # imagenet: evaluation's shorter side (and the stored square)
    rrc_scale: tuple[float, float] = Field((0.08, 1.0), examples=[[0.25, 1.0], [0.08, 0.5]])  # base+: area fraction
    rrc_ratio: tuple[float, float] = Field((3 / 4, 4 / 3), examples=[[0.5, 2.0], [1.0, 1.0]])  # base+: width / height
    store: Literal["auto", "square", "full"] = "auto"  # imagenet: a resize_size centre square or as given
    # the data path (raypair/data/mode.py, docs/scale.md): whole splits on the device, or streamed from the files
    mode: Literal["auto", "device", "stream"] = "auto"
    device_budget_gb: float = Field(8.0, gt=0.0, le=10000.0)  # auto: the device path when the decoded data fits
    workers: Optional[int] = Field(None, ge=0, le=256)  # stream: decoding processes per trial worker; None: scale.threads (1: none)
    prefetch: int = Field(2, ge=1, le=64)  # stream: batches each decoding process keeps ready
    on_corrupt: Literal["skip", "fail"] = "skip"  # stream: an image that does not decode is skipped and counted, or fails
    trace: Optional[str] = None  # stream: a folder; each rank writes the image rows of each training epoch there

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        from raypair.config.pipeline import check

        check(self)
        return self

    def stored_size(self) -> Optional[int]:
        """The side every image is decoded to (raypair/config/pipeline.py); None: as the source gives."""
        from raypair.config.pipeline import stored_size

        return stored_size(self)

    def inactive(self) -> set[str]:
        # the seed of the hold-out and the subsets: without them every image is used, in order
        off = set() if self.val_fraction > 0 or self.train_subset or self.test_subset else {"split_seed"}
        from raypair.config.pipeline import named_pipeline

        pipeline = named_pipeline(self)  # None: known once the images are decoded
        if pipeline == "cifar":
            off |= {"crop_size", "resize_size", "rrc_scale", "rrc_ratio", "store"}
        elif pipeline == "imagenet":
            off.add("pad")
        return off


class OptimConfig(Strict):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0.0, le=10.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0.0, le=1.0)
    betas: tuple[float, float] = (0.9, 0.999)
    # fine-tuning: the backbone (every model's parameters but its classifier, ``get_classifier()``)
    # starts at lr x this; the classifiers and a method's own heads at lr (raypair.loop.fine_tune_groups)
    backbone_lr_scale: float = Field(1.0, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> "OptimConfig":
        if self.name == "sgd" and self.nesterov and self.momentum == 0:
            raise ValueError(f"nesterov: needs momentum > 0, got momentum={self.momentum}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: must lie in [0, 1), got {list(self.betas)}")
        return self

    def inactive(self) -> set[str]:
        return {"betas"} if self.name == "sgd" else {"momentum", "nesterov"}


class ScheduleConfig(Strict):
    """Per-iteration learning-rate schedule: linear warm-up, then multistep, cosine or constant."""

    name: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: list[float] = Field(default_factory=lambda: [60, 120, 160])
    milestone_unit: Literal["epoch", "fraction"] = "epoch"
    gamma: float = Field(0.2, gt=0.0, le=1.0)
    warmup_epochs: float = Field(0.0, ge=0.0, le=10000)
    min_lr: float = Field(0.0, ge=0.0, le=10.0)  # cosine floor: the lr it ends at (other groups: in proportion)

    @model_validator(mode="after")
    def _check(self) -> "ScheduleConfig":
        m = self.milestones
        if any(v <= 0 for v in m):
            raise ValueError(f"milestones: must be > 0, got {m}")
        if any(b <= a for a, b in zip(m, m[1:])):
            raise ValueError(f"milestones: must increase strictly, got {m}")
        if self.milestone_unit == "fraction" and any(not 0 < v < 1 for v in m):
            raise ValueError(f"milestones: fractions must lie in (0, 1), got {m}")
        return self

    def inactive(self) -> set[str]:
        off = set()
        if self.name != "multistep":
            off |= {"milestones", "milestone_unit", "gamma"}
        if self.name != "cosine":
            off.add("min_lr")
        return off


class DivergenceConfig(Strict):
    """When a trial whose loss stays finite still counts as diverged (it stops, and is recorded
    diverged in MLflow and as a failed point in Optuna). A NaN or infinite loss always is."""

    loss_factor: Optional[float] = Field(1000.0, gt=1.0)  # train_loss above this x epoch 1's; null: off
    chance_after: Optional[int] = Field(None, ge=1, le=10000)  # from this epoch on, val_acc near chance diverges
    chance_margin: float = Field(0.01, ge=0.0, lt=1.0)  # "near chance": val_acc < 1/classes + margin

    def inactive(self) -> set[str]:
        return {"chance_margin"} if self.chance_after is None else set()


class RunConfigBase(Strict):
    name: str = "run"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    scale: ScaleConfig = Field(default_factory=ScaleConfig)
    epochs: int = Field(1, ge=1, le=10000)
    batch_size: int = Field(128, ge=1, le=65536)  # global batch: split evenly across Train workers
    eval_batch_size: int = Field(512, ge=1, le=65536)
    seed: Seed = 0
    checkpoint_every: int = Field(1, ge=1, le=10000)  # epochs between checkpoints (the last is always kept)
    diverge: DivergenceConfig = Field(default_factory=DivergenceConfig)

    @property
    def total_epochs(self) -> int:
        """Epochs the loop trains: ``epochs`` (the lr schedule's span) then the method's extra ones."""
        method = getattr(self, "method", None)
        return self.epochs + (method.extra_epochs() if method is not None else 0)

    @model_validator(mode="after")
    def _check(self) -> "RunConfigBase":
        method = getattr(self, "method", None)
        if method is not None:
            try:
                method.check_run(self)
            except ValueError as e:
                raise ValueError(f"method.{e}") from None
        if self.schedule.warmup_epochs > self.epochs:
            raise ValueError(f"schedule.warmup_epochs: longer than the run's epochs={self.epochs}, got "
                             f"{self.schedule.warmup_epochs}")
        if self.schedule.name == "cosine" and self.schedule.min_lr >= self.optim.lr:
            raise ValueError(f"schedule.min_lr: the cosine floor must lie below optim.lr={self.optim.lr}, got "
                             f"{self.schedule.min_lr}")
        if self.batch_size % self.scale.workers:
            raise ValueError(f"batch_size: {self.batch_size} does not split evenly across "
                             f"scale.workers={self.scale.workers}")
        return self

    def unread(self) -> dict[str, str]:
        """Dotted paths no code reads under the current settings (or that change no result), each
        with the reason ("" for a section's own ``inactive``): sweeping or ablating one is an error."""
        out = dict(NOT_SEARCHABLE)
        for section in ("data", "model", "optim", "schedule", "scale", "diverge"):
            for key in getattr(self, section).inactive():
                out[f"{section}.{key}"] = ""
        method = getattr(self, "method", None)
        if method is not None:
            out |= {f"method.{k}": "" for k in method.inactive()}
            out |= {k: f"method {method.name} replaces it with its own settings" for k in method.unread_run_fields()}
            if method.aug == "base":
                out["data.pad"] = "only method.aug: base+ pads"
        if "drop_rate" in self.model.kwargs:
            out["model.drop_rate"] = "model.kwargs.drop_rate replaces it"
        s = self.schedule
        scale = self.epochs if s.milestone_unit == "fraction" else 1
        if s.name == "multistep" and not any(m * scale < self.epochs for m in s.milestones):
            out["schedule.gamma"] = f"no milestone of {s.milestones} falls within the run's {self.epochs} epochs"
        return out


@functools.cache
def run_model() -> type[RunConfigBase]:
    """The RunConfig class, its ``method`` field a tagged union over every registered method. It is
    this module's ``RunConfig`` (:func:`__getattr__`), so a run pickles by reference: a trial
    process or a Train worker that receives one only restores its fields, it validates nothing."""
    from raypair.config.methods import CONFIGS

    classes = tuple(CONFIGS.get(n) for n in CONFIGS.names())
    if len(classes) == 1:
        method_type: Any = classes[0]
    else:
        method_type = Annotated[Union[classes], Field(discriminator="name")]  # type: ignore[valid-type]
    return create_model("RunConfig", __base__=RunConfigBase, __module__=__name__, method=(method_type, ...))


def __getattr__(name: str) -> Any:
    if name == "RunConfig":
        return run_model()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_run(raw: dict[str, Any], prefix: str = "") -> RunConfigBase:
    """Validate a run config (the one place a run is validated). Errors name the dotted field."""
    from raypair.config.methods import CONFIGS

    try:
        return run_model().model_validate(raw)
    except ValidationError as err:
        raise from_validation(err, prefix, methods=CONFIGS.names()) from None


def load_run(path: str | Path, overrides: list[str] = ()) -> RunConfigBase:
    raw = read_yaml(path)
    for text in overrides:
        raw = set_path(raw, *parse_override(text))
    return build_run(raw)
