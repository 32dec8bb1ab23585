"""Figures and tables never claim more than the data hold (issue 20), on real MLflow stores with known
values (`report_fixtures.fill_search_store`): a TPE-like sweep (every trial its own configuration,
one seed) and a replicate sweep (one configuration per eta, 2-5 seeds, hard CE on 5 seeds)."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.power import TTestPower

from helpers import table_row
from report_fixtures import (  # noqa: F401  (fixtures)
    REP_HARD,
    REP_SOFT,
    SEARCH_TRIALS,
    SearchStore,
    report_store,
    search_store,
)
from sweeps.report import plots
from sweeps.report.groups import makeup
from sweeps.report.html import build_report
from sweeps.report.runs import SweepRuns, configuration_ids, load_sweep
from sweeps.report.stats import compare_to_baseline, seeds_for_power, summarize
from sweeps.report.tables import ablation_table, to_csv, to_latex, to_markdown


@pytest.fixture(scope="module")
def tpe(search_store: SearchStore) -> SweepRuns:
    return load_sweep("tpe", tracking_uri=search_store.uri)


@pytest.fixture(scope="module")
def reps(search_store: SearchStore) -> SweepRuns:
    return load_sweep("reps", tracking_uri=search_store.uri)


def _joined(ax) -> list:
    """Line2Ds through more than one point, reference lines (runs without x) aside."""
    return [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 1 and ln.get_gid() != plots.REFERENCE_GID]


def _interval_segments(ax) -> list[tuple[float, float]]:
    """The (low, high) of every vertical interval (errorbar) drawn on `ax`."""
    from matplotlib.collections import LineCollection

    out = []
    for coll in ax.collections:
        if isinstance(coll, LineCollection):
            out += [(float(seg[:, 1].min()), float(seg[:, 1].max())) for seg in coll.get_segments()]
    return out


# -- what a group is ---------------------------------------------------------------------------------

def test_a_configuration_is_every_resolved_param_but_the_seed(tpe: SweepRuns, reps: SweepRuns) -> None:
    assert configuration_ids(tpe.trials).nunique() == len(SEARCH_TRIALS) + 1  # 8 soft + hard
    assert configuration_ids(reps.trials).nunique() == len(REP_SOFT) + 1
    by_eta = configuration_ids(reps.trials, ignore=["params.loss.eta"])
    assert by_eta.nunique() == 2  # soft labels differ in eta alone; hard CE is the other
    soft = reps.trials[reps.trials["params.loss.family"] == "soft_label"]
    mk = makeup(soft)
    assert (mk.configs, mk.seeds, mk.per_config, mk.replicate) == (5, 5, (2, 5), False)
    assert mk.text() == "5 configurations, 2-5 seeds each"
    assert makeup(reps.trials[reps.trials["params.loss.family"] == "hard"]).text() == "1 configuration, 5 seeds"


def test_pooled_configurations_never_get_an_interval_or_a_p_value(tpe: SweepRuns, reps: SweepRuns) -> None:
    table = ablation_table(tpe, ["psi"], ["exact_match"], "loss=hard", power=True)
    for psi in ("gaussian", "laplace", "triangular"):
        row = table_row(table, psi=psi)
        values = [t[4] for t in SEARCH_TRIALS if t[0] == psi]
        assert row["group"] == "pooled" and row["configs"] == len(values) and row["seeds"] == 1
        assert math.isnan(row["exact_match.ci_low"]) and math.isnan(row["exact_match.p"])
        assert math.isnan(row["exact_match.diff_ci_low"]) and math.isnan(row["exact_match.n_needed"])
        assert (row["exact_match.min"], row["exact_match.max"]) == (min(values), max(values))
    md = to_markdown(table)
    lap = [v for p, *_, v in SEARCH_TRIALS if p == "laplace"]
    assert f"| laplace | {np.mean(lap):.4f} ({min(lap):.4f}–{max(lap):.4f}) | 3 | 3 |" in md
    assert "no test: pooled configurations" in md and "*" not in md.split("\n- ")[0].replace("**", "")
    assert any("3 rows pool configurations (3 configurations, 1 seed each; 2 configurations, 1 seed each)"
               in n for n in table.notes)
    assert any("a spread, not a confidence interval, and never tested" in n for n in table.notes)
    assert any("nothing in this table is tested" in n for n in table.notes)
    csv = pd.read_csv(io.StringIO(to_csv(table)))
    assert csv.loc[csv["group"] == "pooled", ["exact_match.ci_low", "exact_match.p"]].isna().all().all()
    assert "–" not in to_latex(table) and "--" in to_latex(table)
    # A baseline that pools configurations tests nothing either.
    fam = ablation_table(reps, ["family"], ["exact_match"], "loss=soft_label")
    assert fam.rows["exact_match.p"].isna().all()
    assert set(fam.rows["exact_match.note"].dropna()) - {""} == {"no test: the baseline pools configurations"}
    # ... and the figures draw no interval on a pooled group.
    ax = plots.psi_bars(tpe).axes[0]
    assert not _interval_segments(ax) and [t.get_text() for t in ax.texts].count("3 configs") == 2
    assert "CI" not in ax.get_title() and "no interval" in plots.caption(plots.psi_bars(tpe))
    bars = plots.psi_bars(reps).axes[0]  # hard: one configuration, 5 seeds; soft: 5 configurations
    assert len(_interval_segments(bars)) == 1


def test_a_search_sweep_with_unique_x_draws_no_line(tpe: SweepRuns) -> None:
    for kind, x in (("eta-curve", 1), ("lambda-curve", 2)):
        fig = plots.plot(tpe, kind)
        ax = fig.axes[0]
        assert not _joined(ax), kind  # no Line2D through more than one point
        assert not _interval_segments(ax) and not [c for c in ax.collections if c.get_gid() != plots.REFERENCE_GID
                                                   and type(c).__name__ == "PolyCollection"]
        xs = sorted(x_ for c in ax.collections for x_ in np.asarray(c.get_offsets())[:, 0] if len(c.get_offsets()))
        assert xs == sorted(t[x] for t in SEARCH_TRIALS)  # each trial one dot
        title, cap = ax.get_title(), plots.caption(fig)
        assert "CI" not in title and "one dot per trial" in title
        assert "No line: no two configurations differ in" in cap and "No interval" in cap
        assert "marker size: lr" in cap  # lr carries the 0.11 outlier: most associated with exact_match


def test_lines_join_only_configurations_that_differ_in_x(reps: SweepRuns) -> None:
    fig = plots.eta_curve(reps)
    ax = fig.axes[0]
    lines = _joined(ax)
    assert len(lines) == 1
    np.testing.assert_allclose(lines[0].get_xdata(), sorted(REP_SOFT))
    np.testing.assert_allclose(lines[0].get_ydata(), [np.mean(REP_SOFT[e]) for e in sorted(REP_SOFT)])
    title = ax.get_title().replace("\n", " ")
    assert "lines join configurations differing in eta alone" in title
    assert "95% CI over seeds (cut to [0, 1])" in title


def test_a_proportions_interval_stays_within_0_and_1(reps: SweepRuns) -> None:
    assert reps.metric_range("exact_match") == (0.0, 1.0) and reps.metric_range("mae") is None
    table = ablation_table(reps, ["eta"], ["exact_match"])
    for eta, values in REP_SOFT.items():
        row = table_row(table, eta=eta)
        lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
        assert (row["exact_match.ci_low"], row["exact_match.ci_high"]) == pytest.approx((max(lo, 0), min(hi, 1)))
        assert 0 <= row["exact_match.ci_low"] <= row["exact_match.ci_high"] <= 1
    near_one = table_row(table, eta=0.5)
    assert near_one["exact_match.ci_high"] == 1.0  # the uncut interval passes 1
    assert "0.9467 [0.8347, 1.0000]" in to_markdown(table)
    assert any("exact_match is a share of the 500 evaluation examples" in n and "cut" in n for n in table.notes)
    for fig in (plots.eta_curve(reps), plots.psi_bars(reps)):
        segs = _interval_segments(fig.axes[0])
        assert segs and all(0 <= lo <= hi <= 1 for lo, hi in segs)
    curves = plots.learning_curves(reps).axes[0]
    bands = [p.vertices[:, 1] for c in curves.collections for p in c.get_paths()]
    assert bands and all(((v >= 0) & (v <= 1)).all() for v in bands)
    s = summarize([0.99, 0.95, 0.90], bounds=(0.0, 1.0))
    assert s.cut and s.ci_high == 1.0 and not summarize([0.99, 0.95, 0.90]).cut


def test_constant_paired_differences_give_no_test(reps: SweepRuns) -> None:
    table = ablation_table(reps, ["family", "eta"], ["exact_match"], "loss=hard", power=True)
    row = table_row(table, family="soft_label", eta=0.1)  # +0.125 on both seeds (up to rounding)
    assert row["exact_match.test"] == "none" and math.isnan(row["exact_match.p"])
    assert row["exact_match.note"] == "no test: differences do not vary"
    assert row["exact_match.diff"] == pytest.approx(0.125) and math.isnan(row["exact_match.diff_ci_low"])
    line = next(ln for ln in to_markdown(table).splitlines() if ln.startswith("| soft_label | 0.1 |"))
    assert "no test: differences do not vary" in line and "\\*" not in line and "| 0.000" not in line
    exact = compare_to_baseline(pd.Series([0.625, 0.75], index=[0.0, 1.0]), pd.Series([0.5, 0.625], index=[0.0, 1.0]))
    assert exact.test == "none" and math.isnan(exact.p_value) and math.isnan(seeds_for_power(exact))
    flat = compare_to_baseline(pd.Series([0.5, 0.5], index=[5.0, 6.0]), pd.Series([0.4, 0.4], index=[0.0, 1.0]))
    assert flat.test == "none" and flat.note == "no test: values do not vary"


def test_power_needs_three_pairs_and_is_rough_below_five(reps: SweepRuns) -> None:
    table = ablation_table(reps, ["family", "eta"], ["exact_match"], "loss=hard", power=True)
    two, three, five = (table_row(table, family="soft_label", eta=e) for e in (0.2, 0.3, 0.4))
    assert two["exact_match.test"] == "paired" and two["exact_match.pairs"] == 2
    assert math.isfinite(two["exact_match.p"]) and math.isnan(two["exact_match.n_needed"])
    assert three["exact_match.pairs"] == 3 and math.isfinite(three["exact_match.n_needed"])
    assert three["exact_match.n_needed_rough"] and not five["exact_match.n_needed_rough"]
    diffs = np.subtract(REP_SOFT[0.4], REP_HARD)
    want = math.ceil(TTestPower().solve_power(effect_size=abs(diffs.mean()) / diffs.std(ddof=1), alpha=0.05,
                                              power=0.8))
    assert five["exact_match.n_needed"] == want
    md = to_markdown(table)
    cells = {ln.split(" | ")[1]: ln.rstrip(" |").rsplit(" | ", 1)[1] for ln in md.splitlines()
             if ln.startswith("| soft_label |")}
    assert cells["0.2"] == "n/a" and cells["0.3"].startswith("~") and not cells["0.4"].startswith("~")
    assert any("computed only from at least 3 pairs" in n and "~: from fewer than 5" in n for n in table.notes)


def test_every_dagger_has_its_footnote(reps: SweepRuns, tpe: SweepRuns) -> None:
    import dataclasses

    # Soft-label eta 0.3 on seeds 10-12 shares no seed with hard CE: Welch's test, marked †.
    shifted = reps.trials.copy()
    moved = (shifted["params.loss.eta"] == 0.3)
    shifted.loc[moved, "seed"] = shifted.loc[moved, "seed"] + 10
    table = ablation_table(dataclasses.replace(reps, trials=shifted), ["family", "eta"], ["exact_match"],
                           "loss=hard")
    assert table_row(table, family="soft_label", eta=0.3)["exact_match.test"] == "welch"
    md = to_markdown(table)
    body, notes = md.split("\n- ", 1)
    assert "†" in body and any(n.startswith("† p (raw, two-sided): Welch's t-test") for n in table.notes)
    assert "paired t-test over the seeds both rows share" in notes and "marked † where Welch" in notes
    plain = to_markdown(ablation_table(reps, ["family", "eta"], ["exact_match"], "loss=hard"))
    assert "†" not in plain and "Welch" not in plain


def test_report_page_says_what_its_groups_are(tpe: SweepRuns) -> None:
    page = build_report(tpe, by=["psi"], figures=[])
    assert "9 full-budget observations (9 configurations, 1 seed each)" in page
    # The confirm command it prints finds this store from any folder (a page is read anywhere).
    import dataclasses
    import html
    import shlex

    from sweeps.report.hints import confirm_hint
    from sweeps.store.schema import sqlite_path

    folder = sqlite_path(tpe.tracking_uri).parent
    assert f"--baseline loss=hard --runs-dir {shlex.quote(str(folder))}" in html.unescape(page)
    server = confirm_hint(dataclasses.replace(tpe, tracking_uri="http://mlflow:5000"))
    assert server.endswith("--baseline loss=hard --tracking-uri http://mlflow:5000")
    assert "3 configurations, 1 seed each" in page and "pooled" in page
    assert "95% CI [" not in page


def test_a_pooled_mean_that_rounds_differently_still_ties(report_store, tmp_path) -> None:
    """Three runs at 0.1 average to 0.10000000000000002: that is the same mean as one run at 0.1,
    so nothing is bold in the table and nothing orange in psi-bars (found on a real small sweep
    whose every trial scored exact_match 0.1)."""
    from matplotlib.colors import to_rgba
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from sweeps.report.stats import best_positions

    assert np.mean([0.1, 0.1, 0.1]) != 0.1  # the float fact the rule must absorb
    assert best_positions([0.1, np.mean([0.1] * 3)], "max") == set()
    assert best_positions([0.1, 0.2, 0.2 + 1e-17, math.nan], "max") == {1, 2}
    assert best_positions([0.3, 0.1, np.mean([0.1] * 3)], "min") == {1, 2}
    uri = report_store.empty_store(tmp_path / "tie")
    client = MlflowClient(uri)
    exp = client.create_experiment("tie")
    pid = client.create_run(exp, run_name="tie", tags={"slsweep.kind": "sweep",
                                                       "slsweep.sweep_id": "tie"}).info.run_id
    client.log_batch(pid, params=[Param("metric.name", "exact_match"), Param("metric.mode", "max"),
                                  Param("search.algorithm", "tpe")])
    for i, (psi, eta) in enumerate([("uniform", 0.1), ("uniform", 0.2), ("uniform", 0.3),
                                    ("laplace", 0.1), (None, None)]):
        params = {"loss.family": "hard" if psi is None else "soft_label", "seed": "0",
                  "task.name": "counting", "task.eval_size": "40", "train.steps": "60"}
        if psi:
            params.update({"loss.psi": psi, "loss.eta": repr(eta), "space.loss.psi": psi,
                           "space.loss.eta": repr(eta)})
        rid = client.create_run(exp, run_name=f"t{i}", tags={
            "mlflow.parentRunId": pid, "slsweep.kind": "trial", "slsweep.sweep_id": "tie",
            "seed": "0", "trial_id": f"t{i}"}).info.run_id
        client.log_batch(rid, metrics=[Metric("exact_match", 0.1, 0, 60)],
                         params=[Param(k, v) for k, v in params.items()])
        client.set_tag(rid, "last_step", "60")
        client.set_terminated(rid, "FINISHED")
    client.set_terminated(pid, "FINISHED")
    runs = load_sweep("tie", tracking_uri=uri)
    table = ablation_table(runs, ["psi"], ["exact_match"])
    assert table_row(table, psi="uniform")["exact_match.mean"] != 0.1  # pooled: 3 configurations
    assert table.best_rows("exact_match") == set()
    assert "**" not in to_markdown(table).split("\n", 1)[1]
    assert any("same mean exact_match: nothing marked" in n for n in table.notes)
    fig = plots.psi_bars(runs)
    ax, orange = fig.axes[0], to_rgba("tab:orange")
    colours = [to_rgba(ln.get_markeredgecolor()) for ln in ax.lines]
    colours += [tuple(c) for coll in ax.collections for c in coll.get_facecolor()]
    assert colours and orange not in colours
    assert "none marked" in plots.caption(fig) and "orange" not in plots.caption(fig)


def test_the_run_summary_says_when_its_best_is_a_tie() -> None:
    """'Best at full budget: exact_match=0.1 with ...' named one trial where three tied: the
    summary says 'tied by 3 trials' by the same rule as the tables (best_positions)."""
    from sweeps.driver.service import _tie_text

    ranked = pd.DataFrame({"trial": ["t02", "t05", "t07", "t01"],
                           "exact_match": [0.1, np.mean([0.1] * 3), 0.1, 0.05]})
    assert _tie_text(ranked, "exact_match", "max") == "tied by 3 trials (t02, t05, t07)"
    assert _tie_text(ranked.iloc[[0, 1, 2]], "exact_match", "max") == "tied by 3 trials (t02, t05, t07)"
    assert _tie_text(ranked.iloc[[0, 3]], "exact_match", "max") == ""  # a clear best
    assert _tie_text(ranked.iloc[[0]], "exact_match", "max") == ""
    assert _tie_text(ranked.iloc[[3, 0]], "exact_match", "min") == ""


def test_one_group_is_the_best_of_nothing(tpe: SweepRuns) -> None:
    """A one-trial sweep (or one full-budget group) marks nothing best: no bold, no 'best mean'
    note, no orange; the report names its group as the only one."""
    import dataclasses

    from sweeps.report.stats import best_positions

    assert best_positions([0.15], "max") == set() and best_positions([math.nan, 0.15], "min") == set()
    one = dataclasses.replace(tpe, trials=tpe.trials.iloc[:1])
    table = ablation_table(one, metrics=["exact_match"])
    assert len(table.rows) == 1 and table.best_rows("exact_match") == set()
    assert "**" not in to_markdown(table).split("\n", 1)[1]
    assert not any("bold" in n or "same mean" in n for n in table.notes)
    fig = plots.psi_bars(one, by=["family"])
    assert "orange" not in plots.caption(fig) and "none marked" not in plots.caption(fig)
    page = build_report(one, figures=[])
    assert "The only full-budget group (exact_match, max)" in page and "Best group by mean" not in page
    assert "The best mean is descriptive" not in page


def test_seeds_that_agree_get_no_zero_width_interval(reps: SweepRuns) -> None:
    """Two seeds both at exact_match 0.1 (4 of 40 examples each) printed '0.1000 ± 0.0000', a 95%
    interval claiming the mean is known exactly: they now get no interval, say 'no spread', and
    the figures draw no bar and say why."""
    import dataclasses

    s = summarize([0.1, 0.1], bounds=(0.0, 1.0))
    assert s.no_spread and s.sd == 0 and math.isnan(s.ci_low) and math.isnan(s.ci_high)
    assert not summarize([0.1]).no_spread and not summarize([0.1, 0.2]).no_spread
    trials = reps.trials.copy()
    flat = trials["params.loss.eta"] == 0.2
    trials.loc[flat, "metrics.exact_match"] = 0.1
    runs = dataclasses.replace(reps, trials=trials)
    table = ablation_table(runs, ["family", "eta"], ["exact_match"], "loss=hard")
    row = table_row(table, family="soft_label", eta=0.2)
    assert row["exact_match.n"] == 2 and row["exact_match.sd"] == 0 and math.isnan(row["exact_match.ci_low"])
    md = to_markdown(table)
    assert "| soft_label | 0.2 | 0.1000 (no spread) | 2 |" in md and "± 0.0000" not in md
    assert any(n.startswith("1 group cell(s) have seeds that all gave the same value") for n in table.notes)
    fig = plots.eta_curve(runs)
    assert "1 configuration(s) have 2 or more seeds that all gave the same value" in plots.caption(fig)
    assert "n=2, no spread" in [t.get_text() for t in fig.axes[0].texts]
    assert all(hi - lo > 0 for lo, hi in _interval_segments(fig.axes[0]))
