"""Ablation tables read from a real MLflow SQLite store: statistics equal scipy's, grouping, baseline
pairing, best-value marking, the four formats and the `table` command."""

from __future__ import annotations

import io
import math
import re

import numpy as np
import pandas as pd
import pytest
import typer
from scipy import stats
from typer.testing import CliRunner

from helpers import imported_after, table_row
from report_fixtures import Store, report_runs, report_store  # noqa: F401  (fixtures)
from sweeps.errors import SlsweepError
from sweeps.report import (
    NoSweepError,
    SweepRuns,
    UnknownColumnError,
    UnknownMetricError,
    ablation_table,
    compare_to_baseline,
    load_sweep,
    render,
    summarize,
)
from sweeps.report.commands import register
from sweeps.report.runs import load_trials, selector_column, selector_items, selector_text
from sweeps.report.stats import significance_marker
from sweeps.report.tables import (
    ablation_table_text,
    default_baseline,
    parse_baseline,
    to_csv,
    to_html,
    to_latex,
    to_markdown,
)


def _ci(values: list[float]) -> tuple[float, float, float]:
    x = np.asarray(values)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    return float(x.mean()), float(lo), float(hi)


def _by_seed(trials) -> list[float]:
    return [t.exact_match for t in sorted(trials, key=lambda t: t.seed)]


# -- loading -------------------------------------------------------------------------------------

def test_load_newest_sweep_finished_only(report_store: Store, report_runs: SweepRuns) -> None:
    runs = report_runs
    assert runs.experiment_name == "soft-ablation" and runs.sweep.sweep_id == "sweep-new"
    assert runs.sweep.run_id == report_store.parent_run_id
    assert len(runs.trials) == len(report_store.finished()) == 21
    assert set(runs.trials["status"]) == {"FINISHED"}
    assert runs.excluded == {"stopped": 1, "failed": 1}  # KILLED (reason "asha": not the tracker's word), FAILED
    assert (runs.trials["tags.mlflow.parentRunId"] == report_store.parent_run_id).all()
    # Params are numeric where they parse; metrics are the last logged values (step 30).
    assert runs.trials["params.loss.eta"].dtype.kind == "f"
    got = dict(zip(runs.trials["run_id"], runs.trials["metrics.exact_match"]))
    assert got == {t.run_id: t.exact_match for t in report_store.finished()}

    everything = load_sweep("soft-ablation", tracking_uri=report_store.uri, include_unfinished=True)
    assert sorted(everything.trials["status"].value_counts().items()) == [
        ("FAILED", 1), ("FINISHED", 21), ("KILLED", 1)]
    both = load_sweep("soft-ablation", tracking_uri=report_store.uri, all_sweeps=True)
    assert [s.sweep_id for s in both.sweeps] == ["sweep-new", "sweep-old"] and len(both.raw_trials) == 23
    # The old sweep's hard seeds 0 and 1 repeat the new sweep's configuration and seeds: replicates,
    # one observation each (replicates are not seeds).
    assert len(both.trials) == 21 and sorted(both.replicates["seed"]) == [0, 1]
    by_runs_dir = load_sweep("other", runs_dir=report_store.runs_dir)
    assert by_runs_dir.sweep.sweep_id == "sweep-other" and len(by_runs_dir.trials) == 1
    assert load_sweep("sweep-old", tracking_uri=report_store.uri).sweep.sweep_id == "sweep-old"
    old = load_trials(report_store.uri, sweep_id="sweep-old")
    assert old.sweep.sweep_id == "sweep-old" and len(old.trials) == 2
    with pytest.raises(NoSweepError, match="no sweep with id 'nah'"):
        load_sweep(sweep_id="nah", tracking_uri=report_store.uri)


def test_load_errors(report_store: Store, tmp_path) -> None:
    with pytest.raises(NoSweepError, match="no experiment or sweep named 'nope'.*soft-ablation"):
        load_sweep("nope", tracking_uri=report_store.uri)
    with pytest.raises(NoSweepError, match="no MLflow store at"):
        load_sweep(runs_dir=tmp_path / "missing")
    assert not (tmp_path / "missing" / "mlflow.db").exists()  # no empty store left behind


def test_load_errors_empty_store(report_store: Store, tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    uri = report_store.empty_store(tmp_path)
    client = MlflowClient(uri)
    with pytest.raises(NoSweepError, match="no sweep in"):
        load_sweep(tracking_uri=uri)
    exp = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(exp, tags={"slsweep.kind": "sweep", "slsweep.sweep_id": "s"}).info.run_id
    killed = client.create_run(exp, tags={"slsweep.kind": "trial", "slsweep.sweep_id": "s",
                                          "mlflow.parentRunId": parent}).info.run_id
    client.set_terminated(killed, "KILLED")
    with pytest.raises(NoSweepError, match=r"no finished trial runs \(1 stopped\); pass --all-runs"):
        load_sweep("e", tracking_uri=uri)
    assert len(load_sweep("e", tracking_uri=uri, include_unfinished=True).trials) == 1


def test_column_resolution(report_runs: SweepRuns) -> None:
    r = report_runs
    assert r.resolve("eta") == "params.loss.eta"  # not space.eta: space.* only as a last resort
    assert r.resolve("loss.eta") == "params.loss.eta"
    assert r.resolve("space.eta") == "params.space.eta"
    assert r.resolve("family") == "params.loss.family"
    assert r.resolve("loss") == "tags.loss"  # the family tag
    assert r.resolve("seed") == "params.seed"
    with pytest.raises(UnknownColumnError, match="ambiguous.*model.name, task.name|ambiguous.*task.name"):
        r.resolve("name")
    with pytest.raises(UnknownColumnError, match="unknown column 'zeta'.*loss.eta"):
        r.resolve("zeta")
    assert r.default_by() == ["params.loss.family", "params.loss.psi", "params.loss.eta", "params.loss.lam"]
    assert r.default_metric() == "exact_match"
    assert r.direction("exact_match") == "max" and r.direction("mae") == "min"


# -- statistics ----------------------------------------------------------------------------------

def test_group_means_and_cis_equal_scipy(report_store: Store, report_runs: SweepRuns) -> None:
    table = ablation_table(report_runs, metrics=["exact_match", "mae"])
    assert table.by_names == ["family", "psi", "eta", "lam"] and len(table.rows) == 7
    groups = {
        ("hard", None, None, None): report_store.finished(family="hard"),
        ("label_smoothing", None, None, None): report_store.finished(family="label_smoothing"),
        **{("soft_label", p, e, lam): report_store.finished(family="soft_label", psi=p, eta=e, lam=lam)
           for p, e, lam in [("gaussian", 0.1, 1.0), ("gaussian", 0.1, 3.0), ("gaussian", 0.2, 1.0),
                             ("laplace", 0.1, 1.0), ("laplace", 0.2, 1.0)]},
    }
    for (family, psi, eta, lam), trials in groups.items():
        row = table_row(table, family=family, psi=psi, eta=eta, lam=lam)
        assert len(trials) == 3 and row["exact_match.n"] == 3
        for metric in ("exact_match", "mae"):
            mean, lo, hi = _ci([getattr(t, metric) for t in trials])
            assert row[f"{metric}.mean"] == pytest.approx(mean, abs=1e-12)
            assert row[f"{metric}.ci_low"] == pytest.approx(lo, abs=1e-12)
            assert row[f"{metric}.ci_high"] == pytest.approx(hi, abs=1e-12)
            assert row[f"{metric}.sd"] == pytest.approx(np.std([getattr(t, metric) for t in trials], ddof=1))


def test_grouping_by_chosen_columns_pools_the_rest(report_store: Store, report_runs: SweepRuns) -> None:
    table = ablation_table(report_runs, by=["psi"])
    assert table.by == ["params.loss.psi"]
    assert list(table.rows["psi"].fillna("-")) == ["gaussian", "laplace", "-"]
    gauss = report_store.finished(psi="gaussian")
    assert table_row(table, psi="gaussian")["exact_match.n"] == len(gauss) == 9
    assert table_row(table, psi="gaussian")["exact_match.mean"] == pytest.approx(
        np.mean([t.exact_match for t in gauss]))
    # psi=gaussian pools 3 configurations (eta, lam): its spread is shown, never an interval.
    row = table_row(table, psi="gaussian")
    assert row["group"] == "pooled" and row["configs"] == 3 and row["seeds"] == 3
    assert math.isnan(row["exact_match.ci_low"]) and math.isnan(row["exact_match.ci_high"])
    assert (row["exact_match.min"], row["exact_match.max"]) == (min(t.exact_match for t in gauss),
                                                                max(t.exact_match for t in gauss))
    assert any("pooled rows mix configurations that differ in family, eta, lam" in n for n in table.notes)
    assert any("3 rows pool configurations (3 configurations, 3 seeds each; 2 configurations, 3 seeds each)"
               in n for n in table.notes)
    whole = ablation_table(report_runs, by=["psi", "eta"], metrics=["mae"])
    assert len(whole.rows) == 5 and whole.metrics == ["mae"]


def test_baseline_paired_by_seed_equals_ttest_rel(report_store: Store, report_runs: SweepRuns) -> None:
    table = ablation_table(report_runs, baseline="loss=hard")
    hard = _by_seed(report_store.finished(family="hard"))
    base = table_row(table, family="hard")
    assert base["exact_match.test"] == "baseline" and base["exact_match.diff"] == 0.0
    for psi, eta in [("gaussian", 0.2), ("laplace", 0.1), ("laplace", 0.2)]:
        soft = _by_seed(report_store.finished(psi=psi, eta=eta, lam=1.0))
        row = table_row(table, family="soft_label", psi=psi, eta=eta, lam=1.0)
        assert row["exact_match.test"] == "paired" and row["exact_match.pairs"] == 3
        assert row["exact_match.p"] == pytest.approx(stats.ttest_rel(soft, hard).pvalue, abs=1e-12)
        assert row["exact_match.diff"] == pytest.approx(np.mean(np.subtract(soft, hard)), abs=1e-12)
    # The selector may name the param key too; same baseline, same numbers.
    again = ablation_table(report_runs, baseline="family=hard")
    pd.testing.assert_frame_equal(again.rows, table.rows)


def test_summary_text_uses_hard_labels_as_default_baseline(report_runs: SweepRuns) -> None:
    text = ablation_table_text(report_runs, metric="mae")
    # The automatic baseline is written in the --baseline syntax a user types (one spelling).
    assert default_baseline(report_runs) == "loss=hard"
    assert text == to_markdown(ablation_table(report_runs, metrics=["mae"], baseline="loss=hard"))
    assert "| baseline |" in text


def test_baseline_selector_keys_are_the_by_names(report_runs: SweepRuns) -> None:
    """One selector syntax: `loss` (alias), `family` and `loss.family` select the same stored
    field, the param `loss.family` (not the tag `loss`), as `--by` resolves names."""
    cols = {name: selector_column(name, report_runs.param_keys, report_runs.trials.columns)
            for name in ("loss", "family", "loss.family")}
    assert set(cols.values()) == {"params.loss.family"}
    masks = [parse_baseline(report_runs, f"{name}=hard") for name in cols]
    assert all(m.equals(masks[0]) for m in masks) and masks[0].sum() > 0
    assert report_runs.trials.loc[masks[0], "params.loss.family"].eq("hard").all()
    assert selector_items(" loss = hard , eta=0.1 ") == [("loss", "hard"), ("eta", "0.1")]
    assert selector_text([("loss.family", "hard"), ("train.lr", 0.002)]) == "loss=hard,train.lr=0.002"
    with pytest.raises(UnknownColumnError, match="expected column=value"):
        selector_items("hard")


def test_welch_when_seeds_do_not_match(report_store: Store, report_runs: SweepRuns) -> None:
    table = ablation_table(report_runs, baseline="loss=hard")
    ls = [t.exact_match for t in report_store.finished(family="label_smoothing")]  # seeds 5, 6, 7
    hard = [t.exact_match for t in report_store.finished(family="hard")]  # seeds 0, 1, 2
    row = table_row(table, family="label_smoothing")
    assert row["exact_match.test"] == "welch"
    assert row["exact_match.p"] == pytest.approx(stats.ttest_ind(ls, hard, equal_var=False).pvalue, abs=1e-12)
    assert row["exact_match.diff"] == pytest.approx(np.mean(ls) - np.mean(hard))
    assert any("Welch's t-test (no seed matches the baseline's)" in n for n in table.notes)
    assert "†" in to_markdown(table)


def test_compare_to_baseline_rules() -> None:
    a = pd.Series([0.5, 0.6, 0.7, 0.9], index=[0.0, 1.0, 2.0, 3.0])
    b = pd.Series([0.4, 0.45, 0.6], index=[0.0, 1.0, 2.0])
    c = compare_to_baseline(a, b)  # 3 of 4 seeds match: paired over those
    assert c.test == "paired" and c.n_pairs == 3 and "3 matching seeds of 4 and 3" in c.note
    assert c.p_value == pytest.approx(stats.ttest_rel([0.5, 0.6, 0.7], [0.4, 0.45, 0.6]).pvalue)
    repeated = pd.Series([0.5, 0.6, 0.7], index=[0.0, 0.0, 1.0])
    w = compare_to_baseline(repeated, b)
    assert w.test == "welch" and "repeated" in w.note
    one = compare_to_baseline(pd.Series([0.5], index=[9.0]), b)
    assert one.test == "none" and math.isnan(one.p_value)
    marks = [significance_marker(p) for p in (0.0005, 0.005, 0.02, 0.2, math.nan)]
    assert marks == ["***", "**", "*", "", ""]


def test_summarize_single_value_has_no_ci() -> None:
    s = summarize([0.25])
    assert s.n == 1 and s.mean == 0.25 and math.isnan(s.ci_low) and math.isnan(s.half_width)
    five = summarize([1.0, 2.0, 4.0, np.nan, 8.0])  # NaN dropped
    lo, hi = stats.t.interval(0.95, 3, loc=3.75, scale=stats.sem([1.0, 2.0, 4.0, 8.0]))
    assert five.n == 4 and (five.ci_low, five.ci_high) == pytest.approx((lo, hi))


def test_single_run_group_shows_na(report_store: Store) -> None:
    runs = load_sweep("other", tracking_uri=report_store.uri)
    table = ablation_table(runs, baseline=None)
    assert table.rows["exact_match.n"].tolist() == [1] and math.isnan(table.rows["exact_match.ci_low"][0])
    assert any("have n = 1: no interval" in n for n in table.notes)
    assert "± n/a" in to_markdown(table) and "$\\pm$ n/a" in to_latex(table)


def test_user_errors(report_runs: SweepRuns) -> None:
    with pytest.raises(UnknownMetricError, match="metric 'accuracy' is not logged.*exact_match, mae"):
        ablation_table(report_runs, metrics=["accuracy"])
    with pytest.raises(UnknownColumnError, match="no run has loss=sgd.*hard, label_smoothing, soft_label"):
        ablation_table(report_runs, baseline="loss=sgd")
    with pytest.raises(UnknownColumnError, match="expected column=value"):
        ablation_table(report_runs, baseline="hard")
    with pytest.raises(SlsweepError, match="--format 'docx'"):
        render(ablation_table(report_runs), "docx")


# -- rendering -----------------------------------------------------------------------------------

def test_best_value_marked_in_every_format(report_store: Store, report_runs: SweepRuns) -> None:
    table = ablation_table(report_runs, metrics=["exact_match", "mae"], baseline="loss=hard")
    em, mae = table.rows["exact_match.mean"], table.rows["mae.mean"]
    assert table.best_rows("exact_match") == {int(em.idxmax())}
    assert table.best_rows("mae") == {int(mae.idxmin())}  # lower is better
    best_em = f"{em.max():.4f}"
    md = to_markdown(table)
    assert re.search(rf"\*\*{re.escape(best_em)} ± [0-9.]+\*\*", md)
    assert md.count("**") == 2 * 3  # title + one best cell per metric
    assert re.search(rf"\\textbf\{{{re.escape(best_em)} \$\\pm\$ [0-9.]+\}}", to_latex(table))
    assert re.search(rf"<strong>{re.escape(best_em)} ± [0-9.]+</strong>", to_html(table))
    flags = pd.read_csv(io.StringIO(to_csv(table)))
    assert flags["exact_match.best"].tolist() == [i == em.idxmax() for i in range(len(em))]
    assert flags["mae.best"].tolist() == [i == mae.idxmin() for i in range(len(mae))]


def test_ties_and_constant_values_are_not_marked_or_tested(report_runs: SweepRuns) -> None:
    table = ablation_table(report_runs, metrics=["step"], baseline="loss=hard")  # 30 on every run
    assert table.best_rows("step") == set() and "**" not in to_markdown(table).split("\n", 1)[1]
    assert any("same mean step: nothing marked" in n for n in table.notes)
    assert table.rows["step.p"].isna().all()
    assert set(table.rows["step.note"].dropna()) >= {"no test: differences do not vary",
                                                     "no test: values do not vary"}
    assert "no test: differences do not vary" in to_markdown(table) and "***" not in to_markdown(table)


def test_train_loss_is_not_compared_across_loss_families(report_runs: SweepRuns) -> None:
    """Each family's train_loss is its own objective (hard CE's and a soft-label loss's are
    different functions): no paired test with stars against hard CE, no bold 'best', in the table
    and in the report, while a task metric of the same runs is still tested and ranked."""
    import dataclasses

    from sweeps.report.html import build_report

    trials = report_runs.trials.copy()
    hard = trials["params.loss.family"] == "hard"
    noise = np.random.default_rng(0).normal(0, 0.05, len(trials))
    trials["metrics.train_loss"] = np.where(hard, 0.2, 1.5) + noise  # hard CE 'wins' by 1.3
    runs = dataclasses.replace(report_runs, trials=trials)
    table = ablation_table(runs, metrics=["train_loss", "exact_match"], baseline="loss=hard")
    assert table.own_objective == {"train_loss"} and table.best_rows("train_loss") == set()
    assert table.best_rows("exact_match")  # a task metric is still ranked ...
    others = table.rows[table.rows["family"] != "hard"]
    assert others["train_loss.p"].isna().all() and others["train_loss.diff"].isna().all()
    assert set(others["train_loss.note"]) == {"no test: train_loss is each loss family's own objective"}
    assert np.isfinite(others["exact_match.p"].astype(float)).any()  # ... and tested
    md = to_markdown(table)
    assert "train_loss is each loss family's own training objective" in md
    assert md.count("| no test: train_loss is each loss family's own objective |") == len(others)
    page = build_report(runs, metrics=["train_loss"], baseline="loss=hard", figures=[])
    assert "No best configuration by train_loss" in page and "Best group by mean" not in page
    # One loss family: its train_loss values are one function's, so they are ranked as usual.
    soft = dataclasses.replace(runs, trials=trials[trials["params.loss.family"] == "soft_label"])
    assert ablation_table(soft, metrics=["train_loss"]).own_objective == set()


def test_latex_booktabs_and_escaping(report_runs: SweepRuns) -> None:
    tex = to_latex(ablation_table(report_runs, metrics=["exact_match"], baseline="loss=hard"))
    lines = tex.splitlines()
    body = lines[lines.index(r"\toprule"):]
    assert body[0] == r"\toprule" and r"\midrule" in body and body[-2:] == [r"\bottomrule", r"\end{tabular}"]
    assert r"exact\_match $\uparrow$" in tex and r"label\_smoothing" in tex and r"soft\_label" in tex
    for line in lines:  # every _ % & # is escaped, also in the comment notes
        text = line.removeprefix("% ").replace(" & ", " ")  # comment marker and cell separators
        assert not re.search(r"(?<!\\)[_&%#]", text), line
    assert r"\begin{tabular}{llllrrrrr}" in tex  # keys; mean, n, Δ [CI], p, p_adj


def test_csv_full_precision_and_markdown_html_shapes(report_runs: SweepRuns) -> None:
    table = ablation_table(report_runs, metrics=["exact_match", "mae"], baseline="loss=hard")
    back = pd.read_csv(io.StringIO(to_csv(table)))
    for col in ("exact_match.mean", "exact_match.ci_low", "mae.p", "mae.diff"):
        # Round trip is exact: the CSV holds every digit.
        np.testing.assert_array_equal(back[col].to_numpy(float), table.rows[col].to_numpy(float))
    assert list(back["exact_match.test"]) == list(table.rows["exact_match.test"])
    md = to_markdown(table).splitlines()
    header = next(line for line in md if line.startswith("| family"))
    assert header.count("|") - 1 == 4 + 2 + 1 + 6  # keys, metrics, n, (Δ [CI], p, p_adj) x 2
    assert sum(line.startswith("| ") for line in md) == 2 + 7
    page = to_html(table, full_document=True)
    assert page.startswith("<!DOCTYPE html>") and page.count("<tr>") == 8


# -- CLI -----------------------------------------------------------------------------------------

@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_table_command(cli: typer.Typer, report_store: Store, report_runs: SweepRuns, tmp_path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    # No EXPERIMENT and no --runs-dir: the newest sweep in $SLSWEEP_RUNS_DIR.
    monkeypatch.setenv("SLSWEEP_RUNS_DIR", str(report_store.runs_dir))
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(cli, ["table", "--by", "psi,eta", "--baseline", "loss=hard"])
    assert res.exit_code == 0, res.output
    expected = ablation_table(report_runs, by=["psi", "eta"], baseline="loss=hard")
    assert res.stdout == to_markdown(expected)

    out = tmp_path / "t.tex"
    res = runner.invoke(cli, ["table", "soft-ablation", "--tracking-uri", report_store.uri, "--metric",
                              "exact_match,mae", "--format", "latex", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_text() == to_latex(ablation_table(report_runs, metrics=["exact_match", "mae"]))

    # --all-runs: the FAILED and KILLED runs (stopped at step 30 of an unknown budget) get rows of
    # their own at the step they reached, never averaged with the finished runs, never tested.
    res = runner.invoke(cli, ["table", "--all-runs", "--by", "family", "--baseline", "loss=hard",
                              "--format", "csv"])
    assert res.exit_code == 0, res.output
    rows = pd.read_csv(io.StringIO(res.stdout))
    assert rows["step"].tolist() == ["30", "30 (failed)", "30", "30", "30 (stopped)"]
    assert rows["exact_match.n"].tolist() == [3, 1, 3, 15, 1]
    # soft_label pools 5 configurations (psi, eta, lam): a spread, never a test.
    assert rows["group"].tolist() == ["replicates", "replicates", "replicates", "pooled", "replicates"]
    assert rows["exact_match.p"].isna().tolist() == [True, True, False, True, True]
    assert rows["exact_match.ci_low"].isna().tolist() == [False, True, False, True, True]
    assert not rows["exact_match.best"][rows["step"] != "30"].any()


@pytest.mark.parametrize(("args", "message"), [
    (["table", "nope"], "error: no experiment or sweep named 'nope'"),
    (["table", "--metric", "accuracy"], "error: metric 'accuracy' is not logged"),
    (["table", "--by", "zeta"], "error: unknown column 'zeta'"),
    (["table", "--baseline", "loss=sgd"], "error: --baseline 'loss=sgd': no run has loss=sgd"),
])
def test_table_command_user_errors_exit_2(cli: typer.Typer, report_store: Store, args: list[str],
                                          message: str) -> None:
    res = CliRunner().invoke(cli, args + ["--runs-dir", str(report_store.runs_dir)])
    assert res.exit_code == 2
    assert message in res.stderr and "Traceback" not in res.output


def test_table_command_missing_store_exit_2(cli: typer.Typer, tmp_path) -> None:
    res = CliRunner().invoke(cli, ["table", "--runs-dir", str(tmp_path / "none")])
    assert res.exit_code == 2 and "error: no MLflow store at" in res.stderr


@pytest.mark.parametrize("command", [["table"], ["plot", "--kind", "psi-bars"], ["report"]])
@pytest.mark.parametrize("flag, value, message", [
    ("--by", "lamda", "error: unknown column 'lamda'"),
    ("--metric", "exact_mach", "error: metric 'exact_mach' is not logged on the selected trial runs")])
def test_an_unknown_by_name_is_refused_before_the_heavy_imports(report_store: Store, command: list[str], flag: str,
                                                                 value: str, message: str) -> None:
    """Read from the run folder's own store with sqlite3: no MLflow, no scipy; the same message as
    the full check (`SweepRuns.resolve` / `resolve_metric`), with its did-you-mean."""
    args = [*command, flag, value, "--runs-dir", str(report_store.runs_dir)]
    rc, heavy, out, err = imported_after(args, ("mlflow", "scipy", "matplotlib"))
    assert rc == 2 and heavy == [], out + err
    err = err.strip()
    assert err.startswith(message) and "did you mean '" in err and "\n" not in err
