"""``build_model``: every model through ``timm.create_model``, with a helpful error for a bad name,
and its initial weights (``model.pretrained`` / ``model.weights``, see ``weights.py``)."""
from __future__ import annotations

from typing import Any

import timm
from torch import nn

from raypair.config import ConfigError, ModelConfig
from raypair.config.model_names import is_model
from raypair.models import weights as W


def check_model_name(name: str) -> None:
    """Raise ``ConfigError`` on ``model.name`` if timm has no model ``name``, naming similar ones."""
    if not is_model(name):  # (raypair's nets, timm's, and those of the raypair.models plug-ins)
        near = timm.list_models(f"*{name.split('_')[0]}*")[:5]
        hint = f" (similar: {', '.join(near)})" if near else ""
        raise ConfigError("model.name", f"unknown timm model{hint}", name)


def build_model(cfg: ModelConfig, num_classes: int, in_chans: int,
                image_size: int | tuple[int, int] | None = None) -> nn.Module:
    """``timm.create_model`` with the data's classes and channels, then its initial weights: timm's
    (``cfg.pretrained``, fetched by timm) or ``cfg.weights`` (a local file). ``image_size`` (a side
    or ``(H, W)``) sets a transformer's patch grid; CNNs do not take it."""
    model = _create(cfg, num_classes, in_chans, image_size, cfg.pretrained)
    if cfg.weights is not None:
        W.load_weights(model, cfg.weights, cfg.name)
    return model


def _create(cfg: ModelConfig, num_classes: int, in_chans: int, image_size: int | tuple[int, int] | None,
            pretrained: bool) -> nn.Module:
    check_model_name(cfg.name)
    kwargs: dict[str, Any] = dict(num_classes=num_classes, in_chans=in_chans, drop_rate=cfg.drop_rate)
    if image_size is not None and _takes_img_size(cfg.name):
        kwargs["img_size"] = image_size
    kwargs.update(cfg.kwargs)
    if pretrained:
        W.hub_source(cfg.name)  # timm has weights for it, else one line
        W.check_pretrained_stem(cfg.name, in_chans)
    try:
        return timm.create_model(cfg.name, pretrained=pretrained, **kwargs)
    except TypeError as e:
        text = next((ln for ln in str(e).splitlines() if ln.strip()), "")
        raise ConfigError("model.kwargs", f"{cfg.name} rejects them: {text[:200]}", cfg.kwargs) from None
    except Exception as e:
        failed = W.fetch_failed(cfg.name, e) if pretrained else None
        if failed is None:
            raise
        raise failed from None


def check_model(cfg: ModelConfig, num_classes: int, in_chans: int,
                image_size: int | tuple[int, int] | None = None) -> None:
    """Build the model on the meta device (no memory, ~10 ms) so that an unknown or bad
    ``model.kwargs`` key fails here, before any trial, as a ConfigError naming it. A model whose
    constructor needs real tensors (``.item()`` in its init) is built on the CPU instead. Then its
    weights: ``cfg.weights``' key shapes against the model's, ``cfg.pretrained``'s availability."""
    model = _check_build(cfg, num_classes, in_chans, image_size)
    if cfg.pretrained:
        W.hub_source(cfg.name)
        W.check_pretrained_stem(cfg.name, in_chans)
        W.check_pretrained(cfg.name)
    if cfg.weights is not None:
        W.check_weights(model, cfg.weights, cfg.name)


def _check_build(cfg: ModelConfig, num_classes: int, in_chans: int,
                 image_size: int | tuple[int, int] | None) -> nn.Module:
    import torch

    check_model_name(cfg.name)
    for device in ("meta", "cpu"):
        try:
            with torch.device(device), torch.no_grad():
                return _create(cfg, num_classes, in_chans, image_size, pretrained=False)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - any constructor failure is the config's fault on the CPU
            if device == "cpu":
                field, value = ("model.kwargs", cfg.kwargs) if cfg.kwargs else ("model.name", cfg.name)
                text = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
                raise ConfigError(field, f"{cfg.name} cannot be built: {text[:200]}", value) from None
    raise AssertionError("unreachable")


def _takes_img_size(name: str) -> bool:
    # ViT-like timm models build their patch grid from img_size; CNNs do not take the argument.
    return any(k in name for k in ("vit", "deit", "swin", "beit", "eva", "cait", "xcit"))


def param_count(model: nn.Module) -> int:
    """The number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
