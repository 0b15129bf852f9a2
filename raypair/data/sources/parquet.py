"""Parquet files in the Hugging Face image layout under ``<root>/<name>/``: ``train.parquet`` +
``test.parquet``, or ``train-*.parquet`` + ``test-*`` (or ``validation-*``) there or in ``data/``
or ``plain_text/``. The image column is a struct with ``bytes`` (JPEG/PNG); the label column is
``label``, ``fine_label`` or ``labels``. Class names come from the ``huggingface`` schema
metadata, else from the ``<class>/<file>`` paths that HF ImageFolder exports keep."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from raypair.config import ConfigError, DataConfig
from raypair.data.sources._images import decode
from raypair.data.sources.base import Located, Raw, Source, register

if TYPE_CHECKING:
    from torch import Tensor  # torch itself is imported where a split is decoded


def _split_files(folder: Path, splits: Sequence[str]) -> tuple[Path, ...]:
    for s in splits:
        files = sorted({*folder.glob(f"{s}.parquet"), *folder.glob(f"{s}-*.parquet")})
        if files:
            return tuple(files)
    return ()


def _blobs(arr: Any) -> list[Tensor]:
    """Views of each value of an Arrow binary array, over one writable copy of its data buffer."""
    import torch

    width = np.int64 if str(arr.type).startswith("large") else np.int32
    offs = np.frombuffer(arr.buffers()[1], width)[arr.offset:arr.offset + len(arr) + 1].tolist()
    data = torch.from_numpy(np.frombuffer(arr.buffers()[2], np.uint8).copy())
    return [data[a:b] for a, b in zip(offs[:-1], offs[1:])]


def _class_names(schema: Any, lab: str, y: Tensor, paths: list[Any]) -> list[str]:
    """From the HF metadata, else the ``<class>/<file>`` path of each class's first image; [] if unknown."""
    import pyarrow as pa

    meta = json.loads((schema.metadata or {}).get(b"huggingface", b"{}"))
    names = meta.get("info", meta).get("features", {}).get(lab, {}).get("names") or []
    if not names and paths:  # HF ImageFolder exports keep "<class>/<file>" in the path field
        first = np.unique(y.numpy(), return_index=True)[1]
        folders = [str(p).rsplit("/", 2) for p in pa.concat_arrays(paths).take(first).to_pylist()]
        names = [f[-2] if len(f) > 1 else "" for f in folders]
        names = names if all(names) and len(names) == int(y.max()) + 1 else []
    return names


def _split(files: tuple[Path, ...], size: Optional[int]) -> tuple[Tensor, Tensor, list[str]]:
    """Images, labels and class names (empty if unknown) of one split's Parquet files."""
    import torch

    schema, img, lab = _columns(files[0])
    blobs, labels, paths, rows = _read_columns(files, img, lab)
    y = torch.from_numpy(np.concatenate(labels))

    def describe(i: int) -> str:
        start, f = max((r for r in rows if r[0] <= i), key=lambda r: r[0])
        return f"{f} row {i - start}"

    return decode(blobs, size, str(files[0].parent), describe), y, _class_names(schema, lab, y, paths)


def _columns(first: Path) -> tuple[Any, str, str]:
    """The schema of a split's first file, and the names of its image and label columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(first)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise _unreadable(first, e) from None
    img = next((f.name for f in schema if pa.types.is_struct(f.type) and f.type.get_field_index("bytes") >= 0), None)
    lab = next((n for n in ("label", "fine_label", "labels") if n in schema.names), None)
    if img is None or lab is None:
        raise ConfigError("data.name", f"{first} needs an image column (a struct with 'bytes') and a label "
                                       f"column (label, fine_label or labels); it has {schema.names}")
    return schema, img, lab


def _read_columns(files: tuple[Path, ...], img: str,
                  lab: str) -> tuple[list[Tensor], list[np.ndarray], list[Any], list[tuple[int, Path]]]:
    """Each image's bytes, the labels and (HF ImageFolder exports) the image paths of ``files``, and
    per file ``(its first image's index, the file)``, to name a bad image."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    blobs: list[Tensor] = []
    labels, paths, rows = [], [], []
    for f in files:
        rows.append((len(blobs), f))
        try:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=8192, columns=[img, lab]):
                col, y = batch.column(img), batch.column(lab)
                if y.null_count or not pa.types.is_integer(y.type):
                    raise ConfigError("data.name", f"{f}: column {lab!r} must hold integer labels, no nulls "
                                      f"(type {y.type}, {y.null_count} nulls)")
                blobs += _blobs(col.field("bytes"))
                labels.append(y.to_numpy(zero_copy_only=False).astype(np.int64))
                if col.type.get_field_index("path") >= 0:
                    paths.append(col.field("path"))
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as e:
            raise _unreadable(f, e) from None
    return blobs, labels, paths, rows


def _unreadable(f: Path, e: BaseException) -> ConfigError:
    if isinstance(e, ConfigError):
        return e
    text = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    return ConfigError("data.name", f"{f}: not a readable Parquet image file: {text[:200]}")


@register
class Parquet(Source):
    name = "parquet"
    order = 10
    looks_for = ("Parquet files (train.parquet + test.parquet, or data/ or plain_text/ train-*.parquet + "
                 "test-*.parquet)")

    def find(self, folder: Path, cfg: DataConfig) -> Optional[Located]:
        for sub in (folder, folder / "data", folder / "plain_text"):
            train, test = _split_files(sub, ["train"]), _split_files(sub, ["test", "validation"])
            if train and test:
                return Located(self.name, folder, train, test)
        return None

    def read(self, loc: Located, size: Optional[int]) -> Raw:
        (trx, try_, names), (tex, tey, _) = _split(loc.train, size), _split(loc.test, size)
        return Raw(trx, try_, tex, tey, tuple(names))

    def key_files(self, loc: Located) -> Optional[list[Path]]:
        return [*loc.train, *loc.test]

    def fix_hint(self, cfg: DataConfig) -> str:
        """A dataset ``raypair data prepare`` knows is made from its official archives, into this layout."""
        from raypair.data.prepare import PREPARERS

        if cfg.name not in PREPARERS:
            return ""
        return f", or make it from its official archives: raypair data prepare {cfg.name} --from DIR"
