"""``raypair status [NAME]``: where an experiment stands, read from its trial store alone (no Ray, no
MLflow): what ended and how, what is cut off and from which epoch ``--resume`` continues it, how
many trials are still to start, the best so far, and whether a driver runs it now."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from raypair.config import ConfigError
from raypair.experiments.base import NOTES_FILE, STATUSES, Record, best_record, fmt_value
from raypair.trials.store import PLAN_FILE, STATE_FILE, is_running, read_json, read_records


def cmd_status(args: argparse.Namespace) -> int:
    storage = Path(args.storage).resolve()
    found = sorted(p.parent for p in storage.glob(f"*/{STATE_FILE}")) if storage.is_dir() else []
    if args.name is None:
        if not found:
            print(f"no experiment under {storage}")
        for exp_dir in found:
            print(_headline(exp_dir, _plan(exp_dir), list(read_records(exp_dir).values())))
        return 0
    exp_dir = _folder(storage, args.name, found)
    plan, records = _plan(exp_dir), list(read_records(exp_dir).values())
    print(_headline(exp_dir, plan, records))
    for line in (read_json(exp_dir / NOTES_FILE) or {}).get("lines", []):  # what its proposer noted
        print(f"  {line}")
    metric, mode = plan.get("metric", "val_acc"), plan.get("mode", "max")
    for rec in records:
        shown = " ".join(f"{k.split('.')[-1]}={fmt_value(v)}" for k, v in sorted(rec.params.items()))
        epochs = int(rec.rows[-1]["epoch"]) if rec.rows else 0
        print(f"  {rec.status:11} epochs={epochs:<4} best {metric}={fmt_value(rec.best(metric, mode)):8} {rec.key} {shown}")
    best = best_record(records, metric, mode)
    if best is not None:
        print(f"best {metric} = {best.best(metric, mode):.4f} ({best.key})")
    resumes = _resumes(plan, records)
    if resumes:
        print("--resume continues: " + ", ".join(resumes))
    return 0


def _resumes(plan: dict[str, Any], records: list[Record]) -> list[str]:
    """What ``--resume`` would do: each cut-off trial (from which epoch), then the trials not started."""
    cut = [r for r in records if r.end is None]
    more = max(0, int(plan.get("planned") or 0) - len(records))
    parts = [f"{r.key} (from epoch {int(r.rows[-1]['epoch']) if r.rows else 0})" for r in cut]
    if more:
        parts.append(f"{more} more trial{'s' if more > 1 else ''} to start")
    return parts


def _folder(storage: Path, name: str, found: list[Path]) -> Path:
    if storage / name not in found:
        known = ", ".join(p.name for p in found) or "none"
        raise ConfigError("name", f"no experiment of that name under {storage} (there: {known})", name)
    return storage / name


def trial_records(args: argparse.Namespace) -> list[Record]:
    """The trial records of experiment ``args.name`` under ``args.storage`` (``raypair.api.status``)."""
    storage = Path(args.storage).resolve()
    found = sorted(p.parent for p in storage.glob(f"*/{STATE_FILE}")) if storage.is_dir() else []
    return list(read_records(_folder(storage, args.name, found)).values())


def _plan(exp_dir: Path) -> dict[str, Any]:
    return read_json(exp_dir / PLAN_FILE) or {}


def _headline(exp_dir: Path, plan: dict[str, Any], records: list[Record]) -> str:
    state = read_json(exp_dir / STATE_FILE) or {}
    counts = {s: sum(r.status == s for r in records) for s in (*STATUSES, "unfinished")}
    ended = len(records) - counts["unfinished"]
    planned = plan.get("planned")
    left = counts["unfinished"] or (planned is not None and ended < planned)
    how = "running now" if is_running(exp_dir) else ("interrupted" if left else "complete")
    epochs = sum(len(r.rows) for r in records)
    total = f"/{planned * plan['epochs']}" if planned and plan.get("epochs") else ""
    text = ", ".join(f"{n} {s}" for s, n in counts.items() if n and s != "unfinished")
    return (f"{state.get('kind', '?')} {exp_dir.name!r}: {how}; {ended}/{planned or '?'} trials ended"
            + (f" ({text})" if text else "") + f", {counts['unfinished']} cut off or running, "
            f"{epochs}{total} trial-epochs")
