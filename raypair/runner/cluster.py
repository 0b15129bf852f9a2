"""Ray itself: start or join it, settle what the cluster decides (data paths, ``auto`` GPUs), and
how many trials fit at once."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Optional

import ray

from raypair.config import ConfigError, RunConfigBase

DRIVER_RESOURCES = {"cpu": 0, "memory": 128 * 2**20}  # a Train-backed trial only waits on its workers


def start_ray(address: Optional[str]) -> None:
    """Join ``address`` or start a local Ray; a Ray that does not come up is one line, not a traceback."""
    if ray.is_initialized():
        return
    try:
        _init(address)
    except Exception as e:  # Ray's own start-up errors: timeouts under load, refused connections
        lines = [ln for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
        raise ConfigError("--address" if address else "ray", f"Ray did not start: {lines[0][:300]}",
                          address or "local") from None


def _init(address: Optional[str]) -> None:
    import raypair

    if address:
        # ship this raypair to the cluster so every node runs the same code as the driver
        ray.init(address=address, runtime_env={"py_modules": [str(Path(raypair.__file__).parent)]})
    else:
        # The dashboard process also serves the state API that Ray Train needs to clean up a trial
        # stopped early by ASHA; it listens on 127.0.0.1 only. Ray's processes find that API by
        # looking for "the" local Ray, which fails when another Ray runs on the host (a second
        # sweep): so its address is handed to every process of this job.
        port = _free_port()
        api = {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}
        os.environ.update(api)
        ray.init(include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
                 runtime_env={"env_vars": api},
                 logging_level="warning", logging_config=ray.LoggingConfig(log_level="WARNING"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pins(run: RunConfigBase) -> dict[str, Any]:
    """What the driver's surroundings decide, settled before trials start elsewhere: the data
    root and cache as absolute paths (trials run in their own folders, so a relative
    RAYPAIR_DATA would point nowhere there), and ``gpus_per_worker: auto`` as 1 on a cluster with
    GPUs, else 0. The pinned values are what MLflow records."""
    from raypair.data import cache_dir, data_root

    out: dict[str, Any] = {"data.root": str(data_root(run.data)), "data.cache_dir": str(cache_dir(run.data))}
    if run.scale.gpus_per_worker == "auto":
        out["scale.gpus_per_worker"] = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    return out


def trial_resources(run: RunConfigBase) -> dict[str, float]:
    """What the Tune trial itself holds: its workers' share, or nothing when Train's workers hold it."""
    return DRIVER_RESOURCES if run.scale.uses_train() else run.scale.resources()


def fit_concurrency(want: int, runs: list[RunConfigBase]) -> int:
    """``want`` concurrent trials, lowered to what the cluster can run at once for the largest of
    ``runs``: more Train-backed trials than there are CPUs for their workers would wait on each
    other forever."""
    need = max((r.scale.resources() for r in runs), key=lambda r: (r["gpu"], r["cpu"]))
    have = ray.cluster_resources()
    fit = int(have.get("CPU", 0) // need["cpu"]) if need["cpu"] else want
    if need["gpu"]:
        fit = min(fit, int(have.get("GPU", 0) // need["gpu"]))
    if fit < 1:
        raise ConfigError("scale", f"one trial needs {need['cpu']} CPU and {need['gpu']} GPU; the cluster has "
                          f"{have.get('CPU', 0)} CPU and {have.get('GPU', 0)} GPU")
    return min(want, fit)
