"""Vision Pair Learning (methods.md §6): restricted gradient flow, the two pair losses against hand
values, the stage schedule, the modes (independent, DML, distillation from a checkpoint), per-branch
optimiser groups, EMA and Random Erasing. Tiny models (tiny_cnn + tiny_vit / tiny_vit_w48), CPU."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from raypair.config import ConfigError, OptimConfig, build_run, run_model
from raypair.loop import build_optimizer, save_checkpoint, train_step
from raypair.methods.vpl import _branch
from raypair.ops import vpl_ops as V
from raypair.ops.erasing import random_erasing

from helpers import ROOT, data_info, method_of

INFO = data_info(16, name="cifar10")


def make(epochs: int = 10, init_seed: int = 0, **kw):
    return method_of({"name": "vpl", "vit_model": "tiny_vit", **kw}, INFO, {"epochs": epochs}, init_seed=init_seed)


def batch(n: int = 8, size: int = 16):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 3, size, size, generator=g), torch.arange(n) % 10


def grads(module) -> list:
    return [p.grad for p in module.parameters()]


def all_zero(gs) -> bool:
    return all(g is None or torch.count_nonzero(g) == 0 for g in gs)


def some_nonzero(gs) -> bool:
    return any(g is not None and torch.count_nonzero(g) > 0 for g in gs)


# ------------------------------------------------------------------------------ gradient flow
@pytest.mark.parametrize("affine", ["vit", "cnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_cl_reaches_only_the_transformer_and_kl_only_the_cnn(affine, bidirectional):
    m = make(vit_model="tiny_vit_w48", affine=affine, bidirectional=bidirectional)
    assert m.affine is not None  # 48 (ViT) vs 32 (CNN) features
    x, _ = batch()
    for term in (0, 1):  # 0: L_CL alone, 1: L_KL alone
        m.zero_grad(set_to_none=True)
        hc, zc = _branch(m.model, x)
        ht, zt = _branch(m.vit, x)
        m._pair_losses(hc, ht, zc, zt)[term].backward()
        cnn, vit, aff = grads(m.model), grads(m.vit), grads(m.affine)
        if bidirectional:
            assert some_nonzero(cnn) and some_nonzero(vit)
        elif term == 0:
            assert all_zero(cnn) and some_nonzero(vit) and some_nonzero(aff)
        else:
            assert all_zero(vit) and all_zero(aff) and some_nonzero(cnn)


@pytest.mark.parametrize("stage_epoch, weights", [(0, (1, 0)), (5, (1, 1)), (9, (0, 1))])
def test_forward_loss_is_ce_plus_the_stage_terms(stage_epoch, weights):
    m = make(random_erasing=0.0)
    m.on_epoch_start(stage_epoch, 10, {})
    x, y = batch()
    out = m(x, y)
    hc, zc = _branch(m.model, x)
    ht, zt = _branch(m.vit, x)
    ce = F.cross_entropy(zc, y) + F.cross_entropy(zt, y)
    cl, kl = m._pair_losses(hc, ht, zc, zt)
    assert m.affine is None  # tiny_vit and tiny_cnn are both 32 wide
    assert out.logs["stage"] == m.stage == {(1, 0): 1, (1, 1): 2, (0, 1): 3}[weights]
    assert torch.allclose(out.loss, ce + weights[0] * cl + weights[1] * kl, atol=1e-5)
    assert torch.allclose(out.logs["loss_cl"], cl) and torch.allclose(out.logs["loss_kl"], kl)
    assert torch.equal(out.logits, zc)


# ------------------------------------------------------------------------------------- losses
def test_contrastive_loss_hand_value():
    eye = torch.eye(2)  # E = [e1, e2, e1, e2]: each row sees its positive (s=1), a zero and a one
    assert math.isclose(V.contrastive_loss(eye, eye, 1.0, False).item(), math.log(1 + 2 / math.e), rel_tol=1e-6)
    # normalising unit rows changes nothing; tau = 0.5 doubles every logit
    assert math.isclose(V.contrastive_loss(eye, eye, 0.5, True).item(), math.log(1 + 2 / math.e**2), rel_tol=1e-6)


def test_contrastive_loss_equals_the_paper_formula():
    g = torch.Generator().manual_seed(1)
    hc, ht, tau, n = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g), 0.7, 4
    s = lambda a, b: torch.exp(a @ b / tau)  # noqa: E731

    def log_p(a, pos, own):  # P(a, pos) = e^{s(a,pos)} / [sum_j e^{s(a, pos_j)} + sum_{k != i} e^{s(a, own_k)}]
        return [torch.log(s(a[i], pos[i]) / (sum(s(a[i], pos[j]) for j in range(n))
                                             + sum(s(a[i], own[k]) for k in range(n) if k != i))) for i in range(n)]

    expect = -(sum(log_p(hc, ht, hc)) + sum(log_p(ht, hc, ht))) / (2 * n)
    assert torch.allclose(V.contrastive_loss(hc, ht, tau, False), expect, atol=1e-6)


def test_kl_equals_the_formula_without_rho_squared():
    g = torch.Generator().manual_seed(2)
    zc, zt, rho = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g), 2.0
    pt, pc = F.softmax(zt / rho, 1), F.softmax(zc / rho, 1)
    expect = (pt * (pt.log() - pc.log())).sum(1).mean()
    assert torch.allclose(V.kl_toward(zc, zt, rho), expect, atol=1e-6)


# ------------------------------------------------------------------------------------- stages
def test_stages_of_every_epoch():
    assert [V.vpl_stage(e, 10, 20, 20) for e in range(10)] == [1, 1, 2, 2, 2, 2, 2, 2, 3, 3]
    assert [V.vpl_stage(e, 10, 0, 0) for e in range(10)] == [2] * 10
    assert [V.vpl_stage(e, 4, 0, 100) for e in range(4)] == [3] * 4  # y = 100: KD throughout
    m = make(x=20, y=20)
    seen = []
    for e in range(10):
        m.on_epoch_start(e, 10, {})
        seen.append(m.stage)
    assert seen == [1, 1, 2, 2, 2, 2, 2, 2, 3, 3]


def test_x_plus_y_over_100_is_rejected_naming_y():
    with pytest.raises(ConfigError, match=r"x \+ y must be <= 100, got x=60, y=50") as err:
        build_run({"method": {"name": "vpl", "x": 60, "y": 50}})
    assert err.value.field.startswith("method.") and err.value.field.endswith(".y")
    build_run({"method": {"name": "vpl", "x": 40, "y": 60}})


def test_y_is_tied_to_x_by_default():
    """P4 ties x = y (Table 8; "x = y = 20"): y null follows x. 10 epochs at x = 30: 3 / 4 / 3 (by hand)."""
    m = make(x=30)
    seen = []
    for e in range(10):
        m.on_epoch_start(e, 10, {})
        seen.append(m.stage)
    assert m.cfg.y is None and seen == [1, 1, 1, 2, 2, 2, 2, 3, 3, 3]
    assert make(x=30, y=0).cfg.y_percent() == 0
    with pytest.raises(ConfigError, match=r"x \+ y must be <= 100, got x=60, y=60 \(y tied to x\)") as err:
        build_run({"method": {"name": "vpl", "x": 60}})
    assert err.value.field.endswith(".x")


def test_defaults_are_p4s_recipe():
    """P4 §4 (methods.md §6.1): "AutoAugment + Random Erasing", EMA, x = y = 20; DIS with the PLM losses."""
    c = run_model().model_validate({"method": {"name": "vpl"}}).method
    assert (c.aug, c.ema, c.random_erasing, c.x, c.y_percent(), c.distill_loss) == \
        ("base+aa_imagenet", True, 0.25, 20, 20, "plm")


def test_stage_starts_by_hand():
    cfg = lambda **kw: run_model().model_validate({"method": {"name": "vpl", **kw}}).method  # noqa: E731
    assert cfg(x=10).stage_starts(50) == [5, 45] and cfg(x=20, y=0).stage_starts(50) == [10]
    assert cfg(x=25).stage_starts(10) == [3, 7]  # 2.5 epochs round up to 3 (halves up)
    assert cfg(x=0).stage_starts(50) == [] and cfg(x=20, mode="dml").stage_starts(50) == []


def test_inactive_knobs_per_mode():
    cfg = lambda **kw: run_model().model_validate({"method": {"name": "vpl", **kw}}).method  # noqa: E731
    assert cfg().inactive() == {"teacher_checkpoint", "student", "distill_loss", "dml_update"}
    assert "ema_decay" in cfg(ema=False).inactive()
    assert {"x", "y", "tau", "cl_normalize", "bidirectional", "affine", "rho"} <= cfg(mode="independent").inactive()
    assert "rho" not in cfg(mode="dml").inactive() and "tau" in cfg(mode="dml").inactive()
    assert "dml_update" not in cfg(mode="dml").inactive()
    assert "erase_mode" in cfg(random_erasing=0.0).inactive() and "ema_decay" not in cfg().inactive()
    with pytest.raises(ValidationError, match="teacher_checkpoint: mode distill needs"):
        cfg(mode="distill")


# -------------------------------------------------------------------------------------- modes
def test_independent_is_ce_only_and_dml_adds_both_kls():
    x, y = batch()
    ind = make(mode="independent", random_erasing=0.0)
    zc, zt = ind.model(x), ind.vit(x)
    assert torch.allclose(ind(x, y).loss, F.cross_entropy(zc, y) + F.cross_entropy(zt, y), atol=1e-6)
    dml = make(mode="dml", dml_update="joint", rho=2.0, random_erasing=0.0)
    assert dml.parts == 1 and make(mode="dml").parts == 2 and make().parts == 1
    zc, zt = dml.model(x), dml.vit(x)
    pc, pt = F.softmax(zc / 2, 1), F.softmax(zt / 2, 1)
    kl = lambda p, q: (p * (p.log() - q.log())).sum(1).mean()  # noqa: E731  KL(p || q)
    out = dml(x, y)
    expect = F.cross_entropy(zc, y) + F.cross_entropy(zt, y) + kl(pt, pc) + kl(pc, pt)
    assert torch.allclose(out.loss, expect, atol=1e-5) and "loss_cl" not in out.logs
    assert dml.affine is None and ind.affine is None


def _sgd_(net, loss, lr: float) -> None:
    """A plain SGD step on ``net``'s parameters, by hand."""
    params = list(net.parameters())
    with torch.no_grad():
        for p, g in zip(params, torch.autograd.grad(loss, params)):
            p -= lr * g


@pytest.mark.parametrize("order", ["cnn_first", "vit_first"])
def test_dml_alternates_the_second_branch_learns_from_the_firsts_updated_outputs(order):
    """DML's Algorithm 1 (Zhang et al. 2018), checked against two hand SGD steps: the first branch
    steps on CE + KL toward the second's softmax, then the second steps on CE + KL toward the
    first's output recomputed with its updated weights (not the output the first step started from)."""
    x, y = batch()
    m = make(mode="dml", dml_update=order, rho=2.0, random_erasing=0.0, lr_cnn=0.5, lr_vit=0.3).train()
    nets = {"cnn": copy.deepcopy(m.model), "vit": copy.deepcopy(m.vit)}
    opt = build_optimizer(OptimConfig(name="sgd", lr=1.0, momentum=0.0, nesterov=False, weight_decay=0.0), m.optim_groups())
    sums, out = train_step(m, x, y, opt, amp=False)

    soft = lambda z: F.softmax(z / 2.0, 1)  # noqa: E731  rho = 2
    kl = lambda p, q: (p * (p.log() - q.log())).sum(1).mean()  # noqa: E731  KL(p || q), batchmean
    a, b = ("cnn", "vit") if order == "cnn_first" else ("vit", "cnn")
    lr = {"cnn": 0.5, "vit": 0.3}
    za, zb = nets[a](x), nets[b](x).detach()
    loss1 = F.cross_entropy(za, y) + kl(soft(zb), soft(za))
    stale_target = za.detach()
    _sgd_(nets[a], loss1, lr[a])
    za_new = nets[a](x).detach()
    stale = copy.deepcopy(nets[b])  # what a joint step would give b: the target from before a's step
    zb = nets[b](x)
    loss2 = F.cross_entropy(zb, y) + kl(soft(za_new), soft(zb))
    _sgd_(nets[b], loss2, lr[b])
    _sgd_(stale, F.cross_entropy(stale(x), y) + kl(soft(stale_target), soft(stale(x))), lr[b])

    got = {"cnn": m.model, "vit": m.vit}
    for name in ("cnn", "vit"):
        for (k, want), have in zip(nets[name].state_dict().items(), got[name].state_dict().values()):
            assert torch.allclose(have, want, atol=1e-6), f"{name}.{k}"
    gap = max((p - q).abs().max() for p, q in zip(got[b].parameters(), stale.parameters()))
    assert gap > 1e-4, "the second branch's step must use the first branch's updated outputs"
    assert torch.allclose(sums[0] / len(y), (loss1 + loss2).detach().double(), atol=1e-5)
    assert {"loss_ce_cnn", "loss_ce_vit", "loss_kl", "loss_kl_vit", "train_acc_cnn"} <= set(out.logs)


def _trained_vit_checkpoint(folder: Path):
    """A checkpoint of a run that trained the transformer: an independent VPL run after one SGD step."""
    src = make(mode="independent")
    opt = build_optimizer(OptimConfig(name="sgd", lr=0.5), src.optim_groups())
    x, y = batch()
    src(x, y).loss.backward()
    opt.step()
    save_checkpoint(folder, src, opt, 1, 1, {})
    return src


def test_distill_loads_the_teacher_and_keeps_it_frozen(tmp_path):
    src = _trained_vit_checkpoint(tmp_path)
    m = make(mode="distill", teacher_checkpoint=str(tmp_path), random_erasing=0.0, rho=2.0)
    for k, v in src.vit.state_dict().items():
        assert torch.equal(m.vit.state_dict()[k], v), k
    m.train()
    assert not m.vit.training and all(not p.requires_grad for p in m.vit.parameters())
    x, y = batch()
    out = m(x, y)
    zc, zt = m.model(x), m.vit(x)
    assert torch.allclose(out.loss, F.cross_entropy(zc, y) + V.kl_toward(zc, zt, 2.0), atol=1e-6)
    out.loss.backward()
    assert all(p.grad is None for p in m.vit.parameters()) and some_nonzero(grads(m.model))
    assert [len(g["params"]) for g in m.optim_groups()] == [len(list(m.model.parameters()))]
    # a run whose `model` was the transformer (e.g. ERM): its "model." weights; state.pt given directly
    erm = {"method": {f"model.{k}": v for k, v in src.vit.state_dict().items()}}
    torch.save(erm, tmp_path / "erm.pt")
    m2 = make(mode="distill", teacher_checkpoint=str(tmp_path / "erm.pt"))
    assert all(torch.equal(a, b) for a, b in zip(m2.vit.parameters(), src.vit.parameters()))
    with pytest.raises(ValueError, match="teacher_checkpoint: its weights do not fit vit_model=tiny_vit_w48"):
        make(mode="distill", teacher_checkpoint=str(tmp_path), vit_model="tiny_vit_w48")


def test_vit_weights_load_into_the_transformer_branch(tmp_path):
    """``vit_weights`` starts the transformer from a state dict (P4's ImageNet-pretrained ViT-B for
    transfer); its classifier, of another class count, is re-initialised; the CNN is untouched."""
    from raypair.config import ModelConfig
    from raypair.models import build_model

    torch.manual_seed(5)
    src = build_model(ModelConfig(name="tiny_vit"), 7, 3, image_size=(16, 16))  # 7 classes, not 10
    torch.save(src.state_dict(), tmp_path / "vit.pth")
    m, plain = make(vit_weights=str(tmp_path / "vit.pth")), make()
    head = {k for k, v in src.state_dict().items() if v.shape[:1] == (7,)}  # the 7-class classifier's weight, bias
    assert len(head) == 2
    for k, v in src.state_dict().items():
        if k not in head:
            assert torch.equal(m.vit.state_dict()[k], v), k
    assert m.vit.get_classifier().out_features == 10
    assert all(torch.equal(a, b) for a, b in zip(m.model.parameters(), plain.model.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(m.vit.parameters(), plain.vit.parameters()))
    with pytest.raises(ValueError, match="vit_weights: .*not a state dict file"):
        make(vit_weights=str(tmp_path / "vit.txt"))


def test_optim_groups_carry_branch_lrs_and_the_affine_layer():
    m = make(vit_model="tiny_vit_w48", lr_cnn=3e-3, lr_vit=2e-4, weight_decay_vit=0.05, ema=True)
    cnn, vit = m.optim_groups()
    assert (cnn["lr"], vit["lr"], vit["weight_decay"]) == (3e-3, 2e-4, 0.05) and "weight_decay" not in cnn
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(cnn["params"]) == ids(m.model.parameters())
    assert ids(vit["params"]) == ids(m.vit.parameters()) | ids(m.affine.parameters())
    assert ids(cnn["params"]) | ids(vit["params"]) == ids(p for p in m.parameters() if p.requires_grad)
    opt = build_optimizer(OptimConfig(name="adamw", lr=1.0, weight_decay=0.01), m.optim_groups())
    assert [(g["lr"], g["weight_decay"]) for g in opt.param_groups] == [(3e-3, 0.01), (2e-4, 0.05)]


def test_vit_seed_fixes_the_transformer_init():
    a, b = make(vit_seed=7), make(vit_seed=7)
    c = make(vit_seed=7, init_seed=123)  # another torch RNG state before the build
    assert all(torch.equal(p, q) and torch.equal(p, r) for p, q, r in zip(a.vit.parameters(), b.vit.parameters(),
                                                                          c.vit.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.vit.parameters(), make().vit.parameters()))


# ------------------------------------------------------------------------------------------ EMA
def test_ema_update_formula_and_decay():
    assert V.ema_decay(torch.tensor(0), 0.9999).item() == pytest.approx(0.1)
    assert V.ema_decay(torch.tensor(90), 0.9999).item() == pytest.approx(0.91)
    assert V.ema_decay(torch.tensor(10**6), 0.9999).item() == pytest.approx(0.9999)
    ema, model = torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([4.0, 8.0]))
        model.num_batches_tracked.fill_(5)
    V.ema_update_(ema, model, torch.tensor(0.75))
    assert torch.equal(ema.weight, torch.tensor([1.75, 2.75]))  # 0.75 * 1 + 0.25 * m
    assert ema.num_batches_tracked.item() == 5


def test_ema_lags_the_optimiser_by_one_step():
    m = make(ema=True)
    x, y = batch()
    with torch.no_grad():
        for p in m.model.parameters():
            p.add_(1.0)  # as if an optimiser step moved the weights
    old = [p.clone() for p in m.cnn_ema.parameters()]
    m.train()(x, y)  # t = 0: decay 0.1
    for e, o, w in zip(m.cnn_ema.parameters(), old, m.model.parameters()):
        assert torch.allclose(e, 0.1 * o + 0.9 * w, atol=1e-6)
    assert m.ema_step.item() == 1
    m.eval()(x, y)  # no update outside training mode
    assert m.ema_step.item() == 1


def test_eval_logits_keys():
    x, _ = batch(4)
    assert list(make(ema=False).eval().eval_logits(x)) == ["cnn", "vit"]
    heads = make().eval().eval_logits(x)  # EMA on by default (P4's recipe)
    assert list(heads) == ["cnn", "vit", "cnn_ema", "vit_ema"] and all(v.shape == (4, 10) for v in heads.values())


# ----------------------------------------------------------------------------- random erasing
def test_random_erasing_properties():
    x, _ = batch(64, size=32)
    out, erased = random_erasing(x, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(out, x) and not erased.any()
    out, erased = random_erasing(x, 1.0, torch.Generator().manual_seed(0))
    changed = out != x
    assert erased.all() and changed.flatten(1).any(1).all()
    again, _ = random_erasing(x, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    # const mode: the changed pixels are one zero rectangle per image (all channels), area in [0.02, 1/3]
    out, _ = random_erasing(x, 1.0, torch.Generator().manual_seed(0), mode="const")
    box = (out == 0).all(1)  # [B, H, W]
    rows, cols = box.any(2).sum(1), box.any(1).sum(1)
    assert torch.equal(box.sum((1, 2)), rows * cols) and torch.equal((out != x).any(1), box)
    frac = (rows * cols).float() / 1024
    assert (frac > 0.01).all() and (frac < 0.36).all()


def test_mix_erases_the_shared_batch_and_keeps_one_hot_targets():
    m = make(random_erasing=1.0)
    x, y = batch()
    mixed = m.mix(x, y)
    assert torch.equal(mixed.target, F.one_hot(y, 10).float()) and (mixed.x != x).flatten(1).any(1).all()
    assert mixed.logs["erased"] == 1.0


def test_both_branches_see_the_same_erased_batch():
    m = make(mode="independent", random_erasing=1.0)
    x, y = batch()
    state = m.generator.get_state()
    out = m(x, y)
    xe, erased = random_erasing(x, 1.0, torch.Generator().set_state(state))
    assert erased.all()
    expect = F.cross_entropy(m.model(xe), y) + F.cross_entropy(m.vit(xe), y)
    assert torch.allclose(out.loss, expect, atol=1e-6)


# ------------------------------------------------------------------ metrics, space, fp32 (issue 12)


def _space(tmp_path, method: dict, space: dict, metric: str = "val_acc_vit"):
    import yaml

    spec = {"name": "t", "run": {"method": method, "model": {"name": "tiny_cnn"}, "epochs": 4},
            "space": space, "tune": {"metric": metric, "scheduler": {"name": "none"}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path / "s.yaml"


def test_the_vpl_spaces_search_and_stop_on_the_transformer_with_the_papers_recipe():
    from raypair.experiments.sweep import load_sweep

    for name in ("vpl.yaml", "vpl_raw.yaml"):
        sw = load_sweep(ROOT / "search_spaces" / name)
        m = sw.base_run.method
        assert sw.metric == "val_acc_vit" and sw.scheduler().name == "asha"  # ASHA stops on the same metric
        assert (m.aug, m.random_erasing, m.ema) == ("base+aa_cifar10", 0.25, True)  # AutoAugment + RE + EMA
        assert "method.cl_normalize" not in sw.space
    assert load_sweep(ROOT / "search_spaces" / "vpl_raw.yaml").base_run.method.cl_normalize is False


def test_tune_metric_must_be_one_the_method_reports(tmp_path):
    from raypair.experiments.sweep import load_sweep

    load_sweep(_space(tmp_path, {"name": "vpl"}, {"method.rho": {"choice": [1.0, 2.0]}}))
    load_sweep(_space(tmp_path, {"name": "vpl", "ema": True}, {"method.rho": {"choice": [1.0]}}, "val_acc_vit_ema"))
    bad = [({"name": "vpl"}, "val_acc_vitt"), ({"name": "vpl", "ema": False}, "val_acc_vit_ema"),  # no EMA copy
           ({"name": "erm"}, "val_acc_vit")]
    for method, metric in bad:
        with pytest.raises(ConfigError, match=rf"^tune.metric: not a metric that method {method['name']} reports "
                                              rf".*\(got '{metric}'\)$"):
            load_sweep(_space(tmp_path, method, {}, metric))


@pytest.mark.parametrize("kw", [{}, {"ema": True}, {"mode": "independent", "ema": True}])
def test_declared_metrics_are_what_the_loop_reports(kw):
    from raypair.config import reported_metrics
    from raypair.data import DeviceLoader
    from raypair.loop import Dist, divergence, evaluate

    m = make(**kw)
    assert tuple(m.eval().eval_logits(batch(2)[0])) == m.cfg.eval_heads()
    x = torch.randint(0, 256, (24, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    loader = DeviceLoader(x, torch.arange(24) % 10, batch_size=8, mean=INFO.mean, std=INFO.std, train=False)
    got = evaluate(m, loader, False, Dist())
    declared = reported_metrics(m.cfg)
    assert set(got) <= declared and {f"val_acc_{h}" for h in m.cfg.eval_heads()} <= set(got)
    assert set(m.train()(*batch()).logs) >= m.cfg.train_metrics()
    rule = run_model().model_validate({"method": {"name": "vpl"}, "diverge": {"chance_after": 1}}).diverge
    at_chance = {**got, "train_loss": 1.0, "epoch": 1, "val_acc": 0.1}  # the loop's chance rule still reads val_acc
    assert "at chance" in divergence(rule, 1.0, at_chance, 10)


def test_tau_range_depends_on_normalised_or_raw_similarities(tmp_path):
    from raypair.experiments.sweep import load_sweep

    load_sweep(_space(tmp_path, {"name": "vpl"}, {"method.tau": {"loguniform": [0.03, 1.0]}}))
    load_sweep(_space(tmp_path, {"name": "vpl", "cl_normalize": False, "tau": 30.0},
                      {"method.tau": {"loguniform": [3.0, 300.0]}}))
    with pytest.raises(ConfigError, match=r"^space.method.tau: must lie within \[1, 1000\] with "
                                          r"method.cl_normalize=False \(raw dot products"):
        load_sweep(_space(tmp_path, {"name": "vpl"}, {"method.tau": {"loguniform": [0.03, 1.0]},
                                                      "method.cl_normalize": {"choice": [True, False]}}))
    with pytest.raises(ConfigError, match=r"^space.method.tau: must lie within \[0.01, 10\] \(cosine"):
        load_sweep(_space(tmp_path, {"name": "vpl"}, {"method.tau": {"loguniform": [3.0, 300.0]}}))


def test_contrastive_similarities_are_fp32_under_autocast():
    g = torch.Generator().manual_seed(0)
    hc, ht = torch.randn(16, 64, generator=g) * 3, torch.randn(16, 64, generator=g) * 3  # raw s ~ 1e2
    ref = V.contrastive_loss(hc, ht, 0.5, False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert V.contrastive_loss(hc, ht, 0.5, False).item() == ref.item()
        assert V.contrastive_loss(hc.bfloat16(), ht.bfloat16(), 0.5, False).dtype == torch.float32


def test_distill_into_a_transformer_student(tmp_path):
    """P4 Table 4's DIS ViT-B row: the CNN (the checkpoint's ``model.`` weights) is the frozen teacher,
    the transformer learns CE + KL toward it under ``distill_loss: kl``; only the transformer trains."""
    src = _trained_vit_checkpoint(tmp_path)
    m = make(mode="distill", student="vit", distill_loss="kl", teacher_checkpoint=str(tmp_path), random_erasing=0.0,
             rho=2.0, ema=True)
    for k, v in src.model.state_dict().items():
        assert torch.equal(m.model.state_dict()[k], v), k
    assert not any(torch.equal(a, b) for a, b in zip(m.vit.parameters(), src.vit.parameters()) if a.numel() > 1)
    m.train()
    assert not m.model.training and m.vit.training and all(not p.requires_grad for p in m.model.parameters())
    x, y = batch()
    out = m(x, y)
    zc, zt = m.model(x), m.vit(x)
    assert torch.allclose(out.loss, F.cross_entropy(zt, y) + V.kl_toward(zt, zc, 2.0), atol=1e-6)
    assert torch.equal(out.logits, zt)
    out.loss.backward()
    assert all(p.grad is None for p in m.model.parameters()) and some_nonzero(grads(m.vit))
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert [ids(g["params"]) for g in m.optim_groups()] == [ids(m.vit.parameters())]
    assert m.cfg.eval_heads() == ("cnn", "vit", "vit_ema") == tuple(m.eval().eval_logits(x))
    assert m.cnn_ema is None and {"lr_cnn", "weight_decay_cnn"} <= m.cfg.inactive() and "lr_vit" not in m.cfg.inactive()
    with pytest.raises(ValueError, match="teacher_checkpoint: .* has no 'model.' weights"):
        torch.save({"method": {"vit.w": torch.zeros(1)}}, tmp_path / "vit_only.pt")
        make(mode="distill", student="vit", teacher_checkpoint=str(tmp_path / "vit_only.pt"))


def _paper_cl(hc, ht, tau: float):
    """P4's L_CL written out (methods.md §6.1) on cosine similarities, a loop per anchor."""
    hc, ht, n = F.normalize(hc, dim=1), F.normalize(ht, dim=1), len(hc)
    s = lambda a, b: torch.exp(a @ b / tau)  # noqa: E731

    def log_p(a, pos, own):
        return [torch.log(s(a[i], pos[i]) / (sum(s(a[i], pos[j]) for j in range(n))
                                             + sum(s(a[i], own[k]) for k in range(n) if k != i))) for i in range(n)]
    return -(sum(log_p(hc, ht, hc)) + sum(log_p(ht, hc, ht))) / (2 * n)


@pytest.mark.parametrize("vit_model", ["tiny_vit", "tiny_vit_w48"])
def test_distill_plm_loss_of_a_transformer_student(tmp_path, vit_model):
    """P4's DIS (methods.md §6.1): a transformer student learns "both hard labels and losses defined in
    pair learning module": CE + L_CL toward the frozen CNN's embeddings (no KL), the default."""
    _trained_vit_checkpoint(tmp_path)
    m = make(mode="distill", student="vit", teacher_checkpoint=str(tmp_path), random_erasing=0.0,
             vit_model=vit_model, tau=0.3)
    assert m.cfg.distill_loss == "plm" and (m.affine is not None) == (vit_model == "tiny_vit_w48")
    m.train()
    x, y = batch()
    out = m(x, y)
    (hc, _), (ht, zt) = _branch(m.model, x), _branch(m.vit, x)
    ht = ht if m.affine is None else ht @ m.affine.weight.T + m.affine.bias
    expect = F.cross_entropy(zt, y) + _paper_cl(hc, ht, 0.3)
    assert torch.allclose(out.loss, expect, atol=1e-5) and "loss_kl" not in out.logs
    assert torch.allclose(out.logs["loss_cl"], _paper_cl(hc, ht, 0.3), atol=1e-5)
    out.loss.backward()
    assert all(p.grad is None for p in m.model.parameters()) and some_nonzero(grads(m.vit))
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    affine = set() if m.affine is None else ids(m.affine.parameters())
    assert [ids(g["params"]) for g in m.optim_groups()] == [ids(m.vit.parameters()) | affine]
    assert affine == set() or some_nonzero(grads(m.affine))
    assert "rho" in m.cfg.inactive() and not {"tau", "cl_normalize", "distill_loss"} & m.cfg.inactive()


def test_distill_plm_loss_of_a_cnn_student_is_ce_plus_kl(tmp_path):
    """A CNN student's PLM loss is L_KL (restricted flow: L_CL never reaches the CNN): CE + KL."""
    _trained_vit_checkpoint(tmp_path)
    m = make(mode="distill", teacher_checkpoint=str(tmp_path), random_erasing=0.0, rho=2.0).train()
    x, y = batch()
    zc, zt = m.model(x), m.vit(x)
    pt, pc = F.softmax(zt / 2.0, 1), F.softmax(zc / 2.0, 1)
    expect = F.cross_entropy(zc, y) + (pt * (pt.log() - pc.log())).sum(1).mean()
    assert torch.allclose(m(x, y).loss, expect, atol=1e-5) and m.affine is None
    assert {"tau", "cl_normalize", "affine"} <= m.cfg.inactive() and "rho" not in m.cfg.inactive()


def _dml_rank(rank: int, world: int, init: str, out: str) -> None:
    from raypair.loop import Dist, run_trial

    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    cfg = run_model().model_validate({
        "data": {"name": "digits", "image_size": 16}, "model": {"name": "tiny_cnn"},
        "method": {"name": "vpl", "vit_model": "tiny_vit", "mode": "dml"}, "epochs": 1, "batch_size": 64,
        "schedule": {"warmup_epochs": 0}, "scale": {"workers": world, "gpus_per_worker": 0}})
    history: list = []
    run_trial(cfg, lambda metrics, ckpt: history.append(metrics), dist=Dist(rank, world), device=torch.device("cpu"))
    torch.save(history, f"{out}/{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_alternating_dml_trains_under_ddp(tmp_path):
    """Each part leaves the other branch without gradients: DDP must not wait for them."""
    torch.multiprocessing.spawn(_dml_rank, args=(2, f"file://{tmp_path}/init", str(tmp_path)), nprocs=2)
    h0, h1 = (torch.load(tmp_path / f"{r}.pt", weights_only=False) for r in (0, 1))
    assert h0[0]["worker"]["train_loss"] != h1[0]["worker"]["train_loss"]  # different shards
    assert h0[0]["train_loss"] == h1[0]["train_loss"] and math.isfinite(h0[0]["train_loss"])
    assert {"loss_kl", "loss_kl_vit"} <= set(h0[0])
