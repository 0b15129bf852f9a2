"""``raypair.data.prepare`` on small stand-ins built here in each source's real archive layout
(tests/helpers.py): what the prepared Parquet holds is what the stand-in holds (labels, splits,
class names, pixels within JPEG tolerance), the Parquet source loads it, a finished prepare is not
redone, and a corrupt image, a missing file or a wrong archive is one line that leaves nothing behind."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import cars_standin, cifar100_standin, flowers_standin, imagenet_standin, jpeg_bytes, smooth_image, write_tar

from raypair.config import ConfigError, DataConfig
from raypair.data import load_splits
from raypair.data.prepare import Options, prepare
from raypair.data.prepare.standin import standin

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")  # torchvision 0.29
NOCHECK = Options(verify="none")  # the stand-ins carry the official names, not the official bytes


def _rows(folder: Path, split: str) -> list[tuple[np.ndarray, int]]:
    """Each stored image, decoded with PIL (not raypair), and its label, in order."""
    import pyarrow.parquet as pq
    from PIL import Image

    out = []
    for f in sorted((folder / "data").glob(f"{split}-*.parquet")):
        t = pq.read_table(f).to_pydict()
        out += [(np.asarray(Image.open(io.BytesIO(im["bytes"])).convert("RGB")), y) for im, y in zip(t["image"], t["label"])]
    return out


def _load(root: Path, name: str, **data):
    return load_splits(DataConfig(name=name, root=str(root), cache_dir=str(root / ".cache"), **data))


def _close(a: np.ndarray, b: np.ndarray, tol: float = 3.0) -> bool:
    return a.shape == b.shape and float(np.abs(a.astype(float) - b.astype(float)).mean()) < tol


def test_cifar100_keeps_pixels_fine_labels_names_and_the_split(tmp_path):
    labels = {"train": [0, 1, 2, 2, 1, 0], "test": [2, 0, 1]}
    images = cifar100_standin(tmp_path, labels, ["apple", "bee", "cup"])
    folder, wrote = prepare("cifar100", tmp_path, tmp_path / "out", NOCHECK)
    assert wrote and json.loads((folder / "prepared.json").read_text())["splits"] == {"train": 6, "test": 3}
    for split in ("train", "test"):
        rows = _rows(folder, split)
        assert [y for _, y in rows] == labels[split]
        assert all(np.array_equal(x, images[split][i]) for i, (x, _) in enumerate(rows))  # PNG: exact
    s = _load(tmp_path / "out", "cifar100")
    assert s.info.classes == ("apple", "bee", "cup")
    assert s.train_y.tolist() == labels["train"] and s.val_y.tolist() == labels["test"]
    assert np.array_equal(s.train_x[3].permute(1, 2, 0).numpy(), images["train"][3])


def test_flowers102_official_split_and_labels(tmp_path):
    labels = [1, 2, 3, 3, 1, 2, 3]  # 1-based, as imagelabels.mat
    split = {"trnid": [2, 1, 3], "valid": [4], "tstid": [5, 6, 7]}
    imgs = flowers_standin(tmp_path, labels, split)
    folder, _ = prepare("flowers102", tmp_path, tmp_path / "out", NOCHECK)
    got = {s: _rows(folder, s) for s in ("train", "validation", "test")}
    assert [y for _, y in got["train"]] == [0, 1, 2]  # images 1, 2, 3 in archive order
    assert [y for _, y in got["validation"]] == [2] and [y for _, y in got["test"]] == [0, 1, 2]
    assert all(_close(x, imgs[i]) for i, (x, _) in enumerate(got["train"]))
    assert _close(got["test"][2][0], imgs[6])
    s = _load(tmp_path / "out", "flowers102")
    assert s.info.classes == ("001", "002", "003") and len(s.train_y) == 3 and len(s.val_y) == 3


def test_stanford_cars_devkit_names_and_labels(tmp_path):
    imgs = cars_standin(tmp_path, train=[1, 2, 3, 1], test=[3, 2], names=["Audi A4", "BMW M3", "Fiat 500"])
    folder, _ = prepare("stanford_cars", tmp_path, tmp_path / "out", NOCHECK)
    train, test = _rows(folder, "train"), _rows(folder, "test")
    assert [y for _, y in train] == [0, 1, 2, 0] and [y for _, y in test] == [2, 1]
    assert all(_close(x, imgs["train"][i]) for i, (x, _) in enumerate(train))
    s = _load(tmp_path / "out", "stanford_cars")
    assert s.info.classes == ("Audi A4", "BMW M3", "Fiat 500") and s.val_y.tolist() == [2, 1]


def _mini_val() -> tuple[list[str], list[str]]:
    wnids = ["n03000000", "n01000000", "n02000000"]  # ILSVRC2012_ID order, not sorted
    return wnids, [wnids[i % 3] for i in range(15)]  # 5 validation images per class


@pytest.mark.parametrize("labels", ["devkit", "csv"])
def test_ilsvrc_mini_is_p0s_rule_with_sorted_wnid_labels(tmp_path, labels):
    wnids, val = _mini_val()
    imgs = imagenet_standin(tmp_path, wnids, val, labels=labels)["val"]
    folder, _ = prepare("ilsvrc_mini", tmp_path, tmp_path / "out", NOCHECK)
    train, test = _rows(folder, "train"), _rows(folder, "test")
    assert (len(train), len(test)) == (12, 3)  # 40k / 10k of 50k: 4 / 1 of each class's 5
    assert sorted(y for _, y in test) == [0, 1, 2]  # stratified: one of each class
    sorted_index = {w: k for k, w in enumerate(sorted(wnids))}
    expect = {i: sorted_index[w] for i, w in enumerate(val, 1)}
    for x, y in train + test:  # each stored image is one of the stand-in's, with its class
        i = next(i for i, im in imgs.items() if _close(x, im, 2.0))
        assert y == expect[i]
    s = _load(tmp_path / "out", "ilsvrc_mini", resize_size=32, crop_size=28)
    assert s.info.classes == tuple(sorted(wnids)) and s.info.pipeline == "imagenet"


def test_ilsvrc_mini_random_split_and_seed(tmp_path):
    wnids, val = _mini_val()
    imagenet_standin(tmp_path, wnids, val, labels="csv")
    tests = []
    for seed in range(4):
        folder, _ = prepare("ilsvrc_mini", tmp_path, tmp_path / f"o{seed}", Options(verify="none", mini_split="random",
                                                                                   split_seed=seed))
        tests.append(sorted(im.tobytes() for im, _ in _rows(folder, "test")))
        assert len(tests[-1]) == 3
    assert len({tuple(t) for t in tests}) > 1  # the seed draws the test images


def test_imagenet1k_per_class_tars_and_validation(tmp_path):
    wnids, val = _mini_val()
    imgs = imagenet_standin(tmp_path, wnids, val, train_per_class=2, labels="devkit")
    folder, _ = prepare("imagenet1k", tmp_path, tmp_path / "out", NOCHECK)
    train, test = _rows(folder, "train"), _rows(folder, "test")
    assert len(train) == 6 and len(test) == 15
    order = {w: k for k, w in enumerate(sorted(wnids))}
    assert [y for _, y in train] == [order[w] for w in wnids for _ in range(2)]
    assert _close(train[0][0], imgs["train"][wnids[0], 0]) and _close(test[4][0], imgs["val"][5])
    assert [y for _, y in test] == [order[w] for w in val]


def test_max_size_reencodes_the_shorter_side(tmp_path):
    from PIL import Image

    imgs = flowers_standin(tmp_path, [1, 2, 1, 2], {"trnid": [1, 2], "valid": [3], "tstid": [4]})
    folder, _ = prepare("flowers102", tmp_path, tmp_path / "out", Options(verify="none", max_size=12))
    rows = _rows(folder, "train")
    ref = np.asarray(Image.fromarray(imgs[0]).resize((15, 12), Image.Resampling.BICUBIC))  # 40x32 -> 15x12
    assert rows[0][0].shape == (12, 15, 3) and _close(rows[0][0], ref, 4.0)


def test_a_finished_prepare_is_not_redone(tmp_path):
    cifar100_standin(tmp_path, {"train": [0, 1], "test": [1, 0]}, ["a", "b"])
    folder, wrote = prepare("cifar100", tmp_path, tmp_path / "out", NOCHECK)
    shard = next((folder / "data").glob("train-*"))
    before = shard.stat().st_mtime_ns
    (tmp_path / "cifar-100-python.tar.gz").unlink()  # not even read again
    assert prepare("cifar100", tmp_path, tmp_path / "out", NOCHECK) == (folder, False)
    assert shard.stat().st_mtime_ns == before
    assert shard.name == "train-00000-of-00001.parquet"


def test_a_corrupt_image_is_named_and_nothing_is_left(tmp_path):
    flowers_standin(tmp_path, [1, 2, 1], {"trnid": [1, 2], "valid": [], "tstid": [3]})
    good = jpeg_bytes(smooth_image(0, (200, 160)))  # large enough that a cut leaves its headers whole
    write_tar(tmp_path / "102flowers.tgz", {"jpg/image_00001.jpg": good, "jpg/image_00002.jpg": good[:len(good) * 3 // 4],
                                            "jpg/image_00003.jpg": good})
    with pytest.raises(ConfigError, match=r"^--from: 102flowers.tgz:jpg/image_00002.jpg: cannot decode the image"):
        prepare("flowers102", tmp_path, tmp_path / "out", NOCHECK)
    assert list((tmp_path / "out").iterdir()) == []  # no half-written dataset, no temporary folder


def test_a_missing_file_says_where_to_get_it(tmp_path):
    flowers_standin(tmp_path, [1, 2], {"trnid": [1, 2], "valid": [], "tstid": [2]})
    (tmp_path / "setid.mat").unlink()
    with pytest.raises(ConfigError, match=r"^--from: setid.mat not found in .*robots.ox.ac.uk.*--from"):
        prepare("flowers102", tmp_path, tmp_path / "out", NOCHECK)


def test_an_archive_that_is_not_the_official_one_is_refused(tmp_path):
    cifar100_standin(tmp_path, {"train": [0, 1], "test": [1, 0]}, ["a", "b"])
    with pytest.raises(ConfigError, match=r"MD5 [0-9a-f]{32} is not the official eb9058c3a382ffc7106e4002c42a8d85"):
        prepare("cifar100", tmp_path, tmp_path / "out")  # --verify auto


def test_a_folder_that_is_not_a_prepare_is_not_overwritten(tmp_path):
    cifar100_standin(tmp_path, {"train": [0, 1], "test": [1, 0]}, ["a", "b"])
    (tmp_path / "out" / "cifar100").mkdir(parents=True)
    with pytest.raises(ConfigError, match="exists and is not a finished data prepare"):
        prepare("cifar100", tmp_path, tmp_path / "out", NOCHECK)


def test_a_standin_loads_through_the_parquet_source(tmp_path):
    folder, wrote = standin("imagenet1k", tmp_path, classes=3, train=2, test=1)
    assert wrote and standin("imagenet1k", tmp_path) == (folder, False)
    s = _load(tmp_path, "imagenet1k", resize_size=40, crop_size=32)
    assert s.train_y.tolist() == [0, 0, 1, 1, 2, 2] and tuple(s.train_x.shape[1:]) == (3, 40, 40)


def test_shards_are_bounded_and_read_back_in_order(tmp_path):
    labels = {"train": [0, 1, 2] * 4, "test": [2, 1, 0]}
    images = cifar100_standin(tmp_path, labels, ["a", "b", "c"])
    one = len(jpeg_bytes(images["train"][0]))  # about a PNG's size: a few kB
    folder, _ = prepare("cifar100", tmp_path, tmp_path / "out", Options(verify="none", shard_mb=3 * one / 2**20))
    shards = sorted((folder / "data").glob("train-*.parquet"))
    assert len(shards) >= 3 and all(p.name.endswith(f"-of-{len(shards):05d}.parquet") for p in shards)
    s = _load(tmp_path / "out", "cifar100")
    assert s.train_y.tolist() == labels["train"]
    assert all(np.array_equal(s.train_x[i].permute(1, 2, 0).numpy(), images["train"][i]) for i in range(12))


def test_a_missing_dataset_that_prepare_knows_names_the_command(tmp_path):
    from raypair.config import ConfigError, DataConfig
    from raypair.data.sources import resolve

    with pytest.raises(ConfigError) as e:
        resolve(DataConfig(name="imagenet1k", root=str(tmp_path)))
    assert "raypair data prepare imagenet1k --from DIR" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError) as e:
        resolve(DataConfig(name="my_photos", root=str(tmp_path)))
    assert "data prepare" not in str(e.value)
