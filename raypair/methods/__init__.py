"""Methods, one file each. Importing this package imports every module beside it, and each
registers its Method in ``METHODS``: adding a method means adding this file and its torch-free
config in ``raypair/config/methods/`` (same module name), which its ``Config`` names."""
import importlib
import pkgutil

from raypair.config.methods import CONFIGS

from raypair.methods.base import METHODS, Method, Mixed, StepOut, build_method, in_chans

for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_") and _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

_unpaired = [n for n in sorted(set(METHODS.names()) | set(CONFIGS.names()))
             if n not in METHODS or n not in CONFIGS or METHODS.get(n).Config is not CONFIGS.get(n)]
if _unpaired:
    raise ImportError(f"method and config registries differ on {_unpaired}: each method in raypair/methods/ "
                      "takes its Config from the module of the same name in raypair/config/methods/")

__all__ = ["METHODS", "Method", "Mixed", "StepOut", "build_method", "in_chans"]
