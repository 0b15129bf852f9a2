"""The named random streams: every generator in raypair is seeded from one of :data:`STREAMS` at
some ints (:func:`stream_key`), so no two draws share a stream by accident and a resumed run draws
what the interrupted one drew. numpy only (``raypair data prepare`` imports no torch);
:mod:`raypair.ops.sampling` makes torch generators of them."""
from __future__ import annotations

import numpy as np

STREAMS = (
    "data.shuffle",       # (seed, epoch): the epoch's order of the training split, shared by every rank
    "data.augment",       # (seed, epoch, rank): pad-crop-flip and AutoAugment of one rank's batches
    "split.holdout",      # (split_seed,): the validation hold-out
    "split.train_subset", "split.val_subset", "split.test_subset",  # (split_seed,): balanced subsets
    "digits.test",        # (DIGITS_TEST_SEED,): the digits source's fixed test split
    "method",             # (seed, rank): a method's own draws (ratios, partners, masks) on one worker
    "eval.partners",      # (seed,): which evaluation image is paired with which (cycle_partners)
    "eval.draws",         # (seed,): the ratios a paired evaluation draws, the same at every evaluation
    "gate",               # (method stream's seed, epoch): PairTraining's host-side gate
    "data.crop",          # (seed, epoch, image): the stream path's RandomResizedCrop of one image
    "split.norm_sample",  # (split_seed,): the training images whose moments normalise a streamed split
    "prepare.mini_split",  # (split_seed,): ILSVRC-mini's test images (data prepare)
    "prepare.standin",    # (seed,): a generated stand-in dataset's pixels
    "data.rf",            # (seed, epoch, image | rank): the RF view of one image (stream path) or of a rank's
                          # batches (device path): PairTraining's RF of the original at 224 px
)


def stream_key(stream: str, *ints: int) -> int:
    """The 63-bit seed of stream ``stream`` (one of :data:`STREAMS`) at ``ints``: distinct for every
    distinct (stream, ints), trailing zeros and negative ints included (each int is taken mod 2**64)."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}; one of {', '.join(STREAMS)}")
    words = [STREAMS.index(stream), len(ints)]
    for i in ints:
        u = int(i) & 0xFFFFFFFFFFFFFFFF
        words += [u & 0xFFFFFFFF, u >> 32]
    state = np.random.SeedSequence(words).generate_state(1, np.uint64)[0]
    return int(state) & 0x7FFFFFFFFFFFFFFF
