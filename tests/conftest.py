"""Test environment: the shared CIFAR-10 beside the checkout (RAYPAIR_DATA), a private decode
cache."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_shared = ROOT.parent / "shared" / "data"
if "RAYPAIR_DATA" not in os.environ and _shared.is_dir():
    os.environ["RAYPAIR_DATA"] = str(_shared)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    if "RAYPAIR_CACHE" not in os.environ:
        os.environ["RAYPAIR_CACHE"] = str(tmp_path_factory.mktemp("raypair-cache"))
    yield


def cifar_available() -> bool:
    root = os.environ.get("RAYPAIR_DATA")
    return bool(root) and (Path(root) / "cifar10" / "train.parquet").exists()
