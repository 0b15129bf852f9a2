"""What a command prints once an experiment ended, asked of the experiment
(:meth:`~raypair.experiments.base.Experiment.outcome`): the text, the exit code, and the rows the
Python API (``raypair.api``) returns. Where the results went (:class:`Where`) is told by the caller,
so nothing here knows MLflow."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol

STATUSES = ("finished", "stopped", "infeasible", "failed", "diverged", "unfinished")
Record = Any  # a ``base.Record`` (this module is below ``base``, which re-exports its functions)


@dataclass
class Where:
    """Where an experiment's results are: the MLflow store and experiment, its run table's UI
    route, the storage folder."""

    uri: str
    experiment: str
    route: str  # the run table's route in the MLflow UI, after http://host:port/
    storage: Path


@dataclass
class Outcome:
    text: str  # printed on stdout
    code: int  # the command's exit code
    error: str = ""  # printed on stderr, if any


def fmt_value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def best_record(records: list[Any], metric: str, mode: str) -> Optional[Any]:
    """The trial with the best value of ``metric`` over all its epochs, or None. Only trials that
    ended well count: a diverged or failed trial's early epochs are not a result."""
    scored = [(r.best(metric, mode), r) for r in records if r.status in ("finished", "stopped")]
    scored = [(v, r) for v, r in scored if v is not None]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored, key=lambda t: t[0])[1]  # type: ignore[arg-type, return-value]


class Listed(Protocol):
    kind: str
    name: str
    metric: str
    mode: str

    def describe(self, trial: Any) -> Any: ...


def trial_table(exp: Listed, records: list[Record]) -> Outcome:
    """A line per trial (status, epochs, best value of the metric, its label), the counts, the best
    one. Exit code: 0 when every trial ended well (finished, stopped early or infeasible), 1 when
    some failed or diverged, or when no trial finished an epoch."""
    metric, mode = exp.metric, exp.mode
    lines, out = {}, [f"\n{len(records)} trials of {exp.kind} {exp.name!r}:"]
    for rec in records:
        epochs = int(rec.rows[-1]["epoch"]) if rec.rows else 0
        status = {"finished": "done", "infeasible": "infeas.", "failed": "ERROR"}.get(rec.status, rec.status)
        lines[rec.key] = (f"  {status:9}  epochs={epochs:<3} best {metric}={fmt_value(rec.best(metric, mode)):8}  "
                          f"{exp.describe(rec).label}")  # (a record is a trial: key, params)
        out.append(lines[rec.key])
    counts = {s: sum(r.status == s for r in records) for s in STATUSES}
    out.append(", ".join(f"{n} {s}" for s, n in counts.items() if n))
    best = best_record(records, metric, mode)  # among trials that ended well
    if best is None:
        return Outcome("\n".join(out), 1, "raypair: no trial finished an epoch without failing or diverging")
    out.append(f"best {metric} = {best.best(metric, mode):.4f}\n{lines[best.key].strip()}")
    return Outcome("\n".join(out), 1 if counts["failed"] or counts["diverged"] else 0)


def rows(records: list[Record]) -> list[dict[str, Any]]:
    """One plain row per trial: key, status, epochs run, its params, the metrics of its last epoch."""
    out = []
    for rec in records:
        last = rec.rows[-1] if rec.rows else {}
        out.append({"key": rec.key, "status": rec.status, "epochs": int(last.get("epoch", 0))}
                   | dict(rec.params) | {k: v for k, v in last.items() if k != "epoch"})
    return out
