"""Methods, one file each. Importing this package registers every method in ``METHODS``."""
from raypair.methods.base import METHODS, Method, StepOut, build_method
from raypair.methods import erm  # noqa: F401  (registers)

__all__ = ["METHODS", "Method", "StepOut", "build_method"]
