"""Data sources, one file each. Importing this package imports every module beside it, and each
registers its :class:`Source` in ``SOURCES``: adding a source means adding one file."""
import importlib
import pkgutil

from raypair.data.sources.base import (SOURCES, Located, Raw, Source, cache_dir, data_root, forget, load_raw,
                                       register, resolve, shared_rows)

for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_") and _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["SOURCES", "Located", "Raw", "Source", "cache_dir", "data_root", "forget", "load_raw", "register",
           "resolve", "shared_rows"]
