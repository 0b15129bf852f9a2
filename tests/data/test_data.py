"""raypair.data and raypair.ops.augment on real images: digits (offline), the shared CIFAR-10
Parquet files, and CIFAR-pickle / ImageFolder layouts built in tmp_path from real CIFAR images."""
from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path
from typing import Optional

import pytest
import torch

from raypair import data
from raypair.config import ConfigError, DataConfig
from raypair.data import DeviceLoader, load_splits, resolve, shard_indices
from raypair.data.sources import SOURCES, Located, Raw, Source
from raypair.data.sources import base as sources_base
from raypair.ops.augment import pad_crop_flip

REPO = Path(__file__).resolve().parents[2]
SHARED = (REPO / os.environ.get("RAYPAIR_DATA", str(REPO.parent / "shared" / "data"))).resolve()
CIFAR_PARQUET = SHARED / "cifar10"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")  # torchvision 0.29
needs_cifar = pytest.mark.skipif(not (CIFAR_PARQUET / "train.parquet").is_file(),
                                 reason=f"shared CIFAR-10 Parquet not found under {SHARED} (set RAYPAIR_DATA)")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("raypair-cache")


@pytest.fixture(autouse=True)
def _private_cache(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYPAIR_CACHE", str(cache_dir))  # never write to ~/.cache from tests


@pytest.fixture(scope="session")
def cifar(cache_dir: Path) -> dict:
    """The shared CIFAR-10 decoded once (timed), then loaded again from the disk cache (timed)."""
    cfg = DataConfig(name="cifar10", root=str(SHARED), cache_dir=str(cache_dir))
    t0 = time.perf_counter()
    first = load_splits(cfg)
    t1 = time.perf_counter()
    sources_base._memo.cache_clear()  # force the .npy path, not the in-process memo
    again = load_splits(cfg)
    t2 = time.perf_counter()
    print(f"\nCIFAR-10 first decode {t1 - t0:.2f} s, cached load {t2 - t1:.2f} s")
    return {"cfg": cfg, "first": first, "again": again, "cached_s": t2 - t1}


def real_images(n_per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n_per_class real CIFAR-10 test images per class, decoded here independently of raypair.data."""
    import pyarrow.parquet as pq
    from torchvision.io import decode_image

    tab = pq.read_table(CIFAR_PARQUET / "test.parquet", columns=["img", "label"])
    y = torch.from_numpy(tab.column("label").to_numpy())
    idx = torch.cat([(y == k).nonzero()[:n_per_class, 0] for k in range(10)])
    blobs = tab.column("img").combine_chunks().field("bytes").take(idx.numpy()).to_pylist()
    x = torch.stack([decode_image(torch.frombuffer(bytearray(b), dtype=torch.uint8)) for b in blobs])
    return x, y[idx]


def pixel_keys(x: torch.Tensor) -> set[int]:
    """One 64-bit hash of each image's pixels (random odd weights over its bytes read as int64)."""
    words = x.reshape(len(x), -1).view(torch.int64)  # [N, C*H*W/8], a view: no copy
    w = torch.randint(-2**62, 2**62, (words.shape[1],), generator=torch.Generator().manual_seed(0)) | 1
    return set((words * w).sum(1).tolist())


# ------------------------------------------------------------------------------------ digits
def test_digits_offline_shapes_and_fixed_test_split() -> None:
    from sklearn.datasets import load_digits

    s = load_splits(DataConfig(name="digits"))
    counts = torch.bincount(torch.from_numpy(load_digits().target))
    n_test = (counts.double() * 0.2 + 0.5).floor().long()
    assert s.train_x.dtype == torch.uint8 and s.train_x.shape == (1797 - int(n_test.sum()), 3, 16, 16)
    assert s.val_x.shape == (int(n_test.sum()), 3, 16, 16) and s.test_x is None
    assert torch.equal(torch.bincount(s.val_y), n_test)
    assert torch.equal(s.train_x[:, 0], s.train_x[:, 2])  # grey replicated to RGB
    assert s.info.num_classes == 10 and s.info.classes == tuple("0123456789")
    assert s.info.image_shape == (3, 16, 16) and s.info.eval_split == "test"
    assert int(s.train_x.max()) == 255 and int(s.train_x.min()) == 0
    other = load_splits(DataConfig(name="digits", split_seed=7, image_size=8))
    assert other.val_x.shape[0] == s.val_x.shape[0] and torch.equal(other.val_y, s.val_y)  # seed-independent


def test_digits_deterministic_and_balanced_subset() -> None:
    cfg = DataConfig(name="digits", train_subset=95, test_subset=50, split_seed=3)
    a, b = load_splits(cfg), load_splits(cfg)
    for name in ("train_x", "train_y", "val_x", "val_y"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    counts = torch.bincount(a.train_y, minlength=10)
    assert counts.sum() == 95 and counts.max() - counts.min() <= 1
    assert torch.equal(torch.bincount(a.val_y, minlength=10), torch.full((10,), 5))
    c = load_splits(cfg.model_copy(update={"split_seed": 4}))
    assert not torch.equal(a.train_x, c.train_x)


def test_computed_normalisation_matches_the_training_pixels() -> None:
    s = load_splits(DataConfig(name="digits", train_subset=200))
    x = s.train_x.double() / 255
    assert s.info.mean == pytest.approx(x.mean((0, 2, 3)).tolist(), abs=1e-12)
    assert s.info.std == pytest.approx(x.std((0, 2, 3), correction=0).tolist(), abs=1e-12)
    cifar = load_splits(DataConfig(name="digits", normalize="cifar"))
    assert cifar.info.mean == pytest.approx((125.3 / 255, 123.0 / 255, 113.9 / 255))
    assert cifar.info.std == pytest.approx((63.0 / 255, 62.1 / 255, 66.7 / 255))


@pytest.mark.parametrize("name, normalize, mean, std", [
    # the moments published with the datasets (pixel values / 255, rounded to 4 digits)
    ("cifar100", "auto", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    ("cifar100", "cifar", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    ("cifar10", "auto", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    ("cifar100", "cifar10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),  # P3's code on CIFAR-100
])
def test_each_cifar_set_is_normalised_with_its_own_moments(name, normalize, mean, std) -> None:
    from raypair.data.splits import _normalization

    got_mean, got_std = _normalization(DataConfig(name=name, normalize=normalize), torch.zeros(1, 3, 1, 1), "cifar")
    assert got_mean == pytest.approx(mean, abs=5e-4) and got_std == pytest.approx(std, abs=5e-4)


def test_subset_larger_than_available_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"^data\.train_subset: larger than the 1438 training"):
        load_splits(DataConfig(name="digits", train_subset=5000))
    with pytest.raises(ConfigError, match=r"^data\.test_subset:"):
        load_splits(DataConfig(name="digits", test_subset=400))


# ------------------------------------------------------------------------- shared CIFAR-10
@needs_cifar
def test_shared_cifar10_parquet(cifar: dict) -> None:
    s = cifar["first"]
    assert resolve(cifar["cfg"]).kind == "parquet"
    assert s.train_x.shape == (50000, 3, 32, 32) and s.train_x.dtype == torch.uint8
    assert s.val_x.shape == (10000, 3, 32, 32) and s.test_x is None
    assert torch.equal(torch.bincount(s.train_y), torch.full((10,), 5000))
    assert torch.equal(torch.bincount(s.val_y), torch.full((10,), 1000))
    assert s.info.classes == CIFAR_CLASSES and s.info.image_shape == (3, 32, 32)
    assert s.info.mean == pytest.approx((125.3 / 255, 123.0 / 255, 113.9 / 255))  # auto -> cifar
    x0, y0 = real_images(1)
    assert torch.equal(s.val_x[torch.arange(10) * 1000], x0)  # rows are grouped by class, in file order
    assert torch.equal(s.val_y[:1000], torch.zeros(1000, dtype=torch.long)) and torch.equal(y0, torch.arange(10))


@needs_cifar
def test_cifar_cache_files_and_identical_reload(cifar: dict, cache_dir: Path) -> None:
    entries = list(cache_dir.glob("parquet-cifar10-*"))
    assert len(entries) == 1
    assert sorted(p.name for p in entries[0].iterdir()) == \
        ["meta.json", "test_x.npy", "test_y.npy", "train_x.npy", "train_y.npy"]
    a, b = cifar["first"], cifar["again"]
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.train_y, b.train_y)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.val_y, b.val_y) and a.info == b.info
    assert cifar["cached_s"] < 5  # measured ~0.3 s on 2 cores; loose against a busy machine


@needs_cifar
def test_val_fraction_is_a_stratified_disjoint_holdout(cifar: dict) -> None:
    cfg = cifar["cfg"].model_copy(update={"val_fraction": 0.1, "train_subset": 2000, "test_subset": 300})
    s = load_splits(cfg)
    assert s.info.eval_split == "val"
    assert torch.equal(torch.bincount(s.train_y), torch.full((10,), 200))
    assert torch.equal(torch.bincount(s.val_y, minlength=10), torch.tensor([30] * 10))
    assert s.test_x is not None and s.test_x.shape == (300, 3, 32, 32)
    full = load_splits(cfg.model_copy(update={"train_subset": None, "test_subset": None}))
    assert torch.equal(torch.bincount(full.val_y), torch.full((10,), 500))
    assert torch.equal(torch.bincount(full.train_y), torch.full((10,), 4500))
    assert pixel_keys(full.train_x).isdisjoint(pixel_keys(full.val_x))
    assert pixel_keys(s.train_x) <= pixel_keys(full.train_x) and pixel_keys(s.val_x) <= pixel_keys(full.val_x)
    assert pixel_keys(s.test_x) <= pixel_keys(cifar["first"].val_x)  # the official test split


@needs_cifar
def test_explicit_source_is_forced(cifar: dict) -> None:
    with pytest.raises(ConfigError, match=r"^data\.name: dataset not found.*cifar-10-batches-py"):
        resolve(cifar["cfg"].model_copy(update={"source": "cifar"}))
    with pytest.raises(ConfigError, match="serves only 'digits'"):
        resolve(cifar["cfg"].model_copy(update={"source": "sklearn"}))


# ------------------------------------------------------------------------- built layouts
def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


@needs_cifar
def test_cifar_pickle_layout_reads_exact_pixels(tmp_path: Path) -> None:
    x, y = real_images(12)  # 120 real images: 100 train (20 per batch file), 20 test
    perm = torch.randperm(120, generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    flat = x.reshape(120, 3072).numpy()
    for i in range(5):
        rows = slice(20 * i, 20 * (i + 1))
        _pickle(folder / f"data_batch_{i + 1}", {b"data": flat[rows], b"labels": y[rows].tolist()})
    _pickle(folder / "test_batch", {b"data": flat[100:], b"labels": y[100:].tolist()})
    _pickle(folder / "batches.meta", {b"label_names": [c.encode() for c in CIFAR_CLASSES]})
    cfg = DataConfig(name="cifar10", root=str(tmp_path))
    assert resolve(cfg).kind == "cifar"
    s = load_splits(cfg)
    assert torch.equal(s.train_x, x[:100]) and torch.equal(s.train_y, y[:100])
    assert torch.equal(s.val_x, x[100:]) and torch.equal(s.val_y, y[100:])
    assert s.info.classes == CIFAR_CLASSES and s.info.mean == pytest.approx(data.CIFAR_MEAN)
    up = load_splits(cfg.model_copy(update={"image_size": 48}))
    assert up.train_x.shape == (100, 3, 48, 48)


def digit_images(n_per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real scikit-learn digits as uint8 RGB [N, 3, 8, 8] (grey, inverted, half) and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    y = torch.from_numpy(d.target)
    idx = torch.cat([(y == k).nonzero()[:n_per_class, 0] for k in range(10)])
    g = torch.from_numpy(d.images[idx.numpy()] * 255 / 16).round().to(torch.uint8)
    return torch.stack([g, 255 - g, g // 2], 1), y[idx]


def test_imagefolder_layout(tmp_path: Path) -> None:
    from torchvision.io import encode_jpeg, encode_png, write_file
    from torchvision.transforms.v2 import functional as TF

    x, y = digit_images(3)
    names = {0: "zebra", 1: "apple", 2: "mango"}  # class folders sort to apple, mango, zebra
    root = tmp_path / "pets"
    written: dict[str, list[torch.Tensor]] = {}
    for i in range(len(y)):
        k = int(y[i])
        if k not in names:
            continue
        split = "train" if len(written.setdefault(names[k], [])) < 2 else "test"
        (root / split / names[k]).mkdir(parents=True, exist_ok=True)
        write_file(str(root / split / names[k] / f"{i:03d}.png"), encode_png(x[i]))
        written[names[k]].append(x[i])
    s = load_splits(DataConfig(name="pets", root=str(tmp_path)))
    assert resolve(DataConfig(name="pets", root=str(tmp_path))).kind == "imagefolder"
    assert s.info.classes == ("apple", "mango", "zebra") and s.info.num_classes == 3
    assert torch.equal(s.train_y, torch.tensor([0, 0, 1, 1, 2, 2])) and torch.equal(s.val_y, torch.tensor([0, 1, 2]))
    assert torch.equal(s.train_x[0], written["apple"][0]) and torch.equal(s.val_x[2], written["zebra"][2])
    assert s.info.image_shape == (3, 8, 8)

    big = TF.resize(x[0], [12, 20], antialias=True)  # a JPEG of another size, and a grey PNG
    write_file(str(root / "train" / "apple" / "big.jpg"), encode_jpeg(big))
    write_file(str(root / "train" / "mango" / "grey.png"), encode_png(x[1][:1]))
    with pytest.raises(ConfigError, match=r"^data\.image_size: images in .*differ in size"):
        load_splits(DataConfig(name="pets", root=str(tmp_path)))
    r = load_splits(DataConfig(name="pets", root=str(tmp_path), image_size=8))
    assert r.train_x.shape == (8, 3, 8, 8) and torch.equal(torch.bincount(r.train_y), torch.tensor([3, 3, 2]))
    grey = r.train_x[torch.nonzero(r.train_y == 1)[-1, 0]]
    assert torch.equal(grey[0], x[1][0]) and torch.equal(grey[0], grey[2])  # 1 channel -> RGB
    assert torch.equal(r.train_x[0], s.train_x[0])  # images already 8x8 are not touched
    wide = load_splits(DataConfig(name="pets", root=str(tmp_path), image_size=16))
    assert wide.train_x.shape == (8, 3, 16, 16) and wide.val_x.shape == (3, 3, 16, 16)


@needs_cifar
def test_hf_data_folder_layout_with_metadata_names(tmp_path: Path) -> None:
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    from torchvision.io import encode_png

    x, y = real_images(2)
    names = [f"class_{k}" for k in range(10)]
    folder = tmp_path / "hfset" / "data"
    folder.mkdir(parents=True)
    meta = {"info": {"features": {"image": {"_type": "Image"}, "fine_label": {"names": names, "_type": "ClassLabel"}}}}
    for split, rows in (("train", range(0, 20, 2)), ("test", range(1, 20, 2))):
        img = pa.array([{"bytes": encode_png(x[i]).numpy().tobytes(), "path": None} for i in rows])
        table = pa.table({"image": img, "fine_label": pa.array([int(y[i]) for i in rows], pa.int64())})
        table = table.replace_schema_metadata({"huggingface": json.dumps(meta)})
        pq.write_table(table, folder / f"{split}-00000-of-00001.parquet")
    s = load_splits(DataConfig(name="hfset", root=str(tmp_path)))
    assert resolve(DataConfig(name="hfset", root=str(tmp_path))).kind == "parquet"
    assert s.info.classes == tuple(names)
    assert torch.equal(s.train_x, x[0::2]) and torch.equal(s.val_x, x[1::2]) and torch.equal(s.val_y, y[1::2])


def test_missing_dataset_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as err:
        resolve(DataConfig(name="nope", root=str(tmp_path)))
    text = str(err.value)
    assert text.startswith("data.name:") and str(tmp_path / "nope") in text and "RAYPAIR_DATA" in text
    assert "data.root" in text and "(got 'nope')" in text
    monkeypatch.setenv("RAYPAIR_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(ConfigError, match=r"data\.download=true") as err:
        resolve(DataConfig(name="cifar100"))
    assert str(tmp_path / "elsewhere" / "cifar100") in str(err.value) and "from $RAYPAIR_DATA" in str(err.value)


def test_data_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAYPAIR_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert data.data_root(DataConfig()) == tmp_path.resolve() / "data"
    monkeypatch.setenv("RAYPAIR_DATA", str(tmp_path / "env"))
    assert data.data_root(DataConfig()) == tmp_path.resolve() / "env"
    assert data.data_root(DataConfig(root=str(tmp_path / "cfg"))) == tmp_path.resolve() / "cfg"


# ------------------------------------------------------------------------------ plug-ins
class _Tally(Source):
    """A test source: ``<name>/tally.pt`` holds both splits; it counts its reads."""

    name, order, looks_for = "tally", 5, "tally.pt"
    reads = 0

    def find(self, folder: Path, cfg: DataConfig) -> Optional[Located]:
        return Located(self.name, folder, (folder / "tally.pt",)) if (folder / "tally.pt").is_file() else None

    def read(self, loc: Located, size: Optional[int]) -> Raw:
        type(self).reads += 1
        return Raw(*torch.load(loc.train[0]), classes=("a", "b"))

    def key_files(self, loc: Located) -> Optional[list[Path]]:
        return list(loc.train)


def test_a_registered_source_is_found_read_and_cached(tmp_path: Path, cache_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SOURCES._items, "tally", _Tally)  # what @register does, undone after the test
    monkeypatch.setattr(_Tally, "reads", 0)
    x, y = digit_images(4)
    two = y < 2
    (tmp_path / "toy").mkdir()
    torch.save([x[two][::2], y[two][::2], x[two][1::2], y[two][1::2]], tmp_path / "toy" / "tally.pt")
    assert DataConfig(name="toy", root=str(tmp_path), source="tally").source == "tally"  # validated by the registry
    cfg = DataConfig(name="toy", root=str(tmp_path))  # auto: order 5 comes before parquet
    assert resolve(cfg) == Located("tally", tmp_path / "toy", (tmp_path / "toy" / "tally.pt",))
    s = load_splits(cfg)
    assert torch.equal(s.train_x, x[two][::2]) and torch.equal(s.val_y, y[two][1::2]) and s.info.classes == ("a", "b")
    assert len(list(cache_dir.glob("tally-toy-*"))) == 1
    sources_base._memo.cache_clear()
    assert torch.equal(load_splits(cfg).train_x, s.train_x) and _Tally.reads == 1  # the second load is the .npy
    with pytest.raises(ConfigError, match=r"^data\.name: dataset not found") as err:
        resolve(DataConfig(name="nope", root=str(tmp_path)))
    assert " for tally.pt; Parquet files (" in str(err.value)  # auto's order: tally (5) before parquet (10)


def test_cifar_download_then_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from raypair.data.sources.cifar import Cifar

    x, y = digit_images(3)
    order = torch.arange(30).view(10, 3).t().reshape(-1)  # classes 0..9 three times: train sees every class
    x, y = x[order], y[order]
    x = torch.nn.functional.interpolate(x.float(), size=(32, 32)).round().to(torch.uint8)
    flat = x.reshape(len(x), -1).numpy()

    def fake_download(self: Cifar, loc: Located, cfg: DataConfig) -> None:  # what torchvision writes
        folder = loc.path / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for i in range(5):
            rows = slice(4 * i, 4 * (i + 1))
            _pickle(folder / f"data_batch_{i + 1}", {b"data": flat[rows], b"labels": y[rows].tolist()})
        _pickle(folder / "test_batch", {b"data": flat[20:], b"labels": y[20:].tolist()})

    monkeypatch.setattr(Cifar, "download", fake_download)
    cfg = DataConfig(name="cifar10", root=str(tmp_path), download=True)
    assert resolve(cfg) == Located("cifar", tmp_path / "cifar10", download=True)
    s = load_splits(cfg)
    assert torch.equal(s.train_x, x[:20]) and torch.equal(s.val_x, x[20:]) and torch.equal(s.val_y, y[20:])
    assert resolve(cfg).kind == "cifar" and not resolve(cfg).download


# ------------------------------------------------------------------------------ the loader
def ids_loader(n: int, **kw) -> DeviceLoader:
    """Labels are the sample ids, so a batch's y says exactly which samples it holds."""
    x = torch.randint(0, 256, (n, 3, 8, 8), generator=torch.Generator().manual_seed(n), dtype=torch.uint8)
    return DeviceLoader(x, torch.arange(n), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), **kw)


def test_shard_indices() -> None:
    assert [shard_indices(12, r, 3) for r in range(3)] == [slice(0, 4), slice(4, 8), slice(8, 12)]
    with pytest.raises(ValueError, match="global batch 10 must divide evenly across world_size=3"):
        shard_indices(10, 0, 3)
    with pytest.raises(ValueError, match="rank"):
        shard_indices(12, 3, 3)


def test_train_epoch_and_shards() -> None:
    one = ids_loader(100, batch_size=16, train=True, seed=1)
    assert len(one) == 6
    steps = [y for _, y in one.epoch(0)]
    ids = torch.cat(steps)
    assert len(ids) == 96 and len(ids.unique()) == 96
    ranks = [ids_loader(100, batch_size=16, train=True, seed=1, rank=r, world_size=2) for r in range(2)]
    per_rank = [[y for _, y in ld.epoch(0)] for ld in ranks]
    assert all(len(ld) == 6 for ld in ranks)
    for s, glob in enumerate(steps):
        a, b = per_rank[0][s], per_rank[1][s]
        assert len(a) == len(b) == 8 and not set(a.tolist()) & set(b.tolist())
        assert torch.equal(torch.cat([a, b]), glob)
    again = torch.cat([y for _, y in one.epoch(0)])
    assert torch.equal(again, ids) and not torch.equal(torch.cat([y for _, y in one.epoch(1)]), ids)
    with pytest.raises(ValueError, match="global batch 15 must divide evenly across world_size=2"):
        ids_loader(100, batch_size=15, train=True, world_size=2)


def test_train_smaller_than_one_batch() -> None:
    ranks = [ids_loader(10, batch_size=16, train=True, rank=r, world_size=4) for r in range(4)]
    out = [[y for _, y in ld.epoch(3)] for ld in ranks]
    assert all(len(ld) == 1 and len(o) == 1 and len(o[0]) == 2 for ld, o in zip(ranks, out))
    assert len(torch.cat([o[0] for o in out]).unique()) == 8


def test_eval_shards_cover_the_split_once() -> None:
    ranks = [ids_loader(103, batch_size=16, train=False, rank=r, world_size=3) for r in range(3)]
    got = torch.cat([y for ld in ranks for _, y in ld.epoch(0)])
    assert torch.equal(got, torch.arange(103))
    assert [len(ld) for ld in ranks] == [3, 3, 3]
    assert max(len(y) for ld in ranks for _, y in ld.epoch(0)) == 16


def test_normalisation_formula_and_channels_last() -> None:
    ld = ids_loader(20, batch_size=8, train=False, channels_last=True)
    x, y = next(ld.epoch(0))
    raw = ld.x[y].float()
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    assert torch.allclose(x, (raw / 255 - mean) / std, atol=1e-6)
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)


def _windows(padded: torch.Tensor, h: int, w: int) -> list[tuple[int, int, bool]]:
    """Every (oy, ox, flip) whose window of ``padded`` [C, H+2p, W+2p] a candidate may equal."""
    return [(oy, ox, f) for oy in range(padded.shape[1] - h + 1) for ox in range(padded.shape[2] - w + 1)
            for f in (False, True)]


def _match(out: torch.Tensor, padded: torch.Tensor) -> list[tuple[int, int, bool]]:
    h, w = out.shape[-2:]
    hits = []
    for oy, ox, f in _windows(padded, h, w):
        win = padded[:, oy:oy + h, ox:ox + w]
        if torch.equal(out, win.flip(-1) if f else win):
            hits.append((oy, ox, f))
    return hits


def test_loader_augment_is_a_shifted_window_of_the_zero_padded_image() -> None:
    n = 64
    x = torch.randint(1, 256, (n, 3, 8, 8), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
    ld = DeviceLoader(x, torch.arange(n), batch_size=32, mean=(0, 0, 0), std=(1, 1, 1), train=True, augment=True,
                      pad=4, seed=9)
    batches = list(ld.epoch(2))
    seen = set()
    for xb, yb in batches:
        pix = (xb * 255).round().to(torch.uint8)
        for i in range(len(yb)):
            padded = torch.nn.functional.pad(x[yb[i]], (4, 4, 4, 4))
            hits = _match(pix[i], padded)
            assert len(hits) == 1
            seen.add(hits[0])
    assert {f for _, _, f in seen} == {False, True} and len({(oy, ox) for oy, ox, _ in seen}) > 20
    again = list(ld.epoch(2))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    other = list(ld.epoch(3))
    assert not torch.equal(torch.cat([y for _, y in other]), torch.cat([y for _, y in batches]))


# ------------------------------------------------------------------------------ pad_crop_flip
def test_pad_crop_flip_exact_properties() -> None:
    b, c, h, w, pad = 200, 2, 5, 6, 3
    x = torch.arange(1, b * c * h * w + 1, dtype=torch.int32).reshape(b, c, h, w)  # all distinct, none 0
    out = pad_crop_flip(x, pad, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    hits = [_match(out[i], padded[i]) for i in range(b)]
    assert all(len(hit) == 1 for hit in hits)
    offsets = {(oy, ox) for ((oy, ox, _),) in hits}
    assert {oy for oy, _ in offsets} == set(range(2 * pad + 1)) == {ox for _, ox in offsets}
    flips = sum(f for ((_, _, f),) in hits)
    assert 70 < flips < 130
    assert torch.equal(out, pad_crop_flip(x, pad, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, pad_crop_flip(x, pad, torch.Generator().manual_seed(1)))


def test_pad_crop_flip_without_padding_only_flips_and_fills_per_channel() -> None:
    x = torch.rand(50, 3, 4, 4, generator=torch.Generator().manual_seed(0)) + 1
    out = pad_crop_flip(x, 0, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)])
    same = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert bool((flipped ^ same).all()) and 0 < int(flipped.sum()) < 50
    fill = torch.tensor([-1.0, -2.0, -3.0])
    filled = pad_crop_flip(x, 4, torch.Generator().manual_seed(0), fill=fill)
    for ch in range(3):
        vals = filled[:, ch][filled[:, ch] < 0].unique()
        assert torch.equal(vals, fill[ch:ch + 1]), (ch, vals)  # every channel shows its own fill, only it


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_loader_on_cuda_matches_cpu_without_augmentation() -> None:
    kw = dict(batch_size=16, train=True, seed=2, channels_last=True)
    cpu, gpu = ids_loader(64, **kw), ids_loader(64, device="cuda", **kw)
    for (xc, yc), (xg, yg) in zip(cpu.epoch(1), gpu.epoch(1)):
        assert torch.equal(yc, yg.cpu()) and torch.allclose(xc, xg.cpu(), atol=1e-6)
    aug = ids_loader(64, device="cuda", augment=True, **kw)
    xb, yb = next(aug.epoch(0))
    assert xb.is_cuda and xb.shape == (16, 3, 8, 8)


def _mapped_file(t: torch.Tensor) -> Optional[str]:
    """The file whose mapping holds ``t``'s bytes in this process (``/proc/self/maps``), or None."""
    ptr = t.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        lo, hi = (int(v, 16) for v in parts[0].split("-"))
        if lo <= ptr < hi:
            return parts[5] if len(parts) == 6 else None
    return None


def test_splits_are_one_mapped_copy_per_host(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gathered splits are written once into the decode cache and mapped by every load: trials
    on one host read the same pages (a private gather per trial before), with the same pixels."""
    import threading

    monkeypatch.setitem(SOURCES._items, "tally", _Tally)
    monkeypatch.setattr(sources_base, "SHARE_MIN_BYTES", 0)  # the toy split is small
    x, y = digit_images(20)
    (tmp_path / "toy").mkdir()
    torch.save([x[::2], y[::2], x[1::2], y[1::2]], tmp_path / "toy" / "tally.pt")
    cfg = DataConfig(name="toy", root=str(tmp_path), val_fraction=0.25, test_subset=20)
    writes = []
    real_write = sources_base._atomic_write

    def slow_write(path: Path, w) -> None:  # a slow disk: the four loads overlap while one writes
        writes.append(path)
        if path.parent.name.startswith("split-"):
            time.sleep(0.2)
        real_write(path, w)

    monkeypatch.setattr(sources_base, "_atomic_write", slow_write)
    got: list = []
    threads = [threading.Thread(target=lambda: got.append(load_splits(cfg))) for _ in range(4)]  # four trials at once
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4
    assert sorted(p.name for p in writes if p.parent.name.startswith("split-")) == \
        ["done", "test_x.npy", "train_x.npy", "val_x.npy"], writes  # written once, by one of the four
    (entry,) = [p for p in cache_dir.glob("tally-toy-*")  # this test's entry in the session's cache
                if json.loads((p / "meta.json").read_text())["source"] == str(tmp_path / "toy")]
    (split,) = entry.glob("split-*")
    for s in got:
        for name in ("train_x", "val_x", "test_x"):
            assert _mapped_file(getattr(s, name)) == str(split / f"{name}.npy")
    monkeypatch.setattr(sources_base, "SHARE_MIN_BYTES", 2**62)  # the private gather, as before
    private = load_splits(cfg)
    assert _mapped_file(private.train_x) != str(split / "train_x.npy")
    for s in got:
        for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
            assert torch.equal(getattr(s, name), getattr(private, name)), name
    assert s.info == private.info
    whole = load_splits(cfg.model_copy(update={"val_fraction": 0.0, "test_subset": None}))
    assert _mapped_file(whole.train_x) == str(entry / "train_x.npy")  # a whole split maps the decode cache itself
