"""Decoding in worker processes (``data.workers``) yields the batches of decoding in the trial's own
process: the same images, in the same order, with the same crops (slow tier: it starts processes)."""
from __future__ import annotations

import pytest
import torch

from helpers import stream_dataset

pytestmark = pytest.mark.slow


def test_worker_processes_yield_the_in_process_batches(tmp_path):
    from raypair.config import DataConfig
    from raypair.data.sources import resolve
    from raypair.data.stream import StreamLoader
    from raypair.data.stream_index import index_splits

    folder = stream_dataset(tmp_path, "webdataset", 40, 4, size=(64, 48))
    tr, _ = index_splits(resolve(DataConfig(name=folder.name, root=str(tmp_path))))
    kw = dict(batch_size=8, mean=(0.5,) * 3, std=(0.25,) * 3, train=True, augment=True, seed=1, pipeline="imagenet",
              crop_size=24, resize_size=28)
    inline = list(StreamLoader(tr, workers=0, **kw).epoch(2))
    spread = list(StreamLoader(tr, workers=3, prefetch=1, **kw).epoch(2))
    assert len(inline) == len(spread) == 5
    for (xa, ya), (xb, yb) in zip(inline, spread):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
