"""The report of a seeds-until-decided ablation (``raypair.experiments.seqkind``): the ablation's
own tables and figures (``ablation.py``), then per comparison its path (at each planned look
reached: seeds, estimate, the interval and the state as the rule saw it then), when it was decided,
and the seeds spent against the fixed design (``max_seeds`` for every variant). Written into
``report.md`` (a section after the ablation's), ``sequential.csv`` and ``path.png``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from raypair.experiments.seqkind import Sequential
from raypair.report import plots
from raypair.report.ablation import ablation_report
from raypair.report.cells import num, write_csv
from raypair.tracking.read import Child, Parent


def finals(exp: Sequential, children: list[Child]) -> dict[str, dict[int, float]]:
    """Variant -> seed index -> final value of the first metric, of the finished pairs."""
    index = {s: i for i, s in enumerate(exp.seeds)}
    out: dict[str, dict[int, float]] = {}
    for c in children:
        v, seed = c.tags.get("raypair.variant"), c.tags.get("raypair.seed")
        value = c.final.get(exp.metric)
        if c.status == "FINISHED" and v in exp.variants and seed is not None and int(seed) in index \
                and value is not None and value == value:
            out.setdefault(v, {})[index[int(seed)]] = float(value)
    return out


def paths(exp: Sequential, got: dict[str, dict[int, float]]) -> list[dict[str, Any]]:
    """One row per (comparison, look reached): the decision computed from the seeds up to that look."""
    rows = []
    for look, k in enumerate(exp.cfg.looks, start=1):
        for name, d in exp.decisions(got, upto=k).items():
            if d.n == k:  # this look was reached by this comparison
                rows.append({"comparison": name, "look": look, "n": d.n, "estimate": d.estimate, "low": d.low,
                             "high": d.high, "state": d.state})
    return rows


def _section(exp: Sequential, rows: list[dict[str, Any]], got: dict[str, dict[int, float]]) -> list[str]:
    c = exp.cfg
    spent = sum(len(v) for v in got.values())
    lines = ["", "## Seeds until decided", "",
             f"Pre-registered: δ = {c.delta:g}, α = {c.alpha:g} (family-wise, Holm), looks at {list(c.looks)} seeds "
             f"(min {c.min_seeds}, batch {c.batch}, max {c.max_seeds}); {exp.metric}, difference variant − reference.",
             "", f"Seeds spent: {spent} finished pairs; the fixed design runs {c.max_seeds * len(exp.variants)} "
             f"({c.max_seeds} per variant). Per variant: "
             + ", ".join(f"{v} {len(got.get(v, {}))}" for v in exp.variants) + ".", "",
             "| comparison | look | seeds | estimate | interval | state |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['comparison']} | {r['look']} | {r['n']} | {r['estimate']:+.4g} | "
                     f"[{r['low']:.4g}, {r['high']:.4g}] | {r['state']} |")
    for name in (f"{a} vs {b}" for a, b in c.comparisons):
        mine = [r for r in rows if r["comparison"] == name]
        first = next((r for r in mine if r["state"] != "open"), None)
        when = f"{first['state']} at look {first['look']} ({first['n']} seeds)" if first else "open (not decided)"
        lines.append(f"\n{name}: {when}.")
    return lines


def sequential_report(exp: Sequential, parent: Parent, children: list[Child], out: Path) -> list[Path]:
    """The ablation's files, with the sequential section in ``report.md``, ``sequential.csv`` and
    ``path.png``; returns the files written."""
    files = ablation_report(exp, parent, children, out)
    got = finals(exp, children)
    rows = paths(exp, got)
    text = files[0].read_text() + "\n".join(_section(exp, rows, got))
    figure = path_figure(exp, rows, out / "path.png")
    files[0].write_text(text + f"\n\n![estimate and interval at each look]({figure.name})\n")
    write_csv(out / "sequential.csv", ["comparison", "look", "n", "estimate", "low", "high", "state"],
              ([r["comparison"], r["look"], r["n"], num(r["estimate"]), num(r["low"]), num(r["high"]), r["state"]]
               for r in rows))
    return files + [out / "sequential.csv", figure]


def path_figure(exp: Sequential, rows: list[dict[str, Any]], path: Path) -> Path:
    """Each comparison's estimate and interval against the seeds at each look, ±δ shaded; the frame
    is twice the largest estimate, so a first look's wide interval runs off it."""
    plt = plots._plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(dict.fromkeys(r["comparison"] for r in rows))
    for j, name in enumerate(names):
        mine = [r for r in rows if r["comparison"] == name]
        xs = [r["n"] + 0.1 * (j - (len(names) - 1) / 2) for r in mine]
        ys = [r["estimate"] for r in mine]
        lo = [min(r["estimate"] - r["low"], 1e3) for r in mine]
        hi = [min(r["high"] - r["estimate"], 1e3) for r in mine]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=name)
    ax.axhspan(-exp.cfg.delta, exp.cfg.delta, color="0.9", label="±δ")
    lim = 2 * max([abs(r["estimate"]) for r in rows if r["estimate"] == r["estimate"]] + [exp.cfg.delta])
    ax.set_ylim(-lim, lim)  # an early look's wide interval runs off the frame
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xlabel("seeds (look)")
    ax.set_ylabel(f"{exp.metric} difference")
    ax.legend(fontsize=8)
    return plots._save(plt, fig, path)
