"""Mixup (Zhang et al. 2018; ``facebookresearch/mixup-cifar10``) and P1's generalised mixup-X / -L / -XL
(Liang et al. 2018, methods.md §1.1, §4.1), with P1's ERM fine-tuning phase (§4.4).

Equation: ``x~ = lam_x x_i + (1 - lam_x) x_j``, ``y~ = lam_l Y_i + (1 - lam_l) Y_j``, ``L = sce(f(x~), y~)``;
one ``(lam_x, lam_l)`` per batch and partner ``j`` by ``partner`` (perm: mixup-cifar10; flip: timm;
roll: torchvision). Ratios (``lam``):
- ``beta``: original mixup, ``lam_x = lam_l ~ Beta(alpha, alpha)``. ``alpha=1`` as mixup-cifar10 (= U[0, 1]);
  P3's code uses 0.2.
- ``range`` (P1): ``lam_x ~ U[0.5 - r_x, 0.5 + r_x]``, ``lam_l ~ U[0.5 - r_l, 0.5 + r_l]``, ``r in [0, 0.5]``.
  ``shared: true`` draws one ``u ~ U[-1, 1]`` for both (``lam = 0.5 + r u``), so ``r_x = r_l = R`` is P1's
  "mixup" (and R = 0.5 is original mixup with alpha = 1); ``shared: false`` draws them independently
  (P1's mixup-XL). Presets: **mixup-X** = ``lam: range, r_l: 0`` (the label stays 50/50);
  **mixup-L** = ``lam: range, r_x: 0`` (the image is the exact 50/50 average).
Fine-tuning (P1 §5.5): during the last ``ft_epochs`` epochs the batch is not mixed and the loss is
hard-label CE (on the loader's ``aug``, base+ by default) at the constant lr ``ft_lr``
(``on_epoch_start`` returns it), as the "fine-tuned" rows of P1 Table 1; ``ft_epochs`` must leave at least one
mixup epoch. Default 0: no fine-tuning unless asked (P1 itself fine-tunes; methods.md suggests 10).
Logs: ``lam_x``, ``lam_l`` (their means), ``top2`` / ``top2_all`` (:func:`raypair.ops.metrics.top2_hits`),
``ft`` (1 in fine-tuning epochs). train_acc is measured against ``y~.argmax(1)``.
Invariants tested: ``r_x = r_l = 0`` gives the exact 50/50 image and target; mixup-L's image is the exact
average while its target ratio varies; fine-tuning is hard CE at the lr ``ft_lr`` (``on_epoch_start``'s return)
in exactly the last ``ft_epochs`` epochs.
ASSUMPTIONS (methods.md §4.1, §4.4): one lam per batch; partner ``perm`` (``partner``); uniform ratios in
the ranges; ``r_x = r_l = 0.5`` (``r_x``, ``r_l``); top2's first class is the larger ``lam_l``; ``ft_lr=1e-3``.
"""
from __future__ import annotations

from typing import Any, Literal, Optional

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from raypair.config import MethodConfig
from raypair.methods.base import METHODS, Method, Mixed, StepOut, check_finetune, finetune_lr
from raypair.ops.losses import one_hot, soft_cross_entropy
from raypair.ops.metrics import top2_hits
from raypair.ops.mixing import mix, partner, sample_beta, sample_uniform


class MixupConfig(MethodConfig):
    name: Literal["mixup"] = "mixup"
    lam: Literal["beta", "range"] = "beta"
    alpha: float = Field(1.0, gt=0.0, le=100.0)  # beta mode: Beta(alpha, alpha)
    r_x: float = Field(0.5, ge=0.0, le=0.5)  # range mode: lam_x in [0.5 - r_x, 0.5 + r_x]
    r_l: float = Field(0.5, ge=0.0, le=0.5)  # range mode: lam_l in [0.5 - r_l, 0.5 + r_l]
    shared: bool = True  # range mode: one draw for both ratios (false: mixup-XL)
    partner: Literal["perm", "flip", "roll"] = "perm"
    ft_epochs: int = Field(0, ge=0)
    ft_lr: float = Field(1e-3, gt=0.0, le=10.0)

    def check_run(self, run: Any) -> None:
        check_finetune(self.ft_epochs, run.epochs, "mixup")

    def inactive(self) -> set[str]:
        off = {"r_x", "r_l", "shared"} if self.lam == "beta" else {"alpha"}
        if self.lam == "range" and (self.r_x == 0 or self.r_l == 0):
            off.add("shared")  # a constant ratio has nothing to share
        if self.ft_epochs == 0:
            off.add("ft_lr")
        return off


@METHODS.register("mixup")
class Mixup(Method):
    Config = MixupConfig

    finetuning = False  # until on_epoch_start reaches the fine-tuning phase

    def on_epoch_start(self, epoch: int, epochs: int, stats: dict[str, Any]) -> Optional[float]:
        lr = finetune_lr(epoch, epochs, self.cfg.ft_epochs, self.cfg.ft_lr)
        self.finetuning = lr is not None
        return lr

    def ratios(self) -> tuple[Tensor, Tensor]:
        """This batch's ``(lam_x, lam_l)``, 0-d float32 on the generator's device."""
        c, g = self.cfg, self.generator
        if c.lam == "beta":
            lam = sample_beta(c.alpha, 1, g)[0]
            return lam, lam
        u = sample_uniform(-1.0, 1.0, 2, g)
        return 0.5 + c.r_x * u[0], 0.5 + c.r_l * u[0 if c.shared else 1]

    def mix(self, x: Tensor, y: Tensor) -> Mixed:
        target = one_hot(y, self.info.num_classes)
        if self.finetuning:
            return Mixed(x, target, {"ft": 1.0})
        j, _ = partner(y, self.cfg.partner, self.generator)
        lam_x, lam_l = self.ratios()
        return Mixed(mix(x, x[j], lam_x), mix(target, target[j], lam_l), {"lam_x": lam_x, "lam_l": lam_l, "ft": 0.0})

    def forward(self, x: Tensor, y: Tensor) -> StepOut:
        m = self.mix(x, y)
        logits = self.model(m.x)
        if self.finetuning:
            return StepOut(F.cross_entropy(logits.float(), y), logits, m.logs)
        top2, top2_all = top2_hits(logits.detach(), m.target)
        logs = {**m.logs, "top2": top2.float().mean(), "top2_all": top2_all.float().mean()}
        return StepOut(soft_cross_entropy(logits, m.target), logits, logs, labels=m.target.argmax(1))
