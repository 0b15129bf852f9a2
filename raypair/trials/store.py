"""The trial store: the one record of what each trial did, and so the one truth ``--resume`` reads.

``<exp>/trials/<key>/`` holds

- ``trial.json``: the key, the params and the config hash, written by the driver before the trial starts;
- ``history.jsonl``: one line per finished epoch, appended by the trial (rank 0) before it reports
  the epoch to anyone;
- ``state.pt``: the latest checkpoint, replaced atomically after the epoch's line;
- ``end.json``: how the trial ended (finished, stopped, infeasible, failed), written before the
  trial is reported finished to MLflow or to the searcher;
- ``workers.jsonl``: one line per worker and attempt: where it ran (Ray node, host, pid) and the
  epoch it resumed from.

So a driver killed at any instant leaves either a trial that ended (never run again; MLflow and
the searcher are brought in line from the record on the next start) or one that continues from
its checkpoint, its history replayed rather than retrained. Pure file I/O: no Ray, no MLflow.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Optional

from raypair.config import ConfigError
from raypair.experiments.base import Experiment, Record, Trial, config_hash

STATE_FILE = "experiment.json"  # in the experiment's folder: kind, name, MLflow parent run
PLAN_FILE = "plan.json"  # what the latest start planned: trials, epochs, metric (``raypair status``)


def write_json(path: Path, obj: Any) -> None:
    """Atomically: a kill leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, default=str))
    os.replace(tmp, path)


class TrialStore:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._last: Optional[int] = None  # last epoch in the history, read from the file once

    # ------------------------------------------------------------------------ driver side
    def create(self, trial: Trial, hash_: Optional[str]) -> None:
        """Record the trial before it starts; a trial run again (a failed pair) loses its end."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.folder / "trial.json", {"key": trial.key, "params": trial.params, "config_hash": hash_})
        (self.folder / "end.json").unlink(missing_ok=True)

    def finish(self, status: str, **info: Any) -> bool:
        """Record how the trial ended, unless an end is recorded already (the first word stands: a
        Train run that completes after the driver recorded its stop does not rewrite it)."""
        tmp = self.folder / f".end.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"status": status, "time": time.time(), **info}, default=str))
        try:
            os.link(tmp, self.folder / "end.json")  # atomic, and fails if it exists
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def end(self) -> Optional[dict[str, Any]]:
        return read_json(self.folder / "end.json")

    # ------------------------------------------------------------------------- trial side
    def history(self) -> list[dict[str, Any]]:
        f = self.folder / "history.jsonl"
        rows: list[dict[str, Any]] = []
        if f.exists():
            for line in f.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut off by a kill: the epoch is trained again
                    break
        return rows

    def append(self, metrics: dict[str, Any]) -> bool:
        """Add an epoch's row; False (nothing written) if that epoch is already recorded."""
        if self._last is None:
            rows = self.history()
            self._last = int(rows[-1]["epoch"]) if rows else 0
            self._cut_torn_tail(len(rows))
        if self._last >= int(metrics["epoch"]):
            return False
        clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
        with open(self.folder / "history.jsonl", "a") as f:
            f.write(json.dumps(clean) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._last = int(metrics["epoch"])
        return True

    def _cut_torn_tail(self, good: int) -> None:
        """Drop what follows the first ``good`` lines (a line a kill cut off), so appends stay readable."""
        f = self.folder / "history.jsonl"
        if f.exists():
            lines = f.read_text().splitlines(keepends=True)
            if len(lines) > good or (lines and not lines[-1].endswith("\n")):
                f.write_text("".join(ln.rstrip("\n") + "\n" for ln in lines[:good]))

    def note_worker(self, info: dict[str, Any]) -> None:
        """Where one worker of one attempt runs (one short line, appended whole)."""
        with open(self.folder / "workers.jsonl", "a") as f:
            f.write(json.dumps(info, default=str) + "\n")

    def workers(self) -> list[dict[str, Any]]:
        f = self.folder / "workers.jsonl"
        out = []
        for line in f.read_text().splitlines() if f.exists() else []:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def save_state(self, ckpt_folder: Optional[Path]) -> None:
        from raypair.loop import CKPT_FILE

        if ckpt_folder is not None:
            tmp = self.folder / f".{CKPT_FILE}.tmp"
            shutil.copyfile(Path(ckpt_folder) / CKPT_FILE, tmp)
            os.replace(tmp, self.folder / CKPT_FILE)

    def state(self) -> Optional[dict[str, Any]]:
        from raypair.loop import CKPT_FILE, load_checkpoint

        return load_checkpoint(self.folder) if (self.folder / CKPT_FILE).exists() else None

    def record(self) -> Optional[Record]:
        meta = read_json(self.folder / "trial.json")
        if meta is None:
            return None
        return Record(meta["key"], meta["params"], meta.get("config_hash"), self.history(), self.end())


def store_report(store: TrialStore, forward: Callable[[dict[str, Any]], None], rank: int = 0) -> Callable:
    """The loop's ``report`` for a trial: rank 0 records the epoch (history line, then checkpoint)
    before ``forward`` tells anyone; an epoch trained again after a resume is marked ``replayed``."""

    def report(metrics: dict[str, Any], ckpt: Optional[Path]) -> None:
        if rank == 0:
            if not store.append(metrics):
                metrics = {**metrics, "replayed": 1}
            store.save_state(ckpt)
        forward(metrics)

    return report


def read_records(exp_dir: Path) -> dict[str, Record]:
    out = {}
    for folder in sorted((Path(exp_dir) / "trials").glob("*/")):
        rec = TrialStore(folder).record()
        if rec is not None:
            out[rec.key] = rec
    return out


def prepare(exp: Experiment, exp_dir: Path, resume: bool) -> dict[str, Record]:
    """Before Ray starts: a new experiment needs a new folder, a resumed one an earlier start, and a
    trial that ended under another config (the file or ``--set`` changed) is refused. A folder that
    a start killed before it recorded anything counts as new (for ``--resume`` too)."""
    started = (exp_dir / STATE_FILE).exists()
    if resume and not exp_dir.exists():
        raise ConfigError("--resume", f"no {exp.kind} to resume in {exp_dir}", exp.name)
    if not resume and started:
        raise ConfigError("name", f"{exp_dir} holds an earlier {exp.kind}: pass --resume to finish it, "
                          "or --name NEW for a new one", exp.name)
    _hold(exp_dir)
    known = read_records(exp_dir)
    if started and exp.fingerprint() != read_json(exp_dir / STATE_FILE).get("fingerprint", exp.fingerprint()):
        raise ConfigError("--resume", f"the {exp.kind}'s search settings changed since it started (space, "
                          "searcher); use --name NEW for a new one", exp.name)
    for rec in known.values():
        if rec.config_hash is None or not (exp.done(rec) or rec.history):
            continue
        try:
            run = exp.trial_run(rec.params)
        except (ConfigError, KeyError):
            continue  # not part of this invocation (another variant) or an infeasible point
        if config_hash(run) != rec.config_hash:
            what = "finished" if exp.done(rec) else "started"
            raise ConfigError("--resume", f"trial {rec.key} {what} under another config (the file or --set "
                              "changed since); use --name NEW for a new experiment", rec.key)
    return known


_HELD: dict[Path, Any] = {}  # experiment folders this process runs: their lock files stay open


def _hold(exp_dir: Path) -> None:
    """One process per experiment folder: a second ``raypair`` on the same name is refused rather
    than let two drivers write the same trial store."""
    key = exp_dir.resolve()
    if key in _HELD:
        return
    exp_dir.mkdir(parents=True, exist_ok=True)
    f = open(exp_dir / ".lock", "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise ConfigError("name", f"another raypair process is running {exp_dir} now; wait for it, or "
                          "use --name NEW", exp_dir.name) from None
    _HELD[key] = f


def is_running(exp_dir: Path) -> bool:
    """Whether a driver holds the experiment's folder now (its lock is taken)."""
    try:
        f = open(exp_dir / ".lock", "r")
    except OSError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def read_json(path: Path) -> Any:
    """A JSON file's content, or None if it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
