"""Trials bigger than one process: each trial a Ray Train data-parallel job (gloo on CPU).

- Equality: 2 workers x 16 examples train exactly like 1 process x 32 (same seed, data, loss
  curve and final parameters; DDP within float32 rounding, FSDP2 within a stated tolerance).
- Through the service: a sweep of two-worker trials under ASHA (stopped trials' workers are
  gone, by pid; one MLflow run per trial, tagged with workers and strategy), a SIGKILLed worker
  (Train restarts the group from the last checkpoint), a SIGKILLed driver then `slsweep resume`,
  and the refusals (a trial larger than the machine, a batch that does not split).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import ray
import torch
from mlflow.tracking import MlflowClient
from ray import tune

from cluster_utils import (TINY, alive, kill_leftovers, pids_mentioning, short_tmp, spawn, stop_all, sweep_in_private_ray,
                           wait_until)
from helpers import cli, one_line_exit_2, store_has_runs
from sweeps.driver.service import ensure_tiny_model
from sweeps.store import paths
from sweeps.trial.checkpoint import STATE_FILE
from sweeps.trial.run import run_trial
from sweeps.trial.train_job import WorkerPlan, train_job, train_run_name
from trial_helpers import tiny_trial_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
BIN = Path(sys.executable).parent

GLOBAL_BATCH, STEPS = 32, 4


@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray with 2 CPUs (one per worker), stopped by pid afterwards."""
    tmp = short_tmp("sldp-")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=str(tmp),
             configure_logging=False, log_to_driver=False)
    try:
        yield tmp
    finally:
        ray.shutdown()
        kill_leftovers(str(tmp))
        shutil.rmtree(tmp, ignore_errors=True)


def _config(**overrides: Any):
    cfg = tiny_trial_config(steps=STEPS, eval_every=1, eval_size=8, batch_size=GLOBAL_BATCH,
                            overrides={"train.data_workers": 0, "train.keep_final_weights": True, **overrides})
    ensure_tiny_model(cfg)
    return cfg


def _single(cfg, tmp: Path, resume_from: Path | None = None) -> dict[str, Any]:
    """One process, the whole batch: the final training state as `save_checkpoint` wrote it
    (kept in `tmp/single-<steps>`)."""
    final = tmp / f"single-{cfg.train.steps}"

    def keep_last(metrics: dict[str, Any], folder: Path | None) -> None:
        if folder is not None and metrics["step"] == cfg.train.steps:
            shutil.copytree(folder, final)

    torch.set_num_threads(1)
    run_trial(cfg, report=keep_last, device=torch.device("cpu"), resume_from=resume_from)
    return torch.load(final / STATE_FILE, weights_only=True)


def _workers(cfg, tmp: Path, strategy: str, name: str = "equal") -> dict[str, Any]:
    """Two Ray Train workers, half the batch each: rank 0's final checkpoint (a run `name` that
    exists continues from its last checkpoint)."""
    plan = WorkerPlan(workers=2, cpu=1, gpu=0, strategy=strategy, storage=str(tmp / strategy))
    result = train_job({}, cfg.with_overrides, plan, name=f"{name}-{strategy}").fit()
    with result.checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / STATE_FILE, weights_only=True)


def _assert_trained_alike(one: dict[str, Any], two: dict[str, Any], strategy: str) -> None:
    """The single process's and the workers' final states: same step, loss of every step, every
    trainable parameter (gathered whole from the shards under FSDP) and predictions.

    Tolerances: float32 rounding: sums over 2 x 16 and 1 x 32 rows round differently. Attention key
    biases have an exactly zero gradient (softmax ignores a shift shared by all keys), so what they
    get is rounding noise that Adam scales up to steps of up to lr: atol 1e-5 after 4 steps at 1e-3.
    """
    assert two["strategy"] == strategy and one["step"] == two["step"] == STEPS
    curve = [[h["train_loss"] for h in state["history"]] for state in (one, two)]
    torch.testing.assert_close(torch.tensor(curve[1]), torch.tensor(curve[0]), rtol=1e-5, atol=1e-6)
    assert set(one["model"]) == set(two["model"])
    for name, value in one["model"].items():
        torch.testing.assert_close(two["model"][name], value, rtol=1e-4, atol=1e-5, msg=name)
    # the same predictions, so the same metrics (evaluation split over the workers and gathered)
    assert [h["exact_match"] for h in two["history"]] == [h["exact_match"] for h in one["history"]]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_workers_train_like_one_process_with_the_whole_batch(local_ray, tmp_path: Path, strategy: str) -> None:
    cfg = _config()
    _assert_trained_alike(_single(cfg, tmp_path), _workers(cfg, tmp_path, strategy), strategy)


@pytest.mark.slow
def test_an_fsdp_checkpoint_resumes_like_a_single_process(local_ray, tmp_path: Path) -> None:
    """Train 2 steps, then continue the same Train run to 4: the shards were gathered into one
    checkpoint and loaded back into shards; one process doing the same from its own checkpoint
    ends within the same tolerance."""
    first, whole = _config(**{"train.steps": 2}), _config()
    _single(first, tmp_path)
    one = _single(whole, tmp_path, resume_from=tmp_path / "single-2")
    _workers(first, tmp_path, "fsdp", name="resumed")
    two = _workers(whole, tmp_path, "fsdp", name="resumed")
    assert one["restarts"] == two["restarts"] == 1
    _assert_trained_alike(one, two, "fsdp")


# --------------------------------------------------------------------------- through the service

# Three two-worker trials, one at a time (2 CPUs = one trial's workers), ASHA on train_loss: the
# first (highest lr) sets the rung at step 4, the two slower ones are stopped there. The first trial's
# rank-1 worker is SIGKILLed after its first checkpoint: Train restarts the group from it.
ASHA_SPEC = "name: ddp3" + TINY.replace("scheduler: {type: fifo}", "scheduler: {type: asha, grace_period: 4}") \
    .replace("resources: {cpu: 1, gpu: 0}", "resources: {workers: 2, cpus_per_worker: 1, strategy: ddp}") \
    .replace("metric: {name: exact_match, mode: max}", "metric: {name: train_loss, mode: min}") + """
train: {steps: 8, batch_size: 8, lr: 1.0e-3, warmup_steps: 1, eval_every: 2, max_new_tokens: 4, data_workers: 0}
search_space:
  name: lr3
  params:
    lr: {type: float, low: 1.0e-6, high: 1.0e-2, log: true, target: train.lr, values: [3.0e-3, 1.0e-5, 1.0e-6]}
search: {algorithm: grid, seeds: 1, max_concurrent: 3}
failure: {max_failures: 1}
"""


class WatchWorkers(tune.Callback):
    """Records each trial's worker pids; SIGKILLs rank 1 of the first trial after its first
    checkpoint (a report carrying Train's `checkpoint_path`)."""

    def __init__(self) -> None:
        self.pids: dict[str, set[int]] = {}
        self.killed: dict[str, Any] = {}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.pids.setdefault(trial.trial_id, set()).update(result["worker_pids"])
        first = trial.config["point"]["lr"] > 1e-3
        if first and not self.killed and result.get("checkpoint_path"):
            victim = result["worker_pids"][1]
            os.kill(victim, signal.SIGKILL)
            self.killed = {"trial_id": trial.trial_id, "pid": victim, "step": result["step"]}


@pytest.fixture(scope="module")
def asha_sweep(tmp_path_factory: pytest.TempPathFactory):
    watch = WatchWorkers()

    def stopped_workers_gone(outcome: Any) -> tuple[list[Any], Any]:
        # the stopped trials' workers, by pid, while this Ray still runs: nothing of the sweep's
        # own shutdown may do the work
        stopped = [r for r in outcome.results if r.metrics.get("step", 0) < 8]
        return stopped, wait_until(lambda: all(not alive(p) for r in stopped for p in watch.pids[r.metrics["trial_id"]])
                                   or None, 30, "the stopped trials' workers to exit")

    outcome, (stopped, gone), runs = sweep_in_private_ray(tmp_path_factory.mktemp("ddp3"), "ddp3", ASHA_SPEC,
                                                          "sldp3-", [watch], inside=stopped_workers_gone)
    client = MlflowClient(paths.default_tracking_uri(runs))
    exp = client.get_experiment_by_name("ddp3")
    return outcome, watch, stopped, gone, client.search_runs([exp.experiment_id], "tags.`slsweep.kind` = 'trial'"), client


@pytest.mark.slow
def test_asha_stops_two_worker_trials_and_their_workers_exit(asha_sweep) -> None:
    outcome, watch, stopped, gone, runs, _client = asha_sweep
    assert len(stopped) == 2 and gone  # ASHA stopped the two slow trials; their 4 workers are gone
    assert all(len(watch.pids[r.metrics["trial_id"]]) == 2 for r in stopped)
    # one MLflow run per trial (not per worker), each ended once (an early stop is KILLED with its
    # reason, as for one-process trials), tagged with its scale
    assert len(runs) == 3
    assert sorted((r.info.status, r.data.tags.get("slsweep.stop_reason", ""), r.data.tags["last_step"]) for r in runs) \
        == [("FINISHED", "", "8"), ("KILLED", "early_stopping", "4"), ("KILLED", "early_stopping", "4")]
    assert {(r.data.tags["slsweep.workers"], r.data.tags["slsweep.strategy"]) for r in runs} == {("2", "ddp")}


@pytest.mark.slow
def test_a_killed_worker_restarts_the_trial_from_its_checkpoint(asha_sweep) -> None:
    outcome, watch, _stopped, _gone, runs, client = asha_sweep
    assert watch.killed and watch.killed["step"] == 2 and not alive(watch.killed["pid"])
    first = next(r for r in runs if r.data.tags["trial_id"] == watch.killed["trial_id"])
    assert first.info.status == "FINISHED" and first.data.tags["last_step"] == "8"
    assert first.data.metrics["restarts"] == 1  # resumed from the step-2 checkpoint, not from scratch
    for metric in ("train_loss", "exact_match"):  # the replayed step-2 evaluation is not recorded twice
        assert sorted(m.step for m in client.get_metric_history(first.info.run_id, metric)) == [2, 4, 6, 8]
    # Train replaced the whole worker group: two new processes
    assert len(watch.pids[watch.killed["trial_id"]]) == 4


def test_a_trial_larger_than_the_machine_is_refused_before_ray_starts(tmp_path: Path) -> None:
    spec = tmp_path / "big.yaml"
    workers = os.cpu_count() + 1
    spec.write_text(ASHA_SPEC.replace("workers: 2,", f"workers: {workers},").replace("batch_size: 8", f"batch_size: {workers}"))
    err = one_line_exit_2(cli("run", str(spec), "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path),
                          "resources.workers", "no trial could ever start")
    assert "big.yaml" in err and not (tmp_path / "runs").exists()


def test_a_global_batch_that_does_not_split_among_the_workers_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "odd.yaml"
    spec.write_text(ASHA_SPEC.replace("batch_size: 8", "batch_size: 9"))
    one_line_exit_2(cli("run", str(spec), "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path),
                    "odd.yaml", "train.batch_size", "resources.workers (2)")
    assert not (tmp_path / "runs").exists()


# Two two-worker trials one after the other, long enough to be caught mid-way.
RESUME_SPEC = ASHA_SPEC.replace("name: ddp3", "name: ddpkill").replace("type: asha, grace_period: 4", "type: fifo") \
    .replace("steps: 8,", "steps: 12,").replace("values: [3.0e-3, 1.0e-5, 1.0e-6]", "values: [3.0e-3, 1.0e-3]") \
    .replace("failure: {max_failures: 1}", "")


def train_checkpointed(runs: Path, trial_id: str) -> bool:
    """Whether Ray Train has recorded a checkpoint of Tune trial `trial_id`: its checkpoint manager
    writes its snapshot after the report reached Tune (and MLflow), so a kill in between leaves a
    trial that rightly restarts from step 0."""
    for snap in runs.glob(f"ray/*/train/{trial_id}-*/checkpoint_manager_snapshot.json"):
        try:
            if json.loads(snap.read_text()).get("latest_checkpoint_result"):
                return True
        except ValueError:  # being written
            pass
    return False


def test_a_train_run_is_named_by_its_trial_and_configuration() -> None:
    """A restarted trial finds its own Train run; a trial id that a resumed sweep gives to another
    configuration (the driver died before Tune saved the trial it had created) does not continue
    the lost configuration's checkpoints."""
    lost, again = {"eta": 0.17, "__optuna_trial__": 2}, {"__optuna_trial__": 2, "eta": 0.17}
    assert train_run_name("abc_00003", lost) == train_run_name("abc_00003", again)
    assert train_run_name("abc_00003", lost) != train_run_name("abc_00003", {"eta": 0.2957, "__optuna_trial__": 3})
    assert train_run_name("abc_00003", lost).startswith("abc_00003-")


@pytest.mark.slow
def test_killed_driver_then_resume_finishes_every_two_worker_trial_once(tmp_path: Path) -> None:
    spec = tmp_path / "ddpkill.yaml"
    spec.write_text(RESUME_SPEC)
    runs, ray_tmp, ray_tmp2 = tmp_path / "runs", short_tmp("sldk-"), short_tmp("sldkb-")
    env = {"SLSWEEP_RAY_TMP": str(ray_tmp), "OMP_NUM_THREADS": "1"}
    driver = spawn("driver", [str(BIN / "slsweep"), "run", str(spec), "--runs-dir", str(runs), "-q"],
                   tmp_path / "driver.log", env=env)
    resume = None
    client = None
    try:
        driver_pid = driver.command_pid()

        def first_trial_checkpointed():
            nonlocal client
            if driver.proc.poll() is not None:
                raise AssertionError(f"driver exited early:\n{driver.tail()}")
            if client is None and not store_has_runs(runs / "mlflow.db"):
                return None
            client = client or MlflowClient(paths.default_tracking_uri(runs))
            exp = client.get_experiment_by_name("ddpkill")
            live = client.search_runs([exp.experiment_id], "tags.`slsweep.kind` = 'trial'") if exp else []
            live = [r for r in live if r.info.status == "RUNNING" and 4 <= int(r.data.tags.get("last_step") or 0) < 12
                    and train_checkpointed(runs, r.data.tags["trial_id"])]
            # the workers' pids from Tune's own record of the reports (written a little later)
            workers = {p for f in runs.glob("ray/*/tune_trainable_*/result.json")
                       for line in f.read_text().splitlines() if line.strip() for p in json.loads(line)["worker_pids"]}
            return (live, workers) if live and workers else None

        live, workers = wait_until(first_trial_checkpointed, 400, "a two-worker trial past its second checkpoint",
                                   every=0.3)
        os.kill(driver_pid, signal.SIGKILL)
        driver.proc.wait(timeout=30)
        # the driver's local Ray, the Train controller and its workers share its fate
        wait_until(lambda: not pids_mentioning(str(ray_tmp)), 60, "the killed driver's Ray to exit", every=0.5)
        # a Train worker notices its raylet is gone at its next call into Ray (a report, a collective)
        wait_until(lambda: not any(alive(p) for p in workers), 60, "the killed driver's Train workers to exit")
        resume = spawn("resume", [str(BIN / "slsweep"), "resume", "--runs-dir", str(runs), "-q"],
                       tmp_path / "resume.log", env={**env, "SLSWEEP_RAY_TMP": str(ray_tmp2)})
        assert resume.proc.wait(timeout=500) == 0, resume.tail(60)
    finally:
        stop_all([driver, resume], [ray_tmp, ray_tmp2])
    exp = client.get_experiment_by_name("ddpkill")
    children = client.search_runs([exp.experiment_id], "tags.`slsweep.kind` = 'trial'")
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}
    assert all(r.data.tags["last_step"] == "12" for r in children)
    interrupted = client.get_run(live[0].info.run_id)
    assert interrupted.data.metrics["restarts"] == 1  # continued from its Train checkpoint
    for metric in ("train_loss", "exact_match"):  # each evaluation once, the replayed one included
        assert sorted(m.step for m in client.get_metric_history(interrupted.info.run_id, metric)) == [2, 4, 6, 8, 10, 12]


def test_per_worker_names_override_a_spec_that_sets_cpu(tmp_path: Path) -> None:
    """`resources.cpus_per_worker=...` on a spec that says `cpu:` (every built-in spec does) is the
    same field, and wins; it was refused as an unknown key."""
    from sweeps.config.spec import load_spec

    spec = tmp_path / "s.yaml"
    spec.write_text(ASHA_SPEC.replace("resources: {workers: 2, cpus_per_worker: 1, strategy: ddp}",
                                      "resources: {cpu: 1, gpu: 0}"))
    res = load_spec(spec, ["resources.workers=2", "resources.cpus_per_worker=0.5", "resources.gpus_per_worker=0"]).spec.resources
    assert (res.workers, res.cpu, res.gpu) == (2, 0.5, 0.0)
