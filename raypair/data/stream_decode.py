"""Host-side decoding of a streamed batch, run in the loader's worker processes: read each image's
bytes (``stream_index.Reader``), decode it with PIL at a reduced JPEG scale where the crop allows
(``Image.draft``: 1/2, 1/4 or 1/8 of the side, never below the output side), crop and resize.

- imagenet pipeline, training with ``augment``: RandomResizedCrop by :func:`rrc_box`, the scalar
  form of ``raypair.ops.resized_crop.boxes_from_uniforms`` (same rule, same uniforms -> same box,
  tested), from uniforms keyed by ``(seed, epoch, image row)`` (so the same in any worker, on any
  rank, on a resumed run), then a flip with p=0.5 from the same key; bilinear resize of the box
  (antialiased, :func:`resized`);
- imagenet otherwise: the centre square of ``crop_size / resize_size`` of the shorter side, resized to
  ``crop_size`` (torchvision's Resize(resize_size) + CenterCrop(crop_size) to within a pixel's rounding);
- cifar pipeline: the whole image (they must share a size), or with ``image_size`` its centre square
  resized to ``image_size`` (pad-crop-flip and AutoAugment then run on the device batch);
- ``rf_view`` (imagenet training): RF of the un-augmented image too, after the first view's channels:
  a random ``crop_size`` window of the centre ``resize_size`` square (as Resize + CenterCrop(resize_size)
  would give it), flipped with p=0.5, from uniforms keyed by ``data.rf`` (seed, epoch, image row)
  (PairTraining's RF of the original at 224 px, ``raypair.config.loader_views``).

An image that does not decode is skipped and counted (``on_corrupt: skip``) or raises
:class:`CorruptImage` naming it (``fail``).
"""
from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from raypair.data.stream_index import Index, Reader
from raypair.ops.streams import stream_key

TRIES = 10  # torchvision's get_params (raypair.ops.resized_crop.TRIES)
_DRAWS = 2 * TRIES + 3  # u_area, u_ratio, u_top, u_left, flip


def resized(pixels: np.ndarray, box: Sequence[float], out: int, flip: bool = False) -> np.ndarray:
    """The ``box`` (left, top, right, bottom) of uint8 ``pixels [H, W, 3]`` resized to ``out x out``,
    bilinear with antialiasing, then flipped left-right if ``flip``: uint8 ``[out, out, 3]``. Each of
    the box's edges is rounded to a whole pixel (exact for torchvision's integer crop boxes; on a
    reduced-size decode, within half a decoded pixel). The resize is torch's uint8
    kernel on channels-last data: the filter of PIL's and torchvision's resize, at under half of
    PIL's cost here."""
    import torch
    import torch.nn.functional as F

    h, w = pixels.shape[:2]
    left, top = min(max(int(round(box[0])), 0), w - 1), min(max(int(round(box[1])), 0), h - 1)
    right, bottom = min(max(int(round(box[2])), left + 1), w), min(max(int(round(box[3])), top + 1), h)
    with warnings.catch_warnings():  # PIL's pixels are read-only; nothing here writes to them
        warnings.simplefilter("ignore", UserWarning)
        x = torch.from_numpy(np.ascontiguousarray(pixels[top:bottom, left:right])).permute(2, 0, 1)[None]
    y = F.interpolate(x, size=(out, out), mode="bilinear", antialias=True, align_corners=False)[0]
    if flip:
        y = y.flip(-1)
    return y.numpy().transpose(1, 2, 0)  # a view: the batch's np.stack (or the views' concatenate) copies it


def _decode(im, f: int, width: int, height: int) -> tuple[np.ndarray, float, float]:
    """An opened image's pixels, decoded at 1/``f`` scale where PIL's JPEG draft allows, with the
    scale actually taken per axis."""
    if f > 1:
        im.draft("RGB", (width // f, height // f))  # PIL takes the largest scale that keeps this size
    sx, sy = im.size[0] / width, im.size[1] / height
    if im.mode != "RGB":  # a JPEG decodes as RGB: converting it anyway copied the whole image (~20 % here)
        im = im.convert("RGB")
    return np.asarray(im), sx, sy


class CorruptImage(RuntimeError):
    """An image of a streamed split that does not decode, under ``data.on_corrupt: fail``."""


def rrc_box(u: Sequence[float], height: int, width: int, scale: Sequence[float],
            ratio: Sequence[float]) -> tuple[int, int, int, int]:
    """(top, left, h, w) that ``boxes_from_uniforms`` picks from one sample's uniforms
    ``u = [u_area x 10, u_ratio x 10, u_top, u_left]``: get_params' rule, in float64."""
    area_all, (s_lo, s_hi) = height * width, scale
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for t in range(TRIES):
        area = area_all * (s_lo + u[t] * (s_hi - s_lo))
        aspect = math.exp(log_lo + u[TRIES + t] * (log_hi - log_lo))
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = min(math.floor(u[2 * TRIES] * (height - h + 1)), height - h)
            left = min(math.floor(u[2 * TRIES + 1] * (width - w + 1)), width - w)
            return top, left, h, w
    in_ratio = width / height  # the fallback: the whole image clamped to the ratio range
    h, w = (int(round(width / ratio[0])), width) if in_ratio < ratio[0] else \
        (height, int(round(height * ratio[1]))) if in_ratio > ratio[1] else (height, width)
    return (height - h) // 2, (width - w) // 2, h, w


def uniforms(seed: int, epoch: int, row: int) -> np.ndarray:
    """The ``_DRAWS`` uniforms of image ``row`` at ``epoch``: the same wherever they are drawn."""
    return np.random.default_rng(stream_key("data.crop", seed, epoch, row)).random(_DRAWS)


@dataclass
class Decoder:
    """How one split's images become uint8 ``[b, S, S, 3]`` arrays (``rf_view``: 6 channels;
    picklable: a worker gets a copy)."""

    index: Index
    pipeline: str = "cifar"
    train_aug: bool = False  # imagenet: RandomResizedCrop + flip (else the centre crop)
    crop_size: int = 224
    resize_size: int = 256
    rrc_scale: tuple[float, float] = (0.08, 1.0)
    rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    image_size: Optional[int] = None  # cifar: resize to this square
    seed: int = 0
    on_corrupt: str = "skip"
    draft: bool = True  # reduced-size JPEG decoding (off: full decode, for the benchmark's comparison)
    rf_view: bool = False  # imagenet training: RF of the un-augmented image too, after the channels (``[S, S, 6]``)

    def __post_init__(self) -> None:
        self._reader: Optional[Reader] = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_reader"} | {"_reader": None}

    def _rf_box(self, row: int, epoch: int, width: int, height: int) -> tuple[tuple[float, ...], int, bool]:
        """The RF view's window in the original's pixels: ``crop_size`` of the centre square taken as
        ``resize_size`` px, at offsets ``U{0..resize_size - crop_size}``, and its flip."""
        u = np.random.default_rng(stream_key("data.rf", self.seed, epoch, row)).random(3)
        room = self.resize_size - self.crop_size
        oy, ox = (min(math.floor(v * (room + 1)), room) for v in u[:2])
        side = min(width, height)
        k = side / self.resize_size  # original pixels per pixel of the resized square
        left, top = (width - side) / 2 + ox * k, (height - side) / 2 + oy * k
        return (left, top, left + self.crop_size * k, top + self.crop_size * k), self.crop_size, bool(u[2] < 0.5)

    def _box(self, row: int, epoch: int, width: int, height: int) -> tuple[tuple[float, ...], int, bool]:
        """The crop (left, top, right, bottom) in the original's pixels, the output side, the flip."""
        if self.pipeline == "imagenet" and self.train_aug:
            u = uniforms(self.seed, epoch, row)
            top, left, h, w = rrc_box(u, height, width, self.rrc_scale, self.rrc_ratio)
            return (left, top, left + w, top + h), self.crop_size, bool(u[-1] < 0.5)
        if self.pipeline == "cifar" and self.image_size is None:
            return (0, 0, width, height), 0, False
        out = self.crop_size if self.pipeline == "imagenet" else self.image_size
        c = min(width, height) * (self.crop_size / self.resize_size if self.pipeline == "imagenet" else 1)
        return ((width - c) / 2, (height - c) / 2, (width + c) / 2, (height + c) / 2), int(out), False

    def image(self, row: int, epoch: int) -> np.ndarray:
        """Image ``row`` of the index as uint8 ``[S, S, 3]`` (``rf_view``: ``[S, S, 6]``; cifar without
        image_size: as stored). Each view is decoded at the reduced JPEG scale its own box allows, so
        the augmented view is the same with or without ``rf_view`` (one decode when the two scales
        agree, as they mostly do)."""
        from PIL import Image

        self._reader = self._reader or Reader()
        data = self._reader.read(self.index, row)
        im = Image.open(io.BytesIO(data))
        width, height = im.size
        boxes = [self._box(row, epoch, width, height)]
        if self.rf_view:
            boxes.append(self._rf_box(row, epoch, width, height))
        decoded: dict[int, tuple[np.ndarray, float, float]] = {}
        views = []
        for box, out, flip in boxes:
            f = self._scale(box, out, im.format)
            if f not in decoded:
                decoded[f] = _decode(im if not decoded else Image.open(io.BytesIO(data)), f, width, height)
            pixels, sx, sy = decoded[f]
            if not out:
                return pixels  # cifar without image_size: as stored (one view)
            views.append(resized(pixels, (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy), out, flip))
        return views[0] if len(views) == 1 else np.concatenate(views, axis=2)

    def _scale(self, box: Sequence[float], out: int, fmt: Optional[str]) -> int:
        """The JPEG reduction (1, 2, 4 or 8) that keeps ``box`` at least ``out`` px on its shorter side."""
        if not (out and self.draft and fmt == "JPEG"):
            return 1
        side = min(box[2] - box[0], box[3] - box[1])
        return next((f for f in (8, 4, 2) if side / f >= out), 1)

    def batch(self, rows: np.ndarray, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The images ``rows`` (uint8 ``[b, S, S, 3]``, ``rf_view``: ``[b, S, S, 6]``) that decode, their
        labels and their rows."""
        imgs, keep = [], []
        for i, row in enumerate(rows.tolist()):
            try:
                imgs.append(self.image(row, epoch))
                keep.append(i)
            except Exception as e:  # noqa: BLE001 - any decoder's or reader's error about this one image
                if self.on_corrupt == "fail":
                    raise CorruptImage(f"{self.index.describe(row)}: cannot decode the image "
                                       f"({type(e).__name__}: {str(e)[:120]}); data.on_corrupt: skip skips it") from None
        if imgs and len({im.shape for im in imgs}) > 1:
            shapes = sorted({im.shape[:2] for im in imgs})
            raise ValueError(f"streamed images differ in size ({shapes[0]} and {shapes[-1]}); set data.image_size "
                             "(or the imagenet pipeline) to resize them")
        side = imgs[0].shape if imgs else (0, 0, 3)
        x = np.stack(imgs) if imgs else np.zeros((0, *side), np.uint8)
        return x, self.index.label[rows[keep]], rows[keep]
