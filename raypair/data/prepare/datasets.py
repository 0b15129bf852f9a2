"""What each dataset's official archives hold, as ``(class names, items)``: CIFAR-100, Oxford
Flowers-102 and Stanford Cars with their official splits. ImageNet and ILSVRC-mini are in
``imagenet.py``. Every label is 0-based; every image is named ``<archive>:<member>`` in errors."""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from raypair.config import ConfigError
from raypair.data.prepare.archives import load_mat, members, need, verify
from raypair.data.prepare.writer import Item

Prepared = tuple[list[str], Iterator[Item]]


def cifar100(src: Path, check: str) -> Prepared:
    """``cifar-100-python.tar.gz``: its train (50k) and test (10k) batches, the 100 fine labels."""
    tar = need(src, "cifar100", "cifar-100-python.tar.gz")
    verify(tar, check)
    files = {name.rsplit("/", 1)[-1]: data for name, data in members(tar, str(tar))}
    missing = [f for f in ("train", "test", "meta") if f not in files]
    if missing:
        raise ConfigError("--from", f"{tar}: not the CIFAR-100 archive (no cifar-100-python/{missing[0]} in it)")
    batches = {f: _batch(files[f], f"{tar}:cifar-100-python/{f}") for f in ("train", "test", "meta")}
    classes = [n.decode() for n in batches["meta"][b"fine_label_names"]]

    def items() -> Iterator[Item]:
        for split in ("train", "test"):
            d = batches[split]
            x = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            for i, (img, y) in enumerate(zip(x, d[b"fine_labels"])):
                yield Item(split, np.ascontiguousarray(img), int(y), f"{tar.name}:cifar-100-python/{split}[{i}]")

    return classes, items()


def _batch(data: bytes, where: str) -> dict:
    """A pickled CIFAR batch, through the CIFAR source's unpickler (it builds numpy arrays only)."""
    from raypair.data.sources.cifar import _BatchUnpickler

    try:
        d = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - a truncated, foreign or malicious file reads the same
        raise ConfigError("--from", f"{where}: not a CIFAR batch: {str(e)[:200]}") from None
    if not isinstance(d, dict):
        raise ConfigError("--from", f"{where}: not a CIFAR batch (holds a {type(d).__name__})")
    return d


def flowers102(src: Path, check: str) -> Prepared:
    """``102flowers.tgz`` + ``imagelabels.mat`` + ``setid.mat``: the official 1020 / 1020 / 6149
    train / validation / test split (``trnid`` / ``valid`` / ``tstid``). The files name no class;
    the classes are the official label numbers 1..102 (``"001"`` ...)."""
    tgz, labels, setid = (need(src, "flowers102", f) for f in ("102flowers.tgz", "imagelabels.mat", "setid.mat"))
    for f in (tgz, labels, setid):
        verify(f, check)
    try:
        y = np.atleast_1d(load_mat(labels)["labels"]).astype(np.int64) - 1
        ids = load_mat(setid)
        split_of = {int(i): s for key, s in (("trnid", "train"), ("valid", "validation"), ("tstid", "test"))
                    for i in np.atleast_1d(ids[key])}
    except KeyError as e:
        raise ConfigError("--from", f"{labels} / {setid}: not the Flowers-102 label files (no {e} in them)") from None
    classes = [f"{k + 1:03d}" for k in range(int(y.max()) + 1)]

    def items() -> Iterator[Item]:
        for name, data in members(tgz, str(tgz)):
            m = re.search(r"image_(\d+)\.jpg$", name)
            if m and int(m[1]) in split_of:
                yield Item(split_of[int(m[1])], data, int(y[int(m[1]) - 1]), f"{tgz.name}:{name}")

    return classes, items()


def stanford_cars(src: Path, check: str) -> Prepared:
    """``cars_train.tgz`` / ``cars_test.tgz`` with the devkit's ``cars_meta.mat`` (196 class names)
    and ``cars_train_annos.mat``, and ``cars_test_annos_withlabels.mat``: the official 8144 / 8041
    split. Whole images (the bounding boxes are not used, as in P4's transfer table)."""
    meta = load_mat(need(src, "stanford_cars", "cars_meta.mat"))
    classes = [str(c) for c in np.atleast_1d(meta.get("class_names", []))]
    labels = {}
    for split, annos in (("train", "cars_train_annos.mat"), ("test", "cars_test_annos_withlabels.mat")):
        a = np.atleast_1d(load_mat(need(src, "stanford_cars", annos)).get("annotations", []))
        if not len(a) or "class" not in (a.dtype.names or ()):
            raise ConfigError("--from", f"{annos}: no labelled annotations in it (the test split needs "
                                        "cars_test_annos_withlabels.mat)")
        labels[split] = {str(r["fname"]): int(r["class"]) - 1 for r in a}
    tars = {s: need(src, "stanford_cars", f"cars_{s}.tgz") for s in ("train", "test")}
    for t in tars.values():
        verify(t, check)

    def items() -> Iterator[Item]:
        for split, tar in tars.items():
            for name, data in members(tar, str(tar)):
                fname = name.rsplit("/", 1)[-1]
                if fname in labels[split]:
                    yield Item(split, data, labels[split][fname], f"{tar.name}:{name}")

    return classes, items()
