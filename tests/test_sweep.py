"""A real 4-trial sweep: local Ray, TPE over paper.yaml, MLflow (SQLite), the Optuna DB."""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pytest
import ray
from mlflow.tracking import MlflowClient

from sweeps.store import paths
from sweeps.driver.service import run_sweep

pytestmark = pytest.mark.slow

SPEC = """
name: t4
task: {name: counting, eval_size: 16, train_size: 64}
model: {path: tiny}
train: {steps: 4, batch_size: 8, lr: 1.0e-3, warmup_steps: 1, eval_every: 2, max_new_tokens: 4}
loss: {family: soft_label, eta: 0.1, lam: 2.0, psi: triangular}
search_space: paper.yaml
search: {algorithm: tpe, num_samples: 4, seeds: 1, max_concurrent: 2, seed: 3}
scheduler: {type: fifo}
resources: {cpu: 1, gpu: 0}
metric: {name: exact_match, mode: max}
"""
SHAPE_PARAM = {"triangular": "triangular_width", "binomial": "binomial_temperature",
               "poisson": "poisson_temperature", "gaussian": "gaussian_sigma", "laplace": "laplace_scale"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("sweep")
    spec = tmp / "t4.yaml"
    spec.write_text(SPEC)
    summary = run_sweep(spec, runs_dir=tmp / "runs", verbose=0, print_summary=False)
    ray.shutdown()
    return summary, tmp / "runs"


def test_mlflow_holds_parent_and_four_children(sweep) -> None:
    summary, runs = sweep
    client = MlflowClient(paths.default_tracking_uri(runs))
    exp = client.get_experiment_by_name("t4")
    parents = client.search_runs([exp.experiment_id], "tags.`slsweep.kind` = 'sweep'")
    children = client.search_runs([exp.experiment_id], "tags.`slsweep.kind` = 'trial'")
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_total"] == 4
    assert parent.data.tags["git_commit"]
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"spec.yaml", "search_space.yaml"}
    for child in children:
        tags, params = child.data.tags, child.data.params
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED" and tags["status"] == "finished"
        assert tags["search_space"] == "paper.yaml" and len(tags["search_space_hash"]) >= 8
        assert tags["loss"] == "soft_label" and tags["psi"] == params["loss.psi"]
        assert tags["node"] and tags["seed"] == "0"
        assert 0.0 <= float(params["loss.eta"]) <= 0.3 and 0.5 <= float(params["loss.lam"]) <= 5.0
        # conditional parameters only where their shape was chosen
        own = SHAPE_PARAM.get(params["loss.psi"])
        for shape, name in SHAPE_PARAM.items():
            assert (f"space.{name}" in params) == (name == own)
        assert ("loss.psi_param" in params) == (own is not None)
        history = client.get_metric_history(child.info.run_id, "exact_match")
        assert [m.step for m in history] == [2, 4]
        assert {"train_loss", "mae", "off_by_one", "unparseable"} <= set(child.data.metrics)
        assert child.data.metrics["soft_target_coverage"] == 1.0  # the soft labels reached the answers
        arts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"config.yaml", "predictions.csv"} <= arts


def test_optuna_study_holds_the_same_trials(sweep) -> None:
    summary, runs = sweep
    study = optuna.load_study(study_name=summary.outcome.plan.sweep_id,
                              storage=paths.optuna_storage_uri(runs))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4
    client = MlflowClient(paths.default_tracking_uri(runs))
    exp = client.get_experiment_by_name("t4")
    etas = sorted(float(r.data.params["loss.eta"]) for r in
                  client.search_runs([exp.experiment_id], "tags.`slsweep.kind` = 'trial'"))
    assert sorted(t.params["eta"] for t in done) == pytest.approx(etas)


def test_optuna_trials_and_mlflow_runs_point_at_each_other(sweep) -> None:
    summary, runs = sweep
    study = optuna.load_study(study_name=summary.outcome.plan.sweep_id,
                              storage=paths.optuna_storage_uri(runs))
    client = MlflowClient(paths.default_tracking_uri(runs))
    exp = client.get_experiment_by_name("t4")
    children = {r.info.run_id: r for r in
                client.search_runs([exp.experiment_id], "tags.`slsweep.kind` = 'trial'")}
    assert study.user_attrs == {"mlflow_experiment_id": exp.experiment_id,
                                "mlflow_parent_run_id": summary.outcome.parent_run_id}
    assert sorted(t.user_attrs["mlflow_run_id"] for t in study.trials) == sorted(children)
    for t in study.trials:
        run = children[t.user_attrs["mlflow_run_id"]]
        assert run.data.tags["trial_id"] == t.user_attrs["tune_trial_id"]
        assert run.data.tags["optuna.trial_number"] == str(t.number)
        assert float(run.data.params["loss.eta"]) == pytest.approx(t.params["eta"])


def test_summary_ranks_trials(sweep) -> None:
    summary, _ = sweep
    table = summary.table
    assert len(table) == 4 and not summary.failed_all
    values = table["exact_match"].tolist()
    assert values == sorted(values, reverse=True)
