"""Fractional GPUs pack trials on one device, in the trial process (``direct``) and under Ray
Train, shown on a CPU host: raypair's own local Ray declares one GPU that does not exist
($RAYPAIR_FAKE_GPUS=1), four trials of ``gpus_per_worker: 0.25`` and ``cpus_per_worker: 0.5``
are started together, and

- every GPU-holding bundle Ray placed is exactly one worker's declaration (0.5 CPU, 0.25 GPU):
  the trial's own bundle in direct mode; in Train mode the Train workers' bundles, the Tune
  trial holding no CPU or GPU of its own (so four trials fit in 2 CPUs and never wait on each
  other);
- the four trials held their resources at once: four GPU-holding placement groups were alive
  (CREATED) together, sampled from Ray's placement-group table while the sweep ran (the
  reservations last each trial's life, so the sample cannot miss the overlap; when each trial
  process happened to start is the loaded host's scheduling, not Ray's packing);
- a worker that Ray gave a GPU id but that sees no CUDA device trains on the CPU (Ray Train's
  ``get_device()`` would say ``cuda:0``), over gloo.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.ray
import ray  # noqa: E402


@pytest.fixture
def fake_gpu_ray():
    """raypair starts its own local Ray in this process (the CLI's start_ray), with one fake GPU;
    one Ray per test (a direct-only sweep starts it without the state API Train needs)."""
    if ray.is_initialized():
        ray.shutdown()
    old = os.environ.get("RAYPAIR_FAKE_GPUS")
    os.environ["RAYPAIR_FAKE_GPUS"] = "1"
    yield
    ray.shutdown()
    if old is None:
        os.environ.pop("RAYPAIR_FAKE_GPUS", None)
    else:
        os.environ["RAYPAIR_FAKE_GPUS"] = old


def _spec(tmp_path: Path, trainer: str, epochs: int) -> Path:
    doc = {"name": f"pack-{trainer}",
           "run": {"data": {"name": "digits", "image_size": 16, "val_fraction": 0.2, "pad": 2},
                   "model": {"name": "tiny_cnn"}, "method": {"name": "erm", "aug": "base+"},
                   "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "schedule": {"name": "cosine"},
                   "epochs": epochs, "batch_size": 64,
                   "scale": {"workers": 1, "cpus_per_worker": 0.5, "gpus_per_worker": 0.25, "trainer": trainer,
                             "threads": 1}},
           "space": {"optim.lr": {"loguniform": [0.01, 0.1]}},
           "tune": {"num_samples": 4, "max_concurrent_trials": 4, "searcher": {"name": "random", "seed": 0},
                    "scheduler": {"name": "none"}}}
    path = tmp_path / f"{trainer}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _bundles(seen: set[str]) -> list[dict[str, float]]:
    """The bundles of every placement group created since ``seen`` (removed ones included)."""
    from ray.util import placement_group_table

    out = []
    for pg_id, pg in placement_group_table().items():
        if pg_id not in seen:
            seen.add(pg_id)
            out += [{k: v for k, v in b.items() if k in ("CPU", "GPU")} for b in pg["bundles"].values()]
    return out


def _most_gpu_groups_alive(done: threading.Event, most: list[int]) -> None:
    """Sample Ray's placement-group table every 0.1 s until ``done``: the most GPU-holding groups
    alive (CREATED) at one instant, into ``most[0]``."""
    from ray.util import placement_group_table

    while not done.is_set():
        if ray.is_initialized():
            with contextlib.suppress(Exception):  # Ray starting or shutting down under the sample
                alive = [pg for pg in placement_group_table().values() if pg["state"] == "CREATED"
                         and any(b.get("GPU") for b in pg["bundles"].values())]
                most[0] = max(most[0], len(alive))
        time.sleep(0.1)


def _sweep(tmp_path: Path, trainer: str, epochs: int, seen: set[str]):
    from raypair.cli import main

    storage = tmp_path / "runs"
    done, most = threading.Event(), [0]
    sampler = threading.Thread(target=_most_gpu_groups_alive, args=(done, most), daemon=True)
    sampler.start()
    try:
        assert main(["tune", str(_spec(tmp_path, trainer, epochs)), "--storage", str(storage)]) == 0
    finally:
        done.set()
        sampler.join()
    assert ray.cluster_resources().get("GPU") == 1, "raypair's own Ray declares the fake GPU"
    exp = storage / f"pack-{trainer}"
    trials = sorted((exp / "trials").iterdir())
    assert len(trials) == 4
    for trial in trials:
        end = json.loads((trial / "end.json").read_text())
        assert end["status"] == "finished", end
        assert len((trial / "workers.jsonl").read_text().splitlines()) == 1
    assert most[0] == 4, f"the four 0.25-GPU trials never held their GPU shares at once (at most {most[0]})"
    return _bundles(seen)


def test_four_quarter_gpu_trials_run_at_once_in_the_trial_process(fake_gpu_ray, tmp_path):
    bundles = _sweep(tmp_path, "direct", epochs=10, seen=set())
    assert bundles == [{"CPU": 0.5, "GPU": 0.25}] * 4


def test_four_quarter_gpu_trials_run_at_once_under_ray_train(fake_gpu_ray, tmp_path):
    bundles = _sweep(tmp_path, "train", epochs=10, seen=set())
    holding = [b for b in bundles if b.get("CPU") or b.get("GPU")]
    assert holding == [{"CPU": 0.5, "GPU": 0.25}] * 4, bundles  # the Train workers'; the Tune trials hold none
    assert len(bundles) == 8  # one Tune trial bundle and one Train worker bundle per trial
