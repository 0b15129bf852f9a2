"""mixup-C (P1: Liang, Yang, Wang, *Multi-Sample Interpolation Training Method*, ICMLT 2018; methods.md §4.2-§4.4).

Equation (P1 Eq. 2): ``x~ = [lam x_i, (1 - lam) x_j]`` concatenated along channels (``[B, 2C, H, W]``; the
net is built with a 2C-channel stem: ``MixupCConfig.images_per_input = 2``), ``y~ = lam y_i + (1 - lam) y_j``,
``L = sce(f(x~), y~)``; ``perm`` partner, one lam per batch (mixup-cifar10, which P1's MSIN code derives from).
- ``heads: 2``: the dual-input / dual-output net of §4.3. Head 1 is the model's classifier, head 2 a Linear
  owned here, both on ``forward_head(..., pre_logits=True)``; ``L = lam CE(h1, y_i) + (1 - lam) CE(h2, y_j)``.
- Fine-tuning (§4.4): the last ``ft_epochs`` epochs train ERM on single images with hard labels at the
  constant lr ``ft_lr`` (``on_epoch_start`` returns it), head 1 only. At its first epoch the stem (the model's first
  Conv2d with 2C input channels) is converted in place, ``W[:, :C] <- 0.5 (W[:, :C] + W[:, C:])``,
  ``W[:, C:] <- 0``, and the input becomes ``[x, 0]``: the output is ``W' x``, exactly the ``[0.5x, 0.5x]``
  response, and ``W[:, C:]`` gets zero gradient. No parameter is added, so the loop's optimizer keeps its
  list; its momentum for the stem continues (the last mixing-phase gradient of ``W[:, :C]`` decays into the
  first fine-tuning steps; leftover momentum may move ``W[:, C:]`` off zero, which changes nothing since it
  only ever meets the zero half). A ``converted`` buffer in the state_dict makes the conversion idempotent
  and resume-safe. With ``heads: 2`` head 2 stays in the graph with weight 0 (DDP needs every parameter).
- Evaluation: ``[0.5x, 0.5x]`` before the conversion, ``[x, 0]`` after; with 2 heads before it
  ``{"": head 1, "head2": head 2}`` (P1 reports 88.41 / 88.61 %), after it head 1 alone.
- Logs: ``lam``; heads=1: ``top2``, ``top2_all`` (§4.1, ``ops.metrics.top2_hits``); heads=2:
  ``train_acc_head1``, ``train_acc_head2``. Nothing in the fine-tuning phase.
ASSUMPTIONS (methods.md) and their switches:
- lam ~ Beta(alpha, alpha), alpha = 1: ``lam: beta`` + ``alpha``; ``lam: range`` draws U[0.5 - r, 0.5 + r], ``r``.
- test input ``[0.5x, 0.5x]`` before fine-tuning (MSIN ``mixup_data_test``): fixed, because the stem
  conversion W' (also an ASSUMPTION) is defined to reproduce it; the two are one choice.
- fine-tuning 10 epochs at lr 1e-3, hard labels, head 1 kept: ``ft_epochs`` (0 = none), ``ft_lr``, base+ is ``aug``.
A run must keep a mixing epoch: ``ft_epochs < epochs`` is checked with the run (no silent capping).
Invariants tested (tests/test_mixup_c.py): the input halves are exactly lam x_i and (1 - lam) x_j and the
target matches; the conversion reproduces the [0.5x, 0.5x] logits; the zero half gets zero gradient; the
conversion is idempotent and survives a state_dict round trip; the dual-head loss formula; the ft lr.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from raypair.config import MethodConfig
from raypair.methods.base import METHODS, Method, Mixed, StepOut, check_finetune, finetune_lr
from raypair.ops.losses import one_hot, soft_cross_entropy
from raypair.ops.metrics import top2_hits
from raypair.ops.mixing import mix, partner, sample_beta, sample_uniform


class MixupCConfig(MethodConfig):
    name: Literal["mixup_c"] = "mixup_c"
    alpha: float = Field(1.0, gt=0.0, le=100.0)  # Beta(alpha, alpha); 1 = U[0, 1]
    lam: Literal["beta", "range"] = "beta"
    r: float = Field(0.5, ge=0.0, le=0.5)  # lam ~ U[0.5 - r, 0.5 + r] with lam: range
    heads: Literal[1, 2] = 1  # 2 = the dual-input / dual-output net of §4.3
    ft_epochs: int = Field(10, ge=0, le=1000)  # the last ft_epochs epochs fine-tune; < the run's epochs
    ft_lr: float = Field(1e-3, gt=0.0, le=10.0)
    images_per_input: ClassVar[int] = 2  # [lam x_i, (1 - lam) x_j]: build_method builds a 2C-channel stem

    def check_run(self, run: Any) -> None:
        check_finetune(self.ft_epochs, run.epochs, "mixup-C")

    def eval_heads(self) -> tuple[str, ...]:
        return ("", "head2") if self.heads == 2 else ("",)  # head2: before the fine-tuning conversion only

    def inactive(self) -> set[str]:
        off = {"r"} if self.lam == "beta" else {"alpha"}
        return off | ({"ft_lr"} if self.ft_epochs == 0 else set())


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

    def _draw(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(x~ [B, 2C, H, W], lam 0-d, j [B])`` for one batch."""
        g, cfg = self.generator, self.cfg
        if cfg.lam == "beta":
            lam = sample_beta(cfg.alpha, 1, g)
        else:
            lam = sample_uniform(0.5 - cfg.r, 0.5 + cfg.r, 1, g)
        lam = lam[0].to(x.device)
        j, _ = partner(y, "perm", g)
        return torch.cat([lam * x, (1 - lam) * x[j]], 1), lam, j

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
            top2, top2_all = top2_hits(h1.detach(), target)
            logs.update(top2=top2.float().mean(), top2_all=top2_all.float().mean())
            return StepOut(soft_cross_entropy(h1, target), h1, logs, labels=target.argmax(1))
        loss = lam * F.cross_entropy(h1.float(), y) + (1 - lam) * F.cross_entropy(h2.float(), y[j])
        logs.update(train_acc_head1=(h1.detach().argmax(1) == y).float().mean(),
                    train_acc_head2=(h2.detach().argmax(1) == y[j]).float().mean())
        return StepOut(loss, h1, logs)  # train top-1 of head 1 against y_i

    @torch.no_grad()
    def eval_logits(self, x: Tensor) -> dict[str, Tensor]:
        h1, h2 = self._heads(self._single(x), both=not self._converted)
        return {"": h1} if h2 is None else {"": h1, "head2": h2}
