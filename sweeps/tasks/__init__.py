"""The numerical tasks: counting, grounding, chart QA (synthetic data, real-format loaders,
answer parsing, metrics). `get_task(name)` returns the shared task object."""

from __future__ import annotations

from .base import DataError, Example, Task
from .chart import ChartTask
from .counting import CountingTask
from .grounding import GroundingTask

TASKS: dict[str, Task] = {t.name: t for t in (CountingTask(), GroundingTask(), ChartTask())}


def get_task(name: str) -> Task:
    """The task called `name`; ValueError naming it and the known tasks otherwise."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r} (known: {', '.join(sorted(TASKS))})") from None


__all__ = ["TASKS", "ChartTask", "CountingTask", "DataError", "Example", "GroundingTask", "Task", "get_task"]
