"""The data-source plug-in contract, its registry, :func:`resolve` and the decode cache.

A :class:`Source` is one way a dataset can lie on disk. It says how to find the dataset's files
under ``<root>/<data.name>/`` (cheaply, decoding nothing), how to read them into uint8 tensors,
and which files key its on-disk cache. Each lives in its own module of this package and registers
itself with ``@register``; the package imports every module beside this one, so adding a source
means adding one file, and ``data.source`` accepts its name.

``data.source: auto`` tries the registered sources by ascending ``order``. A source that lists
``datasets`` is tried only for those names, and is the last one tried for them (the digits are
never looked for on disk; CIFAR is looked for as Parquet, then as torchvision batches).

Decoded splits are cached as ``.npy`` files under ``cache_dir`` keyed by the source files' paths,
sizes and mtimes, so the trials of a sweep decode once.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import uuid
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

from raypair.config import ConfigError, DataConfig
from raypair.registry import Registry

if TYPE_CHECKING:
    from torch import Tensor

_CACHE_VERSION = 1
_ARRAYS = ("train_x", "train_y", "test_x", "test_y")
SHARE_MIN_BYTES = 4 * 2**20  # smaller splits are gathered privately: not worth a file in the cache


@dataclass(frozen=True)
class Located:
    """Where a dataset lives, found by :func:`resolve` without decoding anything."""

    kind: str  # the name of the source that found it
    path: Optional[Path] = None  # the folder holding the files
    train: tuple[Path, ...] = ()  # files (parquet, cifar) or the split folder (imagefolder)
    test: tuple[Path, ...] = ()
    download: bool = False  # fetch with Source.download before reading


@dataclass
class Raw:
    """Both splits as read: uint8 ``[N, C, H, W]`` images, int64 ``[N]`` labels, class names."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: tuple[str, ...]
    folder: Optional[Path] = None  # its decode-cache entry, where shared_rows keeps the splits


class Source(ABC):
    """One registered dataset layout. Subclass it in a new module of this package, set the class
    attributes, implement the three methods and decorate the class with ``@register``."""

    name: ClassVar[str]  # the data.source value
    order: ClassVar[int]  # data.source: auto tries sources by ascending order
    looks_for: ClassVar[str]  # what find looks for, as the not-found message says it
    datasets: ClassVar[tuple[str, ...]] = ()  # () serves any data.name; else auto tries it for these only, last

    @abstractmethod
    def find(self, folder: Path, cfg: DataConfig) -> Optional[Located]:
        """The dataset's files under ``folder`` (``<root>/<data.name>``), or None; decodes nothing."""

    @abstractmethod
    def read(self, loc: Located, size: Optional[int]) -> Raw:
        """Decode ``loc``; ``size`` (``data.image_size``) resizes every image to ``size x size``."""

    @abstractmethod
    def key_files(self, loc: Located) -> Optional[list[Path]]:
        """The files whose paths, sizes and mtimes key the decode cache; None: never cached on disk."""

    def download(self, loc: Located, cfg: DataConfig) -> None:
        """Fetch the files of a ``Located(download=True)`` that :meth:`find` returned."""
        raise ConfigError("data.download", f"source '{self.name}' cannot download", cfg.download)

    def fix_hint(self, cfg: DataConfig) -> str:
        """Text appended to the "To fix:" list of any not-found message for ``cfg.name`` (", or ...")."""
        return ""


SOURCES: Registry[type[Source]] = Registry("data source", group="raypair.sources")  # and the plug-ins


def register(cls: type[Source]) -> type[Source]:
    """Class decorator: registers ``cls`` under ``cls.name``."""
    return SOURCES.register(cls.name)(cls)


# ---------------------------------------------------------------------------------- finding
def _absolute(text: str, field: str) -> Path:
    try:
        return Path(text).expanduser().resolve()
    except (RuntimeError, OSError, ValueError) as e:  # ~nosuchuser, a NUL byte, a name too long
        raise ConfigError(field, f"not a usable path: {e}", text) from None


def data_root(cfg: DataConfig) -> Path:
    """``data.root``, else ``$RAYPAIR_DATA``, else ``./data``; absolute."""
    field = "data.root" if cfg.root else "$RAYPAIR_DATA"
    return _absolute(cfg.root or os.environ.get("RAYPAIR_DATA") or "data", field)


def cache_dir(cfg: DataConfig) -> Path:
    """``data.cache_dir``, else ``$RAYPAIR_CACHE``, else ``~/.cache/raypair``; absolute."""
    field = "data.cache_dir" if cfg.cache_dir else "$RAYPAIR_CACHE"
    return _absolute(cfg.cache_dir or os.environ.get("RAYPAIR_CACHE") or "~/.cache/raypair", field)


def _candidates(cfg: DataConfig) -> list[Source]:
    """The sources to try for ``cfg``, in order: the forced one, or auto's search."""
    if cfg.source != "auto":
        if cfg.source not in SOURCES.names():
            valid = ", ".join(["auto", *SOURCES.names()])
            raise ConfigError("data.source", f"unknown data source (valid: {valid})", cfg.source)
        return [SOURCES.get(cfg.source)()]
    tried: list[Source] = []
    for src in sorted((SOURCES.get(n)() for n in SOURCES.names()), key=lambda s: s.order):
        if src.datasets and cfg.name not in src.datasets:
            continue
        tried.append(src)
        if src.datasets:  # a source made for this dataset ends the search
            break
    return tried


def resolve(cfg: DataConfig) -> Located:
    """Which source serves ``cfg.name``; cheap (no decoding). ConfigError("data.name") if none."""
    tried = _candidates(cfg)
    root = data_root(cfg)
    folder = root / cfg.name
    for src in tried:
        try:
            loc = src.find(folder, cfg)
        except OSError as e:  # a name too long, a folder that cannot be listed
            field, value = ("data.root", cfg.root) if cfg.root else ("data.name", cfg.name)
            raise ConfigError(field, f"cannot look in {folder}: {e.strerror or e}", value) from None
        if loc is not None:
            return loc
    origin = "data.root" if cfg.root else "$RAYPAIR_DATA" if os.environ.get("RAYPAIR_DATA") else "default ./data"
    fix = f"set RAYPAIR_DATA=DIR where DIR contains {cfg.name}/, or set data.root=DIR"
    fix += "".join(SOURCES.get(n)().fix_hint(cfg) for n in SOURCES.names())  # even one not tried
    looked = "; ".join(src.looks_for for src in tried)
    raise ConfigError("data.name", f"dataset not found: looked in {folder} (data root {root}, from {origin}) "
                                   f"for {looked}. To fix: {fix}", cfg.name)


# ---------------------------------------------------------------------------------- caching
def _cache_key(loc: Located, files: list[Path], size: Optional[int]) -> str:
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    digest = hashlib.sha256(json.dumps([_CACHE_VERSION, loc.kind, str(loc.path), size, stats]).encode())
    return f"{loc.kind}-{loc.path.name}-{digest.hexdigest()[:20]}"


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, path)  # concurrent trials write equal bytes; a reader sees all or nothing
    finally:
        tmp.unlink(missing_ok=True)


def _open(folder: Path) -> Optional[Raw]:
    """A complete cache entry as copy-on-write maps (no read until load_splits gathers its indices:
    one pass, ~0.1 s for CIFAR; pages shared by every process on the host), or None."""
    if not (folder / "meta.json").is_file():
        return None
    try:
        arrays = {n: _mapped(folder / f"{n}.npy") for n in _ARRAYS}
        return Raw(**arrays, classes=tuple(json.loads((folder / "meta.json").read_text())["classes"]), folder=folder)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a damaged cache entry: decode again and replace it


@functools.lru_cache(maxsize=2)
def _memo(key: str, loc: Located, size: Optional[int], cache_root: Path) -> Raw:
    import numpy as np

    folder = cache_root / key
    raw = _open(folder)
    if raw is not None:
        return raw
    raw = SOURCES.get(loc.kind)().read(loc, size)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for n in _ARRAYS:
            _atomic_write(folder / f"{n}.npy", lambda fh, n=n: np.save(fh, getattr(raw, n).numpy()))
        meta = json.dumps({"classes": raw.classes, "source": str(loc.path)}).encode()
        _atomic_write(folder / "meta.json", lambda fh: fh.write(meta))  # last: marks the entry complete
    except OSError as e:
        warnings.warn(f"raypair: could not write the data cache in {folder}: {e}", stacklevel=2)
        return raw
    return _open(folder) or raw  # the maps just written (shared), not this process's decoded copy


def load_raw(cfg: DataConfig, loc: Located) -> Raw:
    """Both splits of ``loc`` (downloaded first if asked), through the decode cache; labels checked."""
    if loc.download:
        SOURCES.get(loc.kind)().download(loc, cfg)
        loc = resolve(cfg)
        if loc.download:
            raise ConfigError("data.download", f"fetched {cfg.name} into {loc.path} but found no files there", True)
    src = SOURCES.get(loc.kind)()
    try:
        files = src.key_files(loc)
        if files is None:
            raw = src.read(loc, cfg.stored_size())
        else:
            raw = _memo(_cache_key(loc, files, cfg.stored_size()), loc, cfg.stored_size(), cache_dir(cfg))
    except OSError as e:  # a file that vanished or cannot be read
        raise ConfigError("data.name", f"cannot read {e.filename or loc.path}: {e.strerror or e}", cfg.name) from None
    if raw.train_y.min() < 0 or raw.test_y.min() < 0:
        raise ConfigError("data.name", f"labels in {loc.path} must be 0..K-1, found a negative one")
    k = max(len(raw.classes), int(raw.train_y.max()) + 1, int(raw.test_y.max()) + 1)
    if len(raw.classes) != k:
        raw = Raw(raw.train_x, raw.train_y, raw.test_x, raw.test_y, tuple(str(i) for i in range(k)), raw.folder)
    import torch

    empty = (torch.bincount(raw.train_y, minlength=k) == 0).nonzero()[:, 0].tolist()
    if empty:  # a class no training image shows: the net would learn a class it never sees
        names = ", ".join(repr(raw.classes[i]) for i in empty[:5])
        raise ConfigError("data.name", f"{loc.path}: class {names} has no training image"
                                       f"{'' if len(empty) == 1 else f' ({len(empty)} classes)'}", cfg.name)
    return raw


def shared_rows(raw: Raw, picks: dict[str, tuple[str, Tensor]]) -> dict[str, Tensor]:
    """``{name: getattr(raw, field)[indices]}`` for ``picks = {name: (field, indices)}``. When ``raw``
    lives in the decode cache the gathered rows are written once into its entry (under a lock, keyed
    by the indices themselves) and returned as copy-on-write maps of those files: every trial on a
    host that trains on the same split reads one copy in the page cache instead of gathering its
    own. Private copies otherwise (no cache entry, or a cache that cannot be written)."""
    import torch

    whole = {n: _mapped(raw.folder / f"{f}.npy") for n, (f, idx) in picks.items()  # a whole split in order
             if raw.folder is not None and torch.equal(idx, torch.arange(len(getattr(raw, f))))}
    picks = {n: p for n, p in picks.items() if n not in whole}
    size = sum(len(idx) * getattr(raw, field)[:1].numel() * getattr(raw, field).element_size()
               for field, idx in picks.values())
    if raw.folder is None or size < SHARE_MIN_BYTES:
        return {**whole, **{n: getattr(raw, f).index_select(0, i) for n, (f, i) in picks.items()}}
    sub = _share_folder(raw.folder, picks)
    try:
        _write_once(sub, raw, picks)
        return {**whole, **{n: _mapped(sub / f"{n}.npy") for n in picks}}
    except (OSError, ValueError) as e:
        warnings.warn(f"raypair: could not share the splits through {sub}: {e}", stacklevel=2)
        return {**whole, **{n: getattr(raw, f).index_select(0, i) for n, (f, i) in picks.items()}}


def _mapped(path: Path) -> Tensor:
    """A copy-on-write map of its own of a ``.npy`` file: the memo's tensors stay private."""
    import numpy as np
    import torch

    return torch.from_numpy(np.load(path, mmap_mode="c", allow_pickle=False))


def _share_folder(folder: Path, picks: dict[str, tuple[str, Tensor]]) -> Path:
    """The cache entry's subfolder for ``picks``, keyed by the names, fields and indices."""
    digest = hashlib.sha256()
    for name, (field, idx) in sorted(picks.items()):
        digest.update(f"{name}:{field}:".encode())
        digest.update(idx.long().numpy().tobytes())
    return folder / f"split-{digest.hexdigest()[:20]}"


def _write_once(sub: Path, raw: Raw, picks: dict[str, tuple[str, Tensor]]) -> None:
    """Write each pick's rows into ``sub`` unless a trial did already (``done`` marks it complete)."""
    import fcntl

    import numpy as np

    sub.mkdir(exist_ok=True)
    with open(sub / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one trial writes, the others wait for its files
        if not (sub / "done").is_file():
            for name, (field, idx) in picks.items():
                rows = getattr(raw, field).index_select(0, idx).numpy()
                _atomic_write(sub / f"{name}.npy", lambda fh, rows=rows: np.save(fh, rows))
            _atomic_write(sub / "done", lambda fh: fh.write(b"ok"))


def forget() -> None:
    """Drop the decoded splits this process keeps (after a check that decoded them)."""
    _memo.cache_clear()
