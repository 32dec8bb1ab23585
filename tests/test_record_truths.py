"""Small truths of the record: what the store, the messages and the hints say is so.

- a run that recovered (resumed, then finished) carries no error of the failure it recovered from;
- a problem with the run folder chosen by $SLSWEEP_RUNS_DIR names that variable, not `--runs-dir`;
- click's own input errors reach the user as one line and exit 2, like every other input error
  (through the real `slsweep` entry point: `sweeps.cli:main`).

The hints printed after a sweep on a tracking server, and the SIGKILL figures, are drilled with a
real sweep in tests/test_private_ray.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from cluster_utils import TINY
from sweeps.cli import app
from sweeps.store.paths import RUNS_DIR_ENV
from sweeps.driver.preflight import plan_sweep
from sweeps.driver.tracking import SweepTracker
from sweeps.driver.tuner import sweep_info

BIN = Path(sys.executable).parent
SPEC = "name: rec" + TINY + """
train: {steps: 4, batch_size: 8, lr: 1.0e-3, warmup_steps: 1, eval_every: 2, max_new_tokens: 4}
search_space: {name: eta-only, params: {eta: {type: float, low: 0.0, high: 0.3}}}
search: {algorithm: random, num_samples: 1, seeds: 1, max_concurrent: 1, seed: 3}
"""


def test_a_resumed_run_that_finishes_keeps_no_error_of_the_failure(tmp_path: Path) -> None:
    """A driver that failed (disk full) closes its sweep KILLED with `slsweep.error`; the resumed
    driver reopens the same parent run, and once it finishes the old error is gone with the old
    stop reason (the run's record is how it ended, not what it recovered from)."""
    spec = tmp_path / "rec.yaml"
    spec.write_text(SPEC)
    plan = plan_sweep(spec, runs_dir=tmp_path / "runs", check=False)
    info = sweep_info(plan)
    client = MlflowClient(plan.tracking_uri)
    failed = SweepTracker(plan.tracking_uri, info, lambda c: None, lambda c: {})
    failed.setup()
    assert failed.abort("driver_error", "disk full: free space, then `slsweep resume` continues") == []
    parent = client.get_run(failed.parent_run_id)
    assert parent.info.status == "KILLED" and parent.data.tags["slsweep.error"].startswith("disk full")

    resumed = SweepTracker(plan.tracking_uri, info, lambda c: None, lambda c: {})
    resumed.setup()  # finds and reopens the same parent run
    assert resumed.parent_run_id == failed.parent_run_id
    resumed.finish([])
    parent = client.get_run(resumed.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert "slsweep.error" not in parent.data.tags and "slsweep.stop_reason" not in parent.data.tags


@pytest.mark.parametrize("command", [["run"], ["resume"], ["status"], ["ui", "--port", "9"]])
def test_a_run_folder_from_the_variable_is_blamed_on_the_variable(command: list[str], tmp_path: Path) -> None:
    """$SLSWEEP_RUNS_DIR naming a file: the one line names the variable; the same folder given as
    `--runs-dir` names the flag."""
    folder = tmp_path / "runs"
    folder.write_text("a file, not a folder\n")
    runner = CliRunner()
    res = runner.invoke(app, [*command], env={RUNS_DIR_ENV: str(folder)})
    err = res.output.strip()
    assert res.exit_code == 2 and err.count("\n") == 0 and err.startswith("error: "), res.output
    assert RUNS_DIR_ENV in err and "--runs-dir" not in err and str(folder) in err, err
    res = runner.invoke(app, [*command, "--runs-dir", str(folder)], env={RUNS_DIR_ENV: str(tmp_path)})
    assert res.exit_code == 2 and "--runs-dir" in res.output and RUNS_DIR_ENV not in res.output, res.output
    assert folder.read_text() == "a file, not a folder\n"  # nothing written


@pytest.mark.parametrize("command", [["table"], ["report", "-o", "r.html"], ["plot", "--kind", "psi-bars"],
                                     ["confirm"]])
def test_an_empty_run_folder_from_the_variable_is_named_by_reports(command: list[str], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The reading commands: a run folder with no store, chosen by $SLSWEEP_RUNS_DIR, names it."""
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, command, env={RUNS_DIR_ENV: str(tmp_path)})
    err = res.output.strip()
    assert res.exit_code == 2 and err.count("\n") == 0 and f"the run folder from {RUNS_DIR_ENV}" in err, err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("args, names", [
    (["run", "--search-seed", "-1"], "--search-seed"),
    (["run", "--no-such-option"], "--no-such-option"),
    (["plot", "--kind", "bogus"], "bogus"),
    (["resume", "--runs-dir"], "--runs-dir"),
    (["no-such-command"], "no-such-command"),
])
def test_click_usage_errors_are_one_line_and_exit_2(args: list[str], names: str) -> None:
    """The real entry point: one `error: ...` line naming the option or value, no usage box."""
    proc = subprocess.run([str(BIN / "slsweep"), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == "", (proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert err.startswith("error: ") and err.count("\n") == 0 and names in err, proc.stderr
    assert "Usage:" not in err and "Traceback" not in err


def test_the_entry_point_still_helps_and_exits_as_before(tmp_path: Path) -> None:
    """A bare `slsweep` prints the help; `--help` exits 0; a command's own status comes through."""
    bare = subprocess.run([str(BIN / "slsweep")], capture_output=True, text=True, timeout=120)
    assert bare.returncode == 2 and "Usage:" in bare.stderr and "Commands" in bare.stderr
    helped = subprocess.run([str(BIN / "slsweep"), "run", "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "--search-seed" in helped.stdout
    missing = subprocess.run([str(BIN / "slsweep"), "status", "--runs-dir", str(tmp_path / "none")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "no MLflow store" in missing.stderr
