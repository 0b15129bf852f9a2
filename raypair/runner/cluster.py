"""Ray itself: start or join it, settle what the cluster decides (data paths, ``auto`` GPUs), and
how many trials fit at once."""
from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import ray
import ray._private.ray_constants

from raypair.config import ConfigError, RunConfigBase

# For tests: a local Ray that declares this many GPUs the host does not have (fractional packing is
# shown on a CPU machine). Trials assigned one train on the CPU (training_device) over gloo.
FAKE_GPUS = "RAYPAIR_FAKE_GPUS"


def fake_gpus() -> float:
    return float(os.environ.get(FAKE_GPUS) or 0)


def start_ray(address: Optional[str], runs: Optional[list[RunConfigBase]] = None) -> None:
    """Join ``address`` or start a local Ray; a Ray that does not come up is one line, not a traceback.
    ``runs``: what the trials will run; a local Ray starts its dashboard (the state API) only when
    one of them may run under Ray Train, which needs it (starting it costs seconds)."""
    if ray.is_initialized():
        return
    if address and address.startswith("ray://"):
        raise ConfigError("--address", "Ray Client addresses are not supported: run raypair on a node of the "
                          "cluster (the head) with --address HEAD_IP:6379 or --address auto", address)
    try:
        if address:
            _join(address)
        else:
            state_api = runs is None or any(_may_use_train(r) for r in runs)
            try:
                _start_local(state_api)
            except Exception:
                ray.shutdown()  # a local start that timed out on a loaded host: once more, then give up
                _start_local(state_api)
    except ConfigError:
        raise
    except Exception as e:  # Ray's own start-up errors: timeouts under load, refused connections
        raise _start_error(e, address) from None
    if address:
        res = ray.cluster_resources()
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        print(f"Ray: joined {os.environ['RAY_ADDRESS']} ({nodes} nodes, {res.get('CPU', 0):g} CPU, "
              f"{res.get('GPU', 0):g} GPU)", flush=True)


def _start_error(e: Exception, address: Optional[str]) -> ConfigError:
    lines = [ln for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
    why = lines[0][:300]
    if "uthenticat" in str(e) or "auth token" in str(e).lower():
        why += (" - the cluster uses token authentication: set RAY_AUTH_MODE=token here and give this"
                " machine the head's token (~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)")
    return ConfigError("--address" if address else "ray", f"Ray did not start: {why}", address or "local")


def _may_use_train(run: RunConfigBase) -> bool:
    """Whether ``run`` can run under Ray Train on a local Ray (``gpus_per_worker: auto`` is 1 where
    this host has GPUs, as :func:`pins` will settle it)."""
    if run.scale.gpus_per_worker == "auto":
        try:
            from ray._private.accelerators import get_accelerator_manager_for_resource

            gpus = fake_gpus() or get_accelerator_manager_for_resource("GPU").get_current_node_num_accelerators()
        except Exception:  # Ray's probe moved: assume a GPU, so the state API is there
            gpus = 1
        run = run.model_copy(update={"scale": run.scale.model_copy(update={"gpus_per_worker": 1 if gpus else 0})})
    return run.scale.resources().train


_QUIET = {"logging_level": "warning", "logging_config": ray.LoggingConfig(log_level="WARNING")}


def _join(address: str) -> None:
    """One cluster, named once: "auto" is resolved here (Ray refuses when several run on this
    host), and every process of the job gets the address, so Ray Train's clean-up finds this
    cluster's state API rather than looking for "the" local Ray. The driver's raypair is shipped,
    so every node runs the same code."""
    import raypair
    from ray._private.services import canonicalize_bootstrap_address_or_die

    gcs = canonicalize_bootstrap_address_or_die(address)
    _reachable(gcs, address)
    api = {"RAY_ADDRESS": gcs}
    os.environ.update(api)
    ray.init(address=gcs, runtime_env={"py_modules": [str(Path(raypair.__file__).parent)], "env_vars": api},
             **_QUIET)


def _start_local(state_api: bool = True) -> None:
    """A Ray of this driver's own (``address="local"``: never the latest ``ray start`` instance on
    this host, which a plain ray.init() joins), every process of it on 127.0.0.1 only (Ray's own
    switch for a one-machine Ray: gRPC servers bind to the loopback address, not all interfaces).
    The dashboard process serves the state API that Ray Train needs to clean up a trial ASHA
    stopped; Ray's processes find that API by looking for "the" local Ray, which fails when
    another Ray runs on the host (a second sweep), so its address is handed to every process."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray._private.ray_constants.ENABLE_RAY_CLUSTER = False  # read at import; ray is imported already
    # a loaded host (another sweep, CI) starts Ray's processes slowly: wait longer than Ray's 30 s / 60 s
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "120")
    ray._private.ray_constants.RAY_DASHBOARD_STARTUP_TIMEOUT_S = max(
        180, ray._private.ray_constants.RAY_DASHBOARD_STARTUP_TIMEOUT_S)
    port = _free_port()
    api = {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"} if state_api else {}
    os.environ.update(api)
    fake = {"num_gpus": fake_gpus()} if fake_gpus() else {}
    if fake:
        api[FAKE_GPUS] = os.environ[FAKE_GPUS]
    # the notice that a Ray of this host's own uses token authentication is not for the researcher
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    ray.init(address="local", include_dashboard=state_api, dashboard_host="127.0.0.1", dashboard_port=port,
             runtime_env={"env_vars": api}, **fake, **_QUIET)


def _reachable(gcs: str, address: str) -> None:
    """Ray retries an address where nothing listens for minutes: a typo is told at once instead."""
    host, _, port = gcs.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except (OSError, ValueError) as e:
        raise ConfigError("--address", f"no Ray at {gcs} ({e.strerror or e}): start the head with `ray start "
                          "--head`, which prints the address to join", address) from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_shared(folder: Path) -> None:
    """On a cluster, every node must see the experiment's folder at the same path (trials write
    their store there, and a retried trial reads its checkpoint there on another node): one
    zero-CPU task per alive node looks for a file the driver just wrote."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = folder / f".probe-{os.getpid()}"
    probe.write_text("raypair")

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        return Path(path).is_file()

    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        seen = ray.get([sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                        .remote(str(probe)) for n in nodes], timeout=120)
    finally:
        probe.unlink(missing_ok=True)
    for node, ok in zip(nodes, seen):
        if not ok:
            raise ConfigError("--storage", f"node {node['NodeManagerAddress']} ({node['NodeID'][:8]}) does not see "
                              f"{folder}: on a cluster --storage must be a folder every node mounts at the same path "
                              "(NFS or another shared file system)", str(folder.parent))


def where(rank: int, resume: Optional[dict[str, Any]]) -> dict[str, Any]:
    """This worker's place in the cluster, for the trial store's ``workers.jsonl``."""
    return {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address(),
            "host": socket.gethostname(), "pid": os.getpid(), "from_epoch": int((resume or {}).get("epoch", 0)),
            "time": time.time()}


def training_device(run: RunConfigBase, assigned: Any = None) -> Any:
    """The torch device a worker trains on: the GPU Ray assigned (``assigned``, Ray Train's
    ``get_device()``, else CUDA's current device), or the CPU, with a warning, where torch sees no
    CUDA device although the run asks for one (a node that declares GPUs it cannot use, or
    $RAYPAIR_FAKE_GPUS in tests): Ray's GPU id alone does not make a device."""
    import torch

    if not run.scale.resources().may_use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        warnings.warn(f"raypair: scale.gpus_per_worker={run.scale.gpus_per_worker} but torch sees no CUDA device on "
                      f"{socket.gethostname()} (Ray assigned GPU ids {ray.get_gpu_ids()}): training on the CPU",
                      stacklevel=2)
        return torch.device("cpu")
    if assigned is not None and torch.device(assigned).type == "cuda":
        return torch.device(assigned)
    return torch.device("cuda", torch.cuda.current_device())


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


def fit_concurrency(want: int, runs: list[RunConfigBase]) -> int:
    """``want`` concurrent trials, lowered to what the cluster can run at once for the largest of
    ``runs``: more Train-backed trials than there are CPUs for their workers would wait on each
    other forever."""
    need = max((r.scale.resources().total for r in runs), key=lambda r: (r["gpu"], r["cpu"]))
    have = ray.cluster_resources()
    fit = int(have.get("CPU", 0) // need["cpu"]) if need["cpu"] else want
    if need["gpu"]:
        fit = min(fit, int(have.get("GPU", 0) // need["gpu"]))
    if fit < 1:
        raise ConfigError("scale", f"one trial needs {need['cpu']} CPU and {need['gpu']} GPU; the cluster has "
                          f"{have.get('CPU', 0)} CPU and {have.get('GPU', 0)} GPU")
    return min(want, fit)
