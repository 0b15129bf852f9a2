"""Faults of the machine are not results: a full, read-only, unwritable or failing store pauses the
experiment instead of failing a trial.

An ``OSError`` with one of :data:`ERRNOS` anywhere in an exception's chain (its cause, its
context, or a Ray Train worker's failure), or SQLite's word for the same (the MLflow and Optuna
stores), is a storage fault. The trial that meets one reports
:data:`MARK` instead of raising; the driver then stops every trial the way a signal stops them
(no end recorded, so ``--resume`` continues each from its checkpoint; the searcher is told
nothing), marks their MLflow runs interrupted, and exits with :data:`EXIT_CODE` and one line.
"""
from __future__ import annotations

import errno
import os
import re
from typing import Iterator, Optional

ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EIO, errno.EDQUOT}
# what SQLite (the MLflow and Optuna stores) says of a full, read-only or failing disk
SQLITE = ("database or disk is full", "attempt to write a readonly database", "disk I/O error")
MARK = "raypair_storage_fault"  # the key a trial reports its storage fault under
EXIT_CODE = 3


class StorageFault(Exception):
    """The experiment paused on a fault of the storage; ``--resume`` after the fix continues it."""


def error_chain(error: Optional[BaseException]) -> Iterator[BaseException]:
    """``error`` and every exception it holds, each once: its cause and context, and the worker
    exceptions of a Ray Train worker group error (``worker_failures``)."""
    seen, todo = set(), [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, *getattr(e, "worker_failures", {}).values()]


def storage_fault(error: Optional[BaseException]) -> Optional[str]:
    """``"<strerror> (<ERRNO>): <path>"`` for the first storage ``OSError`` in ``error``'s chain."""
    for e in error_chain(error):
        if isinstance(e, OSError) and e.errno in ERRNOS:
            where = f": {e.filename}" if e.filename else ""
            return f"{e.strerror or os.strerror(e.errno)} ({errno.errorcode[e.errno]}){where}"
        said = next((m for m in SQLITE if m in str(e)), None)
        if said and not isinstance(e, OSError):
            return f"{said} ({type(e).__name__})"
    return None


def fault_in_text(text: str) -> Optional[str]:
    """The same for an error Ray only hands back as text (a trial's last error line)."""
    said = next((m for m in SQLITE if m in (text or "")), None)
    if said:
        return said
    m = re.search(r"\[Errno (\d+)\] ([^:'\"]+)(?:: '?([^']*)'?)?", text or "")
    if m and int(m.group(1)) in ERRNOS:
        where = f": {m.group(3)}" if m.group(3) else ""
        return f"{m.group(2).strip()} ({errno.errorcode[int(m.group(1))]}){where}"
    return None
