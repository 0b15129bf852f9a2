"""ImageFolder trees under ``<root>/<name>/``: ``train/<class>/*.{jpg,jpeg,png}`` and ``test/``
(or ``val/``) alike (Flowers-102, ILSVRC-mini style). Classes are train's folders, sorted; the
test split may lack some, never add one. Images must share a size unless ``data.image_size``."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from raypair.config import ConfigError, DataConfig
from raypair.data.sources._images import decode
from raypair.data.sources.base import Located, Raw, Source, register

if TYPE_CHECKING:
    from torch import Tensor  # torch itself is imported where a split is decoded

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def _image_files(split: Path, classes: Sequence[str]) -> tuple[list[Path], Tensor]:
    import torch

    files, labels = [], []
    for k, c in enumerate(classes):
        found = sorted(p for p in (split / c).glob("*") if p.suffix.lower() in _IMAGE_SUFFIXES) \
            if (split / c).is_dir() else []
        files += found
        labels += [k] * len(found)
    return files, torch.tensor(labels, dtype=torch.int64)


@register
class ImageFolder(Source):
    name = "imagefolder"
    order = 30
    looks_for = "an ImageFolder (train/<class>/*.jpg|png and test/ or val/)"

    def find(self, folder: Path, cfg: DataConfig) -> Optional[Located]:
        test = next((folder / s for s in ("test", "val") if (folder / s).is_dir()), None)
        if (folder / "train").is_dir() and test is not None:
            return Located(self.name, folder, (folder / "train",), (test,))
        return None

    def read(self, loc: Located, size: Optional[int]) -> Raw:
        train, test = loc.train[0], loc.test[0]
        classes = sorted(p.name for p in train.iterdir() if p.is_dir())
        extra = sorted({p.name for p in test.iterdir() if p.is_dir()} - set(classes))
        if extra:
            raise ConfigError("data.name", f"{test} has classes that {train} lacks: {extra}")
        (trf, try_), (tef, tey) = _image_files(train, classes), _image_files(test, classes)
        return Raw(decode(trf, size, str(train)), try_, decode(tef, size, str(test)), tey, tuple(classes))

    def key_files(self, loc: Located) -> Optional[list[Path]]:
        return sorted(p for s in loc.train + loc.test for p in s.rglob("*") if p.is_file())
