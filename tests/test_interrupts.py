"""What users and machines do to a running sweep (issue 11): Ctrl-C and SIGTERM then `resume`, a
spec edited before `resume`, a moved/copied run folder, two drivers on one folder, a full disk, a
stuck trial, every trial failing. Figures go to docs/reliability.md (R6-R11).

Real processes and signals: `slsweep` runs in a session of its own (`start_new_session=True`) and
the signal goes to its process group, as a terminal's Ctrl-C does; Ray's own processes block
SIGINT. Everything a test starts is ended by its session id or its private temp dir, never by name.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import ray
from mlflow.tracking import MlflowClient
from ray import tune

from helpers import store_has_runs
from cluster_utils import (TINY, kill_leftovers, pids_mentioning, private_local_ray, short_tmp,
                           stop_session, wait_session_ends, wait_until)
from sweeps.store import paths
from sweeps.driver.service import ensure_tiny_model
from sweeps.driver.preflight import plan_sweep
from sweeps.driver.tuner import execute

BIN = Path(sys.executable).parent
# Three TPE trials one at a time, long enough (12 evaluations, ~15 s) to be caught mid-way.
EVALS = list(range(3, 37, 3))
SPEC = "name: stop3" + TINY + """
train: {steps: 36, batch_size: 8, lr: 1.0e-3, warmup_steps: 1, eval_every: 3, max_new_tokens: 4}
search_space: {name: eta-only, params: {eta: {type: float, low: 0.0, high: 0.3}}}
search: {algorithm: tpe, num_samples: 3, seeds: 1, max_concurrent: 1, seed: 5}
"""
SHORT = "name: short" + TINY + """
train: {steps: 4, batch_size: 8, lr: 1.0e-3, warmup_steps: 1, eval_every: 2, max_new_tokens: 4}
search_space: {name: eta-only, params: {eta: {type: float, low: 0.0, high: 0.3}}}
search: {algorithm: random, num_samples: 2, seeds: 1, max_concurrent: 1, seed: 3}
"""


class Driver:
    """`slsweep ARGS` in a session of its own; its local Ray under a private temp dir."""

    def __init__(self, args: list[str], log: Path, ray_tmp: Path, env: dict[str, str] | None = None):
        self.log, self.ray_tmp = log, ray_tmp
        self.out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(BIN / "slsweep"), *args], stdout=self.out, stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "SLSWEEP_RAY_TMP": str(ray_tmp), "OMP_NUM_THREADS": "1", **(env or {})})

    def signal(self, signum: int) -> None:
        os.killpg(self.proc.pid, signum)  # the process group: what a terminal's Ctrl-C reaches

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        stop_session(self.proc.pid, grace=3.0)
        kill_leftovers(str(self.ray_tmp))
        shutil.rmtree(self.ray_tmp, ignore_errors=True)
        self.out.close()


def _client(runs: Path) -> MlflowClient:
    return MlflowClient(paths.default_tracking_uri(runs))


def _runs(client: MlflowClient, experiment: str, kind: str = "trial") -> list[Any]:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], f"tags.`slsweep.kind` = '{kind}'") if exp else []


def _wait_mid_trial(driver: Driver, runs: Path, experiment: str, step: int, done: int = 0):
    """Until `done` trials finished and a running one has logged `step`; returns that run."""
    client = None

    def ready():
        nonlocal client
        if driver.proc.poll() is not None:
            raise AssertionError(f"driver exited early:\n{driver.text()[-3000:]}")
        if client is None and not store_has_runs(runs / "mlflow.db"):
            return None
        client = client or _client(runs)
        trials = _runs(client, experiment)
        finished = [r for r in trials if r.info.status == "FINISHED"]
        live = [r for r in trials if r.info.status == "RUNNING"
                and int(r.data.tags.get("last_step", 0)) >= step]
        return live[0] if len(finished) >= done and live else None

    return wait_until(ready, 480, f"{done} finished trial(s) and one at step {step}", every=0.2)


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _study(runs: Path, sweep_id: str) -> optuna.Study:
    return optuna.load_study(study_name=sweep_id, storage=paths.optuna_storage_uri(runs))


# --------------------------------------------------------------------------- R6 + R7 + R8


@pytest.mark.slow
@pytest.mark.parametrize("signum,forced", [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGTERM, True)],
                         ids=["ctrl-c", "sigterm", "sigterm-then-ctrl-c"])
def test_r6_signal_then_resume_finishes_every_configuration_once(signum: int, forced: bool,
                                                                 tmp_path: Path) -> None:
    """Ctrl-C / SIGTERM mid-trial: a clean stop within seconds, a true record, and `resume`
    finishes every configuration exactly once: Ctrl-C, SIGTERM alone, and SIGTERM followed by a Ctrl-C
    (the forced stop).
    For Ctrl-C the same sweep also drills an edited spec before `resume` (R7) and a resume in a
    copy of the run folder (R8)."""
    spec = tmp_path / "stop3.yaml"
    spec.write_text(SPEC)
    runs = tmp_path / "runs"
    driver = Driver(["run", str(spec), "--runs-dir", str(runs), "-q"], tmp_path / "run.log",
                    short_tmp("sli6-"))
    resumed = None
    try:
        live = _wait_mid_trial(driver, runs, "stop3", step=6, done=1)
        t0 = time.perf_counter()
        driver.signal(signum)
        if forced:
            time.sleep(0.5)
            driver.signal(signal.SIGINT)  # a second signal: stop at once
        rc = driver.wait(120)
        stop_s = time.perf_counter() - t0
        out = driver.text()
        assert rc == 128 + signum, out[-3000:]
        # Nothing of the stopped driver's Ray writes on: its processes are gone.
        wait_until(lambda: not pids_mentioning(str(driver.ray_tmp)), 60, "the driver's Ray to exit")
        ray_gone_s = time.perf_counter() - t0
        # nor any process its raylet started (Ray's dashboard and runtime-env agents, renamed
        # `ray::...`, outlived a stopped sweep by minutes)
        wait_session_ends(driver.proc.pid, 15)
        assert "interrupted" in out and "slsweep resume" in out and "Traceback" not in out, out[-3000:]

        client = _client(runs)
        parent = _runs(client, "stop3", "sweep")[0]
        sweep_id = parent.data.tags["slsweep.sweep_id"]
        assert parent.info.status == "KILLED" and parent.data.tags["slsweep.stop_reason"] == "interrupted"
        trials = _runs(client, "stop3")
        assert not [r for r in trials if r.info.status == "RUNNING"]
        cut = client.get_run(live.info.run_id)
        assert cut.info.status == "KILLED" and cut.data.tags["slsweep.stop_reason"] == "interrupted"
        states = [t.state for t in _study(runs, sweep_id).trials]
        assert optuna.trial.TrialState.FAIL not in states      # nothing closed for good
        assert optuna.trial.TrialState.RUNNING in states       # the cut trial stays resumable
        if not forced:
            assert "again to stop at once" in out
        else:  # the first signal named (the exit status is its), and that a second one forced the stop
            assert "interrupted (SIGTERM, forced): " in out, out[-3000:]

        target = runs
        if signum == signal.SIGINT:
            target = _edited_spec_is_refused_then_copy(spec, runs, tmp_path)
        elif not forced:  # issue 24: resume from the record alone, the spec file deleted
            spec.unlink()
        original = _tree_digest(runs) if target != runs else None
        resumed = Driver(["resume", "--runs-dir", str(target), "-q"], tmp_path / "resume.log",
                         short_tmp("sli6b-"))
        rc = resumed.wait(540)
        resume_s = time.perf_counter() - t0
        assert rc == 0, resumed.text()[-3000:]
        if signum == signal.SIGTERM and not forced:
            assert f"{spec}: gone; resuming from the run folder's copy" in resumed.text()
    finally:
        for d in (driver, resumed):
            if d is not None:
                d.stop()

    client = _client(target)
    trials = _runs(client, "stop3")
    assert len(trials) == 3 and all(r.info.status == "FINISHED" for r in trials)  # one run each
    again = client.get_run(live.info.run_id)
    assert again.data.metrics["restarts"] == 1.0 and "slsweep.stop_reason" not in again.data.tags
    steps = sorted(m.step for m in client.get_metric_history(live.info.run_id, "exact_match"))
    assert set(steps) == set(EVALS) and len(steps) - len(EVALS) <= 1  # continued from its checkpoint
    parent = client.get_run(_runs(client, "stop3", "sweep")[0].info.run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_finished"] == 3
    assert "slsweep.stop_reason" not in parent.data.tags
    study = _study(target, sweep_id)
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE"] * 3
    assert sorted(t.params["eta"] for t in study.trials) == pytest.approx(
        sorted(float(r.data.params["space.eta"]) for r in trials))
    if original is not None:
        assert _tree_digest(runs) == original  # the original folder was not touched
        _reports_in_the_copy(target, runs)
    print(f"\nR6 {signal.Signals(signum).name}{' + SIGINT' if forced else ''}: driver exited "
          f"{stop_s:.1f} s after the signal (exit {128 + signum}), its Ray gone at {ray_gone_s:.1f} s; "
          f"resume finished {resume_s:.0f} s after the signal; redone evaluations "
          f"{len(steps) - len(EVALS)}")


def _edited_spec_is_refused_then_copy(spec: Path, runs: Path, tmp_path: Path) -> Path:
    """R7: `resume` after the spec was edited is refused (exit 2, the changed fields, nothing
    touched); R8: the interrupted folder is copied, the original made read-only."""
    text = spec.read_text()
    spec.write_text(text.replace("steps: 36, batch_size: 8", "steps: 9, batch_size: 16"))
    before = _tree_digest(runs)
    proc = subprocess.run([str(BIN / "slsweep"), "resume", "--runs-dir", str(runs), "-q"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert "stop3.yaml" in err and "train.steps: 36 -> 9" in err and "train.batch_size: 8 -> 16" in err
    assert _tree_digest(runs) == before
    spec.write_text(text)

    copy = tmp_path / "copy" / "runs"
    shutil.copytree(runs, copy)
    for p in [runs, *runs.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    return copy


def _reports_in_the_copy(copy: Path, original: Path) -> None:
    from typer.testing import CliRunner

    from sweeps.cli import app

    for args in (["table", "--by", "eta"], ["plot", "--kind", "eta-curve", "-o", str(copy.parent / "eta.png")],
                 ["report", "-o", str(copy.parent / "report.html")]):
        res = CliRunner().invoke(app, [*args, "--runs-dir", str(copy)])
        assert res.exit_code == 0, (args, res.output)
    exp = _client(copy).get_experiment_by_name("stop3")
    assert exp.artifact_location.startswith(paths.artifacts_root(copy))
    assert list((copy / "artifacts").rglob("eta-curve-*.png"))         # the figure went into the copy
    assert not list((original / "artifacts").rglob("eta-curve-*.png"))  # not into the original


@pytest.mark.slow
def test_r8_moved_run_folder_resumes_in_its_new_place(tmp_path: Path) -> None:
    """A run folder moved (not copied) after Ctrl-C resumes where it now is: the pickled Optuna
    searcher opens no database of the old path (it is gone), the study and store of the moved
    folder finish, and nothing is created at the old path."""
    spec = tmp_path / "stop3.yaml"
    spec.write_text(SPEC)
    runs = tmp_path / "runs"
    driver = Driver(["run", str(spec), "--runs-dir", str(runs), "-q"], tmp_path / "run.log", short_tmp("sli8m-"))
    resumed = None
    try:
        _wait_mid_trial(driver, runs, "stop3", step=3)
        driver.signal(signal.SIGINT)
        assert driver.wait(120) == 128 + signal.SIGINT, driver.text()[-3000:]
        sweep_id = _runs(_client(runs), "stop3", "sweep")[0].data.tags["slsweep.sweep_id"]
        moved = tmp_path / "elsewhere" / "runs"
        moved.parent.mkdir()
        shutil.move(str(runs), str(moved))
        resumed = Driver(["resume", "--runs-dir", str(moved), "-q"], tmp_path / "resume.log", short_tmp("sli8n-"))
        rc = resumed.wait(540)
        assert rc == 0, resumed.text()[-3000:]
    finally:
        for d in (driver, resumed):
            if d is not None:
                d.stop()
    assert not runs.exists()
    trials = _runs(_client(moved), "stop3")
    assert len(trials) == 3 and all(r.info.status == "FINISHED" for r in trials)
    assert sorted(t.state.name for t in _study(moved, sweep_id).trials) == ["COMPLETE"] * 3


# --------------------------------------------------------------------------- R9: two drivers


@pytest.mark.slow
def test_r9_two_drivers_same_second_one_folder(tmp_path: Path) -> None:
    """Two `slsweep run` of one spec started together on a fresh folder: two sweeps, each with
    its own parent run, study and Ray folder; a third driver on a running sweep is refused."""
    spec = tmp_path / "short.yaml"
    spec.write_text(SHORT)
    runs = tmp_path / "runs"
    drivers = [Driver(["run", str(spec), "--runs-dir", str(runs), "-q"], tmp_path / f"d{i}.log",
                      short_tmp(f"sli9{i}-")) for i in range(2)]
    try:
        records = wait_until(lambda: sorted((runs / paths.PLANS).glob("*.json")) or None, 240,
                             "a sweep record")
        first = records[0].stem
        refused = subprocess.run([str(BIN / "slsweep"), "resume", first, "--runs-dir", str(runs), "-q"],
                                 capture_output=True, text=True, timeout=300)
        rcs = [d.wait(540) for d in drivers]
    finally:
        for d in drivers:
            d.stop()
    assert rcs == [0, 0], [d.text()[-2000:] for d in drivers]
    # The sweep was still running (refused) or had already finished (nothing to resume).
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "being run by another driver" in refused.stderr or "already finished" in refused.stderr
    client = _client(runs)
    parents = _runs(client, "short", "sweep")
    ids = {p.data.tags["slsweep.sweep_id"] for p in parents}
    assert len(parents) == 2 and len(ids) == 2 and all(p.info.status == "FINISHED" for p in parents)
    for sweep_id in ids:
        trials = [r for r in _runs(client, "short") if r.data.tags["slsweep.sweep_id"] == sweep_id]
        assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
        assert sorted(t.state.name for t in _study(runs, sweep_id).trials) == ["COMPLETE"] * 2
        assert (runs / "ray" / sweep_id).is_dir()
    print(f"\nR9: sweeps {sorted(ids)}; a resume of a running sweep: {refused.stderr.strip()}")


# --------------------------------------------------------------------------- R10: stuck trial


class FreezeFirstWorker(tune.Callback):
    """SIGSTOPs the first trial's worker process after its first result: a frozen worker."""

    def __init__(self) -> None:
        self.frozen: dict[str, Any] = {}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if not self.frozen:
            os.kill(int(result["pid"]), signal.SIGSTOP)
            self.frozen = {"trial_id": trial.trial_id, "pid": int(result["pid"]), "at": time.monotonic()}

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id == self.frozen.get("trial_id"):
            self.frozen["failed_after_s"] = time.monotonic() - self.frozen["at"]


STUCK = "name: stuck" + TINY.replace("scheduler: {type: fifo}", "scheduler: {type: fifo}\nlimits: {trial_seconds: 40}") + """
train: {steps: 4, batch_size: 8, lr: 1.0e-3, warmup_steps: 1, eval_every: 2, max_new_tokens: 4}
search_space:
  name: lr-grid
  params: {lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true, target: train.lr, values: [1.0e-3, 2.0e-3]}}
search: {algorithm: grid, seeds: 1, max_concurrent: 1}
"""


@pytest.mark.slow
def test_r10_frozen_trial_ends_failed_timeout_and_the_sweep_goes_on(tmp_path: Path) -> None:
    spec = tmp_path / "stuck.yaml"
    spec.write_text(STUCK)
    plan = plan_sweep(spec, runs_dir=tmp_path / "runs")
    ensure_tiny_model(plan.resolved.base_trial_config())
    freezer = FreezeFirstWorker()
    t0 = time.monotonic()
    with private_local_ray("sli10-"):
        try:
            execute(plan, verbose=0, callbacks=[freezer])
        finally:
            if freezer.frozen:
                try:
                    os.kill(freezer.frozen["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
    assert freezer.frozen, "no worker was frozen"
    client = _client(tmp_path / "runs")
    trials = _runs(client, "stuck")
    stuck = next(r for r in trials if r.data.tags["trial_id"] == freezer.frozen["trial_id"])
    assert stuck.info.status == "FAILED" and stuck.data.tags["slsweep.stop_reason"] == "timeout"
    assert "TrialTimeoutError" in stuck.data.tags["slsweep.error"]
    others = [r for r in trials if r is not stuck]
    assert [r.info.status for r in others] == ["FINISHED"]
    parent = _runs(client, "stuck", "sweep")[0]
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_failed"] == 1
    print(f"\nR10: frozen at its first result, FAILED timeout {freezer.frozen['failed_after_s']:.0f} s "
          f"later (limit 40 s from the trial's start); sweep {time.monotonic() - t0:.0f} s")


# --------------------------------------------------------------------------- R11: faults


ALL_FAIL = "name: allfail" + TINY + """
train: {steps: 4, batch_size: 8, lr: 1.0e+6, warmup_steps: 1, eval_every: 4, max_new_tokens: 4}
search_space:
  name: lr-one
  params: {lr: {type: float, low: 1.0e+5, high: 1.0e+7, target: train.lr, values: [1.0e+6]}}
search: {algorithm: grid, seeds: 1, max_concurrent: 1}
"""


@pytest.mark.slow
def test_r11_every_trial_failing_is_one_line_and_exit_1(tmp_path: Path) -> None:
    spec = tmp_path / "allfail.yaml"
    spec.write_text(ALL_FAIL)
    ray_tmp = short_tmp("sli11-")
    try:
        proc = subprocess.run([str(BIN / "slsweep"), "run", str(spec), "--runs-dir", str(tmp_path / "runs"), "-q"],
                              capture_output=True, text=True, timeout=400,
                              env={**os.environ, "SLSWEEP_RAY_TMP": str(ray_tmp)})
    finally:
        kill_leftovers(str(ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert proc.returncode == 1 and len(errors) == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "all 1 trial(s)" in errors[0] and "NonFiniteLossError" in errors[0]
    assert "KeyError" not in proc.stdout + proc.stderr
    client = _client(tmp_path / "runs")
    assert [r.info.status for r in _runs(client, "allfail")] == ["FAILED"]
    assert _runs(client, "allfail", "sweep")[0].info.status == "FINISHED"


def _can_mount_tmpfs(where: Path) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(where)],
                        capture_output=True).returncode == 0
    return ok


@pytest.mark.slow
def test_r11_disk_full_mid_sweep_then_resume(tmp_path: Path) -> None:
    """The run folder on a 256 MB tmpfs; once a trial has evaluated, a filler file takes the rest
    of the space. One line and exit 1, no RUNNING run left; after freeing space, resume finishes."""
    mnt = tmp_path / "small"
    if not _can_mount_tmpfs(mnt):
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    spec = tmp_path / "stop3.yaml"
    spec.write_text(SPEC)
    runs = mnt / "runs"
    filler = mnt / "filler"
    driver = resumed = None
    try:
        driver = Driver(["run", str(spec), "--runs-dir", str(runs), "-q"], tmp_path / "run.log",
                        short_tmp("sli11d-"))
        _wait_mid_trial(driver, runs, "stop3", step=3)
        with open(filler, "wb") as out:  # fill the disk
            try:
                while True:
                    out.write(b"\0" * (1 << 20))
                    out.flush()
            except OSError:
                pass
        rc = driver.wait(300)
        out_text = driver.text()
        errors = [ln for ln in out_text.splitlines() if ln.startswith("error: ")]
        assert rc == 1 and len(errors) == 1, out_text[-4000:]
        # whichever write meets the full disk first: a file (ENOSPC) or the SQLite store (SQLITE_FULL)
        assert any(s in errors[0] for s in ("disk full", "No space left", "database or disk is full")), errors[0]
        # It names the command that continues this sweep in this folder (the bare `slsweep resume`
        # would look in ./slsweep-runs).
        assert re.search(rf"`slsweep resume \S+ --runs-dir {re.escape(str(runs.resolve()))}`", errors[0]), errors[0]
        filler.unlink()
        client = _client(runs)
        left = [r for r in _runs(client, "stop3") + _runs(client, "stop3", "sweep") if r.info.status == "RUNNING"]
        assert not left, [(r.info.run_id, r.data.tags) for r in left]
        resumed = Driver(["resume", "--runs-dir", str(runs), "-q"], tmp_path / "resume.log",
                         short_tmp("sli11e-"))
        assert resumed.wait(540) == 0, resumed.text()[-3000:]
        trials = _runs(client, "stop3")
        assert sorted(r.info.status for r in trials) == ["FINISHED"] * 3, [r.data.tags for r in trials]
        # The runs the failed driver closed with its error finished after the resume: the error
        # of the failure they recovered from is no longer theirs.
        recovered = trials + _runs(client, "stop3", "sweep")
        assert not [r.data.tags["slsweep.error"] for r in recovered if "slsweep.error" in r.data.tags]
        print(f"\nR11: disk full -> {errors[0]}")
    finally:
        for d in (driver, resumed):
            if d is not None:
                d.stop()
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_sweep_ids_started_together_differ() -> None:
    """Two sweeps of one spec started in the same second get different ids (random suffix)."""
    from sweeps.driver.preflight import new_sweep_id

    ids = {new_sweep_id("same") for _ in range(2000)}
    assert len(ids) == 2000 and all(i.startswith("same-") for i in ids)


# 20 trials of 4-8 s cannot fit in 30 s on any machine: the limit always cuts the sweep.
BUDGET = SPEC.replace("name: stop3", "name: budget").replace(
    "scheduler: {type: fifo}", "scheduler: {type: fifo}\nlimits: {sweep_seconds: 30}").replace(
    "num_samples: 3,", "num_samples: 20,")


@pytest.mark.slow
def test_r10_sweep_time_limit_ends_the_sweep_for_good(tmp_path: Path) -> None:
    """`limits.sweep_seconds` (Tune's time_budget_s): running trials end KILLED
    `sweep_time_limit`, the parent FINISHED with that reason, no Optuna trial left open, and
    `resume` says there is nothing to resume."""
    from typer.testing import CliRunner

    from sweeps.cli import app

    from sweeps.driver.service import run_sweep

    spec = tmp_path / "budget.yaml"
    spec.write_text(BUDGET)
    t0 = time.monotonic()
    with private_local_ray("sli10b-"):
        plan = run_sweep(spec, runs_dir=tmp_path / "runs", verbose=0).outcome.plan  # with its record
    took = time.monotonic() - t0
    client = _client(tmp_path / "runs")
    parent = _runs(client, "budget", "sweep")[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["slsweep.stop_reason"] == "sweep_time_limit"
    trials = _runs(client, "budget")
    assert not [r for r in trials if r.info.status == "RUNNING"]
    assert len([r for r in trials if r.info.status == "FINISHED"]) < 20  # the limit cut the sweep
    cut = [r for r in trials if r.info.status != "FINISHED"]  # none when it fell between trials
    assert all(r.info.status == "KILLED" and r.data.tags["slsweep.stop_reason"] == "sweep_time_limit"
               for r in cut)
    states = [t.state.name for t in _study(tmp_path / "runs", plan.sweep_id).trials]
    assert "RUNNING" not in states
    res = CliRunner().invoke(app, ["resume", "--runs-dir", str(tmp_path / "runs"), "-q"])
    assert res.exit_code == 2 and "already finished (sweep_time_limit)" in res.output, res.output
    print(f"\nR10 budget: sweep_seconds 30 -> ended after {took:.0f} s; trials "
          f"{sorted(r.info.status for r in trials)}")


@pytest.mark.slow
def test_r10_trial_size_no_node_can_hold_is_refused_after_the_wait(tmp_path: Path) -> None:
    """On a cluster (here: a 1-CPU Ray, joined as if it were one) a trial asking 4 CPUs is
    refused after `limits.resources_wait_seconds`, with one line naming resources.cpu."""
    from sweeps.errors import SpecError
    from sweeps.driver.preflight import plan_sweep
    from sweeps.driver.ray_env import check_cluster_resources

    spec = tmp_path / "big.yaml"
    spec.write_text(SHORT.replace("resources: {cpu: 1, gpu: 0}", "resources: {cpu: 4, gpu: 0}\n"
                                  "limits: {resources_wait_seconds: 2}"))
    plan = plan_sweep(spec, runs_dir=tmp_path / "runs", address="127.0.0.1:1", check=False)
    ray_tmp = short_tmp("sli10c-")
    ray.init(address="local", num_cpus=1, include_dashboard=False, _temp_dir=str(ray_tmp))
    try:
        t0 = time.monotonic()
        with pytest.raises(SpecError) as info:
            check_cluster_resources(plan)
        waited = time.monotonic() - t0
    finally:
        ray.shutdown()
        kill_leftovers(str(ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert info.value.field == "resources.cpu" and "no Ray node has that many" in str(info.value)
    assert "after waiting 2 s" in str(info.value) and "\n" not in str(info.value)
    assert 2 <= waited < 30
