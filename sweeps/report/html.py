"""One self-contained HTML page per sweep: spec, search space, best configuration, ablation tables
and figures (embedded as base64 PNG, so the file opens in a browser without a server)."""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sweeps import __version__
from sweeps.report import plots
from sweeps.report.fmt import value_text
from sweeps.report.groups import makeup
from sweeps.report.hints import confirm_hint
from sweeps.report.runs import ReportError, SweepRuns, param_columns
from sweeps.report.tables import AblationTable, ablation_table, default_baseline, to_html

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;
 padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
caption{font-weight:bold;text-align:left;margin-bottom:.3em}
pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:.85em}
.notes{color:#555;font-size:.85em}.meta td:first-child{color:#555}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.85em}
"""


@dataclass
class ReportFigure:
    kind: str
    png: bytes
    caption: str


def _e(text: object) -> str:
    return html.escape(str(text))


def _kv_table(rows: Sequence[tuple[str, object]], cls: str = "meta") -> str:
    body = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="{cls}"><tbody>{body}</tbody></table>'


def _value(v: object) -> str:
    return value_text(v)


def collect_figures(runs: SweepRuns, metric: str | None = None,
                    kinds: Sequence[str] = plots.KINDS) -> tuple[list[ReportFigure], list[str]]:
    """Draw every applicable figure; a kind that does not apply is skipped with its reason."""
    figures, skipped = [], []
    for kind in kinds:
        try:
            fig = plots.plot(runs, kind, metric)
        except ReportError as err:
            skipped.append(f"{kind}: {err}")
            continue
        figures.append(ReportFigure(kind, plots.figure_png(fig), plots.caption(fig)))
    return figures, skipped


def _best_configuration(runs: SweepRuns, table: AblationTable, metric: str) -> str:
    """The best group of the main table and the config its runs share, plus the best single run.

    What the group is decides what is claimed: one configuration over >= 2 seeds shows its interval
    (and its test against the baseline when there is one); a group pooling configurations shows
    its spread and no test; one seed shows its value alone.
    """
    if metric in table.own_objective:  # (sweeps.report.runs.own_objective)
        return (f"<p>No best configuration by {_e(metric)}: it is each loss family's own training "
                "objective, and these runs train several loss families (their losses are different "
                "functions, so neither a best nor a test across them means anything). Rank them by "
                "a task metric (<code>slsweep report --metric NAME</code>).</p>")
    best = sorted(table.best_rows(metric))
    means = table.rows[f"{metric}.mean"].to_numpy(float)
    full = [i for i in range(len(table.rows)) if i not in table.partial_rows and np.isfinite(means[i])]
    only = not best and len(full) == 1  # one group is the best of nothing: shown as the only one
    best = full if only else best
    parts = []
    mcol = f"metrics.{metric}"
    if best:
        i = best[0]
        row = table.rows.iloc[i]
        mk = table.makeups[i]
        key = [(n, _value(row[n])) for n in table.by_names]
        mask = pd.Series(True, index=runs.trials.index)
        for col, name in zip(table.by, table.by_names):
            v = row[name]
            absent = isinstance(v, float) and math.isnan(v)
            mask &= runs.trials[col].isna() if absent else runs.trials[col] == v
        group = runs.trials[mask]
        shared = []
        for col in sorted(c for c in group.columns if c.startswith("params.") and c != "params.seed"):
            vals = group[col].dropna().unique()
            if len(vals) == 1 and group[col].notna().all():
                shared.append((col.removeprefix("params."), _value(vals[0])))
        mean = _value(row[f"{metric}.mean"])
        low, high = row[f"{metric}.ci_low"], row[f"{metric}.ci_high"]
        if not mk.replicate:
            spread = (f"{mean}, spread {_value(row[f'{metric}.min'])}–{_value(row[f'{metric}.max'])} over "
                      f"{mk.text()} (pooled: not a confidence interval)")
        elif math.isfinite(low):
            spread = (f"{mean}, {table.confidence:.0%} CI [{_value(low)}, {_value(high)}] "
                      f"({mk.text()}: {', '.join(_value(s) for s in group['seed'])})")
        else:
            spread = f"{mean} ({mk.text()}: no interval)"
        what = (f"The only full-budget group ({_e(metric)}, {_e(runs.direction(metric))})" if only else
                f"Best group by mean {_e(metric)} ({_e(runs.direction(metric))})")
        parts.append(f"<p>{what}: "
                     f"<strong>{_e(', '.join(f'{k}={v}' for k, v in key) or 'all runs')}</strong> — "
                     f"{_e(spread)}</p>")
        test = row.get(f"{metric}.test") if table.baseline else None
        if test in ("paired", "welch"):
            pa = row[f"{metric}.p_adj"]
            verdict = ("significant" if pa < 0.05 else "not significant") if pa == pa else "untested"
            kind = "paired t-test over matching seeds" if test == "paired" else "Welch's t-test"
            parts.append(f"<p>Against the baseline ({_e(table.baseline)}): Δ = "
                         f"{_e(_value(row[f'{metric}.diff']))}, {table.confidence:.0%} CI "
                         f"[{_e(_value(row[f'{metric}.diff_ci_low']))}, "
                         f"{_e(_value(row[f'{metric}.diff_ci_high']))}], {_e(kind)}, adjusted p = "
                         f"{_e(_value(pa))} ({verdict} at 0.05 after {_e(table.adjust)}).</p>")
        elif test == "none":
            parts.append(f"<p>Against the baseline ({_e(table.baseline)}): Δ = "
                         f"{_e(_value(row[f'{metric}.diff']))}, {_e(row[f'{metric}.note'])}.</p>")
        elif not only:
            parts.append("<p>The best mean is descriptive: whether it differs from the others is what "
                         "the tables' adjusted p-values (with a baseline) say.</p>")
        parts.append("<p>Configuration shared by its runs:</p>" + _kv_table(shared, "config"))
    elif len(table.rows) > 1:
        parts.append(f"<p>Every group has the same mean {_e(metric)}: no configuration stands out.</p>")
    ranked = runs.full[runs.full[mcol].notna()]
    if not ranked.empty:
        top = ranked.loc[ranked[mcol].idxmax() if runs.direction(metric) == "max" else ranked[mcol].idxmin()]
        ties = int((ranked[mcol] == top[mcol]).sum()) - 1
        tie_text = f"; {ties} other trial(s) share this value" if ties else ""
        chosen = (f" (the best of {len(ranked)}, picked on the seed it was measured on: an optimistic "
                  "value)" if len(ranked) > 1 else "")
        parts.append(f"<p>Best single full-budget trial: run <code>{_e(top['run_id'])}</code> "
                     f"(trial {_e(top.get('tags.trial_id', '?'))}, seed {_e(_value(top['seed']))}): "
                     f"{_e(metric)} = {_e(_value(top[mcol]))}{_e(tie_text)}{_e(chosen)}</p>")
    return "\n".join(parts)


def _confirm_hint(runs: SweepRuns) -> str:
    """For a search sweep (TPE/random): why its best value is optimistic and how to confirm it."""
    hint = confirm_hint(runs)
    return f'<p class="notes">{_e(hint)}</p>' if hint else ""


def _search_space_section(runs: SweepRuns) -> str:
    text = runs.parent_artifact_text("search_space.yaml")
    if text is not None:
        return f"<pre>{_e(text)}</pre>"
    cols = runs.searched_params()
    if not cols:
        return "<p>No search-space file was logged and no parameter varies.</p>"
    rows = []
    for col in cols:
        vals = runs.trials[col].dropna()
        uniq = sorted(vals.unique(), key=str)
        shown = ", ".join(_value(v) for v in uniq) if len(uniq) <= 12 else (
            f"{_value(vals.min())} … {_value(vals.max())} ({len(uniq)} values)")
        rows.append((col.removeprefix("params."), shown))
    return "<p>No search_space.yaml artifact; values observed on the trials:</p>" + _kv_table(rows)


def build_report(runs: SweepRuns, *, metrics: Sequence[str] | None = None, by: Sequence[str] | None = None,
                 baseline: str | None = None, figures: Sequence[ReportFigure] | None = None,
                 adjust: str = "holm", mde: float | None = None) -> str:
    """The whole HTML page as a string.

    Args:
        runs: the loaded sweep.
        metrics: metrics for the tables (default: the sweep's metric); figures use the first.
        by: grouping of the main table (default: the varying loss params); one-factor tables follow
            when several params vary.
        baseline: baseline selector for the tests (default: ``loss=hard`` when hard-label runs sit beside
            other families, `sweeps.report.tables.default_baseline`).
        figures: pre-drawn figures; None draws every applicable kind.
        adjust: p-value adjustment of each table (``holm``, ``bh``, ``none``).
        mde: the difference the power column targets (default: the observed one).
    """
    metric_list = list(metrics) if metrics else [runs.default_metric()]
    metric = metric_list[0]
    baseline = baseline if baseline is not None else default_baseline(runs)
    main = ablation_table(runs, by, metric_list, baseline, adjust=adjust, power=True, mde=mde)
    factors = param_columns(runs, by) if by else runs.default_by()
    singles = []
    if len(factors) > 1:
        # One factor at a time; the family stays as a column so baselines keep their own rows.
        family = [c for c in factors if c == "params.loss.family"]
        for c in factors:
            cols = [c] if c in family else family + [c]
            singles.append(ablation_table(runs, cols, metric_list, baseline, adjust=adjust, power=True,
                                          mde=mde))
    skipped: list[str] = []
    if figures is None:
        figures, skipped = collect_figures(runs, metric)

    info = runs.sweep
    raw = runs.raw_trials if runs.raw_trials is not None else runs.trials
    status_counts = {f"{s} at full budget" if s == "FINISHED" else s: n
                     for s, n in raw["full_budget"].map({True: "FINISHED"}).fillna(raw["status"])
                     .value_counts().items()} if "full_budget" in raw else raw["status"].value_counts().to_dict()
    status_counts.update({f"left out: {w}": n for w, n in runs.excluded.items()})
    meta = [("experiment", runs.experiment_name), ("sweep", ", ".join(s.sweep_id for s in runs.sweeps)),
            ("parent run", info.run_id), ("spec", info.spec_name or "—"),
            ("started", info.start_time.strftime("%Y-%m-%d %H:%M UTC") if info.start_time else "—"),
            ("tracking URI", runs.tracking_uri),
            ("trial runs", ", ".join(f"{n} {s}" for s, n in sorted(status_counts.items()))),
            ("in tables", f"{len(runs.full)} full-budget observations ({makeup(runs.full).text()}) from "
             f"{int(raw['full_budget'].sum()) if 'full_budget' in raw else len(raw)} runs"
             + (f"; {len(runs.partial)} stopped early, shown apart" if len(runs.partial) else "")),
            ("metric", f"{metric} ({'higher' if runs.direction(metric) == 'max' else 'lower'} is better)")]
    spec_text = runs.parent_artifact_text("spec.yaml")
    spec_html = (f"<pre>{_e(spec_text)}</pre>" if spec_text is not None else
                 "<p>No spec.yaml artifact; the parent run's params:</p>"
                 + _kv_table(sorted(info.params.items())))

    body = [f"<h1>slsweep report: {_e(runs.experiment_name)}</h1>", _kv_table(meta),
            "<h2>Best configuration</h2>", _best_configuration(runs, main, metric), _confirm_hint(runs),
            "<h2>Ablation tables</h2>", to_html(main)]
    for t in singles:
        pooled = " (pools configurations: spread, no test)" if t.pooled_rows() else ""
        body += [f"<h3>By {_e(' and '.join(t.by_names))}{pooled}</h3>", to_html(t)]
    body.append("<h2>Figures</h2>")
    for f in figures:
        data = base64.b64encode(f.png).decode("ascii")
        body.append(f'<figure id="fig-{_e(f.kind)}"><img alt="{_e(f.kind)}" '
                    f'src="data:image/png;base64,{data}"><figcaption>{_e(f.kind)}: {_e(f.caption)}'
                    "</figcaption></figure>")
    if skipped:
        body.append('<ul class="notes">' + "".join(f"<li>skipped {_e(s)}</li>" for s in skipped) + "</ul>")
    body += ["<h2>Spec</h2>", spec_html, "<h2>Search space</h2>", _search_space_section(runs)]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body.append(f'<p class="notes">Generated by slsweep {_e(__version__)} on {stamp} from MLflow; '
                "every number traces to the trial runs listed above.</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>slsweep report: {_e(runs.experiment_name)}</title><style>{_STYLE}</style></head>\n"
            "<body>\n" + "\n".join(body) + "\n</body></html>\n")
