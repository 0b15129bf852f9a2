"""Image helpers the sources share: resize-and-crop to one size, and threaded JPEG/PNG decoding."""
from __future__ import annotations

import functools
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Union

import torch
from torch import Tensor

from raypair.config import ConfigError


def fit(img: Tensor, size: Optional[int]) -> Tensor:
    """[..., C, h, w] -> [..., C, size, size]: shorter side to ``size``, then a centre crop."""
    if size is None or tuple(img.shape[-2:]) == (size, size):
        return img
    from torchvision.transforms.v2 import functional as TF

    return TF.center_crop(TF.resize(img, [size], antialias=True), [size, size])


def _decode_chunk(items: list[Union[Tensor, Path]], size: Optional[int]) -> list[Tensor]:
    from torchvision.io import ImageReadMode, decode_image, read_file

    return [fit(decode_image(read_file(str(it)) if isinstance(it, Path) else it, mode=ImageReadMode.RGB), size)
            for it in items]


def decode(items: list[Union[Tensor, Path]], size: Optional[int], where: str) -> Tensor:
    """Encoded JPEG/PNG bytes (or files) -> uint8 [N, 3, H, W], decoded by a few threads."""
    if not items:
        raise ConfigError("data.name", f"no images in {where}")
    chunks = [items[i:i + 1024] for i in range(0, len(items), 1024)]
    with warnings.catch_warnings(), ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        # torchvision 0.29 warns on every single decode that TorchCodec supersedes it
        warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
        imgs = [im for part in pool.map(functools.partial(_decode_chunk, size=size), chunks) for im in part]
    shapes = sorted({tuple(im.shape) for im in imgs})
    if len(shapes) > 1:
        raise ConfigError("data.image_size", f"images in {where} differ in size ({shapes[0][1:]} and "
                                             f"{shapes[-1][1:]}); set data.image_size to resize them", None)
    return torch.stack(imgs)
