"""Numbers you can trust (issue 12), on real MLflow stores with known values: replicates are not
seeds, one budget per comparison, adjusted p-values equal statsmodels', power equals statsmodels',
honest figures (y-ranges, n = 1, captions, titles that fit), and `slsweep confirm`'s plan."""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower
from typer.testing import CliRunner

from helpers import table_row
from report_fixtures import Store, report_store  # noqa: F401  (fixture)
from sweeps.errors import SpecError
from sweeps.report import plots
from sweeps.report.commands import register
from sweeps.report.fmt import distinct_texts, value_text
from sweeps.report.runs import SweepRuns, load_sweep
from sweeps.report.stats import Comparison, adjust_pvalues, seeds_for_power
from sweeps.report.tables import ablation_table, to_csv, to_markdown

T0 = 1_750_000_000_000
BUDGET = 300

# exact_match per seed (0..7) at the full budget; hard is the baseline.
VALUES = {
    "hard":            [0.40, 0.42, 0.44, 0.41, 0.43, 0.39, 0.45, 0.42],
    "gaussian":        [0.43, 0.44, 0.47, 0.44, 0.45, 0.43, 0.47, 0.46],  # +0.025 on average, tight
    "ntil":            [0.41, 0.44, 0.43, 0.43, 0.42, 0.41, 0.46, 0.42],  # +0.0075, noisy
    "label_smoothing": [0.38, 0.43, 0.41, 0.40, 0.44, 0.37, 0.44, 0.41],  # -0.01
}


@dataclass
class Writer:
    client: object
    exp: str
    clock: int = T0

    def tick(self) -> int:
        self.clock += 1000
        return self.clock

    def sweep(self, sweep_id: str, *, algorithm: str = "grid", seeds: int = 8) -> str:
        from mlflow.entities import Param

        pid = self.client.create_run(self.exp, start_time=self.tick(), run_name=sweep_id, tags={
            "slsweep.kind": "sweep", "slsweep.sweep_id": sweep_id, "slsweep.spec_name": "trust",
            "metric.name": "exact_match", "metric.mode": "max"}).info.run_id
        params = {"metric.name": "exact_match", "metric.mode": "max", "search.algorithm": algorithm,
                  "search.seeds": str(seeds), "train.steps": str(BUDGET)}
        self.client.log_batch(pid, params=[Param(k, v) for k, v in params.items()])
        self.client.log_text(pid, "name: trust\ntask: {name: counting}\nloss: {family: soft_label}\n"
                             f"search_space: baselines.yaml\nsearch: {{algorithm: {algorithm}, seeds: {seeds}}}\n"
                             f"train: {{steps: {BUDGET}}}\n", "spec.yaml")
        return pid

    def trial(self, pid: str, sweep_id: str, family: str, seed: int, value: float, *, step: int = BUDGET,
              status: str = "FINISHED", reason: str | None = None, extra: dict | None = None) -> str:
        from mlflow.entities import Metric, Param, RunTag

        tags = {"mlflow.parentRunId": pid, "slsweep.kind": "trial", "slsweep.sweep_id": sweep_id,
                "trial_id": f"{sweep_id}-{family}-{seed}-{step}", "seed": str(seed), "loss": family}
        rid = self.client.create_run(self.exp, start_time=self.tick(), tags=tags).info.run_id
        params = {"loss.family": family, "seed": str(seed), "task.name": "counting", "name": "trust",
                  "train.steps": str(BUDGET), "train.lr": "0.001", "space.loss.family": family,
                  **(extra or {})}
        metrics = [Metric("exact_match", value, T0 + step, step), Metric("step", step, T0 + step, step),
                   Metric("mae", 2.0 - value, T0 + step, step)]
        if step > 100:
            metrics += [Metric("exact_match", value / 2, T0 + 100, 100), Metric("step", 100, T0 + 100, 100)]
        self.client.log_batch(rid, metrics=metrics, params=[Param(k, v) for k, v in params.items()],
                              tags=[RunTag("slsweep.stop_reason", reason)] if reason else [])
        self.client.set_terminated(rid, status=status, end_time=self.tick())
        return rid


@pytest.fixture(scope="module")
def trust_store(report_store: Store, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """Experiment ``trust``: sweep ``s1`` (4 families x 8 seeds, plus an ASHA-stopped, an
    interrupted and a below-budget run) and ``s2``, a rerun of hard and gaussian seeds 0-7 (hard
    identical; gaussian seed 0 differs by 0.02)."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("trust")
    uri = report_store.empty_store(folder)
    client = MlflowClient(uri)
    w = Writer(client, client.create_experiment("trust", artifact_location=(folder / "a").as_uri()))
    p1 = w.sweep("s1")
    for family, values in VALUES.items():
        for seed, v in enumerate(values):
            w.trial(p1, "s1", family, seed, v)
    w.trial(p1, "s1", "gaussian", 8, 0.90, step=100, status="KILLED", reason="early_stopping")
    w.trial(p1, "s1", "ntil", 8, 0.95, step=10, status="KILLED", reason="interrupted")
    w.trial(p1, "s1", "hard", 9, 0.99, step=200, status="FINISHED")  # an older, shorter budget
    client.set_terminated(p1, "FINISHED")
    p2 = w.sweep("s2")
    for family in ("hard", "gaussian"):
        for seed, v in enumerate(VALUES[family]):
            w.trial(p2, "s2", family, seed, v + (0.02 if (family, seed) == ("gaussian", 0) else 0.0))
    client.set_terminated(p2, "FINISHED")
    return uri, folder


# -- replicates are not seeds ----------------------------------------------------------------------

def test_replicates_are_one_observation_with_a_reproducibility_check(trust_store) -> None:
    uri, _ = trust_store
    one = load_sweep("s1", tracking_uri=uri)
    both = load_sweep("trust", tracking_uri=uri, all_sweeps=True)
    assert len(one.trials) == 32 and one.replicates.empty and one.replicate_note() is None
    # 16 reruns of s1's hard and gaussian seeds: 48 runs, 32 observations.
    assert len(both.raw_trials) == 48 and len(both.trials) == 32
    assert len(both.replicates) == 16 and set(both.replicates["runs"]) == {2}
    table = ablation_table(both, ["family"], ["exact_match"], "family=hard")
    hard = table_row(table, family="hard")
    assert hard["exact_match.n"] == 8  # not 16
    assert hard["exact_match.mean"] == pytest.approx(np.mean(VALUES["hard"]))
    assert hard["exact_match.ci_low"] < hard["exact_match.mean"]  # a real interval, not ± 0
    gauss = table_row(table, family="gaussian")
    first = [VALUES["gaussian"][0] + 0.01] + VALUES["gaussian"][1:]  # seed 0: mean of 0.43, 0.45
    assert gauss["exact_match.n"] == 8 and gauss["exact_match.mean"] == pytest.approx(np.mean(first))
    note = next(n for n in table.notes if "replicates are not seeds" in n)
    assert "32 runs" in note and "16 observation(s)" in note
    assert re.search(r"replicates differ \(exact_match by up to 0\.02\b", note)
    hard_only = load_sweep("trust", tracking_uri=uri, all_sweeps=True)
    hard_only.trials = hard_only.trials[hard_only.trials["params.loss.family"] == "hard"]
    hard_only.replicates = hard_only.replicates[hard_only.replicates["exact_match.spread"] == 0]
    assert hard_only.replicate_note(["exact_match"]).endswith("replicates identical")


# -- one budget per comparison ---------------------------------------------------------------------

def test_stopped_and_short_runs_are_left_out_by_default(trust_store) -> None:
    uri, _ = trust_store
    runs = load_sweep("s1", tracking_uri=uri)
    assert runs.excluded == {"below budget": 1, "interrupted": 1, "stopped early": 1}
    assert set(runs.trials["final_step"]) == {BUDGET} and runs.trials["full_budget"].all()
    table = ablation_table(runs, ["family"], ["exact_match"], "family=hard")
    assert "step" not in table.by_names
    best = table.rows.iloc[sorted(table.best_rows("exact_match"))[0]]
    assert best["family"] == "gaussian"  # not the step-100 0.90, the step-10 0.95 or the 200-step 0.99
    assert any("left out 1 below budget, 1 interrupted, 1 stopped early trial run(s)" in n for n in table.notes)
    # A curve whose x has one full-budget value says so, not that x has one value at all.
    import dataclasses

    from sweeps.report.runs import ReportError

    one_x = dataclasses.replace(runs, trials=runs.trials.assign(**{"params.loss.eta": 0.1}))
    with pytest.raises(ReportError, match=r"fewer than 2 values among the full-budget runs of .*"
                                          r"\(3 run\(s\) stopped before their budget"):
        plots.eta_curve(one_x)


def test_all_runs_shows_stopped_runs_at_their_step_never_averaged(trust_store) -> None:
    uri, _ = trust_store
    runs = load_sweep("s1", tracking_uri=uri, include_unfinished=True)
    table = ablation_table(runs, ["family"], ["exact_match"], "family=hard")
    steps = dict(zip(zip(table.rows["family"], table.rows["step"]), table.rows["exact_match.n"]))
    assert steps == {("gaussian", "100 (stopped early)"): 1, ("gaussian", "300"): 8, ("hard", "200 (below budget)"): 1,
                     ("hard", "300"): 8, ("label_smoothing", "300"): 8, ("ntil", "10 (interrupted)"): 1,
                     ("ntil", "300"): 8}
    assert table_row(table, family="gaussian", step="300")["exact_match.mean"] == pytest.approx(
        np.mean(VALUES["gaussian"]))  # the stopped 0.90 is not in the mean
    for i in table.partial_rows:
        assert math.isnan(table.rows.iloc[i]["exact_match.p"])
    assert {table.rows.iloc[i]["family"] for i in table.best_rows("exact_match")} == {"gaussian"}
    assert table_row(table, family="gaussian", step="300").name in table.best_rows("exact_match")
    md = to_markdown(table)
    assert "| ntil | 10 (interrupted) | 0.9500 ± n/a | 1 | n/a |" in md
    # psi-bars draws a stopped run beside its group; one whose group has no full-budget run is
    # counted as not drawn, never claimed drawn (5 ASHA-stopped trials read 'drawn apart, grey').
    import dataclasses

    fig = plots.psi_bars(runs, by=["family"])
    assert len(fig.axes[0].collections[-1].get_offsets()) == 3
    assert "3 run(s) stopped before their budget are drawn apart" in plots.caption(fig)
    no_gauss = runs.trials[~((runs.trials["params.loss.family"] == "gaussian") & runs.trials["full_budget"])]
    fig = plots.psi_bars(dataclasses.replace(runs, trials=no_gauss), by=["family"])
    assert "2 run(s) stopped before their budget are drawn apart" in plots.caption(fig)
    assert "1 run(s) stopped before their budget are not drawn" in plots.caption(fig)


def test_status_best_is_a_full_budget_value(trust_store) -> None:
    from sweeps.driver.service import sweep_status

    uri, folder = trust_store
    text = sweep_status(runs_dir=folder, tracking_uri=uri)
    s1 = next(line for line in text.splitlines() if line.split()[:1] == ["s1"])
    assert "exact_match=0.47 (best of 32 full-budget trials)" in s1 and "0.95" not in s1 and "0.99" not in s1


def test_importance_uses_full_budget_trials_only(trust_store) -> None:
    uri, _ = trust_store
    runs = load_sweep("s1", tracking_uri=uri, include_unfinished=True)
    study = plots.mlflow_study(runs, "exact_match", ["params.loss.family"])
    assert len(study.trials) == 32 and max(t.value for t in study.trials) == pytest.approx(0.47)
    _, source = plots.param_importances(runs, by=["family"])
    assert "full-budget MLflow runs, 3 run(s) below the full budget left out" in source


# -- multiple comparisons, effect sizes, power -----------------------------------------------------

@pytest.mark.parametrize(("adjust", "method"), [("holm", "holm"), ("bh", "fdr_bh"), ("none", None)])
def test_adjusted_p_values_equal_statsmodels(trust_store, adjust: str, method: str | None) -> None:
    uri, _ = trust_store
    runs = load_sweep("s1", tracking_uri=uri)
    table = ablation_table(runs, ["family"], ["exact_match", "mae"], "family=hard", adjust=adjust)
    raw = np.concatenate([table.rows[f"{m}.p"].to_numpy(float) for m in ("exact_match", "mae")])
    adj = np.concatenate([table.rows[f"{m}.p_adj"].to_numpy(float) for m in ("exact_match", "mae")])
    finite = np.isfinite(raw)
    assert finite.sum() == 6  # 3 families x 2 metrics; the baseline row is not a comparison
    expected = multipletests(raw[finite], method=method)[1] if method else raw[finite]
    np.testing.assert_allclose(adj[finite], expected, rtol=1e-12)
    assert np.isnan(adj[~finite]).all()
    # Raw p-values are scipy's paired t-test over matching seeds.
    g = table_row(table, family="gaussian")
    assert g["exact_match.p"] == pytest.approx(stats.ttest_rel(VALUES["gaussian"], VALUES["hard"]).pvalue)
    csv = pd.read_csv(io.StringIO(to_csv(table)))
    assert {"exact_match.p", "exact_match.p_adj", "mae.p", "mae.p_adj"} <= set(csv.columns)


def test_significance_markers_follow_the_adjusted_p() -> None:
    raw = [0.04, 0.03, 0.2, float("nan")]
    holm = adjust_pvalues(raw, "holm")
    np.testing.assert_allclose(holm[:3], multipletests(raw[:3], method="holm")[1])
    assert math.isnan(holm[3]) and min(holm[:3]) > 0.05  # two raw "findings", none after Holm
    with pytest.raises(ValueError, match="unknown adjustment 'sidak'"):
        adjust_pvalues(raw, "sidak")


def test_table_marks_only_what_survives_adjustment(trust_store) -> None:
    uri, _ = trust_store
    runs = load_sweep("s1", tracking_uri=uri)
    table = ablation_table(runs, ["family"], ["exact_match"], "family=hard")
    md = to_markdown(table)
    for _, row in table.rows.iterrows():
        if row["exact_match.test"] != "paired":
            continue
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {row['family']} |"))
        starred = "\\*" in line
        assert starred == (row["exact_match.p_adj"] < 0.05), line
    none = to_markdown(ablation_table(runs, ["family"], ["exact_match"], "family=hard", adjust="none"))
    assert "no multiple-comparison adjustment" in none and "p_adj" not in none.split("\n")[2]


def test_effect_size_interval_is_scipys(trust_store) -> None:
    uri, _ = trust_store
    table = ablation_table(load_sweep("s1", tracking_uri=uri), ["family"], ["exact_match"], "family=hard")
    g = table_row(table, family="ntil")
    ci = stats.ttest_rel(VALUES["ntil"], VALUES["hard"]).confidence_interval(0.95)
    assert (g["exact_match.diff_ci_low"], g["exact_match.diff_ci_high"]) == pytest.approx((ci.low, ci.high))
    assert g["exact_match.diff"] == pytest.approx(np.mean(np.subtract(VALUES["ntil"], VALUES["hard"])))
    md = to_markdown(table)
    diff = float(np.mean(np.subtract(VALUES["ntil"], VALUES["hard"])))
    assert f"{diff:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}]" in md


def test_power_equals_statsmodels(trust_store) -> None:
    uri, _ = trust_store
    runs = load_sweep("s1", tracking_uri=uri)
    table = ablation_table(runs, ["family"], ["exact_match"], "family=hard", power=True)
    diffs = np.subtract(VALUES["ntil"], VALUES["hard"])
    d = abs(diffs.mean()) / diffs.std(ddof=1)
    want = math.ceil(TTestPower().solve_power(effect_size=d, alpha=0.05, power=0.8))
    want_adj = math.ceil(TTestPower().solve_power(effect_size=d, alpha=0.05 / 3, power=0.8))
    row = table_row(table, family="ntil")
    assert (row["exact_match.n_needed"], row["exact_match.n_needed_adj"]) == (want, want_adj)
    mde = ablation_table(runs, ["family"], ["exact_match"], "family=hard", power=True, mde=0.05)
    d5 = 0.05 / diffs.std(ddof=1)
    assert table_row(mde, family="ntil")["exact_match.n_needed"] == math.ceil(
        TTestPower().solve_power(effect_size=d5, alpha=0.05, power=0.8))
    assert any("seeds 80%" in n and "--mde 0.05" in n for n in mde.notes)
    assert "seeds 80%" in to_markdown(table).splitlines()[2]


def test_unpaired_power_equals_ttestindpower() -> None:
    a = pd.Series([0.50, 0.55, 0.52, 0.58], index=[10.0, 11, 12, 13])
    b = pd.Series([0.45, 0.50, 0.49], index=[0.0, 1, 2])
    from sweeps.report.stats import compare_to_baseline

    c = compare_to_baseline(a, b)
    assert c.test == "welch"
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (c.ci_low, c.ci_high) == pytest.approx((ci.low, ci.high))
    sd = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    want = math.ceil(TTestIndPower().solve_power(effect_size=abs(a.mean() - b.mean()) / sd, alpha=0.05,
                                                 power=0.8, ratio=1.0))
    assert seeds_for_power(c) == want
    assert seeds_for_power(Comparison(0.0, 1.0, "paired", 3, sd=0.1)) == math.inf
    assert math.isnan(seeds_for_power(Comparison(0.1, math.nan, "none")))


def test_table_command_adjust_power_mde(trust_store) -> None:
    uri, _ = trust_store
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    res = runner.invoke(app, ["table", "s1", "--tracking-uri", uri, "--by", "family", "--baseline",
                              "loss=hard", "--adjust", "bh", "--power", "--format", "csv"])
    assert res.exit_code == 0, res.output
    rows = pd.read_csv(io.StringIO(res.stdout))
    assert {"exact_match.p_adj", "exact_match.n_needed"} <= set(rows.columns)
    res = runner.invoke(app, ["table", "s1", "--tracking-uri", uri, "--adjust", "sidak"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["table", "s1", "--tracking-uri", uri, "--baseline", "loss=hard", "--mde", "-1"])
    assert res.exit_code == 2 and "--mde -1" in res.stderr


# -- honest figures --------------------------------------------------------------------------------

def _fits(fig) -> bool:
    """Every text of the figure (titles, labels) lies inside the figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    for ax in fig.axes:
        title = ax.title.get_window_extent(renderer)
        if title.x0 < box.x0 - 1 or title.x1 > box.x1 + 1 or title.y1 > box.y1 + 1:
            return False
    return True


@pytest.fixture(scope="module")
def trust_runs(trust_store) -> SweepRuns:
    return load_sweep("s1", tracking_uri=trust_store[0])


def test_group_plot_is_dots_with_intervals_and_says_n_1(trust_runs: SweepRuns) -> None:
    runs = trust_runs
    single = runs.trials.drop(runs.trials.index[(runs.trials["params.loss.family"] == "ntil")
                                                 & (runs.trials["seed"] > 0)])
    import dataclasses

    fig = plots.psi_bars(dataclasses.replace(runs, trials=single))
    ax = fig.axes[0]
    assert not ax.patches  # no bars: no truncated axis to mislead
    lo, hi = ax.get_ylim()
    for fam, vals in VALUES.items():
        if fam == "ntil":
            continue
        x = np.asarray(vals)
        half = stats.t.ppf(0.975, len(x) - 1) * stats.sem(x)
        assert lo <= x.mean() - half and x.mean() + half <= hi
    texts = [t.get_text() for t in ax.texts]
    assert "n=1" in texts  # the one-seed group says so ...
    ntil = [line for line in ax.get_lines() if line.get_marker() == "o" and line.get_markerfacecolor() == "white"]
    assert len(ntil) == 1 and ntil[0].get_ydata()[0] == pytest.approx(VALUES["ntil"][0])
    caps = [line for line in ax.get_lines() if line.get_marker() == "_"]
    assert len(caps) == 2 * 3  # ... and has no whisker: only the 3 groups with n >= 2 have caps
    cap = plots.caption(fig)
    assert cap.startswith("Mean exact_match per family with its 95% Student-t interval")
    assert "1 group(s) have one seed (hollow dot, n=1): no interval" in cap
    assert _fits(fig)


def test_each_kind_groups_by_its_own_parameter_and_captions_what_it_drew(report_store: Store) -> None:
    runs = load_sweep(tracking_uri=report_store.uri)
    bars = plots.plot(runs, "psi-bars")
    assert [t.get_text().split("\n")[:2] for t in bars.axes[0].get_xticklabels()][:2] == [
        ["hard", "—"], ["label_smoothing", "—"]]
    assert "per family / psi" in plots.caption(bars)
    eta = plots.plot(runs, "eta-curve")  # series: psi; lam varies inside a psi at eta 0.1
    cap = plots.caption(eta)
    assert "per psi" in cap and "marker size: lam" in cap
    assert "2 line(s) join configurations that differ in eta alone" in cap  # (psi, lam 1) at eta 0.1, 0.2
    lam = plots.plot(runs, "eta-curve", by=["psi", "lam"])
    assert "per psi / lam" in plots.caption(lam) and "95% Student-t interval" in plots.caption(lam)
    for kind in plots.KINDS:
        fig = plots.plot(runs, kind)
        assert plots.caption(fig) and _fits(fig), kind


def test_curves_mark_single_seed_points_and_titles_fit(trust_runs: SweepRuns) -> None:
    import dataclasses

    runs = trust_runs
    soft = runs.trials[runs.trials["params.loss.family"] == "hard"].copy()
    soft["params.loss.eta"] = np.where(soft["seed"] == 0, 0.3, 0.1)  # eta 0.3 holds one seed
    fig = plots.eta_curve(dataclasses.replace(runs, trials=soft))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["n=1"]
    assert "1 point(s) of a line rest on one seed (n=1): no interval there" in plots.caption(fig)
    long = dataclasses.replace(runs, experiment_name="an-experiment-with-a-very-long-name-" * 3)
    fig = plots.importance(long, by=["family", "seed"])
    assert _fits(fig) and fig.axes[0].get_xlim()[0] == 0
    # Long parameter names push the axes (and the title centred on it) right: still inside.
    wide = dataclasses.replace(long, trials=long.trials.rename(
        columns={"params.loss.family": "params.loss.binomial_temperature_of_a_long_name"}))
    fig = plots.importance(wide, by=["binomial_temperature_of_a_long_name", "seed"])
    assert _fits(fig) and "full-budget" in fig.axes[0].get_title().replace("-\n", "-")


def test_learning_curves_average_full_budget_runs_only(trust_store) -> None:
    uri, _ = trust_store
    runs = load_sweep("s1", tracking_uri=uri, include_unfinished=True)
    fig = plots.learning_curves(runs, by=["family"])
    ax = fig.axes[0]
    gauss = next(ln for ln in ax.get_lines() if ln.get_label().startswith("family=gaussian"))
    assert gauss.get_label() == "family=gaussian (n=8)"
    np.testing.assert_allclose(gauss.get_ydata(), [np.mean(VALUES["gaussian"]) / 2, np.mean(VALUES["gaussian"])])
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 3  # the two stopped runs and the short one, each on its own
    assert "Grey dashed: 3 run(s) stopped before their budget" in plots.caption(fig)


def test_numbers_print_with_four_significant_digits() -> None:
    assert value_text(0.000123456789) == "0.0001235" and value_text(2.0) == "2" and value_text(None) == "—"
    assert distinct_texts([0.12341, 0.12344]) == ["0.12341", "0.12344"]  # never print two as one
    assert distinct_texts([0.1, 0.25]) == ["0.1", "0.25"]


# -- search, then confirm: the plan -----------------------------------------------------------------

def test_confirm_plan_takes_the_best_configurations_and_fresh_seeds(trust_store, tmp_path) -> None:
    from sweeps.driver.confirm import check_overrides, plan_confirm, write_confirm_spec
    from sweeps.report.hints import confirm_hint
    from sweeps.config.space import load_space

    uri, _ = trust_store
    runs = load_sweep("s1", tracking_uri=uri)
    assert confirm_hint(runs) is None  # a grid's cells are designed, not selected
    plan = plan_confirm(runs, top=2, seeds=3, baseline="loss=hard")
    assert [c.label for c in plan.candidates] == ["top1", "top2", "baseline"]
    assert [c.params["loss.family"] for c in plan.candidates] == ["gaussian", "ntil", "hard"]
    assert plan.candidates[0].mean == pytest.approx(np.mean(VALUES["gaussian"]))
    assert plan.first_seed == 8 and plan.fresh_seeds  # s1 used seeds 0..7
    spec = plan.spec
    assert spec["search"]["algorithm"] == "grid" and spec["search"]["seeds"] == 3
    assert spec["search"]["first_seed"] == 8 and spec["scheduler"] == {"type": "fifo"}
    assert spec["tracking"]["experiment"] == "trust" and spec["name"] == "trust-confirm"
    space = load_space(spec["search_space"])
    assert [p["loss.family"] for p in space.grid()] == ["gaussian", "ntil", "hard"]
    # Only what differs between candidates is a grid parameter (and so in a run name); a value they
    # share that the spec leaves to its default is written into the spec.
    assert list(space.params) == ["loss.family"] and float(spec["train"]["lr"]) == 0.001
    assert spec["description"].endswith("with seeds 8..10 at full budget")
    check_overrides(plan, ["train.steps=30"])  # the budget an override gives is the one described
    assert spec["description"].endswith("with seeds 8..10 at 30 steps (override)")
    assert spec["search_space"]["description"] == spec["description"]
    path = write_confirm_spec(plan, tmp_path)
    assert path.name == "s1-confirm.yaml" and "top1:" in path.read_text()
    early = plan_confirm(runs, top=1, seeds=2, first_seed=0)
    assert not early.fresh_seeds and any("overlap the search's" in n for n in early.notes)
    with pytest.raises(Exception, match="--seeds 1"):
        plan_confirm(runs, top=1, seeds=1)


def test_search_space_points_are_validated() -> None:
    from sweeps.config.space import load_space

    with pytest.raises(SpecError, match=r"points\[0\]\.loss\.eta: 0\.3 is not a value 'loss\.eta' allows"):
        load_space({"params": {"loss.eta": {"type": "categorical", "choices": [0.1, 0.2]}},
                    "points": [{"loss.eta": 0.3}]})
    with pytest.raises(SpecError, match=r"points\[0\]\.zeta: not a parameter"):
        load_space({"params": {"eta": {"type": "float", "low": 0.0, "high": 0.3}}, "points": [{"zeta": 1}]})


@pytest.mark.parametrize("kind", ["eta-curve", "lambda-curve", "psi-bars", "learning-curves"])
def test_y_range_holds_every_mean_and_interval(report_store: Store, kind: str) -> None:
    """No cut axis: every plotted mean, band and whisker lies inside the y-limits."""
    runs = load_sweep(tracking_uri=report_store.uri)
    ax = plots.plot(runs, kind, by=["psi", "lam"] if kind.endswith("curve") else None).axes[0]
    ys = [y for line in ax.get_lines() for y in np.asarray(line.get_ydata(), float)]
    from matplotlib.collections import PathCollection

    for coll in ax.collections:  # dots (scatter), CI bands (fill_between), whiskers (errorbar)
        if isinstance(coll, PathCollection):  # its paths are marker shapes; offsets are the data
            ys += list(np.asarray(coll.get_offsets(), float)[:, 1])
            continue
        for path in coll.get_paths():
            ys += list(path.vertices[:, 1])
    ys = np.asarray([y for y in ys if np.isfinite(y)])
    lo, hi = ax.get_ylim()
    assert len(ys) and lo <= ys.min() and ys.max() <= hi
