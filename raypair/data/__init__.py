"""Datasets as uint8 tensors and a loader that keeps a whole split on the training device.

- :mod:`raypair.data.sources`: finding and decoding a dataset, one registered file per source,
  behind an on-disk ``.npy`` cache;
- :mod:`raypair.data.splits`: the validation hold-out, subsets and normalisation (:func:`load_splits`);
- :mod:`raypair.data.loader`: :class:`DeviceLoader`, batches gathered and augmented on the device.
"""
from raypair.data.loader import DeviceLoader, shard_indices
from raypair.data.sources import SOURCES, Located, Source, cache_dir, data_root, forget, register, resolve
from raypair.data.sources.cifar import CIFAR_MEAN, CIFAR_NAMES, CIFAR_STD
from raypair.data.sources.digits import DIGITS_TEST_SEED
from raypair.data.splits import DataInfo, Splits, load_splits

__all__ = ["CIFAR_MEAN", "CIFAR_NAMES", "CIFAR_STD", "DIGITS_TEST_SEED", "SOURCES", "DataInfo", "DeviceLoader",
           "Located", "Source", "Splits", "cache_dir", "data_root", "forget", "load_splits", "register", "resolve",
           "shard_indices"]
