"""Extending the reports (issue 21): a plot kind and a table format are one registry entry each
(`sweeps.report.choices`). Registered as a plug-in would, they are offered by `slsweep plot` /
`slsweep table` (choices, help, validation) and drawn / rendered by them with no other edit."""

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


# -- the doc tables that name loss families are the registry's ------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def test_the_tokenizer_doc_tables_name_the_registry_families() -> None:
    """docs/tokenizers.md keeps two tables of loss families (which tokens each needs; the measured
    tokenizer matrix, written by benchmarks/tokenizer_matrix.py): both must be the registry's."""
    import re

    from sl_core import registry

    builtins = {b.family_spec.name: b.family_spec for b in registry._BUILTINS}  # not plug-ins other tests add
    text = (ROOT / "docs" / "tokenizers.md").read_text(encoding="utf-8")
    kinds = {"none": "none", "single digits": "digits", "any numeric token": "numeric"}
    documented: dict[str, set[str]] = {}
    for label, families in re.findall(r"^\| (none|single digits|any numeric token)[^|]* \| ([^|]+) \|", text, re.M):
        documented[kinds[label]] = set(re.findall(r"`([^`]+)`", families))
    declared: dict[str, set[str]] = {}
    for name, spec in builtins.items():
        declared.setdefault(spec.tokens, set()).add(name)
    assert documented == declared
    header = next(line for line in text.splitlines() if line.startswith("| tokenizer | style |"))
    assert re.findall(r"`([^`]+)`", header) == list(builtins)
