"""The large-scale tables' files (ablations/p0_ilsvrc_mini.yaml, vpl_imagenet.yaml, vpl_transfer.yaml,
bc_imagenet.yaml): each header states the estimated H100 GPU-hours with its arithmetic, and each
quick profile validates and trains its epoch on the generated stand-in of its dataset (slow: it
trains)."""
from __future__ import annotations

import math
import re

import pytest

from helpers import ROOT

from raypair.cli import main
from raypair.data.prepare.standin import standin
from raypair.experiments.ablation import load_ablation

FILES = {"p0_ilsvrc_mini": "ilsvrc_mini", "vpl_imagenet": "imagenet1k", "vpl_transfer": "flowers102",
         "bc_imagenet": "imagenet1k"}
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")  # torchvision 0.29


@pytest.mark.parametrize("stem", FILES)
def test_header_states_estimated_h100_hours_and_what_differs(stem):
    header = "\n".join(ln for ln in (ROOT / "ablations" / f"{stem}.yaml").read_text().splitlines() if ln.startswith("#"))
    assert re.search(r"GPU-hours on one H100, full profile, ESTIMATED", header)
    assert "img/s" in header and "What differs and why" in header and "Quick profile" in header
    assert re.search(r"= ~?[\d,.]+ ?k? (GPU-hours|h)", header)  # the arithmetic ends in hours


@pytest.mark.slow
@pytest.mark.parametrize("stem", FILES)
def test_quick_profile_validates_and_trains_an_epoch_on_standin_data(stem, tmp_path, monkeypatch, capsys):
    from raypair.loop import run_trial

    standin(FILES[stem], tmp_path)
    monkeypatch.setenv("RAYPAIR_DATA", str(tmp_path))
    monkeypatch.setenv("RAYPAIR_CACHE", str(tmp_path / ".cache"))
    path = ROOT / "ablations" / f"{stem}.yaml"
    assert main(["validate", str(path), "--quick"]) == 0, capsys.readouterr().err
    ab = load_ablation(path, quick=True)
    for variant, run in ab.runs.items():
        seen: list[dict] = []
        last = run_trial(run, lambda metrics, ckpt: seen.append(dict(metrics)))
        assert len(seen) == 1 and last["epoch"] == 1, variant
        assert math.isfinite(last["train_loss"]) and 0.0 <= last["test_acc"] <= 1.0, (variant, last)
