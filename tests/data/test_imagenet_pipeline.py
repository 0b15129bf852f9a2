"""The imagenet pipeline on the device path (raypair/config/pipeline.py, data/loader.py): which
pipeline a dataset takes, the size its images are stored at, and the loader's batches: training
batches are RandomResizedCrop + flip from the per-epoch ``data.augment`` stream (reproduced from it
by the op itself), evaluation batches torchvision's Resize + CenterCrop of the stored image. Images:
scikit-learn's digit scans enlarged to ImageNet sizes in an ImageFolder the test writes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.transforms import v2

from helpers import folder_dataset
from raypair.config import ConfigError, DataConfig, build_run
from raypair.config.pipeline import resolved
from raypair.data import DeviceLoader, load_splits, pipeline_kwargs
from raypair.ops.autoaugment import autoaugment
from raypair.ops.resized_crop import random_resized_crop_flip
from raypair.ops.sampling import seeded_generator


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inet")
    folder_dataset(root / "birds", {0: 6, 1: 6}, 2, size=(288, 256))  # 288 wide, 256 high
    folder_dataset(root / "imagenette", {0: 4, 1: 4}, 2, size=(300, 200))
    return root


def test_auto_picks_imagenet_for_large_images_and_keeps_them(folder):
    s = load_splits(DataConfig(name="birds", root=str(folder)))
    assert s.train_x.shape == (12, 3, 256, 288)  # as given: the name says nothing, the size decides
    assert s.info.pipeline == "imagenet" and s.info.image_shape == (3, 224, 224)
    from timm.data.constants import IMAGENET_DEFAULT_MEAN

    assert s.info.mean == tuple(IMAGENET_DEFAULT_MEAN)  # normalize auto: ImageNet's on this pipeline
    small = load_splits(DataConfig(name="birds", root=str(folder), image_size=32))
    assert small.info.pipeline == "cifar" and small.info.image_shape == (3, 32, 32)


def test_an_imagenet_name_stores_the_resize_square_unless_full(folder):
    cfg = DataConfig(name="imagenette", root=str(folder), resize_size=160, crop_size=128)
    s = load_splits(cfg)
    assert s.train_x.shape == (8, 3, 160, 160) and s.info.image_shape == (3, 128, 128)
    full = load_splits(cfg.model_copy(update={"store": "full"}))
    assert full.train_x.shape == (8, 3, 200, 300) and full.info.image_shape == (3, 128, 128)
    want = v2.Compose([v2.Resize(160, antialias=True), v2.CenterCrop(160)])(full.train_x[3])
    assert torch.equal(s.train_x[3], want)  # the stored square: torchvision's own resize and crop
    birds = DataConfig(name="birds", root=str(folder), pipeline="imagenet")  # another name: as given
    assert load_splits(birds).train_x.shape == (12, 3, 256, 288)
    assert load_splits(birds.model_copy(update={"store": "square"})).train_x.shape == (12, 3, 256, 256)
    assert DataConfig(name="cifar10", pipeline="imagenet").stored_size() is None  # 32 px kept, enlarged on the device


def test_loader_batches_follow_the_ops_on_the_augment_stream(folder):
    s = load_splits(DataConfig(name="birds", root=str(folder)))
    data = DataConfig(name="birds", rrc_scale=(0.2, 0.9))
    kw = dict(mean=s.info.mean, std=s.info.std, **pipeline_kwargs(data, s.info))
    train = DeviceLoader(s.train_x, s.train_y, batch_size=4, train=True, augment=True, seed=5,
                         autoaugment="imagenet", **kw)
    g = seeded_generator("data.augment", 5, 2, 0)
    perm = torch.randperm(12, generator=seeded_generator("data.shuffle", 5, 2))
    mean, std = torch.tensor(s.info.mean).view(1, 3, 1, 1), torch.tensor(s.info.std).view(1, 3, 1, 1)
    for b, (x, y) in enumerate(train.epoch(2)):
        idx = perm[4 * b:4 * b + 4]
        want = autoaugment(random_resized_crop_flip(s.train_x[idx], 224, (0.2, 0.9), (3 / 4, 4 / 3), g), "imagenet", g)
        assert x.shape == (4, 3, 224, 224) and torch.equal(y, s.train_y[idx])
        assert torch.allclose(x, (want.float() / 255 - mean) / std)
    again = [x for x, _ in train.epoch(2)]  # a resumed epoch draws the same
    assert all(torch.equal(a, b) for a, (b, _) in zip(again, train.epoch(2)))
    tv = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224)])
    val = DeviceLoader(s.val_x, s.val_y, batch_size=3, train=False, **kw)
    got = torch.cat([x for x, _ in val.epoch(0)])
    assert torch.allclose(got, (torch.stack([tv(i) for i in s.val_x]).float() / 255 - mean) / std)
    plain = DeviceLoader(s.train_x, s.train_y, batch_size=4, train=True, augment=False, **kw)
    assert next(iter(plain.epoch(0)))[0].shape == (4, 3, 224, 224)  # base: the centre crop


def test_config_knobs_validate_in_one_line():
    for data, field in [({"rrc_scale": [0.5, 0.2]}, "data.rrc_scale"), ({"rrc_scale": [0.1, 1.2]}, "data.rrc_scale"),
                        ({"rrc_ratio": [0, 1]}, "data.rrc_ratio"), ({"crop_size": 300}, "data.crop_size"),
                        ({"pipeline": "tf"}, "data.pipeline"), ({"store": "x"}, "data.store")]:
        with pytest.raises(ConfigError) as err:
            build_run({"method": {"name": "erm"}, "data": data})
        assert str(err.value).startswith(f"{field}:") and "\n" not in str(err.value)


def test_unread_knobs_and_resolved_settings():
    cifar = build_run({"method": {"name": "erm"}, "data": {"pipeline": "cifar"}})
    assert {"data.crop_size", "data.rrc_scale", "data.store"} <= set(cifar.unread())
    inet = build_run({"method": {"name": "erm"}, "data": {"pipeline": "imagenet"}})
    assert "data.pad" in inet.unread() and "data.rrc_scale" not in inet.unread()
    assert resolved(inet.data) == {"pipeline": "imagenet", "stored_size": "as the source gives", "crop_size": 224,
                                   "resize_size": 256, "rrc_scale": [0.08, 1.0], "rrc_ratio": [0.75, 4 / 3],
                                   "store": "auto"}
    assert resolved(DataConfig(name="cifar10"), (3, 32, 32))["pipeline"] == "cifar"
    assert resolved(DataConfig(name="imagenet-1k"))["stored_size"] == 256


def test_validate_prints_the_resolved_pipeline(folder, tmp_path, capsys):
    import yaml

    from raypair.cli import main

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"method": {"name": "erm"}, "model": {"name": "tiny_cnn"},
                                    "data": {"name": "birds", "root": str(folder), "pipeline": "imagenet"}}))
    assert main(["validate", str(path), "--set", "data.crop_size=192"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["resolved_pipeline"] == {"pipeline": "imagenet", "stored_size": "as the source gives",
                                        "crop_size": 192, "resize_size": 256, "rrc_scale": [0.08, 1.0],
                                        "rrc_ratio": [0.75, 4 / 3], "store": "auto"}
    assert main(["validate", str(path), "--set", "data.rrc_ratio=[2, 1]"]) == 2
    assert capsys.readouterr().err.strip().startswith("raypair: error: data.rrc_ratio:")


def test_randaugment_follows_the_crop_on_the_same_stream(folder):
    from raypair.ops.randaugment import randaugment

    s = load_splits(DataConfig(name="birds", root=str(folder)))
    kw = dict(mean=(0.0,) * 3, std=(1 / 255,) * 3, **pipeline_kwargs(DataConfig(name="birds"), s.info))
    loader = DeviceLoader(s.train_x, s.train_y, batch_size=12, train=True, augment=True, seed=1, autoaugment="ra", **kw)
    x, _ = next(iter(loader.epoch(0)))
    g = seeded_generator("data.augment", 1, 0, 0)
    idx = torch.randperm(12, generator=seeded_generator("data.shuffle", 1, 0))
    want = randaugment(random_resized_crop_flip(s.train_x[idx], 224, (0.08, 1), (3 / 4, 4 / 3), g), g)
    assert torch.allclose(x, want.float(), atol=1e-3)  # (x / 255) / (1 / 255): pixels up to float rounding


def test_rf_view_adds_a_random_window_of_the_resize_square_after_the_augmented_channels(folder):
    """``rf_view`` (PairTraining's RF of the original at 224 px): channels 0-2 are the batch a loader
    without it gives (the same draws), channels 3-5 each image's Resize(256) + CenterCrop(256) cut at
    some 224 window with offsets in 0..32, flipped or not; evaluation and ``draw`` are unchanged."""
    s = load_splits(DataConfig(name="birds", root=str(folder)))
    kw = dict(mean=s.info.mean, std=s.info.std, batch_size=4, train=True, augment=True, seed=5,
              autoaugment="imagenet", **pipeline_kwargs(DataConfig(name="birds"), s.info))
    both = DeviceLoader(s.train_x, s.train_y, rf_view=True, **kw)
    one = DeviceLoader(s.train_x, s.train_y, **kw)
    perm = torch.randperm(12, generator=seeded_generator("data.shuffle", 5, 1))
    mean, std = torch.tensor(s.info.mean).view(3, 1, 1), torch.tensor(s.info.std).view(3, 1, 1)
    square = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(256)])
    where = []
    for b, ((x2, y2), (x1, y1)) in enumerate(zip(both.epoch(1), one.epoch(1))):
        assert x2.shape == (4, 6, 224, 224) and torch.equal(y2, y1) and torch.equal(x2[:, :3], x1)
        for i, img in zip(perm[4 * b:4 * b + 4].tolist(), x2[:, 3:]):
            sq = (square(s.train_x[i]).float() / 255 - mean) / std
            strips = sq.unfold(2, 224, 1)  # [3, 256, 33, 224]: every 224-wide strip of every row
            found = []
            for oy in range(33):
                for f in (0, 1):  # the view's first 4 rows against every window's, then the whole window
                    rows = strips[:, oy:oy + 4].flip(-1) if f else strips[:, oy:oy + 4]
                    close = ((rows - img[:, :4, None]).abs().amax(dim=(0, 1, 3)) < 1e-5).nonzero().flatten()
                    found += [(oy, int(ox), f) for ox in close]
            hits = [(oy, ox, f) for oy, ox, f in found if torch.allclose(
                img, sq[:, oy:oy + 224, ox:ox + 224].flip(-1) if f else sq[:, oy:oy + 224, ox:ox + 224], atol=1e-5)]
            assert hits, f"image {i}: not a 224 window of its 256 square"
            where.append(hits[0])
    assert len({(oy, ox) for oy, ox, _ in where}) > 6 and {f for *_, f in where} == {0, 1}  # random, both flips
    assert both.draw(3, torch.Generator().manual_seed(0))[0].shape == (3, 3, 224, 224)
    val = DeviceLoader(s.val_x, s.val_y, mean=s.info.mean, std=s.info.std, batch_size=4, train=False, rf_view=True,
                       **pipeline_kwargs(DataConfig(name="birds"), s.info))
    assert next(iter(val.epoch(0)))[0].shape[1] == 3
