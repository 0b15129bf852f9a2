"""Image helpers the sources share: resize-and-crop to one size, and threaded JPEG/PNG decoding."""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Union

from raypair.config import ConfigError

if TYPE_CHECKING:
    from torch import Tensor  # torch itself is imported where a split is decoded


def fit(img: Tensor, size: Optional[int]) -> Tensor:
    """[..., C, h, w] -> [..., C, size, size]: shorter side to ``size``, then a centre crop."""
    if size is None or tuple(img.shape[-2:]) == (size, size):
        return img
    from torchvision.transforms.v2 import functional as TF

    return TF.center_crop(TF.resize(img, [size], antialias=True), [size, size])


class _Undecodable(Exception):
    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(index, error)
        self.index, self.error = index, error


def _decode_chunk(items: list[Union[Tensor, Path]], size: Optional[int], start: int) -> list[Tensor]:
    from torchvision.io import ImageReadMode, decode_image, read_file

    out = []
    for i, it in enumerate(items):
        try:
            data = read_file(str(it)) if isinstance(it, Path) else it
            if data.numel() == 0:
                raise ValueError("empty image bytes")
            out.append(fit(decode_image(data, mode=ImageReadMode.RGB), size))
        except Exception as e:  # noqa: BLE001 - a decoder's or the OS's error about this one image
            raise _Undecodable(start + i, e) from None
    return out


def decode(items: list[Union[Tensor, Path]], size: Optional[int], where: str,
           describe: Optional[Callable[[int], str]] = None) -> Tensor:
    """Encoded JPEG/PNG bytes (or files) -> uint8 [N, 3, H, W], decoded by a few threads. An image
    that does not decode (a truncated JPEG, not an image) is a ConfigError naming it: its file, or
    ``describe(index)`` (the Parquet file and row)."""
    import torch

    if not items:
        raise ConfigError("data.name", f"no images in {where}")
    starts = list(range(0, len(items), 1024))
    with warnings.catch_warnings(), ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        # torchvision 0.29 warns on every single decode that TorchCodec supersedes it
        warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
        try:
            parts = list(pool.map(lambda i: _decode_chunk(items[i:i + 1024], size, i), starts))
        except _Undecodable as e:
            it = items[e.index]
            name = str(it) if isinstance(it, Path) else describe(e.index) if describe else f"image {e.index} of {where}"
            text = next((ln for ln in str(e.error).splitlines() if ln.strip()), type(e.error).__name__)
            text = text.split(", ")[-1] if ".cpp:" in text else text  # torchvision's source location
            raise ConfigError("data.name", f"{name}: cannot decode the image: {text[:200]}") from None
    imgs = [im for part in parts for im in part]
    shapes = sorted({tuple(im.shape) for im in imgs})
    if len(shapes) > 1:
        raise ConfigError("data.image_size", f"images in {where} differ in size ({shapes[0][1:]} and "
                                             f"{shapes[-1][1:]}); set data.image_size (or, on the imagenet pipeline, "
                                             "data.store: square) to resize them", None)
    return torch.stack(imgs)
