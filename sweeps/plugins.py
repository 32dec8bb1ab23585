"""User plug-ins by dotted path: `package.module:attribute` for a task, a loss family or a psi shape.

Importing a plug-in runs its code, so a spec that names one is refused (one line naming the
field, exit 2, nothing imported) unless the user allows plug-ins for this process:
`--allow-plugins` on the command line or `SLSWEEP_ALLOW_PLUGINS=1` in the environment, never a
spec field (`ALLOW_ENV`, checked by `load_object`, the one place plug-ins are imported).

When allowed, the driver imports a plug-in while it validates the spec (so a typo is one error
naming the field, before anything is created) and ships the plug-in's top-level package to Ray
workers through the runtime environment (`py_modules`, with `SLSWEEP_ALLOW_PLUGINS=1` in its
`env_vars`), as it ships the project's own code; workers import it again when they rebuild the
trial config. Packages are looked up on `sys.path`, then in the current folder and the folders of
the spec files being loaded (`search_dirs`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["ALLOW_ENV", "add_search_dir", "allow_plugins", "is_dotted", "load_object", "plugin_roots",
           "plugins_allowed"]

ALLOW_ENV = "SLSWEEP_ALLOW_PLUGINS"

_SEARCH_DIRS: list[str] = []


def is_dotted(value: Any) -> bool:
    """Whether `value` names a plug-in ("package.module:attribute")."""
    return isinstance(value, str) and value.count(":") == 1 and all(value.split(":"))


def add_search_dir(folder: str | Path) -> None:
    """Also look for plug-in packages in `folder` (the spec's folder; called by the spec loader)."""
    path = str(Path(folder).resolve())
    if path not in _SEARCH_DIRS:
        _SEARCH_DIRS.append(path)


def plugins_allowed() -> bool:
    """Whether this process may import plug-ins: `$SLSWEEP_ALLOW_PLUGINS` is 1/true/yes."""
    return os.environ.get(ALLOW_ENV, "").strip().lower() in ("1", "true", "yes")


def allow_plugins() -> None:
    """Allow plug-ins in this process and the processes it starts (what `--allow-plugins` does)."""
    os.environ[ALLOW_ENV] = "1"


def load_object(dotted: str, *, what: str) -> Any:
    """The attribute `attr` of module `module` for "module:attr".

    Raises:
        ValueError: plug-ins are not allowed (`plugins_allowed`; nothing is imported), malformed
            path, module not importable, or no such attribute (names `what`).
    """
    if not is_dotted(dotted):
        raise ValueError(f"{what} plug-in {dotted!r}: expected 'package.module:attribute'")
    if not plugins_allowed():
        raise ValueError(f"{what} plug-in {dotted!r} not imported: a plug-in runs its own code; allow "
                         f"plug-ins with --allow-plugins or {ALLOW_ENV}=1 (README: Security)")
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
        if not is_dotted(name) or not plugins_allowed():
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
