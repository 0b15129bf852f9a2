"""PairTraining's stage timeline (raypair/report/stages.py, benchmarks/stage_timeline.py): the
threshold crossings read off a history exactly, and the figure shades each stage it went through."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raypair.report.stages import STAGE_COLORS, crossings, read_history, stage_timeline

from helpers import ROOT


def history(betas: list[float], t1: float = 0.25, t2: float = 0.75) -> list[dict]:
    """A synthetic history: epoch e trains with betas[e-1]; its train top-1 is the next beta."""
    rows = []
    for e, b in enumerate(betas, 1):
        stage = 3 if b >= t2 else 2 if b >= t1 else 1
        nxt = betas[e] if e < len(betas) else b
        row = {"epoch": e, "beta": b, "stage": float(stage), "alpha": 0.5, "pair": 0.5, "train_acc": nxt,
               "val_acc": nxt}
        row["theta" if stage == 3 else "mask_area"] = 0.3
        rows.append(row)
    return rows


def test_crossings_are_the_first_epochs_at_or_over_each_threshold():
    h = history([0.0, 0.1, 0.25, 0.5, 0.74, 0.75, 0.8])
    assert crossings(h, 0.25, 0.75) == {"t1": 3, "t2": 6}  # at the threshold counts (stage 3 iff beta >= t2)
    assert crossings(h, 0.2, 0.4) == {"t1": 3, "t2": 4}
    assert crossings(history([0.0, 0.1, 0.3]), 0.25, 0.75) == {"t1": 3, "t2": None}
    assert crossings(history([0.0, 0.1]), 0.25, 0.75) == {"t1": None, "t2": None}


def _colors(png: Path) -> set[tuple[int, int, int]]:
    import matplotlib.image

    img = (matplotlib.image.imread(png)[..., :3] * 255).round().astype(int)
    return {tuple(int(c) for c in px) for px in img.reshape(-1, 3)}


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def test_figure_shades_the_stages_the_run_went_through(tmp_path):
    three = stage_timeline(history([0.0, 0.2, 0.4, 0.8, 0.9]), 0.25, 0.75, tmp_path / "three.png")
    assert three.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {_rgb(c) for c in STAGE_COLORS.values()} <= _colors(three)
    one = stage_timeline(history([0.0, 0.1, 0.2]), 0.25, 0.75, tmp_path / "one.png")
    seen = _colors(one)
    assert _rgb(STAGE_COLORS[1]) in seen and not {_rgb(STAGE_COLORS[2]), _rgb(STAGE_COLORS[3])} & seen
    with pytest.raises(ValueError, match="no epoch"):
        stage_timeline([], 0.25, 0.75, tmp_path / "none.png")


@pytest.mark.slow
def test_script_trains_logs_and_draws(tmp_path):
    """benchmarks/stage_timeline.py on digits: one JSON line per epoch beside the figure, read back."""
    run = {"data": {"name": "digits", "image_size": 16, "pad": 2}, "model": {"name": "tiny_cnn"},
           "method": {"name": "pair_training", "t1": 0.2, "t2": 0.5}, "optim": {"lr": 0.1},
           "epochs": 3, "batch_size": 128, "scale": {"gpus_per_worker": 0, "threads": 1}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    out = tmp_path / "stages.png"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "stage_timeline.py"), str(tmp_path / "run.yaml"),
                           "--out", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = read_history(out.with_suffix(".jsonl"))
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[0]["beta"] == 0.0
    assert rows[1]["beta"] == pytest.approx(rows[0]["train_acc"]) and out.stat().st_size > 0
    assert f"in epoch {crossings(rows, 0.2, 0.5)['t1']}" in proc.stdout
    assert json.loads(out.with_suffix(".jsonl").read_text().splitlines()[-1])["epoch"] == 3
