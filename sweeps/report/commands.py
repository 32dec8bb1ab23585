"""The `table`, `plot` and `report` commands of the slsweep CLI (added by `register`).

`--format`, `--kind` and `--adjust` take their choices, help and validation from the registries
of `sweeps.report.choices` (read when the app is built, i.e. on each call: an entry a plug-in
added is offered like a built-in); nothing here restates a name.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import TyperCommand

from sweeps.errors import SlsweepError
from sweeps.report.choices import ADJUSTMENTS, PLOT_KINDS, TABLE_FORMATS, Registry

if TYPE_CHECKING:  # pandas/scipy load with the command that runs, not with every `slsweep` call
    from sweeps.report.runs import SweepRuns

T = TypeVar("T")


REGISTRIES: tuple[Registry, ...] = (PLOT_KINDS, TABLE_FORMATS, ADJUSTMENTS)


class RegistryCommand(TyperCommand):
    """A command whose registry-backed options (`registry_option`) show the registry's names as
    their metavar and each name's help after their own, as the registry holds them when the app
    is built."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            reg = next((r for r in REGISTRIES if r.flag in getattr(param, "opts", ())), None)
            if reg is not None:
                param.metavar = "<" + "|".join(reg.names()) + ">"
                param.help = f"{param.help} " + "; ".join(f"{n} ({h})" for n, h in reg.help_lines()) + "."


def registry_option(reg: Registry, help: str, *short: str) -> Any:
    """A `typer.Option` for `reg.flag` whose value must be one of `reg`'s names (checked by
    `Registry.parse`: one line, exit 2) with shell completion of the names; use it in a command
    made with ``cls=RegistryCommand`` for the names in `--help`."""
    return typer.Option(reg.flag, *short, parser=reg.parse, help=help, metavar=reg.what.upper(),
                        autocompletion=lambda incomplete: [n for n in reg.names() if n.startswith(incomplete)])


ExperimentArg = Annotated[str | None, typer.Argument(
    help="Experiment name (or id, or sweep id). Default: the most recent sweep in the store.",
    show_default=False)]
ByOpt = Annotated[str | None, typer.Option(
    "--by", help="Comma-separated params to group by (psi,eta; a name resolves to the param key "
    "or the unique key ending in .name). Default: the loss params that vary.", show_default=False)]
MetricOpt = Annotated[list[str] | None, typer.Option(
    "--metric", "-m", help="Metric(s); repeat or comma-separate. Default: the sweep's metric.",
    show_default=False)]
BaselineOpt = Annotated[str | None, typer.Option(
    "--baseline", help="Baseline runs as column=value[,column=value] (e.g. loss=hard): adds the "
    "difference and a paired t-test over matching seeds (Welch's test otherwise, marked †); groups "
    "that pool configurations are not tested.", show_default=False)]
TrackingOpt = Annotated[str | None, typer.Option(
    "--tracking-uri", help="MLflow tracking URI. Default: sqlite:///<runs dir>/mlflow.db.",
    show_default=False)]
RunsDirOpt = Annotated[Path | None, typer.Option(
    "--runs-dir", help="Run folder holding mlflow.db (default ./slsweep-runs or $SLSWEEP_RUNS_DIR).",
    show_default=False)]
AllRunsOpt = Annotated[bool, typer.Option(
    "--all-runs", help="Also show runs stopped before their budget (early-stopped, interrupted, "
    "failed), each at the step it reached: never averaged with full-budget runs.")]


AdjustOpt = Annotated[str, registry_option(
    ADJUSTMENTS, "Multiple-comparison adjustment of the p-values over every comparison the table shows, one of:")]
PowerOpt = Annotated[bool, typer.Option(
    "--power", help="Add the seeds each comparison needs for 80% power (from the observed SD; "
    "needs at least 3 seed pairs, marked ~ below 5).")]
MdeOpt = Annotated[float | None, typer.Option(
    "--mde", help="Difference the power column targets (metric units; default: the observed one).",
    show_default=False)]
AllSweepsOpt = Annotated[bool, typer.Option(
    "--all-sweeps", help="Use every sweep of EXPERIMENT instead of its most recent one.")]
NoLogOpt = Annotated[bool, typer.Option(
    "--no-log", help="Do not log the output as an artifact of the sweep's parent run.")]


def _guard(fn: Callable[[], T]) -> T:
    """Run `fn`; a user error prints ``error: <msg>`` and exits 2 without a traceback."""
    try:
        return fn()
    except SlsweepError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


def _load(experiment: str | None, tracking_uri: str | None, runs_dir: Path | None,
          all_runs: bool, all_sweeps: bool) -> SweepRuns:
    from sweeps.report.runs import load_sweep

    return load_sweep(experiment, tracking_uri=tracking_uri, runs_dir=runs_dir,
                      all_sweeps=all_sweeps, include_unfinished=all_runs)


def split_names(values: list[str] | None) -> list[str]:
    from sweeps.report.runs import split_names as split

    return split(values)


def _by(by: str | None) -> list[str] | None:
    return split_names([by]) if by else None


def precheck_experiment(experiment: str, runs_dir: Path | None) -> None:
    """SlsweepError (with the store's experiment names) when `experiment` names no experiment or
    sweep of the run folder's own SQLite store, read with sqlite3 before MLflow is imported."""
    from sweeps.report.runs import no_sweep_named
    from sweeps.report.status import unknown_experiment
    from sweeps.store import paths

    folder = paths.run_folder(runs_dir)
    names = unknown_experiment(folder / paths.MLFLOW_DB, experiment)
    if names is not None:
        raise no_sweep_named(experiment, paths.default_tracking_uri(folder), names)


def _precheck_server_experiment(experiment: str, uri: str) -> None:
    from sweeps.report.runs import no_sweep_named
    from sweeps.store.uri import server_experiment_names

    names = server_experiment_names(uri, experiment)  # REST, before MLflow is imported
    if names is not None:
        raise no_sweep_named(experiment, uri, names)


def _precheck(experiment: str | None, by: str | None, tracking_uri: str | None, runs_dir: Path | None,
              all_runs: bool, metric: str | list[str] | None = None, output: Path | None = None) -> None:
    """An unknown experiment or sweep, --by name or --metric refused from the run folder's own store before the heavy
    imports (`runs.precheck_columns`); an unknown experiment or sweep on a tracking server too, over
    its REST API; --by and --metric there, or with --all-runs (unfinished runs' keys), are left to
    the full check. No run folder store, or an `-o` that cannot be written: refused here too."""
    from sweeps.store import paths
    from sweeps.store.uri import output_file_problem

    problem = output_file_problem(output) if output is not None else None
    if problem:
        typer.echo(f"error: --output: {problem}", err=True)
        raise typer.Exit(2)
    if tracking_uri is None:
        _guard(lambda: paths.resolve_tracking_uri(None, runs_dir))  # no store: one line, before MLflow
    if tracking_uri is not None:
        from sweeps.store.uri import check_tracking_uri

        _guard(lambda: check_tracking_uri(tracking_uri))
        if experiment and tracking_uri.startswith(("http://", "https://")):
            _guard(lambda: _precheck_server_experiment(experiment, tracking_uri))
    elif experiment:
        _guard(lambda: precheck_experiment(experiment, runs_dir))
    if (by or metric) and tracking_uri is None and not all_runs:
        from sweeps.report.runs import precheck_columns

        metrics = split_names(metric if isinstance(metric, list) else [metric] if metric else [])
        _guard(lambda: precheck_columns(_by(by) or [], runs_dir, metrics))


def table(experiment: ExperimentArg = None, by: ByOpt = None, metric: MetricOpt = None,
          baseline: BaselineOpt = None,
          fmt: Annotated[str, registry_option(TABLE_FORMATS, "Output format, one of:", "-f")] = "md",
          tracking_uri: TrackingOpt = None, runs_dir: RunsDirOpt = None, all_runs: AllRunsOpt = False,
          all_sweeps: AllSweepsOpt = False, adjust: AdjustOpt = "holm", power: PowerOpt = False,
          mde: MdeOpt = None,
          output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to FILE instead of "
                                                      "stdout.", show_default=False)] = None) -> None:
    """Ablation table: per group the mean and n; a group of one configuration (every resolved
    param equal, seed aside) adds its 95% CI over seeds, a group pooling configurations its min-max
    spread. With --baseline, one-configuration groups get the difference with its CI, the test used
    and raw and adjusted p-values (and with --power, the seeds needed); pooled groups are never tested."""
    _precheck(experiment, by, tracking_uri, runs_dir, all_runs, metric, output)
    from sweeps.report.tables import ablation_table, render

    def go() -> None:
        runs = _load(experiment, tracking_uri, runs_dir, all_runs, all_sweeps)
        tab = ablation_table(runs, _by(by), split_names(metric) or None, baseline,
                             adjust=adjust, power=power or mde is not None, mde=mde)
        text = render(tab, fmt)
        if output is None:
            sys.stdout.write(text)
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text, encoding="utf-8")
            typer.echo(f"wrote {output}", err=True)

    _guard(go)


def plot(kind: Annotated[str, registry_option(PLOT_KINDS, "Figure to draw, one of:", "-k")],
         experiment: ExperimentArg = None, metric: Annotated[str | None, typer.Option(
             "--metric", "-m", help="Metric (default: the sweep's metric).", show_default=False)] = None,
         by: ByOpt = None, tracking_uri: TrackingOpt = None, runs_dir: RunsDirOpt = None,
         all_runs: AllRunsOpt = False, all_sweeps: AllSweepsOpt = False,
         output: Annotated[Path | None, typer.Option("-o", "--output", help="FILE.png, .svg or .pdf "
                                                     "(default: <kind>.png).", show_default=False)] = None,
         no_log: NoLogOpt = False) -> None:
    """Draw a figure and log it as an artifact of the sweep's parent run."""
    _precheck(experiment, by, tracking_uri, runs_dir, all_runs, metric, output)
    from sweeps.report import plots

    def go() -> None:
        runs = _load(experiment, tracking_uri, runs_dir, all_runs, all_sweeps)
        fig = plots.plot(runs, kind, metric, _by(by))
        path = plots.save_figure(fig, output or Path(f"{kind}.png"))
        typer.echo(f"wrote {path}")
        typer.echo(f"caption: {plots.caption(fig)}")
        if not no_log:
            name = f"figures/{kind}-{metric or runs.default_metric()}{path.suffix.lower()}"
            plots.log_figure(runs, fig, name)
            typer.echo(f"logged {name} to parent run {runs.sweep.run_id}")

    _guard(go)


def report(experiment: ExperimentArg = None, metric: MetricOpt = None, by: ByOpt = None,
           baseline: BaselineOpt = None, tracking_uri: TrackingOpt = None, runs_dir: RunsDirOpt = None,
           all_runs: AllRunsOpt = False, all_sweeps: AllSweepsOpt = False,
           adjust: AdjustOpt = "holm", mde: MdeOpt = None,
           output: Annotated[Path, typer.Option("-o", "--output", help="The HTML file to write.")] = Path(
               "report.html"),
           no_log: NoLogOpt = False) -> None:
    """One self-contained HTML page: spec, search space, best configuration, tables, figures."""
    _precheck(experiment, by, tracking_uri, runs_dir, all_runs, metric, output)
    from sweeps.report.html import build_report

    def go() -> None:
        runs = _load(experiment, tracking_uri, runs_dir, all_runs, all_sweeps)
        page = build_report(runs, metrics=split_names(metric) or None, by=_by(by), baseline=baseline,
                            adjust=adjust, mde=mde)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(page, encoding="utf-8")
        typer.echo(f"wrote {output} ({len(page) // 1024} KiB)")
        if not no_log:
            runs.client.log_text(runs.sweep.run_id, page, "report.html")
            typer.echo(f"logged report.html to parent run {runs.sweep.run_id}")

    _guard(go)


def register(app: typer.Typer) -> None:
    """Add the `table`, `plot` and `report` commands to the slsweep app."""
    app.command("table", cls=RegistryCommand)(table)
    app.command("plot", cls=RegistryCommand)(plot)
    app.command("report", cls=RegistryCommand)(report)
