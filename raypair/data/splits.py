"""Dataset splits as uint8 tensors: the validation hold-out, class-balanced subsets and the
normalisation, over the two splits a source reads (:mod:`raypair.data.sources`).

Hold-outs and subsets are class-stratified tensor ops (:mod:`raypair.ops.sampling`) seeded by
``data.split_seed``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from raypair.config import ConfigError, DataConfig
from raypair.config.pipeline import input_shape, pipeline_for
from raypair.data.sources import Raw, load_raw, resolve, shared_rows
from raypair.data.sources.cifar import CIFAR_MEAN, CIFAR_MOMENTS, CIFAR_NAMES, CIFAR_STD
from raypair.ops.sampling import HoldoutError, balanced_subset, holdout_mask, seeded_generator


@dataclass(frozen=True)
class DataInfo:
    name: str
    num_classes: int
    image_shape: tuple[int, int, int]  # (C, H, W) of a batch the loader yields (imagenet: the crop)
    mean: tuple[float, ...]  # per channel, in [0, 1] pixel units
    std: tuple[float, ...]
    classes: tuple[str, ...]
    eval_split: str  # "val" if val_fraction > 0 else "test"
    pipeline: str = "cifar"  # data.pipeline resolved: "cifar" or "imagenet" (raypair/config/pipeline.py)


@dataclass
class Splits:
    """uint8 ``[N, C, H, W]`` images and int64 ``[N]`` labels on the CPU."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor  # held out of train if val_fraction > 0, else the test split
    val_y: Tensor
    test_x: Optional[Tensor]  # the test split when val_fraction > 0, else None
    test_y: Optional[Tensor]
    info: DataInfo


def _holdout(y: Tensor, fraction: float, gen: torch.Generator) -> Tensor:
    try:
        return holdout_mask(y, fraction, gen)
    except HoldoutError as e:
        raise ConfigError("data.val_fraction", f"leaves class {e.label} ({e.count} images) no training image",
                          fraction) from None


def _balanced(y: Tensor, n: int, gen: torch.Generator, field: str, what: str) -> Tensor:
    try:
        return balanced_subset(y, n, gen)
    except ValueError:
        raise ConfigError(field, f"larger than the {len(y)} {what} available", n) from None


def _normalization(cfg: DataConfig, x: Tensor, pipeline: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mode = cfg.normalize if cfg.normalize != "auto" else "cifar" if cfg.name in CIFAR_NAMES else \
        "imagenet" if pipeline == "imagenet" else "computed"
    if mode == "cifar":  # each CIFAR set its own moments (a non-CIFAR set named with cifar: CIFAR-10's)
        return CIFAR_MOMENTS.get(cfg.name, (CIFAR_MEAN, CIFAR_STD))
    if mode == "cifar10":  # CIFAR-10's moments whatever the data (P3's code normalises CIFAR-100 so)
        return CIFAR_MEAN, CIFAR_STD
    if mode == "imagenet":
        from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        return tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)
    # exact per-channel moments from 256-bin histograms: no float copy of the whole split
    hist = torch.stack([torch.bincount(x[:, c].reshape(-1), minlength=256) for c in range(x.shape[1])]).double()
    v = torch.arange(256, dtype=torch.float64) / 255
    n = hist.sum(1)
    mean = hist @ v / n
    std = (hist @ (v * v) / n - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist())


def load_splits(cfg: DataConfig) -> Splits:
    """Decode (through the cache), hold out val, take the subsets, compute the normalisation."""
    raw = load_raw(cfg, resolve(cfg))
    tr, va, te, eval_src = _rows(cfg, raw)
    # the images: one copy per host, shared by every trial on the same split (the labels are small)
    picks = {"train_x": ("train_x", tr), "val_x": (f"{eval_src}_x", va)}
    if te is not None:
        picks["test_x"] = ("test_x", te)
    x = shared_rows(raw, picks)
    stored = tuple(x["train_x"].shape[1:])
    pipeline = pipeline_for(cfg, *stored[1:])
    mean, std = _normalization(cfg, x["train_x"], pipeline)
    info = DataInfo(cfg.name, len(raw.classes), input_shape(cfg, stored), mean, std, raw.classes,
                    "val" if cfg.val_fraction > 0 else "test", pipeline)
    test = (None, None) if te is None else (x["test_x"], raw.test_y.index_select(0, te))
    return Splits(x["train_x"], raw.train_y.index_select(0, tr), x["val_x"],
                  getattr(raw, f"{eval_src}_y").index_select(0, va), *test, info)


def _rows(cfg: DataConfig, raw: Raw) -> tuple[Tensor, Tensor, Optional[Tensor], str]:
    """The rows of ``raw`` each split takes: train, eval (of the split named last: "train" for a
    hold-out, else "test") and test (None when the test split is the eval split)."""
    tr = torch.arange(len(raw.train_y))
    te = torch.arange(len(raw.test_y))
    if cfg.val_fraction > 0:
        held = _holdout(raw.train_y, cfg.val_fraction, seeded_generator("split.holdout", cfg.split_seed))
        tr, va = (~held).nonzero()[:, 0], held.nonzero()[:, 0]
        eval_src = "train"
    else:
        va, te, eval_src = te, None, "test"
    if cfg.train_subset:
        tr = tr[_balanced(raw.train_y[tr], cfg.train_subset, seeded_generator("split.train_subset", cfg.split_seed),
                          "data.train_subset",
                          "training images left after the validation hold-out")]
    if cfg.test_subset:
        gen = seeded_generator("split.val_subset", cfg.split_seed)
        va = va[_balanced(getattr(raw, f"{eval_src}_y")[va], cfg.test_subset, gen, "data.test_subset",
                          "evaluation images")]
        if te is not None:
            te = te[_balanced(raw.test_y[te], cfg.test_subset, seeded_generator("split.test_subset", cfg.split_seed),
                              "data.test_subset",
                              "test images")]
    return tr, va, te, eval_src
