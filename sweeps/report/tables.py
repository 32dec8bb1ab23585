"""Ablation tables: group trial runs, summarise each metric, render md/latex/csv/html.

A row that is one configuration (`sweeps.report.groups`) is summarised over its seeds (mean,
interval, test against the baseline); a row pooling configurations shows its mean and min-max
spread and is never tested. The notes under a table are written from what it holds.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sweeps.report.fmt import distinct_texts, value_text
from sweeps.report.groups import Makeup, describe, makeup
from sweeps.report.runs import (
    FAMILY_COLUMN,
    Direction,
    ReportError,
    SweepRuns,
    UnknownColumnError,
    configuration_ids,
    own_objective,
    param_columns,
    selector_column,
    selector_items,
    selector_text,
)
from sweeps.store.schema import FAMILY_PARAM
from sweeps.report.choices import ADJUSTMENTS, TABLE_FORMATS, table_format
from sweeps.report.stats import (
    MIN_POWER_PAIRS,
    ROUGH_POWER_PAIRS,
    Comparison,
    adjust_pvalues,
    best_positions,
    compare_to_baseline,
    interval_text,
    power_is_rough,
    seeds_for_power,
    significance_marker,
    summarize,
)

# ci_low/ci_high are NaN on pooled rows (a spread is no interval); min/max are every row's spread.
STAT_FIELDS = ("mean", "ci_low", "ci_high", "sd", "n", "min", "max")
# What each row is (`groups.Makeup`): "replicates" (one configuration) or "pooled", and its counts.
GROUP_FIELDS = ("group", "configs", "seeds")
# p stays the raw p-value (the CSV column scheme); p_adj is the adjusted one; test says which
# test made p (paired, welch) or none (note: why not).
TEST_FIELDS = ("diff", "diff_ci_low", "diff_ci_high", "p", "p_adj", "test", "pairs", "note")
POWER_FIELDS = ("n_needed", "n_needed_adj", "n_needed_rough")
STEP_COLUMN = "at_step"  # the budget a row's runs reached (added to the keys when budgets differ)


@dataclass
class AblationTable:
    """One ablation table: a row per group of trial runs, per metric mean/CI/n (+ baseline test).

    Attributes:
        title: caption (experiment, sweep).
        by: the grouping columns of the trial table (``params.loss.psi``, ...).
        by_names: their display names (``psi``, ...), the first columns of `rows`.
        metrics: metric names (without ``metrics.``).
        directions: ``max``/``min`` per metric (which value is best).
        rows: [G, ...] group keys, `GROUP_FIELDS`, then ``<metric>.<field>`` for `STAT_FIELDS`
            and, with a baseline, `TEST_FIELDS`; full precision.
        makeups: what each row is (`groups.Makeup`): one configuration (replicates) or pooled.
        bounds: per metric, the range its intervals are cut to (None: not a bounded metric).
        baseline: the baseline selector (``loss=hard``) or None.
        notes: sentences printed under the table (CI method, tests used, left-out runs).
        confidence: CI level.
        adjust: multiple-comparison adjustment of the p-values (``holm``, ``bh``, ``none``).
        alpha: significance level of the power analysis (markers: * p_adj < 0.05, ...).
        power: whether the rows carry `POWER_FIELDS` (seeds needed for 80% power).
        mde: the difference the power analysis targets (None: the observed one).
        partial_rows: positions of rows holding runs stopped before their budget.
        own_objective: metrics that are each loss family's own objective (`train_loss`) in a table
            whose runs span several loss families: no best marked, no test across families.
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
    adjust: str = "holm"
    alpha: float = 0.05
    power: bool = False
    mde: float | None = None
    partial_rows: set[int] = field(default_factory=set)
    makeups: list[Makeup] = field(default_factory=list)
    bounds: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    own_objective: set[str] = field(default_factory=set)

    def pooled_rows(self) -> set[int]:
        """Row positions that pool several configurations (spread, no interval, no test)."""
        return {i for i, m in enumerate(self.makeups) if not m.replicate}

    def best_rows(self, metric: str) -> set[int]:
        """Row positions holding the best mean of `metric` among full-budget rows (ties all count;
        none when every group ties, since then nothing stands out; none on a loss family's own
        objective across families)."""
        if metric in self.own_objective:
            return set()
        means = self.rows[f"{metric}.mean"].to_numpy(dtype=float).copy()
        means[list(self.partial_rows)] = np.nan  # a stopped run's value is from another budget
        return best_positions(means, self.directions[metric])

    def single_n(self) -> bool:
        """Whether every metric has the same n in every row (then one n column suffices)."""
        ns = [self.rows[f"{m}.n"].to_numpy() for m in self.metrics]
        return all(np.array_equal(ns[0], x) for x in ns[1:])


def parse_baseline(runs: SweepRuns, selector: str) -> pd.Series:
    """Boolean mask of the trial runs matching the selector ``key=value[,key=value...]``
    (`selector_items`; keys resolve as `--by` names do, `selector_column`: ``loss=hard`` and
    ``family=hard`` both select the param ``loss.family``).

    Raises:
        UnknownColumnError: a malformed selector, an unknown column, or no run matches.
    """
    df = runs.trials
    mask = pd.Series(True, index=df.index)
    for name, value in selector_items(selector):
        col = selector_column(name, runs.param_keys, df.columns)
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
            raise UnknownColumnError(f"--baseline '{name}={value}': no run has {name}={value} "
                                     f"(values of {col.removeprefix('params.')}: {seen})")
        mask &= hit
    if not mask.any():
        raise UnknownColumnError(f"--baseline '{selector}': no run matches all conditions")
    return mask


def _seed_indexed(frame: pd.DataFrame, metric_col: str) -> pd.Series:
    return pd.Series(frame[metric_col].to_numpy(float), index=pd.Index(frame["seed"].to_numpy(float)))


def ablation_table(runs: SweepRuns, by: Sequence[str] | None = None, metrics: Sequence[str] | None = None,
                   baseline: str | None = None, confidence: float = 0.95, *, adjust: str = "holm",
                   power: bool = False, mde: float | None = None, alpha: float = 0.05,
                   power_target: float = 0.8) -> AblationTable:
    """Group the observations by `by` and summarise each metric over the seeds of a group.

    Observations are `runs.trials` (replicates already merged). A group of one configuration
    (`runs.configuration_ids`) gets its interval over seeds (cut to [0, 1] for a share,
    `SweepRuns.metric_range`) and its test; a group pooling configurations gets NaN intervals,
    its min/max and no test (nor does any group when the baseline pools configurations). Runs stopped before their budget
    (present only when loaded with ``include_unfinished``) and runs of different budgets get rows
    of their own (an ``at_step`` key column); they are never averaged with full-budget runs, never
    tested and never marked best.

    Args:
        runs: the loaded sweep.
        by: column names (``psi``, ``eta``, ``loss.family``, ...); None = the loss params that
            vary across trials.
        metrics: metric names; None = the sweep's metric.
        baseline: ``col=value[,...]`` selecting the baseline runs; each group is compared with it
            (paired t-test over matching seeds, Welch's test otherwise).
        confidence: level of the group intervals and of the intervals of the differences.
        adjust: ``holm`` (default), ``bh`` or ``none``: p-values adjusted over every comparison
            the table shows (all groups x metrics), `stats.adjust_pvalues`.
        power: add the seeds each comparison needs for `power_target` power (`stats.seeds_for_power`).
        mde: the difference the power analysis targets (default: the observed one).
        alpha: significance level of the power analysis.
        power_target: the power (default 0.8).

    Raises:
        UnknownColumnError / UnknownMetricError: a name does not resolve.
        ReportError: unknown `adjust` or a non-positive `mde`.
    """
    if adjust not in ADJUSTMENTS:
        raise ReportError(ADJUSTMENTS.unknown(adjust))
    if mde is not None and not (math.isfinite(mde) and mde > 0):
        raise ReportError(f"--mde {mde}: give a positive difference in the metric's units")
    by_cols = param_columns(runs, by)
    names = list(metrics) if metrics else [runs.default_metric()]
    metric_cols = [runs.resolve_metric(m) for m in names]
    metric_names = [c.removeprefix("metrics.") for c in metric_cols]
    df = runs.trials
    steps_vary = STEP_COLUMN in df and df[STEP_COLUMN].nunique() > 1
    key_cols = by_cols + ([STEP_COLUMN] if steps_vary else [])
    shown = runs.display_names(by_cols)
    by_names = [shown[c] for c in by_cols] + (["step"] if steps_vary else [])
    full = df["full_budget"].astype(bool) if "full_budget" in df else pd.Series(True, index=df.index)
    base = None
    if baseline:
        mask = parse_baseline(runs, baseline) & full
        if not mask.any():
            raise UnknownColumnError(f"--baseline '{baseline}': no full-budget run matches "
                                     "(stopped runs are never a baseline)")
        base = df[mask]
        base_steps = set(base[STEP_COLUMN]) if STEP_COLUMN in base else set()
        if len(base_steps) > 1:  # baselines of several budgets: compare at the most common one
            common = base[STEP_COLUMN].value_counts().index[0]
            base = base[base[STEP_COLUMN] == common]
    base_ids = set(base["run_id"]) if base is not None else set()
    base_step = base[STEP_COLUMN].iloc[0] if base is not None and STEP_COLUMN in base else None
    groups = list(df.groupby(key_cols, dropna=False, sort=True)) if key_cols else [((), df)]
    ids = configuration_ids(df)  # the one rule of what a configuration is
    base_pooled = base is not None and not makeup(base, ids).replicate
    bounds = {m: runs.metric_range(m) for m in metric_names}
    families = (lambda frame: set(frame[FAMILY_COLUMN].dropna())) if FAMILY_COLUMN in df else (lambda _f: set())
    # train_loss under hard CE and under soft_label are different functions: not compared (as the
    # run summary's headline refuses it, sweeps.driver.service.headline).
    own = {m for m in metric_names if own_objective(m) and len(families(df[full])) > 1}

    records = []
    makeups: list[Makeup] = []
    cells: list[tuple[int, str, Comparison]] = []
    partial_rows: set[int] = set()
    for i, (key, frame) in enumerate(groups):
        key = key if isinstance(key, tuple) else (key,)
        mk = makeup(frame, ids)
        makeups.append(mk)
        rec: dict[str, object] = dict(zip(by_names, key))
        rec.update({"group": "replicates" if mk.replicate else "pooled", "configs": mk.configs,
                    "seeds": mk.seeds})
        is_full = bool(full.loc[frame.index].all())
        if not is_full:
            partial_rows.add(i)
        for col, m in zip(metric_cols, metric_names):
            s = summarize(frame[col], confidence, bounds[m])
            low, high = (s.ci_low, s.ci_high) if mk.replicate else (math.nan, math.nan)
            rec.update({f"{m}.mean": s.mean, f"{m}.ci_low": low, f"{m}.ci_high": high,
                        f"{m}.sd": s.sd, f"{m}.n": s.n, f"{m}.min": s.minimum, f"{m}.max": s.maximum})
            if base is not None:
                diff = s.mean - float(base[col].mean())
                if set(frame["run_id"]) == base_ids:
                    c = Comparison(0.0, math.nan, "baseline")
                elif not is_full:
                    c = Comparison(math.nan, math.nan, "none", note="no test: stopped before its budget")
                elif base_step is not None and STEP_COLUMN in frame and set(frame[STEP_COLUMN]) != {base_step}:
                    c = Comparison(math.nan, math.nan, "none", note="no test: another budget than the baseline's")
                elif m in own and families(frame) != families(base):
                    c = Comparison(math.nan, math.nan, "none",
                                   note=f"no test: {m} is each loss family's own objective")
                elif base_pooled:
                    c = Comparison(diff, math.nan, "none", note="no test: the baseline pools configurations")
                elif not mk.replicate:
                    c = Comparison(diff, math.nan, "none", note="no test: pooled configurations")
                else:
                    c = compare_to_baseline(_seed_indexed(frame, col), _seed_indexed(base, col),
                                            confidence=confidence)
                cells.append((i, m, c))
        records.append(rec)

    p_adj = adjust_pvalues([c.p_value for _, _, c in cells], adjust, alpha)
    tested = int(np.isfinite([c.p_value for _, _, c in cells]).sum()) if cells else 0
    for (i, m, c), pa in zip(cells, p_adj):
        records[i].update({f"{m}.diff": c.diff, f"{m}.diff_ci_low": c.ci_low, f"{m}.diff_ci_high": c.ci_high,
                           f"{m}.p": c.p_value, f"{m}.p_adj": float(pa), f"{m}.test": c.test,
                           f"{m}.pairs": c.n_pairs, f"{m}.note": c.note})
        if power:
            adj_alpha = alpha / tested if adjust != "none" and tested > 1 else alpha
            n_needed = seeds_for_power(c, alpha=alpha, power=power_target, mde=mde)
            records[i].update({
                f"{m}.n_needed": n_needed,
                f"{m}.n_needed_adj": seeds_for_power(c, alpha=adj_alpha, power=power_target, mde=mde),
                f"{m}.n_needed_rough": bool(math.isfinite(n_needed) and power_is_rough(c))})
    fields = STAT_FIELDS + ((TEST_FIELDS + (POWER_FIELDS if power else ())) if base is not None else ())
    rows = pd.DataFrame.from_records(records, columns=by_names + list(GROUP_FIELDS)
                                     + [f"{m}.{f}" for m in metric_names for f in fields])

    table = AblationTable(title=runs.label, by=key_cols, by_names=by_names, metrics=metric_names,
                          directions={m: runs.direction(m) for m in metric_names}, rows=rows,
                          baseline=baseline, confidence=confidence, adjust=adjust, alpha=alpha,
                          power=power and base is not None, mde=mde, partial_rows=partial_rows,
                          makeups=makeups, bounds=bounds, own_objective=own)
    table.notes = _notes(table, runs, [c for _, _, c in cells], len(base) if base is not None else 0,
                         tested, power_target)
    return table


def _notes(table: AblationTable, runs: SweepRuns, comparisons: list[Comparison], n_base: int,
           tested: int, power_target: float) -> list[str]:
    """The sentences under a table, each written from what the table holds."""
    pooled_rows = table.pooled_rows()
    one_config = len(table.makeups) - len(pooled_rows)
    notes = [f"what a row is: {describe(table.makeups)}; a configuration = every resolved parameter "
             "equal, seed aside"]
    intervals = any(np.isfinite(table.rows[f"{m}.ci_low"]).any() for m in table.metrics)
    if one_config:
        notes.append("one-configuration rows: mean ± half-width of the "
                     f"{interval_text(table.confidence, None)}; n = seeds" if intervals else
                     "one-configuration rows: mean over their seeds; n = seeds")
    if pooled_rows:
        pooled = runs.pooled(table.by)
        names = ", ".join(runs.display_names(pooled).values()) or "other parameters"
        notes.append(f"pooled rows mix configurations that differ in {names}: mean (min–max over "
                     "their runs), a spread, not a confidence interval, and never tested; n = runs; "
                     "add those parameters to --by to separate them")
    for m, bounds in table.bounds.items():
        if bounds is None or not np.isfinite(table.rows[f"{m}.ci_low"]).any():
            continue
        size = runs.eval_examples()
        of = f" of the {size} evaluation examples (task.eval_size)" if size else ""
        notes.append(f"{m} is a share{of}, in [{bounds[0]:g}, {bounds[1]:g}]: its intervals are cut "
                     "to that range (the true mean lies in it, so the coverage is unchanged); a cut "
                     "interval prints as [low, high]")
    singles = int(sum((table.rows[f"{m}.n"] == 1).sum() for m in table.metrics))
    if singles:
        notes.append(f"{singles} group cell(s) have n = 1: no interval (± n/a), no test")
    rows = [i for i in range(len(table.rows)) if i not in table.pooled_rows()]
    flat = int(sum(((table.rows[f"{m}.n"] >= 2) & table.rows[f"{m}.ci_low"].isna()).iloc[rows].sum()
                   for m in table.metrics))
    if flat:
        notes.append(f"{flat} group cell(s) have seeds that all gave the same value (no spread): no "
                     "interval, since a zero-width one would claim the mean is known exactly")
    rep = runs.replicate_note(table.metrics)
    if rep:
        notes.append(rep)
    best = "; ".join(f"{m}: {'higher' if table.directions[m] == 'max' else 'lower'} is better"
                     for m in table.metrics)
    full = [i for i in range(len(table.rows)) if i not in table.partial_rows]
    compared = [m for m in table.metrics if m not in table.own_objective and np.isfinite(table.rows[f"{m}.mean"].to_numpy(float)[full]).sum() > 1]
    if compared:  # one full-budget group is the best of nothing: no bold, no note
        notes.append(f"best mean per metric in bold ({best}); bold describes, it does not test")
    ties = [m for m in compared if not table.best_rows(m)]
    for m in sorted(table.own_objective):
        notes.append(f"{m} is each loss family's own training objective (hard CE's and a soft-label "
                     "loss's are different functions): no best marked and no test across loss "
                     "families; compare a task metric")
    if ties:
        notes.append(f"every group has the same mean {', '.join(ties)}: nothing marked")
    if table.partial_rows:
        notes.append("rows whose step has a note in parentheses (stopped early, interrupted, failed, "
                     "running, below budget) hold runs that did not reach their budget, at the step "
                     "they reached: never averaged with full-budget runs, not tested, not marked best")
    elif "step" in table.by_names:
        notes.append("runs of different budgets (steps) have rows of their own; only rows at the "
                     "baseline's budget are tested")
    if table.baseline:
        notes += _test_notes(table, comparisons, n_base, tested, power_target)
    if runs.excluded:
        left = ", ".join(f"{n} {s}" for s, n in sorted(runs.excluded.items()))
        notes.append(f"left out {left} trial run(s) that did not reach their budget (--all-runs shows "
                     "them at the step they reached)")
    return notes


def _test_notes(table: AblationTable, comparisons: list[Comparison], n_base: int, tested: int,
                power_target: float) -> list[str]:
    """What Δ, p, p_adj and the power column are, naming only the tests the table holds."""
    adj = ADJUSTMENTS.choice(table.adjust).label
    kinds = {c.test for c in comparisons}
    runs_text = f"{n_base} run{'s' if n_base != 1 else ''}"
    notes = [f"Δ = group − baseline ({table.baseline}, {runs_text}), in brackets its "
             f"{table.confidence:.0%} CI on tested rows" if tested else
             f"Δ = group − baseline ({table.baseline}, {runs_text}): a difference of means, not tested"]
    if "paired" in kinds:
        notes.append("p (raw, two-sided): paired t-test over the seeds both rows share (scipy ttest_rel)"
                     + ("; marked † where Welch's test was used instead" if "welch" in kinds else ""))
    if "welch" in kinds:
        welch = sorted({c.note for c in comparisons if c.test == "welch"})
        notes.append("† p (raw, two-sided): " + "; ".join(welch) + " (unpaired; scipy ttest_ind, "
                     "equal_var=False)")
    partial = sorted({c.note for c in comparisons if c.test == "paired" and c.note})
    if partial:
        notes.append("; ".join(partial))
    if tested:
        if table.adjust != "none":
            notes.append(f"p_adj: {adj}-adjusted over the {tested} comparisons this table tests "
                         "(statsmodels multipletests); * p_adj<0.05, ** p_adj<0.01, *** p_adj<0.001")
        else:
            notes.append(f"no multiple-comparison adjustment (--adjust none) over {tested} comparisons: "
                         "* p<0.05, ** p<0.01, *** p<0.001 on raw p, expect about 1 false positive "
                         "in 20 tests")
    untested = sorted({c.note for c in comparisons if c.test == "none" and c.note})
    if untested:
        why = "; ".join(n.removeprefix("no test: ") for n in untested)
        notes.append(f"rows without a test say why in the p column ({why})"
                     + ("" if tested else "; nothing in this table is tested"))
    if table.power and tested:
        target = f"--mde {table.mde:g}" if table.mde is not None else "the observed |Δ|"
        adj_text = (f"; in parentheses at α/{tested} (what {adj} demands of the smallest p)"
                    if table.adjust != "none" and tested > 1 else "")
        notes.append(f"seeds {power_target:.0%}: seeds per group (paired: seed pairs) for "
                     f"{power_target:.0%} power to detect {target} with a two-sided t-test at "
                     f"α={table.alpha:g}, from the observed SD (statsmodels TTestPower / "
                     f"TTestIndPower){adj_text}; ∞: no difference to detect; computed only from "
                     f"at least {MIN_POWER_PAIRS} pairs (runs per group), n/a below; ~: from fewer "
                     f"than {ROUGH_POWER_PAIRS}, the SD and so the answer are rough")
    return notes


# -- rendering ---------------------------------------------------------------------------------

def _key_text(value: object) -> str:
    return value_text(value)


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


def _p_text(p: float) -> str:
    return "n/a" if not math.isfinite(p) else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def _seeds_text(n: float) -> str:
    return "n/a" if math.isnan(n) else ("∞" if math.isinf(n) else f"{int(n)}")


def _grid(table: AblationTable) -> tuple[list[str], list[list[_Cell]]]:
    """Header and cells as plain text; each renderer escapes and styles them."""
    r = table.rows
    one_n = table.single_n()
    one_m = len(table.metrics) == 1
    arrows = {"max": "↑", "min": "↓"}
    header = list(table.by_names) + [f"{m} {arrows[table.directions[m]]}" for m in table.metrics]
    header += ["n"] if one_n else [f"n ({m})" for m in table.metrics]
    pooled = table.pooled_rows()
    if pooled:
        header.append("configs")
    adjusted = table.adjust != "none"
    if table.baseline:
        for m in table.metrics:
            suffix = "" if one_m else f" ({m})"
            has_ci = bool(np.isfinite(r[f"{m}.diff_ci_low"].to_numpy(float)).any())
            header += [f"Δ {m} [{table.confidence:.0%} CI]" if has_ci else f"Δ {m}", f"p{suffix}"]
            if adjusted:
                header += [f"p_adj{suffix}"]
            if table.power:
                header += [f"seeds 80%{suffix}"]
    best = {m: table.best_rows(m) for m in table.metrics}
    dec = {m: _decimals(r[f"{m}.mean"].to_numpy(float)) for m in table.metrics}
    keys = {name: distinct_texts(r[name]) for name in table.by_names}
    cells: list[list[_Cell]] = []
    for i in range(len(r)):
        row = [_Cell(keys[name][i]) for name in table.by_names]
        for m in table.metrics:
            mean, lo, hi = (float(r.iloc[i][f"{m}.{f}"]) for f in ("mean", "ci_low", "ci_high"))
            if i in pooled:  # a spread over configurations, never an interval
                low, high = float(r.iloc[i][f"{m}.min"]), float(r.iloc[i][f"{m}.max"])
                text = f"{_num(mean, dec[m])} ({_num(low, dec[m])}–{_num(high, dec[m])})"
            elif int(r.iloc[i][f"{m}.n"]) >= 2 and not math.isfinite(lo):  # seeds agree: no interval
                text = f"{_num(mean, dec[m])} (no spread)"
            elif math.isfinite(lo) and math.isfinite(hi) and not math.isclose(mean - lo, hi - mean,
                                                                                rel_tol=1e-9, abs_tol=1e-12):
                text = f"{_num(mean, dec[m])} [{_num(lo, dec[m])}, {_num(hi, dec[m])}]"  # cut at a bound
            else:
                text = f"{_num(mean, dec[m])} ± {_num((hi - lo) / 2, dec[m])}"
            row.append(_Cell(text, i in best[m], True))
        ns = [int(r.iloc[i][f"{m}.n"]) for m in table.metrics]
        row += [_Cell(str(n), numeric=True) for n in (ns[:1] if one_n else ns)]
        if pooled:
            row.append(_Cell(str(int(r.iloc[i]["configs"])), numeric=True))
        if table.baseline:
            for m in table.metrics:
                test = r.iloc[i][f"{m}.test"]
                width = 2 + adjusted + table.power
                if test == "baseline":
                    row += [_Cell("baseline", numeric=True)] + [_Cell("—", numeric=True)] * (width - 1)
                    continue
                diff, lo, hi = (float(r.iloc[i][f"{m}.{f}"]) for f in ("diff", "diff_ci_low", "diff_ci_high"))
                p, pa = float(r.iloc[i][f"{m}.p"]), float(r.iloc[i][f"{m}.p_adj"])
                dagger = "†" if test == "welch" else ""
                ci = f" [{_num(lo, dec[m], signed=True)}, {_num(hi, dec[m], signed=True)}]" \
                    if math.isfinite(lo) and math.isfinite(hi) else ""
                row.append(_Cell(_num(diff, dec[m], signed=True) + ci, numeric=True))
                if test == "none":  # the p column says why there is no test
                    note = str(r.iloc[i][f"{m}.note"] or "no test")
                    row += [_Cell(note, numeric=True)] + [_Cell("—", numeric=True)] * (width - 2)
                    continue
                if adjusted:
                    row += [_Cell(_p_text(p) + dagger, numeric=True),
                            _Cell(_p_text(pa) + significance_marker(pa), numeric=True)]
                else:
                    row.append(_Cell(_p_text(p) + significance_marker(p) + dagger, numeric=True))
                if table.power:
                    n, n_adj = float(r.iloc[i][f"{m}.n_needed"]), float(r.iloc[i][f"{m}.n_needed_adj"])
                    rough = "~" if bool(r.iloc[i][f"{m}.n_needed_rough"]) else ""
                    text = rough + _seeds_text(n)
                    if adjusted and not math.isnan(n_adj) and n_adj != n:
                        text += f" ({rough}{_seeds_text(n_adj)})"
                    row.append(_Cell(text, numeric=True))
        cells.append(row)
    return header, cells


@table_format("md", "GitHub Markdown, best means in bold, notes as a list")
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
_LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "−": "$-$", "—": "---", "–": "--", "†": r"$^\dagger$",
                  "↑": r"$\uparrow$", "↓": r"$\downarrow$", "≥": r"$\geq$"}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters and map the few non-ASCII symbols the tables use."""
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
    for sym, rep in _LATEX_SYMBOLS.items():
        out = out.replace(sym, rep)
    return out


@table_format("latex", "a booktabs tabular, notes as comments")
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


@table_format("csv", "every statistic at full precision plus <metric>.best columns")
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


@table_format("html", "a self-contained HTML page")
def to_html_page(table: AblationTable) -> str:
    """`to_html` as a whole page (``slsweep table --format html``)."""
    return to_html(table, full_document=True)


def default_baseline(runs: SweepRuns) -> str | None:
    """The automatic baseline: ``loss=hard`` (the `--baseline` syntax, `parse_baseline`) when
    hard-label runs sit beside other loss families, else None."""
    col = FAMILY_COLUMN
    if col in runs.trials and runs.trials[col].nunique() > 1 and (runs.trials[col] == "hard").any():
        return selector_text([(FAMILY_PARAM, "hard")])
    return None


def ablation_table_text(runs: SweepRuns, metric: str | None = None, by: Sequence[str] | None = None,
                        baseline: str | None = None, fmt: str = "md", *, power: bool = False) -> str:
    """The default ablation table as text (the summary printed after `slsweep run`).

    Baseline: `baseline`, else ``loss=hard`` when hard-label runs sit beside other families.
    """
    table = ablation_table(runs, by, [metric] if metric else None, baseline or default_baseline(runs),
                           power=power)
    return render(table, fmt)


def render(table: AblationTable, fmt: str) -> str:
    """Render `table` in format `fmt`: a name of `sweeps.report.choices.TABLE_FORMATS` (``md``,
    ``latex``, ``csv``, ``html`` (a whole page), or one a plug-in declared there).

    Raises:
        ReportError: unknown `fmt` (``--format 'x': choose one of md, latex, csv, html``).
    """
    if fmt not in TABLE_FORMATS:
        raise ReportError(TABLE_FORMATS.unknown(fmt))
    return TABLE_FORMATS.get(fmt)(table)
