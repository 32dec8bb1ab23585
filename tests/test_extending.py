"""Extending (issue 21): a plot kind and a table format are one registry entry each
(`sweeps.report.choices`). Registered as a plug-in would, they are offered by `slsweep plot` /
`slsweep table` (choices, help, validation) and drawn / rendered by them with no other edit; a
built-in one is a decorated function in `plots.py` / `tables.py`, and a built-in task its module
under `sweeps/tasks/`, found by the package: one file each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from report_fixtures import Store, report_store  # noqa: F401  (fixture)
from sweeps.cli import app
from sweeps.report import choices
from sweeps.report.choices import ADJUSTMENTS, PLOT_KINDS, TABLE_FORMATS, plot_kind, table_format

KIND, FMT = "trial-count", "tsv-counts"


def trial_count(runs, metric=None, by=None):  # a plug-in's plot kind: (runs, metric, by) -> Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from sweeps.report.plots import _set_caption

    fig = Figure()
    FigureCanvasAgg(fig)
    fig.add_subplot().bar(["trials"], [len(runs.trials)])
    return _set_caption(fig, f"{len(runs.trials)} trials")


def tsv_counts(table):  # a plug-in's table format: AblationTable -> str
    return "\n".join(["group\tn"] + [f"{i}\t{n}" for i, n in enumerate(table.rows[f"{table.metrics[0]}.n"])]) + "\n"


@pytest.fixture
def plugin() -> Iterator[None]:
    plot_kind(KIND, "bar of the number of trials (a plug-in)")(trial_count)
    table_format(FMT, "group and n, tab-separated (a plug-in)")(tsv_counts)
    try:
        yield
    finally:
        PLOT_KINDS.remove(KIND)
        TABLE_FORMATS.remove(FMT)


def test_a_registered_kind_and_format_are_offered_by_the_cli(plugin: None) -> None:
    runner = CliRunner()
    plot_help = runner.invoke(app, ["plot", "--help"])
    assert plot_help.exit_code == 0, plot_help.output
    assert KIND in plot_help.output and "bar of the number of trials" in " ".join(plot_help.output.split())
    table_help = runner.invoke(app, ["table", "--help"])
    assert table_help.exit_code == 0 and FMT in table_help.output, table_help.output
    for name in PLOT_KINDS.names():  # the built-ins too: every name in --help comes from the registry
        assert name in plot_help.output


def test_the_cli_draws_and_renders_a_registered_kind_and_format(plugin: None, report_store: Store,
                                                                 tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "count.png"
    res = runner.invoke(app, ["plot", "--kind", KIND, "--runs-dir", str(report_store.runs_dir), "-o", str(out),
                              "--no-log"])
    assert res.exit_code == 0, res.output
    assert out.stat().st_size > 0 and "caption: 21 trials" in res.output
    res = runner.invoke(app, ["table", "--format", FMT, "--runs-dir", str(report_store.runs_dir)])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("group\tn\n") and len(res.stdout.splitlines()) > 2


def test_an_unregistered_name_is_refused_with_the_names_and_a_suggestion() -> None:
    res = CliRunner().invoke(app, ["plot", "--kind", "psi-bar"])
    assert res.exit_code == 2
    assert "did you mean 'psi-bars'?" in res.output and "'learning-curves'" in res.output
    with pytest.raises(ValueError, match="'sidak' is not one of 'holm', 'bh', 'none'"):
        ADJUSTMENTS.parse("sidak")


def test_a_name_is_declared_once() -> None:
    with pytest.raises(ValueError, match="already declared"):
        choices.TABLE_FORMATS.add("md", "another markdown", object())


# -- a built-in plot kind, table format or task is one file ----------------------------------------------

EXTRA_FIGURES = '''
from sweeps.report.choices import plot_kind, table_format


@plot_kind("trial-count-builtin", "bar of the number of trials")
def trial_count(runs, metric=None, by=None):
    raise NotImplementedError


@table_format(
    "tsv-builtin",
    "tab-separated (one row a group)",
)
def tsv(table):
    return "group\\tn\\n"
'''


def test_a_built_in_kind_and_format_are_found_in_their_module_without_importing_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """How `plots.py` and `tables.py` declare their built-ins: a decorated function in one module
    is all a registry needs; its names and help are read from the source (the CLI lists them
    without importing pandas or matplotlib) and the module is imported on first use."""
    import sys

    from sweeps.report.choices import Registry

    (tmp_path / "extra_figures.py").write_text(EXTRA_FIGURES, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    kinds = Registry("--kind", "plot kind", builtins=("extra_figures", "plot_kind"))
    formats = Registry("--format", "table format", builtins=("extra_figures", "table_format"))
    try:
        assert kinds.help_lines() == [("trial-count-builtin", "bar of the number of trials")]
        assert formats.help_lines() == [("tsv-builtin", "tab-separated (one row a group)")]
        assert "extra_figures" not in sys.modules
        render = formats.get("tsv-builtin")  # imports the module: its decorators register in the global registries
        assert "extra_figures" in sys.modules and render(None) == "group\tn\n"
        assert kinds.get("trial-count-builtin") is sys.modules["extra_figures"].trial_count
        assert PLOT_KINDS.get("trial-count-builtin") is kinds.get("trial-count-builtin")
    finally:
        PLOT_KINDS.remove("trial-count-builtin")
        TABLE_FORMATS.remove("tsv-builtin")
        sys.modules.pop("extra_figures", None)


def test_the_built_in_kinds_and_formats_are_the_decorated_functions_of_plots_and_tables() -> None:
    from sweeps.report import plots, tables

    for module, decorator, registry in ((plots, "plot_kind", PLOT_KINDS), (tables, "table_format", TABLE_FORMATS)):
        declared = choices.declared_in(module.__name__, decorator)
        assert len(declared) >= 4
        assert [name for name, *_ in declared] == list(registry.names())[:len(declared)]
        for name, help_, _, target in declared:
            assert registry.get(name) is getattr(module, target.partition(":")[2])
            assert registry.choice(name).help == help_


def test_reading_the_built_in_names_imports_no_pandas_or_matplotlib() -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom sweeps.report.choices import PLOT_KINDS, TABLE_FORMATS\n"
            "print(len(PLOT_KINDS.names()), len(TABLE_FORMATS.names()),"
            " [m for m in ('pandas', 'matplotlib') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) >= 6 and int(out[1]) >= 4 and out[2] == "[]", out


def test_a_declaration_that_is_not_literal_is_one_error_naming_file_and_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad_figures.py").write_text(
        "from sweeps.report.choices import plot_kind\nNAME = 'x'\n\n@plot_kind(NAME, 'help')\ndef f(runs):\n    pass\n",
        encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=r"bad_figures.py:4: @plot_kind\(...\) needs string literals"):
        choices.declared_in("bad_figures", "plot_kind")


TASK_MODULE = '''
from sweeps.tasks import CountingTask, Task


class DoubledCount(CountingTask):  # a task: a concrete Task subclass with its own name
    name = "doubled_count_builtin"


class _Half(Task):  # abstract (no example, load ...): not a task
    name = "half"


class Unnamed(CountingTask):  # no name of its own: not a task
    pass
'''


def test_a_built_in_task_is_its_module_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """How `sweeps/tasks/__init__.py` finds the built-ins: a module of the package that defines a
    task is enough (a class it only imports is not its task)."""
    import sys

    from sweeps import tasks

    pkg = tmp_path / "more_tasks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "doubled.py").write_text(TASK_MODULE, encoding="utf-8")
    (pkg / "reexport.py").write_text("from sweeps.tasks import ChartTask  # imported, not defined\n",
                                     encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        found = tasks.builtin_tasks("more_tasks", [str(pkg)])
        assert [cls.__name__ for cls in found] == ["DoubledCount"]
    finally:
        for name in ("more_tasks", "more_tasks.doubled", "more_tasks.reexport"):
            sys.modules.pop(name, None)
    assert {cls.name for cls in tasks._BUILTINS} == {"chart", "counting", "grounding", "numeric_vqa"}
    assert set(tasks.TASKS) >= {"chart", "counting", "grounding", "numeric_vqa"}


# -- the doc tables that name loss families are the registry's ------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def test_the_tokenizer_doc_tables_name_the_registry_families() -> None:
    """docs/tokenizers.md keeps two tables of loss families (which tokens each needs; the measured
    tokenizer matrix, written by benchmarks/tokenizer_matrix.py): both must be the registry's."""
    import re

    from sl_core import builtin_families

    builtins = {b.family_spec.name: b.family_spec for b in builtin_families.BUILTINS}  # not plug-ins other tests add
    text = (ROOT / "docs" / "tokenizers.md").read_text(encoding="utf-8")
    kinds = {"none": "none", "single digits": "digits", "any numeric token": "numeric"}
    documented: dict[str, set[str]] = {}
    for label, families in re.findall(r"^\| (none|single digits|any numeric token)[^|]* \| ([^|]+) \|", text, re.M):
        documented[kinds[label]] = set(re.findall(r"`([^`]+)`", families))
    declared: dict[str, set[str]] = {}
    for name, spec in builtins.items():
        declared.setdefault(spec.tokens, set()).add(name)
    assert documented == declared, (
        "docs/tokenizers.md: the table of the tokens each loss family needs must name every built-in of "
        f"sl_core/builtin_families.py under its tokens: documented {documented}, declared {declared}")
    header = next(line for line in text.splitlines() if line.startswith("| tokenizer | style |"))
    assert re.findall(r"`([^`]+)`", header) == list(builtins), (
        "docs/tokenizers.md: the measured matrix must have a column per built-in loss family, in "
        "declaration order: rerun `python benchmarks/tokenizer_matrix.py` and paste its table")
