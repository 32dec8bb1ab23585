"""The numerical tasks and their one registry.

`TASKS` maps a task name to its shared `Task` object; each task declares its name, primary metric
and every metric's direction on its class, and config, spec, reports and trials read them from
here (`get_task`, `task_metric_modes`). A built-in task is found, not listed: every module of this
package is imported once (`pkgutil`) and each concrete `Task` subclass a module defines with its own
`name` is registered (`builtin_tasks`), so adding one is its module alone. A user's task enters by dotted path (`task.name: mypkg.tasks:MyTask`, a `Task`
subclass or instance), imported and registered under that name on first use, on the driver and on
Ray workers alike.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterable

from .base import DataError, Example, Task
from .chart import ChartTask
from .counting import CountingTask
from .grounding import GroundingTask
from .numeric_vqa import NumericVQATask


def builtin_tasks(package: str, paths: Iterable[str]) -> tuple[type[Task], ...]:
    """The tasks a package defines: each concrete `Task` subclass that one of its modules (found by
    `pkgutil.iter_modules(paths)`, imported as ``package.module``, in name order) defines with its
    own `name`; a class a module only imports, or one without a `name` of its own, is not one.

    Raises:
        ImportError: a module of the package cannot be imported (its own error).
    """
    found: list[type[Task]] = []
    for info in sorted(pkgutil.iter_modules(list(paths)), key=lambda m: m.name):
        module = importlib.import_module(f"{package}.{info.name}")
        for obj in vars(module).values():
            if (isinstance(obj, type) and issubclass(obj, Task) and obj.__module__ == module.__name__
                    and not inspect.isabstract(obj) and obj.__dict__.get("name")):
                found.append(obj)
    return tuple(found)


_BUILTINS: tuple[type[Task], ...] = builtin_tasks(__name__, __path__)

TASKS: dict[str, Task] = {cls.name: cls() for cls in _BUILTINS}


def register_task(task: Task | type[Task], name: str | None = None) -> Task:
    """Add a task (an instance or a `Task` subclass) under `name` (default: its own `name`).

    Raises:
        ValueError: not a Task, no metadata (name, primary_metric, metric_modes), or a name taken
            by another task.
    """
    obj = task() if isinstance(task, type) and issubclass(task, Task) else task
    if not isinstance(obj, Task):
        raise ValueError(f"a task must be a sweeps.tasks.Task subclass or instance, got {type(task).__name__}")
    for attr in ("name", "primary_metric", "metric_modes"):
        if not getattr(obj, attr, None):
            raise ValueError(f"task {type(obj).__name__} does not set {attr!r}")
    if obj.primary_metric not in obj.metric_modes or "unparseable" not in obj.metric_modes:
        raise ValueError(f"task {type(obj).__name__}: metric_modes must hold primary_metric and 'unparseable'")
    if any(mode not in ("max", "min") for mode in obj.metric_modes.values()):
        raise ValueError(f"task {type(obj).__name__}: each metric's mode must be 'max' or 'min'")
    key = name or obj.name
    if key in TASKS and type(TASKS[key]) is not type(obj):
        raise ValueError(f"task name {key!r} is taken by {type(TASKS[key]).__name__}")
    TASKS.setdefault(key, obj)
    return TASKS[key]


def get_task(name: str) -> Task:
    """The task called `name`, or the plug-in at dotted path `pkg.module:Attr` (imported once).

    Raises:
        ValueError: naming the task and the known ones (or why the plug-in cannot be loaded).
    """
    if isinstance(name, str) and name in TASKS:
        return TASKS[name]
    if isinstance(name, str) and ":" in name:
        from sweeps.plugins import load_object

        return register_task(load_object(name, what="task"), name)
    builtins = sorted(cls.name for cls in _BUILTINS)  # plug-ins registered so far are named by path
    from sweeps.errors import did_you_mean

    raise ValueError(f"unknown task {name!r}{did_you_mean(name, builtins)} (known: {', '.join(builtins)}, or a plug-in "
                     "'package.module:TaskClass')")


def task_metric_modes(name: str) -> dict[str, str]:
    """Each metric of task `name` and whether higher ("max") or lower ("min") is better."""
    return dict(get_task(name).metric_modes)


def all_metric_names() -> tuple[str, ...]:
    """Every metric of the registered tasks, primary metrics first (for reports)."""
    primaries = [t.primary_metric for t in TASKS.values()]
    rest = [m for t in TASKS.values() for m in t.metric_modes]
    return tuple(dict.fromkeys(primaries + rest))


__all__ = ["TASKS", "ChartTask", "CountingTask", "DataError", "Example", "GroundingTask", "NumericVQATask", "Task",
           "all_metric_names", "builtin_tasks", "get_task", "register_task", "task_metric_modes"]
