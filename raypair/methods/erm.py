"""ERM: plain cross-entropy on clean images, the ``base`` / ``base+`` baselines of P3 (methods.md §1.1).

Equation: ``L = CE(f(x), y)``, with optional label smoothing ``T = (1 - eps) Y + eps / K``
(``F.cross_entropy(label_smoothing=eps)`` is exactly ``sce(f(x), T)``).
- ``aug: base``  - normalise only (P3 "base").
- ``aug: base+`` - zero-pad 4, random 32x32 crop, h-flip p=0.5, then normalise (P3 "base+").
Defaults: ``aug: base+`` and ``label_smoothing`` 0, P3's plain CE ("batch 128, CE, SGD", methods.md
§1.2); label smoothing is no paper's setting, a switch for sweeps only.
Metrics: ``val_acc`` / ``test_acc`` (top-1 on single clean images) are the numbers beside P3 Table 1's
"test accuracy %, mean ± 95% CI over 5 runs" (methods.md §1.3); ``train_acc`` is top-1 on the batch.
Invariants tested: with eps = 0 the loss equals CE; with eps > 0 it equals sce against the smoothed rows.
No ASSUMPTION of methods.md applies.
"""
from __future__ import annotations


import torch.nn.functional as F
from torch import Tensor

from raypair.config.methods.erm import ErmConfig
from raypair.methods.base import METHODS, Method, StepOut


@METHODS.register("erm")
class Erm(Method):
    Config = ErmConfig

    def forward(self, x: Tensor, y: Tensor) -> StepOut:
        logits = self.model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.cfg.label_smoothing)
        return StepOut(loss, logits)
