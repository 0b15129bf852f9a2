"""Ray itself: start or join it, settle what the cluster decides (data paths, ``auto`` GPUs), and
how many trials fit at once."""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional

import ray
import ray._private.ray_constants
import ray.cloudpickle

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
    _keep_sigterm()
    if address and address.startswith("ray://"):
        raise ConfigError("--address", "Ray Client addresses are not supported: run raypair on a node of the "
                          "cluster (the head) with --address HEAD_IP:6379 or --address auto", address)
    try:
        if address:
            with _driver_code():
                _join(address)
        else:
            state_api = runs is None or any(_may_use_train(r) for r in runs)
            with _driver_code():
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
        _say_joined()


def _say_joined() -> None:
    res = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    print(f"Ray: joined {os.environ['RAY_ADDRESS']} ({nodes} nodes, {res.get('CPU', 0):g} CPU, "
          f"{res.get('GPU', 0):g} GPU)", flush=True)


@contextlib.contextmanager
def _driver_code() -> Iterator[None]:
    """Ray puts the driver's working folder on every worker's path (ahead of site-packages), so a
    raypair/ folder there would be what trains. During ``ray.init`` the working folder is the one
    that holds the driver's own raypair: that is the folder the workers get."""
    from raypair.trials.provenance import package_dir

    old = os.getcwd()
    os.chdir(package_dir().parent)
    try:
        yield
    finally:
        os.chdir(old)


def private_token() -> None:
    """Ray writes a local Ray's token (``~/.ray/auth_token``) with the umask's mode, readable by
    every user of the host: made here first with mode 0600, or narrowed to 0600 if it is there."""
    path = Path.home() / ".ray" / "auth_token"
    try:
        if path.exists():
            if path.stat().st_mode & 0o077 and path.stat().st_uid == os.getuid():
                path.chmod(0o600)
        elif os.environ.get("RAY_AUTH_MODE", "token").lower() == "token" and not (
                os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
            from ray._private.authentication.authentication_token_generator import (
                generate_new_authentication_token)

            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(generate_new_authentication_token())
    except (OSError, ImportError):
        pass  # another driver made it at the same instant, or Ray moved its generator: Ray makes it


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


SETUP_HOOK = "raypair.runner.quiet.setup"  # in every worker process: no traceback echoed for a storage fault
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
    ray.init(address=gcs, runtime_env={"py_modules": [str(Path(raypair.__file__).parent)], "env_vars": api,
                                       "worker_process_setup_hook": SETUP_HOOK}, **_QUIET)


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
    private_token()
    ray.init(address="local", include_dashboard=state_api, dashboard_host="127.0.0.1", dashboard_port=port,
             runtime_env={"env_vars": api, "worker_process_setup_hook": SETUP_HOOK}, **fake, **_QUIET)
    private_token()


def _keep_sigterm() -> None:
    """Ray's core worker puts a crash handler of its own on SIGTERM in the driver and, in
    ray.shutdown, resets SIGTERM to the default action under Python's handler: a second SIGTERM
    while a stopped driver shut Ray down killed it as a plain SIGTERM does (exit -15), not with the
    stop's exit 130. Read at the core worker's start, in this process only: workers keep theirs."""
    ray._private.ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True


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


def check_nodes(folder: Path, shared: bool) -> None:  # over 30 lines: one probe round and its refusals, together
    """Before any trial, one zero-CPU task per alive node: it imports raypair as a trial would and
    reports its source hash (a node whose raypair is not the driver's is refused), and it writes,
    reads back and removes a probe file in the experiment's folder (a node that cannot write there
    is refused: a full or read-only mount is the machine's fault, not a trial's). On a cluster
    (``shared``) it also looks for a file the driver just wrote: every node must see the folder at
    the same path (trials write their store there, and a retried trial reads its checkpoint there
    on another node)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from raypair.trials import provenance

    ray.cloudpickle.register_pickle_by_value(provenance)  # a node runs the driver's probe, not its own
    probe, task = folder / f".probe-{os.getpid()}", ray.remote(num_cpus=0)(provenance.node_probe)
    probe.write_text("raypair")
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        seen = ray.get([task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                        .remote(str(probe)) for n in nodes], timeout=120)
    except ray.exceptions.RayTaskError as e:  # a worker's path holds a raypair that does not even import
        why = [ln for ln in str(e).splitlines() if ln.strip()]
        raise ConfigError("raypair", f"a node's worker cannot import the driver's raypair ({why[-1][:200]}): install "
                          "the same raypair on every node, and run no raypair/ folder on a worker's path",
                          str(provenance.package_dir())) from None
    finally:
        probe.unlink(missing_ok=True)
    named = [(f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})", got) for n, got in zip(nodes, seen)]
    provenance.check_nodes(provenance.here(), [(name, got["code"]) for name, got in named])
    for name, got in named:
        if shared and not got["sees"]:
            raise ConfigError("--storage", f"node {name} does not see {folder}: on a cluster --storage must be a "
                              "folder every node mounts at the same path (NFS or another shared file system)",
                              str(folder.parent))
        if got["write"]:
            raise ConfigError("--storage", f"node {name} cannot write in {folder}: {got['write']}", str(folder.parent))


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
