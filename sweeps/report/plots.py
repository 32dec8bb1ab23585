"""Figures from a sweep's trial runs (matplotlib, no display: `Figure` objects, Agg canvas).

Every function returns a `matplotlib.figure.Figure`; `save_figure` writes PNG/SVG/PDF and
`log_figure` stores it as an artifact of the sweep's parent run.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from sweeps.paths import optuna_storage_uri
from sweeps.report.runs import ReportError, SweepRuns, sqlite_path, param_columns
from sweeps.report.stats import summarize

KINDS = ("eta-curve", "psi-bars", "lambda-curve", "parallel", "importance", "learning-curves")
IMAGE_SUFFIXES = (".png", ".svg", ".pdf")


def _figure(width: float = 7.0, height: float = 4.2) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)  # headless canvas: no pyplot state, safe in threads and tests
    return fig, fig.add_subplot()


def _title(ax: object, what: str, runs: SweepRuns) -> None:
    """What the figure shows, and on a second line which sweep: one line overflows the figure."""
    ax.set_title(f"{what}\n{runs.label}", fontsize=9)


def _metric(runs: SweepRuns, metric: str | None) -> tuple[str, str]:
    name = metric or runs.default_metric()
    col = runs.resolve_metric(name)
    return col.removeprefix("metrics."), col


def _value_text(value: object) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:g}"
    return str(value)


def _key_label(names: Sequence[str], key: tuple) -> str:
    return ", ".join(f"{n}={_value_text(v)}" for n, v in zip(names, key)) or "all runs"


def _groups(frame: pd.DataFrame, cols: Sequence[str]) -> list[tuple[tuple, pd.DataFrame]]:
    if not cols:
        return [((), frame)] if len(frame) else []
    return [(k if isinstance(k, tuple) else (k,), g)
            for k, g in frame.groupby(list(cols), dropna=False, sort=True)]


def _arrow(runs: SweepRuns, metric: str) -> str:
    return f"{metric} ({'higher' if runs.direction(metric) == 'max' else 'lower'} is better)"


def param_curve(runs: SweepRuns, x: str, metric: str | None = None,
                by: Sequence[str] | None = None) -> Figure:
    """Metric vs the param `x`, one line per group of `by` with a 95% CI band over seeds.

    Runs without `x` (e.g. the hard-label baseline has no eta) are drawn as horizontal reference
    lines, one per group. Default `by`: the varying loss params other than `x`.
    """
    m, mcol = _metric(runs, metric)
    xcol = runs.resolve(x)
    if not pd.api.types.is_numeric_dtype(runs.trials[xcol]):
        raise ReportError(f"'{x}' ({xcol.removeprefix('params.')}) is not numeric; use --kind psi-bars")
    series = [c for c in (param_columns(runs, by) if by else runs.default_by()) if c != xcol]
    names = list(runs.display_names(series).values())
    xname = runs.display_names([xcol])[xcol]
    df = runs.trials
    with_x, without_x = df[df[xcol].notna()], df[df[xcol].isna()]
    if with_x[xcol].nunique() < 2:
        raise ReportError(f"'{xname}' takes fewer than 2 values in {runs.label}: nothing to plot")
    # Reference groups: drop series columns that are absent on every reference run.
    ref_cols = [c for c in series if without_x[c].notna().any()]
    fig, ax = _figure()
    colors = colormaps["tab10"]
    for i, (key, g) in enumerate(_groups(with_x, series)):
        pts = [(xv, summarize(gg[mcol])) for xv, gg in g.groupby(xcol, sort=True)]
        xs = np.array([p[0] for p in pts], float)
        mean = np.array([p[1].mean for p in pts])
        lo, hi = np.array([p[1].ci_low for p in pts]), np.array([p[1].ci_high for p in pts])
        color = colors(i % 10)
        ax.plot(xs, mean, marker="o", color=color, label=_key_label(names, key))
        ax.fill_between(xs, lo, hi, color=color, alpha=0.2, linewidth=0)
    for j, (key, g) in enumerate(_groups(without_x, ref_cols)):
        s = summarize(g[mcol])
        color = colormaps["Greys"](0.5 + 0.4 * (j % 2))
        label = _key_label([runs.display_names(ref_cols)[c] for c in ref_cols], key)
        ax.axhline(s.mean, color=color, linestyle="--", label=f"{label} (no {xname})")
        if math.isfinite(s.ci_low):
            ax.axhspan(s.ci_low, s.ci_high, color=color, alpha=0.12, linewidth=0)
    positive = with_x[xcol][with_x[xcol] > 0]
    if len(positive) == len(with_x) and positive.max() / positive.min() > 20:
        ax.set_xscale("log")
    ax.set_xlabel(xname)
    ax.set_ylabel(_arrow(runs, m))
    _title(ax, f"{m} vs {xname} (mean, 95% CI over seeds)", runs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def eta_curve(runs: SweepRuns, metric: str | None = None, by: Sequence[str] | None = None) -> Figure:
    """Metric vs eta per psi (and other varying params), CI bands; hard-label runs as references."""
    return param_curve(runs, "eta", metric, by)


def lambda_curve(runs: SweepRuns, metric: str | None = None, by: Sequence[str] | None = None) -> Figure:
    """Metric vs lambda per group, CI bands (log x axis when lambda spans a wide range)."""
    return param_curve(runs, "lam", metric, by)


def group_bars(runs: SweepRuns, metric: str | None = None, by: Sequence[str] | None = None) -> Figure:
    """One bar per group (default: the varying family and psi) with 95% CI error bars.

    Runs of a group that differ in other params (eta, lambda) are pooled.
    """
    m, mcol = _metric(runs, metric)
    if by:
        cols = param_columns(runs, by)
    else:
        cols = runs.varying(["params.loss.family", "params.loss.psi"]) or runs.default_by()
    names = list(runs.display_names(cols).values())
    groups = _groups(runs.trials, cols)
    fig, ax = _figure(max(5.0, 0.7 * len(groups) + 2.5), 4.2)
    summaries = [summarize(g[mcol]) for _, g in groups]
    means = np.array([s.mean for s in summaries])
    err = np.array([s.half_width if math.isfinite(s.half_width) else 0.0 for s in summaries])
    labels = ["\n".join([_value_text(v) for v in k] + [f"n={s.n}"]) for (k, _), s in zip(groups, summaries)]
    best = np.nanargmax(means) if runs.direction(m) == "max" else np.nanargmin(means)
    colors = ["tab:orange" if i == best else "tab:blue" for i in range(len(groups))]
    pos = np.arange(len(groups))
    ax.bar(pos, means, yerr=err, capsize=4, color=colors, alpha=0.85)
    ax.set_xticks(pos, labels, fontsize=8)
    finite = means[np.isfinite(means)]
    if finite.size:  # zoom on the differences: bars starting at 0 hide them
        top = np.nanmax(means + err)
        low = np.nanmin(means - err)
        pad = 0.15 * (top - low or abs(top) or 1.0)
        ax.set_ylim(low - pad, top + pad)
    pooled = [c for c in runs.default_by() if c not in cols]
    extra = f"; pooled over {', '.join(runs.display_names(pooled).values())}" if pooled else ""
    ax.set_ylabel(_arrow(runs, m))
    ax.set_xlabel(" / ".join(names))
    _title(ax, f"{m} per group (mean, 95% CI{extra})", runs)
    ax.grid(axis="y", alpha=0.3)
    return fig


def psi_bars(runs: SweepRuns, metric: str | None = None, by: Sequence[str] | None = None) -> Figure:
    """Bars per psi shape (and loss family when it varies) with 95% CI error bars."""
    return group_bars(runs, metric, by)


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
            tl = [f"{lo:.4g}", f"{hi:.4g}"] if hi != lo else [f"{lo:.4g}"]
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
    for row, jit, val in zip(data, jitter, df[mcol].to_numpy(float)):
        ax.plot(xs, row + jit, color=cmap(norm(val)), alpha=0.7, linewidth=1.2)
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
    _title(ax, f"all {len(df)} trials", runs)
    return fig


def _distribution(values: pd.Series) -> object:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    present = values.dropna()
    if pd.api.types.is_numeric_dtype(present):
        lo, hi = float(present.min()), float(present.max())
        if np.all(np.mod(present, 1) == 0):
            return IntDistribution(int(lo), int(hi))
        return FloatDistribution(lo, hi)
    return CategoricalDistribution(sorted(present.astype(str).unique()))


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
    name = info.params.get("optuna.study_name") or info.tags.get("optuna.study_name") or info.sweep_id
    try:
        if name not in optuna.get_all_study_names(storage):
            return None
        study = optuna.load_study(study_name=name, storage=storage)
    except Exception:  # an unreadable study must not break a report built from MLflow
        return None
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return study if len(complete) >= 4 and len(study.directions) == 1 else None


def mlflow_study(runs: SweepRuns, metric: str, columns: Sequence[str]) -> object:
    """An in-memory Optuna study holding one complete trial per run with a value of `metric`.

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
    for _, row in runs.trials[runs.trials[mcol].notna()].iterrows():
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
    need scikit-learn). Source: the persisted study when it exists and no explicit `by` is given
    (its objective is the sweep's metric), else a study built from the MLflow runs over `by`
    (default: the searched params, plus ``seed`` as a noise reference when seeds vary).
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
    source = f"Optuna study '{getattr(study, 'study_name', '')}'" if study is not None else "MLflow runs"
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
    # PED-ANOVA's default top-10% is unstable below ~50 trials; keep >= 5 trials in the top set.
    quantile = min(0.5, max(0.1, 5 / n))
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample and experimental-argument warnings
        raw = optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=False)
    total = sum(raw.values())
    if total <= 0:  # Optuna would spread 1.0 evenly, which reads as "all equally important"
        raise ReportError(f"no parameter separates the best trials from the rest for '{m}' "
                          f"in {runs.label}")
    return {k: v / total for k, v in raw.items()}, f"PED-ANOVA (top {quantile:.0%} of {n} trials) on {source}"


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
    return fig


def learning_curves(runs: SweepRuns, metric: str | None = None, by: Sequence[str] | None = None) -> Figure:
    """Per-step metric per group: mean over the group's runs at each step with a 95% CI band."""
    m, _ = _metric(runs, metric)
    cols = param_columns(runs, by) if by else runs.default_by()
    names = list(runs.display_names(cols).values())
    hist = runs.histories([m])
    if hist.empty:
        raise ReportError(f"no per-step history of '{m}' in {runs.label}")
    keys = runs.trials[["run_id"] + cols]
    hist = hist.merge(keys, on="run_id")
    fig, ax = _figure()
    colors = colormaps["tab10"]
    for i, (key, g) in enumerate(_groups(hist, cols)):
        pts = [(step, summarize(gg["value"])) for step, gg in g.groupby("step", sort=True)]
        steps = np.array([p[0] for p in pts], float)
        mean = np.array([p[1].mean for p in pts])
        color = colors(i % 10)
        ax.plot(steps, mean, marker=".", color=color, label=_key_label(names, key))
        ax.fill_between(steps, [p[1].ci_low for p in pts], [p[1].ci_high for p in pts],
                        color=color, alpha=0.15, linewidth=0)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(_arrow(runs, m))
    _title(ax, f"{m} during training (mean, 95% CI over seeds)", runs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


PLOTTERS: dict[str, Callable[..., Figure]] = {
    "eta-curve": eta_curve,
    "psi-bars": psi_bars,
    "lambda-curve": lambda_curve,
    "parallel": parallel,
    "importance": importance,
    "learning-curves": learning_curves,
}


def plot(runs: SweepRuns, kind: str, metric: str | None = None, by: Sequence[str] | None = None) -> Figure:
    """Draw one figure of `kind` (one of `KINDS`)."""
    if kind not in PLOTTERS:
        raise ReportError(f"--kind '{kind}': choose one of {', '.join(KINDS)}")
    return PLOTTERS[kind](runs, metric, by)


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
