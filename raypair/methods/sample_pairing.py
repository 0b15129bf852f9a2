"""SamplePairing (SP; H. Inoue, arXiv 1801.02929; methods.md §4.6, §7).

Equation: ``x~ = (x_a + x_b) / 2`` with label ``y_a`` only (hard CE); ``x_b`` a uniformly random
training image, no class constraint, basic-augmented like ``x_a``. ``pairing: dataset`` (default,
faithful): ``x_b`` from ``pool.draw`` (the whole training set, with replacement; without a pool the
batch stands in for it); ``pairing: batch``: the ``perm`` partner of the batch (§4.6's batched form).
Schedule (``sp_active``, epochs 0-based): off during the warm-up, then alternately on for
``on`` epochs and off for ``off`` epochs (SP's order: on first), then off for the final phase
(SP's "fine-tuning"). Logs: ``sp_on`` (1 while SP mixes, 0 otherwise).

Schedule units: every phase is a fraction of the run's E epochs (the §7 registry's "fractions of
E"), rounded half up to whole epochs (on and off at least 1), so short runs still go through every
phase. The defaults give SP's CIFAR schedule exactly at raypair's 200-epoch CIFAR recipe:
warm-up 100 (FACT: 100 epochs), on 8 / off 2 (FACT), final off 30 (ASSUMPTION 0.15). To reproduce
SP at another E, set ``warmup_frac = 100/E``, ``on_frac = 8/E``, ``off_frac = 2/E``.

Invariants tested (tests/test_sample_pairing.py): the image is exactly the average of the pair and
the label is y_a; ``sp_active`` on hand-picked epochs (warm-up, 8/2 alternation, final off phase).

Metrics: ``val_acc`` / ``test_acc`` (top-1 on single unpaired images; SP reports the error, 1 - top-1:
"CIFAR-10 error 8.22% -> 6.93%", methods.md §4.6); ``train_acc`` against ``y_a``. Default ``aug: base+``
(SP: "both images are basic-augmented (crop/flip) before averaging", methods.md §4.6).

ASSUMPTIONs and their switches:
- ``final_off_frac`` (0.15): SP is off for the last 15% of epochs (§4.6: "10-20%").
- ``warmup_frac`` (0.5): SP's 100 warm-up epochs read as half of a 200-epoch run (SP's total CIFAR
  epochs are not in the sources); ``on_frac`` / ``off_frac`` (0.04 / 0.01): 8 / 2 epochs at E=200.
- ``pairing: batch`` is the fast batched variant.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from raypair.config.methods.sample_pairing import SamplePairingConfig
from raypair.methods.base import METHODS, Method, Mixed
from raypair.ops.losses import one_hot
from raypair.ops.mixing import mix, partner
from raypair.ops.pairing import batch_draw


def _epochs(fraction: float, epochs: int) -> int:
    return int(math.floor(fraction * epochs + 0.5))  # round half up, not Python's half-to-even


def sp_phases(epochs: int, warmup_frac: float, on_frac: float, off_frac: float,
              final_off_frac: float) -> tuple[int, int, int, int]:
    """``(warmup, on, off, final_start)`` in whole epochs for a run of ``epochs``: SP is off in
    ``[0, warmup)`` and in ``[final_start, epochs)``; in between it cycles ``on`` on, ``off`` off."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    for key, v in (("warmup_frac", warmup_frac), ("on_frac", on_frac), ("off_frac", off_frac),
                   ("final_off_frac", final_off_frac)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{key} must lie in [0, 1], got {v}")
    on, off = max(1, _epochs(on_frac, epochs)), max(1, _epochs(off_frac, epochs))
    return _epochs(warmup_frac, epochs), on, off, epochs - _epochs(final_off_frac, epochs)


def sp_active(epoch: int, epochs: int, warmup_frac: float = 0.5, on_frac: float = 0.04,
              off_frac: float = 0.01, final_off_frac: float = 0.15) -> bool:
    """Whether SP mixes in 0-based ``epoch`` of ``epochs`` (see :func:`sp_phases`)."""
    warmup, on, off, final = sp_phases(epochs, warmup_frac, on_frac, off_frac, final_off_frac)
    return warmup <= epoch < final and (epoch - warmup) % (on + off) < on


@METHODS.register("sample_pairing")
class SamplePairing(Method):
    Config = SamplePairingConfig

    def __init__(self, cfg: SamplePairingConfig, model: torch.nn.Module, info: Any) -> None:
        super().__init__(cfg, model, info)
        self.active = True  # until a schedule says otherwise (``raypair preview`` without an epoch)

    def on_epoch_start(self, epoch: int, epochs: int, stats: dict) -> None:
        c = self.cfg
        self.active = sp_active(epoch, epochs, c.warmup_frac, c.on_frac, c.off_frac, c.final_off_frac)

    def mix(self, x: Tensor, y: Tensor) -> Mixed:
        target = one_hot(y, self.info.num_classes)
        if not self.active:
            return Mixed(x, target, {"sp_on": 0.0})
        g = self.generator
        if self.cfg.pairing == "batch":
            xb = x[partner(y, "perm", g)[0]]
        elif self.pool is not None:
            xb = self.pool.draw(len(y), g)[0].to(x.dtype)
        else:
            xb = batch_draw(x, y, len(y), g)[0]
        return Mixed(mix(x, xb, 0.5), target, {"sp_on": 1.0})
