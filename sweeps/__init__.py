"""slsweep service: sweep specs, search spaces, trials, Ray Tune runner, MLflow tracking, reports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__version__ = "0.1.0"


def lazy_exports(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module-level `__getattr__` (PEP 562) for `package`: the name `n` is imported from the
    submodule `package.where[n]` on first use and kept; AttributeError for any other name. Lets a
    package export names whose modules are heavy (torch, pandas) without importing them."""
    import importlib
    import sys

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
