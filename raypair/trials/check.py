"""What a trial folder holds, verified, and the repairs that are provably safe.

:func:`read_record` interprets a folder without writing (``raypair status`` reads it so); a damage
it cannot undo is :class:`~raypair.trials.verify.Damaged`, one line naming the file and what to do.
:func:`repair` (``prepare``, holding the experiment's lock, before Ray starts) writes back what the
reading recovered:

- a torn last line of ``history.jsonl`` (a crash while it was appended; never reported) is dropped;
- ``end.json`` damaged or deleted is written again from the copy of the end in ``history.jsonl``
  (each end is appended there once ``end.json`` exists; a withdrawn end as ``{"end": null}``);
- a damaged checkpoint is set aside (``state.pt.damaged``) and the trial continues from the one
  before (``state.prev.pt``) or from its start: the epochs it trains again are replayed, the
  recorded ones stand;
- a damaged ``plan.json`` is removed (every start writes it again).

Everything else (``trial.json`` or ``experiment.json`` damaged, a history line lost before its
last one or fewer epochs than its end or checkpoint records) stops the command before Ray starts.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

from raypair.experiments.base import Record
from raypair.trials import durable
from raypair.trials.verify import Damaged, load_json, load_lines, load_state, seal

TRIAL, HISTORY, END, CKPT, PREV, WORKERS = ("trial.json", "history.jsonl", "end.json", "state.pt",
                                           "state.prev.pt", "workers.jsonl")
STATE_FILE = "experiment.json"  # in the experiment's folder: kind, name, MLflow parent run, token
PLAN_FILE = "plan.json"  # what the latest start planned: trials, epochs, metric (``raypair status``)


def line(obj: dict[str, Any]) -> bytes:
    return seal(obj) + b"\n"


def _marker(lines: list[dict[str, Any]]) -> tuple[bool, Optional[dict[str, Any]]]:
    """The last end copied into the history: (whether there is one, the end or None if withdrawn)."""
    for row in reversed(lines):
        if "end" in row:
            return True, row["end"]
    return False, None


def _end(folder: Path, lines: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    found, mark = _marker(lines)
    try:
        end = load_json(folder / END)
    except Damaged as e:
        if mark is None:
            raise Damaged(folder / END, e.why,
                          "its copy in history.jsonl is lost too; restore it from a backup, or start "
                          "anew with --name NEW") from None
        return mark
    return mark if end is None and found else end


def read_record(folder: Path) -> Optional[Record]:
    """The trial's record, verified and recovered (read only); None for a folder a start left before
    it recorded anything."""
    meta = load_json(folder / TRIAL)
    if meta is None:
        rest = [p.name for p in folder.iterdir() if not p.name.startswith(".")] if folder.is_dir() else []
        if rest:
            raise Damaged(folder / TRIAL, f"missing, while the folder holds {', '.join(sorted(rest))}")
        return None
    if meta.get("key") != folder.name:
        raise Damaged(folder / TRIAL, f"names trial {meta.get('key')!r}, not its folder {folder.name!r}")
    lines, _ = load_lines(folder / HISTORY)
    rows = [r for r in lines if "epoch" in r]
    end = _end(folder, lines)
    done = int(rows[-1]["epoch"]) if rows else 0
    lost = end is not None and not _marker(lines)[0]  # the end's copy gone with the history's tail
    if lost and isinstance(end.get("epochs"), int) and done < end["epochs"]:
        raise Damaged(folder / HISTORY, f"holds {done} epochs, its end records {end['epochs']}")
    return Record(meta["key"], meta["params"], meta.get("config_hash"), rows, end)


def set_aside(path: Path, said: str) -> None:
    """Keep a damaged file as ``<name>.damaged`` (said on stderr), out of the store's way."""
    durable.move(path, path.with_name(f"{path.name}.damaged"))
    print(f"raypair: {said}; kept as {path.name}.damaged", file=sys.stderr, flush=True)


def good_state(folder: Path) -> Optional[dict[str, Any]]:
    """The newest checkpoint that verifies; a damaged one (either) is set aside."""
    good = []
    for name in (CKPT, PREV):
        try:
            good.append(load_state(folder / name))
        except Damaged as e:
            set_aside(folder / name, f"{e.field} is damaged ({e.why}), the trial continues from the checkpoint before")
    return next((s for s in good if s is not None), None)


def repair(folder: Path) -> None:
    """Write back what :func:`read_record` recovered; refuse what it cannot (before Ray starts)."""
    rec = read_record(folder)
    if rec is None:
        return
    lines, torn = load_lines(folder / HISTORY)
    raw = (folder / HISTORY).read_bytes() if (folder / HISTORY).exists() else b""
    if torn or (raw and not raw.endswith(b"\n")):
        durable.write_bytes(folder / HISTORY, b"".join(line(r) for r in lines))
    found, mark = _marker(lines)
    if rec.end is not None and load_json_or_none(folder / END) != rec.end:
        if (folder / END).exists():
            set_aside(folder / END, f"{folder / END} was damaged; written again from its copy in history.jsonl")
        durable.write_bytes(folder / END, seal(rec.end))
    if rec.end is not None and (not found or mark != rec.end):
        durable.append(folder / HISTORY, line({"end": rec.end}))
    if rec.end is None:
        state = good_state(folder)
        done = int(rec.history[-1]["epoch"]) if rec.history else 0
        if state is not None and state["epoch"] > done:
            raise Damaged(folder / HISTORY, f"holds {done} epochs, its checkpoint is at epoch {state['epoch']}")


def load_json_or_none(path: Path) -> Optional[dict[str, Any]]:
    try:
        return load_json(path)
    except Damaged:
        return None


def repair_experiment(exp_dir: Path) -> None:
    """Every file of the experiment verified, before Ray starts: repaired where that is safe, else a
    :class:`Damaged` naming the file."""
    folders = sorted(p for p in (exp_dir / "trials").glob("*") if p.is_dir())
    state = load_json(exp_dir / STATE_FILE)
    if state is None and any(any(f.iterdir()) for f in folders):
        raise Damaged(exp_dir / STATE_FILE, "missing, while trials are recorded; it names the MLflow parent run")
    try:
        load_json(exp_dir / PLAN_FILE)
    except Damaged as e:
        durable.remove(exp_dir / PLAN_FILE)  # what the start plans: written again before any trial
        print(f"raypair: {e.field} was damaged; removed (this start writes it again)", file=sys.stderr)
    for folder in folders:
        repair(folder)
