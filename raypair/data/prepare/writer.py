"""Prepared datasets on disk: Parquet shards in the Hugging Face image layout (an ``image`` struct
with ``bytes`` and ``path``, an int64 ``label``, the class names in the ``huggingface`` schema
metadata), ``data/<split>-NNNNN-of-MMMMM.parquet``, a shard ending with the image that brings it to
``shard_mb`` MiB of image bytes.
The Parquet source (``raypair/data/sources/parquet.py``) reads them as they are.

Every image is decoded once here: one that does not decode is a ConfigError naming it (the
archive and member). Images are kept byte for byte when they are RGB or grey JPEG/PNG no larger
than ``max_size`` (shorter side); any other is re-encoded as RGB JPEG, resized to ``max_size`` on
its shorter side when it is larger. Raw uint8 arrays (CIFAR) are stored as PNG: lossless."""
from __future__ import annotations

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

import numpy as np

from raypair.config import ConfigError

Data = Union[bytes, np.ndarray]  # encoded image bytes, or uint8 [H, W, 3]


@dataclass(frozen=True)
class Item:
    split: str  # "train", "validation" or "test"
    data: Data
    label: int
    where: str  # names the image in an error: "<archive>:<member>"


@dataclass(frozen=True)
class Encoding:
    max_size: Optional[int] = None  # shorter side at most this (JPEG); None: as given
    quality: int = 90  # JPEG quality of a re-encoded image


def encode(item: Item, enc: Encoding) -> bytes:
    """The bytes to store for ``item`` (see the module's docstring); ConfigError if it does not decode."""
    from PIL import Image

    if isinstance(item.data, np.ndarray):
        img = Image.fromarray(item.data, "RGB")
        if enc.max_size is None or min(img.size) <= enc.max_size:
            out = io.BytesIO()
            img.save(out, "PNG")
            return out.getvalue()
        return _jpeg(img, enc)
    try:
        img = Image.open(io.BytesIO(item.data))
        fmt, mode, size0 = img.format, img.mode, img.size
        if enc.max_size is not None and fmt == "JPEG":
            img.draft("RGB", (enc.max_size, enc.max_size))  # decode at a reduced DCT scale, still >= max_size
        img.load()
    except Exception as e:  # noqa: BLE001 - PIL's error for a truncated or foreign file reads the same
        text = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise ConfigError("--from", f"{item.where}: cannot decode the image: {text[:200]}") from None
    small = enc.max_size is None or min(size0) <= enc.max_size
    if small and fmt in ("JPEG", "PNG") and mode in ("RGB", "L"):
        return item.data  # as it was: no loss
    return _jpeg(img, enc)


def _jpeg(img: Any, enc: Encoding) -> bytes:
    from PIL import Image

    img = img.convert("RGB")
    if enc.max_size is not None and min(img.size) > enc.max_size:
        w, h = img.size
        s = enc.max_size / min(w, h)
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BICUBIC, reducing_gap=3.0)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=enc.quality)
    return out.getvalue()


class ShardWriter:
    """Writes the items of every split into ``folder/data/`` as shards of at most ``shard_mb``."""

    def __init__(self, folder: Path, classes: list[str], shard_mb: float) -> None:
        self.folder, self.classes, self.limit = folder / "data", classes, int(shard_mb * 2**20)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rows: dict[str, list[tuple[bytes, str, int]]] = {}
        self.shards: dict[str, list[Path]] = {}
        self.counts: dict[str, int] = {}
        self.size: dict[str, int] = {}  # image bytes in each split's open shard

    def add(self, item: Item, data: bytes) -> None:
        if not 0 <= item.label < len(self.classes):
            raise ConfigError("--from", f"{item.where}: label {item.label} is outside 0..{len(self.classes) - 1}")
        rows = self.rows.setdefault(item.split, [])
        rows.append((data, item.where.rsplit(":", 1)[-1], item.label))
        self.counts[item.split] = self.counts.get(item.split, 0) + 1
        self.size[item.split] = self.size.get(item.split, 0) + len(data)
        if self.size[item.split] >= self.limit:
            self._flush(item.split)

    def _flush(self, split: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows, self.size[split] = self.rows.pop(split, []), 0
        if not rows:
            return
        image = pa.StructArray.from_arrays([pa.array([r[0] for r in rows], pa.binary()),
                                            pa.array([r[1] for r in rows], pa.string())], ["bytes", "path"])
        meta = {"info": {"features": {"image": {"_type": "Image"},
                                      "label": {"_type": "ClassLabel", "names": self.classes}}}}
        table = pa.table({"image": image, "label": pa.array([r[2] for r in rows], pa.int64())})
        table = table.replace_schema_metadata({"huggingface": json.dumps(meta)})
        path = self.folder / f"{split}-{len(self.shards.setdefault(split, [])):05d}.parquet"
        pq.write_table(table, path, row_group_size=1024)
        self.shards[split].append(path)

    def close(self) -> dict[str, int]:
        """Flush, name the shards ``<split>-NNNNN-of-MMMMM.parquet``; the image count of each split."""
        for split in list(self.rows):
            self._flush(split)
        for split, paths in self.shards.items():
            for i, p in enumerate(paths):
                os.replace(p, p.with_name(f"{split}-{i:05d}-of-{len(paths):05d}.parquet"))
        return dict(self.counts)


def write_all(items: Iterable[Item], writer: ShardWriter, enc: Encoding, threads: int = 0) -> dict[str, int]:
    """Encode ``items`` on a few threads (PIL decodes without the GIL), in order, into ``writer``."""
    threads = threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(threads) as pool:
        for chunk in _chunks(items, 64 * threads):
            for item, data in zip(chunk, pool.map(lambda it: encode(it, enc), chunk)):
                writer.add(item, data)
    return writer.close()


def _chunks(items: Iterable[Item], n: int) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for it in items:
        chunk.append(it)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
