"""Finding and decoding image datasets into uint8 tensors, with an on-disk ``.npy`` cache.

Sources (``data.source``; "auto" takes the first that serves ``data.name``):

- ``sklearn``: "digits" from scikit-learn (offline); 8x8 grey -> ``image_size`` (16) RGB.
- ``parquet``: the Hugging Face image layout under ``<root>/<name>/``.
- ``cifar``: torchvision's pickled CIFAR-10/100 batches under ``<root>/<name>/``.
- ``imagefolder``: ``<root>/<name>/{train, test or val}/<class>/*.{jpg,jpeg,png}``.

``data.image_size`` resizes every source (shorter side, then a centre crop); without it images
keep their size, which must then be the same for all. Decoded splits are cached as ``.npy``
files keyed by the source files' paths, sizes and mtimes, so the trials of a sweep decode once.
"""
from __future__ import annotations

import functools
import json
import os
import pickle
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from raypair.config import ConfigError, DataConfig
from raypair.ops.sampling import holdout_mask, seeded_generator

CIFAR_NAMES = ("cifar10", "cifar100")
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)  # the spec's values, for CIFAR-10 and -100
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
DIGITS_TEST_SEED = 1797  # fixed, not split_seed: the digits test split never changes
_CACHE_VERSION = 1
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
_CIFAR_LAYOUTS = {  # folder -> (train files, test files, meta file)
    "cifar-10-batches-py": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta"),
    "cifar-100-python": (["train"], ["test"], "meta"),
}
_LOOKED_FOR = {
    "parquet": "Parquet files (train.parquet + test.parquet, or data/ or plain_text/ train-*.parquet + test-*.parquet)",
    "cifar": "torchvision CIFAR batches (cifar-10-batches-py/ or cifar-100-python/)",
    "imagefolder": "an ImageFolder (train/<class>/*.jpg|png and test/ or val/)",
}


@dataclass(frozen=True)
class Source:
    """Where a dataset lives, found by :func:`resolve` without decoding anything."""

    kind: str  # sklearn | parquet | cifar | imagefolder
    path: Optional[Path] = None  # the folder holding the files
    train: tuple[Path, ...] = ()  # files (parquet, cifar) or the split folder (imagefolder)
    test: tuple[Path, ...] = ()
    download: bool = False  # cifar: fetch with torchvision before reading


@dataclass
class _Raw:
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: tuple[str, ...]


# ---------------------------------------------------------------------------------- finding
def data_root(cfg: DataConfig) -> Path:
    """``data.root``, else ``$RAYPAIR_DATA``, else ``./data``; absolute."""
    return Path(cfg.root or os.environ.get("RAYPAIR_DATA") or "data").expanduser().resolve()


def _split_files(folder: Path, splits: Sequence[str]) -> tuple[Path, ...]:
    for s in splits:
        files = sorted({*folder.glob(f"{s}.parquet"), *folder.glob(f"{s}-*.parquet")})
        if files:
            return tuple(files)
    return ()


def _find_parquet(d: Path) -> Optional[Source]:
    for folder in (d, d / "data", d / "plain_text"):
        train, test = _split_files(folder, ["train"]), _split_files(folder, ["test", "validation"])
        if train and test:
            return Source("parquet", d, train, test)
    return None


def _find_cifar(d: Path) -> Optional[Source]:
    for sub, (train, test, _) in _CIFAR_LAYOUTS.items():
        if all((d / sub / f).is_file() for f in train + test):
            return Source("cifar", d / sub, tuple(d / sub / f for f in train), tuple(d / sub / f for f in test))
    return None


def _find_imagefolder(d: Path) -> Optional[Source]:
    test = next((d / s for s in ("test", "val") if (d / s).is_dir()), None)
    if (d / "train").is_dir() and test is not None:
        return Source("imagefolder", d, (d / "train",), (test,))
    return None


_FINDERS: dict[str, Callable[[Path], Optional[Source]]] = {
    "parquet": _find_parquet, "cifar": _find_cifar, "imagefolder": _find_imagefolder}


def resolve(cfg: DataConfig) -> Source:
    """Which source serves ``cfg.name``; cheap (no decoding). ConfigError("data.name") if none."""
    if cfg.source == "sklearn" or (cfg.source == "auto" and cfg.name == "digits"):
        if cfg.name != "digits":
            raise ConfigError("data.name", "source 'sklearn' serves only 'digits'", cfg.name)
        return Source("sklearn")
    is_cifar = cfg.name in CIFAR_NAMES
    kinds = [cfg.source] if cfg.source != "auto" else ["parquet", "cifar" if is_cifar else "imagefolder"]
    root = data_root(cfg)
    d = root / cfg.name
    for kind in kinds:
        if kind in _FINDERS and (src := _FINDERS[kind](d)) is not None:
            return src
    if cfg.download and is_cifar and "cifar" in kinds:
        return Source("cifar", d, download=True)
    origin = "data.root" if cfg.root else "$RAYPAIR_DATA" if os.environ.get("RAYPAIR_DATA") else "default ./data"
    fix = f"set RAYPAIR_DATA=DIR where DIR contains {cfg.name}/, or set data.root=DIR"
    if is_cifar:
        fix += ", or data.download=true to fetch it with torchvision (needs internet)"
    looked = "; ".join(_LOOKED_FOR[k] for k in kinds)
    raise ConfigError("data.name", f"dataset not found: looked in {d} (data root {root}, from {origin}) "
                                   f"for {looked}. To fix: {fix}", cfg.name)


# ---------------------------------------------------------------------------------- reading
def _fit(img: Tensor, size: Optional[int]) -> Tensor:
    """[..., C, h, w] -> [..., C, size, size]: shorter side to ``size``, then a centre crop."""
    if size is None or tuple(img.shape[-2:]) == (size, size):
        return img
    from torchvision.transforms.v2 import functional as TF

    return TF.center_crop(TF.resize(img, [size], antialias=True), [size, size])


def _decode_chunk(items: list[Union[Tensor, Path]], size: Optional[int]) -> list[Tensor]:
    from torchvision.io import ImageReadMode, decode_image, read_file

    return [_fit(decode_image(read_file(str(it)) if isinstance(it, Path) else it, mode=ImageReadMode.RGB), size)
            for it in items]


def _decode(items: list[Union[Tensor, Path]], size: Optional[int], where: str) -> Tensor:
    """Encoded JPEG/PNG bytes (or files) -> uint8 [N, 3, H, W], decoded by a few threads."""
    if not items:
        raise ConfigError("data.name", f"no images in {where}")
    chunks = [items[i:i + 1024] for i in range(0, len(items), 1024)]
    with warnings.catch_warnings(), ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        # torchvision 0.29 warns on every single decode that TorchCodec supersedes it
        warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
        imgs = [im for part in pool.map(functools.partial(_decode_chunk, size=size), chunks) for im in part]
    shapes = sorted({tuple(im.shape) for im in imgs})
    if len(shapes) > 1:
        raise ConfigError("data.image_size", f"images in {where} differ in size ({shapes[0][1:]} and "
                                             f"{shapes[-1][1:]}); set data.image_size to resize them", None)
    return torch.stack(imgs)


def _blobs(arr: Any) -> list[Tensor]:
    """Views of each value of an Arrow binary array, over one writable copy of its data buffer."""
    width = np.int64 if str(arr.type).startswith("large") else np.int32
    offs = np.frombuffer(arr.buffers()[1], width)[arr.offset:arr.offset + len(arr) + 1].tolist()
    data = torch.from_numpy(np.frombuffer(arr.buffers()[2], np.uint8).copy())
    return [data[a:b] for a, b in zip(offs[:-1], offs[1:])]


def _parquet_split(files: tuple[Path, ...], size: Optional[int]) -> tuple[Tensor, Tensor, list[str]]:
    """Images, labels and class names (empty if unknown) of one split's Parquet files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(files[0])
    img = next((f.name for f in schema if pa.types.is_struct(f.type) and f.type.get_field_index("bytes") >= 0), None)
    lab = next((n for n in ("label", "fine_label", "labels") if n in schema.names), None)
    if img is None or lab is None:
        raise ConfigError("data.name", f"{files[0]} needs an image column (a struct with 'bytes') and a label "
                                       f"column (label, fine_label or labels); it has {schema.names}")
    blobs, labels, paths = [], [], []
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=8192, columns=[img, lab]):
            col = batch.column(img)
            blobs += _blobs(col.field("bytes"))
            labels.append(batch.column(lab).to_numpy(zero_copy_only=False).astype(np.int64))
            if col.type.get_field_index("path") >= 0:
                paths.append(col.field("path"))
    y = torch.from_numpy(np.concatenate(labels))
    meta = json.loads((schema.metadata or {}).get(b"huggingface", b"{}"))
    names = meta.get("info", meta).get("features", {}).get(lab, {}).get("names") or []
    if not names and paths:  # HF ImageFolder exports keep "<class>/<file>" in the path field
        first = np.unique(y.numpy(), return_index=True)[1]
        folders = [str(p).rsplit("/", 2) for p in pa.concat_arrays(paths).take(first).to_pylist()]
        names = [f[-2] if len(f) > 1 else "" for f in folders]
        names = names if all(names) and len(names) == int(y.max()) + 1 else []
    return _decode(blobs, size, str(files[0].parent)), y, names


def _read_parquet(src: Source, size: Optional[int]) -> _Raw:
    (trx, try_, names), (tex, tey, _) = _parquet_split(src.train, size), _parquet_split(src.test, size)
    return _Raw(trx, try_, tex, tey, tuple(names))


def _read_cifar(src: Source, size: Optional[int]) -> _Raw:
    def load(files: tuple[Path, ...]) -> tuple[Tensor, Tensor]:
        xs, ys = [], []
        for f in files:
            with open(f, "rb") as fh:
                d = pickle.load(fh, encoding="bytes")
            xs.append(np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[b"fine_labels"] if b"fine_labels" in d else d[b"labels"], np.int64))
        x = torch.from_numpy(np.concatenate(xs))
        return torch.cat([_fit(c, size) for c in x.split(4096)]), torch.from_numpy(np.concatenate(ys))

    meta, names = src.path / _CIFAR_LAYOUTS[src.path.name][2], []
    if meta.is_file():
        with open(meta, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
        names = [n.decode() for n in d.get(b"fine_label_names", d.get(b"label_names", []))]
    return _Raw(*load(src.train), *load(src.test), tuple(names))


def _image_files(split: Path, classes: Sequence[str]) -> tuple[list[Path], Tensor]:
    files, labels = [], []
    for k, c in enumerate(classes):
        found = sorted(p for p in (split / c).glob("*") if p.suffix.lower() in _IMAGE_SUFFIXES) \
            if (split / c).is_dir() else []
        files += found
        labels += [k] * len(found)
    return files, torch.tensor(labels, dtype=torch.int64)


def _read_imagefolder(src: Source, size: Optional[int]) -> _Raw:
    classes = sorted(p.name for p in src.train[0].iterdir() if p.is_dir())
    extra = sorted({p.name for p in src.test[0].iterdir() if p.is_dir()} - set(classes))
    if extra:
        raise ConfigError("data.name", f"{src.test[0]} has classes that {src.train[0]} lacks: {extra}")
    (trf, try_), (tef, tey) = _image_files(src.train[0], classes), _image_files(src.test[0], classes)
    return _Raw(_decode(trf, size, str(src.train[0])), try_, _decode(tef, size, str(src.test[0])), tey,
                tuple(classes))


_READERS = {"parquet": _read_parquet, "cifar": _read_cifar, "imagefolder": _read_imagefolder}


@functools.lru_cache(maxsize=4)
def _digits(size: int) -> _Raw:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images).float()[:, None].mul(255 / 16)  # [N, 1, 8, 8], 0..16 -> 0..255
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                        antialias=size < 8)
    x = x.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(d.target).long()
    test = holdout_mask(y, 0.2, seeded_generator(DIGITS_TEST_SEED))
    return _Raw(x[~test], y[~test], x[test], y[test], tuple(str(k) for k in range(10)))


# ---------------------------------------------------------------------------------- caching
def cache_dir(cfg: DataConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get("RAYPAIR_CACHE") or "~/.cache/raypair").expanduser().resolve()


def _cache_key(src: Source, size: Optional[int]) -> str:
    import hashlib

    if src.kind == "imagefolder":
        files = sorted(p for s in src.train + src.test for p in s.rglob("*") if p.is_file())
    else:
        files = sorted(p for p in src.path.iterdir() if p.is_file()) if src.kind == "cifar" else [*src.train, *src.test]
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    digest = hashlib.sha256(json.dumps([_CACHE_VERSION, src.kind, str(src.path), size, stats]).encode())
    return f"{src.kind}-{src.path.name}-{digest.hexdigest()[:20]}"


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, path)  # concurrent trials write equal bytes; a reader sees all or nothing
    finally:
        tmp.unlink(missing_ok=True)


_ARRAYS = ("train_x", "train_y", "test_x", "test_y")


@functools.lru_cache(maxsize=2)
def _memo(key: str, src: Source, size: Optional[int], cache_dir: Path) -> _Raw:
    folder = cache_dir / key
    if (folder / "meta.json").is_file():
        # copy-on-write maps: no read until load_splits gathers its indices (one pass, ~0.1 s for CIFAR)
        arrays = {n: torch.from_numpy(np.load(folder / f"{n}.npy", mmap_mode="c", allow_pickle=False))
                  for n in _ARRAYS}
        return _Raw(**arrays, classes=tuple(json.loads((folder / "meta.json").read_text())["classes"]))
    raw = _READERS[src.kind](src, size)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for n in _ARRAYS:
            _atomic_write(folder / f"{n}.npy", lambda fh, n=n: np.save(fh, getattr(raw, n).numpy()))
        meta = json.dumps({"classes": raw.classes, "source": str(src.path)}).encode()
        _atomic_write(folder / "meta.json", lambda fh: fh.write(meta))  # last: marks the entry complete
    except OSError as e:
        warnings.warn(f"raypair: could not write the data cache in {folder}: {e}", stacklevel=2)
    return raw


def _load_raw(cfg: DataConfig, src: Source) -> _Raw:
    if src.kind == "sklearn":
        return _digits(cfg.image_size or 16)
    if src.download:
        import torchvision.datasets as tvd

        try:
            (tvd.CIFAR10 if cfg.name == "cifar10" else tvd.CIFAR100)(root=str(src.path), download=True)
        except Exception as e:  # noqa: BLE001 - any network or archive failure reads the same to the user
            raise ConfigError("data.download", f"could not download {cfg.name} into {src.path}: {e}", True) from None
        src = resolve(cfg)
    raw = _memo(_cache_key(src, cfg.image_size), src, cfg.image_size, cache_dir(cfg))
    if raw.train_y.min() < 0 or raw.test_y.min() < 0:
        raise ConfigError("data.name", f"labels in {src.path} must be 0..K-1, found a negative one")
    k = max(len(raw.classes), int(raw.train_y.max()) + 1, int(raw.test_y.max()) + 1)
    if len(raw.classes) != k:
        raw = _Raw(raw.train_x, raw.train_y, raw.test_x, raw.test_y, tuple(str(i) for i in range(k)))
    return raw

