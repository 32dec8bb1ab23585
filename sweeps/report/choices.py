"""The report's named choices, one registry each: plot kinds, table formats, p-value adjustments.

A registry maps a name to its implementation and a one-line help text. It is the one place the
names are read from: `slsweep table --format`, `plot --kind`, `--adjust` (table, report, confirm)
take their choices, help text and validation from it (`sweeps.report.commands`, `sweeps.cli`), and
`tables.render`, `plots.plot` and `stats.adjust_pvalues` dispatch through it.

A built-in plot kind or table format is declared where it is written, with the decorator plug-ins
use (``@plot_kind("eta-curve", "...")`` on its function in `sweeps.report.plots`,
``@table_format("md", "...")`` in `sweeps.report.tables`): adding one is one function in one file.
The CLI reads the names on every call and must not import pandas or matplotlib for it, so a
registry finds its built-ins by reading its module's source (`declared_in`: each decorator's
literal name and help, the function it decorates as a "module:function" target) and imports the
module on first use of an implementation; importing it registers the same entries (the objects
replace their paths).

A plug-in adds an entry with the same decorator, before the command runs:

    from sweeps.report.choices import plot_kind

    @plot_kind("my-kind", "what it draws")
    def my_kind(runs, metric=None, by=None): ...   # -> matplotlib Figure (sweeps.report.plots)
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sweeps.errors import SlsweepError, did_you_mean

__all__ = ["Choice", "Registry", "declared_in", "PLOT_KINDS", "TABLE_FORMATS", "ADJUSTMENTS", "plot_kind", "table_format"]


@dataclass(frozen=True)
class Choice:
    """One named choice: `target` is the implementation (an object, or a "module:attr" path
    imported by `Registry.get`), `help` its one-line description, `label` how reports name it."""

    name: str
    help: str
    target: Any
    label: str = ""


def declared_in(module: str, decorator: str) -> list[tuple[str, str, str, str]]:
    """The entries `module` declares with ``@decorator("name", "help"[, label=...])``, read from
    its source without importing it: (name, help, label, "module:function") in source order.

    Only a decorator at the start of a line (a module-level function) counts; its arguments must
    be string literals.

    Raises:
        ValueError: the module's source cannot be found, or a decorator's arguments are not string
            literals (naming the module and line).
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ValueError(f"cannot read the source of {module!r} to find its @{decorator} entries")
    with open(spec.origin, encoding="utf-8") as fh:
        text = fh.read()
    found = []
    pattern = rf"^@{re.escape(decorator)}\((.*?)\)[ \t]*\n(?:@.*\n)*(?:async[ \t]+)?def[ \t]+(\w+)"
    for m in re.finditer(pattern, text, re.M | re.S):
        line = text.count("\n", 0, m.start()) + 1
        try:
            call = ast.parse(f"f({m.group(1)})", mode="eval").body
            assert isinstance(call, ast.Call)
            args = [ast.literal_eval(a) for a in call.args]
            fields = dict(zip(("name", "help", "label"), args))
            fields.update({str(k.arg): ast.literal_eval(k.value) for k in call.keywords})
            name, help_, label = fields.get("name"), fields.get("help"), fields.get("label", "")
            if not all(isinstance(v, str) for v in (name, help_, label)):
                raise ValueError
        except (SyntaxError, ValueError, AssertionError):
            raise ValueError(f"{spec.origin}:{line}: @{decorator}(...) needs string literals (name, help)") from None
        found.append((name, help_, label, f"{module}:{m.group(2)}"))
    return found


class Registry:
    """Names -> `Choice`, in declaration order, for the command-line option `flag`.

    Args:
        flag: the option that takes these names (``--kind``), used in error messages.
        what: what one entry is (``plot kind``), used in help and error messages.
        builtins: (module, decorator name): the module whose functions declare the built-in
            entries with that decorator (`declared_in`); read on first use of the registry, so
            they come first and in source order, and the module is imported only when one of
            them is called.
    """

    def __init__(self, flag: str, what: str, builtins: tuple[str, str] | None = None) -> None:
        self.flag, self.what = flag, what
        self._builtins = builtins
        self._declared: dict[str, Choice] = {}

    @property
    def _entries(self) -> dict[str, Choice]:
        if self._builtins is not None:  # first use: the built-ins' declarations, read, not imported
            module, decorator = self._builtins
            self._builtins = None
            for name, help_, label, target in declared_in(module, decorator):
                self.add(name, help_, target, label)
        return self._declared

    def add(self, name: str, help: str, target: Any, label: str = "") -> Choice:
        """Declare `name`; returns its `Choice`.

        Raises:
            ValueError: `name` is empty or already declared with another target.
        """
        if not name or not isinstance(name, str):
            raise ValueError(f"a {self.what} needs a non-empty name, got {name!r}")
        entries = self._entries
        old = entries.get(name)
        if old is not None and old.target is not target and old.target != target \
                and old.target != _path_of(target):  # importing a built-in's module replaces its path
            raise ValueError(f"{self.what} '{name}' is already declared ({old.target!r})")
        entries[name] = Choice(name, help, target, label or name)
        return entries[name]

    def register(self, name: str, help: str, label: str = "") -> Callable[[Any], Any]:
        """Decorator form of `add`: ``@PLOT_KINDS.register("my-kind", "what it draws")``; returns
        the object unchanged."""

        def deco(target: Any) -> Any:
            self.add(name, help, target, label)
            return target

        return deco

    def remove(self, name: str) -> None:
        """Forget `name` (a plug-in's tests undo their registration); unknown names are ignored."""
        self._entries.pop(name, None)

    def names(self) -> tuple[str, ...]:
        """The declared names, in declaration order."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def choice(self, name: str) -> Choice:
        """The entry of `name`.

        Raises:
            SlsweepError: unknown name: ``--kind 'x': choose one of a, b; did you mean 'a'?``.
        """
        if name not in self._entries:
            raise SlsweepError(self.unknown(name))
        return self._entries[name]

    def unknown(self, name: str) -> str:
        """The message for a name that is not declared: ``--kind 'x': choose one of a, b``, with
        a did-you-mean when one is close."""
        return f"{self.flag} '{name}': choose one of {', '.join(self._entries)}{did_you_mean(name, self._entries)}"

    def get(self, name: str) -> Any:
        """The implementation of `name`, importing a "module:attr" target on first use.

        Raises:
            SlsweepError: unknown name (see `choice`).
        """
        entry = self.choice(name)
        if isinstance(entry.target, str) and ":" in entry.target:
            module, _, attr = entry.target.partition(":")
            obj = getattr(importlib.import_module(module), attr)
            self._entries[name] = Choice(entry.name, entry.help, obj, entry.label)
            return obj
        return entry.target

    def help_lines(self) -> list[tuple[str, str]]:
        """(name, help) of every entry, for `--help`."""
        return [(c.name, c.help) for c in self._entries.values()]

    def parse(self, value: str) -> str:
        """A command-line value checked against the names (the CLI's option parser).

        Raises:
            ValueError: unknown name: "'x' is not one of 'a', 'b'; did you mean 'a'?" (the
                CLI prints it as one line and exits 2).
        """
        if value in self._entries:
            return value
        raise ValueError(f"{value!r} is not one of {', '.join(map(repr, self._entries))}"
                         f"{did_you_mean(value, self._entries) or '.'}")


def _path_of(obj: Any) -> str | None:
    """ "module:function" of a function or class (what `declared_in` records), else None."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}:{qualname}" if isinstance(module, str) and isinstance(qualname, str) else None


PLOT_KINDS = Registry("--kind", "plot kind", builtins=("sweeps.report.plots", "plot_kind"))
"""`slsweep plot --kind`: name -> fn(runs, metric=None, by=None) -> matplotlib Figure."""
TABLE_FORMATS = Registry("--format", "table format", builtins=("sweeps.report.tables", "table_format"))
"""`slsweep table --format`: name -> fn(AblationTable) -> str."""
ADJUSTMENTS = Registry("--adjust", "p-value adjustment")
"""`--adjust`: name -> the `statsmodels.stats.multitest.multipletests` method (None: raw p-values)."""

plot_kind = PLOT_KINDS.register
table_format = TABLE_FORMATS.register

ADJUSTMENTS.add("holm", "Holm-Bonferroni, family-wise error", "holm", label="Holm")
ADJUSTMENTS.add("bh", "Benjamini-Hochberg, false discovery rate", "fdr_bh", label="Benjamini-Hochberg (FDR)")
ADJUSTMENTS.add("none", "raw p-values", None)
