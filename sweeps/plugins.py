"""User plug-ins by dotted path: `package.module:attribute` for a task, a loss family or a psi shape.

The driver imports a plug-in while it validates the spec (so a typo is one error naming the
field, before anything is created) and ships the plug-in's top-level package to Ray workers
through the runtime environment (`py_modules`), as it ships the project's own code; workers import
it again when they rebuild the trial config. Packages are looked up on `sys.path`, then in the
current folder and the folders of the spec files being loaded (`search_dirs`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["is_dotted", "load_object", "plugin_roots", "add_search_dir"]

_SEARCH_DIRS: list[str] = []


def is_dotted(value: Any) -> bool:
    """Whether `value` names a plug-in ("package.module:attribute")."""
    return isinstance(value, str) and value.count(":") == 1 and all(value.split(":"))


def add_search_dir(folder: str | Path) -> None:
    """Also look for plug-in packages in `folder` (the spec's folder; called by the spec loader)."""
    path = str(Path(folder).resolve())
    if path not in _SEARCH_DIRS:
        _SEARCH_DIRS.append(path)


def load_object(dotted: str, *, what: str) -> Any:
    """The attribute `attr` of module `module` for "module:attr".

    Raises:
        ValueError: malformed path, module not importable, or no such attribute (names `what`).
    """
    if not is_dotted(dotted):
        raise ValueError(f"{what} plug-in {dotted!r}: expected 'package.module:attribute'")
    module_name, attr = dotted.split(":")
    try:
        module = _import(module_name)
    except ImportError as exc:
        raise ValueError(f"{what} plug-in {dotted!r}: cannot import {module_name!r} ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - the user's module raised while importing
        raise ValueError(f"{what} plug-in {dotted!r}: importing {module_name!r} failed: "
                         f"{type(exc).__name__}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"{what} plug-in {dotted!r}: module {module_name!r} has no attribute {attr!r}") from None


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        top = module_name.split(".")[0]
        extra = [d for d in (*_SEARCH_DIRS, str(Path.cwd())) if d not in sys.path]
        if exc.name != top or not extra:
            raise
        sys.path.extend(extra)  # a package beside the spec or in the current folder
        return importlib.import_module(module_name)


def plugin_roots(names: Iterable[Any]) -> list[str]:
    """The folders (packages) or files (single modules) of the top-level packages of the plug-ins
    among `names`, for the Ray runtime environment's `py_modules`."""
    roots: dict[str, None] = {}
    for name in names:
        if not is_dotted(name):
            continue
        top = name.split(":")[0].split(".")[0]
        _import(top)
        spec = importlib.util.find_spec(top)
        if spec is None:
            continue
        if spec.submodule_search_locations:
            roots[str(Path(list(spec.submodule_search_locations)[0]).resolve())] = None
        elif spec.origin:
            roots[str(Path(spec.origin).resolve())] = None
    return list(roots)
