"""Resume after the MLflow store lost the sweep (issue 24): the tracker Tune restores holds a
parent run id the store no longer has (a tracking server restarted on an empty database, a deleted
mlflow.db); it re-creates the parent run, says so, and forgets the lost trial runs."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from cluster_utils import TINY
from sweeps.driver.preflight import plan_sweep
from sweeps.driver.tracking import SweepTracker
from sweeps.driver.tuner import sweep_info

SPEC = "name: lost" + TINY + """
train: {steps: 4, batch_size: 8, lr: 1.0e-3, warmup_steps: 1, eval_every: 2, max_new_tokens: 4}
search_space: {name: eta-only, params: {eta: {type: float, low: 0.0, high: 0.3}}}
search: {algorithm: random, num_samples: 1, seeds: 1, max_concurrent: 1, seed: 3}
"""


def test_a_lost_parent_run_is_recreated_and_said(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "lost.yaml"
    spec.write_text(SPEC)
    plan = plan_sweep(spec, runs_dir=tmp_path / "runs", check=False)
    info = sweep_info(plan)
    first = SweepTracker(plan.tracking_uri, info, lambda c: None, lambda c: {})
    first.setup()
    state = {**first.get_state(), "runs": {"abc_00000": "0" * 32}, "names": {"abc_00000": "t01 x s0"}}
    lost = first.parent_run_id
    # The store behind the URI starts again empty (a new database file: this process's MLflow
    # keeps the first file open, so deleting it would not empty it here).
    empty = f"sqlite:///{tmp_path / 'restarted.db'}"

    resumed = SweepTracker(empty, info, lambda c: None, lambda c: {})
    resumed.set_state(state)  # as Tune restores the callback with the experiment state
    resumed.setup()
    said = capsys.readouterr().err
    assert f"has lost run {lost} of sweep {plan.sweep_id}: re-creating it" in said
    assert resumed.parent_run_id and resumed.parent_run_id != lost and resumed.runs == {}
    parent = MlflowClient(empty).get_run(resumed.parent_run_id)
    assert parent.data.tags["slsweep.sweep_id"] == plan.sweep_id and parent.info.status == "RUNNING"
