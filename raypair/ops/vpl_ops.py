"""Vision Pair Learning's pure pieces (methods.md §6): stage schedule, contrastive and KL losses,
EMA decay and update, and reading a transformer teacher out of a raypair checkpoint.

Tensor functions take their device from their inputs; none draws random numbers.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raypair.ops.losses import kl_loss

CKPT_FILE = "state.pt"  # raypair.loop's checkpoint file (ops may not import the loop)


# ------------------------------------------------------------------------------------- stages
def percent_of(p: int, epochs: int) -> int:
    """``round(p / 100 * epochs)`` with halves rounded up (Python's ``round`` would round 2.5 to 2)."""
    return math.floor(p * epochs / 100 + 0.5)


def vpl_stage(epoch: int, epochs: int, x: int, y: int) -> int:
    """§6.3: stage 1 (CL only) if ``epoch < round(x% E)``, stage 3 (KL only) if
    ``epoch >= E - round(y% E)``, else stage 2 (CL + KL). ``epoch`` is 0-based; x = y = 0: stage 2 throughout."""
    if x < 0 or y < 0 or x + y > 100:
        raise ValueError(f"need x, y >= 0 and x + y <= 100, got x={x}, y={y}")
    if epoch < percent_of(x, epochs):
        return 1
    if epoch >= epochs - percent_of(y, epochs):
        return 3
    return 2


def stage_weights(stage: int) -> tuple[float, float]:
    """``(w_cl, w_kl)`` of a stage: 1 -> (1, 0), 2 -> (1, 1), 3 -> (0, 1)."""
    if stage not in (1, 2, 3):
        raise ValueError(f"stage must be 1, 2 or 3, got {stage}")
    return float(stage <= 2), float(stage >= 2)


# ------------------------------------------------------------------------------------- losses
def contrastive_loss(hc: Tensor, ht: Tensor, tau: float, normalize: bool) -> Tensor:
    """L_CL of §6.1 over ``hc, ht [N, D]`` (row i of each is the same image): ``E = [hc; ht]``
    (rows L2-normalised if ``normalize``), ``S = E E^T / tau`` with the diagonal masked, a (2N-1)-way
    cross-entropy whose target for row i is its other view (i + N, resp. i - N), mean over 2N rows.
    Computed in fp32 with autocast off. Detaching is the caller's job (VPL passes ``hc.detach()``)."""
    if hc.shape != ht.shape or hc.dim() != 2:
        raise ValueError(f"need two [N, D] embeddings of one shape, got {tuple(hc.shape)} and {tuple(ht.shape)}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    n = hc.shape[0]
    # fp32 under autocast too: bf16 keeps 8 bits of mantissa, so raw dot products of ~1e2 divided by
    # a small tau would be rounded by whole logits (autocast would run the matmul in bf16)
    with torch.autocast(hc.device.type, enabled=False):
        e = torch.cat([hc, ht]).float()
        if normalize:
            e = F.normalize(e, dim=1)
        s = (e @ e.T / tau).masked_fill(torch.eye(2 * n, dtype=torch.bool, device=e.device), float("-inf"))
        idx = torch.arange(n, device=e.device)
        return F.cross_entropy(s, torch.cat([idx + n, idx]))


def kl_toward(student: Tensor, teacher: Tensor, rho: float) -> Tensor:
    """``KL(softmax(teacher / rho) || softmax(student / rho))``, batchmean, no rho^2 factor (P4 Eq. 6).
    Gradient flows into whichever input is not detached by the caller."""
    if not rho > 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    return kl_loss(student.float() / rho, F.softmax(teacher.float() / rho, dim=1))


# ---------------------------------------------------------------------------------------- EMA
def ema_decay(step: Tensor, cap: float) -> Tensor:
    """``min(cap, (1 + t) / (10 + t))`` for the update count ``t`` (a 0-d tensor: no host sync)."""
    t = step.double()
    return ((1 + t) / (10 + t)).clamp(max=cap)


@torch.no_grad()
def ema_update_(ema: nn.Module, model: nn.Module, decay: Tensor) -> None:
    """In place: every float parameter and buffer ``e <- decay e + (1 - decay) m``; other buffers
    (BatchNorm's ``num_batches_tracked``) are copied. ``ema`` has ``model``'s structure."""
    for (name, e), m in zip(_tensors(ema), (t for _, t in _tensors(model))):
        if e.shape != m.shape:
            raise ValueError(f"EMA tensor {name} has shape {tuple(e.shape)}, model {tuple(m.shape)}")
        if e.is_floating_point():
            e.lerp_(m.detach(), (1 - decay).to(e.dtype))
        else:
            e.copy_(m)


def _tensors(module: nn.Module) -> list[tuple[str, Tensor]]:
    return [*module.named_parameters(), *module.named_buffers()]


# ------------------------------------------------------------------------------------ teacher
def teacher_state(path: str | Path, prefixes: tuple[str, ...] = ("vit.", "model.")) -> dict[str, Tensor]:
    """A teacher's weights from a raypair checkpoint (its folder or its ``state.pt``), loaded with
    ``weights_only=True``: the keys of ``state["method"]`` under the first of ``prefixes`` present,
    prefix stripped. Default, a transformer: ``vit.`` (a VPL run's transformer branch), else
    ``model.`` (a run whose ``model`` was the transformer, e.g. ERM); ``("model.",)``: a CNN (an ERM
    run's model, or a VPL run's CNN branch)."""
    p = Path(path)
    p = p / CKPT_FILE if p.is_dir() else p
    if not p.is_file():
        raise ValueError(f"teacher_checkpoint: no checkpoint at {p}, got {str(path)!r}")
    state: Any = torch.load(p, map_location="cpu", weights_only=True)
    method = state.get("method") if isinstance(state, dict) else None
    if not isinstance(method, dict):
        raise ValueError(f"teacher_checkpoint: {p} is no raypair checkpoint (no 'method' state dict)")
    for prefix in prefixes:
        picked = {k[len(prefix):]: v for k, v in method.items() if k.startswith(prefix)}
        if picked:
            return picked
    raise ValueError(f"teacher_checkpoint: {p} has no {' or '.join(map(repr, prefixes))} weights, "
                     f"got keys {sorted(method)[:5]}")
