"""Reports from MLflow: ablation tables with statistics, plots and a self-contained HTML page.

`load_sweep` reads a sweep's trial runs (docs/architecture.md "MLflow layout"); `ablation_table`
groups and summarises them; `render` writes md/latex/csv/html; `sweeps.report.plots` draws figures;
`build_report` assembles the HTML page; `sweeps.report.commands.register` adds the CLI commands.
"""

from sweeps import lazy_exports

# Names -> the submodule defining them, imported on first use: the CLI registers the report commands
# on every `slsweep` call and must not pay for pandas/scipy then.
_LAZY = {
    **dict.fromkeys(("NoSweepError", "ReportError", "SweepRuns", "UnknownColumnError",
                     "UnknownMetricError", "load_sweep", "load_trials"), "runs"),
    **dict.fromkeys(("Comparison", "Summary", "compare_to_baseline", "summarize"), "stats"),
    **dict.fromkeys(("AblationTable", "ablation_table", "ablation_table_text", "render"), "tables"),
}


__getattr__ = lazy_exports(__name__, _LAZY)


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
