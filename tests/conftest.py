"""Test environment and tiers.

Tiers (markers, ``--strict-markers``): the default ``pytest -q`` runs the fast tier, the tests with
none of the markers below, in-process; ``slow`` (subprocesses, servers, spawned ranks, torch.compile,
the GPU benchmark's CPU pass), ``ray`` (a real local Ray) and ``soak`` (the long kill chains, opt-in)
are selected with ``-m``. A fast-tier test that starts a process fails here, naming the test, so the
tier stays what it says.

``RAYPAIR_STRICT=1`` (CI sets it): a skipped test fails, except a ``gpu`` test on a machine without
CUDA, so a missing dataset or dependency cannot hide a test.

Also: the shared CIFAR-10 beside the checkout (RAYPAIR_DATA), a private decode cache, and the
fixtures tests share (``local_ray``); shared builders are in tests/helpers.py.
"""
from __future__ import annotations

import multiprocessing.process
import os
import subprocess
import sys
from pathlib import Path

import pytest

_shared = Path(__file__).resolve().parents[2] / "shared" / "data"
if "RAYPAIR_DATA" not in os.environ and _shared.is_dir():
    os.environ["RAYPAIR_DATA"] = str(_shared)

SLOW_TIERS = ("slow", "ray", "soak")
STRICT = os.environ.get("RAYPAIR_STRICT", "") not in ("", "0")


class FastTierError(RuntimeError):
    """A test of the fast tier started a process: mark it ``slow`` (or ``ray``)."""


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    if "RAYPAIR_CACHE" not in os.environ:
        os.environ["RAYPAIR_CACHE"] = str(tmp_path_factory.mktemp("raypair-cache"))
    yield


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray for the module's tests (a ``ray`` tier module)."""
    import ray

    # dashboard on: its state API lets Ray Train clean up trials that ASHA stops
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
             logging_level="warning", log_to_driver=False)
    yield
    ray.shutdown()


def _in_slow_tier(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(m) for m in SLOW_TIERS)


@pytest.fixture(autouse=True)
def _fast_tier_starts_no_process(request, monkeypatch):
    """In the fast tier no subprocess, spawned rank, server or Ray (Ray starts its daemons as
    processes, so this covers it)."""
    if _in_slow_tier(request.node):
        yield
        return
    name = request.node.nodeid

    real_popen = subprocess.Popen

    class Refused(real_popen):  # type: ignore[misc, valid-type]
        """Python, and anything installed in this environment (raypair, Ray's daemons, MLflow's
        server), is refused; a system tool a library asks about the host (``uname -p``) is not."""

        def __init__(self, args, *a, **k):
            first = str(args if isinstance(args, (str, bytes, os.PathLike)) else args[0])
            first = first.split()[0] if k.get("shell") else first
            if first == sys.executable or Path(first).name.startswith("python") or first.startswith(sys.prefix):
                raise FastTierError(f"{name} starts a process ({args!r}): mark it slow or ray")
            super().__init__(args, *a, **k)

    def refuse_start(self):
        raise FastTierError(f"{name} starts a process ({self!r}): mark it slow or ray")

    monkeypatch.setattr(subprocess, "Popen", Refused)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse_start)
    yield


# per-test timeouts (pytest-timeout): pyproject's 300 s, or this for a tier whose tests run sweeps
TIER_TIMEOUT = {"ray": 900, "soak": 3600}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("timeout") is None:
            limits = [t for m, t in TIER_TIMEOUT.items() if item.get_closest_marker(m)]
            if limits:
                item.add_marker(pytest.mark.timeout(max(limits)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under RAYPAIR_STRICT a skip is a failure (a gpu test without CUDA excepted)."""
    outcome = yield
    report = outcome.get_result()
    if not (STRICT and report.skipped) or hasattr(report, "wasxfail"):
        return
    if item.get_closest_marker("gpu"):
        try:
            import torch

            if not torch.cuda.is_available():
                return
        except ImportError:
            pass
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped under RAYPAIR_STRICT=1 (a missing dataset or dependency?): {reason}"


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of small forwards: they gain nothing from threads, and on a
    busy 2-core machine the threads spin against other processes (densenet's first batch-2 forward:
    0.03 s of CPU on one thread, seconds on two). Use: ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
