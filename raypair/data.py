"""Image datasets as uint8 tensors, and a loader that keeps a whole split on the device.

Sources (``data.source``; "auto" takes the first that serves ``data.name``):

- ``sklearn``: "digits" from scikit-learn (offline); 8x8 grey -> ``image_size`` (16) RGB.
- ``parquet``: the Hugging Face image layout under ``<root>/<name>/``.
- ``cifar``: torchvision's pickled CIFAR-10/100 batches under ``<root>/<name>/``.
- ``imagefolder``: ``<root>/<name>/{train, test or val}/<class>/*.{jpg,jpeg,png}``.

``data.image_size`` resizes every source (shorter side, then a centre crop); without it images
keep their size, which must then be the same for all. Decoded splits are cached as ``.npy``
files keyed by the source files' paths, sizes and mtimes, so the trials of a sweep decode once.
Hold-outs and subsets are class-stratified tensor ops seeded by ``data.split_seed``.
Loader anchor: airbench ``CifarLoader``.
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
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from raypair.config import ConfigError, DataConfig
from raypair.ops.augment import pad_crop_flip

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
class DataInfo:
    name: str
    num_classes: int
    image_shape: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]  # per channel, in [0, 1] pixel units
    std: tuple[float, ...]
    classes: tuple[str, ...]
    eval_split: str  # "val" if val_fraction > 0 else "test"


@dataclass
class Splits:
    """uint8 ``[N, C, H, W]`` images and int64 ``[N]`` labels on the CPU."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor  # held out of train if val_fraction > 0, else the test split
    val_y: Tensor
    test_x: Optional[Tensor]  # the test split when val_fraction > 0, else None
    test_y: Optional[Tensor]
    info: DataInfo


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
    test = _holdout(y, 0.2, _generator(DIGITS_TEST_SEED))
    return _Raw(x[~test], y[~test], x[test], y[test], tuple(str(k) for k in range(10)))


# ---------------------------------------------------------------------------------- caching
def _cache_dir(cfg: DataConfig) -> Path:
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
    raw = _memo(_cache_key(src, cfg.image_size), src, cfg.image_size, _cache_dir(cfg))
    if raw.train_y.min() < 0 or raw.test_y.min() < 0:
        raise ConfigError("data.name", f"labels in {src.path} must be 0..K-1, found a negative one")
    k = max(len(raw.classes), int(raw.train_y.max()) + 1, int(raw.test_y.max()) + 1)
    if len(raw.classes) != k:
        raw = _Raw(raw.train_x, raw.train_y, raw.test_x, raw.test_y, tuple(str(i) for i in range(k)))
    return raw


# ---------------------------------------------------------------------------------- splits
def _generator(*seeds: int, device: Union[torch.device, str] = "cpu") -> torch.Generator:
    """A generator seeded by a tuple of ints (mixed, so (s, e) and (s + 1, e - 1) differ)."""
    state = np.random.SeedSequence([s & 0xFFFFFFFFFFFFFFFF for s in seeds]).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & 0x7FFFFFFFFFFFFFFF)


def _class_rank(y: Tensor, perm: Tensor) -> Tensor:
    """[N] -> [N]: rank[j] = how many samples of class y[perm[j]] come before position j in perm."""
    yp = y[perm]
    order = torch.sort(yp, stable=True).indices
    counts = torch.bincount(yp)
    starts = counts.cumsum(0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(yp)) - starts[yp[order]]
    return rank


def _holdout(y: Tensor, fraction: float, gen: torch.Generator) -> Tensor:
    """[N] labels -> bool [N] mask of round(fraction * n_c) (at least 1) random samples per class c."""
    perm = torch.randperm(len(y), generator=gen)
    counts = torch.bincount(y)
    take = (counts.double() * fraction + 0.5).floor().long().clamp(min=1).minimum(counts)
    if ((take == counts) & (counts > 0)).any():
        c = int(((take == counts) & (counts > 0)).nonzero()[0])
        raise ConfigError("data.val_fraction", f"leaves class {c} ({int(counts[c])} images) no training image",
                          fraction)
    mask = torch.zeros(len(y), dtype=torch.bool)
    mask[perm] = _class_rank(y, perm) < take[y[perm]]
    return mask


def _balanced(y: Tensor, n: int, gen: torch.Generator, field: str, what: str) -> Tensor:
    """Sorted indices of ``n`` samples whose class counts differ by at most 1 (where classes allow)."""
    if n > len(y):
        raise ConfigError(field, f"larger than the {len(y)} {what} available", n)
    perm = torch.randperm(len(y), generator=gen)
    return perm[torch.sort(_class_rank(y, perm), stable=True).indices[:n]].sort().values


def _normalization(cfg: DataConfig, x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mode = cfg.normalize if cfg.normalize != "auto" else "cifar" if cfg.name in CIFAR_NAMES else "computed"
    if mode == "cifar":
        return CIFAR_MEAN, CIFAR_STD
    if mode == "imagenet":
        from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        return tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)
    # exact per-channel moments from 256-bin histograms: no float copy of the whole split
    hist = torch.stack([torch.bincount(x[:, c].reshape(-1), minlength=256) for c in range(x.shape[1])]).double()
    v = torch.arange(256, dtype=torch.float64) / 255
    n = hist.sum(1)
    mean = hist @ v / n
    std = (hist @ (v * v) / n - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist())


def load_splits(cfg: DataConfig) -> Splits:
    """Decode (through the cache), hold out val, take the subsets, compute the normalisation."""
    raw = _load_raw(cfg, resolve(cfg))
    tr = torch.arange(len(raw.train_y))
    te = torch.arange(len(raw.test_y))
    if cfg.val_fraction > 0:
        held = _holdout(raw.train_y, cfg.val_fraction, _generator(cfg.split_seed, 0))
        tr, va = (~held).nonzero()[:, 0], held.nonzero()[:, 0]
        eval_src = (raw.train_x, raw.train_y)
    else:
        va, te, eval_src = te, None, (raw.test_x, raw.test_y)
    if cfg.train_subset:
        tr = tr[_balanced(raw.train_y[tr], cfg.train_subset, _generator(cfg.split_seed, 1), "data.train_subset",
                          "training images left after the validation hold-out")]
    if cfg.test_subset:
        va = va[_balanced(eval_src[1][va], cfg.test_subset, _generator(cfg.split_seed, 2), "data.test_subset",
                          "evaluation images")]
        if te is not None:
            te = te[_balanced(raw.test_y[te], cfg.test_subset, _generator(cfg.split_seed, 3), "data.test_subset",
                              "test images")]
    train_x = raw.train_x.index_select(0, tr)  # always a copy: the memo's tensors stay private
    mean, std = _normalization(cfg, train_x)
    info = DataInfo(cfg.name, len(raw.classes), tuple(train_x.shape[1:]), mean, std, raw.classes,
                    "val" if cfg.val_fraction > 0 else "test")
    test = (None, None) if te is None else (raw.test_x.index_select(0, te), raw.test_y.index_select(0, te))
    return Splits(train_x, raw.train_y.index_select(0, tr), eval_src[0].index_select(0, va),
                  eval_src[1].index_select(0, va), *test, info)


# ---------------------------------------------------------------------------------- loading
def shard_indices(n_global_batch: int, rank: int, world_size: int) -> slice:
    """The contiguous part ``[rank * b, (rank + 1) * b)``, ``b = n / world_size``, of a global batch."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
    if n_global_batch % world_size:
        raise ValueError(f"global batch {n_global_batch} must divide evenly across world_size={world_size}")
    b = n_global_batch // world_size
    return slice(rank * b, (rank + 1) * b)


class DeviceLoader:
    """A whole split kept as uint8 on ``device``; batches are gathered, augmented and normalised there.

    train: each epoch permutes all N samples with a generator seeded by (seed, epoch), the same on
    every rank; global batch s is ``perm[s*B:(s+1)*B]`` (drop_last; one smaller batch of
    ``N // world_size * world_size`` samples if N < B), so it does not depend on world_size, and
    rank r takes ``shard_indices(B, r, world_size)`` of it. eval: rank r takes the samples
    ``[r*N//W, (r+1)*N//W)`` in order, in batches of at most ``batch_size`` (per rank); the ranks'
    parts cover the split exactly once, and may differ by one batch in count.
    Batches: x float32 ``[b, C, H, W]`` = ``(x / 255 - mean) / std``, y int64 ``[b]``.
    """

    def __init__(self, x: Tensor, y: Tensor, *, batch_size: int, mean: Sequence[float], std: Sequence[float],
                 device: Union[torch.device, str] = "cpu", train: bool, augment: bool = False, pad: int = 4,
                 seed: int = 0, rank: int = 0, world_size: int = 1, channels_last: bool = False) -> None:
        if x.dtype != torch.uint8 or x.dim() != 4 or y.shape != x.shape[:1]:
            raise ValueError(f"need x uint8 [N, C, H, W] and y [N], got x {x.dtype} {tuple(x.shape)}, "
                             f"y {tuple(y.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(x)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        if train:
            shard_indices(batch_size, rank, world_size)  # the global batch must split evenly
        if train and n < world_size:
            raise ValueError(f"{n} training samples cannot feed world_size={world_size} ranks")
        self.device = torch.device(device)
        self.x, self.y = x.to(self.device), y.to(self.device, torch.int64)
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1).to(self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1).to(self.device)
        if self.mean.shape[1] != x.shape[1] or self.std.shape[1] != x.shape[1]:
            raise ValueError(f"mean and std need {x.shape[1]} channels, got {tuple(mean)} and {tuple(std)}")
        self.batch_size, self.train, self.augment, self.pad, self.seed = batch_size, train, augment, pad, seed
        self.rank, self.world_size, self.channels_last = rank, world_size, channels_last
        self._global = batch_size if n >= batch_size else n // world_size * world_size
        self._part = (rank * n // world_size, (rank + 1) * n // world_size)

    def __len__(self) -> int:
        if self.train:
            return max(1, len(self.x) // self._global)
        return -(-(self._part[1] - self._part[0]) // self.batch_size)

    def _batches(self, epoch: int) -> Iterator[Union[Tensor, slice]]:
        if not self.train:
            lo, hi = self._part
            yield from (slice(a, min(a + self.batch_size, hi)) for a in range(lo, hi, self.batch_size))
            return
        perm = torch.randperm(len(self.x), generator=_generator(self.seed, epoch)).to(self.device)
        g, mine = self._global, shard_indices(self._global, self.rank, self.world_size)
        yield from (perm[s * g:(s + 1) * g][mine] for s in range(len(self)))

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """This rank's batches of epoch ``epoch``: (x float32 [b, C, H, W], y int64 [b]) on the device."""
        gen = _generator(self.seed, epoch, self.rank, device=self.device) if self.augment else None
        for idx in self._batches(epoch):
            x = self.x[idx]
            if gen is not None:
                x = pad_crop_flip(x, self.pad, gen)
            x = (x.float() / 255 - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.y[idx]
