"""``raypair validate`` imports no torch, timm, Ray, MLflow or Optuna for raypair's own nets and a
cached (or bundled) dataset, and what it skips is safe to skip: its numpy read of the data agrees
with the full load, and raypair's own nets build under every input a config can give them.
(The wall time is measured by benchmarks/validate_time.py, not asserted here.)"""
from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raypair.config import ConfigError, DataConfig
from raypair.config.model_names import OWN_MODELS
from raypair.data.check import cached_shape

from helpers import ROOT, folder_dataset

HEAVY = ("torch", "timm", "ray", "mlflow", "optuna", "torchvision", "sklearn")


def _imported_by_validate(path: Path) -> list[str]:
    code = ("import sys; from raypair.cli import main; code = main(['validate', sys.argv[1]]); "
            f"print('HEAVY', code, sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("HEAVY")]
    assert line, out.stderr
    assert line[0].startswith("HEAVY 0 "), out.stderr
    return eval(line[0].split(" ", 2)[2])  # noqa: S307 - our own printed list


@pytest.mark.slow
def test_validate_imports_no_heavy_module(tmp_path: Path) -> None:
    run = {"name": "r", "data": {"name": "digits", "image_size": 16, "val_fraction": 0.2},
           "model": {"name": "tiny_cnn"}, "method": {"name": "pair_training"}, "epochs": 2}
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(run))
    for path in (ROOT / "search_spaces" / "quickstart.yaml", ROOT / "tests" / "data" / "ablation_digits.yaml",
                 run_file):
        assert _imported_by_validate(path) == [], path


@pytest.mark.slow
def test_a_timm_model_or_model_kwargs_still_build(tmp_path: Path) -> None:
    """A name raypair does not own, or kwargs, are checked by building the model (timm imported)."""
    run_file = tmp_path / "run.yaml"
    base = {"data": {"name": "digits"}, "method": {"name": "erm"}}
    run_file.write_text(yaml.safe_dump(base | {"model": {"name": "tiny_cnn", "kwargs": {"width": 8}}}))
    assert "timm" in _imported_by_validate(run_file)


def test_own_models_are_exactly_what_raypair_registers() -> None:
    import timm.models._registry as reg

    import raypair.models  # noqa: F401  (registers them)

    own = {name for name, fn in reg._model_entrypoints.items() if fn.__module__.startswith("raypair.models")}
    assert own == set(OWN_MODELS)


@pytest.mark.parametrize("name", sorted(OWN_MODELS))
def test_own_models_build_under_any_config_input(name: str) -> None:
    """What validate no longer builds: every class count, 1-3 channels (x2 for mixup-C's stacked
    pair), any image size the data allows and any drop rate the schema allows."""
    import torch

    from raypair.config import ModelConfig
    from raypair.models import build_model

    for classes, chans, size, drop in itertools.product((2, 100), (1, 3, 6), (8, 17, 64), (0.0, 0.99)):
        with torch.device("meta"):
            build_model(ModelConfig(name=name, drop_rate=drop), classes, chans, size)


def _full(cfg: DataConfig):  # noqa: ANN202
    from raypair.data import forget, load_splits

    try:
        info = load_splits(cfg).info
        return info.num_classes, info.image_shape
    except ConfigError:
        return None
    finally:
        forget()


def _sizes(cfg: DataConfig) -> tuple[int, ...]:
    """The train, evaluation and test sizes of the full load, or () when it refuses ``cfg``."""
    from raypair.data import forget, load_splits

    try:
        s = load_splits(cfg)
        return len(s.train_y), len(s.val_y), len(s.test_y) if s.test_y is not None else len(s.val_y)
    except ConfigError:
        return ()
    finally:
        forget()


@pytest.mark.parametrize("dataset", ["digits", "folder"])
def test_cached_shape_agrees_with_the_full_load(dataset: str, tmp_path: Path) -> None:
    """On a warm cache (the folder) and on the bundled digits, the numpy read vouches for a config
    exactly when the full load succeeds, with the same classes and image shape: hold-outs that
    round either way or empty a class, and subsets at and one past each split's size."""
    if dataset == "folder":
        folder_dataset(tmp_path / "pets", {0: 6, 1: 4, 2: 2}, test=2)
        base = {"name": "pets", "root": str(tmp_path), "cache_dir": str(tmp_path / "cache")}
        assert cached_shape(DataConfig(**base)) is None  # cold cache: not vouched for
        _full(DataConfig(**base))  # warms the cache
    else:
        base = {"name": "digits"}
    seen = set()
    for val in (0.0, 0.2, 0.25, 0.3, 0.8, 0.995):
        sizes = _sizes(DataConfig(**base, val_fraction=val)) or (1, 1, 1)
        for tr, te in itertools.product((None, sizes[0], sizes[0] + 1), {None, *sizes[1:], *(n + 1 for n in sizes[1:])}):
            cfg = DataConfig(**base, val_fraction=val, train_subset=tr, test_subset=te, image_size=12)
            fast, full = cached_shape(cfg), _full(cfg)
            assert (None if fast is None else (fast.num_classes, fast.image_shape)) == full, cfg
            seen.add(full is None)
    assert seen == {True, False}  # the grid has both kinds
