"""Each plot kind draws a non-empty image from a real MLflow store; figures land on the parent run."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from report_fixtures import STEPS, Store, report_runs, report_store  # noqa: F401  (fixtures)
from sweeps.report import ReportError, SweepRuns, load_sweep
from sweeps.report import plots
from sweeps.report.commands import register

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kind", plots.KINDS)
def test_each_kind_writes_a_png_and_logs_it(kind: str, report_runs: SweepRuns, tmp_path) -> None:
    fig = plots.plot(report_runs, kind)
    path = plots.save_figure(fig, tmp_path / f"{kind}.png")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert fig.axes and fig.axes[0].has_data()
    name = plots.log_figure(report_runs, fig, f"figures/test-{kind}.png")
    logged = {a.path for a in report_runs.client.list_artifacts(report_runs.sweep.run_id, "figures")}
    assert name in logged


def _joined(ax) -> list:
    """Line2Ds through more than one point, reference lines (runs without x) aside."""
    return [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 1 and ln.get_gid() != plots.REFERENCE_GID]


def test_curves_draw_one_line_per_group_with_baselines(report_runs: SweepRuns) -> None:
    ax = plots.eta_curve(report_runs, by=["family", "psi", "lam"]).axes[0]
    # Lines join configurations that differ in eta alone: (gaussian, lam 1) and (laplace, lam 1);
    # (gaussian, lam 3) has one eta: a point with its interval, no line.
    lines = _joined(ax)
    assert len(lines) == 2 and all(list(ln.get_xdata()) == [0.1, 0.2] for ln in lines)
    em = report_runs.trials.query("`params.loss.psi` == 'laplace' and `params.loss.eta` == 0.2")
    assert lines[1].get_ydata()[1] == pytest.approx(em["metrics.exact_match"].mean())
    refs = [ln.get_label() for ln in ax.get_lines() if ln.get_gid() == plots.REFERENCE_GID]
    assert refs == ["family=hard (no eta; n=3)", "family=label_smoothing (no eta; n=3)"]
    dots = sum(len(c.get_offsets()) for c in ax.collections if c.get_label().startswith("family="))
    assert dots == 15  # every soft-label trial one dot
    with pytest.raises(ReportError, match="'psi'.*not numeric"):
        plots.param_curve(report_runs, "psi")
    with pytest.raises(ReportError, match="unknown column 'zeta'"):
        plots.param_curve(report_runs, "zeta")


def test_curves_without_reference_runs_have_no_reference_line(report_runs: SweepRuns) -> None:
    """An eta grid where every run has eta (the eta ablation) draws no "(no eta)" reference."""
    soft = report_runs.trials[report_runs.trials["params.loss.family"] == "soft_label"]
    ax = plots.eta_curve(dataclasses.replace(report_runs, trials=soft), by=["psi", "lam"]).axes[0]
    assert not [ln for ln in ax.get_lines() if ln.get_gid() == plots.REFERENCE_GID]
    assert not [t for t in ax.get_legend().get_texts() if "(no eta" in t.get_text()]


def test_learning_curves_use_the_per_step_history(report_store: Store, report_runs: SweepRuns) -> None:
    hist = report_runs.histories(["exact_match", "train_loss"])
    assert len(hist) == len(report_runs.trials) * len(STEPS) * 2
    final = hist[(hist.metric == "exact_match") & (hist.step == STEPS[-1])].set_index("run_id")["value"]
    assert final.to_dict() == {t.run_id: t.exact_match for t in report_store.finished()}
    ax = plots.learning_curves(report_runs, "train_loss", by=["family"]).axes[0]
    # soft_label pools 5 configurations: each of its 15 runs is drawn on its own, never averaged.
    labels = [line.get_label() for line in ax.get_lines()]
    assert [x for x in labels if not x.startswith("_")] == [
        "family=hard (n=3)", "family=label_smoothing (n=3)",
        "family=soft_label (5 configurations: each run, no band)"]
    assert len(labels) == 2 + 15
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), STEPS)
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [2 - (k + 1) / 3 for k in range(3)])


def test_importance_from_mlflow_runs_and_from_a_persisted_study(report_store: Store, report_runs: SweepRuns,
                                                                 tmp_path) -> None:
    import optuna

    values, source = plots.param_importances(report_runs)
    assert set(values) == {"family", "psi", "eta", "lam", "seed"} and "MLflow runs" in source
    assert sum(values.values()) == pytest.approx(1.0) and all(v >= 0 for v in values.values())
    study = plots.mlflow_study(report_runs, "exact_match", report_runs.searched_params())
    assert len(study.trials) == 21 and study.direction == optuna.study.StudyDirection.MAXIMIZE
    hard = [t for t in study.trials if t.params["family"] == "hard"]
    assert len(hard) == 3 and all("eta" not in t.params for t in hard)  # conditional params

    # A study persisted beside the MLflow store under the sweep id is preferred.
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    shutil.copyfile(report_store.runs_dir / "mlflow.db", runs_dir / "mlflow.db")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    persisted = optuna.create_study(study_name="sweep-new", storage=f"sqlite:///{runs_dir / 'optuna.db'}",
                                    direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    persisted.optimize(lambda t: t.suggest_float("eta", 0.0, 0.3) - 0.1 * t.suggest_float("noise", 0, 1),
                       n_trials=12)
    # ... but not while the sweep has a trial stopped early and the study has no PRUNED trial: such
    # a study was written before stopped trials were PRUNED, and holds an ASHA-stopped trial as
    # COMPLETE with its partial value (it mixes budgets); full-budget MLflow runs are used.
    values, source = plots.param_importances(load_sweep(runs_dir=runs_dir))
    assert "eta" in values and "noise" not in values
    assert source.endswith("on full-budget MLflow runs, 2 run(s) below the full budget left out")
    # Today's studies hold a stopped trial PRUNED: COMPLETE trials are the full-budget ones, and the
    # study is used; its ranking is optuna-dashboard's (Optuna's default PED-ANOVA on the same study).
    stopped = persisted.ask({"eta": optuna.distributions.FloatDistribution(0.0, 0.3),
                             "noise": optuna.distributions.FloatDistribution(0, 1)})
    stopped.report(5.0, step=100)
    persisted.tell(stopped, state=optuna.trial.TrialState.PRUNED)
    values, source = plots.param_importances(load_sweep(runs_dir=runs_dir))
    assert set(values) == {"eta", "noise"} and "Optuna study 'sweep-new'" in source
    dashboard = optuna.importance.get_param_importances(
        optuna.load_study(study_name="sweep-new", storage=f"sqlite:///{runs_dir / 'optuna.db'}"),
        evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    assert list(values) == list(dashboard) and values == pytest.approx(dashboard)
    from mlflow.tracking import MlflowClient

    copy = MlflowClient(f"sqlite:///{runs_dir / 'mlflow.db'}")
    copy.delete_run(next(t.run_id for t in report_store.trials if t.status == "KILLED"))
    values, source = plots.param_importances(load_sweep(runs_dir=runs_dir))
    assert set(values) == {"eta", "noise"} and "Optuna study 'sweep-new'" in source


def test_bars_and_parallel_cover_all_trials(report_runs: SweepRuns) -> None:
    ax = plots.psi_bars(report_runs).axes[0]
    dots = [line.get_ydata()[0] for line in ax.get_lines() if line.get_marker() in ("o", "D")]
    means = report_runs.trials.groupby(["params.loss.family", "params.loss.psi"], dropna=False)[
        "metrics.exact_match"].mean()
    assert dots == pytest.approx(list(means)) and not ax.patches  # dots and intervals, no bars
    # hard and label smoothing are one configuration each (an interval); the soft-label psi
    # groups pool eta/lam configurations: a hollow diamond, their runs as dots, no interval.
    assert len([ln for ln in ax.get_lines() if ln.get_marker() == "D"]) == 2
    assert len([ln for ln in ax.get_lines() if ln.get_marker() == "_"]) == 2 * 2
    par = plots.parallel(report_runs, "mae").axes[0]
    polylines = [line for line in par.get_lines() if len(line.get_xdata()) == 5]  # 4 params + metric
    assert len(polylines) == len(report_runs.trials)
    assert [t.get_text() for t in par.get_xticklabels()] == ["family", "psi", "eta", "lam", "mae"]


def test_plot_errors(report_runs: SweepRuns, tmp_path) -> None:
    with pytest.raises(ReportError, match="--kind 'pie'"):
        plots.plot(report_runs, "pie")
    with pytest.raises(ReportError, match="must end in .png, .svg, .pdf"):
        plots.save_figure(plots.psi_bars(report_runs), tmp_path / "x.jpg")
    with pytest.raises(ReportError, match="metric 'bleu' is not logged"):
        plots.plot(report_runs, "psi-bars", metric="bleu")
    with pytest.raises(ReportError, match="'step' has the same value on every trial"):
        plots.importance(report_runs, "step")


def test_plot_command_svg_logged_on_parent(report_store: Store, tmp_path) -> None:
    app = typer.Typer()
    register(app)
    out = tmp_path / "eta.svg"
    res = CliRunner().invoke(app, ["plot", "--kind", "eta-curve", "--metric", "mae", "--runs-dir",
                                   str(report_store.runs_dir), "-o", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "<svg" in text and len(text) > 10_000
    assert f"logged figures/eta-curve-mae.svg to parent run {report_store.parent_run_id}" in res.stdout
    from mlflow.tracking import MlflowClient

    client = MlflowClient(report_store.uri)
    names = {a.path for a in client.list_artifacts(report_store.parent_run_id, "figures")}
    assert "figures/eta-curve-mae.svg" in names
    res = CliRunner().invoke(app, ["plot", "--kind", "eta-curve", "--metric", "bleu", "--runs-dir",
                                   str(report_store.runs_dir)])
    assert res.exit_code == 2 and "error: metric 'bleu' is not logged" in res.stderr
