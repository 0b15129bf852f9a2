"""A loader that keeps a whole split on the device and gathers, augments (pad-crop-flip, or on the
imagenet pipeline RandomResizedCrop + flip; then optionally AutoAugment) and normalises its batches
there as batched tensor ops. Anchor: airbench ``CifarLoader``."""
from __future__ import annotations

import copy
from typing import Any, Iterator, Optional, Sequence, Union

import torch
from torch import Tensor

from raypair.ops.augment import crop_flip, pad_crop_flip
from raypair.ops.autoaugment import POLICIES, autoaugment, warm
from raypair.ops.pairing import draw_avoiding
from raypair.ops.randaugment import ra_tables, randaugment
from raypair.ops.resized_crop import random_resized_crop_flip, resize_center_crop
from raypair.ops.sampling import seeded_generator


def shard_indices(n_global_batch: int, rank: int, world_size: int) -> slice:
    """The contiguous part ``[rank * b, (rank + 1) * b)``, ``b = n / world_size``, of a global batch."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
    if n_global_batch % world_size:
        raise ValueError(f"global batch {n_global_batch} must divide evenly across world_size={world_size}")
    b = n_global_batch // world_size
    return slice(rank * b, (rank + 1) * b)


def _check_args(x: Tensor, y: Tensor, batch_size: int, train: bool, augment: bool, autoaugment: Optional[str],
                rank: int, world_size: int) -> None:
    """The arguments of :class:`DeviceLoader` but mean and std (checked once they are on the device)."""
    if x.dtype != torch.uint8 or x.dim() != 4 or y.shape != x.shape[:1]:
        raise ValueError(f"need x uint8 [N, C, H, W] and y [N], got x {x.dtype} {tuple(x.shape)}, "
                         f"y {tuple(y.shape)}")
    if autoaugment is not None and (autoaugment not in (*POLICIES, "ra") or not augment):
        raise ValueError(f"autoaugment needs augment=True and a policy of {', '.join(POLICIES)} or ra, "
                         f"got {autoaugment!r} with augment={augment}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
    if train:
        shard_indices(batch_size, rank, world_size)  # the global batch must split evenly
    if train and len(x) < world_size:
        raise ValueError(f"{len(x)} training samples cannot feed world_size={world_size} ranks")


def normalise(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 pixels ``[b, k C, H, W]`` (k views of C channels each) to ``(x / 255 - mean) / std`` float32."""
    k = x.shape[1] // mean.shape[1]
    if k > 1:
        mean, std = mean.repeat(1, k, 1, 1), std.repeat(1, k, 1, 1)
    return (x.float() / 255 - mean) / std


class DeviceLoader:
    """A whole split kept as uint8 on ``device``; batches are gathered, augmented and normalised there.

    train: each epoch permutes all N samples with a generator seeded by (seed, epoch), the same on
    every rank; global batch s is ``perm[s*B:(s+1)*B]`` (drop_last; one smaller batch of
    ``N // world_size * world_size`` samples if N < B), so it does not depend on world_size, and
    rank r takes ``shard_indices(B, r, world_size)`` of it. eval: rank r takes the samples
    ``[r*N//W, (r+1)*N//W)`` in order, in batches of at most ``batch_size`` (per rank); the ranks'
    parts cover the split exactly once, and may differ by one batch in count.
    ``augment``: pad-crop-flip each training batch; ``autoaugment`` (a policy of
    ``raypair.ops.autoaugment``): then AutoAugment it, each sample its own sub-policy; ``"ra"``:
    RandAugment it instead (``raypair.ops.randaugment``).
    ``pipeline="imagenet"`` (``raypair/config/pipeline.py``): a training batch with ``augment`` is
    RandomResizedCrop(``crop_size``, ``rrc_scale``, ``rrc_ratio``) + flip
    (:func:`raypair.ops.resized_crop.random_resized_crop_flip`), drawn on the same per-epoch
    ``data.augment`` stream; every other batch (evaluation, training without ``augment``) is
    resized (shorter side ``resize_size``) and centre-cropped to ``crop_size``.
    ``rf_view`` (imagenet training with ``augment``): each batch also carries RF of every un-augmented
    image after the augmented view's channels, ``[b, 2C, H, W]``: the ``resize_size`` square
    (Resize + CenterCrop(resize_size)) cropped at a random ``crop_size`` window and flipped with p=0.5
    (:func:`raypair.ops.augment.crop_flip`, on the named stream ``data.rf`` (seed, epoch, rank), so the
    augmented view draws what it draws without it; ``raypair.config.loader_views``: PairTraining's RF
    of the original image at 224 px).
    Batches: x float32 ``[b, C, H, W]`` (``rf_view``: ``[b, 2C, H, W]``) = ``(x / 255 - mean) / std``,
    y int64 ``[b]``.
    """

    def __init__(self, x: Tensor, y: Tensor, *, batch_size: int, mean: Sequence[float], std: Sequence[float],
                 device: Union[torch.device, str] = "cpu", train: bool, augment: bool = False, pad: int = 4,
                 seed: int = 0, rank: int = 0, world_size: int = 1, channels_last: bool = False,
                 autoaugment: Optional[str] = None, pipeline: str = "cifar", crop_size: int = 224,
                 resize_size: int = 256, rrc_scale: Sequence[float] = (0.08, 1.0),
                 rrc_ratio: Sequence[float] = (3 / 4, 4 / 3), rf_view: bool = False) -> None:
        _check_args(x, y, batch_size, train, augment, autoaugment, rank, world_size)
        if pipeline not in ("cifar", "imagenet") or crop_size > resize_size:
            raise ValueError(f"need pipeline cifar or imagenet and crop_size <= resize_size, got {pipeline!r}, "
                             f"{crop_size} > {resize_size}")
        n = len(x)
        self.device = torch.device(device)
        self.x, self.y = x.to(self.device), y.to(self.device, torch.int64)
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1).to(self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1).to(self.device)
        if self.mean.shape[1] != x.shape[1] or self.std.shape[1] != x.shape[1]:
            raise ValueError(f"mean and std need {x.shape[1]} channels, got {tuple(mean)} and {tuple(std)}")
        self.batch_size, self.train, self.augment, self.pad, self.seed = batch_size, train, augment, pad, seed
        self.rank, self.world_size, self.channels_last = rank, world_size, channels_last
        self.autoaugment, self.pipeline = autoaugment, pipeline
        self.crop_size, self.resize_size = crop_size, resize_size
        self.rrc_scale, self.rrc_ratio = tuple(rrc_scale), tuple(rrc_ratio)
        self.rf_view = rf_view and train and augment and pipeline == "imagenet"
        if autoaugment is not None:
            side = (crop_size, crop_size) if pipeline == "imagenet" else x.shape[2:]
            ra_tables(*side, self.device) if autoaugment == "ra" else warm(autoaugment, *side, self.device)
        self._global = batch_size if n >= batch_size else n // world_size * world_size
        self._part = (rank * n // world_size, (rank + 1) * n // world_size)

    def __len__(self) -> int:
        if self.train:
            return max(1, len(self.x) // self._global)
        return -(-(self._part[1] - self._part[0]) // self.batch_size)

    def _batches(self, epoch: int) -> Iterator[Union[Tensor, slice]]:
        if not self.train:
            lo, hi = self._part
            yield from (slice(a, min(a + self.batch_size, hi)) for a in range(lo, hi, self.batch_size))
            return
        gen = seeded_generator("data.shuffle", self.seed, epoch)
        perm = torch.randperm(len(self.x), generator=gen).to(self.device)
        g, mine = self._global, shard_indices(self._global, self.rank, self.world_size)
        yield from (perm[s * g:(s + 1) * g][mine] for s in range(len(self)))

    def _prepare(self, idx: Union[Tensor, slice], gen: Optional[torch.Generator],
                 rf_gen: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        x = orig = self.x[idx]
        if self.pipeline == "imagenet":
            x = resize_center_crop(x, self.resize_size, self.crop_size) if gen is None else \
                random_resized_crop_flip(x, self.crop_size, self.rrc_scale, self.rrc_ratio, gen)
        elif gen is not None:
            x = pad_crop_flip(x, self.pad, gen)
        if gen is not None and self.autoaugment is not None:  # on uint8 pixels, after the crop (torchvision order)
            x = randaugment(x, gen) if self.autoaugment == "ra" else autoaugment(x, self.autoaugment, gen)
        if rf_gen is not None:  # RF of the un-augmented image after the augmented one's channels
            square = resize_center_crop(orig, self.resize_size, self.resize_size)
            x = torch.cat([x, crop_flip(square, self.crop_size, rf_gen)], 1)
        x = normalise(x, self.mean, self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.y[idx]

    def reordered(self, order: Tensor) -> "DeviceLoader":
        """This loader over the samples ``order [N]`` (a permutation of the split): its batch at a
        position holds sample ``order[i]`` where this one holds sample ``i`` (an evaluation split's
        partners, ``ops.pairing.cycle_partners``)."""
        if order.shape != self.y.shape:
            raise ValueError(f"order needs shape [{len(self.y)}], got {tuple(order.shape)}")
        other = copy.copy(self)
        idx = order.to(self.device)
        other.x, other.y = self.x[idx], self.y[idx]
        return other

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """This rank's batches of epoch ``epoch``: (x float32 [b, C, H, W], ``rf_view``: [b, 2C, H, W];
        y int64 [b]) on the device."""
        gen = seeded_generator("data.augment", self.seed, epoch, self.rank, device=self.device) \
            if self.augment else None
        rf_gen = seeded_generator("data.rf", self.seed, epoch, self.rank, device=self.device) \
            if self.rf_view else None  # a stream of its own: the augmented view draws as without it
        for idx in self._batches(epoch):
            yield self._prepare(idx, gen, rf_gen)

    def draw(self, n: int, generator: torch.Generator, avoid: Optional[Tensor] = None,
             max_rounds: int = 64) -> tuple[Tensor, Tensor]:
        """``n`` samples drawn uniformly with replacement from the whole split, augmented and
        normalised like a training batch (for methods that pair with the dataset, not the batch).
        ``avoid [n]``: sample i is re-drawn until its label differs from ``avoid[i]`` (rows still
        equal after ``max_rounds`` keep their last draw; with K >= 2 balanced classes the chance is
        below (1/2)^64). The generator must live on the data's device."""
        idx = draw_avoiding(self.y, n, generator, avoid, max_rounds)  # no value read on the host
        return self._prepare(idx, generator if self.augment else None)


def pipeline_kwargs(data: Any, info: Any) -> dict[str, Any]:
    """The :class:`DeviceLoader` keywords of ``data`` (a ``DataConfig``) for splits whose
    ``DataInfo`` is ``info``: its resolved pipeline and, on imagenet, the crop and RRC settings."""
    if info.pipeline != "imagenet":
        return {"pipeline": "cifar"}
    return {"pipeline": "imagenet", "crop_size": data.crop_size, "resize_size": data.resize_size,
            "rrc_scale": tuple(data.rrc_scale), "rrc_ratio": tuple(data.rrc_ratio)}
