"""Every run-config field reaches the computation, or sweeping it is refused (the run side of
tests/methods/test_knobs.py, which covers ``method.*``).

The fields are enumerated from the run schema itself (every leaf of ``RunConfigBase`` but
``method``), so a new field that no code reads fails here. For each field, in the defaults and in
each mode of its own section (each other value of a Literal / bool field beside it; top-level
fields also under each schedule), where ``experiments.sweep.check_read`` lets a sweep set it,
some other valid value must change what the loop computes: the data (splits, normalisation, the
first training batch as the loader gives it to rank 0 of ``scale.workers``), the lr of every step of
the run, the parameters after two real optimiser steps of a tiny net on real images (the default
``digits`` data), their scores on the evaluation split, the epochs trained, or the verdicts of
``loop.divergence``. A field read in none of
those contexts is tried under the first single change of another field that makes it read."""
from __future__ import annotations

import json
import typing
from typing import Any, Optional

import pytest
import torch
from pydantic import BaseModel, ValidationError

from raypair.config import ConfigError, ModelConfig, RunConfigBase, run_model
from raypair.experiments.sweep import check_read
from raypair.loop import Dist, divergence, evaluate, group_lr, setup, train_step, trial_optimizer
from raypair.models import build_model

from helpers import alternatives, folder_dataset

torch.set_num_threads(1)
BASE: dict[str, Any] = {"method": {"name": "erm"}, "model": {"name": "tiny_cnn"}, "epochs": 3, "batch_size": 16,
                        # the imagenet pipeline at a small crop: its contexts train at 12 px, not 224
                        "data": {"crop_size": 12, "resize_size": 20}}
# values for fields whose type gives no alternatives (str, list, dict, tuple), or whose generic ones
# all fail validation under BASE (a subset of 1 image, a cosine floor above optim.lr)
EXPLICIT: dict[str, list[Any]] = {
    # data.name: a small ImageFolder this module writes (no shared data needed)
    "data.name": ["toy"], "data.image_size": [8, 24], "data.train_subset": [200], "data.test_subset": [100],
    "model.name": ["tiny_vit"], "model.kwargs": [{"width": 8}], "optim.betas": [[0.8, 0.99]],
    "schedule.milestones": [[1], [0.5]], "schedule.min_lr": [0.01, 0.05], "scale.gpus_per_worker": [0, 0.5],
}


@pytest.fixture(autouse=True, scope="module")
def _toy_data_root(tmp_path_factory):
    """``data.name: toy``: an ImageFolder of digits (3 classes, 20 train / 6 test each) under a data
    root of this module's own."""
    root = tmp_path_factory.mktemp("knob-data")
    folder_dataset(root / "toy", {0: 20, 1: 20, 2: 20}, test=6)
    torch.manual_seed(12345)  # model.weights: a tiny_cnn state dict of another init than any run's
    torch.save(build_model(ModelConfig(name="tiny_cnn"), 10, 3).state_dict(), root / "tiny_cnn.pt")
    EXPLICIT["model.weights"] = [str(root / "tiny_cnn.pt")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYPAIR_DATA", str(root))
        yield


def leaves(model: type[BaseModel] = RunConfigBase, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted path, pydantic field) of every leaf of the run schema but ``method``."""
    out = []
    for name, field in model.model_fields.items():
        if not prefix and name == "method":
            continue
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += leaves(ann, f"{prefix}{name}.")
        else:
            out.append((prefix + name, field))
    return out


FIELDS = dict(leaves())


def get(raw: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        raw = raw.get(part, {}) if isinstance(raw, dict) else {}
    return raw


def put(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(raw))
    *head, last = path.split(".")
    node = out
    for part in head:
        node = node.setdefault(part, {})
    node[last] = value
    return out


def run_of(raw: dict[str, Any]) -> Optional[RunConfigBase]:
    try:
        return run_model().model_validate(raw)
    except ValidationError:  # an invalid combination is simply not a context (a crash is not one)
        return None


def value_of(run: RunConfigBase, path: str) -> Any:
    node: Any = run
    for part in path.split("."):
        node = getattr(node, part)
    return node


def others(path: str, run: RunConfigBase) -> list[Any]:
    if path in EXPLICIT:
        return [v for v in EXPLICIT[path] if v != value_of(run, path)]
    return alternatives(FIELDS[path], value_of(run, path))


def readable(raw: dict[str, Any], path: str) -> bool:
    run = run_of(raw)
    if run is None:
        return False
    try:
        check_read(run, path, path)
    except ConfigError:
        return False
    return True


_SEEN: dict[str, list[Any]] = {}
DIVERGE_GRID = [({"train_loss": loss, "epoch": epoch, "val_acc": acc}) for loss in (0.5, 3, 30, 300, 700, 1500, 3000, 3e4)
                for epoch in (1, 2, 3, 5, 20, 100) for acc in (0.0, 0.105, 0.115, 0.5)]


def observe(raw: dict[str, Any]) -> list[Any]:
    """What the loop computes from ``raw`` (cached by the config's JSON)."""
    key = json.dumps(raw, sort_keys=True)
    if key in _SEEN:
        return _SEEN[key]
    run = run_of(raw)
    assert run is not None, raw
    dist = Dist(0, run.scale.workers)
    method, info, train, val, test = setup(run, torch.device("cpu"), dist)  # seeds the init with run.seed
    opt = trial_optimizer(run, method)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    spe = len(train)
    lr = group_lr(run.schedule, spe, run.epochs, method.on_epoch_start(0, run.epochs, {}), run.optim.lr)
    lrs = [lr(g["initial_lr"], s) for g in opt.param_groups for s in range(spe * run.total_epochs)]
    batches = train.epoch(0)
    first = next(batches)
    method.train()
    for step, (x, y) in enumerate([first, next(batches)]):
        for g in opt.param_groups:
            g["lr"] = lr(g["initial_lr"], step)
        train_step(method, x, y, opt, amp=False)
    params = torch.cat([p.detach().flatten() for p in method.parameters()])
    scores = evaluate(method, val, False, Dist(), seed=run.seed)  # rank 0's part of the evaluation split
    verdicts = [divergence(run.diverge, 1.0, m, info.num_classes) for m in DIVERGE_GRID]
    seen = [info.mean, info.std, info.image_shape, info.eval_split, spe, len(val), test is None, run.total_epochs,
            first[0], first[1], lrs, params, scores, verdicts]
    _SEEN[key] = seen
    return seen


def same(a: list[Any], b: list[Any]) -> bool:
    def eq(u: Any, v: Any) -> bool:
        if isinstance(u, torch.Tensor) or isinstance(v, torch.Tensor):
            return isinstance(u, torch.Tensor) and isinstance(v, torch.Tensor) and u.shape == v.shape \
                and torch.equal(u, v)
        return u == v
    return len(a) == len(b) and all(eq(u, v) for u, v in zip(a, b))


def modes(path: str) -> list[dict[str, Any]]:
    """BASE and each single change of a Literal / bool field of ``path``'s section (top-level
    fields: of ``schedule``)."""
    section = path.rsplit(".", 1)[0] + "." if "." in path else "schedule."
    base_run = run_of(BASE)
    out = [BASE]
    for p, field in FIELDS.items():
        if p == path or not p.startswith(section):
            continue
        ann = field.annotation
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        is_mode = ann is bool or typing.get_origin(ann) is typing.Literal or \
            any(typing.get_origin(a) is typing.Literal for a in args)
        if is_mode:
            out += [put(BASE, p, v) for v in others(p, base_run)]
    return out


def tries(ctx: dict[str, Any], path: str) -> list[dict[str, Any]]:
    """The valid, readable other values of ``path`` in ``ctx``, each as a config."""
    run = run_of(ctx)
    if run is None or not readable(ctx, path):
        return []
    return [c for v in others(path, run) if readable(c := put(ctx, path, v), path)]


def contexts(path: str) -> list[dict[str, Any]]:
    where = [c for c in modes(path) if tries(c, path)]
    if where:
        return where
    section = path.rsplit(".", 1)[0] + "." if "." in path else ""
    order = sorted(FIELDS, key=lambda p: not p.startswith(section))  # its own section first
    base_run = run_of(BASE)
    for p in order:
        for v in others(p, base_run) if p != path else []:
            if tries(ctx := put(BASE, p, v), path):
                return [ctx]
    return []


@pytest.mark.parametrize("path", list(FIELDS))
def test_run_field_reaches_the_computation_or_is_refused(path):
    where = contexts(path)
    if not where:  # refused everywhere: it must say why, naming the field
        run = run_of(BASE)
        with pytest.raises(ConfigError, match=f"^{path}: "):
            check_read(run, path, path)
        return
    for ctx in where:
        assert any(not same(observe(ctx), observe(alt)) for alt in tries(ctx, path)), \
            f"{path} changes nothing under {ctx} (tried {others(path, run_of(ctx))}), yet a sweep may set it"


def test_the_schema_is_enumerated():
    """The walk sees every section's fields (a new leaf is a new case above)."""
    assert {"optim.lr", "schedule.min_lr", "schedule.warmup_epochs", "data.pad", "data.val_fraction",
            "model.drop_rate", "model.kwargs", "epochs", "batch_size", "seed", "diverge.chance_after",
            "scale.workers"} <= set(FIELDS)
    assert not any(p.startswith("method") for p in FIELDS)
