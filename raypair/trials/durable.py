"""The one way the trial store writes: every write is durable before the call returns.

A whole file is written to a temporary name unique to this host and process, fsynced, renamed
over its name (atomic), and its folder fsynced (so the rename survives a power loss); an append
is one ``write`` of whole lines, fsynced. A kill or a power loss at any instant leaves each file
old or new, and at most the last line of an appended file torn. ``tests/trials`` fails if any
module of raypair writes a store file some other way.

Each durable operation can be recorded (:func:`recording` in this process; in every process of a
run, trial processes included, to the file ``RAYPAIR_DURABLE_LOG`` names, :func:`read_log`): the
crash-consistency tests replay every prefix of a run's operations, as a crash would leave the disk.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

Op = tuple[str, Path, bytes]  # (what: write / create / append / remove / mkdir, file, bytes)
_recorders: list[Callable[[Op], None]] = []


def _tmp(path: Path) -> Path:
    """A temporary name no other host or process uses (NFS shares one folder between hosts)."""
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _written(path: Path, data: bytes) -> Path:
    tmp = _tmp(path)
    with open(tmp, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def _done(what: str, path: Path, data: bytes = b"") -> None:
    log = os.environ.get("RAYPAIR_DURABLE_LOG")
    if log:  # one write of one line per operation: lines of several processes do not interleave
        entry = {"what": what, "path": str(path), "data": base64.b64encode(data).decode(), "pid": os.getpid()}
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(entry) + "\n").encode())
        finally:
            os.close(fd)
    for record in _recorders:
        record((what, path, data))


def read_log(log: Path) -> list[Op]:
    """The operations ``RAYPAIR_DURABLE_LOG`` recorded, in order."""
    rows = [json.loads(ln) for ln in Path(log).read_text().splitlines()]
    return [(r["what"], Path(r["path"]), base64.b64decode(r["data"])) for r in rows]


def make_dir(folder: Path) -> None:
    """``folder`` and its parents, each new one's entry fsynced in its parent."""
    folder = Path(folder)
    if folder.is_dir():
        return
    make_dir(folder.parent)
    folder.mkdir(exist_ok=True)
    _sync_dir(folder.parent)
    _done("mkdir", folder)


def write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data``: old or new after any crash, never half."""
    path = Path(path)
    tmp = _written(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_dir(path.parent)
    _done("write", path, data)


def create(path: Path, data: bytes) -> bool:
    """Write ``path`` only if it does not exist (atomically: of two writers, one wins); True if
    this call wrote it."""
    path = Path(path)
    tmp = _written(path, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    _sync_dir(path.parent)
    _done("create", path, data)
    return True


def append(path: Path, data: bytes) -> None:
    """Add whole lines at the end of ``path`` (created if missing), fsynced."""
    path = Path(path)
    new = not path.exists()
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if new:
        _sync_dir(path.parent)
    _done("append", path, data)


def remove(path: Path) -> None:
    path = Path(path)
    if path.exists() or path.is_symlink():
        path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
        _sync_dir(path.parent)
        _done("remove", path)


def move(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` (atomic, durable): recorded as the write of ``dst`` and the removal of ``src``."""
    src, dst = Path(src), Path(dst)
    data = src.read_bytes() if _recorders or os.environ.get("RAYPAIR_DURABLE_LOG") else b""
    os.replace(src, dst)
    _sync_dir(dst.parent)
    _done("write", dst, data)
    _done("remove", src)


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, json.dumps(obj, default=str).encode())


@contextlib.contextmanager
def recording(into: Optional[list[Op]] = None) -> Iterator[list[Op]]:
    """Record each durable operation, in the order it became durable."""
    ops: list[Op] = [] if into is None else into
    _recorders.append(ops.append)
    try:
        yield ops
    finally:
        _recorders.remove(ops.append)


def replay(ops: list[Op], base: Path, into: Path, torn: bool = False) -> None:
    """The disk after ``ops`` under ``base``, rebuilt under ``into``; ``torn``: the last operation,
    an append, only half done (a crash inside its ``write``)."""
    for i, (what, path, data) in enumerate(ops):
        if not Path(path).is_relative_to(base):
            continue  # the folders above ``base`` (made before it)
        target = into / Path(path).relative_to(base)
        if what == "mkdir":
            target.mkdir(parents=True, exist_ok=True)
        elif what == "remove":
            target.unlink(missing_ok=True)
        elif what == "append":
            with open(target, "ab") as f:
                f.write(data[: len(data) // 2] if torn and i == len(ops) - 1 else data)
        else:
            target.write_bytes(data)
