"""Ray Train adapter: the loop under a ``TorchTrainer`` (Train V2, the default since Ray 2.51).

Each worker validates the run config it is sent, joins the process group Ray Train set up (gloo
on CPU, NCCL on GPU), and calls ``loop.run_trial`` with a ``report`` that forwards to
``ray.train.report``. A run whose name and storage already hold checkpoints resumes from the
latest one (Train V2 restores a run by name), which is how a resumed sweep continues a trial.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import ray.train
import ray.train.torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, ScalingConfig
from ray.train.v2.api.callback import UserCallback

from raypair.config import RunConfigBase, build_run, to_plain
from raypair.loop import CKPT_FILE, Dist, load_checkpoint, run_trial
from raypair.tracking import Tracker


def train_worker(loop_config: dict[str, Any]) -> None:
    """Body of every Train worker."""
    cfg = build_run(loop_config["run"])
    ctx = ray.train.get_context()
    dist = Dist(rank=ctx.get_world_rank(), world_size=ctx.get_world_size())
    resume = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            if (Path(d) / CKPT_FILE).exists():
                resume = load_checkpoint(Path(d))

    def report(metrics: dict[str, float], folder: Optional[Path]) -> None:
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(str(folder)) if folder else None)

    run_trial(cfg, report, resume=resume, dist=dist, device=ray.train.torch.get_device())


def worker_resources(cfg: RunConfigBase) -> dict[str, float]:
    res = {"CPU": cfg.scale.cpus_per_worker}
    gpus = cfg.scale.gpus_per_worker
    if gpus != "auto" and gpus > 0:
        res["GPU"] = float(gpus)
    return res


def make_trainer(cfg: RunConfigBase, name: str, storage: Path, callbacks: list[Any] = ()) -> ray.train.torch.TorchTrainer:
    res = worker_resources(cfg)
    return ray.train.torch.TorchTrainer(
        train_worker,
        train_loop_config={"run": to_plain(cfg)},
        scaling_config=ScalingConfig(num_workers=cfg.scale.workers, use_gpu="GPU" in res,
                                     resources_per_worker=res),
        run_config=ray.train.RunConfig(
            name=name, storage_path=str(storage), callbacks=list(callbacks),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=0)),
    )


class MlflowReport(UserCallback):
    """Logs rank 0's per-epoch metrics to one MLflow run, from the Train controller process."""

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        self.tracker, self.run_id = tracker, run_id

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if metrics and metrics[0]:
            self.tracker.log_metrics(self.run_id, metrics[0], step=int(metrics[0]["epoch"]))


def fit(cfg: RunConfigBase, name: str, storage: Path, callbacks: list[Any] = ()) -> dict[str, Any]:
    """Run one TorchTrainer to the end; its last metrics, or the worker's exception re-raised."""
    result = make_trainer(cfg, name, storage, callbacks).fit()
    if result.error is not None:
        raise result.error
    return dict(result.metrics or {})
