"""What a trial folder holds, verified, and the repairs that are provably safe.

:func:`read_record` interprets a folder without writing (``raypair status`` reads it so); a damage
it cannot undo is :class:`~raypair.trials.verify.Damaged`, one line naming the file and what to do.
:func:`repair` (``prepare``, holding the experiment's lock, before Ray starts) writes back what the
reading recovered:

- a torn last line of ``history.jsonl`` (a crash while it was appended; never reported) is dropped;
- ``end.json`` damaged or deleted is written again from its copy in ``ends.jsonl`` (each end is
  appended there once ``end.json`` exists; a withdrawn end as ``{"end": null}``), and that copy
  from ``end.json`` if it is the one damaged;
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

TRIAL, HISTORY, END, ENDS, CKPT, PREV, WORKERS = ("trial.json", "history.jsonl", "end.json", "ends.jsonl",
                                                 "state.pt", "state.prev.pt", "workers.jsonl")
STATE_FILE = "experiment.json"  # in the experiment's folder: kind, name, MLflow parent run, token
PLAN_FILE = "plan.json"  # what the latest start planned: trials, epochs, metric (``raypair status``)


def line(obj: dict[str, Any]) -> bytes:
    return seal(obj) + b"\n"


def _copy(folder: Path) -> tuple[Optional[bool], Optional[dict[str, Any]]]:
    """The last copy of the end in ``ends.jsonl``: (whether there is one, None if that file is
    damaged; the end, or None if withdrawn)."""
    try:
        lines, _ = load_lines(folder / ENDS)
    except Damaged:
        return None, None
    return (True, lines[-1].get("end")) if lines else (False, None)


def _end(folder: Path) -> Optional[dict[str, Any]]:
    found, copy = _copy(folder)
    try:
        end = load_json(folder / END)
    except Damaged as e:
        if copy is None:
            raise Damaged(folder / END, e.why, f"its copy in {ENDS} is lost too; restore it from a backup, "
                          "or start anew with --name NEW") from None
        return copy
    return copy if end is None and found else end


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
    rows = [r for r in load_lines(folder / HISTORY)[0] if "epoch" in r]
    end = _end(folder)
    if end is not None and isinstance(end.get("rows"), int) and len(rows) < end["rows"]:
        raise Damaged(folder / HISTORY, f"holds {len(rows)} epochs, {end['rows']} when the trial ended")
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
    for name in (HISTORY, ENDS, WORKERS):
        untorn(folder / name)
    found, copy = _copy(folder)
    if rec.end is not None and load_json_or_none(folder / END) != rec.end:
        if (folder / END).exists():
            set_aside(folder / END, f"{folder / END} was damaged; written again from its copy in {ENDS}")
        durable.write_bytes(folder / END, seal(rec.end))
    if found is None:  # the copy damaged: written again from end.json
        set_aside(folder / ENDS, f"{folder / ENDS} was damaged; written again from {END}")
        found = False
    if rec.end is not None and (not found or copy != rec.end):
        durable.append(folder / ENDS, line({"end": rec.end}))
    if (folder / WORKERS).exists() and not _readable(folder / WORKERS):
        set_aside(folder / WORKERS, f"{folder / WORKERS} was unreadable (where the trial ran: no result)")
    if rec.end is None:
        state = good_state(folder)
        done = int(rec.history[-1]["epoch"]) if rec.history else 0
        if state is not None and state["epoch"] > done:
            raise Damaged(folder / HISTORY, f"holds {done} epochs, its checkpoint is at epoch {state['epoch']}")


def _readable(path: Path) -> bool:
    try:
        path.read_bytes()
        return True
    except OSError:
        return False


def untorn(path: Path) -> None:
    """A JSON-lines file without the last line a crash cut off (appends after it stay readable)."""
    try:
        raw = path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            durable.write_bytes(path, b"".join(line(r) for r in load_lines(path)[0]))
    except (OSError, Damaged):
        return  # missing, or damaged before its last line: reading it says so where that matters


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
