"""The image pipeline a run's data takes (``data.pipeline``), its knobs and the size images are
stored at on the device path. Torch-free (``raypair validate``); the ops are ``raypair/ops/augment.py``
(cifar) and ``raypair/ops/resized_crop.py`` (imagenet).

- ``cifar``: images kept at their stored size; ``method.aug: base+`` pads by ``data.pad`` and
  crops back (pad-crop-flip); evaluation sees the stored image.
- ``imagenet``: ``base+`` is RandomResizedCrop(``data.crop_size``, scale ``data.rrc_scale``, ratio
  ``data.rrc_ratio``) + flip; evaluation resizes the shorter side to ``data.resize_size`` and
  takes the centre ``data.crop_size`` square. ``base`` skips the RRC and flip but trains on the
  evaluation's centre crop (a batch has one size). AutoAugment (``base+aa_*``) or RandAugment
  (``base+ra``) follows the crop.

Per-dataset defaults (``data.pipeline: auto``):

====================================  ==========  =====================  ==================
data                                  pipeline    stored at              normalize (auto)
====================================  ==========  =====================  ==================
cifar10, cifar100 (32 px)             cifar       32 (as given)          its own moments
digits (16 px)                        cifar       ``data.image_size``    computed
name imagenet*, ilsvrc*, imagenette*,
imagewoof*                            imagenet    resize_size square     ImageNet's
``data.pipeline: imagenet``, others   imagenet    as given               ImageNet's
other data, stored side >= 128 px     imagenet    as given               ImageNet's
other data, stored side < 128 px      cifar       as given               computed

The stored side is ``data.image_size`` when set (any dataset), else the decoded images' (known
before decoding for CIFAR and digits, so their imagenet knobs count as unread under auto).
====================================  ==========  =====================  ==================

imagenet defaults: crop_size 224, resize_size 256, rrc_scale (0.08, 1), rrc_ratio (3/4, 4/3)
(torchvision's ``RandomResizedCrop`` and its reference recipe's ``Resize(256) + CenterCrop(224)``).

Stored size (the device path holds every image at one size): ``data.image_size`` when set; else
by ``data.store``. ``square``: shorter side to ``resize_size``, then the centre ``resize_size``
square (torchvision's ``Resize`` + ``CenterCrop``) when the pipeline is imagenet before decoding
(named, or set); ``full``: as the source
gives them (they must share a size: CIFAR's 32 px is kept, RRC and the evaluation resize then
enlarge on the device); ``auto``: ``square`` for an ImageNet-like name, else ``full``.
ASSUMPTION (``data.store``): with ``square``, RRC samples its box from the stored centre square,
not from the full original image as torchvision does (the stream path crops from the full image);
the two differ for non-square originals, whose strips outside the square are never seen. ``full``
(uniform-size data) keeps the whole image, so RRC and the evaluation crop match torchvision's.
"""
from __future__ import annotations

from typing import Any, Optional

DataConfig = Any  # raypair.config.run.DataConfig, which imports this module (no cycle)

IMAGENET_NAMES = ("imagenet", "ilsvrc", "imagenette", "imagewoof")  # prefixes of data.name
AUTO_IMAGENET_SIDE = 128  # auto: the imagenet pipeline for stored images at least this side
KNOWN_SIDES = {"cifar10": 32, "cifar100": 32, "digits": 16}  # as their sources store them by default


def _imagenet_name(cfg: DataConfig) -> bool:
    return cfg.name.lower().startswith(IMAGENET_NAMES)


def named_pipeline(cfg: DataConfig) -> Optional[str]:
    """The pipeline known before decoding: ``data.pipeline`` when set, imagenet for an ImageNet-like
    ``data.name``, else by the stored side when the config tells it (``data.image_size``, or a source
    of one known size); None: decided once the images are decoded."""
    if cfg.pipeline != "auto":
        return cfg.pipeline
    if _imagenet_name(cfg):
        return "imagenet"
    side = cfg.image_size or KNOWN_SIDES.get(cfg.name)
    return None if side is None else "imagenet" if side >= AUTO_IMAGENET_SIDE else "cifar"


def pipeline_for(cfg: DataConfig, height: int, width: int) -> str:
    """The pipeline of data stored at ``height x width``."""
    return named_pipeline(cfg) or ("imagenet" if min(height, width) >= AUTO_IMAGENET_SIDE else "cifar")


def stored_size(cfg: DataConfig) -> Optional[int]:
    """The side the device path decodes every image to; None: as the source gives it."""
    if cfg.image_size is not None:
        return cfg.image_size
    square = cfg.store == "square" or (cfg.store == "auto" and _imagenet_name(cfg))
    return cfg.resize_size if square and named_pipeline(cfg) == "imagenet" else None


def input_shape(cfg: DataConfig, stored: tuple[int, int, int]) -> tuple[int, int, int]:
    """The ``(C, H, W)`` of a batch the loader hands the network, for images stored at ``stored``."""
    c, h, w = stored
    return (c, cfg.crop_size, cfg.crop_size) if pipeline_for(cfg, h, w) == "imagenet" else stored


def check(cfg: DataConfig) -> None:
    """The knobs' cross-field rules, as ``ValueError("<field>: ...")``."""
    for field in ("rrc_scale", "rrc_ratio"):
        lo, hi = getattr(cfg, field)
        if not 0 < lo <= hi or (field == "rrc_scale" and hi > 1):
            rule = "0 < low <= high <= 1" if field == "rrc_scale" else "0 < low <= high"
            raise ValueError(f"{field}: needs [low, high] with {rule}, got {[lo, hi]}")
    if cfg.crop_size > cfg.resize_size:
        raise ValueError(f"crop_size: must be <= data.resize_size={cfg.resize_size}, got {cfg.crop_size}")


def resolved(cfg: DataConfig, stored: Optional[tuple[int, int, int]] = None) -> dict[str, object]:
    """The pipeline's settings as a run resolves them (what ``raypair validate`` prints); ``stored``:
    the decoded ``(C, H, W)`` when known (auto decides by it)."""
    name = pipeline_for(cfg, *stored[1:]) if stored else (named_pipeline(cfg) or f"auto: imagenet if stored at >= {AUTO_IMAGENET_SIDE} px, else cifar")
    out: dict[str, object] = {"pipeline": name, "stored_size": stored_size(cfg) or "as the source gives"}
    if name == "imagenet":
        out |= {"crop_size": cfg.crop_size, "resize_size": cfg.resize_size, "rrc_scale": list(cfg.rrc_scale),
                "rrc_ratio": list(cfg.rrc_ratio), "store": cfg.store}
    elif name == "cifar":
        out["pad"] = cfg.pad
    return out
