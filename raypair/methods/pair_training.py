"""PairTraining (P0: Shi, Zhao, Yao, AI Communications 36(2):111-126, 2023; methods.md §5).

Every step trains on the original ``x_z`` (the training image as normal training sees it:
``aug: base+``, pad-crop-flipped; RandomResizedCrop + flip on the imagenet pipeline) and, on a pair
batch, a disturbed copy ``x_p`` (RF of the un-augmented image, ``rf_of``) through the same network:
    L = CE(f(x_z), y) + omega * sce(f(x_p), T_p)    (pair batch; plain CE(f(x_z), y) otherwise)
``beta`` = last epoch's train top-1 on ``x_z`` (the loop's all-reduced ``train_acc``, 0 in the first
epoch) picks the stage (3 iff beta >= t2, 2 iff t1 <= beta < t2, else 1) and the progress q in
[0, 1] inside it (``ops.pairtrain.stage_of``). ``forward`` returns the x_z logits (labels y), so
the loop's train_acc is the next epoch's beta, the same on every worker.
Stage ops (``stage_ops``: a preset or 3 ops for stages 1, 2, 3; ``ops.pairtrain``):
- rf: pad-crop + flip p=0.5, pad = min(H, W)/8 (4 px at 32 px), padded with black in normalised
  units (-mean/std); on the imagenet pipeline with ``rf_of: original`` (methods.md §5.3: "224-px
  inputs: random crop from the 256-resized image" + flip) the loader cuts it: a random 224 window of
  the 256-px square of the un-augmented image, flipped with p=0.5 (``config.loader_views``); a 224-px
  x_z under ``rf_of: x_z`` is pad-cropped by 28 px;
- dmask: n = 1 + floor(q (n_max - 1)) zero squares of side L = round(sqrt(a) min(H, W)),
  a = a_min + q (a_max - a_min), Cutout-style centres, clipped (n reaches n_max only at q = 1);
- dmix: box of round(sqrt(theta) H) x round(sqrt(theta) W), theta = theta_min + q (theta_max -
  theta_min), fully inside, from a diffclass partner; T_p = (1 - theta_eff) Y + theta_eff Y[j],
  theta_eff = h w / (H W); no partner of another class in the batch: theta_eff = 0;
- cutout: Cutout n=1, L = min(H, W)/2 (16 at 32 px); cutmix: CutMix alpha=1, perm partner, one box
  per batch; both on x_z without RF; none: no pairs in that stage.
Logs (epoch means): beta, stage, q, alpha (0 in a none stage), omega (the effective weight), pair
(1 on pair batches; per_sample: the paired fraction of rows), theta (dmix stage, scheduled) or
mask_area (dmask stage, the scheduled area a of one hole).

Metrics: ``val_acc`` / ``test_acc`` (top-1 on single clean images; P0 reports top-1 gains over
normal training, "CIFAR-10 +0.91; CIFAR-100 +1.47", and top-5 on ILSVRC-mini: ``val_acc5``, methods.md
§5.2); ``train_acc`` is top-1 on x_z (beta). Defaults t1/t2 0.25/0.75 and theta 0.3-0.6 are FACT (§5.1,
§7); the rest are the ASSUMPTIONS below.

Table 4 (P0) presets: S1 = [none, none, none] (normal training), S8 = [rf, dmask, dmix] (full
PairTraining, default). The paper's map of strategies 2-7 is UNKNOWN; the controls are named, not
numbered: rf, cutout, cutmix, dmask, dmix (that op in all three stages) and rf_dmask_dmask (the
seventh, an ASSUMPTION).

Invariants tested (tests/test_pair_training.py): stage/q at the thresholds; the pair-batch
fraction matches alpha; D-Mask holes follow (n, L); D-Mix pastes exactly theta_eff of a
different-class partner and the soft label weighs it exactly; omega scales the pair loss
exactly; both gates weigh the pair loss alpha omega in expectation (per_sample: omega k / B
exactly); two_pass and joint return the x_z logits; two gloo ranks share beta.

ASSUMPTIONs (methods.md §5.3) and their switches (default first):
- t1=0.25, t2=0.75 are FACT values, stage 3 iff beta >= t2 (inclusivity): ``t1``, ``t2``.
- beta measured on x_z in train mode.
- x_z gets normal training's augmentation: ``aug`` base+ (pad 4, crop, flip; default) | base (the
  un-augmented image). Follows P0's "the random crop and random horizontal flip has little effect on
  training results", which only holds if normal training already crops and flips; so Table 4's
  strategy 1 (``stage_ops: S1``) is ERM with base+.
- RF's source, ``rf_of``: original (default, P0's RF is "random crop and random horizontal flip" of
  the original image) | x_z. Under base+ with ``original`` (cifar pipeline) the loader hands over the
  un-augmented image and the method crops twice from it: x_z (pad min(H, W)/8, black fill: the
  loader's crop at data.pad's default 4 px, on the method's stream) and, for RF / the RF before
  D-Mask / D-Mix, x_p, so x_p lies at most pad px from the original per axis. On the imagenet
  pipeline x_z is the loader's RandomResizedCrop + flip (normal training's, the same in S1 and S8) and
  each training batch carries RF of the un-augmented image after x_z's channels (the 256-px square's
  random 224 window + flip, cut by the loader from the same image): x_p starts from it, never stacked
  on the RandomResizedCrop. ``x_z`` disturbs the loader's already augmented x_z: the two compound
  (cifar: up to 2 x pad per axis). Cutout, CutMix and D-Mask / D-Mix without RF start from x_z in all
  cases.
- alpha: ``alpha_mode`` ramp (q) | beta | one; ``gate`` per_batch (one draw per batch, per worker
  under DDP, on a host stream seeded by the method's seed and the epoch: no device sync) | per_sample
  (Bernoulli(alpha) rows, on that stream; the whole batch is disturbed, so the partner comes from all
  rows, only paired rows are forwarded, and their loss is SUMMED over the paired rows and divided
  by the batch size B). Both gates give the pair loss the same expected weight alpha omega
  (per_batch: omega with probability alpha; per_sample: omega k / B with E[k] = alpha B); a mean over
  the paired rows alone would weigh it omega whatever alpha (10x per_batch's at alpha 0.1).
- RF before D-Mask / D-Mix: ``cumulative_rf`` (True).
- D-Mask: ``a_min`` 0.0625, ``a_max`` 0.25, ``n_max`` 1; a hole keeps side L when L is odd.
- D-Mix theta range 0.3-0.6 (FACT): ``theta_min``, ``theta_max``; label ``dmix_label`` soft | hard.
- omega: ``omega`` 1.0; ``omega_mode`` const | beta (omega_eff = omega * beta: = beta at omega = 1,
  and omega stays the searched scale in both modes); ``omega_convex`` False: (1-w) L_z + w L_p.
- ``forward`` two_pass (separate passes: BN statistics per pass, one backward) | joint (one
  forward of cat([x_z, x_p])).
- the seventh Table 4 control [rf, dmask, dmask]: preset ``rf_dmask_dmask``.
"""
from __future__ import annotations

from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from raypair.config.methods.pair_training import PairTrainingConfig, resolve_ops
from raypair.methods.base import METHODS, Method, Mixed, StepOut
from raypair.ops import pairtrain as pt
from raypair.ops.losses import one_hot, soft_cross_entropy
from raypair.ops.masks import cutout_mask
from raypair.ops.mixing import cutmix_beta
from raypair.ops.sampling import host_to_device, stream_key

LOGS = ("beta", "stage", "q", "alpha", "omega", "theta", "mask_area")  # the per-epoch logs


@METHODS.register("pair_training")
class PairTraining(Method):
    Config = PairTrainingConfig

    def __init__(self, cfg: PairTrainingConfig, model: torch.nn.Module, info: Any) -> None:
        super().__init__(cfg, model, info)
        self.ops = resolve_ops(cfg.stage_ops)
        # rf_of original (P0), cifar pipeline: the loader hands over the un-augmented image
        # (config.loader_aug) and the method crops x_z and x_p from it, each once
        self.own_crop = cfg.crops_itself() and getattr(info, "pipeline", None) == "cifar"
        # imagenet pipeline: the loader adds RF of the un-augmented image after x_z's channels
        # (config.loader_views); x_z stays normal training's RandomResizedCrop
        self.two_views = cfg.crops_itself() and getattr(info, "pipeline", None) == "imagenet"
        black = -torch.tensor(info.mean) / torch.tensor(info.std)  # normalised value of pixel 0
        self.register_buffer("black", black, persistent=False)  # on the device: no copy per step
        # this epoch's LOGS values and D-Mask side as device tensors: a compiled step reads them as
        # inputs, where Python numbers would be constants it recompiles for every epoch
        self.register_buffer("sched", torch.zeros(len(LOGS), dtype=torch.float64), persistent=False)
        self.register_buffer("side", torch.zeros((), dtype=torch.long), persistent=False)
        self.on_epoch_start(0, 1, {})

    def on_epoch_start(self, epoch: int, epochs: int, stats: dict[str, Any]) -> None:
        c = self.cfg
        self._epoch, self._gate_rng, self._holes = epoch, None, {}
        self.beta = float(stats.get("train_acc", 0.0))
        self.stage, self.q = pt.stage_of(self.beta, c.t1, c.t2)
        self.op = self.ops[self.stage - 1]
        self.alpha = 0.0 if self.op == "none" else pt.alpha_of(c.alpha_mode, self.beta, self.q)
        self.omega = c.omega * (self.beta if c.omega_mode == "beta" else 1.0)
        self.logs = {"beta": self.beta, "stage": float(self.stage), "q": self.q, "alpha": self.alpha,
                     "omega": self.omega}
        if self.op == "dmix":
            self.logs["theta"] = pt.lerp(c.theta_min, c.theta_max, self.q)
        elif self.op == "dmask":
            self.logs["mask_area"] = pt.lerp(c.a_min, c.a_max, self.q)
            self.side.fill_(self._dmask_holes(min(self.info.image_shape[1:3]))[1])  # once per epoch
        self.sched.copy_(torch.tensor([self.logs.get(k, 0.0) for k in LOGS], dtype=torch.float64))

    def _logs(self) -> dict[str, Tensor]:
        return {k: self.sched[i] for i, k in enumerate(LOGS) if k in self.logs}

    def _omega(self) -> Tensor:
        return self.sched[LOGS.index("omega")].float()  # float32: the weight a Python float gave the loss

    def _views(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(x_z, what RF starts from) of a training batch: on the imagenet pipeline the loader's two
        views (x_z's channels first, then RF of the un-augmented image), else the batch for both."""
        if not self.two_views:
            return x, x
        c = self.info.image_shape[0]
        if x.shape[1] != 2 * c:
            raise ValueError(f"PairTraining on the imagenet pipeline takes [x_z | RF view] batches of {2 * c} "
                             f"channels (a loader built with rf_view=config.loader_views(...)), got {x.shape[1]}")
        return x[:, :c], x[:, c:]

    def mix(self, x: Tensor, y: Tensor) -> Mixed:
        """The current stage's disturbed batch ``(x_p, T_p)``, whatever the gate."""
        x, orig = self._views(x)
        return self._disturb(orig, x, y)

    def _disturb(self, orig: Tensor, x: Tensor, y: Tensor) -> Mixed:
        """``x_p`` of this stage: RF crops ``orig`` (the image before any crop with ``rf_of: original``,
        else ``x_z``; on the imagenet pipeline ``orig`` is the loader's RF view already); the ops
        without RF start from ``x = x_z``."""
        c, g, op = self.cfg, self.generator, self.op
        (b, _, h, w), k = x.shape, self.info.num_classes
        target, logs = one_hot(y, k), {n: v for n, v in self._logs().items() if n in ("theta", "mask_area")}
        if op in ("rf", "dmask", "dmix") and (op == "rf" or c.cumulative_rf):  # the loader's RF view, or RF here
            x = orig if self.two_views else pt.rf(orig, g, self.black.to(x.device, x.dtype))
        if op == "dmask":
            n, side = self._dmask_holes(min(h, w))
            side = self.side if min(h, w) == min(self.info.image_shape[1:3]) else side  # the same value
            x = x * cutout_mask(b, h, w, n, side, g, trim_odd=False).to(x.device, x.dtype)
        elif op == "dmix":
            x, target, _ = pt.dmix(x, y, logs["theta"], k, g, soft=c.dmix_label == "soft")
        elif op == "cutout":
            x = x * cutout_mask(b, h, w, 1, min(h, w) // 2, g).to(x.device, x.dtype)
        elif op == "cutmix":
            x, target, _ = cutmix_beta(x, target, y, 1.0, "perm", g)
        return Mixed(x, target, logs)

    def _dmask_holes(self, size: int) -> tuple[int, int]:
        """D-Mask's (n, L) this epoch at image side ``size``, computed once per epoch and size."""
        if size not in self._holes:
            c = self.cfg
            self._holes[size] = pt.dmask_schedule(self.q, c.a_min, c.a_max, c.n_max, size)[:2]
        return self._holes[size]

    def _gate(self) -> np.random.Generator:
        """The gate's host stream, seeded by (the method's seed, the epoch): it decides how much to
        compute, so it is drawn where that is decided; a resumed run re-seeds it at the epoch start."""
        if self._gate_rng is None:
            self._gate_rng = np.random.default_rng(stream_key("gate", self.generator.initial_seed(), self._epoch))
        return self._gate_rng

    @torch.compiler.disable  # host logic: a compiled step calls it as it is
    def _pair_rows(self, b: int, device: torch.device) -> Union[None, slice, Tensor]:
        """Which rows are paired: None; per_batch (one U[0, 1) < alpha draw) all rows; per_sample
        (Bernoulli(alpha) rows) a row index ``[k]`` int64. Drawn on the host (:meth:`_gate`): a draw
        on the device would make the step wait to read it."""
        u = self._gate().random(1 if self.cfg.gate == "per_batch" else b) < self.alpha
        if not u.any():
            return None
        return slice(None) if self.cfg.gate == "per_batch" else host_to_device(np.flatnonzero(u), device)

    def forward(self, x: Tensor, y: Tensor) -> StepOut:
        x, orig = self._views(x)
        if self.own_crop:  # x_z: normal training's pad-crop-flip of the original (pad min(H, W) / 8)
            x = pt.rf(orig, self.generator, self.black.to(x.device, x.dtype))
        rows = self._pair_rows(y.shape[0], x.device)
        logs: dict[str, Any] = {**self._logs(), "pair": 0.0 if rows is None else 1.0}
        if rows is None:
            logits = self.model(x)
            return StepOut(F.cross_entropy(logits.float(), y), logits, logs)
        p = self._disturb(orig, x, y)
        xp, tp = p.x[rows], p.target[rows]  # the k paired rows
        if self.cfg.forward == "joint":
            both = self.model(torch.cat([x, xp]))
            logits, logits_p = both[: x.shape[0]], both[x.shape[0]:]
        else:
            logits, logits_p = self.model(x), self.model(xp)
        lz, lp, w = F.cross_entropy(logits.float(), y), soft_cross_entropy(logits_p, tp), self._omega()
        if self.cfg.gate == "per_sample":  # the sum over paired rows / B: E[weight] = alpha omega, as per_batch
            logs["pair"] = torch.ones_like(rows, dtype=torch.float32).sum() / x.shape[0]  # k / B
            lp = lp * logs["pair"]
        loss = (1.0 - w) * lz + w * lp if self.cfg.omega_convex else lz + w * lp
        return StepOut(loss, logits, logs)
