"""Methods, one file each. Importing this package imports every module beside it, and each
registers its Method in ``METHODS``: adding a method means adding one file."""
import importlib
import pkgutil

from raypair.methods.base import METHODS, Method, Mixed, StepOut, build_method, in_chans

for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_") and _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["METHODS", "Method", "Mixed", "StepOut", "build_method", "in_chans"]
