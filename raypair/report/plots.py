"""The report's figures (matplotlib, file output only: the Agg backend, no display needed)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raypair.report.cells import Row, heading
from raypair.report.stats import mean_ci

if TYPE_CHECKING:
    from raypair.experiments.ablation import Ablation
    from raypair.tracking.read import Child

CURVES = ("val_acc", "train_loss")  # the per-epoch metrics an ablation's curves show (read for every run)


def _wrap(text: str, width: int = 80) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _save(plt: Any, fig: Any, path: Path) -> Path:
    """Lay out, write at 120 dpi, close; returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish_bars(ax: Any, ab: Ablation, rows: list[Row], groups: list[str], levels: list[str],
                 ends: list[float], paper_shown: bool) -> None:
    """Ticks, y label, y range (accuracies: the data ± a margin within 0-100), title, legend, grid."""
    metric = rows[0].metric if rows else ""
    crowded = len(groups) > 5  # rotated tick labels
    ax.set_xticks(range(len(groups)), groups, rotation=20 if crowded else 0, ha="right" if crowded else "center")
    ax.set_ylabel(f"{metric}{' (%)' if 'acc' in metric else ''}, mean ± 95% CI")
    if ends and "acc" in metric:
        lo, hi = min(ends), max(ends)
        pad = max(2.0, 0.1 * (hi - lo))
        ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))
    ax.set_title(_wrap(heading(ab)), fontsize=9)
    if paper_shown or len(levels) > 1:
        ax.legend(fontsize=8, ncol=min(len(levels) + 1, 6), loc="upper center",
                  bbox_to_anchor=(0.5, -0.25 if crowded else -0.12), frameon=False)
    ax.grid(axis="y", alpha=0.3)


def bars(ab: Ablation, rows: list[Row], path: Path) -> Path:
    """Means with 95% intervals per variant; with several factors, grouped by all factors but the
    last (the bars of a group are the last factor's levels). The paper's numbers: black crosses."""
    plt = _plt()
    factors = list(next(iter(ab.variants.values())).levels)
    rows = [r for r in rows if r.ci is not None]

    def group(r: Row) -> str:
        lv = ab.variants[r.variant].levels
        return " / ".join(lv[f] for f in factors[:-1]) if len(factors) > 1 else r.variant

    def level(r: Row) -> str:
        return ab.variants[r.variant].levels[factors[-1]] if len(factors) > 1 else ""

    groups = list(dict.fromkeys(group(r) for r in rows))
    levels = list(dict.fromkeys(level(r) for r in rows))
    width = 0.8 / len(levels)
    fig, ax = plt.subplots(figsize=(min(16.0, max(7.0, 0.45 * len(rows) + 2.5)), 4.2))
    paper_shown, ends = False, []
    for j, lv in enumerate(levels):
        mine = [r for r in rows if level(r) == lv]
        xs = [groups.index(group(r)) + (j - (len(levels) - 1) / 2) * width for r in mine]
        drawn, paper_shown = _level_bars(ax, mine, xs, width, lv, len(factors) == 1, paper_shown)
        ends += drawn
    _finish_bars(ax, ab, rows, groups, levels, ends, paper_shown)
    return _save(plt, fig, path)


def _level_bars(ax: Any, mine: list[Row], xs: list[float], width: float, label: str, colored: bool,
                paper_shown: bool) -> tuple[list[float], bool]:
    """One level's bars at ``xs`` with their 95% intervals (each bar its own colour if ``colored``)
    and the paper's numbers as black crosses ("paper" in the legend once): returns the values drawn
    (interval ends, paper numbers) and whether the legend shows "paper" now."""
    halves = [r.ci.half if math.isfinite(r.ci.half) else 0.0 for r in mine]
    colors = [f"C{i}" for i in range(len(mine))] if colored else None
    ax.bar(xs, [r.ci.mean for r in mine], width * 0.9, yerr=halves, capsize=3, color=colors,
           label=label or None)
    ends = [r.ci.mean - h for r, h in zip(mine, halves)] + [r.ci.mean + h for r, h in zip(mine, halves)]
    for x, r in zip(xs, mine):
        if r.paper is not None:
            ax.plot([x], [r.paper[0]], "kx", markersize=8, label=None if paper_shown else "paper")
            ends.append(r.paper[0])
            paper_shown = True
    return ends, paper_shown


def _band(curves: list[dict[int, float]]) -> tuple[list[int], list[float], list[float]]:
    """Per-step mean and 95% half-width over the curves that reached that step."""
    steps = sorted({s for c in curves for s in c})
    means, halves = [], []
    for s in steps:
        iv = mean_ci([c[s] for c in curves if s in c])
        means.append(iv.mean)
        halves.append(iv.half if math.isfinite(iv.half) else 0.0)
    return steps, means, halves


def ablation_curves(ab: Ablation, children: list[Child], path: Path) -> Path:
    """Per variant the per-epoch mean of ``CURVES`` over its finished seeds, with the 95% band."""
    plt = _plt()

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for v in ab.variants:
        runs = [c for c in children if c.tags.get("raypair.variant") == v and c.status == "FINISHED"]
        for ax, m in zip(axes, CURVES):
            curves = [c.curves.get(m, {}) for c in runs if c.curves.get(m)]
            if not curves:
                continue
            steps, means, halves = _band(curves)
            line, = ax.plot(steps, means, label=f"{v} (n={len(curves)})")
            ax.fill_between(steps, [a - b for a, b in zip(means, halves)], [a + b for a, b in zip(means, halves)],
                            color=line.get_color(), alpha=0.15)
    from matplotlib.ticker import MaxNLocator

    for ax, m in zip(axes, CURVES):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{m}, mean ± 95% CI over seeds")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(_wrap(heading(ab), 120), fontsize=9)
    return _save(plt, fig, path)


def importance(values: dict[str, float], path: Path) -> Path:
    """Horizontal bars of the parameters' importances, the largest on top."""
    plt = _plt()
    names = list(values)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(names) + 1.5))
    ax.barh(names, [values[n] for n in names])
    ax.set_xlabel("importance (Optuna fANOVA)")
    return _save(plt, fig, path)


def sweep_curves(children: list[Child], metric: str, path: Path) -> Path:
    """``metric`` per epoch of each of ``children`` (the best trials), one line each."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in children:
        curve = c.curves.get(metric) or {}
        if curve:
            steps = sorted(curve)
            ax.plot(steps, [curve[s] for s in steps], marker=".", label=c.tags.get("raypair.trial_id", c.name))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"best trials: {metric} per epoch", fontsize=9)
    ax.grid(alpha=0.3)
    if children:
        ax.legend(fontsize=7)
    return _save(plt, fig, path)
