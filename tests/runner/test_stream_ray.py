"""A streamed dataset on a 2-worker Ray Train trial: each worker decodes its own part of every
global batch (in a decoding process of its own), and across both workers every training image is
seen once per epoch, in the order the stream path's plan gives (``StreamLoader.batches``); a trial
stopped at an epoch boundary and resumed from its trial store trains on the same order."""
from __future__ import annotations

import pytest

from helpers import stream_dataset

pytestmark = pytest.mark.ray


def _run(root, trace, **extra):
    from raypair.config import build_run

    data = {"name": "imagefolder", "root": str(root), "pipeline": "imagenet", "crop_size": 24, "resize_size": 28,
            "mode": "stream", "workers": 1, "trace": str(trace)}
    return build_run({"data": data, "model": {"name": "tiny_cnn"}, "method": {"name": "cutmix"}, "epochs": 2,
                      "batch_size": 16, "eval_batch_size": 8, "checkpoint_every": 1, **extra,
                      "scale": {"workers": 2, "trainer": "train", "gpus_per_worker": 0}})


def _trace(folder, epoch, rank):
    return [[int(r) for r in ln.split()] for ln in (folder / f"train-e{epoch}-r{rank}.txt").read_text().splitlines()]


@pytest.fixture(scope="module")
def whole(local_ray, tmp_path_factory):
    from raypair.runner import train

    root = tmp_path_factory.mktemp("stream-ray")
    stream_dataset(root, "imagefolder", 72, 8, size=(40, 36))  # 72 images: 4 global batches of 16, 8 dropped
    train.fit(_run(root, root / "whole"), "stream2", root / "out")
    return root


def test_two_train_workers_stream_each_image_once_per_epoch(whole):
    from raypair.data.sources import resolve
    from raypair.data.stream import StreamLoader
    from raypair.data.stream_index import index_splits

    tr, _ = index_splits(resolve(_run(whole, whole).data))
    for epoch in range(2):
        seen = []
        for rank in range(2):
            rows = _trace(whole / "whole", epoch, rank)
            plan = StreamLoader(tr, batch_size=16, mean=(0,) * 3, std=(1,) * 3, train=True, rank=rank, world_size=2)
            assert rows == [b.tolist() for b in plan.batches(epoch)]  # seed 0, as the run's
            assert len(rows) == 4 and all(len(b) == 8 for b in rows)
            seen += [r for b in rows for r in b]
        assert len(seen) == 64 and len(set(seen)) == 64 and set(seen) <= set(range(72))


def test_a_trial_stopped_at_an_epoch_boundary_resumes_in_the_same_order(whole):
    from raypair.experiments.base import Trial
    from raypair.runner import train
    from raypair.trials.store import TrialStore

    store = whole / "exp" / "trials" / "run"
    TrialStore(store).create(Trial("run", {}), None)
    # stopped after epoch 1's checkpoint: its val_acc is "at chance" (under 1/72 + 0.99)
    with pytest.raises(Exception, match="at chance"):
        train.fit(_run(whole, whole / "cut", diverge={"chance_after": 1, "chance_margin": 0.99}), "cut", whole / "out",
                  store=store)
    assert not (whole / "cut" / "train-e1-r0.txt").exists()
    for rank in range(2):
        assert _trace(whole / "cut", 0, rank) == _trace(whole / "whole", 0, rank)
        (whole / "cut" / f"train-e0-r{rank}.txt").unlink()
    train.fit(_run(whole, whole / "cut"), "resumed", whole / "out", store=store)
    assert not (whole / "cut" / "train-e0-r0.txt").exists()  # the resumed run starts at epoch 2 (index 1)
    for rank in range(2):
        assert _trace(whole / "cut", 1, rank) == _trace(whole / "whole", 1, rank)


def test_a_killed_driver_resumes_a_streamed_trial_in_the_uninterrupted_order(tmp_path):
    """``raypair tune`` on WebDataset-style shards, the driver's whole process group SIGKILLed once
    two epochs are recorded, then ``--resume``: every epoch recorded once, and every epoch's order
    (the trace the trial writes) is the uninterrupted plan's."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from raypair.config import DataConfig
    from raypair.data.sources import resolve
    from raypair.data.stream import StreamLoader
    from raypair.data.stream_index import index_splits

    root = stream_dataset(tmp_path / "data", "webdataset", 48, 8, size=(40, 36)).parent
    trace, storage = tmp_path / "trace", tmp_path / "runs"
    data = {"name": "webdataset", "root": str(root), "pipeline": "imagenet", "crop_size": 24, "resize_size": 28,
            "mode": "stream", "workers": 1, "trace": str(trace)}
    spec = {"name": "killed", "run": {"data": data, "model": {"name": "tiny_cnn"}, "method": {"name": "mixup"},
                                      "epochs": 8, "batch_size": 16, "eval_batch_size": 8, "checkpoint_every": 1,
                                      "scale": {"workers": 1, "trainer": "direct", "cpus_per_worker": 1}},
            "space": {"optim.lr": {"choice": [0.05]}}, "tune": {"num_samples": 1, "scheduler": {"name": "none"}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, "-m", "raypair", "tune", str(tmp_path / "s.yaml"), "--storage", str(storage)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    history = storage / "killed" / "trials" / "t0000" / "history.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and \
            (not history.exists() or len(history.read_text().splitlines()) < 2):
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    cut = len(history.read_text().splitlines())
    assert 2 <= cut < 8  # epochs take under a second: 8 leave room for a loaded host's delay before the kill
    again = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=400)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert [json.loads(ln)["epoch"] for ln in history.read_text().splitlines()] == list(range(1, 9))
    tr, _ = index_splits(resolve(DataConfig(**data)))
    plan = StreamLoader(tr, batch_size=16, mean=(0,) * 3, std=(1,) * 3, train=True)
    for epoch in range(8):
        assert _trace(trace, epoch, 0) == [b.tolist() for b in plan.batches(epoch)], epoch
