"""The one table of experiment kinds: how a file is recognised and loaded, and which command runs
it. The CLI asks this table (and the loaded :class:`~raypair.experiments.base.Experiment`) all it
needs, so a new kind is one :class:`Kind` registered here or from another package's entry point
(group ``raypair.kinds``), and ``raypair run FILE`` runs it; nothing in the CLI or the runner names
a kind. ``docs/extending.md`` walks through adding one.

A file is recognised by its ``kind:`` key when it has one (any kind in the table), else by the
first kind, lowest ``order`` first, whose :meth:`Kind.recognises` claims its top-level keys:
``sequential`` (``sequential:`` beside ``variants:`` or ``factors:``), ``ablation`` (``variants:`` or
``factors:``), ``space`` (``space:``, ``tune:``, ``run:`` or
``base:``), and ``run`` (anything else: a run file).
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, ClassVar, Optional

from raypair.config import ConfigError, check_name, load_run, read_yaml, to_plain
from raypair.experiments.base import Experiment
from raypair.registry import Registry

ANY = "run"  # the command that runs a file of any kind: raypair run FILE


class Kind:
    """One kind of experiment file. ``opts`` in :meth:`load` are the command's options (``overrides``
    from ``--set``, ``name``, ``resume`` ...); read the ones a command may lack with ``getattr``."""

    name: ClassVar[str]  # as errors and the ``kind:`` key name it
    words: ClassVar[str]  # "an ablation file (variants: or factors:)"
    command: ClassVar[str] = ANY  # the raypair command that runs it (raypair run takes every kind)
    order: ClassVar[int] = 0  # recognised before the kinds of a higher order
    options: ClassVar[tuple[str, ...]] = ()  # options of validate that only this kind takes
    trainable: ClassVar[bool] = False  # raypair train trains its base run (base_raw)

    def recognises(self, raw: dict[str, Any]) -> bool:
        return raw.get("kind") == self.name

    def load(self, path: str | Path, opts: Any) -> Experiment:
        raise NotImplementedError

    def base_raw(self, path: str | Path, overrides: list[str]) -> dict[str, Any]:
        """The base run of such a file, as a plain dict (what ``raypair train`` trains)."""
        raise NotImplementedError

    @property
    def article(self) -> str:
        return self.words.split(" (")[0]


def _adopt(name: str, obj: Any) -> None:
    if name not in KINDS:
        KINDS.register(name)(obj() if isinstance(obj, type) else obj)


KINDS: Registry[Kind] = Registry("experiment kind", group="raypair.kinds", adopt=_adopt)


def register_kind(cls: type[Kind]) -> type[Kind]:
    """Class decorator: puts one instance of ``cls`` in the table under ``cls.name``."""
    KINDS.register(cls.name)(cls())
    return cls


def kind_of(raw: dict[str, Any]) -> Kind:
    """The kind of a file's top-level mapping (see the module's docstring)."""
    kinds = [KINDS.get(n) for n in KINDS.names()]
    if "kind" in raw:
        if not isinstance(raw["kind"], str) or raw["kind"] not in KINDS.names():
            raise ConfigError("kind", f"unknown experiment kind (valid: {', '.join(KINDS.names())})", raw["kind"])
        return KINDS.get(raw["kind"])
    for kind in sorted(kinds, key=lambda k: (k.order, k.name)):
        if kind.recognises(raw):
            return kind
    raise ConfigError("kind", "no experiment kind recognises the file; give kind:", sorted(raw))


def takes(kind: Kind, command: str) -> bool:
    """Whether ``raypair <command>`` runs (or, for train, trains) a file of this kind."""
    return command in (ANY, "validate") or kind.command == command or (command == "train" and kind.trainable)


def read_kind(path: str | Path, field: str, command: str) -> Kind:
    """The kind of the file at ``path``; a kind ``raypair <command>`` does not take is a ConfigError
    naming ``field`` and the command that takes it."""
    kind = kind_of(read_yaml(path, field))
    if not takes(kind, command):
        allowed = [k for k in (KINDS.get(n) for n in KINDS.names()) if takes(k, command)]
        raise ConfigError(field, f"is {kind.words}, not {' or '.join(k.words for k in _ordered(allowed))}; "
                          f"use raypair {kind.command}", str(path))
    return kind


def _ordered(kinds: list[Kind]) -> list[Kind]:
    return sorted(kinds, key=lambda k: (-k.order, k.name))


# ------------------------------------------------------------------------------ raypair's own
@register_kind
class SequentialKind(Kind):
    name, words, command, order = "sequential", "a seeds-until-decided ablation file (sequential:)", "ablate", 5
    options = ("quick", "seeds", "variants")

    def recognises(self, raw: dict[str, Any]) -> bool:
        return "sequential" in raw and ("variants" in raw or "factors" in raw)

    def load(self, path: str | Path, opts: Any) -> Experiment:
        from raypair.experiments.seqkind import load_sequential

        return load_sequential(path, opts)


@register_kind
class AblationKind(Kind):
    name, words, command, order = "ablation", "an ablation file (variants: or factors:)", "ablate", 10
    options = ("quick", "seeds", "variants")

    def recognises(self, raw: dict[str, Any]) -> bool:
        return "variants" in raw or "factors" in raw

    def load(self, path: str | Path, opts: Any) -> Experiment:
        from raypair.experiments.ablation import load_ablation

        return load_ablation(path, opts.overrides, quick=getattr(opts, "quick", False),
                             seeds=getattr(opts, "seeds", None), only=getattr(opts, "variants", None),
                             name=getattr(opts, "name", None), max_concurrent=getattr(opts, "max_concurrent", None))


@register_kind
class SpaceKind(Kind):
    name, words, command, order, trainable = "space", "a search-space file (space:, run: or tune:)", "tune", 20, True

    def recognises(self, raw: dict[str, Any]) -> bool:
        return any(k in raw for k in ("space", "tune", "run", "base"))

    def load(self, path: str | Path, opts: Any) -> Experiment:
        from raypair.experiments.sweep import load_sweep

        return load_sweep(path, opts.overrides, getattr(opts, "num_samples", None), getattr(opts, "name", None))

    def base_raw(self, path: str | Path, overrides: list[str]) -> dict[str, Any]:
        from raypair.experiments.sweep import load_sweep

        return load_sweep(path, overrides, check=False).base_raw


@register_kind
class RunKind(Kind):
    name, words, command, order, trainable = "run", "a run file", "train", 99, True

    def recognises(self, raw: dict[str, Any]) -> bool:
        return True

    def load(self, path: str | Path, opts: Any) -> Experiment:
        return single_run(self.base_raw(path, opts.overrides), getattr(opts, "name", None))

    def base_raw(self, path: str | Path, overrides: list[str]) -> dict[str, Any]:
        return to_plain(load_run(path, overrides))


def single_run(raw: dict[str, Any], name: Optional[str] = None) -> Experiment:
    """One run as an experiment of one trial, named ``name`` or its run's name and a fresh suffix."""
    from raypair.experiments.single import SingleRun

    return SingleRun(name or f"{check_name('name', raw.get('name', 'run'))[:90]}-{uuid.uuid4().hex[:8]}", raw)
