"""Commands that fail on input answer before the heavy imports (MLflow, Ray, torch): a misspelt
sweep name on the run folder's own store, and a tracking URI whose database driver is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import imported_after

HEAVY = ("mlflow", "ray", "torch", "transformers", "optuna")


def _store(runs: Path) -> None:
    from mlflow.tracking import MlflowClient

    from sweeps.store import paths

    runs.mkdir()
    client = MlflowClient(paths.default_tracking_uri(runs))
    exp = client.create_experiment("e")
    run = client.create_run(exp, tags={"slsweep.kind": "sweep", "slsweep.sweep_id": "e-1"})
    client.set_terminated(run.info.run_id)


@pytest.mark.parametrize("command", ["table", "report", "confirm"])
def test_unknown_sweep_is_refused_before_mlflow_is_imported(command: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _store(runs)
    rc, heavy, out, err = imported_after([command, "nosuch", "--runs-dir", str(runs)], HEAVY, cwd=tmp_path)
    assert rc == 2, out + err
    assert "no experiment or sweep named 'nosuch'" in err and "(experiments: Default, e)" in err, err
    assert "Traceback" not in err
    if command != "confirm":  # confirm reads the sweep through MLflow once the name is known good
        assert heavy == [], heavy
    # the same store still answers for the names it has: an experiment name and a sweep id
    from sweeps.report.status import unknown_experiment
    from sweeps.store import paths
    assert unknown_experiment(runs / paths.MLFLOW_DB, "e") is None
    assert unknown_experiment(runs / paths.MLFLOW_DB, "e-1") is None
    assert unknown_experiment(runs / paths.MLFLOW_DB, "nosuch") == ["Default", "e"]


@pytest.mark.parametrize("command", [["status"], ["table"], ["report", "x"], ["confirm", "x"]])
def test_a_missing_database_driver_is_one_line_for_every_reader(command: list[str], tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "sweeps.cli", *command, "--tracking-uri", "postgresql://u@h/db"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "--tracking-uri" in proc.stderr
    assert "database driver is not installed" in proc.stderr and "Traceback" not in proc.stderr
