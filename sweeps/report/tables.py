"""Ablation tables: group trial runs, summarise each metric over seeds, render md/latex/csv/html."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from sweeps.report.runs import Direction, ReportError, SweepRuns, UnknownColumnError, param_columns
from sweeps.report.stats import Comparison, compare_to_baseline, significance_marker, summarize

Format = Literal["md", "latex", "csv", "html"]
FORMATS: tuple[str, ...] = ("md", "latex", "csv", "html")
STAT_FIELDS = ("mean", "ci_low", "ci_high", "sd", "n")
TEST_FIELDS = ("diff", "p", "test", "pairs")


@dataclass
class AblationTable:
    """One ablation table: a row per group of trial runs, per metric mean/CI/n (+ baseline test).

    Attributes:
        title: caption (experiment, sweep).
        by: the grouping columns of the trial table (``params.loss.psi``, ...).
        by_names: their display names (``psi``, ...), the first columns of `rows`.
        metrics: metric names (without ``metrics.``).
        directions: ``max``/``min`` per metric (which value is best).
        rows: [G, ...] group keys, then ``<metric>.<field>`` for `STAT_FIELDS` and, with a
            baseline, `TEST_FIELDS`; full precision.
        baseline: the baseline selector (``loss=hard``) or None.
        notes: sentences printed under the table (CI method, tests used, left-out runs).
        confidence: CI level.
    """

    title: str
    by: list[str]
    by_names: list[str]
    metrics: list[str]
    directions: dict[str, Direction]
    rows: pd.DataFrame
    baseline: str | None = None
    notes: list[str] = field(default_factory=list)
    confidence: float = 0.95

    def best_rows(self, metric: str) -> set[int]:
        """Row positions holding the best mean of `metric` (ties all count; none when every
        group ties, since then nothing stands out)."""
        means = self.rows[f"{metric}.mean"].to_numpy(dtype=float)
        finite = means[~np.isnan(means)]
        all_tie = len(means) > 1 and finite.size == len(means) and bool(np.all(finite == finite[0]))
        if finite.size == 0 or all_tie:
            return set()
        best = np.nanmax(means) if self.directions[metric] == "max" else np.nanmin(means)
        return {i for i, v in enumerate(means) if v == best}

    def single_n(self) -> bool:
        """Whether every metric has the same n in every row (then one n column suffices)."""
        ns = [self.rows[f"{m}.n"].to_numpy() for m in self.metrics]
        return all(np.array_equal(ns[0], x) for x in ns[1:])


def parse_baseline(runs: SweepRuns, selector: str) -> pd.Series:
    """Boolean mask of the trial runs matching ``col=value[,col=value...]``.

    Raises:
        UnknownColumnError: a malformed selector, an unknown column, or no run matches.
    """
    df = runs.trials
    mask = pd.Series(True, index=df.index)
    for part in [p.strip() for p in selector.split(",") if p.strip()]:
        if "=" not in part:
            raise UnknownColumnError(f"--baseline '{selector}': expected column=value, e.g. loss=hard")
        name, value = (s.strip() for s in part.split("=", 1))
        col = runs.resolve(name)
        column = df[col]
        if pd.api.types.is_numeric_dtype(column):
            try:
                target = float(value)
            except ValueError:
                target = math.nan
            hit = np.isclose(column.to_numpy(float), target, rtol=1e-9, atol=0.0)
        else:
            hit = column.astype(str) == value
        if not np.any(hit):
            seen = ", ".join(sorted({_key_text(v) for v in column}))
            raise UnknownColumnError(f"--baseline '{part}': no run has {name}={value} "
                                     f"(values of {col.removeprefix('params.')}: {seen})")
        mask &= hit
    if not mask.any():
        raise UnknownColumnError(f"--baseline '{selector}': no run matches all conditions")
    return mask


def _seed_indexed(frame: pd.DataFrame, metric_col: str) -> pd.Series:
    return pd.Series(frame[metric_col].to_numpy(float), index=pd.Index(frame["seed"].to_numpy(float)))


def ablation_table(runs: SweepRuns, by: Sequence[str] | None = None, metrics: Sequence[str] | None = None,
                   baseline: str | None = None, confidence: float = 0.95) -> AblationTable:
    """Group the trial runs by `by` and summarise each metric over the runs (seeds) of a group.

    Args:
        runs: the loaded sweep.
        by: column names (``psi``, ``eta``, ``loss.family``, ...); None = the loss params that
            vary across trials.
        metrics: metric names; None = the sweep's metric.
        baseline: ``col=value[,...]`` selecting the baseline runs; each group is compared with it
            (paired t-test over matching seeds, Welch's test otherwise).
        confidence: CI level.

    Raises:
        UnknownColumnError / UnknownMetricError: a name does not resolve.
    """
    by_cols = param_columns(runs, by)
    names = list(metrics) if metrics else [runs.default_metric()]
    metric_cols = [runs.resolve_metric(m) for m in names]
    metric_names = [c.removeprefix("metrics.") for c in metric_cols]
    shown = runs.display_names(by_cols)
    by_names = [shown[c] for c in by_cols]
    df = runs.trials
    base = df[parse_baseline(runs, baseline)] if baseline else None
    base_ids = set(base["run_id"]) if base is not None else set()
    groups = list(df.groupby(by_cols, dropna=False, sort=True)) if by_cols else [((), df)]

    records = []
    comparisons: list[Comparison] = []
    for key, frame in groups:
        key = key if isinstance(key, tuple) else (key,)
        rec: dict[str, object] = dict(zip(by_names, key))
        for col, m in zip(metric_cols, metric_names):
            s = summarize(frame[col], confidence)
            rec.update({f"{m}.mean": s.mean, f"{m}.ci_low": s.ci_low, f"{m}.ci_high": s.ci_high,
                        f"{m}.sd": s.sd, f"{m}.n": s.n})
            if base is not None:
                if set(frame["run_id"]) == base_ids:
                    c = Comparison(0.0, math.nan, "baseline")
                else:
                    c = compare_to_baseline(_seed_indexed(frame, col), _seed_indexed(base, col))
                comparisons.append(c)
                rec.update({f"{m}.diff": c.diff, f"{m}.p": c.p_value, f"{m}.test": c.test,
                            f"{m}.pairs": c.n_pairs})
        records.append(rec)
    rows = pd.DataFrame.from_records(records, columns=by_names + [
        f"{m}.{f}" for m in metric_names for f in STAT_FIELDS + (TEST_FIELDS if base is not None else ())])

    table = AblationTable(title=runs.label, by=by_cols, by_names=by_names, metrics=metric_names,
                          directions={m: runs.direction(m) for m in metric_names}, rows=rows,
                          baseline=baseline, confidence=confidence)
    table.notes = _notes(table, runs, comparisons, len(base) if base is not None else 0)
    return table


def _pooled_columns(runs: SweepRuns, by: list[str]) -> list[str]:
    """Default --by columns not in `by` whose value differs between runs of one group."""
    out = []
    for c in runs.default_by():
        if c in by:
            continue
        counts = (runs.trials.groupby(by, dropna=False)[c].nunique(dropna=False) if by
                  else pd.Series([runs.trials[c].nunique(dropna=False)]))
        if (counts > 1).any():
            out.append(c)
    return out


def _notes(table: AblationTable, runs: SweepRuns, comparisons: list[Comparison], n_base: int) -> list[str]:
    notes = [f"mean ± half-width of the {table.confidence:.0%} Student-t confidence interval over "
             "the runs (seeds) of each group; n = runs"]
    singles = int(sum((table.rows[f"{m}.n"] == 1).sum() for m in table.metrics))
    if singles:
        notes.append(f"{singles} group cell(s) have a single run: CI n/a")
    best = "; ".join(f"{m}: {'higher' if table.directions[m] == 'max' else 'lower'} is better"
                     for m in table.metrics)
    notes.append(f"best mean per metric in bold ({best})")
    ties = [m for m in table.metrics if not table.best_rows(m) and len(table.rows) > 1]
    if ties:
        notes.append(f"every group has the same mean {', '.join(ties)}: nothing marked")
    if table.baseline:
        notes.append(f"Δ = group − baseline ({table.baseline}, {n_base} runs); p: paired t-test over "
                     "matching seeds (scipy ttest_rel); * p<0.05, ** p<0.01, *** p<0.001")
        welch = sorted({c.note for c in comparisons if c.test == "welch"})
        if welch:
            notes.append("† unpaired: " + "; ".join(welch) + " (scipy ttest_ind, equal_var=False)")
        partial = sorted({c.note for c in comparisons if c.test == "paired" and c.note})
        if partial:
            notes.append("; ".join(partial))
        if any(c.test == "none" for c in comparisons):
            notes.append("p n/a: fewer than 2 runs in a group")
        if any(c.test in ("paired", "welch") and math.isnan(c.p_value) for c in comparisons):
            notes.append("p n/a: the values (or paired differences) do not vary, so t is undefined")
    pooled = _pooled_columns(runs, table.by)
    if pooled:
        names = ", ".join(runs.display_names(pooled).values())
        notes.append(f"runs that differ in {names} share a row (pooled); add them to --by to separate")
    if runs.excluded:
        left = ", ".join(f"{n} {s}" for s, n in sorted(runs.excluded.items()))
        notes.append(f"left out {left} trial run(s) (--all-runs includes them)")
    return notes


# -- rendering ---------------------------------------------------------------------------------

def _key_text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    return str(value)


def _decimals(values: np.ndarray) -> int:
    """Decimals for a metric column: 4 below 10, fewer for larger magnitudes."""
    finite = np.abs(values[np.isfinite(values)])
    top = float(finite.max()) if finite.size else 0.0
    return 4 if top < 10 else 3 if top < 100 else 2 if top < 10_000 else 0


def _num(value: float, decimals: int, signed: bool = False) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


@dataclass
class _Cell:
    text: str
    bold: bool = False
    numeric: bool = False


def _grid(table: AblationTable) -> tuple[list[str], list[list[_Cell]]]:
    """Header and cells as plain text; each renderer escapes and styles them."""
    r = table.rows
    one_n = table.single_n()
    arrows = {"max": "↑", "min": "↓"}
    header = list(table.by_names) + [f"{m} {arrows[table.directions[m]]}" for m in table.metrics]
    header += ["n"] if one_n else [f"n ({m})" for m in table.metrics]
    if table.baseline:
        for m in table.metrics:
            header += [f"Δ {m}", "p" if len(table.metrics) == 1 else f"p ({m})"]
    best = {m: table.best_rows(m) for m in table.metrics}
    dec = {m: _decimals(r[f"{m}.mean"].to_numpy(float)) for m in table.metrics}
    cells: list[list[_Cell]] = []
    for i in range(len(r)):
        row = [_Cell(_key_text(r.iloc[i][name])) for name in table.by_names]
        for m in table.metrics:
            mean, lo, hi = (float(r.iloc[i][f"{m}.{f}"]) for f in ("mean", "ci_low", "ci_high"))
            row.append(_Cell(f"{_num(mean, dec[m])} ± {_num((hi - lo) / 2, dec[m])}", i in best[m], True))
        ns = [int(r.iloc[i][f"{m}.n"]) for m in table.metrics]
        row += [_Cell(str(n), numeric=True) for n in (ns[:1] if one_n else ns)]
        if table.baseline:
            for m in table.metrics:
                test = r.iloc[i][f"{m}.test"]
                if test == "baseline":
                    row += [_Cell("baseline", numeric=True), _Cell("—", numeric=True)]
                    continue
                p = float(r.iloc[i][f"{m}.p"])
                p_text = "n/a" if not math.isfinite(p) else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")
                p_text += significance_marker(p) + ("†" if test == "welch" else "")
                row += [_Cell(_num(float(r.iloc[i][f"{m}.diff"]), dec[m], signed=True), numeric=True),
                        _Cell(p_text, numeric=True)]
        cells.append(row)
    return header, cells


def to_markdown(table: AblationTable) -> str:
    """GitHub-flavoured Markdown; best means in ``**bold**``; notes as a list below."""
    header, cells = _grid(table)

    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("*", "\\*")

    align = ["---:" if (cells and cells[0][j].numeric) else "---" for j in range(len(header))]
    lines = [f"**{esc(table.title)}**", "", "| " + " | ".join(esc(h) for h in header) + " |",
             "| " + " | ".join(align) + " |"]
    for row in cells:
        lines.append("| " + " | ".join(f"**{esc(c.text)}**" if c.bold else esc(c.text) for c in row) + " |")
    lines += [""] + [f"- {esc(n)}" for n in table.notes]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "−": "$-$", "—": "--", "†": r"$^\dagger$",
                  "↑": r"$\uparrow$", "↓": r"$\downarrow$", "≥": r"$\geq$"}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters and map the few non-ASCII symbols the tables use."""
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
    for sym, rep in _LATEX_SYMBOLS.items():
        out = out.replace(sym, rep)
    return out


def to_latex(table: AblationTable) -> str:
    """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``); notes as comments above it."""
    header, cells = _grid(table)
    spec = "".join("r" if (cells and cells[0][j].numeric) else "l" for j in range(len(header)))
    lines = [f"% {latex_escape(table.title)}"] + [f"% {latex_escape(n)}" for n in table.notes]
    lines += [f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
              " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    for row in cells:
        parts = [f"\\textbf{{{latex_escape(c.text)}}}" if c.bold else latex_escape(c.text) for c in row]
        lines.append(" & ".join(parts) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_csv(table: AblationTable) -> str:
    """All statistics at full precision (``repr`` floats) plus a ``<metric>.best`` flag column."""
    out = table.rows.copy()
    for m in table.metrics:
        best = table.best_rows(m)
        out[f"{m}.best"] = [i in best for i in range(len(out))]
    return out.to_csv(index=False, lineterminator="\n")


def to_html(table: AblationTable, *, full_document: bool = False) -> str:
    """An HTML ``<table>`` (best means in ``<strong>``) with its notes; optionally a whole page."""
    header, cells = _grid(table)
    e = html.escape
    parts = ['<table class="slsweep-ablation">', f"<caption>{e(table.title)}</caption>", "<thead><tr>"]
    parts += [f"<th>{e(h)}</th>" for h in header] + ["</tr></thead>", "<tbody>"]
    for row in cells:
        tds = []
        for c in row:
            body = f"<strong>{e(c.text)}</strong>" if c.bold else e(c.text)
            tds.append(f'<td class="num">{body}</td>' if c.numeric else f"<td>{body}</td>")
        parts.append("<tr>" + "".join(tds) + "</tr>")
    parts += ["</tbody>", "</table>", '<ul class="notes">'] + [f"<li>{e(n)}</li>" for n in table.notes]
    parts.append("</ul>")
    fragment = "\n".join(parts) + "\n"
    if not full_document:
        return fragment
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "th,td{padding:.25em .6em;border-bottom:1px solid #ccc}td.num{text-align:right}"
             "caption{font-weight:bold;margin-bottom:.5em}.notes{color:#555;font-size:90%}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(table.title)}'
            f"</title><style>{style}</style></head><body>\n{fragment}</body></html>\n")


RENDERERS: dict[str, Callable[[AblationTable], str]] = {
    "md": to_markdown, "latex": to_latex, "csv": to_csv, "html": to_html,
}


def default_baseline(runs: SweepRuns) -> str | None:
    """``family=hard`` when hard-label runs sit beside other loss families, else None."""
    col = "params.loss.family"
    if col in runs.trials and runs.trials[col].nunique() > 1 and (runs.trials[col] == "hard").any():
        return "family=hard"
    return None


def ablation_table_text(runs: SweepRuns, metric: str | None = None, by: Sequence[str] | None = None,
                        baseline: str | None = None, fmt: str = "md") -> str:
    """The default ablation table as text (the summary printed after `slsweep run`).

    Baseline: `baseline`, else ``family=hard`` when hard-label runs sit beside other families.
    """
    table = ablation_table(runs, by, [metric] if metric else None, baseline or default_baseline(runs))
    return render(table, fmt)


def render(table: AblationTable, fmt: str) -> str:
    """Render `table` as ``md``, ``latex``, ``csv`` or ``html``."""
    if fmt not in RENDERERS:
        raise ReportError(f"--format '{fmt}': choose one of {', '.join(FORMATS)}")
    return RENDERERS[fmt](table)
