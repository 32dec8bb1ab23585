"""Every malformed spec is one clear message and exit 2, with nothing created anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from helpers import one_error_line
from sweeps.cli import app

BAD = Path(__file__).parent / "bad_inputs"
EXPECTED = yaml.safe_load((BAD / "EXPECTED.yaml").read_text())
# spec_*: rejected when the spec loads; run_*: valid specs whose data, model or servers are unusable,
# rejected by the driver's checks before anything is created.
SPECS = sorted(name for name in EXPECTED if name.startswith(("spec_", "run_")))
TRIALS = sorted(name for name in EXPECTED if name.startswith("trial_"))


def _invoke(args: list[str]):
    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("name", SPECS)
def test_bad_spec_exits_2_and_creates_nothing(name: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    res = _invoke(["run", str(BAD / name), "--runs-dir", str(runs), "--quiet"])
    assert res.exit_code == 2, res.output
    err = res.output.strip()
    assert err.startswith("error: ") and err.count("\n") == 0, err  # exactly one line
    assert EXPECTED[name]["field"] in err and EXPECTED[name]["message"] in err
    assert EXPECTED[name].get("file", name) in err  # the file to fix is named
    assert "Traceback" not in err
    assert not runs.exists()  # no MLflow store, no Optuna DB, no Ray storage


@pytest.mark.parametrize("name", TRIALS)
def test_bad_trial_config_exits_2(name: str) -> None:
    res = _invoke(["trial", str(BAD / name)])
    assert res.exit_code == 2 and EXPECTED[name]["field"] in res.output, res.output


def test_a_trial_whose_family_lacks_a_required_parameter_exits_2_before_the_model() -> None:
    """`slsweep trial counting loss.family=soft_label`: the built-in trial is hard CE, soft_label
    needs eta; one line naming the file and loss.eta (was a traceback from inside the trial)."""
    res = _invoke(["trial", "counting", "loss.family=soft_label"])
    assert res.exit_code == 2 and "counting.yaml: loss.eta: " in res.output and "Traceback" not in res.output, \
        res.output


def test_unreachable_tracking_uri_and_ray_address(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    res = _invoke(["run", "--runs-dir", str(runs), "--tracking-uri", "http://127.0.0.1:9", "-q"])
    assert res.exit_code == 2 and "--tracking-uri" in res.output and "unreachable" in res.output
    res = _invoke(["run", "--runs-dir", str(runs), "--address", "ray://127.0.0.1:9", "-q"])
    assert res.exit_code == 2 and "--address" in res.output and "unreachable" in res.output
    assert not runs.exists()


def test_real_process_prints_no_traceback(tmp_path: Path) -> None:
    """The installed entry point, as a user runs it: exit 2 and one line on stderr."""
    proc = subprocess.run([sys.executable, "-m", "sweeps.cli", "run", str(BAD / "spec_unknown_psi.yaml"),
                           "--runs-dir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "loss.psi" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_help_everywhere() -> None:
    for cmd in ([], ["run"], ["resume"], ["status"], ["list"], ["trial"], ["make-tiny-model"], ["ui"],
                ["table"], ["plot"], ["report"]):
        res = _invoke([*cmd, "--help"])
        assert res.exit_code == 0 and "Usage" in res.output, cmd


def test_corrupt_store_in_the_run_folder(tmp_path: Path) -> None:
    """A damaged mlflow.db (or optuna.db) is named with the flag, and nothing else is created."""
    for name in ("mlflow.db", "optuna.db"):
        runs = tmp_path / name / "runs"
        runs.mkdir(parents=True)
        (runs / name).write_bytes(b"this is not a database" * 100)
        err = one_error_line(_invoke(["run", "--runs-dir", str(runs), "-q"]))
        assert f"{runs / name}" in err and "--runs-dir" in err and "SQLite" in err
        assert sorted(p.name for p in runs.iterdir()) == [name]


def test_run_folder_that_is_a_file(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.write_text("a file, not a folder\n")
    for cmd in (["run"], ["resume"]):
        err = one_error_line(_invoke([*cmd, "--runs-dir", str(runs), "-q"]))
        assert "--runs-dir" in err and "not a folder" in err, err
    assert runs.read_text() == "a file, not a folder\n"


def test_fifo_as_data_path_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "data.jsonl"
    os.mkfifo(fifo)
    spec = tmp_path / "fifo.yaml"
    spec.write_text(f"name: bad\ntask: {{name: counting, data_path: {fifo}, eval_size: 1}}\n"
                    "loss: {family: hard}\nsearch_space: {name: lr, params: {lr: {type: float, "
                    "low: 1.0e-4, high: 1.0e-2, target: train.lr}}}\n")
    err = one_error_line(_invoke(["run", str(spec), "--runs-dir", str(tmp_path / "runs"), "-q"]))
    assert "task.data_path" in err and "not a regular file or folder" in err
    assert not (tmp_path / "runs").exists()


def test_ray_auto_without_a_cluster_leaves_nothing(tmp_path: Path) -> None:
    from ray._private.services import find_gcs_addresses

    if find_gcs_addresses() or os.environ.get("RAY_ADDRESS"):
        pytest.skip("a Ray cluster is running on this machine: `auto` would join it")
    runs = tmp_path / "runs"
    err = one_error_line(_invoke(["run", "--address", "auto", "--runs-dir", str(runs), "-q"]))
    assert "--address" in err and "no running Ray cluster" in err
    assert not runs.exists()  # no record a later `resume` would trip over
