"""Fault drills: a killed trial worker (R1), a killed driver (R2), a diverging trial (R3), bad input
(R4) and the security rules (R5). The figures they measure are recorded in docs/reliability.md.

Every process a drill starts runs in its own session and is ended by its pid or process group;
leftovers are found by the drill's own random temp dir on their command line, never by name.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.experiment import Trial
from typer.testing import CliRunner

from helpers import store_has_runs
from cluster_utils import (TINY, OwnedProcess, pids_mentioning, short_tmp, spawn, stop_all, sweep_in_private_ray,
                           wait_until)
from sweeps.store import paths
from sweeps.trial.checkpoint import STATE_FILE, load_checkpoint
from sweeps.cli import app
from sweeps.errors import SpecError
from sweeps.config.spec import load_spec
from sweeps.driver.tracking import OPTUNA_TRIAL_KEY, SweepTracker
from sweeps.trial.trainable import Resolver, sampled_params
from sweeps.driver.preflight import plan_sweep
from sweeps.driver.tuner import close_orphan_study_trials, sweep_info

ROOT = Path(__file__).resolve().parents[1]
BAD = Path(__file__).parent / "bad_inputs"
EXPECTED = yaml.safe_load((BAD / "EXPECTED.yaml").read_text())
BIN = Path(sys.executable).parent

# R1 + R3 in one sweep: a healthy trial (lr 1e-3) whose worker gets SIGKILLed after its first
# checkpoint, and a trial whose loss goes NaN (lr 1e6). One retry each.
DRILL_SPEC = "name: drill" + TINY + """
train: {steps: 4, batch_size: 8, lr: 1.0e-3, warmup_steps: 1, eval_every: 2, max_new_tokens: 4}
search_space:
  name: lr-drill
  params:
    lr: {type: float, low: 1.0e-4, high: 1.0e7, log: true, target: train.lr, values: [1.0e-3, 1.0e6]}
search: {algorithm: grid, seeds: 1, max_concurrent: 2}
failure: {max_failures: 1}
"""
# R2: three TPE trials one at a time, each long enough (8 evaluations) to be caught mid-way.
R2_EVALS = list(range(6, 49, 6))
RESUME_SPEC = "name: resume3" + TINY + """
train: {steps: 48, batch_size: 8, lr: 1.0e-3, warmup_steps: 1, eval_every: 6, max_new_tokens: 4}
search_space: {name: eta-only, params: {eta: {type: float, low: 0.0, high: 0.3}}}
search: {algorithm: tpe, num_samples: 3, seeds: 1, max_concurrent: 1, seed: 11}
"""


def _children(client: MlflowClient, experiment: str) -> list[Any]:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "tags.`slsweep.kind` = 'trial'")


def _steps(client: MlflowClient, run_id: str, metric: str = "exact_match") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, metric))


# --------------------------------------------------------------------------- R1 + R3


class KillAfterFirstCheckpoint(tune.Callback):
    """SIGKILLs the worker process of the first healthy trial right after its first checkpoint."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.killed: dict[str, Any] = {}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.pids[trial.trial_id] = int(result["pid"])
        if self.killed.get("trial_id") == trial.trial_id and "recovered_s" not in self.killed:
            # The first result after the kill: the retried trial is training again.
            self.killed["recovered_s"] = time.perf_counter() - self.killed["at"]

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        healthy = trial.config["point"]["lr"] < 1.0
        if self.killed or not healthy:
            return
        pid = self.pids[trial.trial_id]
        # The trial is blocked in tune.report until the driver asks for its next result, so the
        # kill lands between two training steps with the checkpoint already in storage.
        os.kill(pid, signal.SIGKILL)
        self.killed = {"trial_id": trial.trial_id, "pid": pid, "at": time.perf_counter(),
                       "step": int(trial.last_result["step"])}


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory):
    killer = KillAfterFirstCheckpoint()
    # A local Ray of its own (a temp dir without another cluster's address file in it).
    outcome, _, runs = sweep_in_private_ray(tmp_path_factory.mktemp("drill"), "drill", DRILL_SPEC, "slr1-", [killer])
    return outcome, killer, runs


@pytest.mark.slow
def test_r1_killed_worker_resumes_from_checkpoint(drill) -> None:
    outcome, killer, runs = drill
    assert killer.killed, "the drill never killed a worker"
    trial_id, pid = killer.killed["trial_id"], killer.killed["pid"]
    result = next(r for r in outcome.results if r.metrics.get("trial_id") == trial_id)
    assert result.error is None and result.metrics["step"] == 4
    assert result.metrics["restarts"] == 1       # run_trial loaded the checkpoint once
    assert result.metrics["pid"] != pid          # ... in a new worker process
    client = MlflowClient(paths.default_tracking_uri(runs))
    children = _children(client, "drill")
    assert len(children) == 2                    # one run per trial, no duplicate for the restart
    assert not [r for r in children if r.info.status in ("RUNNING", "SCHEDULED")]
    run = next(r for r in children if r.data.tags["trial_id"] == trial_id)
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "finished"
    assert run.data.tags["restarts"] == "1" and run.data.metrics["restarts"] == 1.0
    # Training continued from the step-2 checkpoint: step 2 was evaluated once, not twice.
    assert _steps(client, run.info.run_id) == [2, 4]
    assert [m.value for m in sorted(client.get_metric_history(run.info.run_id, "restarts"),
                                    key=lambda m: m.step)] == [0.0, 1.0]
    print(f"\nR1: killed pid {pid} at step {killer.killed['step']}; the retried trial's next result "
          f"came {killer.killed['recovered_s']:.1f} s later; sweep {outcome.seconds:.0f} s")


@pytest.mark.slow
def test_r3_diverging_trial_fails_with_reason_and_sweep_goes_on(drill, tmp_path: Path) -> None:
    outcome, _, runs = drill
    client = MlflowClient(paths.default_tracking_uri(runs))
    children = _children(client, "drill")
    failed = [r for r in children if r.info.status == "FAILED"]
    assert len(failed) == 1 and float(failed[0].data.params["train.lr"]) == 1e6
    tags = failed[0].data.tags
    assert tags["status"] == "failed"
    assert "NonFiniteLossError" in tags["slsweep.error"] and "loss became nan" in tags["slsweep.error"]
    # The other trial finished and the sweep closed normally with the failure counted.
    assert [r.info.status for r in children if r is not failed[0]] == ["FINISHED"]
    parent = client.search_runs([children[0].info.experiment_id], "tags.`slsweep.kind` = 'sweep'")[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_failed"] == 1 and parent.data.metrics["trials_finished"] == 1
    # `slsweep table` reports it: left out by default (with a note), included with --all-runs.
    res = CliRunner().invoke(app, ["table", "--runs-dir", str(runs), "--by", "train.lr"])
    assert res.exit_code == 0 and "left out 1 failed trial run(s)" in res.output.lower(), res.output
    res = CliRunner().invoke(app, ["table", "--runs-dir", str(runs), "--by", "train.lr", "--all-runs",
                                   "-f", "csv"])
    assert res.exit_code == 0, res.output
    rows = [line.split(",") for line in res.output.strip().splitlines()]
    assert rows[0][0] == "lr" and sorted(float(r[0]) for r in rows[1:]) == [1e-3, 1e6]


# --------------------------------------------------------------------------- R2


def _slsweep(name: str, args: list[str], ray_tmp: Path, log: Path) -> OwnedProcess:
    """`slsweep ARGS` in a guarded session of its own, with its local Ray under `ray_tmp`."""
    return spawn(name, [str(BIN / "slsweep"), *args], log,
                 env={"SLSWEEP_RAY_TMP": str(ray_tmp), "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_r2_killed_driver_then_resume(tmp_path: Path) -> None:
    spec = tmp_path / "resume3.yaml"
    spec.write_text(RESUME_SPEC)
    runs = tmp_path / "runs"
    db = runs / "mlflow.db"
    ray_tmp, ray_tmp2 = short_tmp("slr2-"), short_tmp("slr2b-")
    driver = _slsweep("driver", ["run", str(spec), "--runs-dir", str(runs), "-q"], ray_tmp,
                      tmp_path / "driver.log")
    resume = None
    try:
        driver_pid = driver.command_pid()
        client = None

        def second_trial_checkpointed():
            nonlocal client
            if driver.proc.poll() is not None:
                raise AssertionError(f"driver exited early:\n{driver.tail()}")
            if client is None and not store_has_runs(db):
                return None  # the driver is still creating the store: opening it now would race
            client = client or MlflowClient(paths.default_tracking_uri(runs))
            exp = client.get_experiment_by_name("resume3")
            children = client.search_runs([exp.experiment_id], "tags.`slsweep.kind` = 'trial'") if exp else []
            done = [r for r in children if r.info.status == "FINISHED"]
            # Its second evaluation logged means Tune had already saved its experiment state with
            # the first checkpoint (a checkpoint forces that save before the trial is asked for more).
            live = [r for r in children if r.info.status == "RUNNING"
                    and int(r.data.tags.get("last_step") or r.data.metrics.get("step") or 0) >= 12]
            return (done, live) if done and live else None

        done, live = wait_until(second_trial_checkpointed, 480, "one finished trial and one checkpointed",
                                every=0.2)
        before = {r.info.run_id: (r.info.end_time, _steps(client, r.info.run_id)) for r in done}
        # Mid-training, not at the instant a checkpoint is registered: with num_to_keep=1 Tune
        # deletes the previous checkpoint before the snapshot of that same controller step, so a
        # kill inside that window leaves a state naming a deleted checkpoint (docs/reliability.md).
        time.sleep(0.5)
        os.kill(driver_pid, signal.SIGKILL)
        killed_at = time.perf_counter()
        driver.proc.wait(timeout=30)  # the guard exits with its command
        # The driver's local Ray (GCS, raylet, trial workers) shares its fate.
        wait_until(lambda: not pids_mentioning(str(ray_tmp)), 60, "the killed driver's Ray to exit",
                   every=0.5)
        ray_gone_s = time.perf_counter() - killed_at

        exp = client.get_experiment_by_name("resume3")
        stuck = client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
        assert stuck  # the kill did leave RUNNING runs behind: the drill is real

        resume = _slsweep("resume", ["resume", "--runs-dir", str(runs), "-q"], ray_tmp2,
                          tmp_path / "resume.log")
        rc = resume.proc.wait(timeout=540)
        resumed_in = time.perf_counter() - killed_at
        assert rc == 0, resume.tail(60)
    finally:
        stop_all([driver, resume], [ray_tmp, ray_tmp2])

    children = _children(client, "resume3")
    statuses = sorted(r.info.status for r in children)
    assert "RUNNING" not in statuses and "SCHEDULED" not in statuses  # no orphan left open
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert len(finished) == 3
    assert all(r.info.status == "KILLED" and r.data.tags["slsweep.stop_reason"] == "driver_lost"
               for r in children if r.info.status != "FINISHED")
    # Finished trials were not rerun: same run, same end time, same evaluations.
    for run_id, (end_time, steps) in before.items():
        again = client.get_run(run_id)
        assert again.info.end_time == end_time and _steps(client, run_id) == steps == R2_EVALS
    # The interrupted trial continued from a checkpoint in a new process.
    interrupted = client.get_run(live[0].info.run_id)
    assert interrupted.info.status == "FINISHED" and interrupted.data.metrics["restarts"] == 1.0
    steps = _steps(client, interrupted.info.run_id)
    redone = len(steps) - len(R2_EVALS)  # evaluations logged after the last saved checkpoint
    assert set(steps) == set(R2_EVALS) and 0 <= redone <= 2
    # The Optuna study agrees with MLflow: every finished trial complete, none left running.
    plan_id = client.get_run(children[0].data.tags["mlflow.parentRunId"]).data.tags["slsweep.sweep_id"]
    study = optuna.load_study(study_name=plan_id, storage=paths.optuna_storage_uri(runs))
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states
    complete = sorted(t.params["eta"] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    assert complete == pytest.approx(sorted(float(r.data.params["space.eta"]) for r in finished))
    parent = client.get_run(children[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_finished"] == 3
    print(f"\nR2: the killed driver's Ray was gone {ray_gone_s:.1f} s after the kill; resume finished "
          f"{resumed_in:.0f} s after it; redone evaluations: {redone}; orphan runs closed: "
          f"{len(children) - len(finished)}")


@pytest.mark.slow
def test_r2_orphans_of_a_dead_driver_are_closed(tmp_path: Path) -> None:
    """What a driver killed before saving its state leaves behind: an MLflow run and an Optuna
    trial nothing owns. The tracker closes the run at the end of the sweep; the runner closes the
    Optuna trial once every Tune trial has ended, and not before (a Ctrl-C'd sweep resumes them)."""
    spec = tmp_path / "resume3.yaml"
    spec.write_text(RESUME_SPEC)
    plan = plan_sweep(spec, runs_dir=tmp_path / "runs", check=False)
    client = MlflowClient(plan.tracking_uri)
    info = sweep_info(plan)
    exp_id = client.create_experiment(info.experiment)
    orphan = client.create_run(exp_id, tags={"slsweep.kind": "trial", "slsweep.sweep_id": plan.sweep_id,
                                             "trial_id": "lost_00003", "status": "running"}).info.run_id
    tracker = SweepTracker(plan.tracking_uri, info, lambda c: None, lambda c: {})
    tracker.setup()
    tracker.finish([])
    run = client.get_run(orphan)
    assert run.info.status == "KILLED" and run.data.tags["slsweep.stop_reason"] == "driver_lost"
    parent = client.get_run(tracker.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_total"] == 1 and parent.data.metrics["trials_stopped"] == 1

    study = optuna.create_study(study_name=plan.sweep_id, storage=paths.optuna_storage_uri(plan.runs_dir),
                                direction="maximize")
    study.tell(study.ask(), 0.5)
    study.ask()  # asked, then the driver died
    assert close_orphan_study_trials(plan, all_trials_ended=False) == 0  # resumable: leave it
    assert close_orphan_study_trials(plan, all_trials_ended=True) == 1
    states = [t.state for t in optuna.load_study(study_name=plan.sweep_id,
                                                 storage=paths.optuna_storage_uri(plan.runs_dir)).trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]


def test_r2_a_trial_id_handed_to_another_configuration_gets_its_own_run(tmp_path: Path) -> None:
    """Tune numbers trials by a counter saved with its experiment state: a driver killed after it
    created a trial and its MLflow run, but before it saved that state, hands the same trial id to a
    different configuration of the resumed sweep. That configuration gets a run of its own; the lost
    one keeps its own params and is closed as lost (it was written into, params and all)."""
    spec = tmp_path / "resume3.yaml"
    spec.write_text(RESUME_SPEC)
    plan = plan_sweep(spec, runs_dir=tmp_path / "runs", check=False)
    resolver = Resolver(plan.resolved.base_trial_config(), plan.resolved.space, plan.resolved.arm_overrides())
    killed = SweepTracker(plan.tracking_uri, sweep_info(plan), resolver, sampled_params, resolver.space_values)
    killed.setup()
    saved = pickle.dumps(killed)  # Tune saves its callbacks with the experiment state
    tune.register_trainable("slsweep_r2_probe", lambda config: None)

    def trial(eta: float, number: int | None) -> Trial:
        config = {"eta": eta} if number is None else {"eta": eta, OPTUNA_TRIAL_KEY: number}
        return Trial("slsweep_r2_probe", config=config, trial_id="r2probe_00003", experiment_tag=f"3_eta={eta}")

    lost = killed._child_run(trial(0.17, 2))  # then the driver died, before saving the state
    resumed = pickle.loads(saved)
    new = resumed._child_run(trial(0.2957, 3))  # Optuna's next proposal, under the same Tune id
    client = MlflowClient(plan.tracking_uri)
    assert new != lost
    assert client.get_run(lost).data.params["space.eta"] == "0.17"
    assert client.get_run(new).data.params["space.eta"] == "0.2957"
    # A later resume finds each trial's own run again: by Optuna trial, or (grid, random) by values.
    assert pickle.loads(saved)._child_run(trial(0.2957, 3)) == new
    assert pickle.loads(saved)._child_run(trial(0.17, 2)) == lost
    grid = pickle.loads(saved)._child_run(trial(0.05, None))
    assert pickle.loads(saved)._child_run(trial(0.05, None)) == grid
    assert pickle.loads(saved)._child_run(trial(0.1, None)) not in (grid, lost, new)
    resumed.finish([])
    run = client.get_run(lost)
    assert run.info.status == "KILLED" and run.data.tags["slsweep.stop_reason"] == "driver_lost"


# --------------------------------------------------------------------------- R4

# Each kind of malformed input the issue names -> the fixtures of that kind in tests/bad_inputs.
R4_KINDS = {
    "YAML syntax": ["spec_yaml_syntax.yaml", "spec_tab_indent.yaml", "space_yaml_syntax.yaml"],
    "wrong types": ["spec_steps_wrong_type.yaml", "spec_eta_wrong_type.yaml", "space_bound_wrong_type.yaml"],
    "eta out of range": ["spec_eta_out_of_range.yaml", "space_eta_out_of_range.yaml"],
    "lambda out of range": ["spec_lam_negative.yaml", "space_lam_negative.yaml"],
    "unknown psi": ["spec_unknown_psi.yaml", "space_unknown_psi_choice.yaml"],
    "unknown loss family": ["spec_unknown_family.yaml", "space_unknown_family_choice.yaml"],
    "missing search-space file": ["spec_missing_space_file.yaml"],
    "tokenizer without digits": ["run_tokenizer_no_digits.yaml"],
    "missing image": ["run_data_missing_image.yaml", "run_eval_data_missing_image.yaml"],
    "corrupt image": ["run_data_corrupt_image.yaml", "run_data_truncated_image.yaml"],
    "empty dataset": ["run_data_empty_file.yaml", "run_data_no_records.yaml"],
    "unknown task": ["spec_unknown_task.yaml"],
    "negative resources": ["spec_negative_cpu.yaml", "spec_negative_gpu.yaml"],
    "unreachable tracking URI": ["run_tracking_unreachable.yaml"],
    "unreachable Ray address": ["run_ray_address_unreachable.yaml"],
}


def test_r4_fixtures_cover_every_kind() -> None:
    runnable = [n for n in EXPECTED if n.startswith(("spec_", "run_"))]
    assert len(runnable) >= 30 and len(EXPECTED) >= 30
    for kind, names in R4_KINDS.items():
        for name in names:
            assert name in EXPECTED and (BAD / name).is_file(), f"{kind}: {name}"


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if n.startswith("run_")))
def test_r4_runnable_specs_load_but_do_not_plan(name: str, tmp_path: Path) -> None:
    """run_* specs are valid files: the driver's checks, not the spec parser, reject them."""
    load_spec(BAD / name)
    with pytest.raises(SpecError) as info:
        plan_sweep(BAD / name, runs_dir=tmp_path / "runs")
    assert Path(info.value.file).name == name and info.value.field == EXPECTED[name]["field"]
    assert "\n" not in str(info.value) and not (tmp_path / "runs").exists()


@pytest.mark.skipif(importlib.util.find_spec("grpc") is not None, reason="ray[client] is installed")
def test_r4_ray_client_address_without_its_package(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["run", "--address", "ray://127.0.0.1:9", "--tracking-uri", "http://127.0.0.1:9",
                                   "--runs-dir", str(tmp_path / "r"), "-q"])
    assert res.exit_code == 2 and "--address: ray://127.0.0.1:9:" in res.output
    assert "pip install 'ray[client]'" in res.output and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_r4_real_process_tokenizer_error(tmp_path: Path) -> None:
    """As a user runs it: exit 2, one line on stderr naming file and field, no traceback."""
    for name in ("run_tokenizer_no_digits.yaml",):
        proc = subprocess.run([str(BIN / "slsweep"), "run", str(BAD / name), "--runs-dir",
                               str(tmp_path / "runs"), "-q"], capture_output=True, text=True, timeout=300)
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert name in lines[0] and EXPECTED[name]["field"] in lines[0]
        assert "Traceback" not in proc.stderr + proc.stdout
        assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- R5

SOURCES = sorted(p for d in ("sweeps", "sl_core", "benchmarks", "search_spaces")
                 for p in (ROOT / d).rglob("*.py"))


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _dotted(func: ast.expr) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_r5_source_rules() -> None:
    """No shell, no unsafe YAML, no pickle-executing checkpoint loads, anywhere in the package."""
    assert len(SOURCES) > 20
    problems = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), filename=str(path))
        for call in _calls(tree):
            name, where = _dotted(call.func), f"{path.relative_to(ROOT)}:{call.lineno}"
            shell = _kw(call, "shell")
            if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
                problems.append(f"{where}: shell=")
            if name in ("os.system", "os.popen", "os.execl", "os.execlp", "commands.getoutput"):
                problems.append(f"{where}: {name}")
            if name.startswith("subprocess.") and call.args and not isinstance(call.args[0], (ast.List, ast.Name)):
                problems.append(f"{where}: {name} with a command string")
            if name in ("yaml.load", "yaml.load_all", "yaml.full_load", "yaml.unsafe_load"):
                loader = _kw(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
                cls = getattr(_module_of(path), _dotted(loader), None) if loader is not None else None
                if not (isinstance(cls, type) and issubclass(cls, yaml.SafeLoader)):
                    problems.append(f"{where}: {name} without a SafeLoader")
            if name == "torch.load":
                weights = _kw(call, "weights_only")
                if not (isinstance(weights, ast.Constant) and weights.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            if name in ("pickle.load", "pickle.loads", "eval", "exec"):
                problems.append(f"{where}: {name}")
        if "0.0.0.0" in path.read_text():
            problems.append(f"{path.relative_to(ROOT)}: binds 0.0.0.0")
    assert not problems, "\n".join(problems)


def _module_of(path: Path):
    import importlib

    rel = path.relative_to(ROOT).with_suffix("")
    return importlib.import_module(".".join(rel.parts))


def test_r5_yaml_cannot_construct_objects(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    spec = tmp_path / "evil.yaml"
    spec.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n"
                    "task: {name: counting}\nloss: {family: soft_label}\nsearch_space: paper.yaml\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert "evil.yaml" in str(info.value) and not marker.exists()


class _Boom:
    """Unpickling this would create a file: what a malicious checkpoint does."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (Path(self.marker),))


def test_r5_checkpoints_load_weights_only(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    torch.save({"model": {}, "optimizer": optimizer.state_dict(), "step": 1, "history": [],
                "restarts": 0, "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                "evil": _Boom(str(marker))}, tmp_path / STATE_FILE)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(tmp_path, model, optimizer, scheduler)
    assert not marker.exists()


def test_r5_servers_bind_loopback_by_default(tmp_path: Path) -> None:
    import typer.main

    from sweeps.driver.ray_env import LOOPBACK, needs_dashboard

    command = typer.main.get_command(app)
    ui = command.get_command(None, "ui")  # type: ignore[union-attr]
    host = next(p for p in ui.params if p.name == "host")
    assert host.default == "127.0.0.1"
    # `slsweep run` starts no web server of its own: a local Ray runs without its dashboard, except
    # for multi-worker trials (Ray Train needs its state API), and then on loopback only.
    spec = tmp_path / "one.yaml"
    spec.write_text(DRILL_SPEC)
    assert not needs_dashboard(plan_sweep(spec, runs_dir=tmp_path / "runs", check=False))
    spec.write_text(DRILL_SPEC.replace("resources: {cpu: 1, gpu: 0}", "resources: {workers: 2, cpu: 1}"))
    assert needs_dashboard(plan_sweep(spec, runs_dir=tmp_path / "runs", check=False))
    assert not needs_dashboard(plan_sweep(spec, runs_dir=tmp_path / "runs", address="auto", check=False))
    source = (ROOT / "sweeps" / "driver" / "ray_env.py").read_text()
    assert re.search(r"""["']dashboard_host["']\s*:\s*LOOPBACK""", source) and LOOPBACK == "127.0.0.1"
