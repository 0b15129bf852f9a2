"""Datasets as uint8 tensors and a loader that keeps a whole split on the training device.

- :mod:`raypair.data.sources`: finding and decoding a dataset, one registered file per source,
  behind an on-disk ``.npy`` cache;
- :mod:`raypair.data.splits`: the validation hold-out, subsets and normalisation (:func:`load_splits`);
- :mod:`raypair.data.loader`: :class:`DeviceLoader`, batches gathered and augmented on the device;
- :mod:`raypair.data.check`: what a split would be, from the cache without torch (``raypair validate``).

Importing this package imports no torch: the loader and the splits (torch) load on first use.
"""
from typing import Any

from raypair.data.sources import SOURCES, Located, Source, cache_dir, data_root, forget, register, resolve
from raypair.data.sources.cifar import CIFAR_MEAN, CIFAR_NAMES, CIFAR_STD
from raypair.data.sources.digits import DIGITS_TEST_SEED

_LAZY = {"DeviceLoader": "loader", "pipeline_kwargs": "loader", "shard_indices": "loader", "DataInfo": "splits", "Splits": "splits",
         "load_splits": "splits"}

__all__ = ["CIFAR_MEAN", "CIFAR_NAMES", "CIFAR_STD", "DIGITS_TEST_SEED", "SOURCES", "DataInfo", "DeviceLoader",
           "Located", "Source", "Splits", "cache_dir", "data_root", "forget", "load_splits", "pipeline_kwargs", "register",
           "resolve", "shard_indices"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
