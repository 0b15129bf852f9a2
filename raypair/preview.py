"""``raypair preview``: a grid of real images after a method's batch transform, with the mixing
ratios and labels written under each tile: what a researcher looks at before trusting an
augmentation. It runs the method's own ``mix`` on a batch from the same loader training uses.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Optional

import torch
from PIL import Image, ImageDraw
from torch import Tensor

from raypair.config import ModelConfig, RunConfigBase, loader_aug, loader_views
from raypair.data import DeviceLoader, load_splits, pipeline_kwargs
from raypair.methods import build_method

SCALE, CAPTION = 3, 30  # tile upscaling (of images under 96 px; larger ones at 1:1); caption height (two lines)


def preview(run: RunConfigBase, out: Path, n: int = 16, epoch: Optional[int] = None,
            stats: Optional[dict[str, float]] = None) -> Path:
    """Write a PNG grid of ``n`` transformed training images of ``run`` to ``out``."""
    data = run.data.model_copy(update={"train_subset": n, "val_fraction": 0.0, "test_subset": None})
    splits = load_splits(data)
    info = splits.info
    crop_flip, policy = loader_aug(run.method, info.pipeline)
    loader = DeviceLoader(splits.train_x, splits.train_y, batch_size=n, mean=info.mean, std=info.std,
                          train=True, augment=crop_flip, autoaugment=policy, pad=run.data.pad, seed=run.seed,
                          rf_view=loader_views(run.method, info.pipeline), **pipeline_kwargs(run.data, info))
    torch.manual_seed(run.seed)
    # mix never runs the network: the tiny one stands in for run.model; the stream is seeded
    # run.seed itself (not the loop's per-worker run.seed * 1000), as the grids in docs/ were drawn
    small = run.model_copy(update={"model": ModelConfig(name="tiny_cnn")})
    method = build_method(small, info, pool=loader, generator_seed=run.seed)
    if epoch is not None:
        method.on_epoch_start(epoch, run.epochs, stats or {})
    x, y = next(iter(loader.epoch(0)))
    with torch.no_grad():
        mixed = method.mix(x, y)
    pixels = _to_pixels(mixed.x, info)
    captions = [_caption(t, info.classes) for t in mixed.target]
    title = f"{run.method.name}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in run.method.model_dump().items()
                                                 if k != "name")
    _grid(pixels, captions, title).save(out)
    return out


def _to_pixels(x: Tensor, info: Any) -> Tensor:
    """Network input ``[B, C', H, W]`` back to [0, 1] pixels; a 2C-channel input (mixup-C) is shown
    as its two halves side by side. Tiles outside the displayable range are min-max scaled."""
    c = info.image_shape[0]
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    halves = [x[:, i:i + c] for i in range(0, x.shape[1], c)]
    shown = torch.cat([h * std + mean for h in halves], dim=3)  # a half weighted by w fades to grey
    lo = shown.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = shown.flatten(1).max(1).values.view(-1, 1, 1, 1)
    off = (lo < -0.1) | (hi > 1.1)
    return torch.where(off, (shown - lo) / (hi - lo).clamp_min(1e-6), shown).clamp(0, 1)


def _caption(target: Tensor, classes: tuple[str, ...]) -> str:
    w, k = target.topk(min(2, target.numel()))
    parts = [f"{classes[int(i)][:10]} {float(v):.2f}" for v, i in zip(w, k) if float(v) > 0.005]
    return "\n".join(parts)


def _grid(pixels: Tensor, captions: list[str], title: str, cols: int = 4) -> Image.Image:
    b, _, h, w = pixels.shape
    scale = SCALE if max(h, w) < 96 else 1  # a 224-px crop is shown as it is
    tw, th = w * scale, h * scale + CAPTION
    rows = -(-b // cols)
    head = textwrap.wrap(title, width=max(20, cols * tw // 6))
    top = 6 + 12 * len(head)
    img = Image.new("RGB", (cols * tw, rows * th + top), "white")
    draw = ImageDraw.Draw(img)
    draw.multiline_text((4, 3), "\n".join(head), fill="black", spacing=2)
    arr = (pixels.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    for i in range(b):
        tile = Image.fromarray(arr[i]).resize((tw, h * scale), Image.NEAREST)
        x0, y0 = (i % cols) * tw, top + (i // cols) * th
        img.paste(tile, (x0, y0))
        draw.multiline_text((x0 + 3, y0 + h * scale + 3), captions[i], fill="black", spacing=2)
    return img


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
