"""The stream path (raypair/data/stream*.py, raypair/data/mode.py): each layout read, the epoch
semantics counted image by image across ranks, the RandomResizedCrop against torchvision's
get_params and the ops' rule, the device path's pixels, the modes and the bad inputs."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from helpers import stream_dataset
from raypair.config import ConfigError, DataConfig
from raypair.data.stream_decode import CorruptImage, rrc_box, uniforms
from raypair.data.stream_index import index_splits

LAYOUTS = ("imagefolder", "parquet", "webdataset")


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    return {lay: stream_dataset(root, lay, 50, 23) for lay in LAYOUTS}


def _data(folder, **kw):
    return DataConfig(**{"name": folder.name, "root": str(folder.parent), "mode": "stream", **kw})


def _loader(folder, train, rank=0, world=1, batch=8, **kw):
    from raypair.data.stream import StreamLoader
    from raypair.data.sources import resolve

    tr, te = index_splits(resolve(_data(folder)))
    return StreamLoader(tr if train else te, batch_size=batch, mean=(0.5,) * 3, std=(0.25,) * 3, train=train,
                        rank=rank, world_size=world, seed=3, pipeline="imagenet", crop_size=16, resize_size=20,
                        augment=train, **kw)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_indexes_in_file_order_with_labels(roots, layout):
    from raypair.data.sources import resolve

    tr, te = index_splits(resolve(_data(roots[layout])))
    assert tr.kind == layout and tr.label.tolist() == list(range(50)) and te.label.tolist() == list(range(23))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_each_training_image_once_per_epoch_across_ranks(roots, world):
    # 50 images, global batch 12 (drop_last): 4 batches, 48 distinct images, 2 dropped (the partial batch)
    seen = []
    for rank in range(world):
        loader = _loader(roots["webdataset"], True, rank, world, batch=12 if world != 1 else 12)
        ys = [y for _, y in loader.epoch(5)]
        assert len(ys) == len(loader) == 4
        seen += torch.cat(ys).tolist()  # a label is its image's number
    assert len(seen) == 48 and len(set(seen)) == 48


def test_the_shuffle_is_keyed_by_seed_and_epoch_and_matches_the_device_path(roots):
    from raypair.data.loader import DeviceLoader

    a, b = _loader(roots["parquet"], True, batch=10), _loader(roots["parquet"], True, batch=10)
    e3 = [r.tolist() for r in a.batches(3)]
    assert e3 == [r.tolist() for r in b.batches(3)]  # a resumed run: a fresh loader, the same epoch
    assert e3 != [r.tolist() for r in a.batches(4)]
    dev = DeviceLoader(torch.zeros(50, 3, 2, 2, dtype=torch.uint8), torch.arange(50), batch_size=10, mean=(0.5,) * 3,
                       std=(0.5,) * 3, train=True, seed=3)
    assert e3 == [i.tolist() for i in dev._batches(3)]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_evaluation_covers_the_split_exactly_once(roots, world):
    seen = []
    for rank in range(world):
        seen += torch.cat([y for _, y in _loader(roots["imagefolder"], False, rank, world, batch=4).epoch(0)]).tolist()
    assert sorted(seen) == list(range(23))


def test_rrc_box_is_the_ops_rule_on_the_same_uniforms():
    from raypair.ops.resized_crop import boxes_from_uniforms

    g = torch.Generator().manual_seed(0)
    for h, w, scale, ratio in [(350, 400, (0.08, 1.0), (3 / 4, 4 / 3)), (40, 300, (0.5, 1.0), (0.9, 1.1)),
                               (64, 64, (0.9, 1.0), (2.0, 3.0))]:
        u = torch.rand(300, 22, generator=g, dtype=torch.float64)
        ref = boxes_from_uniforms(u[:, :10], u[:, 10:20], u[:, 20], u[:, 21], h, w, scale, ratio)
        assert [list(rrc_box(r.tolist(), h, w, scale, ratio)) for r in u] == ref.tolist()


def test_rrc_boxes_follow_torchvisions_get_params():
    from torchvision.transforms import RandomResizedCrop

    h, w, n = 350, 400, 1000
    ours = np.array([rrc_box(uniforms(0, 1, i), h, w, (0.08, 1.0), (3 / 4, 4 / 3)) for i in range(n)], float)
    torch.manual_seed(0)
    img = torch.zeros(1, h, w)
    tv = np.array([RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)], float)
    for stat in (lambda b: b[:, 2] * b[:, 3] / (h * w), lambda b: np.log(b[:, 3] / b[:, 2]),
                 lambda b: b[:, 0] + b[:, 2] / 2, lambda b: b[:, 1] + b[:, 3] / 2):
        a, b = stat(ours), stat(tv)
        se = math.sqrt(a.var() / n + b.var() / n)
        assert abs(a.mean() - b.mean()) < 4 * se and 0.9 < a.std() / b.std() < 1.1
    flips = np.array([uniforms(0, 1, i)[-1] < 0.5 for i in range(n)])
    assert abs(flips.mean() - 0.5) < 4 * 0.5 / math.sqrt(n)


def test_cifar_pipeline_streams_the_device_paths_pixels(tmp_path):
    from raypair.data import load_splits
    from raypair.data.stream import StreamLoader
    from raypair.data.stream_splits import stream_splits

    folder = stream_dataset(tmp_path, "parquet", 12, 5, size=(20, 20), fmt="PNG", classes=3, vary=False)
    run = {"image_size": 16, "pipeline": "cifar", "normalize": "imagenet"}
    s, dev = stream_splits(_data(folder, **run)), load_splits(_data(folder, **run))
    assert s.info == dev.info
    x = torch.cat([x for x, _ in StreamLoader(s.val, batch_size=4, mean=(0,) * 3, std=(1,) * 3, train=False, image_size=16).epoch(0)])
    ref = dev.val_x.float() / 255  # PIL's antialiased bilinear and torchvision's differ by rounding only
    assert x.shape == ref.shape and (x - ref).abs().max() <= 2 / 255


def test_imagenet_evaluation_is_resize_and_centre_crop(tmp_path):
    from PIL import Image
    from torchvision.transforms import CenterCrop, Compose, PILToTensor, Resize

    from raypair.data.stream_decode import Decoder
    from raypair.data.sources import resolve

    folder = stream_dataset(tmp_path, "imagefolder", 3, 1, size=(160, 120), fmt="PNG")
    tr, _ = index_splits(resolve(_data(folder)))
    ours = Decoder(tr, "imagenet", crop_size=96, resize_size=110).image(2, 0)
    tv = Compose([Resize(110), CenterCrop(96), PILToTensor()])(Image.open(tr.files[2]).convert("RGB"))
    assert ours.shape == (96, 96, 3)
    # noise images: a one-pixel shift would differ by ~80 levels on average
    assert np.abs(ours.astype(float) - tv.permute(1, 2, 0).numpy()).mean() < 20


def test_a_corrupt_image_is_skipped_and_counted_or_fails_the_trial(tmp_path):
    folder = stream_dataset(tmp_path, "imagefolder", 10, 2)
    bad = folder / "train" / "0004" / "0004.jpg"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated inside the header
    loader = _loader(folder, True, batch=10)
    with pytest.warns(UserWarning, match="skipped 1 images"):
        ys = torch.cat([y for _, y in loader.epoch(0)]).tolist()
    assert sorted(ys) == [0, 1, 2, 3, 5, 6, 7, 8, 9] and loader.skipped == 1
    with pytest.raises(CorruptImage, match="0004.jpg: cannot decode"):
        list(_loader(folder, True, batch=10, on_corrupt="fail").epoch(0))


def test_a_streamed_run_reports_the_images_it_skipped(tmp_path):
    from raypair.config import build_run
    from raypair.loop import run_trial

    folder = stream_dataset(tmp_path, "imagefolder", 10, 2, classes=2)
    bad = folder / "train" / "0000" / "0004.jpg"
    bad.write_bytes(b"not an image")
    run = build_run({"method": {"name": "erm"}, "model": {"name": "tiny_cnn"}, "batch_size": 5, "epochs": 2,
                     "data": {"name": "imagefolder", "root": str(tmp_path), "mode": "stream", "workers": 0,
                              "pipeline": "imagenet", "crop_size": 16, "resize_size": 20}})
    reports = []
    with pytest.warns(UserWarning, match="skipped 1 images"):
        run_trial(run, lambda m, c: reports.append(m))
    assert [m["data_skipped"] for m in reports] == [1.0, 2.0]  # so far: once an epoch
    assert [m["train_samples"] for m in reports] == [9.0, 9.0]


def test_a_missing_shard_is_refused_before_any_trial(tmp_path):
    from raypair.data.mode import decide

    folder = stream_dataset(tmp_path, "webdataset", 40, 8)
    os.remove(folder / "train-0001.tar")
    os.symlink(tmp_path / "elsewhere.tar", folder / "train-0001.tar")  # a shard not on this node
    with pytest.raises(ConfigError, match=r"^data.name: a shard of the dataset is missing \(on this machine\): /.*/train-0001.tar$"):
        decide(_data(folder))


def test_modes_and_the_budget(roots):
    from raypair.data.mode import decide

    folder = roots["webdataset"]
    # 73 images of 24-32 x 20-24 px: the first is 24 x 20, 73 * 3 * 24 * 20 bytes = 105,120
    assert decide(_data(folder, mode="auto")) == ("device", "auto: 0.00 GB decoded <= data.device_budget_gb=8")
    assert decide(_data(folder, mode="auto", device_budget_gb=1e-4))[0] == "stream"
    assert decide(_data(folder, mode="auto", device_budget_gb=1.06e-4))[0] == "device"
    with pytest.raises(ConfigError, match=r"^data.mode: the decoded dataset needs 0.00 GB, over "
                                          r"data.device_budget_gb=0.0001; .* \(got 'device'\)$"):
        decide(_data(folder, mode="device", device_budget_gb=1e-4))


def test_stream_on_a_source_read_whole_takes_the_device_path():
    from raypair.data.mode import decide

    assert decide(DataConfig(name="digits", mode="stream")) == \
        ("device", "source sklearn is read whole (only imagefolder, parquet and webdataset stream)")


def test_validate_prints_the_mode_and_refuses_device_over_budget(roots, tmp_path, capsys):
    import yaml

    from raypair.cli import main

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"method": {"name": "erm"}, "model": {"name": "tiny_cnn"},
                                    "data": {"name": "parquet", "root": str(roots["parquet"].parent)}}))
    assert main(["validate", str(path), "--set", "data.mode=stream"]) == 2  # 24-32 x 20-24 px on the cifar pipeline
    assert capsys.readouterr().err.strip().startswith("raypair: error: data.image_size: streamed images differ in size")
    assert main(["validate", str(path), "--set", "data.device_budget_gb=0.00001", "--set", "data.image_size=16"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["data_mode"] == {"mode": "stream", "why": "auto: 0.00 GB decoded > data.device_budget_gb=1e-05"}
    assert main(["validate", str(path), "--set", "data.device_budget_gb=0.00001", "--set", "data.mode=device"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("raypair: error: data.mode: the decoded dataset needs 0.00 GB") and "\n" not in err


def test_draw_decodes_samples_whose_labels_differ_from_avoid(roots):
    loader = _loader(roots["webdataset"], True)
    avoid = torch.arange(8)
    x, y = loader.draw(8, torch.Generator().manual_seed(0), avoid)
    assert x.shape == (8, 3, 16, 16) and (y != avoid).all() and x.dtype == torch.float32


def test_reduced_size_jpeg_decoding_keeps_the_crop(tmp_path, monkeypatch):
    from PIL import Image, JpegImagePlugin

    from raypair.data.sources import resolve
    from raypair.data.stream_decode import Decoder

    rng = np.random.default_rng(0)
    for split in ("train", "test"):  # a smooth 400 x 350 photo-like JPEG
        (tmp_path / "smooth" / split / "a").mkdir(parents=True)
        img = Image.fromarray(rng.integers(0, 256, (7, 8, 3), dtype=np.uint8)).resize((400, 350), Image.BICUBIC)
        img.save(tmp_path / "smooth" / split / "a" / "0.jpg", quality=95)
    tr, _ = index_splits(resolve(_data(tmp_path / "smooth")))
    sizes = []
    real = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        out = real(self, mode, size)
        sizes.append(self.size)
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    # evaluation: the centre 350 * 64 / 72 = 311 px square to 64 px: decoded at 1/4 (100 x 88, 77 px of crop)
    small = Decoder(tr, "imagenet", crop_size=64, resize_size=72).image(0, 0)
    full = Decoder(tr, "imagenet", crop_size=64, resize_size=72, draft=False).image(0, 0)
    assert sizes == [(100, 88)]
    assert small.shape == full.shape == (64, 64, 3)
    assert np.abs(small.astype(float) - full.astype(float)).mean() < 3


def test_rf_view_streams_a_random_window_of_the_resize_square_beside_the_crop(roots):
    """The stream path's ``rf_view``: the first three channels are the batch without it (same crops,
    same flips); the last three a ``crop_size`` window of the centre square taken as ``resize_size``
    px (offsets 0..4 here), flipped or not, resized from the decoded image."""
    from PIL import Image

    from raypair.data.stream_decode import resized

    folder = roots["parquet"]
    both, one = _loader(folder, True, rf_view=True), _loader(folder, True)
    where = []
    for rows, (x2, y2), (x1, y1) in zip(both.batches(2), both.epoch(2), one.epoch(2)):
        assert x2.shape == (8, 6, 16, 16) and torch.equal(y2, y1) and torch.equal(x2[:, :3], x1)
        for row, img in zip(rows.tolist(), x2[:, 3:]):
            pix = np.asarray(Image.open(__import__("io").BytesIO(both.decoder._reader.read(both.decoder.index, row)))
                             .convert("RGB")) if both.decoder._reader else None
            if pix is None:
                from raypair.data.stream_index import Reader

                pix = np.asarray(Image.open(__import__("io").BytesIO(Reader().read(both.decoder.index, row))).convert("RGB"))
            h, w = pix.shape[:2]
            side, k = min(h, w), min(h, w) / 20
            cands = {}
            for oy in range(5):
                for ox in range(5):
                    box = ((w - side) / 2 + ox * k, (h - side) / 2 + oy * k, (w - side) / 2 + (ox + 16) * k,
                           (h - side) / 2 + (oy + 16) * k)
                    for f in (False, True):
                        v = torch.from_numpy(np.ascontiguousarray(resized(pix, box, 16, f))).permute(2, 0, 1)
                        cands[(oy, ox, f)] = (v.float() / 255 - 0.5) / 0.25
            hits = [key for key, v in cands.items() if torch.allclose(img, v, atol=1e-5)]
            assert hits, f"row {row}: not a window of its square"
            where.append(hits[0])
    assert len({(oy, ox) for oy, ox, _ in where}) > 4 and {f for *_, f in where} == {False, True}
    assert both.draw(4, torch.Generator().manual_seed(1))[0].shape == (4, 3, 16, 16)


@pytest.mark.parametrize("box", [(10, 20, 250, 200), (0, 0, 300, 240), (100, 50, 180, 120), (3, 7, 299, 100)])
def test_the_decoders_resize_is_pils_antialiased_bilinear(box):
    """``resized`` (torch's uint8 kernel) against what torchvision's RandomResizedCrop does to a PIL
    image once it has its box (``F.resized_crop``: PIL's crop, then PIL's antialiased bilinear
    resize): down- and upscaling, non-square boxes, a flip."""
    from PIL import Image

    from raypair.data.stream_decode import resized

    yy, xx = np.mgrid[0:240, 0:300]
    smooth = np.stack([xx * 255 / 299, yy * 255 / 239, 128 + 100 * np.sin(xx / 9) * np.cos(yy / 13)], -1)
    img = Image.fromarray(smooth.round().astype(np.uint8))
    ref = np.asarray(img.crop(box).resize((96, 96), Image.BILINEAR)).astype(int)
    got = resized(np.asarray(img), box, 96).astype(int)
    assert got.shape == (96, 96, 3) and np.abs(got - ref).max() <= 1 and np.abs(got - ref).mean() < 0.05
    assert np.array_equal(resized(np.asarray(img), box, 96, flip=True), got[:, ::-1].astype(np.uint8))
