"""What the commands check before anything starts (no Ray, no folder, no MLflow store): the kind
of file given, the model and the data of every run an experiment trains (the data decoded
through its cache, so a corrupt file or an empty class is found here, naming the file), the
resources a local Ray can hold, and that every folder written stays inside ``--storage``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from raypair.config import ConfigError, check_name


def file_kind(path: str, field: str, command: str) -> Any:
    """The kind of experiment file at ``path`` (from the table of kinds, ``raypair.experiments.kinds``);
    a kind ``raypair <command>`` does not take is a ConfigError naming ``field`` and the command that does."""
    from raypair.experiments.kinds import read_kind

    return read_kind(path, field, command)


def check_data(data: Any) -> Any:
    """Check the splits as a trial will load them (decoding through the cache, holding out,
    sub-setting) and return their classes and image shape; ConfigError naming the file or field at
    fault. A warm cache is read with numpy alone (``raypair.data.check``); otherwise, or when that
    read finds anything wrong, the full load runs (torch) and raises its error. The first check of
    CIFAR-10 decodes its 60,000 JPEGs (~6 s on 2 cores) into the cache the trials then read. A dataset
    that streams (``data.mode``, ``raypair/data/mode.py``) is indexed (every shard opened), not decoded."""
    from raypair.data.check import cached_shape
    from raypair.data.mode import decide

    if decide(data)[0] == "stream":  # indexes the files (a missing shard is refused), decodes a few
        from raypair.data.stream_splits import stream_splits

        return stream_splits(data).info
    shape = cached_shape(data)
    if shape is not None:
        return shape
    from raypair.data import forget, load_splits

    try:
        return load_splits(data).info
    finally:
        forget()  # the decoded arrays stay in the cache on disk, not in this process


def preflight(run: Any, prefix: str = "") -> None:
    """The data and the model of one run (its ``model.kwargs`` and initial weights included: the
    weights file's key shapes, timm's weights in the cache or the hub reachable), before any compute.
    One of raypair's own nets without ``model.kwargs`` builds under any input a config can give it
    (tests/test_validate_fast.py), so it is not built here: no torch, no timm."""
    from raypair.config.model_names import OWN_MODELS

    try:
        info = check_data(run.data)
        _vit_weights(run, info)
        m = run.model
        if m.name in OWN_MODELS and not m.kwargs and not m.pretrained and m.weights is None:
            return
        from raypair.models import check_model

        c, size = info.image_shape[0], tuple(info.image_shape[1:3])
        check_model(run.model, info.num_classes, c * run.method.images_per_input, size)
    except ConfigError as e:
        field = e.field if e.field.startswith(("$", "-")) else prefix + e.field
        raise ConfigError(field, e.message, e.value) from None


def _vit_weights(run: Any, info: Any) -> None:
    """VPL's ``method.vit_weights``: the file fits ``method.vit_model`` (its keys and shapes), as model.weights."""
    path = getattr(run.method, "vit_weights", None)
    if path is None:
        return
    from raypair.config import ModelConfig
    from raypair.models import check_model

    try:
        check_model(ModelConfig(name=run.method.vit_model, weights=path), info.num_classes, info.image_shape[0],
                    tuple(info.image_shape[1:3]))
    except ConfigError as e:
        raise ConfigError("method.vit_weights", e.message, e.value) from None


def preflight_all(exp: Any) -> None:
    """The model and data of every distinct run an experiment trains (each ablation variant)."""
    runs = exp.checked_runs()
    seen: set[str] = set()
    for prefix, run in runs.items():
        key = repr((run.model, run.data, run.method.images_per_input))
        if key not in seen:
            seen.add(key)
            preflight(run, prefix)


def check_local_resources(exp: Any, address: Any) -> None:
    """A trial that needs more CPUs or GPUs than this machine has can never start on a local Ray."""
    if address:
        return  # a cluster says what it holds once Ray is up
    cpus, gpus = os.cpu_count() or 1, None
    for run in exp.resource_runs():
        need = run.scale.resources().total
        if need["cpu"] > cpus:
            raise ConfigError("scale", f"one trial needs {need['cpu']:g} CPUs (scale.workers x scale.cpus_per_worker);"
                              f" this machine has {cpus}; use --address for a cluster", need["cpu"])
        if need["gpu"]:
            if gpus is None:
                import torch

                gpus = float(os.environ.get("RAYPAIR_FAKE_GPUS") or 0) or torch.cuda.device_count()
            if need["gpu"] > gpus:
                raise ConfigError("scale.gpus_per_worker", f"one trial needs {need['gpu']:g} GPUs; this machine has "
                                  f"{gpus}; use --address for a cluster", run.scale.gpus_per_worker)


def inside(storage: Path, name: str, field: str = "name") -> Path:
    """``<storage>/<name>``, checked to be a folder directly inside ``storage`` once every link is
    resolved: an experiment name never writes elsewhere."""
    check_name(field, name)
    root = Path(storage).resolve()
    folder = root / name
    real = folder.resolve()
    if real.parent != root:
        raise ConfigError(field, f"{folder} resolves to {real}, outside --storage {root}", name)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(field, f"{folder} is a file, not an experiment folder", name)
    return folder
