"""Each method's config, one module per method, named as the method's module in
``raypair/methods/`` (which holds its torch code and takes its ``Config`` from here). Importing
this package imports every module beside it, and each registers its config in ``CONFIGS``; none
imports torch, so a file is validated (``raypair validate``) without it. ``raypair/methods/``
refuses to load when the two registries name different methods."""
import importlib
import pkgutil

from raypair.config.method import MethodConfig
from raypair.registry import Registry

# + the plug-ins: each entry point of ``raypair.methods`` names a method's (torch-free) config class
CONFIGS: Registry[type[MethodConfig]] = Registry("method", group="raypair.methods")

for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["CONFIGS"]
