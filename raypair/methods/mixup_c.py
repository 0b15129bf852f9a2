"""mixup-C (P1: Liang, Yang, Wang, *Multi-Sample Interpolation Training Method*, ICMLT 2018; methods.md §4.2-§4.4).

Equation (P1 Eq. 2): ``x~ = [lam x_i, (1 - lam) x_j]`` concatenated along channels (``[B, 2C, H, W]``; the
net is built with a 2C-channel stem: ``MixupCConfig.images_per_input = 2``), ``y~ = lam y_i + (1 - lam) y_j``,
``L = sce(f(x~), y~)``; ``perm`` partner, one lam per batch (mixup-cifar10, which P1's MSIN code derives from).
- ``heads: 2``: the dual-input / dual-output net of §4.3. Head 1 is the model's classifier, head 2 a Linear
  owned here, both on ``forward_head(..., pre_logits=True)``; ``L = CE(h1, y_i) + CE(h2, y_j)`` (P1 §4.2: "we
  directly add the cross-entropy of the output of the two categories"; MSIN's ``mixup_criterion`` sums them).
  Its input is ``[0.5 x_i, 0.5 x_j]`` (``dual_input: half``, the default): P1 §5.2's 88.41 / 88.61 (both
  heads good) fit fixed 50/50 inputs, since random input weights with unweighted per-head CE is §5.3's
  setting that leaves one head near chance (methods.md §4.3, an inference). P1 §5.3's variants:
  "only lam_x random" = ``dual_input: lam`` + ``dual_loss: sum``; "only lam_l random" = ``dual_input:
  half`` + ``dual_loss: weighted``; both = ``lam`` + ``weighted``. §5.4, "one sample's label random":
  ``random_label: second`` (head 2 trains on a uniform random class; ``train_acc_head2`` is then
  scored against that target, ``*_acc_head2`` at test time against x_p's true label).
- Fine-tuning (§4.4: after mixup-C training): ``ft_epochs`` epochs *after* the run's ``epochs`` (the loop
  trains ``epochs + ft_epochs``; the mixing epochs and their lr schedule are the run's own) train ERM on single
  images with hard labels at the constant lr ``ft_lr`` (``on_epoch_start`` returns it), head 1 only; the loop
  records the state they start from as ``*_pre_ft`` metrics. At its first epoch the stem (the model's first
  Conv2d with 2C input channels) is converted in place, ``W[:, :C] <- 0.5 (W[:, :C] + W[:, C:])``,
  ``W[:, C:] <- 0``, and the input becomes ``[x, 0]``: the output is ``W' x``, exactly the ``[0.5x, 0.5x]``
  response, and ``W[:, C:]`` gets zero gradient. No parameter is added, so the loop's optimizer keeps its
  list; its momentum for the stem continues (the last mixing-phase gradient of ``W[:, :C]`` decays into the
  first fine-tuning steps; leftover momentum may move ``W[:, C:]`` off zero, which changes nothing since it
  only ever meets the zero half). A ``converted`` buffer in the state_dict makes the conversion idempotent
  and resume-safe. With ``heads: 2`` head 2 stays in the graph with weight 0 (DDP needs every parameter).
- Metrics, single images (``eval_logits``, ``val_acc`` / ``test_acc``: beside P1 Table 1's mixup-C
  "CIFAR-10 test accuracy", 92.5% original / 93.7% fine-tuned): ``[0.5x, 0.5x]`` before the
  conversion, ``[x, 0]`` after; with 2 heads before it both heads on that one image, ``*_acc_single_head1``
  (= ``*_acc``) and ``*_acc_single_head2``; after it head 1 alone.
- Evaluation, two images (``eval_pairs``, before the conversion): the split's fixed pairs ``(x, x_p)`` fed as
  ``[0.5 x, 0.5 x_p]``; heads=2: ``*_acc_head1`` (head 1 against ``x``'s label) and ``*_acc_head2`` (head 2
  against ``x_p``'s): P1 §5.2's "first category ... 88.41%, the second category 88.61%", two different test
  images in one pass, each head scored against its own (MSIN's ``test2``); heads=1: ``*_top2``,
  ``*_top2_all`` (P1's top-2 at test time). Under ``eval_lam: half`` every test pair has label ratio
  0.5, a tie, so either order counts and ``*_top2`` equals ``*_top2_all`` (the set of the two classes);
  an order-sensitive ``*_top2`` needs ``eval_lam: train`` (ratios drawn as in training; first = the
  larger ratio).
- Train logs: ``lam``; heads=1: ``top2``, ``top2_all`` (§4.1, ``ops.metrics.top2_hits``: a same-label pair
  is a miss, P1's "1 - 2/N"; lam = 0.5 ties both image and label, then either order counts); heads=2:
  ``train_acc_head1``, ``train_acc_head2`` (P1: about 96% each). Nothing in the fine-tuning phase.
ASSUMPTIONS (methods.md) and their switches:
- lam ~ Beta(alpha, alpha), alpha = 1: ``lam: beta`` + ``alpha``; ``lam: range`` draws U[0.5 - r, 0.5 + r], ``r``.
- the dual-head net's inputs are 50/50 (methods.md §4.3, 2026-12-07): ``dual_input`` half | lam; its
  two-image test input is then 50/50 too, whatever ``eval_lam``.
- test input ``[0.5x, 0.5x]`` before fine-tuning (MSIN ``mixup_data_test``): fixed, because the stem
  conversion W' (also an ASSUMPTION) is defined to reproduce it; the two are one choice.
- fine-tuning 10 epochs at lr 1e-3, hard labels, head 1 kept: ``ft_epochs`` (0 = none), ``ft_lr``, base+ is ``aug``.
- dual-head loss: the plain sum is P1's; ``dual_loss: weighted`` is the earlier reading of Eq. 3,
  ``lam CE(h1, y_i) + (1 - lam) CE(h2, y_j)``.
- the two-image test input: P1 gives no ratio; ``eval_lam: half`` feeds ``[0.5 x, 0.5 x_p]`` (as
  ``mixup_data_test``'s single-image 0.5); ``train`` draws one lam per pair as in training. The pairing
  (``ops.pairing.cycle_partners`` by the run's seed) lets same-label pairs occur, as MSIN's two loaders do.
Invariants tested (tests/test_mixup_c.py): the input halves are exactly lam x_i and (1 - lam) x_j and the
target matches; the conversion reproduces the [0.5x, 0.5x] logits; the zero half gets zero gradient; the
conversion is idempotent and survives a state_dict round trip; the dual-head loss formula (both forms); the
ft lr after ``epochs``; the two-image head metrics on hand-made pairs.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raypair.config.methods.mixup_c import MixupCConfig
from raypair.methods.base import METHODS, Method, Mixed, StepOut, finetune_lr
from raypair.ops.losses import one_hot, soft_cross_entropy
from raypair.ops.metrics import top2_hits
from raypair.ops.mixing import mix, partner, sample_beta, sample_uniform


def _first_conv(model: nn.Module, in_channels: int) -> Optional[str]:
    return next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == in_channels),
                None)


def _after_load(method: "MixupC", _keys: Any) -> None:
    method._converted = bool(method.converted)  # a resumed run knows whether its stem was converted


@METHODS.register("mixup_c")
class MixupC(Method):
    Config = MixupCConfig

    def __init__(self, cfg: MixupCConfig, model: nn.Module, info: Any) -> None:
        super().__init__(cfg, model, info)
        c = info.image_shape[0]
        self.stem_name = _first_conv(model, 2 * c)
        if self.stem_name is None:
            raise ValueError(f"mixup_c needs a model whose stem conv takes 2C = {2 * c} channels "
                             f"(build_method builds it: MixupCConfig.images_per_input), got none in "
                             f"{type(model).__name__}")
        self.head2 = nn.Linear(model.num_features, info.num_classes) if cfg.heads == 2 else None
        self.register_buffer("converted", torch.zeros((), dtype=torch.bool))
        self._converted = False  # Python mirror of the buffer: no device sync per step
        self.register_load_state_dict_post_hook(_after_load)

    def on_epoch_start(self, epoch: int, epochs: int, stats: dict[str, Any]) -> Optional[float]:
        lr = finetune_lr(epoch, epochs, self.cfg.ft_epochs, self.cfg.ft_lr)
        if lr is not None and not self._converted:
            self._convert()
        return lr

    @torch.no_grad()
    def _convert(self) -> None:
        """Stem W [O, 2C, k, k] -> W[:, :C] = 0.5 (W[:, :C] + W[:, C:]), W[:, C:] = 0, in place, once."""
        w = self.model.get_submodule(self.stem_name).weight
        c = w.shape[1] // 2
        w[:, :c] = 0.5 * (w[:, :c] + w[:, c:])
        w[:, c:] = 0.0
        self.converted.fill_(True)
        self._converted = True

    def _single(self, x: Tensor) -> Tensor:
        """One image per row ``[B, C, H, W]`` -> the net's ``[B, 2C, H, W]`` input for the current phase."""
        if self._converted:
            return torch.cat([x, torch.zeros_like(x)], 1)
        return torch.cat([0.5 * x, 0.5 * x], 1)

    def _lams(self, n: int, g: torch.Generator) -> Tensor:
        """``n`` draws of lam, float32 ``[n]`` on ``g``'s device."""
        cfg = self.cfg
        return sample_beta(cfg.alpha, n, g) if cfg.lam == "beta" else sample_uniform(0.5 - cfg.r, 0.5 + cfg.r, n, g)

    def _draw(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(x~ [B, 2C, H, W], lam 0-d, j [B])`` for one batch; heads=2 with ``dual_input: half`` feeds
        ``[0.5 x_i, 0.5 x_j]`` whatever lam (lam then only weighs ``dual_loss: weighted``)."""
        lam = self._lams(1, self.generator)[0].to(x.device)
        j, _ = partner(y, "perm", self.generator)
        w = torch.full_like(lam, 0.5) if self.head2 is not None and self.cfg.dual_input == "half" else lam
        return torch.cat([w * x, (1 - w) * x[j]], 1), lam, j

    def _heads(self, x2: Tensor, both: bool) -> tuple[Tensor, Optional[Tensor]]:
        if self.head2 is None or not both:
            return self.model(x2), None
        f = self.model.forward_head(self.model.forward_features(x2), pre_logits=True)
        return self.model.get_classifier()(f), self.head2(f)

    def _target(self, y: Tensor, j: Tensor, lam: Tensor) -> Tensor:
        k = self.info.num_classes
        return mix(one_hot(y, k), one_hot(y[j], k), lam)

    def mix(self, x: Tensor, y: Tensor) -> Mixed:
        if self._converted:
            return Mixed(self._single(x), one_hot(y, self.info.num_classes))
        x2, lam, j = self._draw(x, y)
        return Mixed(x2, self._target(y, j, lam), {"lam": lam})

    def forward(self, x: Tensor, y: Tensor) -> StepOut:
        if self._converted:  # fine-tuning: ERM on single images, hard labels, head 1
            h1, h2 = self._heads(self._single(x), both=True)
            loss = F.cross_entropy(h1.float(), y)
            if h2 is not None:
                loss = loss + 0.0 * h2.float().sum()
            return StepOut(loss, h1)
        x2, lam, j = self._draw(x, y)
        h1, h2 = self._heads(x2, both=True)
        logs: dict[str, Any] = {"lam": lam.detach()}
        if h2 is None:
            target = self._target(y, j, lam)
            top2, top2_all = top2_hits(h1.detach(), y, y[j], lam)
            logs.update(top2=top2.float().mean(), top2_all=top2_all.float().mean())
            return StepOut(soft_cross_entropy(h1, target), h1, logs, labels=target.argmax(1))
        y2 = y[j]
        if self.cfg.random_label == "second":  # P1 §5.4: sample 2's label is a random class
            y2 = torch.randint(0, self.info.num_classes, y.shape, generator=self.generator,
                               device=self.generator.device).to(y.device)
        ce1, ce2 = F.cross_entropy(h1.float(), y), F.cross_entropy(h2.float(), y2)
        loss = ce1 + ce2 if self.cfg.dual_loss == "sum" else lam * ce1 + (1 - lam) * ce2
        logs.update(train_acc_head1=(h1.detach().argmax(1) == y).float().mean(),
                    train_acc_head2=(h2.detach().argmax(1) == y2).float().mean())  # against its own target
        return StepOut(loss, h1, logs)  # train top-1 of head 1 against y_i

    @torch.no_grad()
    def eval_logits(self, x: Tensor) -> dict[str, Tensor]:
        h1, h2 = self._heads(self._single(x), both=not self._converted)
        return {"": h1} if h2 is None else {"single_head1": h1, "single_head2": h2}

    @torch.no_grad()
    def eval_pairs(self, x: Tensor, y: Tensor, xp: Tensor, yp: Tensor,
                   generator: torch.Generator) -> dict[str, Tensor]:
        """Two different images ``x, xp [B, C, H, W]`` in one pass, ``[lam x, (1 - lam) xp]`` (lam 0.5, or
        drawn per pair with ``eval_lam: train``): heads=2 ``{acc_head1, acc_head2}``, heads=1
        ``{top2, top2_all}``, each ``[B]``; nothing once the stem is converted (a single-image net)."""
        if self._converted:
            return {}
        n = len(y)
        half = self.cfg.eval_lam == "half" or (self.head2 is not None and self.cfg.dual_input == "half")
        lam = torch.full((n,), 0.5, device=x.device) if half else self._lams(n, generator).to(x.device)
        w = lam.view(-1, 1, 1, 1)
        h1, h2 = self._heads(torch.cat([w * x, (1 - w) * xp], 1), both=True)
        if h2 is None:
            top2, top2_all = top2_hits(h1, y, yp, lam)
            return {"top2": top2, "top2_all": top2_all}
        return {"acc_head1": h1.argmax(1) == y, "acc_head2": h2.argmax(1) == yp}
