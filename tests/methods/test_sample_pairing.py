"""SamplePairing (methods.md §4.6): the averaged image, the y_a label and the on/off schedule."""
from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from raypair.methods.sample_pairing import sp_active, sp_phases
from raypair.ops.losses import one_hot
from raypair.ops.mixing import partner

from helpers import CIFAR_8 as INFO, method_of, uint8_pool


def make(seed: int = 0, pool=None, **knobs):
    return method_of({"name": "sample_pairing", **knobs}, INFO, generator_seed=seed, pool=pool)


def test_image_is_exactly_the_average_and_label_is_y_a_dataset_pairing():
    m = make(seed=3, pool=uint8_pool(30, 10))
    x, y = torch.randn(8, 3, 8, 8), torch.tensor([0, 1, 2, 3, 4, 5, 6, 6])
    g = torch.Generator().manual_seed(3)
    xb, _ = m.pool.draw(8, g)  # the same draw the method makes from the same generator state
    out = m.mix(x, y)
    assert torch.equal(out.x, (x + xb) / 2)
    assert torch.equal(out.target, one_hot(y, 10)) and float(out.logs["sp_on"]) == 1.0
    step = make(seed=3)(x, y)
    assert torch.equal(step.labels, y)


def test_image_is_exactly_the_average_batch_pairing():
    m = make(seed=4, pairing="batch")
    x, y = torch.randn(8, 3, 8, 8), torch.arange(8)
    j, _ = partner(y, "perm", torch.Generator().manual_seed(4))
    out = m.mix(x, y)
    assert torch.equal(out.x, (x + x[j]) / 2) and torch.equal(out.target, one_hot(y, 10))


def test_off_epoch_is_plain_erm():
    m = make()
    m.on_epoch_start(0, 200, {})
    x, y = torch.randn(4, 3, 8, 8), torch.arange(4)
    out = m.mix(x, y)
    assert torch.equal(out.x, x) and float(out.logs["sp_on"]) == 0.0


def test_schedule_is_sp_cifar_at_200_epochs():
    assert sp_phases(200, 0.5, 0.04, 0.01, 0.15) == (100, 8, 2, 170)
    on = [e for e in range(200) if sp_active(e, 200)]
    assert not any(sp_active(e, 200) for e in range(100))  # warm-up
    assert [sp_active(e, 200) for e in range(100, 111)] == [True] * 8 + [False] * 2 + [True]  # 8 on / 2 off
    assert sp_active(167, 200) and not sp_active(168, 200) and not sp_active(169, 200)
    assert not any(sp_active(e, 200) for e in range(170, 200))  # final off phase (15%)
    assert len(on) == 7 * 8  # seven full cycles in epochs 100..169


def test_schedule_short_run_still_goes_through_every_phase():
    # E=10: warm-up 5, on 1 (0.4 rounds up to the minimum 1), off 1, final off from round(1.5)=2 -> 8
    assert sp_phases(10, 0.5, 0.04, 0.01, 0.15) == (5, 1, 1, 8)
    assert [sp_active(e, 10) for e in range(10)] == [False] * 5 + [True, False, True, False, False]
    assert [sp_active(e, 10, warmup_frac=0.0, on_frac=0.3, off_frac=0.2, final_off_frac=0.0)
            for e in range(10)] == [True] * 3 + [False] * 2 + [True] * 3 + [False] * 2
    with pytest.raises(ValueError, match="got 1.5"):
        sp_active(0, 10, on_frac=1.5)


def test_config_refuses_a_schedule_that_never_mixes():
    with pytest.raises(ValidationError, match="final_off_frac"):
        make(warmup_frac=0.6, final_off_frac=0.4)


def test_loss_finite_and_backward():
    m = make()
    m.on_epoch_start(5, 10, {})
    out = m(torch.randn(8, 3, 8, 8), torch.arange(8))
    assert torch.isfinite(out.loss) and out.logits.shape == (8, 10)
    out.loss.backward()
