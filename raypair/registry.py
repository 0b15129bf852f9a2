"""One tiny generic registry: methods, data sources and the like register by name.

Anchor: torchvision ``torchvision/models/_api.py`` (``register_model`` / ``get_model``):
duplicates are refused and an unknown name lists the valid ones.

A registry with a ``group`` also holds the plug-ins of other packages: the Python entry points of
that group (``[project.entry-points."raypair.methods"]`` in a plug-in's pyproject.toml) are loaded
the first time the registry is asked for a name it lacks or for its names, never before, so a
command that needs no plug-in imports none. Loading an entry point imports its module (which may
register itself, as raypair's own modules do); an object not registered that way is registered
under the entry point's name. A plug-in that fails to load is a one-line ``PluginError`` naming it.
"""
from __future__ import annotations

from typing import Any, Callable, Generic, Optional, TypeVar

T = TypeVar("T")


class PluginError(ImportError):
    """A plug-in (an entry point) that could not be loaded: one line naming it and why."""


class Registry(Generic[T]):
    def __init__(self, kind: str, group: Optional[str] = None,
                 adopt: Optional[Callable[[str, Any], None]] = None) -> None:
        self.kind = kind
        self.group = group  # the entry-point group of plug-ins, if any
        self._adopt = adopt  # what to do with a loaded entry point (default: register it)
        self._items: dict[str, T] = {}
        self._plugged = group is None

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def plug_in(self) -> None:
        """Load the entry points of ``group`` (once)."""
        if self._plugged:
            return
        self._plugged = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.group):
            try:
                obj = ep.load()
                if self._adopt is not None:
                    self._adopt(ep.name, obj)
                elif ep.name not in self._items:
                    self.register(ep.name)(obj)
            except Exception as e:  # anything a broken plug-in raises, as one line
                self._plugged = False  # (asked again, it fails again rather than half-loaded)
                why = " ".join(f"{type(e).__name__}: {e}".split())
                raise PluginError(f"plug-in {ep.name} = {ep.value} (entry point group {self.group}) "
                                  f"failed to load: {why}") from None

    def get(self, name: str) -> T:
        if name not in self._items:
            self.plug_in()
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r} (valid: {', '.join(self.names())})"
            ) from None

    def names(self) -> list[str]:
        self.plug_in()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            self.plug_in()
        return name in self._items
