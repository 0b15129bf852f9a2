"""The base of every method's config (each module of ``raypair/config/methods/`` subclasses it),
what a method declares about its runs (the metrics it reports, its extra epochs, where a search over
a knob must stay), and the loader settings an ``aug`` value stands for."""
from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

from raypair.config.base import Strict


class MethodConfig(Strict):
    """Base of every method's config; each module of ``config/methods/`` subclasses it with ``name: Literal[...]``."""

    images_per_input: ClassVar[int] = 1  # images stacked along channels in one network input (mixup-C: 2)
    name: str
    # base: normalise only; base+: pad-crop-flip first (the imagenet data.pipeline: RandomResizedCrop +
    # flip); base+aa_<policy>: then AutoAugment with torchvision's CIFAR10 or ImageNet policy, each sample
    # its own sub-policy (raypair/ops/autoaugment.py); base+ra: then RandAugment (ops/randaugment.py)
    aug: Literal["base", "base+", "base+aa_cifar10", "base+aa_imagenet", "base+ra"] = "base+"

    def eval_heads(self) -> tuple[str, ...]:
        """The names of the method's ``eval_logits`` entries under these settings, the primary one
        first (VPL: ``cnn``, ``vit``...). Head ``k`` is reported as ``val_acc_k``, ``val_loss_k``,
        ``val_acc5_k`` (and ``test_*``); the primary also untagged (``val_acc``)."""
        return ("",)

    def train_metrics(self) -> set[str]:
        """Per-epoch training metrics the method logs beyond ``train_loss`` / ``train_acc``
        (VPL: each branch's ``train_acc_cnn``, ``train_acc_vit``)."""
        return set()

    def search_range(self, field: str) -> Optional[tuple[float, float, str]]:
        """``(low, high, why)``: where a search over ``field`` must stay under these settings (VPL's
        tau: a normalised or a raw-similarity scale), or None. A space whose range leaves it, under
        any value of the space's other searched choices, is refused before any trial starts."""
        return None

    def unread_run_fields(self) -> set[str]:
        """Dotted run-config paths this method overrides, so no code reads them (VPL's per-branch
        learning rates replace ``optim.lr``); sweeping one is refused."""
        return set()

    def crops_itself(self) -> bool:
        """True when the method disturbs the un-augmented training image itself (PairTraining's RF of
        the original, ``rf_of``): on the cifar pipeline the loader then hands over the un-augmented
        images and the method pad-crop-flips them; on the imagenet pipeline every training batch
        carries RF of the un-augmented image too (:func:`loader_views`)."""
        return False

    def networks(self) -> tuple[str, ...]:
        """Networks the method builds beside ``model.name`` (VPL's transformer), for what a report
        says ran."""
        return ()

    def eval_pair_metrics(self) -> set[str]:
        """Metrics of the method's ``eval_pairs`` (P1's fixed test pairs), reported as ``val_<name>``
        and ``test_<name>``."""
        return set()

    def extra_epochs(self) -> int:
        """Epochs this method trains after the run's ``epochs`` (P1's fine-tuning phase, from the
        state the run's own epochs end in); the loop trains ``RunConfigBase.total_epochs``."""
        return 0

    def stage_starts(self, epochs: int) -> list[int]:
        """0-based epochs at which a fixed, epoch-scheduled training stage starts (VPL's stages 2 and
        3); a sweep refuses an ASHA rung before the last of them (its trials would be judged, and
        stopped, before that stage ran). Stages a run's own metrics choose (PairTraining) are not listed."""
        return []

    def check_run(self, run: Any) -> None:
        """Cross-checks against the rest of the run (a ``RunConfigBase``; e.g. a phase longer than
        ``run.epochs``): raise ``ValueError("<field>: ...")`` naming this config's field."""
        return None


def reported_metrics(method: MethodConfig) -> set[str]:
    """Every metric name a run of ``method`` reports (what ``tune.metric`` and an ablation's
    ``metrics`` may name): the loop's train metrics, the method's own, and per evaluation head
    ``{val,test}_{acc,acc5,loss}`` (the primary head untagged too), its pair metrics, and with extra
    epochs each of those at their start (``*_pre_ft``)."""
    tags = {f"_{h}" if h else "" for h in method.eval_heads()} | {""}
    evals = ({f"{p}_{m}{t}" for p in ("val", "test") for m in ("acc", "acc5", "loss") for t in tags}
             | {f"{p}_{m}" for p in ("val", "test") for m in method.eval_pair_metrics()})
    if method.extra_epochs():  # the state the extra epochs start from, recorded as *_pre_ft
        evals |= {f"{m}_pre_ft" for m in evals}
    return {"train_loss", "train_acc"} | method.train_metrics() | evals


def aug_parts(aug: str) -> tuple[bool, Optional[str]]:
    """``method.aug`` as the loader's (crop and flip?, AutoAugment policy, "ra" for RandAugment, or None)."""
    return aug != "base", (aug.split("aa_", 1)[1] if "aa_" in aug else "ra" if aug == "base+ra" else None)


def loader_aug(method: MethodConfig, pipeline: str) -> tuple[bool, Optional[str]]:
    """:func:`aug_parts` of ``method.aug`` for the training loader on ``pipeline``, without the crop
    when the method crops itself on the cifar pipeline (PairTraining's ``rf_of: original``)."""
    crop_flip, policy = aug_parts(method.aug)
    return crop_flip and not (pipeline == "cifar" and method.crops_itself()), policy


def loader_views(method: MethodConfig, pipeline: str) -> bool:
    """Whether the training loader adds RF of each un-augmented image (a random ``crop_size`` window of
    the ``resize_size`` square, flipped with p=0.5) after the augmented view's channels: on the
    imagenet pipeline when the method disturbs the original itself (PairTraining's ``rf_of:
    original``, methods.md §5.3's "random crop from the 256-resized image"; x_z stays normal
    training's RandomResizedCrop)."""
    return pipeline == "imagenet" and method.crops_itself()
