"""PairTraining's stage timeline from a run's history: beta per epoch against the thresholds t1 and
t2, each epoch shaded by the stage beta chose (RF / D-Mask / D-Mix), and the pair gate below.

A history is the loop's per-epoch metrics, as the trial store writes them (``history.jsonl``, one
JSON object per epoch) or as ``benchmarks/stage_timeline.py`` collects them: each row has
``epoch``, ``beta`` (the beta that epoch trained with: the previous epoch's clean train top-1),
``stage``, ``alpha``, ``pair`` and ``train_acc``; ``val_acc``, ``theta`` and ``mask_area`` are
drawn when present. Pure: rows in, a PNG out (matplotlib's Agg backend).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

STAGE_NAMES = {1: "stage 1 (RF)", 2: "stage 2 (D-Mask)", 3: "stage 3 (D-Mix)"}
STAGE_COLORS = {1: "#dbe9f6", 2: "#fdebd0", 3: "#f5d5d5"}


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``history.jsonl`` (one JSON object per line; blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def crossings(history: list[dict[str, Any]], t1: float, t2: float) -> dict[str, Optional[int]]:
    """The first epoch that trained with ``beta >= t1`` (stage 2 or later) and with ``beta >= t2``
    (stage 3), or None where beta never got there: ``{"t1": epoch, "t2": epoch}``."""
    out: dict[str, Optional[int]] = {"t1": None, "t2": None}
    for row in history:
        for key, t in (("t1", t1), ("t2", t2)):
            if out[key] is None and float(row["beta"]) >= t:
                out[key] = int(row["epoch"])
    return out


def stage_timeline(history: list[dict[str, Any]], t1: float, t2: float, path: str | Path,
                   title: str = "") -> Path:
    """Draw the timeline of ``history`` into ``path`` (PNG); returns ``path``."""
    if not history:
        raise ValueError("stage_timeline: the history has no epoch")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, low) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True, height_ratios=[2, 1])
    _shade_stages(history, top, low)
    _draw_beta(top, history, t1, t2, title)
    _draw_gate(low, history)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _shade_stages(history: list[dict[str, Any]], top: Any, low: Any) -> None:
    """Each epoch's band in both panels, coloured by its stage; each stage in the legend once."""
    seen: set[int] = set()
    for r in history:
        s = int(round(float(r["stage"])))
        for ax in (top, low):
            ax.axvspan(int(r["epoch"]) - 0.5, int(r["epoch"]) + 0.5, color=STAGE_COLORS[s], lw=0,
                       label=STAGE_NAMES[s] if ax is top and s not in seen else None)
        seen.add(s)


def _draw_beta(top: Any, history: list[dict[str, Any]], t1: float, t2: float, title: str) -> None:
    """The upper panel: beta, clean train top-1 and eval top-1 per epoch against t1 and t2."""
    ep = [int(r["epoch"]) for r in history]
    top.plot(ep, [r["beta"] for r in history], "o-", color="black", label="beta (the epoch's stage input)")
    top.plot(ep, [r["train_acc"] for r in history], ".:", color="grey", label="clean train top-1 (next beta)")
    if all("val_acc" in r for r in history):
        top.plot(ep, [r["val_acc"] for r in history], "s--", color="tab:green", ms=3,
                 label="eval-split top-1 (the test split at val_fraction 0)")
    for t, name in ((t1, "t1"), (t2, "t2")):
        top.axhline(t, color="tab:red", ls="--", lw=1)
        top.text(ep[-1] + 0.4, t + 0.01, f"{name} = {t:g}", color="tab:red", fontsize=8, ha="right")
    cross = crossings(history, t1, t2)
    for key in ("t1", "t2"):
        if cross[key] is not None:
            top.axvline(cross[key] - 0.5, color="tab:red", lw=0.8)
    top.set_ylim(0, 1)
    top.set_ylabel("top-1")
    top.legend(fontsize=7, loc="upper left", framealpha=0.9)
    top.set_title(title or f"PairTraining stages: beta >= t1 from epoch {cross['t1']}, >= t2 from epoch {cross['t2']}",
                  fontsize=9)


def _draw_gate(low: Any, history: list[dict[str, Any]]) -> None:
    """The lower panel: alpha, the measured pair fraction and, where logged, theta and mask_area."""
    from matplotlib.ticker import MaxNLocator

    ep = [int(r["epoch"]) for r in history]
    low.plot(ep, [r["alpha"] for r in history], "o-", color="tab:blue", ms=3, label="alpha (scheduled)")
    low.plot(ep, [r["pair"] for r in history], "x:", color="tab:blue", label="pair (measured fraction)")
    for key, style in (("theta", "tab:purple"), ("mask_area", "tab:orange")):
        pts = [(int(r["epoch"]), r[key]) for r in history if key in r]
        if pts:
            low.plot(*zip(*pts), "^-", color=style, ms=3, label=f"{key} (scheduled)")
    low.set_ylim(0, 1.05)
    low.set_xlabel("epoch")
    low.xaxis.set_major_locator(MaxNLocator(integer=True))
    low.legend(fontsize=7, loc="upper left", framealpha=0.9)
