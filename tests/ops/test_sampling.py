"""Class-stratified sampling (raypair/ops/sampling.py): balanced subsets replayed against a
round-by-round reference with the same permutation, their class counts, and the hold-out error."""
from __future__ import annotations

import pytest
import torch

from raypair.ops.sampling import HoldoutError, balanced_subset, holdout_mask


def reference_subset(y, n, seed):
    """Walk the same permutation once per round r, taking each class's r-th sample, until n are taken."""
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed)).tolist()
    seen, rounds = {}, {}
    for j in perm:
        c = int(y[j])
        rounds.setdefault(seen.get(c, 0), []).append(j)
        seen[c] = seen.get(c, 0) + 1
    taken = [j for r in sorted(rounds) for j in rounds[r]][:n]
    return torch.tensor(sorted(taken))


@pytest.mark.parametrize("n", [1, 37, 2999, 5000])
def test_balanced_subset_is_the_round_by_round_walk_of_its_permutation(n):
    y = torch.randint(0, 7, (5000,), generator=torch.Generator().manual_seed(1))
    y[:300] = 7  # a rare class: it runs out, the others keep going
    out = balanced_subset(y, n, torch.Generator().manual_seed(2))
    assert out.dtype == torch.int64 and torch.equal(out, reference_subset(y, n, 2))
    counts = torch.bincount(y[out], minlength=8)
    assert counts.sum() == n and (n == len(y) or counts[:7].max() - counts[:7].min() <= 1)


def test_balanced_subset_refuses_more_than_there_is():
    y = torch.zeros(4, dtype=torch.int64)
    assert torch.equal(balanced_subset(y, 4, torch.Generator().manual_seed(0)), torch.arange(4))
    with pytest.raises(ValueError, match=r"^n=5 is larger than the 4 samples available$"):
        balanced_subset(y, 5, torch.Generator().manual_seed(0))


def test_holdout_error_names_the_class_and_keeps_its_fields():
    y = torch.tensor([0, 0, 0, 1])
    with pytest.raises(HoldoutError, match=r"^fraction 0.5 holds out all 1 samples of class 1, leaving it none$") as e:
        holdout_mask(y, 0.5, torch.Generator().manual_seed(0))
    assert (e.value.label, e.value.count, e.value.fraction) == (1, 1, 0.5) and isinstance(e.value, ValueError)
