"""What :func:`raypair.data.load_splits` would give, read from the decode cache with numpy alone
(no torch: ``raypair validate`` takes well under a second on a warm cache).

:func:`cached_shape` only ever vouches for data that loads: when the cache has no entry for the
config, or any check that ``load_raw`` / ``load_splits`` make would fail (a negative label, a class
without a training image, a hold-out that empties a class, a subset larger than its split), it
returns None and the caller runs the full load, which raises the one-line error it always did.
The hold-out and subset sizes are the deterministic counts ``ops.sampling`` draws (per class
``max(1, floor(n_c f + 1/2))``, capped at ``n_c``), so no random draw is needed to check them."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import numpy as np

from raypair.config import DataConfig
from raypair.config.pipeline import input_shape
from raypair.data.sources.base import _ARRAYS, SOURCES, _cache_key, cache_dir, resolve


@dataclass(frozen=True)
class SplitShape:
    """What a model check needs of the data: the classes and one image's ``(C, H, W)``."""

    num_classes: int
    image_shape: tuple[int, int, int]


def cached_shape(cfg: DataConfig) -> Optional[SplitShape]:
    """The classes and image shape of ``cfg``'s splits from a complete cache entry, when every check
    of the full load passes; else None (no entry, a damaged one, or data the full load refuses)."""
    loc = resolve(cfg)  # not found: the same ConfigError as the full load
    if loc.download:
        return None
    if loc.kind == "sklearn":
        return _digits(cfg)
    try:
        files = SOURCES.get(loc.kind)().key_files(loc)
        if files is None:
            return None
        folder = cache_dir(cfg) / _cache_key(loc, files, cfg.stored_size())
        if not (folder / "meta.json").is_file():
            return None
        arrays = {n: np.load(folder / f"{n}.npy", mmap_mode="r", allow_pickle=False) for n in _ARRAYS}
        classes = json.loads((folder / "meta.json").read_text())["classes"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # the full load reports it, or decodes again
    train_y, test_y, x = arrays["train_y"], arrays["test_y"], arrays["train_x"]
    if x.ndim != 4 or not len(train_y) or not len(test_y) or min(train_y.min(), test_y.min()) < 0:
        return None
    k = max(len(classes), int(train_y.max()) + 1, int(test_y.max()) + 1)
    return _splits(cfg, np.bincount(train_y, minlength=k), len(test_y), tuple(int(d) for d in x.shape[1:]))


def _held(counts: np.ndarray, fraction: float) -> Optional[np.ndarray]:
    """Per class, how many ``ops.sampling.holdout_mask`` holds out; None when it would empty a class."""
    take = np.minimum(np.maximum(np.floor(counts * fraction + 0.5), 1), counts).astype(np.int64)
    return None if ((take == counts) & (counts > 0)).any() else take


def _digits(cfg: DataConfig) -> Optional[SplitShape]:
    """scikit-learn's digits: labels from its file, the fixed test hold-out of ``sources.digits``."""
    from raypair.data.sources.digits import DIGITS_TEST_FRACTION, Digits

    path = Digits.label_file()
    if path is None:
        return None
    import gzip

    with gzip.open(path, "rt") as fh:
        labels = np.array([int(float(line.rsplit(",", 1)[1])) for line in fh if line.strip()], dtype=np.int64)
    counts = np.bincount(labels, minlength=10)
    test = _held(counts, DIGITS_TEST_FRACTION)
    if len(counts) != 10 or test is None:
        return None
    size = cfg.stored_size() or 16
    return _splits(cfg, counts - test, int(test.sum()), (3, size, size))


def _splits(cfg: DataConfig, counts: np.ndarray, n_test_split: int,
            shape: tuple[int, ...]) -> Optional[SplitShape]:
    """The checks of ``load_raw`` and ``load_splits`` on the training split's class ``counts``."""
    if (counts == 0).any():
        return None
    n_train, n_eval, n_test = int(counts.sum()), n_test_split, None
    if cfg.val_fraction > 0:
        take = _held(counts, cfg.val_fraction)
        if take is None:
            return None
        n_eval, n_test = int(take.sum()), n_test_split
        n_train -= n_eval
    if cfg.train_subset and cfg.train_subset > n_train:
        return None
    if cfg.test_subset and (cfg.test_subset > n_eval or (n_test is not None and cfg.test_subset > n_test)):
        return None
    return SplitShape(len(counts), input_shape(cfg, tuple(shape)))  # type: ignore[arg-type]
