"""The stream path: a split read from its files batch by batch, decoded on the host by worker
processes (``torch.utils.data.DataLoader`` over the epoch's batches, ``data.workers`` processes,
``data.prefetch`` batches each ahead), then moved to the device, where the batched ops of the
device path run (cifar: pad-crop-flip; AutoAugment / RandAugment; normalisation). Ray-free.

:class:`StreamLoader` has :class:`raypair.data.DeviceLoader`'s interface and its epoch semantics,
to the sample: training permutes the split by ``(seed, epoch)`` (the same permutation as the device
path), global batch s is ``perm[s*B:(s+1)*B]`` (drop_last), rank r takes its contiguous part;
evaluation gives rank r the rows ``[r*N//W, (r+1)*N//W)`` in order. A batch's host randomness
(RandomResizedCrop and flip) is keyed by ``(seed, epoch, image)``, so a resumed run and any number
of workers see the same crops. ``draw`` decodes its samples in this process.
"""
from __future__ import annotations

import copy
import dataclasses
import warnings
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from raypair.data.loader import _check_args, normalise, shard_indices
from raypair.data.stream_decode import Decoder
from raypair.data.stream_index import Index
from raypair.ops.augment import pad_crop_flip
from raypair.ops.autoaugment import autoaugment, warm
from raypair.ops.pairing import draw_avoiding
from raypair.ops.randaugment import ra_tables, randaugment
from raypair.ops.sampling import seeded_generator


class _Batches(torch.utils.data.Dataset):
    """Item s: the decoded batch of index rows ``batches[s]`` (decoded in a worker process)."""

    def __init__(self, decoder: Decoder, batches: list[np.ndarray], epoch: int) -> None:
        self.decoder, self.batches, self.epoch = decoder, batches, epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, s: int) -> tuple[Tensor, Tensor, Tensor]:
        x, y, rows = self.decoder.batch(self.batches[s], self.epoch)
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(rows)


def _trace(folder: str, epoch: int, rank: int, batches: list[list[int]]) -> None:
    from pathlib import Path

    Path(folder).mkdir(parents=True, exist_ok=True)
    text = "\n".join(" ".join(map(str, b)) for b in batches)
    (Path(folder) / f"train-e{epoch}-r{rank}.txt").write_text(text + "\n")


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # a worker decodes; its torch needs no pool of its own


class StreamLoader:
    """A split streamed from ``index`` (``raypair.data.stream_index.Index``); see the module text.
    Keywords as :class:`raypair.data.DeviceLoader`'s (``rf_view`` included: the decoding process cuts
    the RF view from the same decoded image, its window and flip keyed by the named stream ``data.rf``),
    plus ``image_size`` (cifar: resize to it),
    ``workers`` (0: decode in this process), ``prefetch``, ``on_corrupt`` (skip | fail) and ``trace``
    (a training loader writes each epoch's image rows, in order, to ``trace/train-e{epoch}-r{rank}.txt``)."""

    def __init__(self, index: Index, *, batch_size: int, mean: Sequence[float], std: Sequence[float],
                 device: Union[torch.device, str] = "cpu", train: bool, augment: bool = False, pad: int = 4,
                 seed: int = 0, rank: int = 0, world_size: int = 1, channels_last: bool = False,
                 autoaugment: Optional[str] = None, pipeline: str = "cifar", crop_size: int = 224,
                 resize_size: int = 256, rrc_scale: Sequence[float] = (0.08, 1.0),
                 rrc_ratio: Sequence[float] = (3 / 4, 4 / 3), image_size: Optional[int] = None, workers: int = 0,
                 prefetch: int = 2, on_corrupt: str = "skip", trace: Optional[str] = None,
                 rf_view: bool = False) -> None:
        n = len(index)
        labels = torch.from_numpy(index.label)
        _check_args(torch.zeros(n, 1, 1, 1, dtype=torch.uint8), labels, batch_size, train, augment, autoaugment,
                    rank, world_size)
        self.device = torch.device(device)
        self.rows, self.y = np.arange(n), labels.to(self.device)
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1).to(self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1).to(self.device)
        self.batch_size, self.train, self.augment, self.pad, self.seed = batch_size, train, augment, pad, seed
        self.rank, self.world_size, self.channels_last = rank, world_size, channels_last
        self.autoaugment, self.pipeline, self.workers, self.prefetch = autoaugment, pipeline, workers, prefetch
        self.trace = trace if train else None
        self.decoder = Decoder(index, pipeline, train and augment, crop_size, resize_size, tuple(rrc_scale),
                               tuple(rrc_ratio), image_size, seed, on_corrupt,
                               rf_view=rf_view and train and augment and pipeline == "imagenet")
        self._drawer = self._draw_decoder()
        self.skipped = 0  # images that did not decode, over every epoch so far (on_corrupt: skip)
        if autoaugment is not None:
            side = crop_size if pipeline == "imagenet" else image_size or self.decoder.image(0, 0).shape[0]
            ra_tables(side, side, self.device) if autoaugment == "ra" else warm(autoaugment, side, side, self.device)
        self._global = batch_size if n >= batch_size else n // world_size * world_size
        self._part = (rank * n // world_size, (rank + 1) * n // world_size)

    def _draw_decoder(self) -> Decoder:
        """draw's decoder: the augmented view alone (as DeviceLoader.draw), made once so its reader
        (file handles, the parquet row-group cache) lives across draws."""
        return dataclasses.replace(self.decoder, rf_view=False) if self.decoder.rf_view else self.decoder

    def __len__(self) -> int:
        if self.train:
            return max(1, len(self.rows) // self._global)
        return -(-(self._part[1] - self._part[0]) // self.batch_size)

    def batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches of ``epoch`` as rows of the index (the order :meth:`epoch` yields)."""
        if not self.train:
            lo, hi = self._part
            return [self.rows[a:min(a + self.batch_size, hi)] for a in range(lo, hi, self.batch_size)]
        perm = torch.randperm(len(self.rows), generator=seeded_generator("data.shuffle", self.seed, epoch)).numpy()
        g, mine = self._global, shard_indices(self._global, self.rank, self.world_size)
        return [self.rows[perm[s * g:(s + 1) * g][mine]] for s in range(len(self))]

    def _device(self, x: Tensor, y: Tensor, gen: Optional[torch.Generator]) -> tuple[Tensor, Tensor]:
        x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        if not self.channels_last:
            x = x.contiguous()
        if gen is not None and self.pipeline == "cifar":
            x = pad_crop_flip(x, self.pad, gen)
        if gen is not None and self.autoaugment is not None:  # the augmented view only (``rf_view``: its first C)
            c = self.mean.shape[1]
            aug = x[:, :c]
            aug = randaugment(aug, gen) if self.autoaugment == "ra" else autoaugment(aug, self.autoaugment, gen)
            x = aug if x.shape[1] == c else torch.cat([aug, x[:, c:]], 1)
        x = normalise(x, self.mean, self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, torch.int64, non_blocking=True)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """This rank's batches of epoch ``epoch``: (x float32 [b, C, H, W], ``rf_view``: [b, 2C, H, W];
        y int64 [b]) on the device."""
        gen = seeded_generator("data.augment", self.seed, epoch, self.rank, device=self.device) \
            if self.augment else None
        data = _Batches(self.decoder, self.batches(epoch), epoch)
        loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=self.workers,
                                             prefetch_factor=self.prefetch if self.workers else None,
                                             pin_memory=self.device.type == "cuda", worker_init_fn=_one_thread)
        skipped, seen = 0, []
        for x, y, rows in loader:
            skipped += len(data.batches[len(seen)]) - len(rows)
            seen.append(rows.tolist())
            if len(y):
                yield self._device(x, y, gen)
        self.skipped += skipped
        if self.trace:
            _trace(self.trace, epoch, self.rank, seen)
        if skipped:
            warnings.warn(f"epoch {epoch}: skipped {skipped} images that do not decode (data.on_corrupt: skip)",
                          stacklevel=2)

    def reordered(self, order: Tensor) -> "StreamLoader":
        """This loader over the samples ``order [N]`` (as :meth:`DeviceLoader.reordered`)."""
        if order.shape != self.y.shape:
            raise ValueError(f"order needs shape [{len(self.y)}], got {tuple(order.shape)}")
        other = copy.copy(self)
        other.rows, other.y = self.rows[order.cpu().numpy()], self.y[order.to(self.device)]
        return other

    def draw(self, n: int, generator: torch.Generator, avoid: Optional[Tensor] = None,
             max_rounds: int = 64) -> tuple[Tensor, Tensor]:
        """``n`` samples drawn with replacement from the split (as :meth:`DeviceLoader.draw`), decoded
        here; their host crops are keyed by a number drawn from ``generator``."""
        idx = draw_avoiding(self.y, n, generator, avoid, max_rounds)
        key = int(torch.randint(2**31, (1,), generator=generator, device=generator.device)) + 2**32
        x, y, _ = self._drawer.batch(self.rows[idx.cpu().numpy()], key)  # a corrupt image: fewer rows
        if len(y) < n:
            raise RuntimeError(f"draw: {n - len(y)} of {n} drawn images do not decode")
        return self._device(torch.from_numpy(x), torch.from_numpy(y), generator if self.augment else None)


def stream_kwargs(data: Any, workers: int) -> dict[str, Any]:
    """The :class:`StreamLoader` keywords of ``data`` beyond the device path's ones; ``workers``: the
    trial worker's CPU threads, the decoding processes unless ``data.workers`` (one: decode in-process)."""
    auto = workers if workers > 1 else 0
    return {"image_size": data.image_size, "workers": auto if data.workers is None else data.workers,
            "prefetch": data.prefetch, "on_corrupt": data.on_corrupt, "trace": data.trace}
