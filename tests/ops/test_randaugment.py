"""Batched RandAugment (raypair/ops/randaugment.py): a whole batch equals torchvision's RandAugment
(its defaults: 2 ops, magnitude 9 of 31 bins, nearest, fill 0) run image by image with the same
draws, each sample its own ops; its magnitude table is torchvision's. CPU, uint8."""
from __future__ import annotations

import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import autoaugment as TA

from raypair.ops import randaugment as R


@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 12, 20), (3, 24, 24)])
def test_each_sample_gets_torchvisions_ops_under_its_own_draw(shape):
    g = torch.Generator().manual_seed(5)
    one = torch.randint(0, 256, (1, *shape), generator=g, dtype=torch.uint8)
    x = one.expand(96, -1, -1, -1).contiguous()
    out = R.randaugment(x, torch.Generator().manual_seed(11))
    op, sign = R.draw_ra(96, torch.Generator().manual_seed(11))
    tv = TA.RandAugment()
    space = tv._augmentation_space(tv.num_magnitude_bins, list(shape[1:]))
    assert list(space) == list(R.RA_OPS) and (tv.num_ops, tv.magnitude) == (R.NUM_OPS, R.MAGNITUDE)
    for i in range(96):
        ref = one[0]
        for k in range(2):
            name = R.RA_OPS[int(op[i, k])]
            values, signed = space[name]
            mag = float(values[tv.magnitude].item()) if values.ndim > 0 else 0.0
            ref = TA._apply_op(ref, name, -mag if signed and sign[i, k] == 1 else mag, InterpolationMode.NEAREST, None)
        assert torch.equal(out[i], ref), (i, op[i].tolist(), sign[i].tolist())
    assert len(set(op[:, 0].tolist())) == 14  # 96 draws cover the 14 ops


def test_bad_input_raises():
    with pytest.raises(ValueError, match="1 or 3 channels"):
        R.randaugment(torch.zeros(1, 2, 8, 8, dtype=torch.uint8), torch.Generator())
