"""Figures from a sweep's trial runs (matplotlib, no display: `Figure` objects, Agg canvas).

Every function returns a `matplotlib.figure.Figure` whose caption (`caption`) is written from what
was drawn; `save_figure` writes PNG/SVG/PDF and `log_figure` stores it as an artifact of the sweep's
parent run.

Honesty rules every kind follows: group means and intervals come from full-budget observations only
(runs stopped early, present with --all-runs, are drawn apart as grey crosses or dashed lines at the
step they reached); intervals are drawn only on one configuration with 2 or more seeds
(`sweeps.report.groups`), cut to [0, 1] for a share (`SweepRuns.metric_range`), never over several
configurations; a line joins only configurations that differ in the x parameter alone; a group of
one seed shows its value with no interval and says n = 1; group values are dots with intervals (no
truncated bars); titles and captions name only what was drawn and are wrapped to the figure's
width; values print with 4 significant digits.
"""

from __future__ import annotations

import math
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from sweeps.store.paths import optuna_storage_uri
from sweeps.store.schema import STOP_REASON_COLUMN, STUDY_NAME_KEY
from sweeps.report.choices import PLOT_KINDS, plot_kind
from sweeps.report.fmt import value_text
from sweeps.report.groups import makeup, most_associated
from sweeps.report.runs import ARM_COLUMN, ReportError, SweepRuns, configuration_ids, param_columns, sqlite_path
from sweeps.report.stats import Summary, best_positions, interval_text, summarize

KINDS = PLOT_KINDS  # the plot kinds: each function below decorated with @plot_kind(name, help) is one
IMAGE_SUFFIXES = (".png", ".svg", ".pdf")


def _figure(width: float = 7.0, height: float = 4.2) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)  # headless canvas: no pyplot state, safe in threads and tests
    return fig, fig.add_subplot()


TITLE_FONTSIZE = 9
CAPTION_ATTR = "slsweep_caption"


TITLE_ATTR = "slsweep_title"


def _title(ax: object, what: str, runs: SweepRuns) -> None:
    """What the figure shows, then which sweep, each wrapped to the figure's width (a line longer
    than the figure is clipped); `_set_caption` narrows the wrap once the figure is laid out."""
    fig = ax.get_figure()
    # ~0.55 em per character of the default sans-serif font; the axes span ~85% of the width.
    chars = max(20, int(fig.get_figwidth() * 0.85 * 72 / (TITLE_FONTSIZE * 0.55)))
    setattr(ax, TITLE_ATTR, (what, runs.label))
    _wrap_title(ax, chars)


def _wrap_title(ax: object, chars: int) -> None:
    what, label = getattr(ax, TITLE_ATTR)
    ax.set_title("\n".join(textwrap.wrap(what, chars) + textwrap.wrap(label, chars)), fontsize=TITLE_FONTSIZE)


def _fit_titles(fig: Figure) -> None:
    """Re-wrap each title narrower until it lies inside the figure: a title is centred on its
    axes, which long tick labels (importance's 'binomial_temperature') push right, so the
    character estimate of `_title` can still run past the figure's right edge."""
    for ax in fig.axes:
        if not hasattr(ax, TITLE_ATTR):
            continue
        chars = max(len(line) for line in ax.get_title().split("\n"))
        while chars > 20:
            fig.draw_without_rendering()
            box = ax.title.get_window_extent(fig.canvas.get_renderer())
            if box.x0 >= fig.bbox.x0 - 1 and box.x1 <= fig.bbox.x1 + 1:
                break
            chars = max(20, int(chars * 0.9))
            _wrap_title(ax, chars)


def _set_caption(fig: Figure, text: str) -> Figure:
    """Attach the caption (what was drawn) to the finished figure, and fit its titles."""
    _fit_titles(fig)
    setattr(fig, CAPTION_ATTR, text)
    return fig


def caption(fig: Figure) -> str:
    """The caption a plot function wrote for `fig` from what it drew ("" for other figures)."""
    return getattr(fig, CAPTION_ATTR, "")


def _partial_text(runs: SweepRuns, drawn: int | None = None) -> str:
    """A sentence about runs stopped before their budget: drawn apart (`drawn` of them when the
    figure had no place for some), or left out."""
    n = len(runs.partial)
    drawn = n if drawn is None else drawn
    if n:
        text = (f" {drawn} run(s) stopped before their budget are drawn apart (grey, at the step they "
                "reached), not averaged in." if drawn else "")
        if drawn < n:
            text += (f" {n - drawn} run(s) stopped before their budget are not drawn: no full-budget "
                     "group or x value to sit beside (`slsweep table --all-runs` lists them).")
        return text
    left = sum(runs.excluded.values())
    return f" {left} run(s) that did not reach their budget are left out." if left else ""


def _metric(runs: SweepRuns, metric: str | None) -> tuple[str, str]:
    name = metric or runs.default_metric()
    col = runs.resolve_metric(name)
    return col.removeprefix("metrics."), col


def _value_text(value: object) -> str:
    return value_text(value)


def _key_label(names: Sequence[str], key: tuple) -> str:
    return ", ".join(f"{n}={_value_text(v)}" for n, v in zip(names, key)) or "all runs"


def _groups(frame: pd.DataFrame, cols: Sequence[str]) -> list[tuple[tuple, pd.DataFrame]]:
    if not cols:
        return [((), frame)] if len(frame) else []
    return [(k if isinstance(k, tuple) else (k,), g)
            for k, g in frame.groupby(list(cols), dropna=False, sort=True)]


def _arrow(runs: SweepRuns, metric: str) -> str:
    return f"{metric} ({'higher' if runs.direction(metric) == 'max' else 'lower'} is better)"


def _stopped_marks(ax: object, xs: Sequence[float], values: Sequence[float], steps: Sequence[str]) -> None:
    """Grey crosses for runs stopped before their budget, labelled once with their steps."""
    if not len(xs):
        return
    label = f"stopped early (step {', '.join(sorted(set(steps)))}; not averaged)"
    ax.scatter(xs, values, marker="x", color="0.45", zorder=3, label=label)


def _series_default(runs: SweepRuns, frame: pd.DataFrame, x: str) -> list[str]:
    """The default series of a parameter curve: the psi shape when it varies among the runs."""
    return [c for c in ("params.loss.psi",) if c != x and c in frame and frame[c].nunique() > 1]


CONFIDENCE = 0.95  # the level of every interval a figure draws
MARKERS = ("o", "s", "^", "D", "v", "P", "X")  # shapes for a categorical second parameter
REFERENCE_GID = "reference"  # the gid of a horizontal reference line (runs without the x param)


def _interval_bar(ax: object, x: float, sm: Summary, color: object) -> None:
    """A vertical interval from `sm.ci_low` to `sm.ci_high` at `x` (asymmetric when cut)."""
    ax.errorbar([x], [sm.mean], yerr=[[sm.mean - sm.ci_low], [sm.ci_high - sm.mean]], fmt="none",
                color=color, capsize=4, linewidth=1.2, zorder=3)


def _second_encoding(runs: SweepRuns, frame: pd.DataFrame, mcol: str,
                     skip: Sequence[str]) -> tuple[str | None, float, dict[object, dict]]:
    """The other configuration parameter most associated with the metric (`groups.most_associated`)
    and the scatter keywords of each of its values: marker shapes for <= 7 categories, sizes by
    rank for numbers (20-140 pt^2); ``(None, nan, {})`` when none varies."""
    candidates = [c for c in runs.config_columns() if c not in skip and c in frame
                  and frame[c].nunique(dropna=True) > 1]
    col, score = most_associated(frame, mcol, candidates)
    if col is None:
        return None, math.nan, {}
    values = sorted(frame[col].dropna().unique(), key=lambda v: (str(type(v)), v))
    if pd.api.types.is_numeric_dtype(frame[col]):
        ranks = {v: i / max(1, len(values) - 1) for i, v in enumerate(values)}
        return col, score, {v: {"s": 20 + 120 * ranks[v]} for v in values}
    if len(values) > len(MARKERS):
        return None, math.nan, {}
    return col, score, {v: {"marker": MARKERS[i]} for i, v in enumerate(values)}


def param_curve(runs: SweepRuns, x: str, metric: str | None = None,
                by: Sequence[str] | None = None) -> Figure:
    """Metric vs the param `x`: one dot per full-budget observation (trial and seed).

    - Colour: the series (default: the psi shape when it varies; `by` names others).
    - Marker size (numbers) or shape (categories): the other configuration parameter most
      associated with the metric on the drawn trials (`groups.most_associated`: squared Spearman
      rho for numbers, eta squared for categories), named with its value in legend and caption.
    - Lines only through configurations that differ in `x` alone (`configuration_ids` ignoring
      `x`): each point of a line is one configuration's mean over its seeds. A TPE sweep, whose
      trials differ in several params at once, draws dots and no line.
    - Intervals only on one configuration with >= 2 seeds (`stats.summarize`, cut to [0, 1] for a
      share); never over several configurations.
    - Runs without `x` (hard CE has no eta) are horizontal references: one configuration's mean
      with its interval, or, pooling several, their mean and min-max band.
    """
    m, mcol = _metric(runs, metric)
    xcol = runs.resolve(x)
    if not pd.api.types.is_numeric_dtype(runs.trials[xcol]):
        raise ReportError(f"'{x}' ({xcol.removeprefix('params.')}) is not numeric; use --kind psi-bars")
    df, stopped = runs.full, runs.partial
    df = df[df[mcol].notna()]
    with_x, without_x = df[df[xcol].notna()], df[df[xcol].isna()]
    xname = runs.display_names([xcol])[xcol]
    if with_x[xcol].nunique() < 2:
        left = sum(runs.excluded.values()) + len(stopped)
        raise ReportError(f"'{xname}' takes fewer than 2 values among the full-budget runs of {runs.label}: "
                          "nothing to plot" + (f" ({left} run(s) stopped before their budget are no curve "
                                               "point; `slsweep table --all-runs` lists them)" if left else ""))
    series = [c for c in param_columns(runs, by) if c != xcol] if by else _series_default(runs, with_x, xcol)
    names = list(runs.display_names(series).values())
    bounds = runs.metric_range(m)
    second, assoc, styles = _second_encoding(runs, with_x, mcol, [xcol, *series])
    fig, ax = _figure()
    colors = colormaps["tab10"]
    ids = configuration_ids(with_x)
    line_ids = configuration_ids(with_x, ignore=[xcol])
    n_lines = n_bars = singles = flat = 0
    for i, (key, g) in enumerate(_groups(with_x, series)):
        color = colors(i % 10)
        label = _key_label(names, key) if series else "trials"
        if second is None:
            ax.scatter(g[xcol], g[mcol], color=color, alpha=0.75, zorder=2, label=label)
        else:
            first = True
            for value, gg in g.groupby(second, dropna=False, sort=False):
                style = styles.get(value, {"marker": "x"})
                ax.scatter(gg[xcol], gg[mcol], color=color, alpha=0.75, zorder=2,
                           label=label if first else None, **style)
                first = False
        # One point per configuration; lines join configurations that differ in x alone.
        for _, line in g.groupby(line_ids.loc[g.index], sort=False):
            pts = []
            for _, conf in line.groupby(ids.loc[line.index], sort=False):
                pts.append((float(conf[xcol].iloc[0]), summarize(conf[mcol], bounds=bounds)))
            pts.sort(key=lambda p: p[0])
            if len(pts) > 1:
                ax.plot([p[0] for p in pts], [p[1].mean for p in pts], color=color, linewidth=1.4, zorder=2)
                n_lines += 1
            for xv, sm in pts:
                if sm.n >= 2 and math.isfinite(sm.ci_low):
                    _interval_bar(ax, xv, sm, color)
                    n_bars += 1
                elif sm.no_spread:  # seeds that agree: their dots overlap, and no interval
                    flat += 1
                    ax.annotate(f"n={sm.n}, no spread", (xv, sm.mean), xytext=(3, 4),
                                textcoords="offset points", fontsize=7, color=color)
                elif len(pts) > 1:  # a point of a line resting on one seed says so
                    singles += 1
                    ax.annotate("n=1", (xv, sm.mean), xytext=(3, 4), textcoords="offset points",
                                fontsize=7, color=color)
    ref_cols = list(dict.fromkeys(
        [c for c in ["params.loss.family"] + series if c in without_x and without_x[c].notna().any()]))
    ref_ids = configuration_ids(without_x)
    ref_texts = []
    for j, (key, g) in enumerate(_groups(without_x, ref_cols)):
        sm = summarize(g[mcol], bounds=bounds)
        mk = makeup(g, ref_ids)
        color = colormaps["Greys"](0.5 + 0.4 * (j % 2))
        label = _key_label([runs.display_names(ref_cols)[c] for c in ref_cols], key)
        if mk.replicate:
            shade = math.isfinite(sm.ci_low)
            what = f"n={sm.n}" if shade else ("n=1: no interval" if sm.n < 2 else f"n={sm.n}, no spread: no interval")
            if shade:
                ax.axhspan(sm.ci_low, sm.ci_high, color=color, alpha=0.12, linewidth=0, gid=REFERENCE_GID)
        else:
            what = f"{mk.text()}: mean, shaded min-max"
            ax.axhspan(sm.minimum, sm.maximum, color=color, alpha=0.08, linewidth=0, gid=REFERENCE_GID)
        ax.axhline(sm.mean, color=color, linestyle="--", label=f"{label} (no {xname}; {what})",
                   gid=REFERENCE_GID)
        ref_texts.append(f"{label}: {what}")
    if second is not None:
        sname = runs.display_names([second])[second]
        shown = list(styles.items())
        if pd.api.types.is_numeric_dtype(with_x[second]) and len(shown) > 3:
            shown = [shown[0], shown[len(shown) // 2], shown[-1]]
        for value, style in shown:
            ax.scatter([], [], color="0.5", label=f"{sname}={_value_text(value)}",
                       **({"marker": "o"} | style))
    st = stopped[stopped[xcol].notna() & stopped[mcol].notna()] if len(stopped) else stopped
    _stopped_marks(ax, st[xcol].to_numpy(float), st[mcol].to_numpy(float), list(st.get("at_step", [])))
    positive = with_x[xcol][with_x[xcol] > 0]
    if len(positive) == len(with_x) and positive.max() / positive.min() > 20:
        ax.set_xscale("log")
    ax.set_xlabel(xname)
    ax.set_ylabel(_arrow(runs, m))
    per = f" per {' / '.join(names)}" if names else ""
    n_dots, n_conf = len(with_x), int(ids.nunique())
    what = f"{m} vs {xname}{per}: one dot per trial"
    if n_lines:
        what += f"; lines join configurations differing in {xname} alone"
    if n_bars:
        what += f"; bars: {CONFIDENCE:.0%} CI over seeds" + (f" (cut to [{bounds[0]:g}, {bounds[1]:g}])" if bounds else "")
    cap = (f"{m} against {xname}{per}: {n_dots} full-budget trial(s) of {n_conf} configuration(s), "
           "one dot each (colour: " + (" / ".join(names) if names else "one series") + ")")
    if second is not None:
        kind = "size" if pd.api.types.is_numeric_dtype(with_x[second]) else "marker"
        measure = "squared Spearman rho" if kind == "size" else "eta squared"
        cap += (f"; marker {kind}: {runs.display_names([second])[second]}, the other parameter most "
                f"associated with {m} ({measure} {assoc:.2f} on these trials)")
    cap += "."
    cap += (f" {n_lines} line(s) join configurations that differ in {xname} alone, through each "
            "one's mean." if n_lines else
            f" No line: no two configurations differ in {xname} alone, so joining dots would join "
            "unrelated configurations.")
    if n_bars:
        cap += f" Bars on {n_bars} configuration(s) with 2 or more seeds: {interval_text(CONFIDENCE, bounds)}."
    elif not flat:
        cap += " No interval: no configuration has 2 or more seeds."
    if singles:
        cap += f" {singles} point(s) of a line rest on one seed (n=1): no interval there."
    if flat:
        cap += (f" {flat} configuration(s) have 2 or more seeds that all gave the same value (no spread): "
                "no interval there.")
    if ref_texts:
        cap += f" Dashed: runs without {xname} ({'; '.join(ref_texts)})."
    cap += _partial_text(runs, len(st))
    _title(ax, what, runs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _set_caption(fig, cap)


@plot_kind("eta-curve", "metric vs eta per psi shape with CI bands, runs without eta as references")
def eta_curve(runs: SweepRuns, metric: str | None = None, by: Sequence[str] | None = None) -> Figure:
    """Metric vs eta per psi shape (default series), CI bands; runs without eta as references."""
    return param_curve(runs, "eta", metric, by)


def group_bars(runs: SweepRuns, metric: str | None = None, by: Sequence[str] | None = None) -> Figure:
    """One column per group (default: the psi shape, and the loss family when it varies).

    A group of one configuration is a dot (its mean) with its interval over seeds (`stats.summarize`,
    cut to [0, 1] for a share); with one seed a hollow dot and "n=1". A group pooling several
    configurations (`groups.makeup`) shows each of its runs as a small dot and their mean as a
    hollow diamond, with no interval: the spread is between configurations, not seeds. No bars:
    a bar's length from a non-zero axis misleads.

    Raises:
        ReportError: neither psi nor the loss family varies and no `by` was given.
    """
    m, mcol = _metric(runs, metric)
    if by:
        cols = param_columns(runs, by)
    else:
        cols = runs.varying(["params.loss.family", "params.loss.psi"])
        if not cols:
            raise ReportError(f"neither loss.family nor loss.psi varies in {runs.label}: "
                              "pass --by to choose the groups")
    names = list(runs.display_names(cols).values())
    df, stopped = runs.full, runs.partial
    df = df[df[mcol].notna()]
    groups = _groups(df, cols)
    if not groups:
        raise ReportError(f"no full-budget runs in {runs.label} to draw")
    bounds = runs.metric_range(m)
    ids = configuration_ids(df)
    fig, ax = _figure(max(5.0, 0.8 * len(groups) + 2.5), 4.2)
    summaries = [summarize(g[mcol], bounds=bounds) for _, g in groups]
    makeups = [makeup(g, ids) for _, g in groups]
    means = np.array([sm.mean for sm in summaries])
    best = best_positions(means, runs.direction(m))  # the tables' rule: ties all count, all-tie none
    jitter = np.random.default_rng(0)
    n_bars = singles = flat = 0
    for i, ((_, g), sm, mk) in enumerate(zip(groups, summaries, makeups)):
        color = "tab:orange" if i in best else "tab:blue"
        if not mk.replicate:
            xs = i + jitter.uniform(-0.12, 0.12, size=len(g))
            ax.scatter(xs, g[mcol], s=14, color=color, alpha=0.6, zorder=2)
            ax.plot([i], [sm.mean], "D", markerfacecolor="white", markeredgecolor=color, markersize=8, zorder=3)
            ax.annotate(f"{mk.configs} configs", (i, sm.mean), xytext=(8, 0), textcoords="offset points",
                        fontsize=7, va="center", color=color)
        elif sm.n >= 2 and math.isfinite(sm.half_width):
            ax.errorbar([i], [sm.mean], yerr=[[sm.mean - sm.ci_low], [sm.ci_high - sm.mean]], fmt="o",
                        color=color, capsize=5, markersize=7)
            n_bars += 1
        else:
            singles += sm.n < 2
            flat += sm.no_spread
            ax.plot([i], [sm.mean], "o", markerfacecolor="white", markeredgecolor=color, markersize=7)
            ax.annotate("n=1" if sm.n < 2 else "no spread", (i, sm.mean), xytext=(6, 0),
                        textcoords="offset points", fontsize=7,
                        va="center", color=color)
    labels = ["\n".join([_value_text(v) for v in k] + [f"n={sm.n}" if mk.replicate else f"{sm.n} runs"])
              for (k, _), sm, mk in zip(groups, summaries, makeups)]
    n_stopped_drawn = 0
    if len(stopped):
        pos = {k: i for i, (k, _) in enumerate(groups)}
        xs, ys, steps = [], [], []
        for k, g in _groups(stopped[stopped[mcol].notna()], cols):
            if k in pos:
                xs += [pos[k] + 0.15] * len(g)
                ys += list(g[mcol])
                steps += list(g["at_step"])
        _stopped_marks(ax, xs, ys, steps)
        n_stopped_drawn = len(xs)
        if xs:
            ax.legend(fontsize=7)
    ax.set_xticks(np.arange(len(groups)), labels, fontsize=8)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.margins(y=0.15)
    pooled = [mk for mk in makeups if not mk.replicate]
    pooled_names = list(runs.display_names(runs.pooled(cols, df)).values())
    ax.set_ylabel(_arrow(runs, m))
    ax.set_xlabel(" / ".join(names))
    parts = []
    if n_bars:
        parts.append(f"dot: mean, bar: {CONFIDENCE:.0%} CI over seeds")
    if pooled:
        parts.append("diamond: mean of pooled configurations, dots: their runs, no interval")
    _title(ax, f"{m} per {' / '.join(names)}" + (f" ({'; '.join(parts)})" if parts else ""), runs)
    ax.grid(axis="y", alpha=0.3)
    cap = f"Mean {m} per {' / '.join(names)}"
    if n_bars:
        cap += f" with its {interval_text(CONFIDENCE, bounds)} where a group is one configuration"
    cap += (" (orange: best mean, not a test)." if best else
            " (every group has the same mean: none marked)." if np.isfinite(means).sum() > 1 else ".")
    if pooled:
        cap += (f" {len(pooled)} group(s) pool configurations that differ in "
                f"{', '.join(pooled_names) or 'other parameters'} ({'; '.join(dict.fromkeys(p.text() for p in pooled))}): "
                "each run a dot, their mean a hollow diamond, no interval (a spread between "
                "configurations is not a confidence interval).")
    if singles:
        cap += f" {singles} group(s) have one seed (hollow dot, n=1): no interval."
    if flat:
        cap += (f" {flat} group(s) have seeds that all gave the same value (hollow dot, no spread): "
                "no interval.")
    return _set_caption(fig, cap + _partial_text(runs, n_stopped_drawn))


@plot_kind("psi-bars", "dot and interval per psi shape (and loss family when it varies)")
def psi_bars(runs: SweepRuns, metric: str | None = None, by: Sequence[str] | None = None) -> Figure:
    """Dot-and-interval per psi shape (and loss family when it varies); see `group_bars`."""
    return group_bars(runs, metric, by)


@plot_kind("lambda-curve", "metric vs lambda per psi shape, CI bands")
def lambda_curve(runs: SweepRuns, metric: str | None = None, by: Sequence[str] | None = None) -> Figure:
    """Metric vs lambda per psi shape (default series), CI bands (log x axis over wide ranges)."""
    return param_curve(runs, "lam", metric, by)


@plot_kind("parallel", "parallel coordinates of all trials: one axis per searched param plus the metric")
def parallel(runs: SweepRuns, metric: str | None = None, by: Sequence[str] | None = None) -> Figure:
    """Parallel coordinates of all trials: one axis per searched param plus the metric.

    Numeric axes are min-max scaled, categorical axes spaced evenly; a param absent on a trial sits
    below the axis at "—". Lines are coloured by the metric.
    """
    m, mcol = _metric(runs, metric)
    cols = param_columns(runs, by) if by else runs.searched_params()
    if not cols:
        raise ReportError(f"no parameter varies across the trials of {runs.label}")
    names = runs.display_names(cols)
    df = runs.trials[runs.trials[mcol].notna()]
    full = df["full_budget"].astype(bool).to_numpy() if "full_budget" in df else np.ones(len(df), bool)
    axes_vals: list[np.ndarray] = []
    ticks: list[tuple[list[float], list[str]]] = []
    for c in cols + [mcol]:
        v = df[c]
        if pd.api.types.is_numeric_dtype(v):
            lo, hi = v.min(), v.max()
            span = (hi - lo) or 1.0
            scaled = ((v - lo) / span).where(v.notna(), -0.12).to_numpy(float)
            if hi == lo:
                scaled = np.where(v.notna(), 0.5, -0.12)
            tk = [0.0, 1.0] if hi != lo else [0.5]
            tl = [value_text(float(lo)), value_text(float(hi))] if hi != lo else [value_text(float(lo))]
        else:
            cats = sorted(v.dropna().astype(str).unique())
            pos = {c_: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c_ in enumerate(cats)}
            scaled = np.array([pos[str(x)] if isinstance(x, str) else -0.12 for x in v], float)
            tk, tl = list(pos.values()), list(pos.keys())
        if v.isna().any():
            tk, tl = tk + [-0.12], tl + ["—"]
        axes_vals.append(scaled)
        ticks.append((tk, tl))
    data = np.vstack(axes_vals).T  # [N_trials, N_axes]
    fig, ax = _figure(max(6.0, 1.6 * data.shape[1] + 1.5), 4.5)
    norm = Normalize(df[mcol].min(), df[mcol].max())
    cmap = colormaps["viridis" if runs.direction(m) == "max" else "viridis_r"]
    xs = np.arange(data.shape[1])
    jitter = np.random.default_rng(0).uniform(-0.012, 0.012, size=data.shape)  # separate seeds
    for row, jit, val, ok in zip(data, jitter, df[mcol].to_numpy(float), full):
        if ok:
            ax.plot(xs, row + jit, color=cmap(norm(val)), alpha=0.7, linewidth=1.2)
        else:  # stopped before its budget: its value is from another budget, drawn apart
            ax.plot(xs, row + jit, color="0.55", alpha=0.8, linewidth=1.0, linestyle="--")
    for x, (tk, tl) in zip(xs, ticks):
        ax.axvline(x, color="black", linewidth=0.8)
        for t, label in zip(tk, tl):
            ax.annotate(label, (x, t), xytext=(3, 0), textcoords="offset points", fontsize=7, va="center")
    ax.set_xticks(xs, [names[c] for c in cols] + [m])
    ax.set_yticks([])
    ax.set_ylim(-0.2, 1.08)
    ax.set_xlim(-0.1, xs[-1] + 0.5)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=m)
    n_stopped = int((~full).sum())
    stopped = f" + {n_stopped} stopped early (grey dashed)" if n_stopped else ""
    _title(ax, f"{int(full.sum())} full-budget trials{stopped}", runs)
    cap = (f"Parallel coordinates of {int(full.sum())} full-budget observations over "
           f"{', '.join(names[c] for c in cols)}, coloured by {m}; a param absent on a trial sits at —.")
    if n_stopped:
        cap += f" {n_stopped} run(s) stopped before their budget: grey dashed, their {m} from that step."
    elif runs.excluded:
        cap += _partial_text(runs)
    return _set_caption(fig, cap)


def _distribution(values: pd.Series) -> object:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    present = values.dropna()
    if pd.api.types.is_numeric_dtype(present):
        lo, hi = float(present.min()), float(present.max())
        if np.all(np.mod(present, 1) == 0):
            return IntDistribution(int(lo), int(hi))
        return FloatDistribution(lo, hi)
    return CategoricalDistribution(sorted(present.astype(str).unique()))


def stopped_trials(runs: SweepRuns, *, with_values_only: bool = False) -> int:
    """Trial runs of the selected sweeps below their budget (stopped early by ASHA or an interrupt,
    failed, running, or of a shorter budget): loaded with --all-runs, or counted as left out.
    `with_values_only`: only those that end with a value (not failed, not running)."""
    from sweeps.report.runs import stop_word

    loaded = runs.raw_trials if runs.raw_trials is not None else runs.trials
    words = []
    if "full_budget" in loaded:
        below = loaded[~loaded["full_budget"].astype(bool)]
        reasons = below.get(STOP_REASON_COLUMN, pd.Series([None] * len(below), index=below.index))
        words = [stop_word(st, r) for st, r in zip(below["status"], reasons)]
    words += [w for w, n in (runs.excluded or {}).items() for _ in range(n)]
    if with_values_only:
        words = [w for w in words if w not in ("failed", "running")]
    return len(words)


def _persisted_study(runs: SweepRuns) -> object | None:
    """The sweep's Optuna study beside a SQLite MLflow store, when it exists and has trials.

    The study name is the parent run's ``optuna.study_name`` param/tag, else the sweep id.
    """
    import optuna

    db = sqlite_path(runs.tracking_uri)
    if db is None:
        return None
    storage = optuna_storage_uri(db.parent)
    if not (db.parent / "optuna.db").exists():
        return None
    info = runs.sweep
    name = info.params.get(STUDY_NAME_KEY) or info.tags.get(STUDY_NAME_KEY) or info.sweep_id
    try:
        if name not in optuna.get_all_study_names(storage):
            return None
        study = optuna.load_study(study_name=name, storage=storage)
    except Exception:  # an unreadable study must not break a report built from MLflow
        return None
    # An ASHA-stopped trial is PRUNED (sweeps.driver.tuner.RunFolderOptunaSearch), so COMPLETE trials
    # are full-budget ones. Stores written before that rule kept stopped trials COMPLETE with the
    # value of the step they reached: a study with stopped runs but no PRUNED trial mixes budgets,
    # and the full-budget MLflow runs are used instead. (Failed trials are FAIL: they carry no value.)
    pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    if stopped_trials(runs, with_values_only=True) and not pruned:
        return None
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return study if len(complete) >= 4 and len(study.directions) == 1 else None


def mlflow_study(runs: SweepRuns, metric: str, columns: Sequence[str]) -> object:
    """An in-memory Optuna study: one complete trial per full-budget observation with `metric`.

    Distributions are inferred from the observed values (categorical for strings, int/float
    ranges for numbers); a param absent on a run is a conditional param of that trial.
    """
    import optuna

    mcol = runs.resolve_metric(metric)
    names = runs.display_names(columns)
    dists = {names[c]: _distribution(runs.trials[c]) for c in columns}
    direction = "maximize" if runs.direction(metric) == "max" else "minimize"
    study = optuna.create_study(direction=direction, study_name=f"{runs.sweep.sweep_id}-{metric}")
    trials = []
    full = runs.full[runs.full[mcol].notna()]
    if ARM_COLUMN in full:  # a spec's fixed baseline arms were not searched (no sampled params)
        full = full[full[ARM_COLUMN] != "baseline"]
    for _, row in full.iterrows():
        params, used = {}, {}
        for c in columns:
            v = row[c]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            d = dists[names[c]]
            params[names[c]] = str(v) if isinstance(d, optuna.distributions.CategoricalDistribution) else (
                int(v) if isinstance(d, optuna.distributions.IntDistribution) else float(v))
            used[names[c]] = d
        trials.append(optuna.trial.create_trial(value=float(row[mcol]), params=params, distributions=used))
    study.add_trials(trials)
    return study


def param_importances(runs: SweepRuns, metric: str | None = None,
                      by: Sequence[str] | None = None) -> tuple[dict[str, float], str]:
    """Optuna PED-ANOVA importances (normalised to sum 1) and a description of their source.

    PED-ANOVA is Optuna's default evaluator and needs only numpy (fANOVA and mean-decrease-impurity
    need scikit-learn). Source: the persisted study when it exists, no explicit `by` is given (its
    objective is the sweep's metric) and no trial was stopped early (Optuna records an ASHA-stopped
    trial as COMPLETE with its partial value); else a study built from the full-budget MLflow
    observations over `by` (default: the searched params, plus ``seed`` as a noise reference when
    seeds vary).
    """
    import optuna

    m, _ = _metric(runs, metric)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" chatter on stderr
    try:
        return _importances(runs, m, metric, by)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _importances(runs: SweepRuns, m: str, metric: str | None,
                 by: Sequence[str] | None) -> tuple[dict[str, float], str]:
    import optuna

    study = None
    if not by and (metric is None or metric == runs.sweep_metric[0]):
        study = _persisted_study(runs)
    stopped = stopped_trials(runs)
    source = (f"Optuna study '{getattr(study, 'study_name', '')}'" if study is not None else
              "full-budget MLflow runs" + (f", {stopped} run(s) below the full budget left out" if stopped else ""))
    if study is None:
        cols = param_columns(runs, by) if by else runs.searched_params()
        if not cols:
            raise ReportError(f"no parameter varies across the trials of {runs.label}")
        if not by and runs.trials["seed"].nunique() > 1 and "params.seed" in runs.trials:
            cols = cols + ["params.seed"]
        study = mlflow_study(runs, m, cols)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    n = len(complete)
    if n < 4:
        raise ReportError(f"importance needs at least 4 trials with '{m}' (found {n}) in {runs.label}")
    if len({t.value for t in complete}) < 2:
        raise ReportError(f"'{m}' has the same value on every trial of {runs.label}: "
                          "no parameter importance to measure")
    # Optuna's default evaluator with its default settings, as optuna-dashboard computes it on the
    # same study, so both rank the same way; its top set is small below ~50 trials, and the source
    # line says when the ranking is rough.
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample and experimental-argument warnings
        raw = optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=False)
    total = sum(raw.values())
    if total <= 0:  # Optuna would spread 1.0 evenly, which reads as "all equally important"
        raise ReportError(f"no parameter separates the best trials from the rest for '{m}' "
                          f"in {runs.label}")
    rough = f", fewer than {ROUGH_IMPORTANCE_TRIALS}: a rough ranking" if n < ROUGH_IMPORTANCE_TRIALS else ""
    return ({k: v / total for k, v in raw.items()},
            f"PED-ANOVA (Optuna's defaults, as optuna-dashboard; {n} full-budget trials{rough}) on {source}")


# Below this many trials PED-ANOVA's top set holds a handful of trials: its ranking moves with
# one trial more or less, and the figure says so.
ROUGH_IMPORTANCE_TRIALS = 20


@plot_kind("importance", "Optuna parameter importances (PED-ANOVA) as horizontal bars")
def importance(runs: SweepRuns, metric: str | None = None, by: Sequence[str] | None = None) -> Figure:
    """Horizontal bars of Optuna parameter importances (see `param_importances`)."""
    m, _ = _metric(runs, metric)
    values, source = param_importances(runs, metric, by)
    items = sorted(values.items(), key=lambda kv: kv[1])
    fig, ax = _figure(6.5, max(2.5, 0.45 * len(items) + 1.5))
    labels = ["seed (noise ref.)" if k == "seed" else k for k, _ in items]
    ax.barh(labels, [v for _, v in items], color="tab:blue")
    for y, (_, v) in enumerate(items):
        ax.annotate(f"{v:.2f}", (v, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xlim(0, max([v for _, v in items] + [0.1]) * 1.15)
    ax.set_xlabel(f"importance for {m}")
    _title(ax, f"parameter importance: {source}", runs)
    cap = f"Share of the PED-ANOVA importance of each parameter for {m} ({source})."
    if "seed" in values:
        cap += " seed is a noise reference: a parameter below it is indistinguishable from noise."
    else:
        cap += (" No seed noise reference among these parameters: nothing here says which shares "
                "exceed seed noise.")
    return _set_caption(fig, cap)


@plot_kind("learning-curves", "metric per step per group (mean and band over seeds of one configuration)")
def learning_curves(runs: SweepRuns, metric: str | None = None, by: Sequence[str] | None = None) -> Figure:
    """Per-step metric per group. A group of one configuration: the mean over its seeds at each
    step with an interval band (`stats.summarize`, cut to [0, 1] for a share); a group pooling
    several configurations: each run's own curve, thin, with no mean and no band."""
    m, _ = _metric(runs, metric)
    cols = param_columns(runs, by) if by else runs.default_by()
    names = list(runs.display_names(cols).values())
    hist = runs.histories([m])
    if hist.empty:
        raise ReportError(f"no per-step history of '{m}' in {runs.label}")
    bounds = runs.metric_range(m)
    ids = configuration_ids(runs.trials)
    keys = runs.trials[["run_id"] + cols + (["full_budget"] if "full_budget" in runs.trials else [])]
    keys = keys.assign(_config=ids.to_numpy())
    hist = hist.merge(keys, on="run_id")
    full = hist[hist["full_budget"].astype(bool)] if "full_budget" in hist else hist
    fig, ax = _figure()
    colors = colormaps["tab10"]
    sizes, pooled = [], []
    bands = 0
    for i, (key, g) in enumerate(_groups(full, cols)):
        color = colors(i % 10)
        n = g["run_id"].nunique()
        configs = g["_config"].nunique()
        if configs > 1:  # different configurations: each run its own curve, never averaged
            pooled.append(configs)
            for j, (_, run) in enumerate(g.groupby("run_id", sort=False)):
                run = run.sort_values("step")
                ax.plot(run["step"], run["value"], color=color, linewidth=0.8, alpha=0.6,
                        label=(_key_label(names, key) + f" ({configs} configurations: each run, no band)")
                        if j == 0 else None)
            continue
        pts = [(step, summarize(gg["value"], bounds=bounds)) for step, gg in g.groupby("step", sort=True)]
        steps = np.array([p[0] for p in pts], float)
        mean = np.array([p[1].mean for p in pts])
        sizes.append(n)
        ax.plot(steps, mean, marker=".", color=color,
                label=_key_label(names, key) + (" (n=1: no band)" if n == 1 else f" (n={n})"))
        if n >= 2 and any(math.isfinite(p[1].ci_low) for p in pts):  # seeds that agree: no band there
            bands += 1
            ax.fill_between(steps, [p[1].ci_low for p in pts], [p[1].ci_high for p in pts],
                            color=color, alpha=0.15, linewidth=0)
    stopped = hist[~hist["full_budget"].astype(bool)] if "full_budget" in hist else hist.iloc[:0]
    for j, (_, g) in enumerate(stopped.groupby("run_id", sort=False)):
        g = g.sort_values("step")
        ax.plot(g["step"], g["value"], color="0.55", linestyle="--", linewidth=0.9,
                label="stopped early (one run each; not averaged)" if j == 0 else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(_arrow(runs, m))
    what = f"{m} during training" + (f" (mean, {CONFIDENCE:.0%} CI over seeds)" if bands else "")
    _title(ax, what, runs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    per = f" per {' / '.join(names)}" if names else ""
    cap = f"{m} at each evaluation{per}."
    if sizes:
        cap += " A group of one configuration: the mean over its full-budget seeds"
        cap += f", with a band: {interval_text(CONFIDENCE, bounds)}." if bands else " (one seed each: no band)."
    if any(n == 1 for n in sizes) and bands:
        cap += " Groups of one seed (n=1) have no band."
    if pooled:
        cap += (f" {len(pooled)} group(s) pool configurations: each run drawn on its own (thin), no "
                "mean and no band.")
    if stopped["run_id"].nunique():
        cap += (f" Grey dashed: {stopped['run_id'].nunique()} run(s) stopped before their budget, "
                "each on its own.")
    elif runs.excluded:
        cap += _partial_text(runs)
    return _set_caption(fig, cap)


def plot(runs: SweepRuns, kind: str, metric: str | None = None, by: Sequence[str] | None = None) -> Figure:
    """Draw one figure of `kind`: a name of `sweeps.report.choices.PLOT_KINDS` (the functions
    above decorated with `plot_kind`, or one a plug-in declared with it).

    Raises:
        ReportError: unknown `kind` (``--kind 'x': choose one of eta-curve, ...``), or the kind
            does not apply to these runs.
    """
    if kind not in PLOT_KINDS:
        raise ReportError(PLOT_KINDS.unknown(kind))
    return PLOT_KINDS.get(kind)(runs, metric, by)


def save_figure(fig: Figure, path: Path | str) -> Path:
    """Write `fig` to `path` (.png, .svg or .pdf, from the suffix)."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ReportError(f"-o {path}: the file must end in {', '.join(IMAGE_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def log_figure(runs: SweepRuns, fig: Figure, artifact_file: str) -> str:
    """Store `fig` as an artifact of the sweep's parent run; returns the artifact path."""
    runs.client.log_figure(runs.sweep.run_id, fig, artifact_file)
    return artifact_file


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (for embedding)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
