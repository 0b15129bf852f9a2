"""Validated configuration: pydantic v2 schemas (unknown keys rejected), YAML loading and
``--set dotted.path=value`` overrides.

One name per concept: the YAML key, the schema field, the op's keyword and the MLflow param are
the same dotted path (``optim.lr``, ``method.aug``). Every error is a :class:`ConfigError` whose
text names the dotted field and the received value, so the CLI can print one line and exit 2
before any compute starts.

Method configs live beside their methods (``raypair/methods/*.py``) and are gathered into the
``method`` field's tagged union by :func:`run_model`.
"""
from __future__ import annotations

import builtins
import functools
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator


class ConfigError(ValueError):
    """Bad user input. ``str(err)`` is the one line the CLI prints."""

    def __init__(self, field: str, message: str, value: Any = ...) -> None:
        self.field, self.message, self.value = field, message, value
        got = "" if value is ... else f" (got {_short(value)})"
        super().__init__(f"{field}: {message}{got}" if field else f"{message}{got}")

    def __reduce__(self) -> tuple[Any, ...]:  # Ray copies and pickles a trial's exception
        return (ConfigError, (self.field, self.message, self.value))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    def inactive(self) -> set[str]:
        """Names of fields that no code reads under the current settings (sweeping one is an error)."""
        return set()


# ----------------------------------------------------------------------------------- run parts
class DataConfig(Strict):
    """Where the images come from and how they are split. See ``raypair/data.py``."""

    name: str = "digits"
    source: Literal["auto", "parquet", "cifar", "imagefolder", "sklearn"] = "auto"
    root: Optional[str] = None  # default: $RAYPAIR_DATA, else ./data
    download: bool = False  # torchvision CIFAR download, only when allowed and online
    image_size: Optional[int] = Field(None, ge=8, le=1024)  # resize (digits, ImageFolder)
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0)  # held out of train; 0 = evaluate on test
    train_subset: Optional[int] = Field(None, ge=1)  # class-balanced subset, by split_seed
    test_subset: Optional[int] = Field(None, ge=1)
    split_seed: int = 0
    normalize: Literal["auto", "cifar", "computed", "imagenet"] = "auto"
    pad: int = Field(4, ge=0, le=64)  # zero padding of base+ pad-crop
    cache_dir: Optional[str] = None  # default: $RAYPAIR_CACHE, else ~/.cache/raypair


class ModelConfig(Strict):
    """Any ``timm.create_model`` name; raypair registers its CIFAR nets and tiny test nets there."""

    name: str = "resnet18_cifar"
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class OptimConfig(Strict):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0.0, le=10.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0.0, le=1.0)
    betas: tuple[float, float] = (0.9, 0.999)

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
    warmup_epochs: float = Field(0.0, ge=0.0)
    min_lr: float = Field(0.0, ge=0.0)  # cosine floor

    @model_validator(mode="after")
    def _check(self) -> "ScheduleConfig":
        m = self.milestones
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


class ScaleConfig(Strict):
    """How one trial runs. Per-trial resources = workers x (cpus_per_worker, gpus_per_worker)."""

    workers: int = Field(1, ge=1, le=1024)
    cpus_per_worker: float = Field(1.0, gt=0.0)
    gpus_per_worker: Union[float, Literal["auto"]] = "auto"  # fractional GPUs share a device
    # train: the loop under a Ray Train TorchTrainer; direct: in the Tune trial process (1 worker);
    # auto: direct for a 1-worker CPU trial (Train's ~20 s start-up per trial dwarfs a CPU quick
    # sweep: measured 144 s vs 52 s for search_spaces/quickstart.yaml), Train otherwise
    trainer: Literal["auto", "train", "direct"] = "auto"
    compile: bool = False  # torch.compile (mode reduce-overhead on CUDA)
    threads: Optional[int] = Field(None, ge=1)  # torch threads per worker; default cpus_per_worker

    def resources(self) -> dict[str, float]:
        """CPUs and GPUs one run's workers hold together (``gpus_per_worker: auto`` counts 0 until pinned)."""
        gpus = 0.0 if self.gpus_per_worker == "auto" else float(self.gpus_per_worker)
        return {"cpu": self.workers * self.cpus_per_worker, "gpu": self.workers * gpus}

    def uses_train(self) -> bool:
        if self.trainer == "auto":
            return self.workers > 1 or self.gpus_per_worker not in (0, 0.0)
        return self.trainer == "train"

    @model_validator(mode="after")
    def _check(self) -> "ScaleConfig":
        if self.gpus_per_worker != "auto" and not 0 <= self.gpus_per_worker <= 8:
            raise ValueError(f"gpus_per_worker: must lie in [0, 8] or be 'auto', got {self.gpus_per_worker}")
        if self.trainer == "direct" and self.workers != 1:
            raise ValueError(f"trainer: 'direct' runs one worker, got workers={self.workers}")
        return self


class MethodConfig(Strict):
    """Base of every method's config; each method file subclasses it with ``name: Literal[...]``."""

    name: str
    aug: Literal["base", "base+"] = "base+"  # base: normalise only; base+: pad-crop-flip first

    def unread_run_fields(self) -> set[str]:
        """Dotted run-config paths this method overrides, so no code reads them (VPL's per-branch
        learning rates replace ``optim.lr``); sweeping one is refused."""
        return set()

    def check_run(self, run: "RunConfigBase") -> None:
        """Cross-checks against the rest of the run (e.g. a phase longer than ``run.epochs``):
        raise ``ValueError("<field>: ...")`` naming this config's field."""
        return None


class RunConfigBase(Strict):
    name: str = "run"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    scale: ScaleConfig = Field(default_factory=ScaleConfig)
    epochs: int = Field(1, ge=1, le=10000)
    batch_size: int = Field(128, ge=1)  # global batch: split evenly across Train workers
    eval_batch_size: int = Field(512, ge=1)
    seed: int = 0
    checkpoint_every: int = Field(1, ge=1)  # epochs between checkpoints (the last is always kept)

    @model_validator(mode="after")
    def _check(self) -> "RunConfigBase":
        method = getattr(self, "method", None)
        if method is not None:
            try:
                method.check_run(self)
            except ValueError as e:
                raise ValueError(f"method.{e}") from None
        if self.batch_size % self.scale.workers:
            raise ValueError(f"batch_size: {self.batch_size} does not split evenly across "
                             f"scale.workers={self.scale.workers}")
        return self


@functools.cache
def run_model() -> type[RunConfigBase]:
    """The RunConfig class, its ``method`` field a tagged union over every registered method."""
    from raypair.methods import METHODS

    classes = tuple(METHODS.get(n).Config for n in METHODS.names())
    if len(classes) == 1:
        method_type: Any = classes[0]
    else:
        method_type = Annotated[Union[classes], Field(discriminator="name")]  # type: ignore[valid-type]
    return create_model("RunConfig", __base__=RunConfigBase, method=(method_type, ...))


# --------------------------------------------------------------------------------- search space
SPACE_KINDS = ("uniform", "loguniform", "int", "choice", "grid")


class ParamSpace(Strict):
    """One searched knob, written ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``,
    ``{int: [lo, hi]}``, ``{choice: [a, b, ...]}`` or ``{grid: [a, b, ...]}``."""

    uniform: Optional[tuple[float, float]] = None
    loguniform: Optional[tuple[float, float]] = None
    int: Optional[tuple[builtins.int, builtins.int]] = None  # noqa: A003 - the YAML word
    choice: Optional[list[Any]] = None
    grid: Optional[list[Any]] = None

    @model_validator(mode="after")
    def _one(self) -> "ParamSpace":
        given = [k for k in SPACE_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(SPACE_KINDS)}; got {given or 'none'}")
        kind = given[0]
        args = getattr(self, kind)
        if kind in ("uniform", "loguniform", "int") and not args[0] < args[1]:
            raise ValueError(f"{kind} needs low < high, got {list(args)}")
        if kind == "loguniform" and args[0] <= 0:
            raise ValueError(f"loguniform needs low > 0, got {list(args)}")
        if kind in ("choice", "grid") and not args:
            raise ValueError(f"{kind} needs at least one value")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in SPACE_KINDS if getattr(self, k) is not None)

    @property
    def args(self) -> Any:
        return getattr(self, self.kind)

    def probe_values(self) -> list[Any]:
        """Values that must all validate: the bounds of a range, every listed option."""
        return list(self.args)


class SearcherConfig(Strict):
    name: Literal["optuna", "random"] = "optuna"  # random = Ray's variant generator (grid allowed)
    sampler: Literal["tpe", "random"] = "tpe"
    seed: Optional[int] = 0
    n_startup_trials: int = Field(4, ge=1)  # TPE's random start


class SchedulerConfig(Strict):
    name: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, ge=1)  # epochs before ASHA may stop a trial
    reduction_factor: float = Field(2.0, gt=1.0)
    max_t: Optional[int] = Field(None, ge=1)  # default: the run's epochs


class TuneSettings(Strict):
    metric: str = "val_acc"
    mode: Literal["max", "min"] = "max"
    num_samples: int = Field(8, ge=1)
    max_concurrent_trials: int = Field(2, ge=1)
    searcher: SearcherConfig = Field(default_factory=SearcherConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    max_failures: int = Field(0, ge=0)  # retries of a crashed trial (from its last checkpoint)


class SpaceFile(Strict):
    name: str
    base: Optional[str] = None  # a run YAML, relative to this file; one level only
    run: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, ParamSpace] = Field(default_factory=dict)
    tune: TuneSettings = Field(default_factory=TuneSettings)


METRICS = ("val_acc", "val_acc5", "val_loss", "train_loss", "train_acc", "test_acc")


# -------------------------------------------------------------------------------------- errors
def _loc(loc: tuple[Any, ...], prefix: str = "") -> str:
    parts = [str(p) for p in loc]
    # A tagged union puts the tag in the location: method.erm.aug -> method.aug (and method.vpl
    # for the method config's own cross-field check, whose message then names the field)
    if len(parts) >= 2 and parts[0] == "method":
        from raypair.methods import METHODS

        if parts[1] in METHODS:
            parts.pop(1)
    return ".".join(p for p in [prefix, *parts] if p)


def from_validation(err: ValidationError, prefix: str = "") -> ConfigError:
    """The first pydantic error as a one-line ConfigError naming the dotted field."""
    e = err.errors()[0]
    field = _loc(e["loc"], prefix)
    kind = e["type"]
    if kind == "extra_forbidden":
        return ConfigError(field, "unknown key")
    if kind == "union_tag_invalid" or (field == "method.name" and kind == "literal_error"):
        from raypair.methods import METHODS

        value = e["input"].get("name") if isinstance(e["input"], dict) else e["input"]
        return ConfigError("method.name", f"unknown method (valid: {', '.join(METHODS.names())})", value)
    if kind == "missing":
        return ConfigError(field, "required")
    msg = e["msg"].removeprefix("Value error, ")
    named = re.match(r"^([A-Za-z_][\w.]*): (.*)$", msg)
    if named and e["type"] == "value_error":  # a cross-field check names its own field
        return ConfigError(".".join(p for p in (field, named[1]) if p), named[2])
    return ConfigError(field, msg, e.get("input", ...))


# ------------------------------------------------------------------------------ dicts and YAML
def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("", f"{p}: no such file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark else str(p)
        raise ConfigError("", f"{where}: YAML syntax error: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("", f"{p}: the top level must be a mapping", type(data).__name__)
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def set_path(d: dict[str, Any], path: str, value: Any, prefix: str = "") -> dict[str, Any]:
    """A copy of ``d`` with ``path`` (dotted) set to ``value``; intermediate mappings are created."""
    keys = path.split(".")
    if not all(keys):
        raise ConfigError(prefix + path, "empty key in dotted path")
    out = dict(d)
    node = out
    for i, k in enumerate(keys[:-1]):
        child = node.get(k, {})
        if not isinstance(child, dict):
            raise ConfigError(".".join(keys[: i + 1]), "is not a section, cannot set a key inside it", child)
        node[k] = dict(child)
        node = node[k]
    node[keys[-1]] = value
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=1e-3`` -> ("a.b", 0.001); the value is read as YAML (numbers, bools, lists)."""
    if "=" not in text:
        raise ConfigError("--set", "expected dotted.path=value", text)
    path, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(path.strip(), "value is not valid YAML", raw) from None
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as text; people mean a number
        try:
            value = float(value)
        except ValueError:
            pass
    return path.strip(), value


def build_run(raw: dict[str, Any], prefix: str = "") -> RunConfigBase:
    try:
        return run_model().model_validate(raw)
    except ValidationError as err:
        raise from_validation(err, prefix) from None


def load_run(path: str | Path, overrides: list[str] = ()) -> RunConfigBase:
    raw = read_yaml(path)
    for text in overrides:
        raw = set_path(raw, *parse_override(text))
    return build_run(raw)


def field_at(cfg: BaseModel, path: str) -> tuple[BaseModel, str]:
    """The model owning the last key of ``path`` and that key; ConfigError if it is no field."""
    node: Any = cfg
    keys = path.split(".")
    for i, k in enumerate(keys):
        if not isinstance(node, BaseModel) or k not in type(node).model_fields:
            where = ".".join(keys[: i + 1])
            raise ConfigError(where, "no such field in the run config")
        if i == len(keys) - 1:
            return node, k
        node = getattr(node, k)
    raise AssertionError("unreachable")


def to_plain(cfg: BaseModel) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out
