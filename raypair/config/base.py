"""The config toolkit: :class:`ConfigError`, the :class:`Strict` base of every schema, YAML
loading, dotted-path overrides and the translation of pydantic errors into one line.

Every error is a :class:`ConfigError` whose text names the dotted field and the received value,
so the CLI can print one line and exit 2 before any compute starts.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """Bad user input. ``str(err)`` is the one line the CLI prints."""

    def __init__(self, field: str, message: str, value: Any = ...) -> None:
        self.field, self.message, self.value = field, message, value
        got = "" if value is ... else f" (got {_short(value)})"
        super().__init__(f"{field}: {message}{got}" if field else f"{message}{got}")

    def __reduce__(self) -> tuple[Any, ...]:  # Ray copies and pickles a trial's exception
        return (ConfigError, (self.field, self.message, self.value))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    def inactive(self) -> set[str]:
        """Names of fields that no code reads under the current settings (sweeping one is an error)."""
        return set()


# -------------------------------------------------------------------------------------- errors
def _loc(loc: tuple[Any, ...], prefix: str = "") -> str:
    parts = [str(p) for p in loc]
    # A tagged union puts the tag in the location: method.erm.aug -> method.aug (and method.vpl
    # for the method config's own cross-field check, whose message then names the field)
    if len(parts) >= 2 and parts[0] == "method":
        from raypair.methods import METHODS

        if parts[1] in METHODS:
            parts.pop(1)
    return ".".join(p for p in [prefix, *parts] if p)


def from_validation(err: ValidationError, prefix: str = "") -> ConfigError:
    """The first pydantic error as a one-line ConfigError naming the dotted field."""
    e = err.errors()[0]
    field = _loc(e["loc"], prefix)
    kind = e["type"]
    if kind == "extra_forbidden":
        return ConfigError(field, "unknown key")
    if kind == "union_tag_invalid" or (field == "method.name" and kind == "literal_error"):
        from raypair.methods import METHODS

        value = e["input"].get("name") if isinstance(e["input"], dict) else e["input"]
        return ConfigError("method.name", f"unknown method (valid: {', '.join(METHODS.names())})", value)
    if kind == "missing":
        return ConfigError(field, "required")
    msg = e["msg"].removeprefix("Value error, ")
    named = re.match(r"^([A-Za-z_][\w.]*): (.*)$", msg)
    if named and e["type"] == "value_error":  # a cross-field check names its own field
        return ConfigError(".".join(p for p in (field, named[1]) if p), named[2])
    return ConfigError(field, msg, e.get("input", ...))


# ------------------------------------------------------------------------------ dicts and YAML
def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("", f"{p}: no such file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark else str(p)
        raise ConfigError("", f"{where}: YAML syntax error: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("", f"{p}: the top level must be a mapping", type(data).__name__)
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def set_path(d: dict[str, Any], path: str, value: Any, prefix: str = "") -> dict[str, Any]:
    """A copy of ``d`` with ``path`` (dotted) set to ``value``; intermediate mappings are created."""
    keys = path.split(".")
    if not all(keys):
        raise ConfigError(prefix + path, "empty key in dotted path")
    out = dict(d)
    node = out
    for i, k in enumerate(keys[:-1]):
        child = node.get(k, {})
        if not isinstance(child, dict):
            raise ConfigError(".".join(keys[: i + 1]), "is not a section, cannot set a key inside it", child)
        node[k] = dict(child)
        node = node[k]
    node[keys[-1]] = value
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=1e-3`` -> ("a.b", 0.001); the value is read as YAML (numbers, bools, lists)."""
    if "=" not in text:
        raise ConfigError("--set", "expected dotted.path=value", text)
    path, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(path.strip(), "value is not valid YAML", raw) from None
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as text; people mean a number
        try:
            value = float(value)
        except ValueError:
            pass
    return path.strip(), value


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
