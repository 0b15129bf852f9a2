"""``build_model``: every model through ``timm.create_model``, with a helpful error for a bad name."""
from __future__ import annotations

from typing import Any

import timm
from torch import nn

from raypair.config import ConfigError, ModelConfig
from raypair.config.model_names import is_model


def check_model_name(name: str) -> None:
    """Raise ``ConfigError`` on ``model.name`` if timm has no model ``name``, naming similar ones."""
    if not is_model(name):  # (raypair's nets, timm's, and those of the raypair.models plug-ins)
        near = timm.list_models(f"*{name.split('_')[0]}*")[:5]
        hint = f" (similar: {', '.join(near)})" if near else ""
        raise ConfigError("model.name", f"unknown timm model{hint}", name)


def build_model(cfg: ModelConfig, num_classes: int, in_chans: int,
                image_size: int | tuple[int, int] | None = None) -> nn.Module:
    """``timm.create_model`` with the data's classes and channels; no pretrained weights are fetched.
    ``image_size`` (a side or ``(H, W)``) sets a transformer's patch grid; CNNs do not take it."""
    check_model_name(cfg.name)
    kwargs: dict[str, Any] = dict(num_classes=num_classes, in_chans=in_chans, drop_rate=cfg.drop_rate)
    if image_size is not None and _takes_img_size(cfg.name):
        kwargs["img_size"] = image_size
    kwargs.update(cfg.kwargs)
    try:
        return timm.create_model(cfg.name, pretrained=False, **kwargs)
    except TypeError as e:
        text = next((ln for ln in str(e).splitlines() if ln.strip()), "")
        raise ConfigError("model.kwargs", f"{cfg.name} rejects them: {text[:200]}", cfg.kwargs) from None


def check_model(cfg: ModelConfig, num_classes: int, in_chans: int,
                image_size: int | tuple[int, int] | None = None) -> None:
    """Build the model on the meta device (no memory, ~10 ms) so that an unknown or bad
    ``model.kwargs`` key fails here, before any trial, as a ConfigError naming it. A model whose
    constructor needs real tensors (``.item()`` in its init) is built on the CPU instead."""
    import torch

    check_model_name(cfg.name)
    for device in ("meta", "cpu"):
        try:
            with torch.device(device), torch.no_grad():
                build_model(cfg, num_classes, in_chans, image_size)
            return
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - any constructor failure is the config's fault on the CPU
            if device == "cpu":
                field, value = ("model.kwargs", cfg.kwargs) if cfg.kwargs else ("model.name", cfg.name)
                text = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
                raise ConfigError(field, f"{cfg.name} cannot be built: {text[:200]}", value) from None


def _takes_img_size(name: str) -> bool:
    # ViT-like timm models build their patch grid from img_size; CNNs do not take the argument.
    return any(k in name for k in ("vit", "deit", "swin", "beit", "eva", "cait", "xcit"))


def param_count(model: nn.Module) -> int:
    """The number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
