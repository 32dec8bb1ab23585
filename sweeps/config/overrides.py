"""Command-line overrides of a YAML file: `train.steps=50 search.num_samples=4`.

As in torchtune and Hydra, each override is a dotted key and a YAML value (`lr=1.0e-3` is a float,
`psi=gaussian` a string, `params.eta.choices=[0.1,0.2]` a list, `x=null` None). Overrides are
applied to the file's mapping *before* validation, so an override is checked exactly like the same
value written in the file (unknown keys, ranges, cross-field rules), and an error names the
override instead of a line of the file.
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sweeps.errors import SpecError
from sweeps.config.yamlio import parse_yaml

__all__ = ["FOLLOW_STEPS", "Override", "apply_overrides", "blame_override", "check_against_schema", "follow_steps",
           "follow_scheduler_type", "looks_like_override", "notes_when_valid", "overridden_lines", "parse_overrides",
           "say_followed"]

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Override:
    """One `key=value` override.

    Attributes:
        key: the dotted key (`train.steps`).
        value: the value parsed as YAML (int, float, str, list, dict, bool or None).
        text: the override as typed (`train.steps=50`), for messages and the record.
    """

    key: str
    value: Any
    text: str

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.key.split("."))


def looks_like_override(arg: str) -> bool:
    """Whether a command-line word is `key=value` (a file name never needs an `=` before a dot)."""
    key, sep, _ = arg.partition("=")
    return bool(sep) and bool(key) and "/" not in key


def parse_overrides(items: Sequence[str]) -> list[Override]:
    """Parse `key=value` words; SpecError (file `command line`) for a malformed one."""
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not all(p.strip() for p in key.split(".")):
            raise SpecError("command line", key or "<override>",
                            f"'{item}': expected KEY=VALUE with a dotted key, e.g. train.steps=50")
        value = parse_yaml(raw, f"command line (override {item})").data if raw.strip() else None
        out.append(Override(key=key, value=value, text=item))
    return out


def apply_overrides(data: dict[str, Any], overrides: Sequence[Override], *, source: str) -> dict[str, Any]:
    """A deep copy of `data` with each override set (missing sections are created, so an unknown
    key is reported by validation like the same key in the file). A `train.steps` override brings
    `FOLLOW_STEPS` along (`follow_steps`, said on stderr).

    Raises:
        SpecError: an override descends into a value that is not a mapping (`search_space.x=1`
            when `search_space` is a file name).
    """
    out = copy.deepcopy(data)
    for ov in overrides:
        node: dict[str, Any] = out
        for depth, part in enumerate(ov.parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(ov.parts[: depth + 1])
                raise SpecError(source, ov.key,
                                f"'{where}' is {child!r}, not a section with sub-keys")
            node = child
        node[ov.parts[-1]] = copy.deepcopy(ov.value)
    steps = next((ov.text for ov in overrides if ov.key == "train.steps"), None)
    if steps:
        say_followed(follow_steps(data, out, overrides), steps)
    kind = next((ov.text for ov in overrides if ov.key == "scheduler.type"), None)
    if kind:
        dropped = follow_scheduler_type(out, overrides)
        if dropped:
            _say_once(f"note: {kind} drops the asha-only {', '.join(dropped)} from the file")
    return out


ASHA_ONLY = ("grace_period", "max_t")  # scheduler fields a fifo scheduler refuses


def follow_scheduler_type(data: dict[str, Any], overrides: Sequence[Override]) -> list[str]:
    """A `scheduler.type=fifo` override drops the file's asha-only fields (`ASHA_ONLY`) unless an
    override sets them too (which validation then refuses); edits `data` in place and returns one
    `field value` per field dropped."""
    sched = data.get("scheduler")
    if not isinstance(sched, dict) or sched.get("type") != "fifo":
        return []
    changes = []
    for name in ASHA_ONLY:
        if name in sched and not any(_covers(ov.key, f"scheduler.{name}") and ov.key != "scheduler.type"
                                     for ov in overrides):
            changes.append(f"scheduler.{name} {sched.pop(name)}")
    return changes


# Fields that follow a shorter `train.steps` given as an override, unless an override sets them too:
# evaluation and the scheduler's budget are cut to the steps, the warmup keeps its share of them.
FOLLOW_STEPS = (("train.eval_every", "cut"), ("train.warmup_steps", "share"),
                ("scheduler.max_t", "cut"), ("scheduler.grace_period", "cut"))
# A longer `train.steps` override also raises this one when the file set it to its whole budget
# (train.steps): ASHA stops every trial at max_t, so 300 of 900 steps would cut every trial short.
UP_WITH_STEPS = "scheduler.max_t"
_SAID: set[str] = set()
_PENDING: list[list[str]] = []  # notes held by the open `notes_when_valid` blocks, innermost last


def follow_steps(original: dict[str, Any], data: dict[str, Any], overrides: Sequence[Override]) -> list[str]:
    """Bring the fields of `FOLLOW_STEPS` along when an override sets `train.steps` below them
    (`slsweep trial counting train.steps=50` on a file with eval_every 100 would be refused
    otherwise), and `UP_WITH_STEPS` up when it was the file's `train.steps`; edits `data` in place
    and returns one `field old -> new` per change. Values not given in the file are the config's
    defaults (`TrainConfig`); an unset scheduler field follows the steps by itself."""
    if not any(ov.key == "train.steps" for ov in overrides):
        return []
    train = data.get("train")
    steps = train.get("steps") if isinstance(train, dict) else None
    if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
        return []  # validation reports it
    before = original.get("train") if isinstance(original.get("train"), dict) else {}
    from sweeps.config.trial_config import TrainConfig

    old_steps = before.get("steps", TrainConfig.model_fields["steps"].default)
    changes = []
    for field, how in FOLLOW_STEPS:
        if any(ov.key != "train.steps" and _covers(ov.key, field) for ov in overrides):
            continue  # the user chose it
        section, name = field.split(".")
        node = data.get(section)
        if node is not None and not isinstance(node, dict):
            continue
        default = TrainConfig.model_fields[name].default if section == "train" else None
        value = (node or {}).get(name, default)
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        if field == UP_WITH_STEPS and value == old_steps and steps > value:  # the file's whole budget
            data.setdefault(section, {})[name] = steps
            changes.append(f"{field} {value} -> {steps}")
            continue
        if value <= steps:
            continue
        new = steps if how == "cut" or not isinstance(old_steps, int) or old_steps <= 0 else \
            min(steps, value * steps // old_steps)
        data.setdefault(section, {})[name] = new
        changes.append(f"{field} {value} -> {new}")
    return changes


def say_followed(changes: list[str], steps_override: str) -> None:
    """Print (once per process) which fields followed the steps override, on stderr."""
    if changes:
        _say_once(f"note: {steps_override} brings along {', '.join(changes)} (override them to choose)")


def _say_once(line: str) -> None:
    if line not in _SAID:
        _SAID.add(line)
        if _PENDING:
            _PENDING[-1].append(line)
        else:
            _print(line)


def _print(line: str) -> None:
    import sys

    print(line, file=sys.stderr)


@contextlib.contextmanager
def notes_when_valid() -> Iterator[None]:
    """The notes overrides say inside the block (`say_followed`, a dropped scheduler field) are
    printed when the block ends without an error, and dropped when it raises: a refused input gets
    one line, its error. Blocks nest (the outermost one prints)."""
    _PENDING.append([])
    try:
        yield
    except BaseException:
        _SAID.difference_update(_PENDING.pop())  # not said: a later valid load says them
        raise
    lines = _PENDING.pop()
    if _PENDING:
        _PENDING[-1].extend(lines)
    else:
        for line in lines:
            _print(line)


def _covers(key: str, field: str) -> bool:
    """Whether an override of `key` set (part of) the value at dotted `field`, or a parent of it."""
    return (field == key or field.startswith(key + ".") or field.startswith(key + "[")
            or key.startswith(field + "."))


def overridden_lines(line_of: Callable[[Loc], int | None], overrides: Sequence[Override]
                     ) -> Callable[[Loc], int | None]:
    """`line_of` that knows no line for a location an override set (its line in the file would
    point at the value the override replaced)."""
    keys = [ov.key for ov in overrides]

    def lookup(loc: Loc) -> int | None:
        field = ".".join(str(p) for p in loc)
        return None if any(_covers(k, field) for k in keys) else line_of(loc)

    return lookup


def blame_override(err: SpecError, overrides: Sequence[Override], *, mentioned: bool = True) -> SpecError:
    """`err` re-attributed to the override that set its field, if one did; else (`mentioned`) to an
    override whose field the message names (a rule between fields of the spec: `resources.workers=3`
    makes the file's `train.batch_size: 8` wrong, and the error is the batch size's, "must divide
    evenly among resources.workers (3)"); else `err`."""
    said = [ov for ov in reversed(overrides) if _covers(ov.key, err.field)]
    said = said or [ov for ov in reversed(overrides) if mentioned and re.search(rf"(?<![\w.]){re.escape(ov.key)}(?![\w])", err.message)]
    if not said:
        return err
    message = err.message
    if err.line is not None and _covers(said[0].key, err.field):  # the file's line holds the value replaced
        message = message.removesuffix(f" (line {err.line})")
    return SpecError(f"{err.file} (override {said[0].text})", err.field, message)


def check_against_schema(overrides: Sequence[Override], model: type, *, source: str) -> None:
    """Check overrides against a pydantic model's schema alone, before the mapping they apply to
    is known (`slsweep confirm` reads its spec from the store, seconds later): each key must name
    fields of `model` as far as they are sections with fixed keys, and a value for a field
    without validators of its own (`train.steps=-3`) must fit the field's type and bounds. What
    the schema cannot tell (free-form sections, cross-field rules) is left to full validation.

    Raises:
        SpecError: file `source` with "(override KEY=VALUE)", the field, and an unknown key (with
            "did you mean" and the allowed keys) or the value's problem.
    """
    from typing import Annotated

    from pydantic import BaseModel, TypeAdapter, ValidationError

    from sweeps.errors import did_you_mean, spec_error_from_validation

    for ov in overrides:
        current: Any = model
        for depth, part in enumerate(ov.parts):
            if not (isinstance(current, type) and issubclass(current, BaseModel)) \
                    or current.model_config.get("extra") != "forbid":
                break  # a free-form value (a mapping, a union, a file name): full validation decides
            info = current.model_fields.get(part)
            if info is None:
                names = sorted(current.model_fields)
                raise SpecError(f"{source} (override {ov.text})", ".".join(ov.parts[: depth + 1]),
                                f"unknown key{did_you_mean(part, names)} (allowed: {', '.join(names)})")
            if depth == len(ov.parts) - 1 and not _has_own_validators(current, part):
                try:
                    kind = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
                    TypeAdapter(kind).validate_python(ov.value)
                except ValidationError as exc:
                    err = spec_error_from_validation(exc, file=f"{source} (override {ov.text})", prefix=ov.parts)
                    raise err from None
            current = info.annotation


def _has_own_validators(model: type, field: str) -> bool:
    """Whether a field's value goes through validators of `model` (a field validator naming it or
    a model validator that sees raw input), so its annotation alone cannot judge it."""
    decorators = model.__pydantic_decorators__  # type: ignore[attr-defined]
    if any(d.info.mode in ("before", "wrap") for d in decorators.model_validators.values()):
        return True
    return any(field in d.info.fields or "*" in d.info.fields for d in decorators.field_validators.values())
