"""Everyday use, end to end: `slsweep run -q` on a real 3-trial sweep (local Ray, TPE, ASHA, a
hard-CE baseline arm, MLflow in SQLite), what the MLflow store and the Optuna study then hold, the
MLflow UI served by `slsweep ui` as headless Chromium renders it, and `slsweep ui` stopping its
whole server on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from cdp import CHROMIUM, Browser
from helpers import imported_after
from sweeps.store import paths

pytestmark = pytest.mark.slow

# One trial at a time: the hard-CE baseline arm first (never stopped, not in the Optuna study), then
# TPE's two startup trials, which sampler seed 10 draws as lr 1e-3 then 1e-7. The lr 1e-3 trial
# reaches step 30; the lr 1e-7 one barely trains, so ASHA stops it at its first rung (step 15):
# its train_loss there is worse than the first searched trial's.
SPEC = """
name: everyday-e2e
task: {name: counting, eval_size: 8, train_size: 64}
model: {path: tiny}
train: {steps: 30, batch_size: 8, lr: 1.0e-3, warmup_steps: 1, eval_every: 15, max_new_tokens: 4}
loss: {family: soft_label, eta: 0.1, lam: 2.0, psi: triangular}
search_space:
  name: lr_pair
  params:
    lr: {type: categorical, choices: [1.0e-3, 1.0e-7], target: train.lr}
search: {algorithm: tpe, num_samples: 2, max_concurrent: 1, seed: 10}
baselines: [{loss.family: hard}]
scheduler: {type: asha, grace_period: 15, reduction_factor: 2, max_t: 30}
metric: {name: train_loss, mode: min}
resources: {cpu: 1, gpu: 0}
"""
NOISE = ("WARNING", " INFO ", "Checkpoint successfully created", "snapshotting",
         "Configuration for experiment", "View detailed results", "Traceback", "A new study created",
         "Creating initial MLflow database tables", "Started a local Ray instance")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("everyday")
    (tmp / "spec.yaml").write_text(SPEC)
    runs = tmp / "runs"
    proc = subprocess.run([sys.executable, "-m", "sweeps.cli", "run", "spec.yaml", "-q", "--runs-dir", str(runs),
                           "task.train_size=96"], cwd=tmp, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(paths.default_tracking_uri(runs))
    exp = client.get_experiment_by_name("everyday-e2e")
    parent = client.search_runs([exp.experiment_id], "tags.`slsweep.kind` = 'sweep'")[0]
    children = client.search_runs([exp.experiment_id], "tags.`slsweep.kind` = 'trial'",
                                  order_by=["attributes.start_time ASC"])
    return proc, runs, client, exp, parent, children


def test_quiet_run_prints_progress_and_the_summary_only(sweep) -> None:
    proc = sweep[0]
    text = proc.stdout + proc.stderr.replace("\r", "\n")
    for noise in NOISE:
        assert noise not in text, (noise, text[-4000:])
    assert "sweep: 3/3 trials done" in proc.stderr  # the overall bar
    assert "t02 soft_label lr=0.001 s0: step 15/30" in proc.stderr  # per-trial progress
    line = next(ln for ln in proc.stderr.splitlines() if "t02 soft_label lr=0.001 s0: step 15/30" in ln)
    assert line.count("train_loss=") == 1, line  # the sweep's metric is train_loss: shown once
    assert "t03 soft_label lr=1e-07 s0: stopped early at step 15" in proc.stderr
    assert proc.stdout.lstrip().startswith("Sweep everyday-e2e-") and "MLflow:" in proc.stdout


def test_summary_says_where_a_trial_stopped_and_what_the_arm_answers(sweep) -> None:
    out = sweep[0].stdout
    ranked = [r for r in out.split("trials in", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
              if not r.startswith("(")]  # the ranked trials, without the note under them
    assert len(ranked) == 3, out
    assert sorted(" ".join(r.split()[1:3]) for r in ranked) == [
        "hard ok", "search ok", "search stopped"], out  # trial, arm, status, ...
    # The arm samples nothing, but ran with the spec's lr: shown, not NaN.
    assert "NaN" not in out.split("trials in", 1)[1].split("\n\n", 1)[0], out
    assert next(r for r in ranked if r.split()[1] == "hard").split()[-1] == "0.001", out
    assert " stopped at step 15 " in out
    # train_loss is each loss's own objective: the arm is named, the comparison refused.
    assert "soft_label vs hard CE: no comparison on train_loss" in out


def test_run_names_loss_curve_and_no_step_metric(sweep) -> None:
    _, _, client, exp, parent, children = sweep
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert [c.info.run_name for c in children] == [
        "t01 hard s0", "t02 soft_label lr=0.001 s0", "t03 soft_label lr=1e-07 s0 (stopped @15)"]
    assert parent.data.params["task.train_size"] == "96"  # the override, recorded
    first = children[1]
    assert "step" not in first.data.metrics and first.data.tags["last_step"] == "30"
    curve = [(m.step, m.value) for m in client.get_metric_history(first.info.run_id, "train_loss_10")]
    assert [s for s, _ in curve] == [10, 15, 20, 30]  # every 10 steps and at both evaluations
    assert [m.step for m in client.get_metric_history(first.info.run_id, "exact_match")] == [15, 30]
    assert curve[-1][1] < curve[0][1]
    # train_loss is one value per evaluation: the mean since the previous one, as Tune reported it.
    losses = [(m.step, m.value) for m in client.get_metric_history(first.info.run_id, "train_loss")]
    assert [s for s, _ in losses] == [15, 30]
    assert losses[1][1] == pytest.approx(first.data.metrics["train_loss"])
    from sweeps.driver.tracking import LOSS_CURVE_METRIC
    from sweeps.trial.run import LOSS_LOG_EVERY
    assert LOSS_CURVE_METRIC == f"train_loss_{LOSS_LOG_EVERY}"
    # The arm's searched dimension: the value it ran with, so tables and plots show it.
    assert children[0].data.params["space.lr"] == "0.001" and "space.lr" in first.data.params


def test_early_stopped_trial_is_stopped_everywhere(sweep) -> None:
    """MLflow: KILLED (never the green FINISHED of a full-budget run) with its step in the name;
    Optuna: PRUNED, intermediate values at training steps; status and reports: not full budget."""
    from sweeps.report.runs import load_trials
    from sweeps.driver.service import sweep_status

    _, runs, client, _, parent, children = sweep
    arm, done, stopped = children
    assert arm.data.tags["slsweep.arm"] == "baseline" and arm.data.params["loss.family"] == "hard"
    assert arm.info.status == "FINISHED" and arm.data.tags["last_step"] == "30"  # never stopped early
    assert done.data.tags["slsweep.arm"] == "search"
    assert done.info.status == "FINISHED" and done.data.tags["status"] == "finished"
    assert "slsweep.stop_reason" not in done.data.tags
    assert stopped.info.status == "KILLED" and stopped.data.tags["status"] == "stopped_early"
    assert stopped.info.run_name.endswith(" (stopped @15)")
    assert stopped.data.tags["slsweep.stop_reason"] == "early_stopping"
    assert stopped.data.tags["last_step"] == "15"
    assert stopped.data.tags["mlflow.note.content"].startswith("Stopped early by the scheduler at step 15 of 30")
    m = parent.data.metrics
    assert (m["trials_total"], m["trials_finished"], m["trials_stopped"], m["trials_failed"]) == (3, 2, 1, 0)

    sweep_id = parent.data.tags["slsweep.sweep_id"]
    study = optuna.load_study(study_name=sweep_id, storage=paths.optuna_storage_uri(runs))
    by_run = {t.user_attrs["mlflow_run_id"]: t for t in study.trials}
    assert set(by_run) == {done.info.run_id, stopped.info.run_id}  # the arm is not in the study
    full, pruned = by_run[done.info.run_id], by_run[stopped.info.run_id]
    assert full.state == optuna.trial.TrialState.COMPLETE and sorted(full.intermediate_values) == [15, 30]
    assert pruned.state == optuna.trial.TrialState.PRUNED and sorted(pruned.intermediate_values) == [15]
    assert full.intermediate_values[30] == pytest.approx(full.value)  # the curve ends at the value
    # One train_loss: what Optuna and ASHA got is what MLflow (and so every table) shows.
    assert full.value == pytest.approx(done.data.metrics["train_loss"])
    assert pruned.intermediate_values[15] == pytest.approx(stopped.data.metrics["train_loss"])
    assert f"(train_loss {stopped.data.metrics['train_loss']:.4g} there" in stopped.data.tags["mlflow.note.content"]
    # Optuna's importance evaluators read COMPLETE trials only: the stopped one is not among them.
    assert study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)) == [full]

    row = next(line for line in sweep_status(runs_dir=runs).splitlines() if sweep_id in line)
    assert row.split()[2:7] == ["FINISHED", "3", "2", "1", "0"], row
    assert "(best of 2 full-budget trials)" in row
    trials = load_trials(paths.default_tracking_uri(runs), sweep_id=sweep_id, include_unfinished=True).trials
    cut = trials[trials["run_id"] == stopped.info.run_id].iloc[0]
    assert not cut["full_budget"] and cut["at_step"] == "15 (stopped early)"
    assert cut["metrics.train_loss"] == pytest.approx(pruned.intermediate_values[15])
    assert trials[trials["run_id"] == arm.info.run_id].iloc[0]["params.space.lr"] == 0.001
    assert trials[trials["run_id"] != stopped.info.run_id]["full_budget"].all()


def test_resume_takes_tracking_uri_and_address(sweep) -> None:
    runs = sweep[1]
    # --tracking-uri replaces the store the finished check reads: it is checked first. Given a store,
    # --address is checked too (the run folder's own store says "finished" before anything is planned).
    for flags, first in ((["--tracking-uri", "http://127.0.0.1:9"], "--tracking-uri: http://127.0.0.1:9"),
                         (["--tracking-uri", paths.default_tracking_uri(runs), "--address", "127.0.0.1:9"],
                          "--address: 127.0.0.1:9")):
        proc = subprocess.run([sys.executable, "-m", "sweeps.cli", "resume", "--runs-dir", str(runs), *flags],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and proc.stderr.startswith(f"error: {first}"), proc.stderr[-2000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (Debian package chromium)")
def test_ui_shows_the_sweep_with_its_named_trials_and_stops_on_sigterm(sweep, tmp_path: Path) -> None:
    _, runs, _, exp, parent, children = sweep
    port = _free_port()
    # Started from a folder holding a module named like one MLflow's server imports (requests' optional
    # `socks`): the server must not import code from the folder it was started in.
    here = tmp_path / "cwd"
    here.mkdir()
    (here / "socks.py").write_text(f"open({str(here / 'imported')!r}, 'w').close()\n")
    ui = subprocess.Popen([str(Path(sys.executable).parent / "slsweep"), "ui", "--runs-dir", str(runs), "--port",
                           str(port)], cwd=here,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    server_pgid = None
    try:
        lines = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not any(ln.startswith("latest sweep") for ln in lines):
            line = ui.stdout.readline()
            assert line, f"slsweep ui ended: {lines}"
            lines.append(line.strip())
            if line.startswith("MLflow UI on"):  # printed only once the server answers
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
                    assert resp.status == 200
        assert not (here / "imported").exists()  # the server imports nothing from the folder it was started in
        runs_url = lines[-1].split(": ", 1)[1]
        assert runs_url == (f"http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}/runs"
                            "?workflowType=machine_learning")
        # The server's processes: the group slsweep started (uvicorn and its worker).
        server_pgid = int(subprocess.run(["pgrep", "-P", str(ui.pid)], capture_output=True, text=True).stdout.split()[0])

        browser = Browser(tmp_path / "profile")
        try:
            browser.goto(runs_url)
            browser.wait_for(f"document.body.innerText.includes({parent.info.run_name!r})")
            assert browser.js("document.title").startswith("Runs")  # the runs table, not GenAI pages
            # Expand the sweep's row: its trials are nested under it.
            browser.js("[...document.querySelectorAll('button[data-component-id$=\"runnamecellrenderer.tsx_46\"]')]"
                       ".forEach(b => b.click())")
            names = browser.wait_for(
                "(() => { const n = [...document.querySelectorAll('a[href*=\"/runs/\"]')].map(a => a.innerText.trim());"
                f" return n.length >= {1 + len(children)} && n; }})()")
            browser.screenshot(tmp_path / "runs.png")
        finally:
            browser.close()
        assert names[0] == parent.info.run_name
        assert sorted(names[1:1 + len(children)]) == sorted(c.info.run_name for c in children)
        assert (tmp_path / "runs.png").stat().st_size > 10_000

        ui.send_signal(signal.SIGTERM)  # to slsweep only, as a service manager would
        assert ui.wait(timeout=60) == 0
        deadline = time.monotonic() + 30
        while _group_alive(server_pgid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _group_alive(server_pgid), "the MLflow server's processes outlived slsweep ui"
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3)
    finally:
        for pgid in (ui.pid, server_pgid):
            if pgid is not None and _group_alive(pgid):
                os.killpg(pgid, signal.SIGKILL)
        if ui.poll() is None:
            ui.wait(timeout=30)


def test_resume_of_a_finished_sweep_is_refused_before_anything_is_planned(sweep) -> None:
    """Read from the run folder's own store with sqlite3: no spec, data, model, torch or MLflow."""
    _, runs, _, _, parent, _ = sweep
    rc, heavy, out, err = imported_after(["resume", "--runs-dir", str(runs)], ("torch", "ray", "mlflow", "transformers"))
    assert rc == 2 and heavy == [], out + err
    err = err.strip()
    sweep_id = parent.data.tags["slsweep.sweep_id"]
    assert err == f"error: {runs}: sweep_id: sweep {sweep_id} already finished; nothing to resume", err
