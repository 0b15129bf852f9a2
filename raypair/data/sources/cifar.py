"""torchvision's pickled CIFAR-10/100 batches under ``<root>/<name>/`` (``cifar-10-batches-py/``
or ``cifar-100-python/``), fetched with torchvision only when ``data.download: true``. Images stay
32x32 unless ``data.image_size`` is set; CIFAR-100 uses its 100 fine labels.

The batches are pickles. They are read by an unpickler that builds only what a CIFAR batch holds
(dicts, lists, bytes, numbers and numpy arrays) and refuses every other class, so a planted file
cannot run code through ``pickle``'s ``__reduce__``."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from raypair.config import ConfigError, DataConfig
from raypair.data.sources._images import fit
from raypair.data.sources.base import Located, Raw, Source, register

if TYPE_CHECKING:
    from torch import Tensor  # torch itself is imported where a split is decoded

CIFAR_NAMES = ("cifar10", "cifar100")
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)  # CIFAR-10's moments (methods.md §1.1, §3.1)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
CIFAR100_MEAN = (129.3 / 255, 124.1 / 255, 112.4 / 255)  # CIFAR-100's (methods.md §3.1, P2's code)
CIFAR100_STD = (68.2 / 255, 65.4 / 255, 70.4 / 255)
CIFAR_MOMENTS = {"cifar10": (CIFAR_MEAN, CIFAR_STD), "cifar100": (CIFAR100_MEAN, CIFAR100_STD)}
_LAYOUTS = {  # folder -> (train files, test files, meta file)
    "cifar-10-batches-py": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta"),
    "cifar-100-python": (["train"], ["test"], "meta"),
}


# what numpy arrays need to be rebuilt, under numpy 1 and 2 module names; nothing else is allowed
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar")}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name} (a CIFAR batch holds numpy arrays only)")
        return super().find_class(module, name)


def load_batch(f: Path) -> dict:
    """One pickled CIFAR batch as a dict (bytes keys); ConfigError naming the file if it is not one."""
    try:
        with open(f, "rb") as fh:
            d = _BatchUnpickler(fh, encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - a truncated, foreign or malicious file reads the same
        text = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise ConfigError("data.name", f"{f}: not a CIFAR batch: {text[:200]}") from None
    if not isinstance(d, dict):
        raise ConfigError("data.name", f"{f}: not a CIFAR batch (holds a {type(d).__name__})")
    return d


def _batches(files: tuple[Path, ...], size: Optional[int]) -> tuple[Tensor, Tensor]:
    import torch

    xs, ys = [], []
    for f in files:
        d = load_batch(f)
        try:
            xs.append(np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[b"fine_labels"] if b"fine_labels" in d else d[b"labels"], np.int64))
            if len(xs[-1]) != len(ys[-1]):
                raise ValueError(f"{len(xs[-1])} images but {len(ys[-1])} labels")
        except (KeyError, ValueError, TypeError) as e:
            raise ConfigError("data.name", f"{f}: not a CIFAR batch: {e}") from None
    x = torch.from_numpy(np.concatenate(xs))
    return torch.cat([fit(c, size) for c in x.split(4096)]), torch.from_numpy(np.concatenate(ys))


@register
class Cifar(Source):
    name = "cifar"
    order = 20
    datasets = CIFAR_NAMES
    looks_for = "torchvision CIFAR batches (cifar-10-batches-py/ or cifar-100-python/)"

    def find(self, folder: Path, cfg: DataConfig) -> Optional[Located]:
        for sub, (train, test, _) in _LAYOUTS.items():
            d = folder / sub
            if all((d / f).is_file() for f in train + test):
                return Located(self.name, d, tuple(d / f for f in train), tuple(d / f for f in test))
        if cfg.download and cfg.name in CIFAR_NAMES:
            return Located(self.name, folder, download=True)
        return None

    def read(self, loc: Located, size: Optional[int]) -> Raw:
        meta, names = loc.path / _LAYOUTS[loc.path.name][2], []
        if meta.is_file():
            d = load_batch(meta)
            names = [n.decode() for n in d.get(b"fine_label_names", d.get(b"label_names", []))]
        return Raw(*_batches(loc.train, size), *_batches(loc.test, size), tuple(names))

    def key_files(self, loc: Located) -> Optional[list[Path]]:
        return sorted(p for p in loc.path.iterdir() if p.is_file())

    def download(self, loc: Located, cfg: DataConfig) -> None:
        import torchvision.datasets as tvd

        try:
            (tvd.CIFAR10 if cfg.name == "cifar10" else tvd.CIFAR100)(root=str(loc.path), download=True)
        except Exception as e:  # noqa: BLE001 - any network or archive failure reads the same to the user
            raise ConfigError("data.download", f"could not download {cfg.name} into {loc.path}: {e}", True) from None

    def fix_hint(self, cfg: DataConfig) -> str:
        if cfg.name not in CIFAR_NAMES:
            return ""
        return ", or data.download=true to fetch it with torchvision (needs internet)"
