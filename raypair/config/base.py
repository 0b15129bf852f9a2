"""The config toolkit: :class:`ConfigError`, the :class:`Strict` base of every schema, YAML
loading, dotted-path overrides and the translation of pydantic errors into one line.

Every error is a :class:`ConfigError` whose text names the dotted field and the received value,
so the CLI can print one line and exit 2 before any compute starts.
"""
from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Annotated, Any, Collection

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from raypair.config.yamlio import MAX_BYTES, YamlProblem, load_text


class ConfigError(ValueError):
    """Bad user input. ``str(err)`` is the one line the CLI prints."""

    def __init__(self, field: str, message: str, value: Any = ...) -> None:
        message = " ".join(str(message).split())  # one line, whatever an exception's text held
        field = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(field))  # a key "a\nb" -> a\\nb
        self.field, self.message, self.value = field, message, value
        self.cross = False  # set by from_validation: a cross-field rule, not the field's own range
        got = "" if value is ... else f" (got {_short(value)})"
        super().__init__(f"{field}: {message}{got}" if field else f"{message}{got}")

    def __reduce__(self) -> tuple[Any, ...]:  # Ray copies and pickles a trial's exception
        return (ConfigError, (self.field, self.message, self.value))


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - an integer past Python's 4,300-digit str limit, a broken object
        text = f"<{type(value).__name__} of {value.bit_length()} bits>" if isinstance(value, int) \
            else f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


short = _short


class Strict(BaseModel):
    # no NaN or infinity in any float: a NaN passes no range check and would say "<= 10" instead
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    def inactive(self) -> set[str]:
        """Names of fields that no code reads under the current settings (sweeping one is an error)."""
        return set()


# -------------------------------------------------------------------------------------- errors
def _loc(loc: tuple[Any, ...], prefix: str, methods: Collection[str]) -> str:
    parts = [str(p) for p in loc]
    # A tagged union puts the tag in the location: method.erm.aug -> method.aug (and method.vpl
    # for the method config's own cross-field check, whose message then names the field)
    if len(parts) >= 2 and parts[0] == "method" and parts[1] in methods:
        parts.pop(1)
    return ".".join(p for p in [prefix, *parts] if p)


def from_validation(err: ValidationError, prefix: str = "", methods: Collection[str] = ()) -> ConfigError:
    """The first pydantic error as a one-line ConfigError naming the dotted field. ``methods``: the
    names of the ``method`` union's members (a run config's), which pydantic puts in the location."""
    e = err.errors()[0]
    field = _loc(e["loc"], prefix, methods)
    kind = e["type"]
    if kind == "extra_forbidden":
        return ConfigError(field, "unknown key")
    if kind == "union_tag_invalid" or (field == "method.name" and kind == "literal_error"):
        value = e["input"].get("name") if isinstance(e["input"], dict) else e["input"]
        return ConfigError("method.name", f"unknown method (valid: {', '.join(methods)})", value)
    if kind == "missing":
        return ConfigError(field, "required")
    msg = e["msg"].removeprefix("Value error, ")
    named = re.match(r"^([A-Za-z_][\w.]*): (.*)$", msg)
    if named and e["type"] == "value_error":  # a cross-field check names its own field
        err = ConfigError(".".join(p for p in (field, named[1]) if p), named[2])
        err.cross = True
        return err
    if kind == "finite_number":
        msg = "must be a finite number"
    return ConfigError(field, msg, e.get("input", ...))


# ---------------------------------------------------------------------------------------- names
NAME_RULE = "1-100 letters, digits, '_', '-' or '.', starting with a letter or digit, without '..'"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def check_name(field: str, value: Any) -> str:
    """An experiment name: a folder under ``--storage`` and an MLflow experiment, so one path
    component of a safe character set (no separator, no ``..``, no quote)."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise ConfigError(field, f"must be {NAME_RULE}", value)
    return value


def _name(value: str) -> str:
    if not _NAME.fullmatch(value) or ".." in value:
        raise ValueError(f"must be {NAME_RULE}")
    return value


Name = Annotated[str, AfterValidator(_name)]


# ------------------------------------------------------------------------------ dicts and YAML
def read_text(path: str | Path, field: str = "file") -> str:
    """A config file's text; every way of not being a readable UTF-8 file is a ConfigError on ``field``."""
    p = Path(path)
    try:
        st = p.stat()
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(field, "is a folder, not a file", str(p))
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(field, "is not a regular file", str(p))
        if st.st_size > MAX_BYTES:
            raise ConfigError(field, f"is larger than {MAX_BYTES:,} bytes: not a config file", str(p))
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(field, "no such file", str(p)) from None
    except OSError as e:
        raise ConfigError(field, f"cannot read it: {e.strerror or e}", str(p)) from None
    except ValueError as e:  # an embedded NUL byte
        raise ConfigError(field, f"not a valid path: {e}", str(p)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(field, f"is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})",
                          str(p)) from None


def read_yaml(path: str | Path, field: str = "file") -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is ``{}``); errors name ``field``."""
    p = Path(path)
    try:
        data = load_text(read_text(p, field))
    except YamlProblem as e:
        raise ConfigError(field, f"{p}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(field, f"{p}: the top level must be a mapping", type(data).__name__)
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def set_path(d: dict[str, Any], path: str, value: Any, prefix: str = "") -> dict[str, Any]:
    """A copy of ``d`` with ``path`` (dotted) set to ``value``; intermediate mappings are created.
    Errors name ``prefix + path``."""
    keys = path.split(".")
    if not all(k.strip() for k in keys):
        raise ConfigError("--set" if not prefix else prefix.rstrip("."), "empty key in dotted path", path)
    out = dict(d)
    node = out
    for i, k in enumerate(keys[:-1]):
        child = node.get(k, {})
        if not isinstance(child, dict):
            raise ConfigError(prefix + ".".join(keys[: i + 1]), "is not a section, cannot set a key inside it", child)
        node[k] = dict(child)
        node = node[k]
    node[keys[-1]] = value
    return out


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=1e-3`` -> ("a.b", 0.001); the value is read as YAML (numbers, bools, lists)."""
    if not isinstance(text, str) or "=" not in text or not text.split("=", 1)[0].strip():
        raise ConfigError("--set", "expected dotted.path=value", text)
    path, raw = text.split("=", 1)
    path = path.strip()
    if not all(k.strip() for k in path.split(".")):
        raise ConfigError("--set", "empty key in dotted path", text)
    try:
        value = load_text(raw) if raw.strip() else ""
    except YamlProblem as e:
        raise ConfigError(path, f"value is not valid YAML: {e}", raw) from None
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):  # YAML 1.1 reads 1e-3 as text
        value = float(value)
    return path, value


def field_at(cfg: BaseModel, path: str) -> tuple[BaseModel, str]:
    """The model owning the last key of ``path`` and that key; ConfigError if it is no field."""
    node: Any = cfg
    keys = path.split(".")
    for i, k in enumerate(keys):
        if not isinstance(node, BaseModel) or k not in type(node).model_fields:
            where = ".".join(keys[: i + 1])
            raise ConfigError(where, "no such field in the run config")
        if i == len(keys) - 1:
            return node, k
        node = getattr(node, k)
    raise AssertionError("unreachable")


def to_plain(cfg: BaseModel) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out
