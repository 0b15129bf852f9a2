"""Between-Class learning, BC and BC+ (P2, Tokozume et al., CVPR 2018; code mil-tokyo/bc_learning_image),
with the P2s student variant (methods.md §3.1-§3.4, §7).

Equation: two images of *different* classes, ``r ~ U(r_low, 1)`` per example;
``BC:  x = r x1 + (1 - r) x2``;
``BC+: x = (p x1 + (1 - p) x2) / sqrt(p^2 + (1 - p)^2)``, ``p = 1 / (1 + s1/s2 (1 - r)/r)``, ``s_i`` the
per-image std, on images zero-mean preprocessed ``(pix - mean_i(pix) - m_c) / s_c`` (0-255 scale,
P2's table) at train AND test time (``eval_logits``).
``label_mode: ratio`` (P2): ``t = r Y1 + (1 - r) Y2``, loss ``KL(t || softmax f(x))``;
``label_mode: major`` (P2s, with ``r_low: 0.5``): the hard label of the larger-ratio image, CE.
Train top-1 is ``argmax f(x) == argmax t`` (on the mixed rows). Logs: ``r_mean``, ``no_partner``
(rows left unmixed).
``train_set: mixed`` (P2, default): every example is a mixed pair. ``clean_and_mixed`` (P2s: the
BC images "are mixed with the unaugmented training set to expand our training dataset"): each step
trains the batch's B clean images (hard labels, through the same preprocessing) and its B mixed
examples in one forward of 2B rows, the loss the mean over all 2B, so an epoch covers the expanded
set (N clean + N mixed examples) once. P2s does not say how its batches were formed (ASSUMPTION):
a loader over the expanded set would take 2N/B' steps of B' rows; set ``batch_size`` to B'/2 to
match that (bc_student.yaml does).
Pairing: ``dataset`` (P2, default): x2 drawn uniformly with replacement from the whole training
set (``pool.draw``, independently augmented), re-drawn until its label differs; ``batch``: in-batch
``diffclass`` partner. Without a pool the batch stands in for the training set (``batch_draw``).

Invariants tested (tests/test_bc.py): partners always have another label (both pairings); BC+
equals its formula and is symmetric under (x1, x2, r) <-> (x2, x1, 1 - r); ratio rows sum to 1 and
carry r; major picks the larger-ratio label; r >= r_low; eval applies the zero-mean preprocessing;
the KL loss is finite with zeros in the targets; clean_and_mixed trains exactly the clean batch and
the mixed batch, the loss their mean.

Defaults: ``variant`` bc+ (P2's better row: "BC+ 5.22" vs "BC 5.40" CIFAR-10 error, methods.md §3.3),
``label_mode`` ratio and ``r_low`` 0 (P2: "r ~ U(0,1)", KL loss, §3.1; P2s: major, 0.5, §3.4),
``pairing`` dataset (P2's code, §3.2), ``aug: base+`` (P2's code: flip, pad 4, crop 32, §3.1).
Metrics: ``val_acc`` / ``test_acc``: top-1 on single unmixed test images ("Testing uses single unmixed
images", §3.1); P2 reports error % = 1 - top-1, "averaged over 10 trials" (§3.3). ``train_acc`` is
``argmax f(x) == argmax t`` (§3.1).

ASSUMPTIONs (methods.md §3.2) and their switches:
- ``r_eps`` (1e-6): r is clamped to [r_eps, 1 - r_eps].
- ``train_set`` (mixed): P2s's expanded set is ``clean_and_mixed``, its batching an ASSUMPTION (above).
- ``pairing: batch`` is the fast in-batch variant; a row with no other label in the batch (and, in
  either pairing, a row whose draw never left its class) keeps r = 1, i.e. is not mixed.
- ``plus_stats`` (paper): P2's BC+ table for CIFAR-10/100; other datasets (and ``derived``) take
  ``m_c = 255 (mean_c - mean of the channel means)`` and ``s_c = 255 std_c`` from the data's
  normalisation (see ``raypair.ops.bc_prep.bc_plus_constants``).
Known differences from P2's code, not switches: raypair's loader pad-crop-flips in pixel space
(padding is black, and enters the per-image mean) before normalising, where P2 normalises, flips,
then pads with 0 in normalised space and crops; x1 runs through an epoch permutation (each image
once), x2 is drawn with replacement, where P2 draws both with replacement. P2's 11-layer ConvNet is the
model ``convnet_bc`` (search_spaces/bc.yaml, ablations/bc_table.yaml).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from raypair.config.methods.bc import BcConfig
from raypair.methods.base import METHODS, Method, Mixed, StepOut
from raypair.ops.bc_prep import bc_plus_constants, bc_target, zero_mean
from raypair.ops.losses import kl_loss, one_hot, soft_cross_entropy
from raypair.ops.mixing import bc_mix, partner, sample_uniform
from raypair.ops.pairing import batch_draw


@METHODS.register("bc")
class Bc(Method):
    Config = BcConfig

    def __init__(self, cfg: BcConfig, model: torch.nn.Module, info: Any) -> None:
        super().__init__(cfg, model, info)
        m, s = bc_plus_constants(getattr(info, "name", ""), info.mean, info.std, cfg.plus_stats)
        for key, v in (("norm_mean", torch.tensor(info.mean)), ("norm_std", torch.tensor(info.std)),
                       ("plus_m", m), ("plus_s", s)):
            self.register_buffer(key, v.float().reshape(1, -1, 1, 1), persistent=False)

    def prep(self, x: Tensor) -> Tensor:
        """The network's input space: BC+ zero-mean preprocessing of a normalised batch; BC: as is."""
        if self.cfg.variant == "bc":
            return x
        return zero_mean(x, self.norm_mean, self.norm_std, self.plus_m, self.plus_s)

    def pair(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Partner images and labels ``(x2 [B, C, H, W], y2 [B], ok [B])``, ``ok``: ``y2 != y``."""
        g = self.generator
        if self.cfg.pairing == "batch":
            j, ok = partner(y, "diffclass", g)
            return x[j], y[j], ok
        if self.pool is not None:
            x2, y2 = self.pool.draw(len(y), g, avoid=y)
        else:
            x2, y2 = batch_draw(x, y, len(y), g, avoid=y)
        return x2.to(x.dtype), y2, y2 != y

    def mix(self, x: Tensor, y: Tensor) -> Mixed:
        cfg = self.cfg
        x2, y2, ok = self.pair(x, y)
        r = sample_uniform(cfg.r_low, 1.0, len(y), self.generator).to(x.device)
        r = torch.where(ok, r.clamp(cfg.r_eps, 1.0 - cfg.r_eps), torch.ones_like(r))
        mixed = bc_mix(self.prep(x), self.prep(x2), r, plus=cfg.variant == "bc+", check=False)  # r in (0, 1]
        target = bc_target(y, y2, r, self.info.num_classes, cfg.label_mode)
        logs = {"r_mean": r.mean(), "no_partner": (~ok).float().mean()}
        if cfg.train_set == "clean_and_mixed":  # [clean rows; mixed rows]: 2B examples
            mixed = torch.cat([self.prep(x), mixed])
            target = torch.cat([one_hot(y, self.info.num_classes), target])
        return Mixed(mixed, target, logs)

    def forward(self, x: Tensor, y: Tensor) -> StepOut:
        m = self.mix(x, y)
        logits = self.model(m.x)
        loss = kl_loss(logits, m.target) if self.cfg.label_mode == "ratio" else soft_cross_entropy(logits, m.target)
        logits, target = logits[-len(y):], m.target[-len(y):]  # train top-1 on the B mixed rows
        return StepOut(loss, logits, m.logs, labels=target.argmax(1))

    @torch.no_grad()
    def eval_logits(self, x: Tensor) -> dict[str, Tensor]:
        return {"": self.model(self.prep(x))}
