"""Where each image of a streamed split lies, found without decoding anything (torch-free):
an :class:`Index` of ``(file, offset, size)`` references and labels per split, and reading one
image's encoded bytes back from it.

Layouts (``data.source`` as the device path finds them, ``raypair/data/sources/``):
- ``imagefolder``: one file per image (``train/<class>/*.jpg|jpeg|png``); classes sorted.
- ``parquet``: Hugging Face image shards; a reference is ``(file, row)``; a worker keeps the last
  few row groups it read (``_ROW_GROUPS``).
- ``webdataset``: tar shards of ``KEY.jpg|jpeg|png`` + ``KEY.cls`` (the integer label, as text);
  a reference is ``(shard, byte offset, byte size)`` of the image member, read with one seek.
"""
from __future__ import annotations

import tarfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from raypair.config import ConfigError

STREAMABLE = ("imagefolder", "parquet", "webdataset")  # the sources the stream path reads
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_ROW_GROUPS = 4  # parquet row groups a worker keeps decoded-column-free (bytes only) in memory


@dataclass
class Index:
    """One split: ``files``; per image ``file [N]`` (into files), ``offset [N]``, ``size [N]``
    (a tar member's bytes; a parquet row in ``offset``; unused by imagefolder) and ``label [N]``."""

    kind: str
    files: list[str]
    file: np.ndarray
    offset: np.ndarray
    size: np.ndarray
    label: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.label)

    def take(self, rows: np.ndarray) -> "Index":
        rows = np.asarray(rows, dtype=np.int64)
        return Index(self.kind, self.files, self.file[rows], self.offset[rows], self.size[rows], self.label[rows],
                     self.classes)

    def describe(self, i: int) -> str:
        """Image ``i`` as a person finds it: its file, and its row or tar member offset."""
        f = self.files[int(self.file[i])]
        return f if self.kind == "imagefolder" else f"{f} {'row' if self.kind == 'parquet' else 'offset'} " \
                                                   f"{int(self.offset[i])}"


def _missing(files: Sequence[Path]) -> None:
    gone = next((f for f in files if not Path(f).is_file()), None)
    if gone is not None:
        raise ConfigError("data.name", f"a shard of the dataset is missing (on this machine): {gone}")


def _folder(split: Path, classes: Sequence[str]) -> Index:
    files, labels = [], []
    for k, c in enumerate(classes):
        found = sorted(str(p) for p in (split / c).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) \
            if (split / c).is_dir() else []
        files += found
        labels += [k] * len(found)
    n = len(files)
    return Index("imagefolder", files, np.arange(n), np.zeros(n, np.int64), np.zeros(n, np.int64),
                 np.array(labels, np.int64), tuple(classes))


def _parquet(files: Sequence[Path]) -> Index:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raypair.data.sources.parquet import _columns

    _missing(files)
    _, _, lab = _columns(Path(files[0]))
    fno, rows, labels = [], [], []
    for i, f in enumerate(files):
        col = pq.read_table(f, columns=[lab]).column(lab)
        if col.null_count or not pa.types.is_integer(col.type):
            raise ConfigError("data.name", f"{f}: column {lab!r} must hold integer labels, no nulls "
                                           f"(type {col.type}, {col.null_count} nulls)")
        y = col.to_numpy().astype(np.int64)
        fno.append(np.full(len(y), i))
        rows.append(np.arange(len(y)))
        labels.append(y)
    y = np.concatenate(labels)
    return Index("parquet", [str(f) for f in files], np.concatenate(fno), np.concatenate(rows),
                 np.zeros(len(y), np.int64), y, tuple(str(k) for k in range(int(y.max()) + 1)))


def _tar(files: Sequence[Path]) -> Index:
    _missing(files)
    fno, offs, sizes, labels = [], [], [], []
    for i, f in enumerate(files):
        members: dict[str, Any] = {}
        cls: dict[str, int] = {}
        try:
            with tarfile.open(f) as tf:
                for m in tf:
                    key, _, ext = m.name.rpartition(".")
                    if m.isfile() and "." + ext.lower() in IMAGE_SUFFIXES:
                        members[key] = m
                    elif m.isfile() and ext == "cls":
                        cls[key] = int(tf.extractfile(m).read().decode().strip())  # type: ignore[union-attr]
        except (tarfile.TarError, OSError, ValueError) as e:
            raise ConfigError("data.name", f"{f}: not a readable tar shard of KEY.jpg + KEY.cls: {e}") from None
        for key, m in sorted(members.items()):
            if key not in cls:
                raise ConfigError("data.name", f"{f}: {m.name} has no {key}.cls label")
            fno.append(i), offs.append(m.offset_data), sizes.append(m.size), labels.append(cls[key])
    y = np.array(labels, np.int64)
    return Index("webdataset", [str(f) for f in files], np.array(fno, np.int64), np.array(offs, np.int64),
                 np.array(sizes, np.int64), y, tuple(str(k) for k in range(int(y.max()) + 1 if len(y) else 0)))


def index_splits(loc: Any) -> tuple[Index, Index]:
    """The train and test :class:`Index` of a ``Located`` (``raypair.data.sources.resolve``)."""
    if loc.kind not in STREAMABLE:
        raise ConfigError("data.mode", f"source '{loc.kind}' cannot stream (streamable: {', '.join(STREAMABLE)})",
                          "stream")
    if loc.kind == "imagefolder":
        train, test = loc.train[0], loc.test[0]
        classes = sorted(p.name for p in train.iterdir() if p.is_dir())
        tr, te = _folder(train, classes), _folder(test, classes)
    else:
        read = _parquet if loc.kind == "parquet" else _tar
        tr, te = read(loc.train), read(loc.test)
        k = max(len(tr.classes), len(te.classes))
        tr.classes = te.classes = tuple(str(i) for i in range(k))
    for name, ix in (("train", tr), ("test", te)):
        if not len(ix):
            raise ConfigError("data.name", f"no images in the {name} split of {loc.path}")
    return tr, te


class Reader:
    """Encoded bytes of an :class:`Index`'s images; one per worker process (file handles and the
    parquet row-group cache are its own)."""

    def __init__(self) -> None:
        self._groups: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._bounds: dict[str, np.ndarray] = {}

    def read(self, ix: Index, i: int) -> bytes:
        f = ix.files[int(ix.file[i])]
        if ix.kind == "imagefolder":
            with open(f, "rb") as fh:
                return fh.read()
        if ix.kind == "webdataset":
            with open(f, "rb") as fh:
                fh.seek(int(ix.offset[i]))
                return fh.read(int(ix.size[i]))
        return self._row(f, int(ix.offset[i]))

    def _row(self, f: str, row: int) -> bytes:
        import pyarrow.parquet as pq

        if f not in self._bounds:
            meta = pq.ParquetFile(f).metadata
            self._bounds[f] = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
        g = int(np.searchsorted(self._bounds[f], row, side="right") - 1)
        if (f, g) not in self._groups:
            from raypair.data.sources.parquet import _columns

            _, img, _ = _columns(Path(f))
            col = pq.ParquetFile(f).read_row_group(g, columns=[img]).column(img).combine_chunks()
            self._groups[(f, g)] = col.field("bytes")
            while len(self._groups) > _ROW_GROUPS:
                self._groups.popitem(last=False)
        self._groups.move_to_end((f, g))
        value = self._groups[(f, g)][row - int(self._bounds[f][g])].as_py()
        if not value:
            raise ValueError("empty image bytes")
        return value
