"""The report of an ablation: per variant and metric the seeds' mean ± 95% CI of the mean (Student t)
and mean ± 1.96 s (the spread of runs, P3's "±"), the
difference to the reference variant with its interval (paired over seeds when both ran the same
seeds, else Welch) and the paper's number beside ours; with two or more factors also the paper's
layout (the last factor across). Written as ``report.md``, ``report.csv``, ``bars.png`` and
``curves.png``."""
from __future__ import annotations

import math
from pathlib import Path

from raypair.experiments.ablation import Ablation
from raypair.report import plots
from raypair.report.cells import Row, diff, heading, num, paper, pm, scale, write_csv
from raypair.report.stats import diff_ci, mean_ci, run_spread
from raypair.tracking.read import Child, Parent

CI_NOTE = ("Mean ± 95% confidence interval of the mean over seeds (Student t: t_{0.975,n-1} · s / √n). "
           "± 1.96 s: 1.96 × the seeds' sample SD, the spread of single runs, the quantity P3's \"±\" is "
           "(compare a paper's ± with this column, not with the interval of the mean). Δ: difference to the "
           "reference variant with its 95% interval, paired over seeds when both ran the same seeds (else "
           "Welch); * marks an interval that excludes 0.")


def _finals(ab: Ablation, children: list[Child]) -> dict[str, dict[str, dict[int, float]]]:
    """metric -> variant -> seed -> final value (in the shown unit), of the finished runs only."""
    per: dict[str, dict[str, dict[int, float]]] = {m: {v: {} for v in ab.variants} for m in ab.metrics}
    for c in children:
        v, seed = c.tags.get("raypair.variant"), c.tags.get("raypair.seed")
        if c.status != "FINISHED" or v not in ab.variants or seed is None:
            continue
        for m in ab.metrics:
            if m in c.final and math.isfinite(c.final[m]):
                per[m][v][int(seed)] = c.final[m] * scale(m)
    return per


def _paper_columns(ab: Ablation, row: Row) -> None:
    """Fill ``row.paper`` and ``row.paper_diff`` from the ablation's paper numbers."""
    row.paper = ab.paper_value(row.variant, row.metric)
    if ab.paper and row.paper:
        if ab.paper.kind == "delta":
            row.paper_diff, row.paper = row.paper[0], None
        elif row.reference is not None and ab.paper_value(row.reference, row.metric):
            row.paper_diff = row.paper[0] - ab.paper_value(row.reference, row.metric)[0]  # type: ignore[index]


def ablation_rows(ab: Ablation, children: list[Child]) -> list[Row]:
    """One row per (metric, variant): our interval, the difference to the reference, the paper."""
    per = _finals(ab, children)
    rows = []
    for m in ab.metrics:
        for v in ab.variants:
            vals = per[m][v]
            ref = ab.reference_of(v)
            row = Row(v, m, vals, mean_ci(list(vals.values())) if vals else None, ref)
            if ref is not None and ref in per[m]:
                row.diff = diff_ci(vals, per[m][ref])
            _paper_columns(ab, row)
            rows.append(row)
    return rows


def _sha(sha: str) -> str:
    return sha[:12] + ("-dirty" if sha.endswith("-dirty") else "")


def _header(ab: Ablation, parent: Parent, children: list[Child]) -> list[str]:
    """Title, what ran (runs finished, seeds, code versions) and how to read the intervals."""
    done = sum(c.status == "FINISHED" for c in children)
    shas = sorted({_sha(c.tags.get("raypair.git_sha", "?")) for c in children})
    lines = [f"# {heading(ab)}", "",
             f"Experiment `{ab.name}`, parent run `{parent.run_id}`: {done} of {len(ab.pairs())} "
             f"(variant, seed) runs finished, seeds {ab.seeds}, code {', '.join(shas)}."
             + (" Quick profile: a small CPU setting, not comparable with the paper's numbers." if ab.quick else ""),
             "", CI_NOTE]
    if ab.paper:
        lines += ["", f"Paper: {ab.paper.source}." + (f" {ab.paper.note}" if ab.paper.note else "")]
    return lines


def _metric_table(ab: Ablation, metric: str, rows: list[Row]) -> list[str]:
    """The table of one metric, then its pivot when the ablation has several factors."""
    unit = " (%)" if scale(metric) == 100 else ""
    lines = ["", f"## {metric}{unit}", "",
             "| variant | n | mean ± 95% CI of the mean | mean ± 1.96 s | Δ vs reference [95% CI] | paper | paper Δ |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = "reference" if r.reference is None else diff(r.diff) + f" vs {r.reference}"
        pd = "–" if r.paper_diff is None else f"{r.paper_diff:+.2f}"
        lines.append(f"| {r.variant} | {len(r.values)} | {pm(r.ci)} | {spread(r)} | {ref} | {paper(r.paper)} | {pd} |")
    return lines + _pivot(ab, rows)


def spread(r: Row) -> str:
    """``mean ± 1.96 s`` of a row (P3's quantity), ``–`` with fewer than two values."""
    vals = list(r.values.values())
    return "–" if len(vals) < 2 else f"{sum(vals) / len(vals):.2f} ± {run_spread(vals):.2f}"


def ablation_report(ab: Ablation, parent: Parent, children: list[Child], out: Path) -> list[Path]:
    """Write the ablation's tables and figures into ``out``; returns the files written."""
    rows = ablation_rows(ab, children)
    lines = _header(ab, parent, children)
    for m in ab.metrics:
        lines += _metric_table(ab, m, [r for r in rows if r.metric == m])
    failed = [c for c in children if c.status != "FINISHED"]
    if failed:
        lines += ["", "Runs not finished: " + ", ".join(f"{c.name} ({c.status})" for c in failed)]
    files = [out / "report.md", out / "report.csv"]
    bars = plots.bars(ab, [r for r in rows if r.metric == ab.metrics[0]], out / "bars.png")
    curves = plots.ablation_curves(ab, children, out / "curves.png")
    lines += ["", f"![{ab.metrics[0]} per variant]({bars.name})", "", f"![learning curves]({curves.name})", ""]
    files[0].write_text("\n".join(lines))
    _write_csv(files[1], ab, rows)
    return files + [bars, curves]


def _pivot(ab: Ablation, rows: list[Row]) -> list[str]:
    """With two or more factors, the paper's layout: the last factor across, the others down."""
    factors = list(next(iter(ab.variants.values())).levels)
    if len(factors) < 2:
        return []
    cols: list[str] = []
    for v in ab.variants.values():
        if v.levels[factors[-1]] not in cols:
            cols.append(v.levels[factors[-1]])
    cells: dict[str, dict[str, str]] = {}
    for r in rows:
        lv = ab.variants[r.variant].levels
        key = " / ".join(lv[f] for f in factors[:-1])
        cells.setdefault(key, {})[lv[factors[-1]]] = spread(r) + (f" ({paper(r.paper)})" if r.paper else "")
    out = ["", f"{' / '.join(factors[:-1])} × {factors[-1]}: mean ± 1.96 s over seeds (the paper's in brackets):", "",
           "| " + " / ".join(factors[:-1]) + " | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for key, row in cells.items():
        out.append(f"| {key} | " + " | ".join(row.get(c, "–") for c in cols) + " |")
    return out


CSV_HEADER = ("metric", "n", "seeds", "mean", "sd", "ci95_half", "ci95_low", "ci95_high", "sd196", "reference", "diff",
              "diff_ci95_low", "diff_ci95_high", "diff_method", "paper", "paper_ci", "paper_diff")


def _csv_row(ab: Ablation, factors: list[str], r: Row) -> list[str | int]:
    ci, d = r.ci, r.diff
    return [r.variant, *(ab.variants[r.variant].levels[x] for x in factors), r.metric, len(r.values),
            " ".join(map(str, sorted(r.values))),
            *(num(x) for x in ((ci.mean, ci.sd, ci.half, ci.low, ci.high) if ci else (None,) * 5)),
            num(run_spread(list(r.values.values()))), r.reference or "",
            *(num(x) for x in ((d.mean, d.low, d.high) if d else (None,) * 3)), d.method if d else "",
            num(r.paper[0] if r.paper else None), num(r.paper[1] if r.paper else None), num(r.paper_diff)]


def _write_csv(path: Path, ab: Ablation, rows: list[Row]) -> None:
    """One CSV line per row: the factors' levels, the interval, the difference, the paper."""
    factors = [f for f in next(iter(ab.variants.values())).levels if f != "variant"]
    write_csv(path, ["variant", *factors, *CSV_HEADER], (_csv_row(ab, factors, r) for r in rows))
