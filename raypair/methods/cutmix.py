"""CutMix (Yun et al. 2019; ``clovaai/CutMix-PyTorch``), the P3 comparison's ``cutmix`` (methods.md §1.1, §1.2).

Equation: with probability ``cutmix_prob`` per batch, ``lam ~ Beta(alpha, alpha)``, one box of sides
``int(W sqrt(1 - lam)) x int(H sqrt(1 - lam))`` centred uniformly and clipped, pasted from
the partner ``x_j``: ``x~ = M x + (1 - M) x_j``; ``lam`` is recomputed from the box's exact area and
``L = sce(f(x~), lam Y + (1 - lam) Y_j)`` (the mixup loss). Otherwise plain CE on ``x``.
- One op does it all (``ops.mixing.cutmix_beta``: lam, partner, box, paste, area-corrected lam), the same
  that PairTraining's ``cutmix`` control calls; D-Mix calls its composed core ``ops.mixing.cutmix``.
- The gate is one ``U[0, 1) < cutmix_prob`` draw on the method's generator, so 1.0 always mixes, 0.0 never;
  every batch is mixed and the gate picks the mixed or the plain batch on the device (no host sync).
- Partner ``perm`` as CutMix-PyTorch and P3 (``partner``: flip = timm, roll = torchvision).
- Logs ``cutmix_frac`` (the fraction of batches mixed) and ``lam`` (the mean kept-area ratio, 1 on
  unmixed batches: the mean over mixed batches is ``1 - (1 - lam) / cutmix_frac``).
Invariants tested: each target row's two weights equal the kept / pasted pixel fractions of the chosen
partner exactly; ``cutmix_prob=0`` is plain CE on the untouched batch.
Metrics: ``val_acc`` / ``test_acc`` (top-1, single unmixed images) beside P3 Table 1's "cutmix" column
("test accuracy %", methods.md §1.3); ``train_acc`` against the mixed target's argmax. Default ``aug: base+``
(P3's CutMix runs on base+, methods.md §1.1).
ASSUMPTION (methods.md §1.2): ``cutmix_prob=1.0`` (P3's report: it "swept cutmix_prob over 11 values ...
and found 1.0 best"; CutMix-PyTorch's CIFAR runs use 0.5, P3's code 0.1) and ``alpha=1`` (P3's report:
"for α=1, λ~U(0,1)"), set by ``cutmix_prob`` (1.0) and ``alpha`` (1.0); ``partner`` (perm: FACT, P3's code).
"""
from __future__ import annotations


import torch
from torch import Tensor

from raypair.config.methods.cutmix import CutmixConfig
from raypair.methods.base import METHODS, Method, Mixed
from raypair.ops.losses import one_hot
from raypair.ops.mixing import cutmix_beta


@METHODS.register("cutmix")
class Cutmix(Method):
    Config = CutmixConfig

    def mix(self, x: Tensor, y: Tensor) -> Mixed:
        g, target = self.generator, one_hot(y, self.info.num_classes)
        on = (torch.rand((), generator=g, device=g.device) < self.cfg.cutmix_prob).to(x.device)
        xm, tm, lam = cutmix_beta(x, target, y, self.cfg.alpha, self.cfg.partner, g)  # one box per batch
        return Mixed(torch.where(on, xm, x), torch.where(on, tm, target),
                     {"cutmix_frac": on.float(), "lam": torch.where(on, lam[0], 1.0)})
