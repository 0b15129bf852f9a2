"""The trial store: the one record of what each trial did, and so the one truth ``--resume`` reads.

``<exp>/trials/<key>/`` holds

- ``trial.json``: the key, the params, the config hash and the driver's token, written by the
  driver before the trial starts;
- ``history.jsonl``: one line per finished epoch, appended by the trial (rank 0) before it reports
  the epoch to anyone;
- ``state.pt``: the latest checkpoint, written after the epoch's line; ``state.prev.pt`` the one
  before it (a damaged checkpoint is set aside and the trial continues from that one);
- ``end.json``: how the trial ended (finished, stopped, infeasible, failed), written before the
  trial is reported finished to MLflow or to the searcher; ``ends.jsonl``: its copy, appended after
  it (and ``{"end": null}`` when a trial run again loses its end), so a damaged ``end.json`` is
  told apart from none and written again;
- ``workers.jsonl``: one line per worker and attempt: where it ran (Ray node, host, pid) and the
  epoch it resumed from.

Every write goes through :mod:`raypair.trials.durable` (durable before it returns: a crash or a
power loss leaves each file old or new); every read is verified (:mod:`raypair.trials.verify`,
:mod:`raypair.trials.check`). So a driver killed at any instant leaves either a trial that ended
(never run again; MLflow and the searcher are brought in line from the record on the next start)
or one that continues from its checkpoint, its history replayed rather than retrained.

Fencing: each start writes a new token into ``experiment.json``; a trial process takes its
trial's token from ``trial.json`` when it starts and each of its writes first checks that token
is still current: a trial process that outlived its driver (or one cut off by a partition) is
refused (:class:`Fenced`) rather than write over the current driver's trials. The check and the
write are one step: each trial write holds a shared ``flock`` on ``<exp>/.fence`` from its check
to its end, and a start takes it exclusively to change the token, so no write of an earlier start
lands after the change (POSIX locks: local disks and NFS with its lock service). Pure file I/O: no Ray,
no MLflow.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import socket
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from raypair.config import ConfigError
from raypair.experiments.base import Experiment, Record, Trial, config_hash
from raypair.trials import durable
from raypair.trials.check import (CKPT, END, ENDS, HISTORY, PLAN_FILE, PREV, STATE_FILE, TRIAL, WORKERS, good_state,
                                  line, read_record, repair_experiment, untorn)
from raypair.trials.verify import load_json, load_lines, seal, unseal

__all__ = ["PLAN_FILE", "STATE_FILE", "Fenced", "TrialStore", "is_running", "new_token", "prepare", "read_json",
           "read_records", "store_report", "write_json"]


def write_json(path: Path, obj: Any) -> None:
    """Durably (see :mod:`raypair.trials.durable`), with a checksum: a kill leaves the old file or the new one."""
    durable.write_bytes(path, seal(obj))


def read_json(path: Path) -> Optional[dict[str, Any]]:
    """A store JSON file's content, verified: None if it is missing, ``Damaged`` if it is damaged."""
    return load_json(path)


class Fenced(RuntimeError):
    """A trial process of an earlier driver tried to write: the current driver owns the store."""


def new_token(exp_dir: Path) -> str:
    """A start takes the experiment over: a new token in ``experiment.json`` fences off the trial
    processes of every earlier start (once their writes in flight have ended)."""
    token = f"{socket.gethostname()}-{uuid.uuid4().hex}"
    with fence_lock(exp_dir, exclusive=True):
        write_json(exp_dir / STATE_FILE, {**(load_json(exp_dir / STATE_FILE) or {}), "token": token})
    return token


@contextlib.contextmanager
def fence_lock(exp_dir: Path, exclusive: bool) -> Iterator[None]:
    """``<exp>/.fence`` locked: shared by a trial's check-and-write, exclusive by a token change."""
    with open(Path(exp_dir) / ".fence", "a") as f:  # an empty lock file, never read
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


class TrialStore:
    def __init__(self, folder: Path, token: Optional[str] = None) -> None:
        self.folder = Path(folder)
        self.token = token  # set in a trial process: its writes are fenced
        self._last: Optional[int] = None  # last epoch in the history, read from the file once

    @classmethod
    def attach(cls, folder: Path) -> "TrialStore":
        """The store as a trial process writes it: fenced by the token its driver gave the trial."""
        return cls(folder, (load_json(Path(folder) / TRIAL) or {}).get("token") or None)

    @contextlib.contextmanager
    def _fenced(self) -> Iterator[None]:
        """A trial process's write: its token checked, and no token change until the write ends."""
        if self.token is None:
            yield
            return
        exp_dir = self.folder.parent.parent
        with fence_lock(exp_dir, exclusive=False):
            if (load_json(exp_dir / STATE_FILE) or {}).get("token") != self.token:
                raise Fenced(f"{self.folder}: a newer driver runs this experiment; this trial process may not write")
            yield

    # ------------------------------------------------------------------------ driver side
    def create(self, trial: Trial, hash_: Optional[str]) -> None:
        """Record the trial before it starts; a trial run again (a failed pair) loses its end."""
        durable.make_dir(self.folder)
        token = (load_json(self.folder.parent.parent / STATE_FILE) or {}).get("token")
        write_json(self.folder / TRIAL, {"key": trial.key, "params": trial.params, "config_hash": hash_,
                                         "token": token})
        if (self.folder / END).exists():
            durable.remove(self.folder / END)
            durable.append(self.folder / ENDS, line({"end": None}))

    def finish(self, status: str, **info: Any) -> bool:
        """Record how the trial ended, unless an end is recorded already (the first word stands: a
        Train run that completes after the driver recorded its stop does not rewrite it)."""
        import time

        with self._fenced():
            rows = sum("epoch" in r for r in load_lines(self.folder / HISTORY)[0])  # tells a history cut later
            end = unseal(seal({"status": status, "time": time.time(), **info, "rows": rows}))
            if not durable.create(self.folder / END, seal(end)):
                return False
            durable.append(self.folder / ENDS, line({"end": end}))
        return True

    def end(self) -> Optional[dict[str, Any]]:
        rec = self.record()
        return rec.end if rec else None

    # ------------------------------------------------------------------------- trial side
    def history(self) -> list[dict[str, Any]]:
        rec = self.record()
        return rec.history if rec else []

    def append(self, metrics: dict[str, Any]) -> bool:
        """Add an epoch's row; False (nothing written) if that epoch is already recorded."""
        if self._last is None:
            rows = self.history()
            self._last = int(rows[-1]["epoch"]) if rows else 0
            self._cut_torn_tail()
        if self._last >= int(metrics["epoch"]):
            return False
        clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
        with self._fenced():
            durable.append(self.folder / HISTORY, line(clean))
        self._last = int(metrics["epoch"])
        return True

    def _cut_torn_tail(self) -> None:
        """Drop a last line a kill cut off, so appends stay readable (the same repair ``prepare`` makes)."""
        f = self.folder / HISTORY
        if f.exists() and not f.read_bytes().endswith(b"\n"):
            with self._fenced():
                untorn(f)

    def note_worker(self, info: dict[str, Any]) -> None:
        """Where one worker of one attempt runs (one short line, appended whole)."""
        with self._fenced():
            durable.append(self.folder / WORKERS, line(json.loads(json.dumps(info, default=str))))

    def workers(self) -> list[dict[str, Any]]:
        """Where the trial ran, for MLflow's tags; a damaged line is left out (placement only)."""
        out = []
        try:
            text = (self.folder / WORKERS).read_text()
        except (OSError, UnicodeDecodeError):
            return []
        for row in text.splitlines():
            try:
                out.append(unseal(row))
            except ValueError:
                continue
        return out

    def save_state(self, ckpt_folder: Optional[Path]) -> None:
        """The epoch's checkpoint becomes ``state.pt``; the one it replaces, ``state.prev.pt``."""
        if ckpt_folder is not None:
            data = (Path(ckpt_folder) / CKPT).read_bytes()
            with self._fenced():
                if (self.folder / CKPT).exists():
                    durable.move(self.folder / CKPT, self.folder / PREV)
                durable.write_bytes(self.folder / CKPT, data)

    def state(self) -> Optional[dict[str, Any]]:
        """The newest checkpoint that verifies (a damaged one set aside), or None."""
        with self._fenced():  # it may set a damaged checkpoint aside
            return good_state(self.folder)

    def record(self) -> Optional[Record]:
        return read_record(self.folder)


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
        rec = read_record(folder)
        if rec is not None:
            out[rec.key] = rec
    return out


def prepare(exp: Experiment, exp_dir: Path, resume: bool) -> dict[str, Record]:
    """Before Ray starts: every store file verified (``check.repair_experiment``: repaired where that
    is safe, else one line naming the file); a new experiment needs a new folder, a resumed one an
    earlier start, and a trial that ended under another config (the file or ``--set`` changed) is
    refused. A folder that a start killed before it recorded anything counts as new (for
    ``--resume`` too)."""
    started = (exp_dir / STATE_FILE).exists()
    if resume and not exp_dir.exists():
        raise ConfigError("--resume", f"no {exp.kind} to resume in {exp_dir}", exp.name)
    if not resume and started:
        raise ConfigError("name", f"{exp_dir} holds an earlier {exp.kind}: pass --resume to finish it, "
                          "or --name NEW for a new one", exp.name)
    _hold(exp_dir)
    repair_experiment(exp_dir)
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
    durable.make_dir(exp_dir)
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
