"""``scale.compile: true`` compiles each method's step once per phase and never again.

The loop compiles the method module (``torch.compile(method)``: its forward, mix included). Here each
method runs through its phases twice (``torch._dynamo`` with the cheap ``eager`` backend, which
traces exactly as inductor would): the first pass compiles, the second pass, whose ratios, boxes,
schedule values (beta, q, alpha, omega, theta, hole sizes) and random draws all differ, must compile
nothing more. A recompile there means a value entered the step as a Python number the compiler
specialised on. Graph breaks are counted and reported, not failed: every draw on an explicit
``torch.Generator`` is one (Dynamo does not trace a Generator argument), so a method's step runs
as several graphs with its draws between them (README, "Compile").
"""
from __future__ import annotations

from typing import Any

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from raypair.loop import add_logs, train_step

from helpers import acc_stats, loop_parts

pytestmark = pytest.mark.slow  # torch.compile: seconds per case
torch.set_num_threads(1)  # as test_no_sync steps them

torch.set_num_threads(1)


def second(phases: list[tuple[int, int, dict]]) -> list[tuple[int, int, dict]]:
    """The same phases with other schedule values: train_acc moved inside its stage, epoch shifted."""
    return [(e, n, {**s, "train_acc": s["train_acc"] * 0.9 + 0.01} if "train_acc" in s else s) for e, n, s in phases]


PT = [(0, 10, acc_stats(0.1)), (1, 10, acc_stats(0.5)), (2, 10, acc_stats(0.9))]
CASES = [
    ("erm", {"name": "erm"}, [(0, 1, {})]),
    ("cutout", {"name": "cutout"}, [(0, 1, {})]),
    ("cutmix", {"name": "cutmix", "cutmix_prob": 0.5}, [(0, 1, {})]),
    ("mixup_ft", {"name": "mixup", "ft_epochs": 1}, [(0, 1, {}), (1, 1, {})]),
    ("mixup_c", {"name": "mixup_c", "ft_epochs": 1}, [(0, 1, {}), (1, 1, {})]),
    ("sample_pairing", {"name": "sample_pairing"}, [(5, 10, {}), (0, 10, {})]),
    ("bc", {"name": "bc"}, [(0, 1, {})]),
    ("pair_training", {"name": "pair_training", "alpha_mode": "one"}, PT),
    pytest.param("pair_training_per_sample", {"name": "pair_training", "gate": "per_sample", "alpha_mode": "beta"},
                 PT, marks=pytest.mark.xfail(strict=True, reason="per_sample forwards the k paired rows: k changes "
                                             "every step, a new shape (k = 1 is specialised, then k is dynamic)")),
    ("vpl", {"name": "vpl", "vit_model": "tiny_vit", "x": 34, "y": 34, "ema": True},
     [(0, 3, {}), (1, 3, {}), (2, 3, {})]),
    ("vpl_dml", {"name": "vpl", "vit_model": "tiny_vit", "mode": "dml", "ema": True}, [(0, 3, {})]),  # 2 parts
    ("vpl_dml_joint", {"name": "vpl", "vit_model": "tiny_vit", "mode": "dml", "dml_update": "joint"}, [(0, 3, {})]),
]


# methods whose phases run other code (mixing off in fine-tuning, SamplePairing off, PairTraining's
# stage ops, mixup-C's converted stem): each phase compiles once; VPL's stages differ only in weights
STRUCTURAL = {"mixup", "mixup_c", "sample_pairing", "pair_training"}


def run_phases(net: Any, method: Any, opt: Any, data: Any, phases: list[tuple[int, int, dict]], n: int) -> None:
    method.train()
    for epoch, epochs, stats in phases:
        method.on_epoch_start(epoch, epochs, stats)
        batches = data.epoch(epoch)
        for _ in range(n):
            x, y = next(batches)
            add_logs({}, {}, train_step(net, x, y, opt, amp=False)[1].logs)


def _case(c: Any) -> Any:
    return pytest.param(*c.values[1:], id=c.values[0], marks=c.marks) if hasattr(c, "values") else \
        pytest.param(*c[1:], id=c[0])


@pytest.mark.parametrize("method_cfg, phases", [_case(c) for c in CASES])
def test_compiled_step_does_not_recompile(method_cfg, phases):
    torch._dynamo.reset()
    counters.clear()
    method, opt, data = loop_parts(method_cfg, {})
    net = torch.compile(method, backend="eager")
    run_phases(net, method, opt, data, phases[:1], n=2)  # warm-up: the first phase compiles
    first = counters["frames"]["ok"]
    run_phases(net, method, opt, data, phases[1:], n=2)  # and every phase with another program
    if method_cfg["name"] not in STRUCTURAL:  # phases that differ in values only share the first's graphs
        assert counters["frames"]["ok"] == first, f"a new phase compiled {counters['frames']['ok'] - first} frames"
    frames, breaks = counters["frames"]["ok"], sum(counters["graph_break"].values())
    run_phases(net, method, opt, data, second(phases), n=3)
    recompiled = counters["frames"]["ok"] - frames
    print(f"{method_cfg['name']}: {frames} frames compiled in warm-up, {breaks} graph breaks "
          f"({len(counters['graph_break'])} kinds), {recompiled} recompiles after")
    assert recompiled == 0, f"{recompiled} frames recompiled after warm-up: {dict(counters['recompiles'])}"
