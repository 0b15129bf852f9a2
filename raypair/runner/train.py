"""Ray Train adapter: the loop under a ``TorchTrainer`` (Train V2, the default since Ray 2.51).

Each worker receives the trial's run as the object the driver validated (Ray pickles
``train_loop_config``; unpickling a run validates nothing), joins the process group Ray Train set up
(gloo on CPU, NCCL on GPU), resumes from the trial store's checkpoint when there is one, and calls
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

from raypair.config import RunConfigBase
from raypair.loop import Dist, run_trial
from raypair.runner import quiet
from raypair.runner.cluster import fake_gpus, training_device, where
from raypair.trials.store import TrialStore, store_report


def train_worker(loop_config: dict[str, Any]) -> None:
    """Body of every Train worker."""
    quiet.setup()  # also Ray's setup hook where raypair started Ray; not where a user's ray.init did
    run: RunConfigBase = loop_config["run"]
    ctx = ray.train.get_context()
    dist = Dist(rank=ctx.get_world_rank(), world_size=ctx.get_world_size())
    store = TrialStore(Path(loop_config["store"]), loop_config.get("token")) if loop_config.get("store") else None
    forward = lambda metrics: ray.train.report(metrics)  # noqa: E731
    if store is None:
        report, resume = (lambda metrics, folder: forward(metrics)), None
    else:
        report, resume = store_report(store, forward, dist.rank), store.state()
        store.note_worker(where(dist.rank, resume))
    run_trial(run, report, resume=resume, dist=dist, device=training_device(run, ray.train.torch.get_device()))


def make_trainer(run: RunConfigBase, name: str, storage: Path, store: Optional[Path] = None,
                 callbacks: list[Any] = (), token: Optional[str] = None) -> ray.train.torch.TorchTrainer:
    res = run.scale.resources()
    return ray.train.torch.TorchTrainer(
        train_worker,
        train_loop_config={"run": run, "store": str(store) if store else None, "token": token},
        # NCCL on GPU workers (Ray's choice); gloo where the GPUs are fake (NCCL refuses a CPU-only host)
        torch_config=TorchConfig(backend="gloo" if fake_gpus() else None),
        scaling_config=ScalingConfig(num_workers=res.workers, use_gpu="GPU" in res.per_worker,
                                     resources_per_worker=res.per_worker),
        run_config=ray.train.RunConfig(name=f"{name}-{uuid.uuid4().hex[:6]}", storage_path=str(storage),
                                       callbacks=list(callbacks), failure_config=FailureConfig(max_failures=0)),
    )


def fit(run: RunConfigBase, name: str, storage: Path, store: Optional[Path] = None,
        callbacks: list[Any] = (), token: Optional[str] = None) -> dict[str, Any]:
    """Run one TorchTrainer to the end; its last metrics, or the worker's exception re-raised.
    ``token``: the trial's fencing token (``raypair.trials.store``)."""
    result = make_trainer(run, name, storage, store, callbacks, token).fit()
    if result.error is not None:
        raise result.error
    return dict(result.metrics or {})
