"""A streamed dataset on a 2-worker Ray Train trial: each worker decodes its own part of every
global batch (in a decoding process of its own), and across both workers every training image is
seen once per epoch, in the order the stream path's plan gives (``StreamLoader.batches``)."""
from __future__ import annotations

import pytest

from helpers import stream_dataset

pytestmark = pytest.mark.ray


def test_two_train_workers_stream_each_image_once_per_epoch(local_ray, tmp_path):
    from raypair.config import DataConfig, build_run
    from raypair.data.sources import resolve
    from raypair.data.stream import StreamLoader
    from raypair.data.stream_index import index_splits
    from raypair.runner import train

    stream_dataset(tmp_path, "imagefolder", 72, 8, size=(40, 36))  # 72 images: 4 global batches of 16, 8 dropped
    data = {"name": "imagefolder", "root": str(tmp_path), "pipeline": "imagenet", "crop_size": 24, "resize_size": 28,
            "mode": "stream", "workers": 1, "trace": str(tmp_path / "trace")}
    run = build_run({"data": data, "model": {"name": "tiny_cnn"}, "method": {"name": "cutmix"}, "epochs": 2,
                     "batch_size": 16, "eval_batch_size": 8,
                     "scale": {"workers": 2, "trainer": "train", "gpus_per_worker": 0}})
    train.fit(run, "stream2", tmp_path / "out")
    tr, _ = index_splits(resolve(DataConfig(**data)))
    for epoch in range(2):
        seen = []
        for rank in range(2):
            rows = [[int(r) for r in ln.split()] for ln in
                    (tmp_path / "trace" / f"train-e{epoch}-r{rank}.txt").read_text().splitlines()]
            plan = StreamLoader(tr, batch_size=16, mean=(0,) * 3, std=(1,) * 3, train=True, rank=rank, world_size=2)
            assert rows == [b.tolist() for b in plan.batches(epoch)]  # seed 0, as the run's
            assert all(len(b) == 8 for b in rows)
            seen += [r for b in rows for r in b]
        assert len(seen) == 64 and len(set(seen)) == 64 and set(seen) <= set(range(72))
