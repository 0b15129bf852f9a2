"""A report table's rows, and how one number or interval is written in its Markdown or CSV."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from raypair.report.stats import Interval


@dataclass
class Row:
    """One (variant, metric) line of the ablation table."""

    variant: str
    metric: str
    values: dict[int, float]  # seed -> final value (in the shown unit)
    ci: Optional[Interval]
    reference: Optional[str] = None
    diff: Optional[Interval] = None
    paper: Optional[tuple[float, Optional[float]]] = None
    paper_diff: Optional[float] = None


def scale(metric: str) -> float:
    """Accuracies are shown in percent, like the papers; losses as they are."""
    return 100.0 if "acc" in metric else 1.0


def num(x: Optional[float]) -> str:
    """A CSV number: 6 significant digits, empty for a missing or non-finite value."""
    return "" if x is None or not math.isfinite(x) else f"{x:.6g}"


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet read a cell as a formula


def cell(v: Any) -> Any:
    """A CSV cell a spreadsheet shows as written: text that would start a formula (a variant or
    parameter named ``=HYPERLINK(...)``, say) gets a leading ``'`` (OWASP's advice); numbers, and
    text that is a number (``-0.5``), are left as they are."""
    if not isinstance(v, str) or not v.startswith(FORMULA_STARTS):
        return v
    try:
        float(v)
        return v
    except ValueError:
        return "'" + v


def write_csv(path: Any, header: list[Any], rows: Any) -> None:
    """``header`` and ``rows`` as a CSV file, every cell through :func:`cell`."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        for row in [header, *rows]:
            w.writerow([cell(v) for v in row])


def short(v: Any) -> str:
    """A table cell for a parameter or metric value: floats to 4 significant digits, ``–`` if missing."""
    if v is None:
        return "–"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


DATA_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


def ran(ab: Any) -> str:
    """What an ablation's runs train, read from their configs (``ab.runs``): ``"lenet_cifar,
    CIFAR-10 (5000 train images)"`` (a method's own networks too: VPL's transformer). Empty when no
    run is known."""
    runs = list(getattr(ab, "runs", {}).values()) or _rebuilt(ab)
    if not runs:
        return ""
    models = sorted({name for r in runs for name in (r.model.name, *r.method.networks())})
    data = []
    for r in runs:
        d = DATA_NAMES.get(r.data.name, r.data.name)
        d += f" ({r.data.train_subset} train images)" if r.data.train_subset else ""
        if d not in data:
            data.append(d)
    return f"{', '.join(models)}, {', '.join(data)}"


def _rebuilt(ab: Any) -> list[Any]:
    """The variants' run configs of an ablation read back from its logged plain form (which keeps
    the base run and the overrides, not the runs); none if they no longer build."""
    from raypair.config import ConfigError

    try:
        return [ab.trial_run({"variant": v, "seed": ab.seeds[0]}) for v in ab.variants]
    except (ConfigError, ValueError, AttributeError, IndexError):
        return []


def heading(ab: Any) -> str:
    """A report's title: the file's ``title`` (what it reproduces) and then what ran, taken from the
    run configs, so a profile that trains another model or dataset cannot be titled as the paper's."""
    what = ran(ab)
    return (ab.title or ab.name) + (f" — ran: {what}" if what else "")


def pm(iv: Optional[Interval], digits: int = 2) -> str:
    """``mean ± half``; ``mean (n=1)`` without an interval; ``–`` without values."""
    if iv is None:
        return "–"
    if not math.isfinite(iv.half):
        return f"{iv.mean:.{digits}f} (n=1)"
    return f"{iv.mean:.{digits}f} ± {iv.half:.{digits}f}"


def diff(iv: Optional[Interval]) -> str:
    """A signed difference with its interval, ``*`` when the interval excludes 0."""
    if iv is None:
        return "–"
    star = " *" if iv.excludes_zero() else ""
    if not math.isfinite(iv.half):
        return f"{iv.mean:+.2f}"
    return f"{iv.mean:+.2f} [{iv.low:+.2f}, {iv.high:+.2f}]{star}"


def paper(p: Optional[tuple[float, Optional[float]]]) -> str:
    """The paper's ``mean`` or ``mean ± sd``; ``–`` when the paper has no number."""
    if p is None:
        return "–"
    return f"{p[0]:.2f}" + (f" ± {p[1]:.2f}" if p[1] is not None else "")
