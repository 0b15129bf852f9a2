"""Class-stratified sampling of label tensors: hold-outs and balanced subsets.

Pure tensor functions: results live on the labels' device, and all randomness comes from an
explicit ``torch.Generator`` (one ``randperm`` on the generator's device per call), so equal
seeds give equal splits.
"""
from __future__ import annotations

from typing import Union

import numpy as np
import torch
from torch import Tensor

from raypair.ops.streams import STREAMS, stream_key  # noqa: F401  (their home is ops/streams.py, torch-free)


class HoldoutError(ValueError):
    """:func:`holdout_mask` would hold out every sample of class ``label`` (``count`` samples)."""

    def __init__(self, label: int, count: int, fraction: float) -> None:
        self.label, self.count, self.fraction = label, count, fraction
        super().__init__(f"fraction {fraction} holds out all {count} samples of class {label}, leaving it none")


# Every random stream raypair derives, by name. A stream's key is its name and its ints, each int as
# exactly two 32-bit words after the count, so no two (name, ints) share a key: numpy's SeedSequence
# drops trailing zero words, which made (s, e, 0) the stream of (s, e) when the ints went in bare.
def seeded_generator(stream: str, *ints: int, device: Union[torch.device, str] = "cpu") -> torch.Generator:
    """A generator on ``device`` for stream ``stream`` at ``ints`` (seeded :func:`stream_key`)."""
    return torch.Generator(device=device).manual_seed(stream_key(stream, *ints))


def host_to_device(a: np.ndarray, device: Union[torch.device, str]) -> Tensor:
    """A host array on ``device`` without waiting for it: pinned, then a non-blocking copy on CUDA
    (a plain ``torch.tensor(..., device=cuda)`` synchronises the stream). The one sanctioned
    host-to-device copy inside a training step (tests/test_no_sync.py allows it)."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    if torch.device(device).type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def class_rank(y: Tensor, perm: Tensor) -> Tensor:
    """Rank of each position of ``perm`` within its class.

    ``y``: int64 labels ``[N]``; ``perm``: a permutation ``[N]`` of ``0..N-1`` -> int64 ``[N]`` with
    ``rank[j]`` = how many samples of class ``y[perm[j]]`` come before position ``j`` in ``perm``.
    """
    yp = y[perm]
    order = torch.sort(yp, stable=True).indices
    counts = torch.bincount(yp)
    starts = counts.cumsum(0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(yp), device=yp.device) - starts[yp[order]]
    return rank


def _randperm(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def holdout_mask(y: Tensor, fraction: float, generator: torch.Generator) -> Tensor:
    """A random, class-stratified hold-out of ``round(fraction * n_c)`` (at least 1) samples per class c.

    ``y``: int64 labels ``[N]`` in ``0..K-1`` -> bool ``[N]``, True for the held-out samples.
    Raises :class:`HoldoutError` (a ValueError) if that would take every sample of some class.
    """
    perm = _randperm(len(y), generator, y.device)
    counts = torch.bincount(y)
    take = (counts.double() * fraction + 0.5).floor().long().clamp(min=1).minimum(counts)
    emptied = (take == counts) & (counts > 0)
    if emptied.any():
        c = int(emptied.nonzero()[0])
        raise HoldoutError(c, int(counts[c]), fraction)
    mask = torch.zeros(len(y), dtype=torch.bool, device=y.device)
    mask[perm] = class_rank(y, perm) < take[y[perm]]
    return mask


def balanced_subset(y: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """A random subset of ``n`` samples whose class counts differ by at most 1 (where classes allow).

    ``y``: int64 labels ``[N]`` -> sorted int64 indices ``[n]`` into ``y``.
    Raises ValueError if ``n > N``.
    """
    if n > len(y):
        raise ValueError(f"n={n} is larger than the {len(y)} samples available")
    perm = _randperm(len(y), generator, y.device)
    return perm[torch.sort(class_rank(y, perm), stable=True).indices[:n]].sort().values
