"""A tiny generated dataset in the prepared layout, for the quick profiles of the large-scale files
(``ablations/*_imagenet*.yaml``, ``ablations/*_ilsvrc_mini.yaml``, ...) and for tests: ``classes``
classes of ``train`` + ``test`` images each, each class a colour plus noise (so a net can learn
something in an epoch), JPEG at ``width x height`` (PNG at 32 x 32 for ``cifar100``), seeded."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from raypair.config import ConfigError
from raypair.data.prepare import write_atomically, done, target
from raypair.data.prepare.writer import Encoding, Item, ShardWriter, write_all
from raypair.ops.streams import stream_key


def _image(rng: np.random.Generator, k: int, classes: int, shape: tuple[int, int], png: bool) -> bytes:
    from PIL import Image

    hue = np.array([np.cos(2 * np.pi * k / classes), np.sin(2 * np.pi * k / classes), (k % 2) - 0.5])
    px = np.clip(128 + 80 * hue + rng.normal(0, 30, (*shape, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(px, "RGB").save(out, "PNG" if png else "JPEG", quality=90)
    return out.getvalue()


def standin(name: str, out: Optional[Path], classes: int = 4, train: int = 8, test: int = 4,
            size: tuple[int, int] = (56, 48), seed: int = 0) -> tuple[Path, bool]:
    """Write the stand-in ``<out>/<name>``; ``(its folder, whether anything was written)``."""
    if classes < 2 or train < 1 or test < 1:
        raise ConfigError("--classes", "a stand-in needs at least 2 classes and 1 train and 1 test image of each",
                          classes)
    folder = target(out, name)
    if done(folder) is not None:
        return folder, False
    if folder.exists():
        raise ConfigError("--out", f"{folder} exists and is not a finished data prepare or stand-in", str(folder.parent))
    png = name.startswith("cifar")
    shape = (32, 32) if png else (size[1], size[0])
    rng = np.random.default_rng(stream_key("prepare.standin", seed))

    def items() -> Iterator[Item]:
        for split, n in (("train", train), ("test", test)):
            for k in range(classes):
                for i in range(n):
                    yield Item(split, _image(rng, k, classes, shape, png), k, f"standin:{split}/{k}/{i}")

    names = [f"class_{k:03d}" for k in range(classes)]
    record = {"format": 1, "name": name, "from": "standin", "options": {"seed": seed, "size": list(shape)},
              "classes": classes}
    write_atomically(folder, lambda tmp: record.update(splits=write_all(items(), ShardWriter(tmp, names, 256),
                                                                          Encoding(), threads=1)), record)
    return folder, True
