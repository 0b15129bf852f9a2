"""Dataset-style partner draws over a batch: the stand-in for ``DeviceLoader.draw`` when a method
that pairs with the whole training set runs without a pool (unit tests, ``mix`` on a lone batch).

Pure tensor function: the device comes from the inputs, randomness from an explicit generator.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from raypair.ops.sampling import seeded_generator


def draw_avoiding(y: Tensor, n: int, generator: torch.Generator, avoid: Optional[Tensor] = None,
                  max_rounds: int = 64) -> Tensor:
    """``n`` indices into ``y [N]`` drawn uniformly with replacement; with ``avoid [n]``, row i is
    the first of ``max_rounds + 1`` candidates whose label differs from ``avoid[i]`` (the last one
    where none does): a re-draw while equal, with all rounds drawn at once (one ``[max_rounds + 1, n]``
    draw) so no value is read on the host. Returns int64 ``[n]`` on ``y``'s device."""
    dev = generator.device
    if avoid is None:
        return torch.randint(len(y), (n,), generator=generator, device=dev).to(y.device)
    cand = torch.randint(len(y), (max_rounds + 1, n), generator=generator, device=dev).to(y.device)
    ok = y[cand] != avoid
    first = torch.where(ok.any(0), ok.int().argmax(0), max_rounds)  # argmax: the first True
    return cand.gather(0, first[None])[0]


def batch_draw(x: Tensor, y: Tensor, n: int, generator: torch.Generator, avoid: Optional[Tensor] = None,
               max_rounds: int = 64) -> tuple[Tensor, Tensor]:
    """``n`` samples drawn uniformly with replacement from the batch ``x [B, ...], y [B]``, with
    ``DeviceLoader.draw``'s rule (:func:`draw_avoiding`: row i re-drawn while its label equals
    ``avoid[i]``, rows still equal after ``max_rounds`` keep their last draw; callers check
    ``y2 != avoid``). Returns ``(x[idx] [n, ...], y[idx] [n])``."""
    if len(y) == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"need a non-empty batch with x and y of equal length, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if avoid is not None and avoid.shape != (n,):
        raise ValueError(f"avoid needs shape [{n}], got {tuple(avoid.shape)}")
    idx = draw_avoiding(y, n, generator, avoid, max_rounds)
    return x[idx], y[idx]


def cycle_partners(n: int, seed: int) -> Tensor:
    """A fixed pairing of an evaluation split of ``n >= 2`` samples, by ``seed``: ``pi [n]`` int64 on
    the CPU with ``pi[p[k]] = p[(k + 1) % n]`` for a seeded permutation ``p``, one ``n``-cycle. So no
    sample is its own partner and every sample is the partner of exactly one other: each is scored
    once as the first and once as the second image of a pair."""
    if n < 2:
        raise ValueError(f"pairing an evaluation split needs at least 2 samples, got {n}")
    p = torch.randperm(n, generator=seeded_generator("eval.partners", seed))
    pi = torch.empty(n, dtype=torch.int64)
    pi[p] = p.roll(-1)
    return pi
