"""``raypair data prepare NAME``: the seeds' datasets from their official archives, written into
``<out>/<NAME>/`` (``--out``, else ``$RAYPAIR_DATA``, else ``./data``) as Parquet shards that the
Parquet source reads (``writer.py``), optionally re-encoded at a maximum resolution.

Atomic: everything is written into a hidden temporary folder beside the target, which is renamed
onto ``<out>/<NAME>`` once complete, with ``prepared.json`` (what was read, with which options, the
split sizes) in it; a re-run that finds that file does nothing and says so. Offline: nothing is
downloaded; a missing archive is one line saying where to get it (``archives.py``).

``raypair data standin NAME`` writes a tiny generated dataset in the same layout (``standin.py``),
for the quick profiles of the large-scale files and for tests."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

from raypair.config import ConfigError
from raypair.data.prepare import datasets, imagenet
from raypair.data.prepare.datasets import Prepared
from raypair.data.prepare.writer import Encoding, ShardWriter, write_all

PREPARERS: dict[str, Callable[..., Prepared]] = {
    "cifar100": datasets.cifar100, "flowers102": datasets.flowers102, "stanford_cars": datasets.stanford_cars,
    "ilsvrc_mini": imagenet.ilsvrc_mini, "imagenet1k": imagenet.imagenet1k,
}
FORMAT = 1


@dataclass(frozen=True)
class Options:
    max_size: Optional[int] = None  # shorter side of a stored image at most this (JPEG re-encoded)
    quality: int = 90
    shard_mb: float = 256  # MiB of image bytes a shard holds at most (the image that crosses it ends the shard)
    verify: str = "auto"  # archives.VERIFY
    mini_split: str = "stratified"  # ilsvrc_mini only: imagenet.MINI_SPLITS (an ASSUMPTION, see there)
    split_seed: int = 0  # ilsvrc_mini only


def target(out: Optional[Path], name: str) -> Path:
    """``<out>/<name>``: ``--out``, else ``$RAYPAIR_DATA``, else ``./data``; absolute."""
    return (out or Path(os.environ.get("RAYPAIR_DATA") or "data")).expanduser().resolve() / name


def done(folder: Path) -> Optional[dict]:
    """The record of a finished prepare in ``folder``, or None."""
    try:
        return json.loads((folder / "prepared.json").read_text())
    except (OSError, ValueError):
        return None


def prepare(name: str, src: Path, out: Optional[Path], opts: Options = Options()) -> tuple[Path, bool]:
    """Prepare ``name`` from the archives in ``src``; ``(its folder, whether anything was written)``."""
    if name not in PREPARERS:
        raise ConfigError("NAME", f"no such dataset (have: {', '.join(PREPARERS)})", name)
    folder = target(out, name)
    if done(folder) is not None:
        return folder, False
    if folder.exists():
        raise ConfigError("--out", f"{folder} exists and is not a finished data prepare; remove it or choose "
                                   "another --out", str(folder.parent))
    if not src.is_dir():
        raise ConfigError("--from", "not a folder", str(src))
    extra = {"mini_split": opts.mini_split, "split_seed": opts.split_seed} if name == "ilsvrc_mini" else {}
    classes, items = PREPARERS[name](src.resolve(), opts.verify, **extra)
    record = {"format": FORMAT, "name": name, "from": str(src.resolve()), "options": asdict(opts),
              "classes": len(classes)}
    write_atomically(folder, lambda tmp: record.update(
        splits=write_all(items, ShardWriter(tmp, classes, opts.shard_mb), Encoding(opts.max_size, opts.quality))),
        record)
    return folder, True


def write_atomically(folder: Path, write: Callable[[Path], None], record: dict) -> None:
    """``write(tmp)`` into a temporary folder beside ``folder``, then ``prepared.json``, then rename."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.prepare-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir()
        write(tmp)
        if "train" not in record.get("splits", {}) or len(record["splits"]) < 2:
            raise ConfigError("--from", f"found no {'training' if 'train' not in record.get('splits', {}) else 'test'} "
                                        f"images for {record['name']} in {record['from']}")
        (tmp / "prepared.json").write_text(json.dumps(record, indent=1) + "\n")
        os.rename(tmp, folder)
    except OSError as e:  # a full disk, a folder another prepare renamed onto the target first
        if done(folder) is None:
            raise ConfigError("--out", f"cannot write {e.filename or tmp}: {e.strerror or e}", str(folder.parent)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
