"""Initial weights: timm's own (``model.pretrained: true``) or a local state dict (``model.weights: PATH``).

A local file is ``.safetensors`` or a torch file (``.pt`` / ``.pth`` / ``.bin``, read with
``weights_only=True``; a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper and DDP's ``module.``
prefix are undone). Its keys are checked against the model's, in the model's order, and the first
key that does not fit is one ConfigError on ``model.weights``:

- a key of the model missing from the file, or of another shape: the file is for another net;
- a key of the file the model lacks (other than a torchvision net's ``unused_weights``);
- except: the classifier (``get_classifier``) is re-initialised (left as built) when the file's
  is of another class count or absent, BN's ``num_batches_tracked`` may be absent, and the stem
  conv (timm's ``pretrained_cfg['first_conv']``, else the first 4-D tensor) of other input
  channels is adapted by timm's ``adapt_input_conv``.

The stem rule serves mixup-C (BC, ``images_per_input: 2``): its model sees the pair stacked as
6 channels; ``adapt_input_conv`` repeats the RGB kernel over both halves scaled by 3/6, so the
adapted stem's response to ``[x1; x2]`` is the pretrained stem's response to ``(x1 + x2) / 2``
(bias aside): the pretrained features start from the 50/50 mix, and training separates the halves.
Grey images (1 channel) get the RGB kernel summed, the response to a grey image replicated.
timm does the same for ``model.pretrained`` (``load_pretrained``), so both sources agree. Any other
count (2: grey images in pairs) is refused in one line: timm would keep the R and G kernels and drop
B, which is neither one image nor a mean of images.

At validate time only shapes are read (the safetensors JSON header, or ``torch.load(mmap=True)``),
against the model built on the meta device. ``model.pretrained`` is checked there too: the net must
have timm weights, and they must be in the Hugging Face cache or the hub reachable; offline, the
one line says to set ``model.weights: PATH`` (or to fill the cache and set ``HF_HUB_OFFLINE=1``).
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from raypair.config import ConfigError

Shapes = dict[str, tuple[int, ...]]
_HINT = "set model.weights: PATH to a local state dict"


def read_shapes(path: str) -> Shapes:
    """Key -> shape of the state dict in ``path``, reading no tensor data."""
    if path.lower().endswith(".safetensors"):
        return _guard(path, lambda: _safetensors_header(path))
    state = _guard(path, lambda: _torch_file(path, mmap=True))
    return {k: tuple(v.shape) for k, v in state.items()}


def read_state(path: str) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (on the CPU)."""
    if path.lower().endswith(".safetensors"):
        from safetensors.torch import load_file

        return _guard(path, lambda: load_file(path, device="cpu"))
    return _guard(path, lambda: _torch_file(path, mmap=False))


def _guard(path: str, read: Callable[[], Any]) -> Any:
    if not Path(path).is_file():
        raise ConfigError("model.weights", "no such file", path)
    try:
        return read()
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - every way of not being a state dict file is the config's fault
        text = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise ConfigError("model.weights", f"cannot read it as a state dict: {text[:200]}", path) from None


def _safetensors_header(path: str) -> Shapes:
    with open(path, "rb") as f:  # the format: 8-byte little-endian header length, then a JSON header
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100_000_000:
            raise ValueError(f"header length {n} is not a safetensors header")
        header = json.loads(f.read(n))
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def _torch_file(path: str, mmap: bool) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except RuntimeError:
        if not mmap:
            raise
        obj = torch.load(path, map_location="cpu", weights_only=True)  # a legacy (non-zip) file cannot mmap
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict) and not _tensors(obj):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not _tensors(obj):
        raise ValueError(f"holds a {type(obj).__name__}, not a mapping of names to tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _tensors(obj: dict) -> bool:
    return all(isinstance(v, torch.Tensor) for v in obj.values())


def plan(model: nn.Module, shapes: Shapes, path: str, name: str) -> tuple[set[str], str | None]:
    """The classifier keys to leave as built and the stem key to adapt; ConfigError at the first misfit."""
    skip, stem, head = set(), None, _classifier_keys(model)
    first_conv = _stem_key(model)
    for key, shape in ((k, tuple(v.shape)) for k, v in model.state_dict().items()):
        got = shapes.get(key)
        if key in head and got != shape:
            skip.add(key)
        elif got is None and not key.endswith("num_batches_tracked"):
            raise ConfigError("model.weights", f"does not fit {name}: key {key} {list(shape)} is not in the file",
                              path)
        elif got is not None and got != shape:
            if key == first_conv and len(got) == 4 and got[:1] + got[2:] == shape[:1] + shape[2:]:
                stem_fits("model.weights", name, shape[1], got[1], path)
                stem = key
                continue
            raise ConfigError("model.weights", f"does not fit {name}: key {key} has shape {list(got)} in the file, "
                              f"{list(shape)} in the model", path)
    own, unused = model.state_dict().keys(), getattr(model, "unused_weights", ())
    extra = next((k for k in shapes if k not in own and not k.startswith(tuple(unused))), None)
    if extra is not None:
        raise ConfigError("model.weights", f"does not fit {name}: key {extra} of the file is not in the model "
                          "(weights of another architecture?)", path)
    return skip, stem


def stem_fits(field: str, name: str, want: int, have: int, value: Any) -> None:
    """A stem of ``have`` input channels serves ``want`` as the mean of ``want / have`` images (or as a grey
    image replicated): ``want`` is 1, ``have`` or a multiple of it. Otherwise (a grey pair: 2 from 3)
    timm's ``adapt_input_conv`` would keep some colour kernels and drop others: refused in one line."""
    if want != 1 and want % have:
        raise ConfigError(field, f"{name}'s pretrained stem takes {have} input channels; {want} (the data's "
                          f"channels x method.images_per_input) cannot reuse it (1 or a multiple of {have} can)", value)


def _classifier_keys(model: nn.Module) -> set[str]:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    prefix = next((n for n, m in model.named_modules() if m is head and n), None)
    return {k for k in model.state_dict() if prefix and k.startswith(prefix + ".")}


def _stem_key(model: nn.Module) -> str | None:
    conv = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv")
    if isinstance(conv, str) and f"{conv}.weight" in model.state_dict():
        return f"{conv}.weight"
    return next((k for k, v in model.state_dict().items() if v.ndim == 4), None)


def check_weights(model: nn.Module, path: str, name: str) -> None:
    """At validate time: ``path``'s key shapes fit ``model`` (built on the meta device)."""
    plan(model, read_shapes(path), path, name)


def load_weights(model: nn.Module, path: str, name: str) -> None:
    """Load ``path`` into ``model``: the classifier of another class count left as built, the stem adapted."""
    from timm.models import adapt_input_conv

    state = read_state(path)
    skip, stem = plan(model, {k: tuple(v.shape) for k, v in state.items()}, path, name)
    state = {k: v for k, v in state.items() if k in model.state_dict() and k not in skip}
    if stem is not None:
        want = model.state_dict()[stem].shape[1]
        state[stem] = adapt_input_conv(want, state[stem], base_chans=state[stem].shape[1])
    model.load_state_dict(state, strict=False)  # plan() checked every key; what is left out stays as built


# ------------------------------------------------------------------------------ timm's own weights
def hub_source(name: str) -> tuple[str, str | None, list[str]] | None:
    """``(repo, revision, files)`` of timm's weights for ``name`` on the Hugging Face hub (None: timm has
    only a URL for them, fetched through torch.hub); ConfigError on ``model.pretrained`` when timm has
    none (raypair's nets, the torchvision nets registered here, timm's untrained nets)."""
    from timm.models import get_pretrained_cfg

    from raypair.config.model_names import OWN_MODELS

    cfg = None if name in OWN_MODELS else get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ConfigError("model.pretrained", f"timm has no pretrained weights for {name}; {_HINT}", True)
    if not cfg.hf_hub_id:
        return None
    repo, _, revision = cfg.hf_hub_id.partition("@")
    files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    return repo, revision or None, files


def check_pretrained_stem(name: str, in_chans: int) -> None:
    """``in_chans`` can reuse the stem of timm's weights for ``name`` (see :func:`stem_fits`)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    stem_fits("model.pretrained", name, in_chans, int(cfg.input_size[0]) if cfg else 3, True)


def check_pretrained(name: str) -> None:
    """At validate time: timm's weights for ``name`` are in the Hugging Face cache, or the hub answers.
    Nothing is downloaded; ``HF_HUB_OFFLINE`` and the cache folder are read as huggingface_hub reads them."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub import errors

    absent = getattr(errors, "RemoteEntryNotFoundError", errors.EntryNotFoundError)  # the name since 1.0

    source = hub_source(name)
    if source is None:
        return  # a URL (a few legacy timm nets): a failed fetch is one line at build time (fetch_failed)
    repo, revision, files = source
    if any(isinstance(huggingface_hub.try_to_load_from_cache(repo, f, revision=revision), str) for f in files):
        return
    where = f"timm's weights for {name} ({repo}) are not in the Hugging Face cache {constants.HF_HUB_CACHE}"
    if constants.HF_HUB_OFFLINE:
        raise ConfigError("model.pretrained", f"{where} and HF_HUB_OFFLINE is set; {_HINT}, or fill that cache "
                          "where online", True)
    try:
        endpoint = os.environ.get("HF_ENDPOINT") or None  # as set now (huggingface_hub read it at import)
        huggingface_hub.get_hf_file_metadata(huggingface_hub.hf_hub_url(repo, files[0], revision=revision,
                                                                        endpoint=endpoint), timeout=10)
    except absent:
        return  # the hub answered: timm then tries its other file names
    except Exception as e:  # noqa: BLE001 - no network, DNS, a proxy, an HTTP error: the hub cannot serve them
        text = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise ConfigError("model.pretrained", f"{where} and the hub cannot be reached ({text[:120]}); offline, "
                          f"{_HINT}, or fill that cache where online and set HF_HUB_OFFLINE=1", True) from None


def fetch_failed(name: str, err: Exception) -> ConfigError | None:
    """A one-line ConfigError for timm's failure to fetch ``name``'s weights, or None for another failure."""
    chain = [err, err.__cause__, err.__context__]
    if not any(isinstance(e, OSError) or type(e).__module__.split(".")[0] in ("huggingface_hub", "httpx", "httpx2",
                                                                              "requests", "urllib3") for e in chain):
        return None
    text = next((ln for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
    return ConfigError("model.pretrained", f"timm could not fetch the weights for {name} ({text[:160]}); offline, "
                       f"{_HINT}, or fill the Hugging Face cache where online and set HF_HUB_OFFLINE=1", True)
