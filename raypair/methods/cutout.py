"""Cutout (DeVries & Taylor 2017; code ``uoguelph-mlrg/Cutout``), the P3 comparison's ``cutout`` (methods.md §1.1).

Equation: ``x~ = M * x`` with ``M [B, 1, H, W]`` 0 on ``n_holes`` squares of side ``length`` (each centred
uniformly on the image, ``[c - L//2, c + L//2)``, clipped), 1 elsewhere; ``L = CE(f(x~), y)``.
- On top of ``aug: base+`` (pad-crop-flip by the loader), applied after normalisation, so a hole is 0 in
  normalised space (the mean colour), as the reference code does; every sample is cut (no probability).
- Defaults ``n_holes=1, length=16``: P3's code and the Cutout authors' CIFAR-10 value. The authors use
  ``length=8`` for CIFAR-100 and 20 for SVHN: set ``method.length`` per dataset.
- Logs ``cut_frac``: the mean fraction of pixels zeroed (below (L/H)^2 n_holes where holes clip or overlap).
Metrics: ``val_acc`` / ``test_acc`` (top-1, single uncut images) beside P3 Table 1's "cutout" column
("test accuracy %", methods.md §1.3); ``train_acc`` on the cut batch against ``y``. Default ``aug: base+``
(P3: Cutout is "on top of base+", methods.md §1.1).
Invariants tested: exactly the masked pixels become 0, every other pixel and the label are unchanged;
the loss is hard-label CE. No ASSUMPTION of methods.md applies.
"""
from __future__ import annotations


from torch import Tensor

from raypair.config.methods.cutout import CutoutConfig
from raypair.methods.base import METHODS, Method, Mixed
from raypair.ops.losses import one_hot
from raypair.ops.masks import cutout_mask


@METHODS.register("cutout")
class Cutout(Method):
    Config = CutoutConfig

    def mix(self, x: Tensor, y: Tensor) -> Mixed:
        b, _, h, w = x.shape
        keep = cutout_mask(b, h, w, self.cfg.n_holes, self.cfg.length, self.generator).to(x.device)
        return Mixed(x * keep, one_hot(y, self.info.num_classes), {"cut_frac": 1.0 - keep.mean()})
