"""Vision Pair Learning (P4: Tong, Yu, arXiv 2112.00965; methods.md §6).

A CNN (the run's ``model``) and a transformer (``vit_model``, built here) see the same augmented image.
The transformer starts from random weights, or from ``vit_weights`` (a local state dict, as
``model.weights``; P4 Table 5 fine-tunes an ImageNet-pretrained ViT-B).
h = pre-logits ``forward_head(forward_features(x), pre_logits=True)``, z = the branch's classifier on h.
``mode: vpl``: L = CE(z_c, y) + CE(z_t, y) + w_cl L_CL + w_kl L_KL, with
  L_CL = CE over S = E E^T / tau (diagonal masked), E = [sg(h_c); A(h_t)] (rows L2-normalised if
         cl_normalize), row i's target its other view, mean over the 2N rows  ((2N-1)-way, s = dot)
  L_KL = KL(softmax(sg(z_t) / rho) || softmax(z_c / rho)), batchmean, no rho^2
  stage (on_epoch_start, 0-based e of E): 1 = (w_cl, w_kl) (1, 0) if e < round(x% E); 3 = (0, 1) if
  e >= E - round(y% E); else 2 = (1, 1); halves round up; x = y = 0: one stage (default ``x`` 20 with
  ``y`` None, tied to x: P4 "with x = y = 20", Table 8 ties them; an int y unties). sg = detach, so L_CL
  reaches only the transformer (+ A) and L_KL only the CNN; ``bidirectional`` drops both sg (Table 7 "Bi").
  Both terms are computed in every stage (logged; DDP needs the affine layer in every graph), gated by w.
Other modes: ``independent`` CE only; ``dml`` (P4 Table 3's DML, Zhang et al. CVPR 2018) CE + KL of
each branch toward the other's sg softmax (no CL), by DML's Algorithm 1 (``dml_update``, default
``cnn_first``): within a batch one branch steps, both predictions are recomputed, then the other steps,
its KL target the first's updated output (no gradient, training mode: its BatchNorm statistics see
the batch twice). Two optimiser steps per batch (``parts = 2``); train_loss sums both. Which branch
goes first is an ASSUMPTION (``vit_first`` swaps); ``joint`` is one step on both KLs.
``distill`` (P4 Table 4 "DIS"): the ``student`` branch learns, toward the other, frozen branch, "both hard
labels and losses defined in pair learning module" (P4, its DIS baseline; methods.md §6.1): CE + the PLM loss that
reaches its branch under restricted gradient flow, ``distill_loss: plm`` (default): a CNN student
CE + L_KL, a transformer student CE + L_CL (the frozen CNN's embeddings are the constants sg(h_c), the
affine layer A is built and trained with the student, tau / cl_normalize / affine as in mode vpl);
``distill_loss: kl``: CE + L_KL for either student (raypair's earlier DIS, classic KD; a switch).
``student: cnn``: the teacher is the transformer, the ``vit.`` weights of ``teacher_checkpoint`` (a
raypair checkpoint folder or state.pt), else its ``model.`` weights; ``student: vit`` (DIS's ViT-B row):
the teacher is the CNN, the checkpoint's ``model.`` weights (an ERM run, or a VPL run's CNN branch).
Negatives of L_CL: the worker's own N images.
Affine layer A (only when the widths differ, and only in mode vpl or a distill that uses L_CL): ``affine: vit`` (default,
ASSUMPTION §6.2) maps h_t to the CNN width; ``affine: cnn`` maps sg(h_c) to the transformer width,
after the detach. Either way A is in the transformer's optimiser group.
ASSUMPTIONS (methods.md §6.2-§6.3) and their switches:
- cl_normalize=True with tau=0.1 (``cl_normalize``, ``tau``); rho=1 (``rho``); affine side (``affine``).
- separate AdamW groups per branch: ``lr_cnn`` 1e-3 / ``lr_vit`` 4e-4 (absolute: optim.lr is not read;
  the paper's 5:2 ratio at a CPU from-scratch scale, batch 128), ``weight_decay_cnn`` / ``weight_decay_vit``
  (None = optim.weight_decay); the loop's schedule (warm-up: schedule.warmup_epochs) scales both.
- EMA of both branches, decay_t = min(``ema_decay`` 0.9999, (1 + t) / (10 + t)) (``ema``, on: P4's recipe): copies
  ``cnn_ema`` / ``vit_ema`` (float params and buffers averaged) are updated in training-mode forward
  before the loss, i.e. from the weights of the previous optimiser step (they lag by one step);
  distill's frozen teacher has no EMA copy.
- Random Erasing p = 0.25 on the shared batch (``random_erasing``), per-pixel N(0, 1) fill (``erase_mode``).
- every branch evaluated, raw and EMA: eval_logits {"cnn", "vit"[, "cnn_ema", "vit_ema"]} (declared by
  ``VplConfig.eval_heads``). Metrics: ``val_acc`` / ``test_acc`` (+ ``_acc5``) are the CNN's top-1 (top-5),
  beside P4 Table 2's "VPL ResNet-50" row; ``*_acc_vit`` beside "VPL ViT-B"; ``*_acc_<b>_ema`` the EMA
  copies'; ``train_acc_cnn`` / ``_vit`` per branch. Which weights P4 reports is UNKNOWN (methods.md §6.3).
  Search on val_acc_vit: tau and cl_normalize act only through L_CL, which reaches only the transformer,
  the branch of P4's main gains (Table 2, ViT-B 77.15 -> 80.95 at 100 ep).
- recipe "AutoAugment + Random Erasing", "EMA" (P4 §4, methods.md §6.1): the defaults ``aug:
  base+aa_imagenet`` (P4's policy; the CIFAR files use ``base+aa_cifar10``), ``random_erasing`` 0.25, ``ema`` on.
- tau's scale follows the similarity: ``search_range`` keeps a searched tau in [0.01, 10] for cosine
  similarities, [1, 1000] for raw dot products (~160 at init). L_CL is computed in fp32, autocast off.
- the transformer's init: the torch RNG after the CNN's (None) or its own seed (``vit_seed``).
Tested (tests/test_vpl.py): gradient flow of L_CL / L_KL; hand values; stages; modes (DML by hand SGD).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raypair.config import ModelConfig
from raypair.config.methods.vpl import VplConfig
from raypair.methods.base import METHODS, Method, Mixed, StepOut
from raypair.models import build_model
from raypair.ops import vpl_ops as V
from raypair.ops.erasing import random_erasing
from raypair.ops.losses import one_hot


def _branch(m: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    h = m.forward_head(m.forward_features(x), pre_logits=True)
    return h, m.get_classifier()(h)


def _accs(zc: Tensor, zt: Tensor, y: Tensor) -> dict[str, Tensor]:
    return {"train_acc_cnn": (zc.detach().argmax(1) == y).float().mean(),
            "train_acc_vit": (zt.detach().argmax(1) == y).float().mean()}


def _frozen_copy(m: nn.Module) -> nn.Module:
    return copy.deepcopy(m).requires_grad_(False)


@METHODS.register("vpl")
class Vpl(Method):
    Config = VplConfig

    def __init__(self, cfg: VplConfig, model: nn.Module, info: Any) -> None:
        super().__init__(cfg, model, info)
        c, hw = info.image_shape[0], tuple(info.image_shape[1:3])  # (H, W): non-square images too
        vcfg, distill = ModelConfig(name=cfg.vit_model, weights=cfg.vit_weights), cfg.mode == "distill"
        with torch.random.fork_rng(devices=[], enabled=cfg.vit_seed is not None):
            if cfg.vit_seed is not None:
                torch.manual_seed(cfg.vit_seed)
            self.vit = build_model(vcfg, info.num_classes, c, image_size=hw)
        if distill:
            to_vit = cfg.student == "cnn"
            prefixes, fit = (("vit.", "model."), f"vit_model={cfg.vit_model}") if to_vit else (("model.",), "model")
            try:
                self._teacher().load_state_dict(V.teacher_state(cfg.teacher_checkpoint, prefixes))
            except RuntimeError as e:  # a teacher of another architecture than its branch
                raise ValueError(f"teacher_checkpoint: its weights do not fit {fit}: {e}") from None
            self._teacher().requires_grad_(False).eval()
        dc, dt = model.num_features, self.vit.num_features
        need = (cfg.mode == "vpl" or cfg.distill_cl()) and dc != dt
        self.affine = (nn.Linear(dt, dc) if cfg.affine == "vit" else nn.Linear(dc, dt)) if need else None
        heads = cfg.eval_heads()
        self.cnn_ema = _frozen_copy(model) if "cnn_ema" in heads else None
        self.vit_ema = _frozen_copy(self.vit) if "vit_ema" in heads else None
        self.register_buffer("ema_step", torch.zeros((), dtype=torch.long))
        # (w_cl, w_kl, stage) on the device: a compiled step reads them, so a new stage recompiles nothing
        self.register_buffer("stage_w", torch.tensor([1.0, 1.0, 2.0]), persistent=False)
        self.stage = 2  # until on_epoch_start sets it
        self.parts = 2 if cfg.mode == "dml" and cfg.dml_update != "joint" else 1

    def train(self, mode: bool = True) -> "Vpl":
        super().train(mode)
        if self.cfg.mode == "distill":
            self._teacher().eval()  # a frozen teacher: no dropout, no BatchNorm statistics update
        return self

    def _teacher(self) -> nn.Module:
        """distill's frozen branch: the transformer for a CNN student, the CNN for a transformer one."""
        return self.vit if self.cfg.student == "cnn" else self.model

    def optim_groups(self) -> list[dict[str, Any]]:
        cfg = self.cfg
        cnn = {"params": list(self.model.parameters()), "lr": cfg.lr_cnn}
        vit = {"params": [*self.vit.parameters(), *(self.affine.parameters() if self.affine else [])],
               "lr": cfg.lr_vit}
        for g, wd in ((cnn, cfg.weight_decay_cnn), (vit, cfg.weight_decay_vit)):
            if wd is not None:
                g["weight_decay"] = wd
        if cfg.mode == "distill":
            return [cnn] if cfg.student == "cnn" else [vit]
        return [cnn, vit]

    def on_epoch_start(self, epoch: int, epochs: int, stats: dict[str, Any]) -> None:
        self.stage = V.vpl_stage(epoch, epochs, self.cfg.x, self.cfg.y_percent())
        self.stage_w.copy_(torch.tensor([*V.stage_weights(self.stage), float(self.stage)]))

    def mix(self, x: Tensor, y: Tensor) -> Mixed:
        target = one_hot(y, self.info.num_classes)
        if self.cfg.random_erasing == 0:
            return Mixed(x, target, {"erased": 0.0})
        xe, erased = random_erasing(x, self.cfg.random_erasing, self.generator, mode=self.cfg.erase_mode)
        return Mixed(xe, target, {"erased": erased.float().mean()})

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = V.ema_decay(self.ema_step, self.cfg.ema_decay)
        for ema, raw in ((self.cnn_ema, self.model), (self.vit_ema, self.vit)):
            if ema is not None:
                V.ema_update_(ema, raw, decay)
        self.ema_step += 1

    def forward(self, x: Tensor, y: Tensor, part: int = 0) -> StepOut:
        cfg = self.cfg
        if cfg.ema and self.training and part == 0:
            self._update_ema()
        if self.parts == 2:
            return self._dml_part(x, y, part)
        m = self.mix(x, y)
        grad, distill = torch.is_grad_enabled(), cfg.mode == "distill"
        with torch.set_grad_enabled(grad and not (distill and cfg.student == "vit")):
            hc, zc = _branch(self.model, m.x)
        with torch.set_grad_enabled(grad and not (distill and cfg.student == "cnn")):
            ht, zt = _branch(self.vit, m.x)
        ce_c = F.cross_entropy(zc.float(), y)
        logs: dict[str, Any] = {**m.logs, "loss_ce_cnn": ce_c.detach(), **_accs(zc, zt, y)}
        ce_t = F.cross_entropy(zt.float(), y)
        if distill:  # CE + the PLM loss of the student's branch (distill_loss kl: CE + KL) toward the frozen teacher
            (z_s, z_t, ce) = (zc, zt, ce_c) if cfg.student == "cnn" else (zt, zc, ce_t)
            logs["loss_ce_vit"] = ce_t.detach()
            if cfg.distill_cl():
                cl = self._cl(hc.detach(), ht)
                return StepOut(ce + cl, z_s, {**logs, "loss_cl": cl.detach()})
            kl = V.kl_toward(z_s, z_t.detach(), cfg.rho)
            return StepOut(ce + kl, z_s, {**logs, "loss_kl": kl.detach()})
        logs["loss_ce_vit"] = ce_t.detach()
        return StepOut(self._add_pair_terms(ce_c + ce_t, hc, ht, zc, zt, logs), zc, logs)

    def _add_pair_terms(self, loss: Tensor, hc: Tensor, ht: Tensor, zc: Tensor, zt: Tensor,
                        logs: dict[str, Any]) -> Tensor:
        """``loss`` plus the terms that tie the branches (dml: both KLs; vpl: w_cl L_CL + w_kl L_KL;
        independent: none), each logged into ``logs``."""
        cfg = self.cfg
        if cfg.mode == "dml":  # dml_update joint: one step on both KLs from the same outputs
            kl_c, kl_t = V.kl_toward(zc, zt.detach(), cfg.rho), V.kl_toward(zt, zc.detach(), cfg.rho)
            logs.update(loss_kl=kl_c.detach(), loss_kl_vit=kl_t.detach())
            return loss + kl_c + kl_t
        if cfg.mode == "vpl":
            cl, kl = self._pair_losses(hc, ht, zc, zt)
            w_cl, w_kl, stage = self.stage_w.unbind()
            logs.update(stage=stage, loss_cl=cl.detach(), loss_kl=kl.detach())
            return loss + w_cl * cl + w_kl * kl
        return loss

    def _dml_part(self, x: Tensor, y: Tensor, part: int) -> StepOut:
        """Alternating DML (Zhang et al. 2018, Algorithm 1): part 0 steps the first branch on CE + KL
        toward the second's current softmax; part 1 recomputes the first branch's outputs with its
        updated weights (no gradient) and steps the second branch on CE + KL toward them. Part 0
        mixes (random erasing) and hands the mixed batch on as ``carry``; part 1 gets it as ``x``."""
        m = self.mix(x, y) if part == 0 else None
        xm = x if m is None else m.x
        order = ((self.model, "cnn"), (self.vit, "vit"))[::-1 if self.cfg.dml_update == "vit_first" else 1]
        (student, name), (teacher, _) = order if part == 0 else order[::-1]
        z_s = student(xm)
        with torch.no_grad():
            z_t = teacher(xm)
        ce, kl = F.cross_entropy(z_s.float(), y), V.kl_toward(z_s, z_t, self.cfg.rho)
        logs: dict[str, Any] = {f"loss_ce_{name}": ce.detach(),
                                "loss_kl" if name == "cnn" else "loss_kl_vit": kl.detach()}
        if m is not None:
            zc, zt = (z_s, z_t) if name == "cnn" else (z_t, z_s)
            return StepOut(ce + kl, zc, {**m.logs, **logs, **_accs(zc, zt, y)}, carry=xm)
        return StepOut(ce + kl, z_s, logs)

    def _pair_losses(self, hc: Tensor, ht: Tensor, zc: Tensor, zt: Tensor) -> tuple[Tensor, Tensor]:
        """(L_CL, L_KL); sg placement of §6.2 unless ``bidirectional``."""
        cfg = self.cfg
        sg = (lambda t: t) if cfg.bidirectional else Tensor.detach
        return self._cl(sg(hc), ht), V.kl_toward(zc, sg(zt), cfg.rho)

    def _cl(self, hc: Tensor, ht: Tensor) -> Tensor:
        """L_CL of ``hc`` (already detached unless bidirectional: the CNN-side affine layer comes after
        the detach, so L_CL never reaches the CNN) and ``ht``, through the affine layer A if built."""
        if self.affine is not None:
            ht, hc = (self.affine(ht), hc) if self.cfg.affine == "vit" else (ht, self.affine(hc))
        return V.contrastive_loss(hc, ht, self.cfg.tau, self.cfg.cl_normalize)

    @torch.no_grad()
    def eval_logits(self, x: Tensor) -> dict[str, Tensor]:
        heads = {"cnn": self.model(x), "vit": self.vit(x)}
        if self.cnn_ema is not None:
            heads["cnn_ema"] = self.cnn_ema(x)
        if self.vit_ema is not None:
            heads["vit_ema"] = self.vit_ema(x)
        return heads
