"""Which data path a run takes (``data.mode``), decided before any trial starts, torch-free.

``device`` keeps each whole split decoded as uint8 on the trial's device (``DeviceLoader``);
``stream`` reads it batch by batch from its files (``StreamLoader``); ``auto`` takes ``device`` when
the decoded dataset (every image of both splits at its stored size, 3 bytes a pixel) fits
``data.device_budget_gb`` and ``stream`` otherwise. Sources that are read whole (CIFAR's
torchvision batches, the digits) always take ``device``. ``data.mode: device`` on a dataset over the
budget is a ConfigError naming ``data.mode`` and the size; ``stream`` on a source that cannot stream
takes ``device`` (``raypair validate`` says so). A missing shard is refused here (the listing opens every file of the split).
"""
from __future__ import annotations

from typing import Any, Optional

from raypair.config import ConfigError

GB = 1e9


def first_size(ix: Any) -> tuple[int, int]:
    """(width, height) of an index's first image, from its header."""
    import io

    from PIL import Image

    from raypair.data.stream_index import Reader

    return Image.open(io.BytesIO(Reader().read(ix, 0))).size


def decoded_bytes(cfg: Any, loc: Any) -> Optional[int]:
    """The device path's decoded size of ``cfg``'s dataset, or None for a source that cannot stream."""
    from raypair.data.stream_index import STREAMABLE, index_splits

    if loc.kind not in STREAMABLE:
        return None
    train, test = index_splits(loc)
    side = cfg.stored_size()
    w, h = (side, side) if side else first_size(train)
    return (len(train) + len(test)) * 3 * w * h


def decide(cfg: Any) -> tuple[str, str]:
    """(``device`` or ``stream``, why) for ``cfg`` (a DataConfig); ConfigError where the mode cannot be."""
    from raypair.data.sources import resolve

    loc = resolve(cfg)
    if loc.download:
        return "device", f"source {loc.kind} downloads and reads the dataset whole"
    size = decoded_bytes(cfg, loc)
    if size is None:
        return "device", f"source {loc.kind} is read whole (only imagefolder, parquet and webdataset stream)"
    budget = cfg.device_budget_gb * GB
    fits = f"{size / GB:.2f} GB decoded {'<=' if size <= budget else '>'} data.device_budget_gb={cfg.device_budget_gb:g}"
    if cfg.mode == "device" and size > budget:
        raise ConfigError("data.mode", f"the decoded dataset needs {size / GB:.2f} GB, over data.device_budget_gb="
                                       f"{cfg.device_budget_gb:g}; use data.mode: stream (or auto)", "device")
    if cfg.mode != "auto":
        return cfg.mode, f"data.mode: {cfg.mode} ({fits})"
    return ("device" if size <= budget else "stream"), f"auto: {fits}"
