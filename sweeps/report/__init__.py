"""Reports from MLflow: ablation tables with statistics, plots and a self-contained HTML page.

`load_sweep` reads a sweep's trial runs (docs/architecture.md "MLflow layout"); `ablation_table`
groups and summarises them; `render` writes md/latex/csv/html; `sweeps.report.plots` draws figures;
`build_report` assembles the HTML page; `sweeps.report.commands.register` adds the CLI commands.
"""

from sweeps.report.runs import (
    NoSweepError,
    ReportError,
    SweepRuns,
    UnknownColumnError,
    UnknownMetricError,
    load_sweep,
    load_trials,
)
from sweeps.report.stats import Comparison, Summary, compare_to_baseline, summarize
from sweeps.report.tables import AblationTable, ablation_table, ablation_table_text, render

__all__ = [
    "AblationTable",
    "Comparison",
    "NoSweepError",
    "ReportError",
    "Summary",
    "SweepRuns",
    "UnknownColumnError",
    "UnknownMetricError",
    "ablation_table",
    "ablation_table_text",
    "compare_to_baseline",
    "load_sweep",
    "load_trials",
    "render",
    "summarize",
]
