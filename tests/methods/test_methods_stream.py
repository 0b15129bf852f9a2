"""Every method trains one whole epoch on the stream path (``data.mode: stream``): the loop's own
``run_trial`` on generated JPEGs in tar shards, RandomResizedCrop + flip decoded on the host, the
method's mixing on the device batch; at a 40-px crop and at 224 px (about 7 s for all nine)."""
from __future__ import annotations

import math

import pytest

from helpers import METHOD_CASES_224, stream_dataset


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("streamed")
    stream_dataset(root, "webdataset", 16, 6, size=(64, 56), classes=2)
    return root


def _epoch(root, name, crop, resize):
    from raypair.config import build_run
    from raypair.loop import run_trial

    run = build_run({"method": {"name": name, **METHOD_CASES_224[name]}, "model": {"name": "tiny_cnn"},
                     "batch_size": 8, "epochs": 1, "schedule": {"warmup_epochs": 0},
                     "data": {"name": "webdataset", "root": str(root), "pipeline": "imagenet", "mode": "stream",
                              "crop_size": crop, "resize_size": resize, "workers": 0}})
    reports = []
    metrics = run_trial(run, lambda m, ckpt: reports.append(m))
    assert len(reports) == 1 and metrics["train_samples"] == 16  # both batches of the epoch, every image
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["val_loss"])
    assert 0 <= metrics["val_acc"] <= 1 and metrics["val_acc"] * 6 == round(metrics["val_acc"] * 6)


@pytest.mark.parametrize("name", sorted(METHOD_CASES_224))
def test_one_streamed_epoch_of_each_method(root, name):
    _epoch(root, name, 40, 48)


@pytest.mark.parametrize("name", sorted(METHOD_CASES_224))
def test_one_streamed_epoch_at_224_px(root, name):
    _epoch(root, name, 224, 256)
