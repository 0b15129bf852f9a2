"""Every random stream raypair derives has a key of its own (ops.sampling.STREAMS).

numpy's SeedSequence drops trailing zero words, so seeding with the bare ints made (seed, epoch,
rank=0) the stream of (seed, epoch): rank 0's augmentation replayed the epoch's shuffle. These tests
pin the class of bug: distinct (stream, ints) give distinct keys and distinct draws, and the code
derives no stream outside the named list.
"""
from __future__ import annotations

import ast
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from raypair.ops.sampling import STREAMS, seeded_generator, stream_key

PKG = Path(__file__).resolve().parents[2] / "raypair"
# how many ints each stream takes (its call sites, read below, must agree)
ARITY = {"data.shuffle": 2, "data.augment": 3, "split.holdout": 1, "split.train_subset": 1,
         "split.val_subset": 1, "split.test_subset": 1, "digits.test": 1, "method": 2,
         "eval.partners": 1, "eval.draws": 1, "gate": 2, "data.crop": 3, "split.norm_sample": 1,
         "prepare.mini_split": 1, "prepare.standin": 1, "data.rf": 3}
VALUES = [0, 1, 2, 7, 2**32, 2**32 + 1, 2**63 - 1, -1]


def test_numpy_drops_trailing_zeros_the_reason_for_named_streams():
    """The bug's cause, from numpy alone: (s, e, 0) seeds the same state as (s, e)."""
    a = np.random.SeedSequence([5, 3, 0]).generate_state(2, np.uint64)
    b = np.random.SeedSequence([5, 3]).generate_state(2, np.uint64)
    assert np.array_equal(a, b)


def test_every_stream_and_ints_has_its_own_key():
    assert set(ARITY) == set(STREAMS)
    seen: dict[int, tuple] = {}
    for name in STREAMS:
        for ints in itertools.product(VALUES[:5] if ARITY[name] == 3 else VALUES, repeat=ARITY[name]):
            key = stream_key(name, *ints)
            assert 0 <= key < 2**63
            assert key not in seen, f"{(name, ints)} shares its key with {seen[key]}"
            seen[key] = (name, ints)


@pytest.mark.parametrize("a, b", [
    (("data.augment", 0, 0, 0), ("data.shuffle", 0, 0)),  # rank 0's augmentation vs the shuffle
    (("data.augment", 4, 2, 0), ("data.shuffle", 4, 2)),
    (("split.holdout", 0), ("split.train_subset", 0)),
    (("split.holdout", 0), ("digits.test", 0)),
    (("data.shuffle", 0, 0), ("split.holdout", 0)),  # split_seed == seed used to share epoch 0's order
    (("method", 0, 0), ("eval.draws", 0)),  # both were manual_seed(0) for seed 0, rank 0
    (("eval.partners", 3), ("eval.draws", 3)),
    (("data.shuffle", 2**32, 5), ("data.shuffle", 0, 1 + 5 * 2**32)),  # word-splitting collisions
    (("data.shuffle", 1, 0), ("data.shuffle", 1, 2**64)),  # ints are taken mod 2**64 ...
])
def test_named_collisions_of_the_old_scheme_now_draw_apart(a, b):
    if b[-1] == 2**64:  # ... so these two are the same stream, on purpose
        assert stream_key(*a) == stream_key(*b)
        return
    da = torch.randperm(1000, generator=seeded_generator(*a))
    db = torch.randperm(1000, generator=seeded_generator(*b))
    assert not torch.equal(da, db)


def test_stream_keys_are_fixed_across_releases():
    """A resumed run must draw what the interrupted one drew: the keys are pinned (the words are
    [stream index, count, lo, hi, ...] into SeedSequence, written out here independently)."""
    words = [STREAMS.index("data.augment"), 3, 4, 0, 2, 0, 1, 0]
    want = int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]) & (2**63 - 1)
    assert stream_key("data.augment", 4, 2, 1) == want
    neg = [STREAMS.index("method"), 2, 0xFFFFFFFF, 0xFFFFFFFF, 3, 0]
    assert stream_key("method", -1, 3) == int(np.random.SeedSequence(neg).generate_state(1, np.uint64)[0]) & (2**63 - 1)


def test_unknown_stream_is_refused():
    with pytest.raises(ValueError, match="unknown random stream 'shuffle'"):
        stream_key("shuffle", 0)


def _stream_calls() -> list[tuple[str, str, int]]:
    """(file, stream name or '<not a literal>', number of ints) of every seeded_generator /
    stream_key call in the package."""
    calls = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in (
                    "seeded_generator", "stream_key"):
                first = node.args[0] if node.args else None
                name = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else "<not a literal>"
                calls.append((str(path.relative_to(PKG)), name, len(node.args) - 1))
    return calls


def test_the_package_derives_exactly_the_named_streams():
    calls = [c for c in _stream_calls() if c[0] not in ("ops/sampling.py", "ops/streams.py")]
    used = {name for _, name, _ in calls}
    assert used == set(STREAMS), f"named but unused: {set(STREAMS) - used}; used but unnamed: {used - set(STREAMS)}"
    for path, name, n in calls:
        assert n == ARITY[name], f"{path}: {name} with {n} ints, the stream takes {ARITY[name]}"


def test_no_other_seeding_in_the_package():
    """A generator seeded any other way is a stream outside the list. The allowed exceptions: the
    model's initialisation from the global RNG (loop, preview), VPL's own vit_seed, a method
    generator seeded by a caller's explicit ``generator_seed``, and the gate's numpy generator fed a
    stream key."""
    allowed = {("loop/__init__.py", "manual_seed"), ("preview.py", "manual_seed"), ("methods/vpl.py", "manual_seed"),
               ("methods/base.py", "manual_seed")}
    found = set()
    for path in PKG.rglob("*.py"):
        rel = str(path.relative_to(PKG))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in (
                    "manual_seed", "default_rng", "SeedSequence", "seed", "RandomState"):
                keyed = node.args and isinstance(node.args[0], ast.Call) and \
                    getattr(node.args[0].func, "id", getattr(node.args[0].func, "attr", None)) == "stream_key"
                if rel not in ("ops/sampling.py", "ops/streams.py") and not keyed:  # a numpy generator of a stream
                    found.add((rel, node.func.attr))
    assert found <= allowed, f"seeded outside ops.sampling.STREAMS: {sorted(found - allowed)}"


def test_the_loader_shuffles_and_augments_from_different_streams():
    """Behaviour, not source: rank 0's augmentation generator is not the epoch's shuffle generator."""
    from raypair.data.loader import DeviceLoader

    x = torch.zeros(64, 3, 8, 8, dtype=torch.uint8)
    y = torch.arange(64) % 4
    seen = []
    import raypair.data.loader as L

    real = L.seeded_generator

    def spy(*a, **k):
        g = real(*a, **k)
        seen.append(g.initial_seed())
        return g

    L.seeded_generator = spy
    try:
        loader = DeviceLoader(x, y, batch_size=16, train=True, augment=True, pad=2, seed=3, mean=[0.0] * 3,
                              std=[1.0] * 3)
        next(loader.epoch(0))
    finally:
        L.seeded_generator = real
    assert len(seen) == 2 and seen[0] != seen[1]
