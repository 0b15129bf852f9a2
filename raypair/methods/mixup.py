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
Fine-tuning (P1 §5.5: "after mixup training", the net keeps training with ERM): ``ft_epochs`` epochs
*after* the run's ``epochs`` (the loop trains ``epochs + ft_epochs``; the mixing epochs and their lr
schedule are those of the run without fine-tuning), the batch not mixed, hard-label CE (on the loader's
``aug``, base+ by default) at the constant lr ``ft_lr`` (``on_epoch_start`` returns it), as the
"fine-tuned" rows of P1 Table 1. The loop records the state fine-tuning starts from as ``*_pre_ft``
metrics. Default 0: no fine-tuning unless asked (P1 itself fine-tunes; methods.md suggests 10).
Metrics: ``val_acc`` / ``test_acc`` (top-1, single unmixed images) beside P3 Table 1's "mixup" column
and P1 Table 1's "CIFAR-10 test accuracy" (mixup-X 90.2 / 93.1 fine-tuned, mixup-L 90.8 / 93.5);
train logs ``lam_x``, ``lam_l`` (their means), ``top2`` / ``top2_all``
(:func:`raypair.ops.metrics.top2_hits`: P1 §4.1's two-category accuracy, a same-label pair a miss as P1
says), ``ft`` (1 in fine-tuning epochs); train_acc is measured against the class of the larger label
weight and, on a label tie (mixup-X, where ``y~.argmax`` would name the lower class index), of the
heavier image. P1 "also
reports top-2 at test time": ``val_top2`` / ``test_top2`` (and ``_all``) on the evaluation split's
fixed pairs (``eval_pairs``), every epoch, fine-tuned or not.
Invariants tested: ``r_x = r_l = 0`` gives the exact 50/50 image and target; mixup-L's image is the exact
average while its target ratio varies; fine-tuning is hard CE at the lr ``ft_lr`` in exactly the
``ft_epochs`` epochs after ``epochs``; top-2 on hand-made logits (same label, label tie, image tie).
ASSUMPTIONS (methods.md §4.1, §4.4) and their switches: one lam per batch; partner ``perm`` (``partner``);
uniform ratios in the ranges; ``r_x = r_l = 0.5`` (``r_x``, ``r_l``); ``ft_lr=1e-3``; top2's first class
is the larger ``lam_l`` and, where P1 is silent (a label tie, mixup-X), the larger ``lam_x``
(``top2_tie: image``; ``either``: any order counts); the test pairs are mixed with ratios drawn as in
training, one per pair (P1 gives no test ratio; ``eval_lam: train``; ``half``: 50/50).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from raypair.config.methods.mixup import MixupConfig
from raypair.methods.base import METHODS, Method, Mixed, StepOut, finetune_lr
from raypair.ops.losses import one_hot, soft_cross_entropy
from raypair.ops.metrics import top2_hits
from raypair.ops.mixing import mix, partner, sample_beta, sample_uniform

@METHODS.register("mixup")
class Mixup(Method):
    Config = MixupConfig

    finetuning = False  # until on_epoch_start reaches the fine-tuning phase

    def on_epoch_start(self, epoch: int, epochs: int, stats: dict[str, Any]) -> Optional[float]:
        lr = finetune_lr(epoch, epochs, self.cfg.ft_epochs, self.cfg.ft_lr)
        self.finetuning = lr is not None
        return lr

    def ratios(self, n: int = 1, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        """``n`` draws of ``(lam_x, lam_l)``, float32 ``[n]`` on the generator's device (the method's own
        stream unless ``generator`` is given)."""
        c, g = self.cfg, generator or self.generator
        if c.lam == "beta":
            lam = sample_beta(c.alpha, n, g)
            return lam, lam
        u = sample_uniform(-1.0, 1.0, 2 * n, g)
        return 0.5 + c.r_x * u[:n], 0.5 + c.r_l * (u[:n] if c.shared else u[n:])

    def _top2(self, logits: Tensor, y: Tensor, yp: Tensor, lam_x: Tensor, lam_l: Tensor) -> tuple[Tensor, Tensor]:
        return top2_hits(logits, y, yp, lam_l, lam_x if self.cfg.top2_tie == "image" else None)

    def _draw(self, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """This batch's partner ``j [B]`` and 0-d ``(lam_x, lam_l)``."""
        j, _ = partner(y, self.cfg.partner, self.generator)
        lam_x, lam_l = self.ratios()
        return j, lam_x[0], lam_l[0]

    def mix(self, x: Tensor, y: Tensor) -> Mixed:
        target = one_hot(y, self.info.num_classes)
        if self.finetuning:
            return Mixed(x, target, {"ft": 1.0})
        j, lam_x, lam_l = self._draw(y)
        return Mixed(mix(x, x[j], lam_x), mix(target, target[j], lam_l), {"lam_x": lam_x, "lam_l": lam_l, "ft": 0.0})

    def forward(self, x: Tensor, y: Tensor) -> StepOut:
        if self.finetuning:
            return StepOut(F.cross_entropy((logits := self.model(x)).float(), y), logits, {"ft": 1.0})
        j, lam_x, lam_l = self._draw(y)
        target = one_hot(y, self.info.num_classes)
        target = mix(target, target[j], lam_l)
        logits = self.model(mix(x, x[j], lam_x))
        top2, top2_all = self._top2(logits.detach(), y, y[j], lam_x, lam_l)
        logs = {"lam_x": lam_x, "lam_l": lam_l, "ft": 0.0,
                "top2": top2.float().mean(), "top2_all": top2_all.float().mean()}
        return StepOut(soft_cross_entropy(logits, target), logits, logs, labels=self._major(y, j, lam_x, lam_l))

    @staticmethod
    def _major(y: Tensor, j: Tensor, lam_x: Tensor, lam_l: Tensor) -> Tensor:
        """The class train_acc scores: that of the larger label weight; on a label tie (mixup-X: every
        batch) that of the heavier image, as ``top2``'s first class (``target.argmax`` would pick the
        lower class index of a 50/50 target, a meaningless score)."""
        first = (lam_l > 0.5) | ((lam_l == 0.5) & (lam_x >= 0.5))
        return torch.where(first, y, y[j])

    @torch.no_grad()
    def eval_pairs(self, x: Tensor, y: Tensor, xp: Tensor, yp: Tensor,
                   generator: torch.Generator) -> dict[str, Tensor]:
        """P1's test-time top-2: ``x [B, C, H, W]`` mixed with its fixed partner ``xp`` at ratios drawn as
        in training, one per pair (``eval_lam: train``) or 50/50 (``half``) -> ``{top2, top2_all}`` [B]."""
        if self.cfg.eval_lam == "half":
            lam_x = lam_l = torch.full((len(y),), 0.5, device=x.device)
        else:
            lam_x, lam_l = (r.to(x.device) for r in self.ratios(len(y), generator))
        top2, top2_all = self._top2(self.model(mix(x, xp, lam_x)), y, yp, lam_x, lam_l)
        return {"top2": top2, "top2_all": top2_all}
