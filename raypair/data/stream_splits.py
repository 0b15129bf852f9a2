"""A streamed dataset's splits: the same hold-out, subsets and normalisation as
:func:`raypair.data.load_splits`, over indexes of the files instead of decoded tensors."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from raypair.config import ConfigError, DataConfig
from raypair.config.pipeline import input_shape, pipeline_for
from raypair.data.sources import resolve
from raypair.data.splits import DataInfo, _normalization, _rows
from raypair.data.stream_decode import Decoder
from raypair.data.stream_index import Index, index_splits
from raypair.ops.sampling import seeded_generator

NORM_SAMPLE = 512  # images (the first of a seeded permutation) that normalize: computed reads


@dataclass
class _Labels:  # what splits._rows reads of a Raw
    train_y: torch.Tensor
    test_y: torch.Tensor


@dataclass
class StreamSplits:
    train: Index
    val: Index  # held out of train if val_fraction > 0, else the test split
    test: Optional[Index]  # the test split when val_fraction > 0, else None
    info: DataInfo


def stream_splits(cfg: DataConfig) -> StreamSplits:
    """Index both splits, hold out val, take the subsets, decide the pipeline and normalisation."""
    train, test = index_splits(resolve(cfg))
    tr, va, te, eval_src = _rows(cfg, _Labels(torch.from_numpy(train.label), torch.from_numpy(test.label)))
    val = (train if eval_src == "train" else test).take(va.numpy())
    test_ix = None if te is None else test.take(te.numpy())
    train = train.take(tr.numpy())
    probe = Decoder(train, "cifar", image_size=cfg.image_size).image(0, 0)
    stored = (3, *probe.shape[:2])
    pipeline = pipeline_for(cfg, *stored[1:])
    sample = None
    if cfg.normalize == "computed" or (cfg.normalize == "auto" and pipeline == "cifar"):
        rows = torch.randperm(len(train), generator=seeded_generator("split.norm_sample", cfg.split_seed))[:NORM_SAMPLE]
        try:
            x, _, _ = Decoder(train, pipeline, crop_size=cfg.crop_size, resize_size=cfg.resize_size,
                              image_size=cfg.image_size).batch(rows.numpy(), 0)
        except ValueError as e:  # the cifar pipeline's images must share a size
            raise ConfigError("data.image_size", str(e), None) from None
        sample = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    mean, std = _normalization(cfg, sample, pipeline)
    k = max(len(train.classes), int(train.label.max()) + 1)
    info = DataInfo(cfg.name, k, input_shape(cfg, stored), mean, std, train.classes,
                    "val" if cfg.val_fraction > 0 else "test", pipeline)
    return StreamSplits(train, val, test_ix, info)
