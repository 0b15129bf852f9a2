"""Every knob of every method reaches its computation: a sweep over a knob that changes nothing is
impossible. For each field of each method's config, in every mode (each other Literal/bool field
set to each of its values) where the field is active, changing its value must change the loss,
the logits, the gradients, the optimiser's groups, the epoch's constant learning rate or the evaluation
logits within twelve epochs. A changed log alone does not count: a knob must reach the computation.
Fields a config reports as inactive are refused by the search-space checker instead."""
from __future__ import annotations

import itertools
import typing
from typing import Any, Iterator

import pytest
import torch
from pydantic import ValidationError

from raypair.config import run_model
from raypair.data import DeviceLoader
from raypair.methods import METHODS, build_method

from helpers import alternatives, data_info

INFO = data_info(32, name="cifar10", classes=tuple("abcdefghij"))
SKIP = {"name", "aug"}  # aug is applied by the loader (tests/loop/test_loop.py checks it reaches it)
EPOCHS = 12  # the run's epochs; a fine-tuning phase follows them
STEPS = 2  # batches per epoch: a knob of a gated pair batch (PairTraining's ramp gate) needs a second draw


def run_of(method_cfg: dict[str, Any]):
    try:
        return run_model().model_validate({"method": method_cfg, "model": {"name": "tiny_cnn"}, "epochs": EPOCHS})
    except ValidationError:
        return None


def config(method_cfg: dict[str, Any]):
    run = run_of(method_cfg)
    return None if run is None else run.method


def active(method_cfg: dict[str, Any], knob: str) -> bool:
    cfg = config(method_cfg)
    return cfg is not None and knob not in cfg.inactive()


def build(method_cfg: dict[str, Any]):
    run = run_of(method_cfg)
    if run is None:
        return None
    g = torch.Generator().manual_seed(1)
    pool_x = torch.randint(0, 256, (64, 3, 32, 32), generator=g, dtype=torch.uint8)
    pool = DeviceLoader(pool_x, torch.arange(64) % 10, batch_size=8, mean=INFO.mean, std=INFO.std,
                        train=True, augment=True)
    torch.manual_seed(0)
    return run.method, build_method(run, INFO, pool=pool)


def steps(method_cfg: dict[str, Any]) -> Iterator[Any]:
    """Per step (``STEPS`` an epoch): loss, logits, gradients and optimiser groups, the epoch's
    constant lr and evaluation logits on a fixed batch, over the run's ``EPOCHS`` and any the method trains after
    them (a fine-tuning phase). ``step.logs`` are left out: a knob that changes only what is logged
    has not reached the computation."""
    built = build(method_cfg)
    assert built is not None
    cfg, m = built
    gx = torch.Generator().manual_seed(2)
    x, y = torch.randn(8, 3, 32, 32, generator=gx), torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    for e in range(EPOCHS + cfg.extra_epochs()):
        lr = m.on_epoch_start(e, EPOCHS, {"train_acc": e / (EPOCHS - 1), "train_loss": 2.0 - 0.1 * e})
        m.generator.manual_seed(100 + e)
        for _ in range(STEPS):
            m.train()
            step = m(x, y)
            m.zero_grad(set_to_none=True)
            step.loss.backward()  # knobs that only steer gradients (VPL's bidirectional)
            grad = torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None])
            groups = [{k: v for k, v in g.items() if k != "params"} for g in m.optim_groups()]
            computed = {"_grad": grad.tolist(), "_groups": groups}
            m.eval()
            heads = m.eval_logits(x)
            yield (float(step.loss.detach()), step.logits.detach(), computed, lr,
                   {k: v.detach() for k, v in heads.items()})


def same(a: Any, b: Any) -> bool:
    (la, za, ga, ra, ha), (lb, zb, gb, rb, hb) = a, b
    return (la == lb and ga == gb and ra == rb and za.shape == zb.shape and torch.equal(za, zb)
            and ha.keys() == hb.keys() and all(torch.equal(ha[k], hb[k]) for k in ha))


def differs(ctx_a: dict[str, Any], ctx_b: dict[str, Any]) -> bool:
    """Whether two configs train differently in some epoch, or for a different number of epochs (a
    fine-tuning phase after the run's); stops at the first difference."""
    return any(a is None or b is None or not same(a, b) for a, b in itertools.zip_longest(steps(ctx_a), steps(ctx_b)))


def contexts(name: str, knob: str) -> list[dict[str, Any]]:
    """Where to test ``knob``: the defaults and every mode (each Literal / bool field set to each
    other value); if the knob is read in none of those, the first single change of another field
    that makes it read (e.g. ft_lr once ft_epochs > 0)."""
    cfg_cls = METHODS.get(name).Config
    default = cfg_cls(name=name)
    base = {"name": name}
    modes, others = [base], []
    for fname, field in cfg_cls.model_fields.items():
        if fname in SKIP or fname == knob:
            continue
        ann = field.annotation
        is_mode = ann is bool or typing.get_origin(ann) is typing.Literal
        (modes if is_mode else others).extend({**base, fname: v} for v in alternatives(field, getattr(default, fname)))
    where = [c for c in modes if active(c, knob)]
    return where or [c for c in others if active(c, knob)][:1]


CASES = [(n, f) for n in METHODS.names() for f, fi in METHODS.get(n).Config.model_fields.items()
         if f not in SKIP and not (fi.json_schema_extra or {}).get("tested_in")]


@pytest.mark.parametrize("name, knob", CASES)
def test_knob_reaches_the_computation(name, knob):
    field = METHODS.get(name).Config.model_fields[knob]
    where = contexts(name, knob)
    assert where, f"{name}.{knob} is inactive in every mode: no code reads it"
    for ctx in where:
        alts = [v for v in alternatives(field, getattr(config(ctx), knob)) if active({**ctx, knob: v}, knob)]
        assert alts, f"{name}.{knob}: no other valid value to try in context {ctx}"
        assert any(differs(ctx, {**ctx, knob: v}) for v in alts), \
            f"{name}.{knob} changes nothing in context {ctx} (tried {alts})"


def test_inactive_knob_cannot_be_swept(tmp_path):
    """The checker's side of the contract, on a real search-space file."""
    import yaml

    from raypair.config import ConfigError
    from raypair.experiments.sweep import load_sweep

    spec = {"name": "t", "run": {"method": {"name": "erm"}, "optim": {"name": "adamw", "lr": 0.001}},
            "space": {"optim.momentum": {"uniform": [0.5, 0.9]}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="^space.optim.momentum: is not read"):
        load_sweep(tmp_path / "s.yaml")
