"""What code a run ran, and that every node runs the driver's.

Each MLflow run (the parent and every trial) is tagged with :func:`tags`: the git commit of the
checkout, a hash of the raypair source that is imported (every ``.py`` file of the package, so an
installed wheel or an edited checkout is named too) and the versions of torch, timm, Ray, Optuna
and MLflow. The runner asks every Ray node which raypair its workers import (:func:`here`) and
refuses, in one line and before any trial, a node whose source differs (:func:`check_nodes`).
Ray-free and MLflow-free; the hash is computed once per process.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from pathlib import Path
from typing import Any

from raypair.config import ConfigError

PACKAGES = ("torch", "timm", "ray", "optuna", "mlflow")
NUMERIC = ("torch", "timm")  # a node with another version of these is refused: its trials' numbers would differ


def package_dir() -> Path:
    import raypair

    return Path(raypair.__file__).resolve().parent


@functools.lru_cache(maxsize=None)
def source_hash() -> str:
    """SHA-256 (16 hex digits) over the relative path and bytes of every ``.py`` file of raypair."""
    return digest(package_dir())


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def tags() -> dict[str, str]:
    """The MLflow tags that name the code of a run (this process's code: read once, not per trial)."""
    return dict(_tags())


@functools.lru_cache(maxsize=None)
def _tags() -> tuple[tuple[str, str], ...]:
    from raypair.tracking import git_sha

    return (("raypair.git_sha", git_sha()), ("raypair.source_hash", source_hash()),
            *((f"raypair.version.{k}", v) for k, v in versions().items()))


def here(fresh: bool = False) -> dict[str, Any]:
    """Which raypair (and libraries) this process imports: what a node reports to the driver."""
    return {"source_hash": digest(package_dir()) if fresh else source_hash(), "package": str(package_dir()),
            "versions": versions()}


def check_nodes(driver: dict[str, Any], nodes: list[tuple[str, dict[str, Any]]]) -> None:
    """One line for the first node whose raypair is not the driver's, or whose torch or timm (the
    libraries that compute the numbers) is another version (``nodes``: name, :func:`here`)."""
    for name, got in nodes:
        if got["source_hash"] != driver["source_hash"]:
            raise ConfigError("raypair", f"node {name} imports raypair from {got['package']} (source "
                              f"{got['source_hash']}), not the driver's {driver['package']} (source "
                              f"{driver['source_hash']}): install the same raypair on every node, and run "
                              "no raypair/ folder on a worker's path", got["package"])
        for lib in NUMERIC:
            theirs, ours = got["versions"].get(lib), driver["versions"].get(lib)
            if theirs != ours:
                raise ConfigError(f"versions.{lib}", f"node {name} has {lib} {theirs}, the driver {ours}: a trial "
                                  f"there would compute other numbers; install {lib} {ours} on every node", theirs)


def node_probe(path: str) -> dict[str, Any]:
    """On a node: the driver's probe seen, a probe of its own written, read back and removed, and
    ``here()`` (the raypair this node imports). The runner sends this module by value, so a node with
    another raypair runs this code, not its own."""
    import errno
    import os

    mine = Path(path).with_name(f"{Path(path).name}-{os.getpid()}")
    try:
        with open(mine, "w") as f:
            f.write("raypair")
            f.flush()
            os.fsync(f.fileno())
        ok = mine.read_text() == "raypair"
        mine.unlink()
        write = None if ok else "the probe file read back changed"
    except OSError as e:
        write = f"{e.strerror or e} ({errno.errorcode.get(e.errno or 0, e.errno)})"
    return {"sees": Path(path).is_file(), "write": write, "code": here(fresh=True)}
