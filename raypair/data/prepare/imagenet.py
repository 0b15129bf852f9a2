"""ImageNet-1k (ILSVRC2012) from a local copy, and P0's ILSVRC-mini made from its validation images.

Validation labels come from the devkit (``ILSVRC2012_devkit_t12.tar.gz``: ``data/meta.mat`` maps
ILSVRC2012_ID -> WNID, ``data/ILSVRC2012_validation_ground_truth.txt`` gives each image's ID) or
from Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``, the WNID first). The classes
are the 1000 WNIDs sorted, so label k is the k-th WNID in sorted order: the order torchvision's
ImageNet and timm's pretrained classifiers use.

ILSVRC-mini, P0's rule (methods.md §5.1). FACT (P0): the 50k ImageNet validation images, split
40k train / 10k test, all 1000 classes. ASSUMPTION (P0 does not say how the 40k are chosen):
``mini_split="stratified"`` (the default) draws, per class, round(0.2 x its images) test images
(10 of each class's 50) with numpy seeded from the named stream ``prepare.mini_split`` at ``split_seed``; ``"random"`` draws 10k of
the 50k without regard to class. Switch: ``raypair data prepare ilsvrc_mini --mini-split random``.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from raypair.config import ConfigError
from raypair.data.prepare.archives import load_mat, members, need, verify
from raypair.data.prepare.datasets import Prepared
from raypair.data.prepare.writer import Item
from raypair.ops.streams import stream_key

MINI_TEST_FRACTION = 10_000 / 50_000  # P0: 40k train / 10k test of the 50k validation images (FACT)
MINI_SPLITS = ("stratified", "random")
_VAL = re.compile(r"ILSVRC2012_val_(\d+)\.JPEG$")


def val_labels(src: Path, dataset: str, check: str) -> dict[int, str]:
    """Validation image ID (1-based) -> WNID, from the devkit or ``LOC_val_solution.csv``."""
    csv_path = src / "LOC_val_solution.csv"
    if csv_path.is_file():
        with open(csv_path, newline="") as fh:
            try:
                return {int(_VAL.match(r["ImageId"] + ".JPEG")[1]): r["PredictionString"].split()[0]
                        for r in csv.DictReader(fh)}
            except (KeyError, TypeError, IndexError, AttributeError):
                raise ConfigError("--from", f"{csv_path}: expected ImageId,PredictionString rows such as "
                                            "ILSVRC2012_val_00000001,n01751748 ...") from None
    devkit = need(src, dataset, "ILSVRC2012_devkit_t12.tar.gz", "LOC_val_solution.csv")
    verify(devkit, check)
    files = {name.rsplit("/", 1)[-1]: data for name, data in members(devkit, str(devkit))
             if name.endswith(("meta.mat", "ILSVRC2012_validation_ground_truth.txt"))}
    if len(files) != 2:
        raise ConfigError("--from", f"{devkit}: not the ILSVRC2012 devkit (needs data/meta.mat and "
                                    "data/ILSVRC2012_validation_ground_truth.txt)")
    return _from_devkit(files, devkit)


def _from_devkit(files: dict[str, bytes], devkit: Path) -> dict[int, str]:
    synsets = np.atleast_1d(load_mat(io.BytesIO(files["meta.mat"]), f"{devkit}:data/meta.mat")["synsets"])
    wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}
    ids = [int(t) for t in files["ILSVRC2012_validation_ground_truth.txt"].split()]
    unknown = sorted(set(ids) - set(wnid))
    if unknown:
        raise ConfigError("--from", f"{devkit}: the ground truth names ILSVRC2012_ID {unknown[0]}, "
                                    "which meta.mat has no leaf class for")
    return {i + 1: wnid[k] for i, k in enumerate(ids)}


def _val_tar(src: Path, dataset: str, check: str) -> Path:
    tar = need(src, dataset, "ILSVRC2012_img_val.tar")
    verify(tar, check)
    return tar


def _val_items(tar: Path, split_of: dict[int, str], label: dict[str, int], wnids: dict[int, str]) -> Iterator[Item]:
    for name, data in members(tar, str(tar)):
        m = _VAL.search(name)
        if m and int(m[1]) in split_of:
            yield Item(split_of[int(m[1])], data, label[wnids[int(m[1])]], f"{tar.name}:{name}")


def mini_test_ids(wnids: dict[int, str], how: str, seed: int) -> set[int]:
    """The validation IDs P0's ILSVRC-mini tests on (module docstring: FACT and ASSUMPTION)."""
    rng = np.random.default_rng(stream_key("prepare.mini_split", seed))
    if how == "random":
        ids = np.array(sorted(wnids))
        return set(rng.permutation(ids)[:round(MINI_TEST_FRACTION * len(ids))].tolist())
    test: set[int] = set()
    for w in sorted(set(wnids.values())):
        ids = np.array(sorted(i for i, v in wnids.items() if v == w))
        test |= set(rng.permutation(ids)[:round(MINI_TEST_FRACTION * len(ids))].tolist())
    return test


def ilsvrc_mini(src: Path, check: str, mini_split: str = "stratified", split_seed: int = 0) -> Prepared:
    """ILSVRC-mini by P0's rule from ``ILSVRC2012_img_val.tar`` and its labels."""
    wnids = val_labels(src, "ilsvrc_mini", check)
    tar = _val_tar(src, "ilsvrc_mini", check)
    classes = sorted(set(wnids.values()))
    test = mini_test_ids(wnids, mini_split, split_seed)
    split_of = {i: "test" if i in test else "train" for i in wnids}
    return classes, _val_items(tar, split_of, {w: k for k, w in enumerate(classes)}, wnids)


def imagenet1k(src: Path, check: str) -> Prepared:
    """ImageNet-1k: ``ILSVRC2012_img_train.tar`` (one tar per class, ``<wnid>.tar``) as train, the
    50k validation images as test."""
    wnids = val_labels(src, "imagenet1k", check)
    classes = sorted(set(wnids.values()))
    label = {w: k for k, w in enumerate(classes)}
    train, val = need(src, "imagenet1k", "ILSVRC2012_img_train.tar"), _val_tar(src, "imagenet1k", check)
    verify(train, check)

    def items() -> Iterator[Item]:
        for name, data in members(train, str(train)):
            wnid = name.rsplit("/", 1)[-1].removesuffix(".tar")
            if wnid not in label:
                raise ConfigError("--from", f"{train}: {name} is not the tar of one of the {len(label)} classes "
                                            "the validation labels name")
            for inner, img in members(io.BytesIO(data), f"{train}:{name}"):
                yield Item("train", img, label[wnid], f"{train.name}:{name}/{inner}")
        yield from _val_items(val, {i: "test" for i in wnids}, label, wnids)

    return classes, items()
