"""Every method at ImageNet's 224 px: the loop's own ``setup`` on an ImageFolder of 288 x 256 images
(scikit-learn's digit scans enlarged) takes the imagenet pipeline, and each of the methods trains
one step on its RandomResizedCrop + flip batch (mixing on the device batch, as on the CIFAR path)
and evaluates a centre-cropped batch. PairTraining's batches carry RF of the un-augmented image
beside x_z (a random 224 window of the 256-px square); its own RF of a 224-px x_z (``rf_of: x_z``)
pads by 28 px, min(H, W) / 8."""
from __future__ import annotations

import pytest
import torch

from helpers import METHOD_CASES_224 as CASES
from helpers import acc_stats, data_info, folder_dataset, gen, method_of
from raypair.ops.augment import pad_crop_flip
from raypair.ops.pairtrain import rf, rf_pad


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("inet224")
    folder_dataset(root / "scans", {0: 4, 1: 4}, 2, size=(288, 256))
    return root


def test_every_method_has_a_case():
    from raypair.methods import METHODS

    assert sorted(CASES) == METHODS.names()


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_step_of_each_method_at_224(root, name):
    from raypair.config import build_run
    from raypair.loop import setup, trial_optimizer
    from raypair.loop.epoch import Dist, train_step

    run = build_run({"method": {"name": name, **CASES[name]}, "model": {"name": "tiny_cnn"}, "batch_size": 4,
                     "epochs": 2, "schedule": {"warmup_epochs": 0},
                     "data": {"name": "scans", "root": str(root), "pipeline": "imagenet"}})
    method, info, train, val, _ = setup(run, torch.device("cpu"), Dist())
    assert info.image_shape == (3, 224, 224) and info.pipeline == "imagenet"
    method.on_epoch_start(1, run.total_epochs, acc_stats(0.1))  # PT: stage 1, RF
    opt = trial_optimizer(run, method)
    x, y = next(iter(train.epoch(1)))
    assert x.shape == (4, 6 if name == "pair_training" else 3, 224, 224)  # PT: [x_z | RF view] (loader_views)
    loss, out = train_step(method, x, y, opt, amp=False)
    assert torch.isfinite(loss).all() and torch.isfinite(out.loss)
    xv, _ = next(iter(val.epoch(0)))
    with torch.no_grad():
        logits = method.eval_logits(xv)
    assert xv.shape[1:] == (3, 224, 224) and all(v.shape == (len(xv), 2) for v in logits.values())


def test_pair_training_rf_pads_224_px_by_28():
    assert rf_pad(224, 224) == 28 and rf_pad(32, 32) == 4
    x = torch.randn(4, 3, 224, 224, generator=gen(0))
    fill = torch.tensor([-1.0, -2.0, -3.0])
    assert torch.equal(rf(x, gen(1), fill), pad_crop_flip(x, 28, gen(1), fill))
    # PairTraining's stage-1 RF on a 224-px batch: a sample shifted by oy - 28 rows shows |oy - 28|
    # rows of the normalised black, never more than 28
    method = method_of({"name": "pair_training"}, data_info(224, 2, mean=(0.5,) * 3, std=(0.25,) * 3))
    method.on_epoch_start(0, 1, acc_stats(0.1))
    assert method.op == "rf"
    mixed = method.mix(torch.ones(64, 3, 224, 224), torch.arange(64) % 2)
    black_rows = (mixed.x[:, 0] == -2.0).all(2).sum(1)
    assert black_rows.max() <= 28 and black_rows.max() > 20
