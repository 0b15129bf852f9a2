"""One epoch of the loop: the training step (a method's parts, each its own optimiser step), the
epoch's reduction across workers, and the evaluation of a split. Imported through ``raypair.loop``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raypair.data import DeviceLoader
from raypair.methods import Method, StepOut
from raypair.ops.pairing import cycle_partners
from raypair.ops.sampling import seeded_generator


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1


# --------------------------------------------------------------------------------- reduction
def all_reduce(values: Tensor, dist: Dist) -> Tensor:
    if dist.world_size > 1:
        torch.distributed.all_reduce(values)
    return values


# ----------------------------------------------------------------------------------- epochs
def train_step(net: nn.Module, x: Tensor, y: Tensor, opt: torch.optim.Optimizer, amp: bool,
               parts: Optional[int] = None) -> tuple[Tensor, StepOut]:
    """One batch: ``(float64 [2] loss * n and correct, on the device; the output)``, no host sync.

    A method with ``parts > 1`` (default: read from the method inside ``net``) takes one optimiser
    step per part, in order: part 0 is ``net(x, y)``, part k is ``net(carry, y, k)`` with the previous
    part's ``StepOut.carry``, after the previous part's step (VPL's alternating DML). The batch's loss
    is the sum of its parts' losses, its hits part 0's, its logs every part's."""
    parts = parts or _method(net).parts
    out, first, total = None, None, None
    for part in range(parts):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            out = net(x, y) if out is None else net(out.carry, y, part)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        total = out.loss.detach().double() if total is None else total + out.loss.detach().double()
        first = out if first is None else StepOut(first.loss, first.logits, {**first.logs, **out.logs}, first.labels)
    assert first is not None and total is not None
    hits = first.logits.detach().argmax(1) == (y if first.labels is None else first.labels)
    return torch.stack([total * y.shape[0], hits.sum().double()]), first


def _method(net: nn.Module) -> Method:
    """The method inside ``net`` (itself, or wrapped by DDP and / or ``torch.compile``)."""
    net = getattr(net, "_orig_mod", net)
    return getattr(net, "module", net)


def add_logs(on_device: dict[str, Tensor], on_host: dict[str, float], logs: Any) -> None:
    """Sum a step's logs: tensors on the device, numbers on the host (no blocking copy per step)."""
    for k, v in logs.items():
        if not isinstance(v, Tensor):
            on_host[k] = on_host.get(k, 0.0) + float(v)
        else:
            on_device[k] = on_device[k] + v.detach().double() if k in on_device else v.detach().double()


def train_epoch(net: nn.Module, method: Method, batches_it: Any, opt: torch.optim.Optimizer,
                lr: Callable[[float, int], float], step: int, amp: bool, dist: Dist) -> tuple[dict[str, float], int]:
    """One pass over ``batches_it``; ``lr(initial_lr, step)`` is each group's lr at that step."""
    net.train()
    dev = next(method.parameters()).device
    sums = torch.zeros(2, device=dev, dtype=torch.float64)  # loss * n, correct (no host sync per step)
    dev_logs: dict[str, Tensor] = {}
    host_logs: dict[str, float] = {}
    batches = seen = 0
    for x, y in batches_it:
        for g in opt.param_groups:
            g["lr"] = lr(g["initial_lr"], step)
        step_sums, out = train_step(net, x, y, opt, amp, method.parts)
        sums += step_sums
        add_logs(dev_logs, host_logs, out.logs)
        step, batches, seen = step + 1, batches + 1, seen + y.shape[0]
    keys = sorted({*dev_logs, *host_logs})  # every method logs the same keys on every batch and every rank
    local = [*sums.tolist(), float(seen)]
    logs = [dev_logs.get(k, sums.new_zeros(())) + host_logs.get(k, 0.0) for k in keys]  # a log may be either
    counts = torch.tensor([float(seen), float(batches)], device=dev, dtype=torch.float64)
    flat = torch.cat([sums, counts, torch.stack(logs) if keys else sums[:0]])
    flat = all_reduce(flat, dist).tolist()
    loss_sum, correct, n, total_batches = flat[:4]
    metrics = {"train_loss": loss_sum / n, "train_acc": correct / n, "train_samples": n}
    metrics.update({k: v / total_batches for k, v in zip(keys, flat[4:])})
    if dist.world_size > 1:  # this rank's own shard, not all-reduced: shows that ranks saw different data
        metrics["worker"] = {"rank": dist.rank, "train_loss": local[0] / local[2], "train_acc": local[1] / local[2],
                             "samples": local[2]}
    return metrics, step


@torch.no_grad()
def evaluate(method: Method, loader: DeviceLoader, amp: bool, dist: Dist, prefix: str = "val",
             seed: int = 0) -> dict[str, float]:
    """Each ``eval_logits`` head's loss, top-1 (and top-5) over the split; a method with ``eval_pairs``
    also gets the split paired by ``seed`` (the same pairs and ratios at every call) and each of its
    per-pair values' mean as ``{prefix}_{name}``."""
    method.eval()
    names, pair_names, sums = _eval_sums(method, loader, amp, seed)
    flat = all_reduce(sums, dist).tolist()
    out = _head_metrics(flat, names, method.info.num_classes, prefix)
    n = flat[-1]
    out.update({f"{prefix}_{name}": flat[3 * len(names) + i] / n for i, name in enumerate(pair_names)})
    return out


def _eval_sums(method: Method, loader: DeviceLoader, amp: bool, seed: int) -> tuple[list[str], list[str], Tensor]:
    """The head names, the pair-value names and this rank's float64 sums over its part of the split:
    per head loss*n, top-1 hits, top-5 hits; per pair value its sum; then n."""
    dev = next(method.parameters()).device
    paired = type(method).eval_pairs is not Method.eval_pairs
    partners = loader.reordered(cycle_partners(len(loader.y), seed)).epoch(0) if paired else None
    gen = seeded_generator("eval.draws", seed, device=dev)
    names: list[str] = []
    pair_names: list[str] = []
    sums: Optional[Tensor] = None
    for x, y in loader.epoch(0):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            heads = method.eval_logits(x)
            pairs = method.eval_pairs(x, y, *next(partners), gen) if partners is not None else {}
        names, pair_names = list(heads), list(pairs)
        vals = _batch_sums(heads, pairs, y, dev)
        sums = vals if sums is None else sums + vals
    assert sums is not None, "the evaluation split is empty"
    return names, pair_names, sums


def _batch_sums(heads: dict[str, Tensor], pairs: dict[str, Tensor], y: Tensor, dev: torch.device) -> Tensor:
    """One batch's float64 sums, laid out as :func:`_eval_sums` says."""
    row = []
    for logits in heads.values():
        logits = logits.float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        row += [F.cross_entropy(logits, y, reduction="sum"), (top[:, 0] == y).sum(),
                (top == y[:, None]).any(1).sum()]
    row += [v.double().sum() for v in pairs.values()] + [torch.tensor(y.shape[0], device=dev)]
    return torch.stack([r.double() for r in row])


def _head_metrics(flat: list[float], names: list[str], k: int, prefix: str) -> dict[str, float]:
    """Each head's ``{prefix}_loss_{name}``, ``_acc_{name}`` (``_acc5_{name}`` for over 5 classes)
    from the reduced sums; the first head's also untagged."""
    n = flat[-1]
    out: dict[str, float] = {}
    for i, name in enumerate(names):
        tag = f"_{name}" if name else ""
        out[f"{prefix}_loss{tag}"], out[f"{prefix}_acc{tag}"] = flat[3 * i] / n, flat[3 * i + 1] / n
        if k > 5:
            out[f"{prefix}_acc5{tag}"] = flat[3 * i + 2] / n
        if i == 0:  # the primary head is also reported untagged
            out[f"{prefix}_loss"], out[f"{prefix}_acc"] = out[f"{prefix}_loss{tag}"], out[f"{prefix}_acc{tag}"]
            if k > 5:
                out[f"{prefix}_acc5"] = out[f"{prefix}_acc5{tag}"]
    return out
