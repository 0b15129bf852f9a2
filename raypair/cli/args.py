"""Argument types and the one-line argparse error: every option is checked while it is parsed, so a
bad one is ``raypair: error: <option>: <what> (got <value>)`` and exit 2, like a bad config field.

Nothing here touches the file system beyond ``stat`` and ``access``, and nothing heavy is imported.
"""
from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, NoReturn
from urllib.parse import urlparse

from raypair.config import ConfigError, check_name

_ARG = re.compile(r"^argument (?P<opt>[^:]+): (?P<msg>.*)$", re.S)
_INVALID = re.compile(r"^invalid (?P<what>.+?) value: (?P<value>.*)$", re.S)
_CHOICE = re.compile(r"^invalid choice: (?P<value>.*?) \(choose from (?P<choices>.*)\)$", re.S)


def one_line(message: str) -> str:
    """argparse's error text as ``<option>: <what> (got <value>)``, on one line."""
    msg = " ".join(message.split())
    m = _ARG.match(msg)
    if m is None:
        if msg.startswith("the following arguments are required: "):
            return f"{msg.split(': ', 1)[1].split(',')[0].strip()}: required"
        if msg.startswith("unrecognized arguments: "):
            extra = msg.split(": ", 1)[1]
            return f"{extra.split()[0]}: unrecognized argument (got {extra!r})"
        return msg
    opt, text = m["opt"].split("/")[-1], m["msg"]
    if (inv := _INVALID.match(text)) is not None:
        return f"{opt}: expected {_KINDS.get(inv['what'], inv['what'])} (got {inv['value']})"
    if (ch := _CHOICE.match(text)) is not None:
        return f"{opt}: invalid choice, choose from {ch['choices']} (got {ch['value']})"
    return f"{opt}: {text}"


_KINDS = {"int": "an integer", "float": "a number"}


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        """A ConfigError of the one line: ``main`` prints it and exits 2, ``raypair.api`` raises it."""
        field, _, what = one_line(message).partition(": ")
        raise ConfigError(field, what) if what else ConfigError("", field)


def _bad(what: str, text: Any) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"{what} (got {text!r})")


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise _bad("expected an integer", text) from None
        if not lo <= value <= hi:
            raise _bad(f"must lie in [{lo}, {hi}]", value)
        return value

    parse.__name__ = "int"
    return parse


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _bad("expected a number", text) from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise _bad("must lie in [0, 1]", text)
    return value


def name(text: str) -> str:
    try:
        return check_name("", text)
    except ConfigError as e:
        raise _bad(e.message, text) from None


def seeds(text: str) -> list[int]:
    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise _bad("expected comma-separated integers", text) from None
    if not out or len(set(out)) != len(out):
        raise _bad("expected distinct comma-separated integers", text)
    if not all(0 <= s <= 2**32 - 1 for s in out):
        raise _bad("seeds must lie in [0, 4294967295]", text)
    return out


def names(text: str) -> list[str]:
    out = [t.strip() for t in text.split(",") if t.strip()]
    if not out or len(set(out)) != len(out):
        raise _bad("expected distinct comma-separated variant names", text)
    return out


def _plain_path(text: str, what: str) -> Path:
    """A path without the characters that break the places it is written into (MLflow filters and
    URIs, shell lines it is printed in), each part short enough for the file system."""
    if not text.strip():
        raise _bad(f"expected a {what}", text)
    if any(c in text for c in "'\"\\`") or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise _bad(f"a {what} may not hold quotes, backslashes or control characters", text)
    p = Path(text)
    if any(len(part.encode()) > 255 for part in p.parts) or len(text.encode()) > 4000:
        raise _bad(f"a {what} name is longer than the file system allows", text)
    return p


def folder(text: str) -> Path:
    """A folder raypair may create or write in: an existing folder, or a new one under an existing,
    writable folder. Nothing is created here. Object-store URIs are refused: the trial store needs a
    POSIX file system (atomic rename and link, flock); mount the bucket instead."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        raise _bad("a URI is not a folder: the trial store needs a file system (a local folder, NFS, or a "
                   "bucket mounted with s3fs/gcsfuse)", text)
    p = _plain_path(text, "folder")
    try:
        p = p.resolve()
        if p.exists() and not p.is_dir():
            raise _bad("is a file, not a folder", text)
        up = p
        while not up.exists():
            up = up.parent
        if not up.is_dir():
            raise _bad(f"{up} is a file, so the folder cannot be made", text)
        if not os.access(up, os.W_OK | os.X_OK):
            raise _bad(f"cannot write in {up}", text)
    except OSError as e:
        raise _bad(f"not a usable folder: {e.strerror or e}", text) from None
    return p


def existing_folder(text: str) -> Path:
    """A folder that exists (to read from)."""
    p = _plain_path(text, "folder")
    try:
        p = p.resolve()
        if not p.is_dir():
            raise _bad("no such folder", text)
    except OSError as e:
        raise _bad(f"not a usable folder: {e.strerror or e}", text) from None
    return p


def out_file(text: str) -> Path:
    """A file to write, in a folder that exists."""
    p = _plain_path(text, "file")
    try:
        p = p.resolve()
        if p.is_dir():
            raise _bad("is a folder; give a file name", text)
        if not p.parent.is_dir():
            raise _bad(f"the folder {p.parent} does not exist", text)
        if not os.access(p.parent, os.W_OK | os.X_OK):
            raise _bad(f"cannot write in {p.parent}", text)
    except OSError as e:
        raise _bad(f"not a usable file name: {e.strerror or e}", text) from None
    return p


_URI_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def tracking_uri(text: str) -> str:
    """An MLflow tracking URI of a scheme MLflow serves; a local store's folder must exist."""
    if any(ord(c) < 32 for c in text) or not text.strip():
        raise _bad("expected an MLflow tracking URI", text)
    u = urlparse(text)
    if u.scheme not in _URI_SCHEMES:
        raise _bad(f"expected a {', '.join(_URI_SCHEMES)} URI", text)
    if u.scheme in ("http", "https"):
        try:
            u.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise _bad("bad port", text) from None
        if not u.hostname:
            raise _bad("no host", text)
    if u.scheme in ("sqlite", "file"):
        if u.scheme == "sqlite" and not text.startswith("sqlite:///"):
            raise _bad("expected sqlite:///PATH (a file: the store must outlive the command)", text)
        local = Path(text[len("sqlite:///"):] if u.scheme == "sqlite" else u.path)
        if not local.parent.is_dir():
            raise _bad(f"the folder {local.parent} does not exist", text)
    return text


def host(text: str) -> str:
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    if not re.fullmatch(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*", text):
        raise _bad("expected an IP address or a host name", text)
    return text


def address(text: str) -> str:
    """``auto``, ``HOST:PORT`` or ``ray://HOST:PORT`` (the cluster itself is reached only later)."""
    if text == "auto":
        return text
    m = re.fullmatch(r"(ray://)?(?P<host>[^:/\s]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})", text)
    if m is None or not 1 <= int(m["port"]) <= 65535:
        raise _bad("expected auto, HOST:PORT or ray://HOST:PORT", text)
    return text
