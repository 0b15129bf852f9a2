"""A streamed run killed at an epoch boundary and resumed from its checkpoint trains on the same
images in the same order (each rank's trace, ``data.trace``) and ends at the same metrics as the
uninterrupted run."""
from __future__ import annotations

import pytest

from helpers import stream_dataset


class Kill(Exception):
    pass


def _run(root, trace):
    from raypair.config import build_run

    return build_run({"method": {"name": "mixup"}, "model": {"name": "tiny_cnn"}, "batch_size": 8, "epochs": 3, "eval_batch_size": 2,
                      "schedule": {"warmup_epochs": 0}, "checkpoint_every": 1,
                      "data": {"name": "webdataset", "root": str(root), "pipeline": "imagenet", "mode": "stream",
                               "crop_size": 16, "resize_size": 18, "workers": 0, "trace": str(trace)}})


def test_resume_at_an_epoch_boundary_reproduces_the_order(tmp_path):
    from raypair.loop import load_checkpoint, run_trial

    stream_dataset(tmp_path, "webdataset", 20, 2, size=(40, 36))  # 20 images: 2 batches of 8, 4 dropped
    whole = run_trial(_run(tmp_path, tmp_path / "whole"), lambda m, c: None)
    saved = {}

    def report(metrics, ckpt):
        if metrics["epoch"] == 1:
            saved["ckpt"] = load_checkpoint(ckpt)
            raise Kill()

    with pytest.raises(Kill):
        run_trial(_run(tmp_path, tmp_path / "cut"), report)
    resumed = run_trial(_run(tmp_path, tmp_path / "cut"), lambda m, c: None, resume=saved["ckpt"])
    for e in range(3):
        a = (tmp_path / "whole" / f"train-e{e}-r0.txt").read_text()
        assert a == (tmp_path / "cut" / f"train-e{e}-r0.txt").read_text()
        rows = [int(r) for r in a.split()]
        assert len(rows) == 16 and len(set(rows)) == 16 and set(rows) <= set(range(20))
    assert (tmp_path / "whole" / "train-e0-r0.txt").read_text() != (tmp_path / "whole" / "train-e1-r0.txt").read_text()
    assert resumed["train_loss"] == whole["train_loss"] and resumed["val_loss"] == whole["val_loss"]
