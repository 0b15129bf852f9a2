"""WebDataset-style tar shards under ``<root>/<name>/``: ``train-*.tar`` + ``test-*.tar`` (or
``val-*`` / ``validation-*``), each holding ``KEY.jpg|jpeg|png`` + ``KEY.cls`` (the integer label
as text). The device path decodes them whole; the stream path (``raypair/data/stream.py``) reads
each image with one seek (``raypair/data/stream_index.py``). Class names are the label numbers."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from raypair.config import DataConfig
from raypair.data.sources._images import decode
from raypair.data.sources.base import Located, Raw, Source, register


def _shards(folder: Path, splits: tuple[str, ...]) -> tuple[Path, ...]:
    for s in splits:
        files = sorted({*folder.glob(f"{s}.tar"), *folder.glob(f"{s}-*.tar")})
        if files:
            return tuple(files)
    return ()


@register
class WebDataset(Source):
    name = "webdataset"
    order = 40
    looks_for = "tar shards (train-*.tar + test-*.tar of KEY.jpg + KEY.cls)"

    def find(self, folder: Path, cfg: DataConfig) -> Optional[Located]:
        train, test = _shards(folder, ("train",)), _shards(folder, ("test", "val", "validation"))
        return Located(self.name, folder, train, test) if train and test else None

    def read(self, loc: Located, size: Optional[int]) -> Raw:
        import torch

        from raypair.data.stream_index import Reader, _tar

        reader, out = Reader(), []
        for files in (loc.train, loc.test):
            ix = _tar(files)
            blobs = [torch.frombuffer(bytearray(reader.read(ix, i)), dtype=torch.uint8) for i in range(len(ix))]
            out += [decode(blobs, size, str(files[0].parent), ix.describe), torch.from_numpy(ix.label)]
        k = int(max(out[1].max(), out[3].max())) + 1
        return Raw(*out, tuple(str(i) for i in range(k)))

    def key_files(self, loc: Located) -> Optional[list[Path]]:
        return [*loc.train, *loc.test]
