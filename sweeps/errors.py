"""User-facing errors: one clear message naming the file and the field.

`SlsweepError` is the base of every error a user can cause (the CLI prints it and exits with
status 2, no traceback). `SpecError` is a bad value in a YAML file or override: `str(e)` is
`"{file}: {field}: {message}"` with `field` a dotted path such as `search.num_samples` or
`params.eta.low`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = [
    "FieldValueError",
    "SlsweepError",
    "SpecError",
    "SweepFailed",
    "did_you_mean",
    "dotted",
    "pydantic_message",
    "runtime_failure",
    "spec_error_from_validation",
]


class SlsweepError(Exception):
    """Base class for errors caused by user input (bad files, arguments, environment)."""


class SweepFailed(Exception):
    """The work failed (not the input): a full disk, a store unreachable too long, every trial
    failed. `str(e)` is one line saying what happened and what to do; the CLI prints it and exits
    with status 1, no traceback."""


class SpecError(SlsweepError):
    """A bad value in a spec, search space, trial config or override.

    Attributes:
        file: the file (or other source such as ``--set``) the value came from.
        field: dotted path of the offending field, e.g. ``params.eta.low``; ``<file>`` when the
            file itself is the problem (missing, unreadable), and then the message names the file only.
        message: what is wrong, ending with ``(line N)`` when the line is known.
        line: 1-based line in `file`, or None.
    """

    def __init__(self, file: str, field: str, message: str, *, line: int | None = None) -> None:
        self.file = str(file)
        self.field = field or "<root>"
        self.line = line
        self.message = f"{message} (line {line})" if line is not None else message
        # a problem with the file itself (missing, unreadable) names the file only
        where = self.file if self.field == "<file>" else f"{self.file}: {self.field}"
        super().__init__(f"{where}: {self.message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the exception picklable (Ray ships errors between processes).
        return (_rebuild_spec_error, (self.file, self.field, self.message, self.line))


def _rebuild_spec_error(file: str, field: str, message: str, line: int | None) -> SpecError:
    err = SpecError(file, field, message)
    err.line = line
    return err


class FieldValueError(ValueError):
    """Raised inside a pydantic model validator to blame a specific sub-field.

    Pydantic reports model-level validator errors at the model's own location; the translator in
    `spec_error_from_validation` appends `field` (dotted, relative to the model) to that location.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(message)


# Libraries whose errors can still escape at run time (a Ray node lost, an MLflow server gone, a
# peft module mismatch), by top-level module; OSError stands for the OS (disk full, permissions).
_RUNTIME_SOURCES = {"ray": "Ray", "mlflow": "MLflow", "peft": "peft", "optuna": "Optuna",
                    "sqlalchemy": "the tracking database", "transformers": "transformers"}


def runtime_failure(exc: BaseException) -> str | None:
    """One line for an error from Ray, MLflow, peft, Optuna, SQLAlchemy, transformers or the OS
    that escaped at run time (`Ray failed: RayTaskError: ...`), or None for any other error
    (a bug: the CLI shows its traceback). The CLI prints it and exits 1."""
    top = type(exc).__module__.split(".")[0]
    source = _RUNTIME_SOURCES.get(top) or ("the OS" if isinstance(exc, OSError) else None)
    if source is None:
        return None
    text = " ".join(str(exc).split())
    return f"{source} failed: {type(exc).__name__}: {text[:400] + ('...' if len(text) > 400 else '')}"


def did_you_mean(name: str, known: Sequence[str]) -> str:
    """`; did you mean 'counting'?` for the known name closest to `name` (difflib), else ''."""
    close = difflib.get_close_matches(str(name).removesuffix(".yaml"), [str(k) for k in known], n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


_PYDANTIC_PREFIX = re.compile(r"(^|: )(?:Value error|Assertion failed), ")


def pydantic_message(text: str) -> str:
    """`text` without pydantic's "Value error, " / "Assertion failed, " boilerplate, at its start or
    after a "...: " lead-in (typer validates option values with pydantic and click quotes the
    message: "Invalid value for '--kind': Value error, 'x' is not one of ..."). The one place a
    pydantic message is made fit to show."""
    return _PYDANTIC_PREFIX.sub(r"\1", str(text))


def dotted(loc: Sequence[str | int]) -> str:
    """Format a location tuple as a dotted path: ``("grid", "eta", 2)`` -> ``grid.eta[2]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _model_at(model: type[BaseModel] | None, loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The pydantic model class reached by following `loc` from `model`, if any."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(str(part))
        if info is None:
            return None
        current = info.annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _input_names(model: type[BaseModel]) -> set[str]:
    """The keys `model` accepts: its fields' names, or each spelling of a field with alias choices."""
    from pydantic import AliasChoices

    names: set[str] = set()
    for name, info in model.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(c for c in alias.choices if isinstance(c, str))
        else:
            names.add(alias if isinstance(alias, str) else name)
    return names


def spec_error_from_validation(
    exc: ValidationError,
    *,
    file: str,
    prefix: Sequence[str | int] = (),
    model: type[BaseModel] | None = None,
    line_of: Callable[[tuple[str | int, ...]], int | None] | None = None,
    hints: dict[str, str] | None = None,
) -> SpecError:
    """Turn a pydantic ValidationError into ONE SpecError (the first error; others counted).

    Args:
        exc: the validation error.
        file: the file name to blame.
        prefix: location of the validated mapping inside the file (e.g. ``("search_space",)``).
        model: the validated model class, used to list allowed keys for unknown ones.
        line_of: maps a location tuple (including `prefix`) to a 1-based line number.
        hints: extra advice for unknown keys, by dotted key (e.g. ``{"seed": "use search.seeds"}``).
    """
    errors = exc.errors(include_url=False)
    # A misspelt key also makes the real one "missing": report the unknown key, it explains both.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc: tuple[str | int, ...] = tuple(first["loc"])
    ctx = first.get("ctx") or {}
    inner = ctx.get("error")
    kind = first["type"]
    if isinstance(inner, FieldValueError):
        loc = loc + tuple(int(p) if p.isdigit() else p for p in inner.field.split("."))
        message = inner.message
    elif kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _model_at(model, loc[:-1])
        message = "unknown key"
        hint = (hints or {}).get(dotted(loc))
        if hint:
            message += f"; {hint}"
        elif allowed is not None:
            names = sorted(_input_names(allowed))
            message += did_you_mean(key, names)
            message += f" (allowed: {', '.join(names)})"
    elif kind == "missing":
        message = "required field is missing"
    else:
        message = pydantic_message(str(first["msg"]))
        value = first.get("input")
        if not isinstance(value, dict | list) and kind not in {"model_type", "dict_type", "value_error"}:
            message += f" (got {_short(value)})"
    if len(errors) > 1:
        more = len(errors) - 1
        message += f" [and {more} more error{'s' if more > 1 else ''}]"
    full = tuple(prefix) + loc
    line = line_of(full) if line_of is not None else None
    return SpecError(file, dotted(full), message, line=line)


def one_line(text: str) -> str:
    """`text` with every run of whitespace (newlines included) made one space."""
    return " ".join(str(text).split())
