"""No host-device sync inside a training step, for every method in every phase.

A step (the loader's next batch, ``loop.train_step``: the method's forward with its mix, backward,
optimiser step, and ``loop.add_logs``) runs under a guard that raises on every operation that makes
the host wait for the device on CUDA: reading a value (``item``, ``bool``, ``float``, ``int``,
``__index__``, ``tolist``, ``cpu``, ``numpy``: ``_local_scalar_dense``), an output whose shape
depends on values (``nonzero``, ``masked_select``, boolean-mask indexing, ``unique``) and a tensor
made from Python data (``torch.tensor(0.5, device=...)``: ``lift_fresh``, a blocking host-to-device
copy; ``ops.sampling.host_to_device``, a pinned non-blocking copy, is the one allowed). Epoch hooks
and the end-of-epoch reduction sync once per epoch and are outside the guard.
Everything runs on the CPU: the guard sees the same operations the CUDA run would issue.
"""
from __future__ import annotations

import traceback
import types
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from raypair.loop import add_logs, train_step

from helpers import acc_stats, loop_parts

torch.set_num_threads(1)
aten = torch.ops.aten
SYNCS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
         aten.is_nonzero.default, aten.equal.default, aten.lift_fresh.default, aten._unique2.default,
         aten.unique_consecutive.default, aten.unique_dim.default, aten.repeat_interleave.Tensor}


class SyncError(AssertionError):
    def __init__(self, what: str) -> None:
        frames = [f for f in traceback.extract_stack()[:-2] if "/raypair/" in f.filename]
        f = frames[-1] if frames else None
        where = f" at {f.filename.split('/raypair/')[-1]}:{f.lineno} ({f.line})" if f else ""
        super().__init__(what + where)


class NoSync(TorchDispatchMode):
    """Raises :class:`SyncError` on an operation that waits for the device on CUDA."""

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in SYNCS and not (func is aten.lift_fresh.default and _from("host_to_device")):
            raise SyncError(f"host-device sync in a training step: {func}")
        if func in (aten.index.Tensor, aten.index_put_.default, aten.index_put.default) and any(
                i is not None and i.dtype == torch.bool for i in args[1]):
            raise SyncError(f"boolean-mask indexing (a value-dependent shape) in a training step: {func}")
        return func(*args, **(kwargs or {}))


def _from(function: str) -> bool:
    return any(f.name == function for f in traceback.extract_stack())


def _refuse(name: str) -> Any:
    def call(*_: Any, **__: Any) -> Any:
        raise SyncError(f"Tensor.{name} in a training step")
    return call


def guarded(monkeypatch: pytest.MonkeyPatch, fn: Any) -> Any:
    """``fn()`` with ``Tensor.tolist / cpu / numpy`` refused (they may not dispatch on a CPU tensor)
    and every syncing aten operation refused."""
    with monkeypatch.context() as m:
        for name in ("tolist", "cpu", "numpy"):
            m.setattr(torch.Tensor, name, _refuse(name))
        with NoSync():
            return fn()


# (id, method config, run overrides, [(epoch, epochs, stats) of each phase to step through])
PT = [(0, 10, acc_stats(0.1)), (1, 10, acc_stats(0.5)), (2, 10, acc_stats(0.9)),
      (3, 10, acc_stats(0.0))]  # stages 1, 2, 3, 1
VPL = [(0, 3, {}), (1, 3, {}), (2, 3, {})]  # x = y = 34%: stages 1, 2, 3
CASES = [
    ("erm_aa", {"name": "erm", "aug": "base+aa_cifar10"}, {}, [(0, 1, {})]),
    ("erm_ls_base", {"name": "erm", "aug": "base", "label_smoothing": 0.1}, {}, [(0, 1, {})]),
    ("cutout", {"name": "cutout"}, {}, [(0, 1, {})]),
    ("cutmix_p05", {"name": "cutmix", "cutmix_prob": 0.5}, {}, [(0, 1, {})]),
    ("cutmix_flip", {"name": "cutmix", "partner": "flip"}, {}, [(0, 1, {})]),
    ("mixup_ft", {"name": "mixup", "ft_epochs": 1}, {}, [(0, 1, {}), (1, 1, {})]),
    ("mixup_range", {"name": "mixup", "lam": "range", "shared": False}, {}, [(0, 1, {})]),
    ("mixup_c", {"name": "mixup_c", "ft_epochs": 1}, {}, [(0, 1, {}), (1, 1, {})]),
    ("mixup_c_dual", {"name": "mixup_c", "heads": 2, "dual_loss": "weighted", "lam": "range", "ft_epochs": 1},
     {}, [(0, 1, {}), (1, 1, {})]),
    ("sp_dataset", {"name": "sample_pairing"}, {}, [(5, 10, {}), (0, 10, {})]),
    ("sp_batch", {"name": "sample_pairing", "pairing": "batch"}, {}, [(5, 10, {})]),
    ("bc_plus", {"name": "bc"}, {}, [(0, 1, {})]),
    ("bc_batch", {"name": "bc", "variant": "bc", "pairing": "batch"}, {}, [(0, 1, {})]),
    ("bc_student", {"name": "bc", "label_mode": "major", "r_low": 0.5, "train_set": "clean_and_mixed"}, {},
     [(0, 1, {})]),
    ("pt_per_batch", {"name": "pair_training"}, {}, PT),
    ("pt_per_sample", {"name": "pair_training", "gate": "per_sample", "alpha_mode": "beta"}, {}, PT),
    ("pt_joint_beta", {"name": "pair_training", "forward": "joint", "omega_mode": "beta", "n_max": 3,
                       "alpha_mode": "one"}, {}, PT),
    ("pt_cutout", {"name": "pair_training", "stage_ops": "cutout", "alpha_mode": "one"}, {}, PT[:1]),
    ("pt_cutmix", {"name": "pair_training", "stage_ops": "cutmix", "alpha_mode": "one"}, {}, PT[:1]),
    ("vpl", {"name": "vpl", "vit_model": "tiny_vit", "x": 34, "y": 34, "ema": True, "aug": "base+aa_cifar10"},
     {}, VPL),
    ("vpl_dml", {"name": "vpl", "vit_model": "tiny_vit", "mode": "dml", "erase_mode": "rand", "ema": True}, {},
     VPL[:1]),  # alternating: two optimiser steps per batch
    ("vpl_dml_joint", {"name": "vpl", "vit_model": "tiny_vit", "mode": "dml", "dml_update": "joint"}, {}, VPL[:1]),
]


def steps(monkeypatch: pytest.MonkeyPatch, method_cfg: dict[str, Any], extra: dict[str, Any],
          phases: list[tuple[int, int, dict]], n: int = 3) -> None:
    method, opt, data = loop_parts(method_cfg, extra)
    method.train()
    for epoch, epochs, stats in phases:
        method.on_epoch_start(epoch, epochs, stats)  # an epoch hook: may sync once per epoch
        batches = data.epoch(epoch)
        dev_logs: dict[str, torch.Tensor] = {}
        host_logs: dict[str, float] = {}
        for _ in range(n):
            def step() -> None:
                x, y = next(batches)
                sums, out = train_step(method, x, y, opt, amp=False)
                add_logs(dev_logs, host_logs, out.logs)
            guarded(monkeypatch, step)


@pytest.mark.parametrize("method_cfg, extra, phases", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_training_step_never_waits_for_the_device(monkeypatch, method_cfg, extra, phases):
    steps(monkeypatch, method_cfg, extra, phases)


@pytest.mark.parametrize("call", [
    lambda t: t.sum().item(), lambda t: bool(t.any()), lambda t: float(t.sum()), lambda t: int(t.sum()),
    lambda t: t.tolist(), lambda t: t[t > 0], lambda t: t.nonzero(), lambda t: torch.tensor(0.5) * t,
    lambda t: t[: t.sum().long()], lambda t: t.cpu(), lambda t: t.numpy(),
], ids=["item", "bool", "float", "int", "tolist", "mask", "nonzero", "tensor", "index", "cpu", "numpy"])
def test_the_guard_catches_each_kind_of_sync(monkeypatch, call):
    t, i = torch.ones(4), torch.tensor([0, 1])
    with pytest.raises(SyncError):
        guarded(monkeypatch, lambda: call(t))
    guarded(monkeypatch, lambda: (t * 0.5 + t[i].sum(), torch.where(t > 0, t, 0.0)))
