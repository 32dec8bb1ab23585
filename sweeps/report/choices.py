"""The report's named choices, one registry each: plot kinds, table formats, p-value adjustments.

A registry maps a name to its implementation and a one-line help text. It is the one place the
names are declared: `slsweep table --format`, `plot --kind`, `--adjust` (table, report, confirm)
take their choices, help text and validation from it (`sweeps.report.commands`, `sweeps.cli`), and
`tables.render`, `plots.plot` and `stats.adjust_pvalues` dispatch through it. A built-in's
implementation is named by its "module:attr" path and imported on first use, so this module
imports nothing heavy (no pandas, scipy or matplotlib) and the CLI reads it on every call.

A plug-in adds an entry with the same decorator the built-ins use, before the command runs:

    from sweeps.report.choices import plot_kind

    @plot_kind("my-kind", "what it draws")
    def my_kind(runs, metric=None, by=None): ...   # -> matplotlib Figure (sweeps.report.plots)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sweeps.errors import SlsweepError, did_you_mean

__all__ = ["Choice", "Registry", "PLOT_KINDS", "TABLE_FORMATS", "ADJUSTMENTS", "plot_kind", "table_format"]


@dataclass(frozen=True)
class Choice:
    """One named choice: `target` is the implementation (an object, or a "module:attr" path
    imported by `Registry.get`), `help` its one-line description, `label` how reports name it."""

    name: str
    help: str
    target: Any
    label: str = ""


class Registry:
    """Names -> `Choice`, in declaration order, for the command-line option `flag`.

    Args:
        flag: the option that takes these names (``--kind``), used in error messages.
        what: what one entry is (``plot kind``), used in help and error messages.
    """

    def __init__(self, flag: str, what: str) -> None:
        self.flag, self.what = flag, what
        self._entries: dict[str, Choice] = {}

    def add(self, name: str, help: str, target: Any, label: str = "") -> Choice:
        """Declare `name`; returns its `Choice`.

        Raises:
            ValueError: `name` is empty or already declared with another target.
        """
        if not name or not isinstance(name, str):
            raise ValueError(f"a {self.what} needs a non-empty name, got {name!r}")
        old = self._entries.get(name)
        if old is not None and old.target is not target and old.target != target:
            raise ValueError(f"{self.what} '{name}' is already declared ({old.target!r})")
        self._entries[name] = Choice(name, help, target, label or name)
        return self._entries[name]

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


PLOT_KINDS = Registry("--kind", "plot kind")
"""`slsweep plot --kind`: name -> fn(runs, metric=None, by=None) -> matplotlib Figure."""
TABLE_FORMATS = Registry("--format", "table format")
"""`slsweep table --format`: name -> fn(AblationTable) -> str."""
ADJUSTMENTS = Registry("--adjust", "p-value adjustment")
"""`--adjust`: name -> the `statsmodels.stats.multitest.multipletests` method (None: raw p-values)."""

plot_kind = PLOT_KINDS.register
table_format = TABLE_FORMATS.register

_P, _T = "sweeps.report.plots:", "sweeps.report.tables:"
plot_kind("eta-curve", "metric vs eta per psi shape with CI bands, runs without eta as references")(_P + "eta_curve")
plot_kind("psi-bars", "dot and interval per psi shape (and loss family when it varies)")(_P + "psi_bars")
plot_kind("lambda-curve", "metric vs lambda per psi shape, CI bands")(_P + "lambda_curve")
plot_kind("parallel", "parallel coordinates of all trials: one axis per searched param plus the metric")(
    _P + "parallel")
plot_kind("importance", "Optuna parameter importances (PED-ANOVA) as horizontal bars")(_P + "importance")
plot_kind("learning-curves", "metric per step per group (mean and band over seeds of one configuration)")(
    _P + "learning_curves")

table_format("md", "GitHub Markdown, best means in bold, notes as a list")(_T + "to_markdown")
table_format("latex", "a booktabs tabular, notes as comments")(_T + "to_latex")
table_format("csv", "every statistic at full precision plus <metric>.best columns")(_T + "to_csv")
table_format("html", "a self-contained HTML page")(_T + "to_html_page")

ADJUSTMENTS.add("holm", "Holm-Bonferroni, family-wise error", "holm", label="Holm")
ADJUSTMENTS.add("bh", "Benjamini-Hochberg, false discovery rate", "fdr_bh", label="Benjamini-Hochberg (FDR)")
ADJUSTMENTS.add("none", "raw p-values", None)
