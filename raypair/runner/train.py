"""Ray Train adapter: the loop under a ``TorchTrainer`` (Train V2, the default since Ray 2.51).

Each worker validates the run config it is sent, joins the process group Ray Train set up (gloo
on CPU, NCCL on GPU), resumes from the trial store's checkpoint when there is one, and calls
``loop.run_trial`` with a ``report`` that records the epoch in the store (rank 0) and then
forwards to ``ray.train.report``. Checkpoints live in the trial store, not in Train's storage,
so the direct path and the Train path resume from the same place; each attempt is a new Train
run (no restore by name).
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Optional

import ray.train
import ray.train.torch
from ray.train import FailureConfig, ScalingConfig
from ray.train.torch import TorchConfig

from raypair.config import RunConfigBase, build_run, to_plain
from raypair.loop import Dist, run_trial
from raypair.runner.cluster import fake_gpus, training_device, where
from raypair.runner.store import TrialStore, store_report


def train_worker(loop_config: dict[str, Any]) -> None:
    """Body of every Train worker."""
    cfg = build_run(loop_config["run"])
    ctx = ray.train.get_context()
    dist = Dist(rank=ctx.get_world_rank(), world_size=ctx.get_world_size())
    store = TrialStore(Path(loop_config["store"])) if loop_config.get("store") else None
    forward = lambda metrics: ray.train.report(metrics)  # noqa: E731
    if store is None:
        report, resume = (lambda metrics, folder: forward(metrics)), None
    else:
        report, resume = store_report(store, forward, dist.rank), store.state()
        store.note_worker(where(dist.rank, resume))
    run_trial(cfg, report, resume=resume, dist=dist, device=training_device(cfg, ray.train.torch.get_device()))


def worker_resources(cfg: RunConfigBase) -> dict[str, float]:
    res = {"CPU": cfg.scale.cpus_per_worker}
    gpus = cfg.scale.gpus_per_worker
    if gpus != "auto" and gpus > 0:
        res["GPU"] = float(gpus)
    return res


def make_trainer(cfg: RunConfigBase, name: str, storage: Path, store: Optional[Path] = None,
                 callbacks: list[Any] = ()) -> ray.train.torch.TorchTrainer:
    res = worker_resources(cfg)
    return ray.train.torch.TorchTrainer(
        train_worker,
        train_loop_config={"run": to_plain(cfg), "store": str(store) if store else None},
        # NCCL on GPU workers (Ray's choice); gloo where the GPUs are fake (NCCL refuses a CPU-only host)
        torch_config=TorchConfig(backend="gloo" if fake_gpus() else None),
        scaling_config=ScalingConfig(num_workers=cfg.scale.workers, use_gpu="GPU" in res,
                                     resources_per_worker=res),
        run_config=ray.train.RunConfig(name=f"{name}-{uuid.uuid4().hex[:6]}", storage_path=str(storage),
                                       callbacks=list(callbacks), failure_config=FailureConfig(max_failures=0)),
    )


def fit(cfg: RunConfigBase, name: str, storage: Path, store: Optional[Path] = None,
        callbacks: list[Any] = ()) -> dict[str, Any]:
    """Run one TorchTrainer to the end; its last metrics, or the worker's exception re-raised."""
    result = make_trainer(cfg, name, storage, store, callbacks).fit()
    if result.error is not None:
        raise result.error
    return dict(result.metrics or {})
