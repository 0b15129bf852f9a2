"""Reading the trial store, every file verified: damage is told apart from absence.

Each JSON file (``trial.json``, ``end.json``, ``experiment.json``, ``plan.json``) and each line of
``history.jsonl`` and ``workers.jsonl`` carries a CRC-32 of its content (``"crc32"``); a checkpoint
(``state.pt``, a zip archive) carries one per member, checked before ``torch.load(weights_only=True)``.
A file that is present but empty, truncated, garbled or unreadable is :class:`Damaged` (a
:class:`~raypair.config.ConfigError` naming the file and what to do); a missing file is None.
What the store may repair (``raypair.trials.check``) and what it must refuse is decided from these.
"""
from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path
from typing import Any, Optional

from raypair.config import ConfigError

CRC = "crc32"
RESTORE = "restore it from a backup, or start anew with --name NEW"


class Damaged(ConfigError):
    def __init__(self, path: Path, why: str, todo: str = RESTORE) -> None:
        super().__init__(str(path), f"is damaged ({why}); {todo}")
        self.path, self.why = Path(path), why

    def __reduce__(self) -> tuple[Any, ...]:
        return (ConfigError, (self.field, self.message, self.value))


def _crc(obj: Any) -> str:
    return f"{zlib.crc32(json.dumps(obj, sort_keys=True, default=str).encode()):08x}"


def seal(obj: dict[str, Any]) -> bytes:
    """``obj`` as one JSON line (no newline) carrying its CRC."""
    plain = json.loads(json.dumps(obj, default=str))
    return json.dumps({**plain, CRC: _crc(plain)}).encode()


def unseal(text: str) -> dict[str, Any]:
    """The object :func:`seal` wrote; ValueError if it is not one (a file of an older raypair, with
    no CRC, is taken as it parses)."""
    obj = json.loads(text)
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    crc = obj.pop(CRC, None)
    if crc is not None and crc != _crc(obj):
        raise ValueError("its checksum does not match")
    return obj


def load_json(path: Path) -> Optional[dict[str, Any]]:
    """A sealed JSON file's object; None if it is missing; :class:`Damaged` otherwise."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise Damaged(path, f"unreadable: {type(e).__name__}") from None
    if not text.strip():
        raise Damaged(path, "empty")
    try:
        return unseal(text)
    except ValueError as e:
        raise Damaged(path, str(e).split(":")[0]) from None


def load_lines(path: Path, todo: str = RESTORE) -> tuple[list[dict[str, Any]], bool]:
    """The objects of a sealed JSON-lines file and whether its last line is torn (cut off by a
    crash while it was appended: no newline and not whole; dropped). A bad line before the last
    is :class:`Damaged`."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return [], False
    except (OSError, UnicodeDecodeError) as e:
        raise Damaged(path, f"unreadable: {type(e).__name__}", todo) from None
    lines, rows = text.splitlines(), []
    for i, line in enumerate(lines):
        try:
            rows.append(unseal(line))
        except ValueError:
            if i == len(lines) - 1 and not text.endswith("\n"):
                return rows, True
            raise Damaged(path, f"line {i + 1} of {len(lines)} is not whole", todo) from None
    return rows, False


def load_state(path: Path) -> Optional[dict[str, Any]]:
    """A checkpoint, its members' CRCs checked first; None if missing; :class:`Damaged` otherwise."""
    import torch

    path = Path(path)
    if not path.exists():
        return None
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
        if bad is not None:
            raise ValueError(f"member {bad} fails its CRC")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
            raise ValueError("not a raypair checkpoint")
    except ValueError as e:
        raise Damaged(path, str(e), "it is set aside") from None
    except Exception as e:  # noqa: BLE001 - zip, unpickling and I/O errors alike: the file is damaged
        # the type only: torch's text would advise weights_only=False, which would run the file's code
        raise Damaged(path, f"{type(e).__name__} while reading it", "it is set aside") from None
    return state
