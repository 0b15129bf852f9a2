"""How one trial runs (``scale``) and what it holds: :meth:`ScaleConfig.resources` is the one place a
trial's workers, CPUs, GPUs, threads and trainer are computed; the runner, the CLI's checks and the
loop all ask it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Union

from pydantic import Field, model_validator

from raypair.config.base import Strict

# What the Tune trial of a Train-backed run holds itself: it only waits on its workers
DRIVER_RESOURCES = {"cpu": 0.0, "memory": 128 * 2**20}


@dataclass(frozen=True)
class Resources:
    """What one trial holds: ``workers`` workers of ``cpus`` CPUs and ``gpus`` GPUs each."""

    workers: int
    cpus: float  # per worker
    gpus: float  # per worker; 0 for ``gpus_per_worker: auto`` until the runner pins it
    may_use_gpu: bool  # gpus > 0, or ``auto`` not pinned yet
    threads: int  # torch threads per worker
    train: bool  # the workers run under Ray Train; else the loop runs in the Tune trial's own process

    @property
    def total(self) -> dict[str, float]:
        """CPUs and GPUs the trial's workers hold together."""
        return {"cpu": self.workers * self.cpus, "gpu": self.workers * self.gpus}

    @property
    def tune(self) -> dict[str, float]:
        """What the Tune trial itself holds: its workers' share, or nothing when Train's workers hold it."""
        return dict(DRIVER_RESOURCES) if self.train else self.total

    @property
    def per_worker(self) -> dict[str, float]:
        """One Ray Train worker's bundle, in Ray's spelling."""
        return {"CPU": self.cpus, **({"GPU": self.gpus} if self.gpus > 0 else {})}


class ScaleConfig(Strict):
    """How one trial runs. Per-trial resources = workers x (cpus_per_worker, gpus_per_worker)."""

    workers: int = Field(1, ge=1, le=1024)
    cpus_per_worker: float = Field(1.0, gt=0.0, le=1024)
    gpus_per_worker: Union[float, Literal["auto"]] = "auto"  # fractional GPUs share a device
    # train: the loop under a Ray Train TorchTrainer; direct: in the Tune trial process (1 worker);
    # auto: direct for a 1-worker CPU trial (Train's ~20 s start-up per trial dwarfs a CPU quick
    # sweep: measured 144 s vs 52 s for search_spaces/quickstart.yaml), Train otherwise
    trainer: Literal["auto", "train", "direct"] = "auto"
    compile: bool = False  # torch.compile (mode reduce-overhead on CUDA)
    threads: Optional[int] = Field(None, ge=1, le=1024)  # torch threads per worker; default cpus_per_worker

    def resources(self) -> Resources:
        """The trial's resources; ``gpus_per_worker: auto`` holds no GPU until pinned, but may use one."""
        gpus = 0.0 if self.gpus_per_worker == "auto" else float(self.gpus_per_worker)
        may_use_gpu = self.gpus_per_worker == "auto" or gpus > 0
        train = self.trainer == "train" or (self.trainer == "auto" and (self.workers > 1 or may_use_gpu))
        return Resources(self.workers, self.cpus_per_worker, gpus, may_use_gpu,
                         self.threads or max(1, int(self.cpus_per_worker)), train)

    @model_validator(mode="after")
    def _check(self) -> "ScaleConfig":
        if self.gpus_per_worker != "auto" and not 0 <= self.gpus_per_worker <= 8:
            raise ValueError(f"gpus_per_worker: must lie in [0, 8] or be 'auto', got {self.gpus_per_worker}")
        if self.trainer == "direct" and self.workers != 1:
            raise ValueError(f"trainer: 'direct' runs one worker, got workers={self.workers}")
        return self
